//! An attempt's [`Status`], how a run ended ([`Ending`]), and the one
//! table that maps them to retry's exit status (SPEC "Exit status"):
//! every status retry returns is chosen here — a run's by
//! [`Ending::exit_status`] (`--flaky-exit` over [`Ending::exit_code`]), a drain's by [`Drained::exit_code`], retry's own
//! failures by [`USAGE`] (see `Error::status`), and the few fixed ones
//! below.

use crate::parse::signal_name;

/// How one attempt ended, as SPEC "When is an attempt a success" counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The command exited with this code.
    Exited(u8),
    /// The command died of this signal (not one retry sent for a timeout).
    Signaled(i32),
    /// retry killed it for `--timeout` or `--max-time`.
    TimedOut,
    /// retry ended it because it (or an orphan of its group) was stopped by
    /// this signal, SIGTTIN or SIGTTOU: it wanted the terminal.
    Stopped(i32),
    /// retry could not find COMMAND (ENOENT).
    NotFound,
    /// retry could not execute COMMAND (EACCES, ENOEXEC, ...).
    CannotExecute,
}

impl Status {
    /// The attempt's status number: exit code, 124, 128+N, 126, 127.
    pub fn code(self) -> u8 {
        match self {
            Status::Exited(code) => code,
            Status::Signaled(sig) | Status::Stopped(sig) => {
                128u8.saturating_add(u8::try_from(sig).unwrap_or(u8::MAX))
            }
            Status::TimedOut => 124,
            Status::NotFound => 127,
            Status::CannotExecute => 126,
        }
    }

    /// `exit status 7`, `killed by SIGKILL`, `timed out`, ...
    pub fn describe(self) -> String {
        match self {
            Status::Exited(code) => format!("exit status {code}"),
            Status::Signaled(sig) => format!("killed by {}", signal_name(sig)),
            Status::TimedOut => "timed out".to_string(),
            Status::Stopped(sig) => format!("stopped by {} (it reads the terminal)", signal_name(sig)),
            Status::NotFound => "command not found".to_string(),
            Status::CannotExecute => "command cannot be executed".to_string(),
        }
    }

    /// retry's own failure to start COMMAND: final, never retried.
    pub fn is_spawn_failure(self) -> bool {
        matches!(self, Status::NotFound | Status::CannotExecute)
    }
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// An attempt succeeded.
    Success,
    /// The attempts ran out.
    Exhausted,
    /// A failure was not retryable (stop rule, spawn failure, no retry rule matched).
    Stopped,
    /// `--max-time` was reached.
    Deadline,
    /// A signal ended the run; `during_sleep` when no attempt was running.
    Interrupted { signal: i32, during_sleep: bool },
    /// retry's stdout is a pipe with no reader left.
    ClosedStdout,
    /// The run gave up and `--queue` wrote the job to its queue (75).
    Queued,
    /// The circuit of `--key` is open: COMMAND did not run.
    Refused,
}

impl End {
    /// The `outcome` word of the JSON `done` event.
    pub fn word(self) -> &'static str {
        match self {
            End::Success => "success",
            End::Exhausted => "exhausted",
            End::Stopped | End::ClosedStdout => "stopped",
            End::Deadline => "deadline",
            End::Interrupted { .. } => "interrupted",
            End::Queued => "queued",
            End::Refused => "refused",
        }
    }
}

/// How a run ended, in short: what the exit status, the `done` event and
/// the circuit need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    pub end: End,
    /// The last attempt's status; `None` when no attempt ran.
    pub last: Option<Status>,
    /// The last attempt exited 0 but failed `--until`/`--until-match`.
    pub validation_failed: bool,
    /// Attempts that ran (spawn failures count).
    pub attempts: u32,
}

impl Ending {
    /// A flaky run: it succeeded after at least one failed attempt.
    pub fn flaky(&self) -> bool {
        self.end == End::Success && self.attempts > 1
    }

    /// retry's exit status for the run: [`Ending::exit_code`], except that
    /// a flaky success exits `flaky_exit` when `--flaky-exit` was given.
    /// Reports keep `exit_code` as the run's status and add this one.
    pub fn exit_status(&self, flaky_exit: Option<u8>) -> u8 {
        match flaky_exit {
            Some(code) if self.flaky() => code,
            Some(_) | None => self.exit_code(),
        }
    }

