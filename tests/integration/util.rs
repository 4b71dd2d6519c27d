//! Shared helpers: a temp dir per test, the retry binary with a clean
//! environment, fixture paths, /proc inspection, and running a test on
//! both process paths ([`both_paths!`]).

use std::cell::Cell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use assert_cmd::Command;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_retry"))
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

thread_local! {
    /// Set by [`without_pidfds`]: the `no-pidfd` flags retry runs under.
    static NO_PIDFD: Cell<Option<&'static [&'static str]>> = const { Cell::new(None) };
}

/// `tests/fixtures/no-pidfd.c`, compiled once per test binary with the C
/// compiler cargo links with: it installs a seccomp filter that refuses
/// pidfds, then execs its arguments (as benches/run.sh does for its rows
/// of the portable path).
pub fn no_pidfd() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-pidfd");
        let tmp = out.with_extension(format!("{}.tmp", std::process::id()));
        let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
        let status = StdCommand::new(cc)
            .args(["-O2", "-Wall", "-Werror", "-o"])
            .arg(&tmp)
            .arg(fixture("no-pidfd.c"))
            .status()
            .expect("a C compiler (cc) builds tests/fixtures/no-pidfd.c");
        assert!(status.success(), "cannot build tests/fixtures/no-pidfd.c");
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}

/// Runs `body` with every retry it starts (through [`T`], [`retry_argv`])
/// under `no-pidfd FLAGS`: pidfds refused, so retry takes its portable
/// process path.
pub fn without_pidfds<R>(flags: &'static [&'static str], body: impl FnOnce() -> R) -> R {
    no_pidfd();
    NO_PIDFD.with(|f| f.set(Some(flags)));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            NO_PIDFD.with(|f| f.set(None));
        }
    }
    let _reset = Reset;
    body()
}

/// The words that start retry on this test's process path: the binary,
/// or `no-pidfd [FLAGS] <binary>`.
pub fn retry_argv() -> Vec<OsString> {
    match NO_PIDFD.with(|f| f.get()) {
        None => vec![bin().into()],
        Some(flags) => {
            let mut argv = vec![no_pidfd().into()];
            argv.extend(flags.iter().map(OsString::from));
            argv.push(bin().into());
            argv
        }
    }
}

/// A std command that starts retry on this test's process path.
pub fn retry_std() -> StdCommand {
    let argv = retry_argv();
    let mut cmd = StdCommand::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

/// Defines a test twice: `NAME::pidfd` on this kernel's pidfd path, and
/// `NAME::portable` with pidfds refused by a seccomp filter
/// ([`without_pidfds`]), so both process paths pass the same checks.
macro_rules! both_paths {
    ($(#[$attr:meta])* fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            #[test]
            fn pidfd() $body

            $(#[$attr])*
            #[test]
            fn portable() {
                crate::util::without_pidfds(&[], || $body)
            }
        }
    };
}
pub(crate) use both_paths;

/// One test's sandbox.
pub struct T {
    pub dir: tempfile::TempDir,
    /// A marker in the environment of everything the test starts.
    pub marker: String,
    /// More variables for everything the test starts.
    pub extra_env: Vec<(String, String)>,
}

impl T {
    pub fn new() -> T {
        let dir = tempfile::Builder::new().prefix("retry-test-").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let marker = dir.path().file_name().unwrap().to_string_lossy().into_owned();
        T { dir, marker, extra_env: Vec::new() }
    }

    /// The same sandbox, with `name=value` in the environment of everything it starts.
    pub fn with_env(mut self, name: &str, value: &str) -> T {
        self.extra_env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn env(&self, cmd: &mut StdCommand) {
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("TMPDIR", self.path("tmp"))
            .env("LANG", "C.UTF-8")
            .env("RETRY_TEST_MARKER", &self.marker)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path());
    }

    /// `retry` with a clean environment, in the sandbox, stdin empty.
    pub fn retry(&self) -> Command {
        let mut std = retry_std();
        self.env(&mut std);
        let mut cmd = Command::from_std(std);
        cmd.write_stdin("");
        cmd.timeout(Duration::from_secs(60));
        cmd
    }

    /// `retry` as a std command, for tests that signal it while it runs.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut cmd = retry_std();
        self.env(&mut cmd);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().unwrap()
    }

    pub fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(name)).unwrap_or_default().lines().map(str::to_string).collect()
    }

    pub fn runs(&self, name: &str) -> usize {
        self.lines(name).len()
    }

    /// Waits (up to 20 s) until the file exists.
    pub fn wait_for(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.path(name).exists() {
            assert!(Instant::now() < deadline, "{name} never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (up to 20 s) until a live process of this test runs `comm`.
    /// Safer than a file the child touches before it execs: a shell that
    /// gets a signal between two commands may defer it (dash does).
    pub fn wait_for_process(&self, comm: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.live_processes().iter().any(|p| proc_stat(*p).is_some_and(|s| s.comm == comm)) {
            assert!(Instant::now() < deadline, "no process {comm} appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Live processes (not zombies) that carry this test's marker, but
    /// retry's guardian (`retry-guard`, retry's own helper that shares its
    /// memory and so its environment): it lives exactly as long as retry.
    pub fn live_processes_but_guardians(&self) -> Vec<u32> {
        self.live_processes()
            .into_iter()
            .filter(|p| proc_stat(*p).is_none_or(|s| s.comm != "retry-guard"))
            .collect()
    }

    /// Live processes (not zombies) that carry this test's marker.
    pub fn live_processes(&self) -> Vec<u32> {
        let needle = format!("RETRY_TEST_MARKER={}", self.marker);
        procs()
            .into_iter()
            .filter(|p| p.state != 'Z')
            .filter(|p| {
                std::fs::read(format!("/proc/{}/environ", p.pid))
                    .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                    .unwrap_or(false)
            })
            .map(|p| p.pid)
            .collect()
    }
}

pub fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One process from /proc/<pid>/stat.
#[derive(Debug)]
pub struct Proc {
    pub pid: u32,
    pub comm: String,
    pub state: char,
}

pub fn proc_stat(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
    Some(Proc { pid, comm, state: rest.first()?.chars().next()? })
}

pub fn procs() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Zombies whose command name is `comm`.
pub fn zombies_named(comm: &str) -> Vec<Proc> {
    procs().into_iter().filter(|p| p.state == 'Z' && p.comm == comm).collect()
}

/// Waits (up to 20 s) for the child to exit.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "retry did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill with integers.
    unsafe { libc::kill(pid as i32, sig) };
}

pub fn stderr_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}
