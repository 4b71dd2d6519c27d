//! The hooks: `--on-retry`, `--on-give-up`, `--on-dead`. Each is `sh -c
//! CMD` in its own process group, with stdin /dev/null, its stdout on
//! retry's stderr (stdout belongs to the command's output), bounded in
//! time, run through the same process path as an attempt. A hook's
//! failure is the caller's to log; it never changes retry's status.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use crate::child::{Program, SpawnError};
use crate::exec::{self, Input, Io, Limits, Output};
use crate::signals::Signals;
use crate::status::Status;
use crate::sys;

/// How long `--on-give-up` (without `--timeout`) and `--on-dead` may run.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(60);

/// How a hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    /// Why it failed (its status and a description), if it did.
    pub failed: Option<(u8, String)>,
    /// A signal retry received while it ran (forwarded to it).
    pub interrupted: Option<i32>,
}

/// Runs `sh -c cmd` with `env`, ended with `kill_signal` at `limit` (and
/// SIGKILL `kill_after` later), reading retry's signals meanwhile.
pub fn run(
    cmd: &OsStr,
    env: &[CString],
    limit: Option<Duration>,
    kill: (libc::c_int, Duration),
    signals: &mut Signals,
    buf: &mut Vec<u8>,
) -> Ran {
    let failed = |status: u8, why: String| Ran { failed: Some((status, why)), interrupted: None };
    let argv = [OsString::from("/bin/sh"), OsString::from("-c"), cmd.to_os_string()];
    let program = match Program::new(&argv, None) {
        Ok(p) => p,
        Err(e) => return failed(125, e.to_string()),
    };
    let null = match File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return failed(125, format!("cannot open /dev/null: {e}")),
    };
    let limits = Limits {
        deadline: limit.and_then(|t| Instant::now().checked_add(t)),
        kill_signal: kill.0,
        kill_after: kill.1,
    };
    let io = Io {
        stdin: Input::Fd(null.as_raw_fd()),
        stdout: Output::Fd(libc::STDERR_FILENO),
        stderr: Output::Inherit,
    };
    let result = exec::run(&program, env, true, io, &limits, signals, buf);
    sys::reap_orphans(&[]);
    match result {
        Ok(fin) => {
            let status = fin.status();
            let failed = (status != Status::Exited(0)).then(|| (status.code(), status.describe()));
            Ran { failed, interrupted: fin.interrupted }
        }
        Err(SpawnError::NotFound(e) | SpawnError::CannotExecute(e) | SpawnError::Internal(e)) => {
            failed(127, format!("cannot run /bin/sh: {e}"))
        }
    }
}