    /// Every exit status retry returns for a run is chosen here.
    pub fn exit_code(&self) -> u8 {
        match (self.end, self.last) {
            (End::Success, _) => 0,
            (End::ClosedStdout, _) => CLOSED_STDOUT,
            // EX_TEMPFAIL: the job lives on in the queue.
            (End::Queued, _) => EX_TEMPFAIL,
            // EX_TEMPFAIL: the circuit is open, try later.
            (End::Refused, _) => EX_TEMPFAIL,
            (End::Interrupted { signal, during_sleep: true }, _)
            | (End::Interrupted { signal, during_sleep: false }, None) => Status::Signaled(signal).code(),
            (End::Deadline, None) => 124,
            (End::Exhausted | End::Stopped, None) => USAGE,
            (End::Exhausted | End::Stopped | End::Deadline | End::Interrupted { .. }, Some(last)) => {
                // Validation runs on a success status only (0 or --success-exit).
                if self.validation_failed { 1 } else { last.code() }
            }
        }
    }

    /// The signal retry re-raises on itself after cleaning up, so that a
    /// calling shell sees a death by signal (as GNU timeout does): only when
    /// the status is 128+N because a process died of signal N.
    pub fn reraise(&self) -> Option<i32> {
        match (self.end, self.last) {
            (End::Interrupted { signal, during_sleep: true }, _) => Some(signal),
            (End::Success | End::ClosedStdout | End::Queued | End::Refused, _) => None,
            (End::Interrupted { during_sleep: false, .. }, Some(Status::Signaled(sig)))
            | (End::Exhausted | End::Stopped | End::Deadline, Some(Status::Signaled(sig))) => Some(sig),
            (End::Interrupted { signal, during_sleep: false }, None) => Some(signal),
            (
                End::Interrupted { during_sleep: false, .. } | End::Exhausted | End::Stopped | End::Deadline,
                _,
            ) => None,
        }
    }
}

/// sysexits' EX_TEMPFAIL: a job was queued (or a drain rescheduled one).
pub const EX_TEMPFAIL: u8 = 75;

/// retry's own failure: a usage error, a store that cannot be used, a
/// temporary file that cannot be made (SPEC: 125).
pub const USAGE: u8 = 125;

/// retry's stdout is a pipe without a reader (128 + SIGPIPE).
pub const CLOSED_STDOUT: u8 = 141;

/// Nothing went wrong (`--help`, `--version`, `--list`, `--dry-run`).
pub const OK: u8 = 0;

/// What one `--drain` did (SPEC "Durable queue").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Due jobs that succeeded and were removed.
    pub succeeded: u32,
    /// Due jobs that failed again and were rescheduled (or cut off by the
    /// drain's `--max-time`).
    pub rescheduled: u32,
    /// Jobs moved to `dead/` by this drain (permanent failure, past
    /// `--max-age`, corrupt file).
    pub died: u32,
    /// Jobs left alone: written by a newer retry.
    pub skipped: u32,
    /// A signal ended the drain (the running job is left as it was).
    pub interrupted: Option<i32>,
    /// retry's stdout is a pipe with no reader left.
    pub closed_stdout: bool,
}

impl Drained {
    /// A drain's exit status: 1 when some job died in it, else 75 when some
    /// were rescheduled, else 0 (also when nothing was due).
    pub fn exit_code(&self) -> u8 {
        match (self.interrupted, self.closed_stdout) {
            (Some(signal), _) => Status::Signaled(signal).code(),
            (None, true) => CLOSED_STDOUT,
            (None, false) if self.died > 0 => 1,
            (None, false) if self.rescheduled > 0 => EX_TEMPFAIL,
            (None, false) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gave_up(end: End, last: Status) -> Ending {
        Ending { end, last: Some(last), validation_failed: false, attempts: 3 }
    }

    #[test]
    fn statuses_map_to_codes() {
        assert_eq!(Status::Exited(7).code(), 7);
        assert_eq!(Status::Signaled(9).code(), 137);
        assert_eq!(Status::Signaled(200).code(), 255);
        assert_eq!(Status::TimedOut.code(), 124);
        assert_eq!(Status::NotFound.code(), 127);
        assert_eq!(Status::CannotExecute.code(), 126);
    }

    #[test]
    fn exit_table() {
        assert_eq!(gave_up(End::Success, Status::Exited(0)).exit_code(), 0);
        assert_eq!(gave_up(End::Exhausted, Status::Exited(7)).exit_code(), 7);
        assert_eq!(gave_up(End::Stopped, Status::NotFound).exit_code(), 127);
        assert_eq!(gave_up(End::Deadline, Status::TimedOut).exit_code(), 124);
        let none = Ending { end: End::Deadline, last: None, validation_failed: false, attempts: 0 };
        assert_eq!(none.exit_code(), 124);
        let sleep = End::Interrupted { signal: 15, during_sleep: true };
        assert_eq!(gave_up(sleep, Status::Exited(1)).exit_code(), 143);
        let during = End::Interrupted { signal: 2, during_sleep: false };
        assert_eq!(gave_up(during, Status::Exited(0)).exit_code(), 0);
        assert_eq!(gave_up(during, Status::Signaled(2)).exit_code(), 130);
        let mut invalid = gave_up(End::Exhausted, Status::Exited(0));
        invalid.validation_failed = true;
        assert_eq!(invalid.exit_code(), 1);
        assert_eq!(gave_up(End::ClosedStdout, Status::Exited(3)).exit_code(), 141);
        assert_eq!(gave_up(End::Queued, Status::Exited(3)).exit_code(), 75);
        assert_eq!(gave_up(End::Queued, Status::Signaled(9)).reraise(), None);
        let refused = Ending { end: End::Refused, last: None, validation_failed: false, attempts: 0 };
        assert_eq!(refused.exit_code(), 75);
        assert_eq!(refused.reraise(), None);
        assert_eq!(End::Refused.word(), "refused");
    }

    #[test]
    fn only_a_flaky_success_takes_the_flaky_exit() {
        let flaky = gave_up(End::Success, Status::Exited(0));
        assert!(flaky.flaky());
        assert_eq!((flaky.exit_code(), flaky.exit_status(Some(3)), flaky.exit_status(None)), (0, 3, 0));
        let first = Ending { attempts: 1, ..flaky };
        assert!(!first.flaky());
        assert_eq!(first.exit_status(Some(3)), 0);
        let sleep = End::Interrupted { signal: 15, during_sleep: true };
        let during = End::Interrupted { signal: 2, during_sleep: false };
        for end in [
            End::Exhausted,
            End::Stopped,
            End::Deadline,
            sleep,
            during,
            End::ClosedStdout,
            End::Queued,
            End::Refused,
        ] {
            let ending = gave_up(end, Status::Exited(7));
            assert!(!ending.flaky(), "{end:?}");
            assert_eq!(ending.exit_status(Some(3)), ending.exit_code(), "{end:?}");
        }
    }

    #[test]
    fn drain_exit_table() {
        let d = |died, rescheduled| Drained { died, rescheduled, succeeded: 2, ..Drained::default() };
        assert_eq!(Drained::default().exit_code(), 0);
        assert_eq!(d(0, 0).exit_code(), 0);
        assert_eq!(d(0, 3).exit_code(), 75);
        assert_eq!(d(1, 3).exit_code(), 1);
        assert_eq!(Drained { interrupted: Some(15), ..d(1, 0) }.exit_code(), 143);
    }

    #[test]
    fn reraises_only_for_deaths_by_signal() {
        let during = End::Interrupted { signal: 2, during_sleep: false };
        assert_eq!(gave_up(during, Status::Signaled(2)).reraise(), Some(2));
        assert_eq!(gave_up(during, Status::Exited(130)).reraise(), None);
        let sleep = End::Interrupted { signal: 15, during_sleep: true };
        assert_eq!(gave_up(sleep, Status::Exited(1)).reraise(), Some(15));
        assert_eq!(gave_up(End::Exhausted, Status::Signaled(9)).reraise(), Some(9));
        assert_eq!(gave_up(End::Exhausted, Status::TimedOut).reraise(), None);
        assert_eq!(gave_up(End::Success, Status::Exited(0)).reraise(), None);
    }
}
