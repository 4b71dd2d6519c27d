//! The loop: attempt → validate → classify → decide → sleep, until an
//! [`Outcome`]. The only reader of the clock for decisions; sleeps and
//! waits are `ppoll`s on the signal pipe, so a signal ends a sleep at once.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Seek as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt as _, SeedableRng as _};

use crate::backoff::Schedule;
use crate::capture::{Scanner, Spool, Tail};
use crate::child::{Program, SpawnError};
use crate::classify::{self, Facts, Verdict};
use crate::config::{Config, Stdout};
use crate::error::Error;
use crate::exec::{self, Finished, Input, Io, Limits, Output, Sink};
use crate::flush::{self, Flushed};
use crate::predicate::{self, Mode, Predicate};
use crate::report::{AttemptReport, Next, Reporter};
use crate::signals::Signals;
use crate::status::{End, Outcome, Status};
use crate::stdin::Replay;
use crate::store::{Coordination, Gate};
use crate::sys::{self, Exit};

/// Stdout larger than this is not parsed for `--until`.
pub const UNTIL_LIMIT: u64 = 64 << 20;

/// How long a predicate may run when no `--timeout` is given.
pub const PREDICATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The variables retry sets in each attempt's environment.
const RETRY_VARS: [&str; 4] = ["RETRY_ATTEMPT", "RETRY_MAX_ATTEMPTS", "RETRY_LAST_STATUS", "RETRY_STATE_DIR"];

/// The two random streams of a run: backoff and splay. The same seed gives
/// the same streams in `--dry-run` and in a real run.
pub fn rngs(seed: Option<u64>) -> (Xoshiro256PlusPlus, Xoshiro256PlusPlus) {
    // Unseeded: 64 bits from std's random hash keys (one getrandom(2) call
    // at most). rand's OS source goes through the getrandom crate, which in
    // the static build cannot find libc's getrandom (dlsym) and falls back
    // to polling /dev/random and reading /dev/urandom: six system calls.
    let seed = seed.unwrap_or_else(|| std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8));
    let backoff = Xoshiro256PlusPlus::seed_from_u64(seed);
    // A distinct, fixed derivation so the splay draw never shifts backoff.
    let splay = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5bd1_e995_9e37_79b9);
    (backoff, splay)
}

/// The splay before attempt 1.
pub fn splay_delay(max: Duration, rng: &mut Xoshiro256PlusPlus) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// The run's temporary state, removed at the end (before a re-raised
/// signal ends the process).
pub struct Resources {
    _state_dir: Option<StateDir>,
}

/// The run's own state dir, removed on drop: one `rmdir` for the usual
/// empty dir (std's `remove_dir_all` costs nine system calls even then), the
/// whole tree only when the command left something in it.
struct StateDir(Option<PathBuf>);

impl StateDir {
    /// Leaves the directory in place (a queued job keeps it).
    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            if std::fs::remove_dir(dir).is_err() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// A run that continues a queued job (one attempt of it in a drain): what
/// is not an option but the job's history. The options come from the
/// job's saved arguments, parsed into a [`Config`] like any run's, so a
/// drained attempt goes through exactly the same loop.
pub struct Carry {
    /// Attempts the job made before this run (`RETRY_ATTEMPT` goes on).
    pub attempts: u32,
    /// The last one's status (`RETRY_LAST_STATUS`).
    pub last: Option<Status>,
    /// Time since the job's first start (`$elapsed` goes on).
    pub elapsed: Duration,
    /// Where its backoff schedule stopped: delays taken, the last one.
    pub backoff: (u32, Duration),
    /// Attempts to make in this run (1 in a drain).
    pub limit: u32,
    /// `RETRY_STATE_DIR`, kept until the job succeeds or dies.
    pub state_dir: PathBuf,
    /// The saved environment; it replaces retry's.
    pub env: Vec<CString>,
    /// The saved working directory; `None`: retry's.
    pub cwd: Option<PathBuf>,
    /// The stdin recorded by `--stdin replay`; `None`: /dev/null.
    pub stdin: Option<File>,
}

/// What a run that may live on in a queue (`--queue`, or a drained job)
/// keeps about itself.
#[derive(Debug, Default)]
pub struct Journal {
    /// When the run started.
    pub started: Option<SystemTime>,
    /// Its attempts, oldest first (at most [`JOURNAL_ATTEMPTS`]).
    pub attempts: Vec<AttemptRecord>,
    /// Where the backoff schedule stands: delays taken, the last one.
    pub backoff: (u32, Duration),
    /// The schedule's delay before the next attempt, when the run ended on
    /// a retryable failure.
    pub next_delay: Option<Duration>,
    /// The last attempt was killed at `--max-time` (a drain's budget).
    pub cut_off: bool,
}

/// Attempts a journal keeps (the most recent), so `--forever` stays bounded.
pub const JOURNAL_ATTEMPTS: usize = 100;

/// The part of a [`Carry`] the loop reads.
#[derive(Clone, Copy, Debug)]
struct Carried {
    attempts: u32,
    last: Option<Status>,
    elapsed: Duration,
    backoff: (u32, Duration),
    limit: u32,
}

/// One finished attempt, as a queued job remembers it.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub started: SystemTime,
    pub duration: Duration,
    pub status: u8,
    /// `success`, `retry` or `stop`.
    pub verdict: &'static str,
    /// What went wrong and the rule that decided (as in the `attempt` event).
    pub reason: Option<String>,
}

/// Creates an already-unlinked file in TMPDIR (it vanishes even after
/// SIGKILL).
fn spill_file() -> Result<File, Error> {
    tempfile::tempfile().map_err(|e| Error::io(tmpdir_what("cannot create a temporary file"), e))
}

/// tempfile's errors end in "at path \"…/retry-XXXXXX\"", a random name
/// that was never created; the OS error before it is the clear part.
fn without_path(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((os, _)) => std::io::Error::new(e.kind(), os.to_string()),
        None => e,
    }
}

/// A fresh `retry-*` directory in TMPDIR for a run's `RETRY_STATE_DIR`,
/// mode 0700: the command may keep secrets there (tempfile's default is
/// 0777 less the umask). `what` begins the error message.
pub(crate) fn temp_state_dir(what: &str) -> Result<tempfile::TempDir, Error> {
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .prefix("retry-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| Error::io(tmpdir_what(what), without_path(e)))
}

fn tmpdir_what(what: &str) -> String {
    let dir = std::env::temp_dir();
    format!("{what} in TMPDIR ({})", dir.display())
}

/// Everything one run needs across attempts.
struct Run<'a> {
    cfg: &'a Config,
    report: &'a Reporter,
    signals: &'a mut Signals,
    program: Program,
    base_env: Vec<CString>,
    state_dir: PathBuf,
    stdout_spool: Option<Spool>,
    stdout_scanner: Option<Scanner>,
    stderr_scanner: Option<Scanner>,
    stdout_tail: Option<Tail>,
    stderr_tail: Option<Tail>,
    replay: Option<Replay>,
    buf: Vec<u8>,
    start: Instant,
    deadline: Option<Instant>,
    stdout_fifo: bool,
    /// The wall clock at `start`, for the journal.
    wall: SystemTime,
    /// A drained job's past.
    carried: Option<Carried>,
    /// The job's recorded stdin (or /dev/null) when `carried`.
    stdin_file: Option<File>,
    journal: Option<Journal>,
    /// `--key` with `--circuit-break`, `--rate`, `--concurrency`.
    coord: Option<Coordination>,
}

/// One attempt's facts beyond its status.
struct Attempt {
    status: Status,
    finished: Option<Finished>,
    started: Instant,
    ended: Instant,
}

pub fn run(cfg: &Config, signals: &mut Signals, report: &Reporter) -> Result<(Outcome, Resources), Error> {
    let (outcome, _, resources) = run_with(cfg, signals, report, None)?;
    Ok((outcome, resources))
}

/// One run of a queued job for a drain (`carry.limit` attempts): the same
/// loop as [`run`], continuing the job's attempt count, clock and backoff,
/// in its environment and directory. Reports the attempts but not the end
/// (the drain says what became of the job); captured stdout is written
/// only on success.
pub fn run_queued(
    cfg: &Config,
    signals: &mut Signals,
    report: &Reporter,
    carry: Carry,
) -> Result<(Outcome, Journal, Resources), Error> {
    run_with(cfg, signals, report, Some(carry))
}

fn run_with(
    cfg: &Config,
    signals: &mut Signals,
    report: &Reporter,
    carry: Option<Carry>,
) -> Result<(Outcome, Journal, Resources), Error> {
    let start = Instant::now();
    let wall = SystemTime::now();
    let deadline = cfg.max_time.and_then(|m| start.checked_add(m));
    // Temporary files before attempt 1, so a bad TMPDIR fails with 125.
    // A `--queue` run keeps its state dir in the queue (DIR/state/<id>), so
    // the job's later attempts find what the first ones left there.
    let mut queue_id = None;
    let (state_dir, mut kept) = match (&cfg.state_dir, &carry, &cfg.queue) {
        (Some(dir), _, _) => (dir.clone(), None),
        (None, Some(c), _) => (c.state_dir.clone(), None),
        (None, None, Some(target)) => {
            let (id, path) = target.state_dir(wall)?;
            queue_id = Some(id);
            (path.clone(), Some(StateDir(Some(path))))
        }
        (None, None, None) => {
            let path = temp_state_dir("cannot create the state directory")?.keep();
            (path.clone(), Some(StateDir(Some(path))))
        }
    };
    if cfg.state_dir.is_some() || carry.is_some() {
        make_state_dir(&state_dir)?;
    }
    if let (Some(target), None) = (&cfg.queue, &queue_id) {
        if carry.is_none() {
            queue_id = Some(target.new_id(wall));
        }
    }
    let stdout_spool = match cfg.stdout {
        Stdout::Captured { .. } => Some(Spool::new(Some(spill_file()?))),
        Stdout::Live => None,
    };
    // A drained job reads its recorded stdin, or /dev/null: never the drain's.
    let replay = if cfg.stdin_replay && carry.is_none() { Some(Replay::new(spill_file()?)) } else { None };
    let (carried, stdin_file, env, cwd) = match carry {
        Some(c) => {
            let stdin = match c.stdin {
                Some(f) => f,
                None => File::open("/dev/null").map_err(|e| Error::io("cannot open /dev/null", e))?,
            };
            let carried = Carried {
                attempts: c.attempts,
                last: c.last,
                elapsed: c.elapsed,
                backoff: c.backoff,
                limit: c.limit,
            };
            (Some(carried), Some(stdin), c.env, c.cwd)
        }
        None => (None, None, base_env(), None),
    };
    let path = match carried {
        Some(_) => env_value(&env, b"PATH"),
        None => std::env::var_os("PATH"),
    };
    let mut program = Program::new(&cfg.command, path.as_deref())
        .map_err(|e| Error::usage("COMMAND", lossy(cfg.command.first()), e.to_string()))?;
    program.cwd = cwd.and_then(|d| CString::new(d.into_os_string().into_vec()).ok());
    let scanner = |patterns: Vec<regex::bytes::Regex>| (!patterns.is_empty()).then(|| Scanner::new(patterns));
    let stdout_patterns: Vec<_> = cfg
        .stdout_rules
        .retry
        .iter()
        .chain(&cfg.stdout_rules.stop)
        .chain(&cfg.until_match)
        .map(|p| p.regex.clone())
        .collect();
    let stderr_patterns: Vec<_> =
        cfg.stderr_rules.retry.iter().chain(&cfg.stderr_rules.stop).map(|p| p.regex.clone()).collect();
    let tails = !cfg.retry_if.is_empty();
    let coord = Coordination::open(cfg.shared.as_ref(), report)?;
    // A Redis queue that cannot be reached now would lose the job later.
    if let (Some(target), None) = (&cfg.queue, carried) {
        target.check(report)?;
    }
    let mut run = Run {
        cfg,
        report,
        signals,
        program,
        base_env: env,
        state_dir,
        stdout_spool,
        stdout_scanner: scanner(stdout_patterns),
        stderr_scanner: scanner(stderr_patterns),
        stdout_tail: (tails && matches!(cfg.stdout, Stdout::Captured { .. })).then(Tail::default),
        stderr_tail: tails.then(Tail::default),
        replay,
        buf: vec![0u8; exec::BUF],
        start,
        deadline,
        stdout_fifo: sys::is_fifo(libc::STDOUT_FILENO),
        wall,
        carried,
        stdin_file,
        journal: (carried.is_some() || cfg.queue.is_some())
            .then(|| Journal { started: Some(wall), ..Journal::default() }),
        coord,
    };
    sys::become_subreaper();
    report.command(&cfg.command);
    // An open circuit refuses the run at once, before any splay. With
    // --queue (and in a drain) the job is due again when the circuit closes.
    let refused = match &mut run.coord {
        Some(c) => c.admit(report)?,
        None => None,
    };
    let mut outcome = match refused {
        None => run.attempts()?,
        Some(cooldown) => {
            if let Some(j) = &mut run.journal {
                j.next_delay = Some(cooldown);
            }
            Outcome { end: End::Refused, last: None, validation_failed: false, attempts: 0 }
        }
    };
    sys::reap_orphans(&[]);
    let journal = run.journal.take().unwrap_or_default();
    // The store records the run's end before it may be queued.
    if let Some(c) = &mut run.coord {
        c.finish(&outcome, report)?;
    }
    if let (Some(target), Some(id), None) = (&cfg.queue, &queue_id, carried) {
        if crate::queue::gives_up(&outcome) {
            let job =
                crate::queue::Draft { id, cfg, outcome: &outcome, journal: &journal, env: &run.base_env };
            match crate::queue::enqueue(target, job, run.replay.as_mut(), run.signals)? {
                Ok(queued) => {
                    report.queued(id, &queued.file, &outcome, start.elapsed(), queued.due);
                    outcome.end = End::Queued;
                    // The job's state dir lives on in a directory queue.
                    if let (Some(dir), true) = (kept.as_mut(), target.keeps_state_dir()) {
                        dir.keep();
                    }
                }
                // A signal came while the rest of stdin was read: not queued.
                Err(signal) => outcome.end = End::Interrupted { signal, during_sleep: true },
            }
        }
    }
    // Captured stdout: the accepted attempt's, or the last one's when retry
    // gave up; nothing when interrupted or queued (SPEC Edge rules, "A
    // closed stdout"), and for a drained job only its success.
    if let (Some(spool), Stdout::Captured { tee: false }) = (run.stdout_spool.take(), cfg.stdout) {
        let silent =
            matches!(outcome.end, End::Interrupted { .. } | End::ClosedStdout | End::Queued | End::Refused)
                || (carried.is_some() && outcome.end != End::Success);
        if !silent && outcome.attempts > 0 {
            // A signal while a stalled reader blocks the write ends retry
            // with 128+N. EPIPE means the reader left on purpose (`| head`);
            // any other failure (a full disk) loses the output: retry's own
            // failure, 125, never a silent success.
            match flush::write_out(spool, libc::STDOUT_FILENO, run.signals) {
                Flushed::Interrupted(signal) => outcome.end = End::Interrupted { signal, during_sleep: true },
                Flushed::Done(Err(e)) if e.raw_os_error() != Some(libc::EPIPE) => {
                    return Err(Error::io("cannot write the captured stdout", e));
                }
                Flushed::Done(_) => {}
            }
        }
    }
    if carried.is_none() {
        report.done(&outcome, start.elapsed(), cfg.attempts);
    }
    Ok((outcome, journal, Resources { _state_dir: kept }))
}

impl Run<'_> {
    fn attempts(&mut self) -> Result<Outcome, Error> {
        let cfg = self.cfg;
        let (backoff_rng, mut splay_rng) = rngs(cfg.seed);
        let mut schedule = match self.carried {
            Some(c) => Schedule::resume(cfg.backoff, backoff_rng, c.backoff.0, c.backoff.1),
            None => Schedule::new(cfg.backoff, backoff_rng),
        };
        let (base, base_last, limit) = match self.carried {
            Some(c) => (c.attempts, c.last, Some(c.limit)),
            None => (0, None, None),
        };
        let mut outcome = Outcome { end: End::Deadline, last: None, validation_failed: false, attempts: 0 };
        if cfg.jitter_ignored() {
            self.report.warning("--jitter has no effect with --algo decorrelated".to_string());
        }
        if let Some(max) = cfg.splay {
            let delay = splay_delay(max, &mut splay_rng);
            let wake = self.start.checked_add(delay);
            if self.past_deadline(wake) {
                return Ok(outcome);
            }
            if let Some(sig) = self.sleep_until(wake, 1) {
                outcome.end = End::Interrupted { signal: sig, during_sleep: true };
                return Ok(outcome);
            }
        }
        loop {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                outcome.end = End::Deadline;
                return Ok(outcome);
            }
            // `this` counts the attempts of this run, `n` those of the job.
            let this = outcome.attempts + 1;
            let n = base.saturating_add(this);
            match self.gate(n)? {
                Gate::Go => {}
                Gate::Deadline => {
                    outcome.end = End::Deadline;
                    return Ok(outcome);
                }
                Gate::Interrupted(sig) => {
                    outcome.end = End::Interrupted { signal: sig, during_sleep: true };
                    return Ok(outcome);
                }
            }
            let attempt = self.attempt(n, outcome.last.or(base_last));
            if let Some(c) = &mut self.coord {
                c.release();
            }
            let attempt = attempt?;
            outcome.attempts = this;
            outcome.last = Some(attempt.status);
            sys::reap_orphans(&[]);
            let mut facts = self.facts(&attempt);
            if attempt.status == Status::Exited(0) {
                facts.validation = self.validate(n)?;
            }
            if classify::retry_if_needed(&facts, &cfg.rules) {
                facts.retry_if = Some(self.retry_if(n, &attempt, &facts)?);
            }
            outcome.validation_failed = !facts.validation.is_empty();
            let verdict = classify::classify(&facts, &cfg.rules);
            // Any signal retry received since it started — during the
            // attempt, or while a predicate ran — means no new attempt.
            let interrupted = attempt.finished.and_then(|f| f.interrupted).or_else(|| self.signals.first());
            let duration = attempt.ended.saturating_duration_since(attempt.started);
            // What comes next, decided before the attempt is reported.
            let (end, next) = match &verdict {
                Verdict::Success => (Some(End::Success), Next::Stop(None)),
                _ if interrupted.is_some() => {
                    let signal = interrupted.unwrap_or(libc::SIGTERM);
                    let name = crate::parse::signal_name(signal);
                    (
                        Some(End::Interrupted { signal, during_sleep: false }),
                        Next::Stop(Some(format!("retry got {name}"))),
                    )
                }
                Verdict::Stop(_) => (Some(End::Stopped), Next::Stop(None)),
                Verdict::Retry(_)
                    if cfg.attempts.is_some_and(|t| n >= t) || limit.is_some_and(|l| this >= l) =>
                {
                    if self.journal.is_some() {
                        // A queued job goes on later: note its next delay.
                        if cfg.reset_after.is_some_and(|r| duration >= r) {
                            schedule.reset();
                        }
                        let delay = schedule.next().unwrap_or(Duration::MAX);
                        self.note_next(delay, schedule.position());
                    }
                    (Some(End::Exhausted), Next::Stop(None))
                }
                Verdict::Retry(_) if self.stdout_closed(&attempt) => {
                    (Some(End::ClosedStdout), Next::Stop(Some("stdout is closed".to_string())))
                }
                Verdict::Retry(_) => {
                    if cfg.reset_after.is_some_and(|r| duration >= r) {
                        schedule.reset();
                    }
                    let delay = schedule.next().unwrap_or(Duration::MAX);
                    self.note_next(delay, schedule.position());
                    let wake = attempt.ended.checked_add(delay);
                    if self.past_deadline(wake) {
                        (
                            Some(End::Deadline),
                            Next::Stop(Some("the next attempt would start after --max-time".into())),
                        )
                    } else {
                        (None, Next::Retry(delay))
                    }
                }
            };
            self.report_attempt(n, &attempt, &verdict, &facts, next.clone(), duration);
            if let Some(end) = end {
                outcome.end = end;
                return Ok(outcome);
            }
            let wake = match next {
                Next::Retry(delay) => attempt.ended.checked_add(delay),
                Next::Stop(_) => None,
            };
            if let Some(sig) = self.on_retry(n, attempt.status) {
                outcome.end = End::Interrupted { signal: sig, during_sleep: true };
                return Ok(outcome);
            }
            if let Some(sig) = self.sleep_until(wake, n + 1) {
                outcome.end = End::Interrupted { signal: sig, during_sleep: true };
                return Ok(outcome);
            }
        }
    }

    /// Records the next delay of the schedule in the journal, if kept.
    fn note_next(&mut self, delay: Duration, position: (u32, Duration)) {
        if let Some(j) = &mut self.journal {
            j.next_delay = Some(delay);
            j.backoff = position;
        }
    }

    /// Time since the job's first start: this run's, plus a queued job's past.
    fn elapsed(&self) -> Duration {
        let before = self.carried.map_or(Duration::ZERO, |c| c.elapsed);
        before.saturating_add(self.start.elapsed())
    }

    /// Shared state before attempt `n`: a `--concurrency` slot, then a
    /// `--rate` turn, waited for with this loop's interruptible sleep.
    fn gate(&mut self, n: u32) -> Result<Gate, Error> {
        let Some(mut coord) = self.coord.take() else {
            return Ok(Gate::Go);
        };
        let (deadline, report) = (self.deadline, self.report);
        let gate = coord.gate(n, deadline, &mut |wake| self.sleep_until(wake, n), report);
        self.coord = Some(coord);
        gate
    }

    /// Would a sleep until `wake` end at or after `--max-time`?
    fn past_deadline(&self, wake: Option<Instant>) -> bool {
        match (self.deadline, wake) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(d), Some(w)) => w >= d,
        }
    }

    /// Is retry's stdout a pipe without readers now?
    fn stdout_closed(&self, attempt: &Attempt) -> bool {
        attempt.finished.is_some_and(|f| f.forward_broken)
            || (self.stdout_fifo && sys::pipe_is_broken(libc::STDOUT_FILENO))
    }

    fn env(&self, n: u32, last: Option<Status>) -> Vec<CString> {
        let mut env = self.base_env.clone();
        let total = self.cfg.attempts.map(|t| t.to_string()).unwrap_or_default();
        let last = last.map(|s| s.code().to_string()).unwrap_or_default();
        let dir = self.state_dir.as_os_str().as_bytes();
        for (name, value) in [
            ("RETRY_ATTEMPT", n.to_string().as_bytes()),
            ("RETRY_MAX_ATTEMPTS", total.as_bytes()),
            ("RETRY_LAST_STATUS", last.as_bytes()),
            ("RETRY_STATE_DIR", dir),
        ] {
            let mut entry = Vec::with_capacity(name.len() + 1 + value.len());
            entry.extend_from_slice(name.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(value);
            // Values come from numbers and a path without NUL bytes.
            if let Ok(c) = CString::new(entry) {
                env.push(c);
            }
        }
        env
    }

    fn attempt(&mut self, n: u32, last: Option<Status>) -> Result<Attempt, Error> {
        let cfg = self.cfg;
        self.report.attempt_start(n, cfg.attempts);
        let env = self.env(n, last);
        let io_err = |e| Error::io("cannot reset the capture file", e);
        if let Some(s) = &mut self.stdout_spool {
            s.clear().map_err(io_err)?;
        }
        for s in [&mut self.stdout_scanner, &mut self.stderr_scanner].into_iter().flatten() {
            s.clear();
        }
        for t in [&mut self.stdout_tail, &mut self.stderr_tail].into_iter().flatten() {
            t.clear();
        }
        let now = Instant::now();
        let timeout = cfg.timeout.and_then(|t| now.checked_add(t));
        let limits = Limits {
            deadline: [timeout, self.deadline].into_iter().flatten().min(),
            kill_signal: cfg.kill_signal,
            kill_after: cfg.kill_after,
        };
        if let Some(f) = &mut self.stdin_file {
            f.rewind().map_err(|e| Error::io("cannot rewind the recorded stdin", e))?;
        }
        let stdin = match (&mut self.replay, &self.stdin_file) {
            (_, Some(f)) => Input::Fd(f.as_raw_fd()),
            (Some(r), None) => Input::Replay(r),
            (None, None) => Input::Inherit,
        };
        let stdout = match cfg.stdout {
            Stdout::Live => Output::Inherit,
            Stdout::Captured { tee } => Output::Piped(Sink {
                forward: tee.then_some(libc::STDOUT_FILENO),
                spool: self.stdout_spool.as_mut(),
                scanner: self.stdout_scanner.as_mut(),
                tail: self.stdout_tail.as_mut(),
            }),
        };
        let stderr = if cfg.pipes_stderr() {
            Output::Piped(Sink {
                forward: Some(libc::STDERR_FILENO),
                spool: None,
                scanner: self.stderr_scanner.as_mut(),
                tail: self.stderr_tail.as_mut(),
            })
        } else {
            Output::Inherit
        };
        let io = Io { stdin, stdout, stderr };
        let result =
            exec::run(&self.program, &env, !cfg.foreground, io, &limits, self.signals, &mut self.buf);
        let ended = Instant::now();
        match result {
            Ok(fin) => Ok(Attempt {
                status: status_of(&fin),
                finished: Some(fin),
                started: fin.started,
                ended: fin.ended,
            }),
            Err(SpawnError::NotFound(e)) => {
                self.report.error(format!("cannot run '{}': command not found", self.program.name));
                drop(e);
                Ok(Attempt { status: Status::NotFound, finished: None, started: now, ended })
            }
            Err(SpawnError::CannotExecute(e)) => {
                self.report.error(format!("cannot execute '{}': {}", self.program.name, errno_text(&e)));
                Ok(Attempt { status: Status::CannotExecute, finished: None, started: now, ended })
            }
            Err(SpawnError::Internal(e)) => Err(Error::io("cannot start the command", e)),
        }
    }

    fn facts(&self, attempt: &Attempt) -> Facts {
        let first = |rules: &[crate::config::Pattern], scanner: &Option<Scanner>, offset: usize| {
            let matched = scanner.as_ref().map(|s| s.matched()).unwrap_or(&[]);
            rules
                .iter()
                .enumerate()
                .find(|(i, _)| matched.get(offset + i).copied().unwrap_or(false))
                .map(|(_, p)| p.source.clone())
        };
        let (out, err) = (&self.cfg.stdout_rules, &self.cfg.stderr_rules);
        Facts {
            status: Some(attempt.status),
            validation: Vec::new(),
            stdout_retry: first(&out.retry, &self.stdout_scanner, 0),
            stdout_stop: first(&out.stop, &self.stdout_scanner, out.retry.len()),
            stderr_retry: first(&err.retry, &self.stderr_scanner, 0),
            stderr_stop: first(&err.stop, &self.stderr_scanner, err.retry.len()),
            retry_if: None,
        }
    }

    /// `--until-match` and `--until` on an attempt that exited 0.
    fn validate(&mut self, n: u32) -> Result<Vec<String>, Error> {
        let cfg = self.cfg;
        let mut why = Vec::new();
        let offset = cfg.stdout_rules.retry.len() + cfg.stdout_rules.stop.len();
        let matched = self.stdout_scanner.as_ref().map(|s| s.matched().to_vec()).unwrap_or_default();
        for (i, p) in cfg.until_match.iter().enumerate() {
            if !matched.get(offset + i).copied().unwrap_or(false) {
                why.push(format!("--until-match '{}' matched no line", p.source));
            }
        }
        if cfg.until.is_empty() {
            return Ok(why);
        }
        let judged = match &self.stdout_spool {
            Some(spool) if spool.len() > UNTIL_LIMIT => {
                vec![
                    Some(format!("stdout is larger than {} MiB, not parsed", UNTIL_LIMIT >> 20));
                    cfg.until.len()
                ]
            }
            Some(spool) => {
                let input = memfd_with(Mode::Until, &cfg.until, n, self.elapsed(), |fd| spool.write_to(fd))?;
                self.evaluate(&cfg.until, input)?
            }
            None => vec![Some("stdout was not captured".to_string()); cfg.until.len()],
        };
        for (p, j) in cfg.until.iter().zip(judged) {
            if let Some(reason) = j {
                why.push(format!("--until '{}': {reason}", p.source()));
            }
        }
        Ok(why)
    }

    /// `--retry-if` on the attempt's context object; `Ok` if one held.
    fn retry_if(&mut self, n: u32, attempt: &Attempt, facts: &Facts) -> Result<Result<(), String>, Error> {
        let cfg = self.cfg;
        let (exit_code, signal) = exit_parts(attempt);
        let text = |t: &Option<Tail>| t.as_ref().map(|t| String::from_utf8_lossy(&t.bytes()).into_owned());
        let context = serde_json::json!({
            "attempt": n,
            "status": attempt.status.code(),
            "exit_code": exit_code,
            "signal": signal,
            "timed_out": attempt.status == Status::TimedOut,
            "elapsed": self.elapsed().as_secs_f64(),
            "duration": attempt.ended.saturating_duration_since(attempt.started).as_secs_f64(),
            "stdout": text(&self.stdout_tail),
            "stderr": text(&self.stderr_tail),
            "validation": facts.validation,
        });
        let bytes = serde_json::to_vec(&context).unwrap_or_default();
        let input =
            memfd_with(Mode::RetryIf, &cfg.retry_if, n, self.elapsed(), |fd| sys::write_all(fd, &bytes))?;
        let judged = self.evaluate(&cfg.retry_if, input)?;
        let mut reasons = Vec::new();
        for (p, j) in cfg.retry_if.iter().zip(judged) {
            match j {
                None => return Ok(Ok(())),
                Some(reason) => reasons.push(format!("'{}': {reason}", p.source())),
            }
        }
        Ok(Err(reasons.join("; ")))
    }

    /// Runs the predicate helper (retry re-executed) on `input`, bounded by
    /// `--timeout` (else 10 s), so a runaway expression can neither hang
    /// nor crash retry.
    fn evaluate(&mut self, preds: &[Predicate], input: OwnedFd) -> Result<Vec<Option<String>>, Error> {
        let helper =
            Program::new(&[OsString::from("/proc/self/exe"), OsString::from(predicate::HELPER_ARG)], None)
                .map_err(|e| Error::io("cannot prepare the predicate helper", e))?;
        let mut reply = Spool::new(None);
        let limit = self.cfg.timeout.unwrap_or(PREDICATE_TIMEOUT);
        let limits = Limits {
            deadline: Instant::now().checked_add(limit),
            kill_signal: libc::SIGKILL,
            kill_after: Duration::ZERO,
        };
        // The helper's stderr is read and dropped: the crash report of a
        // runaway expression is summed up in the validation reason instead.
        let io = Io {
            stdin: Input::Fd(input.as_raw_fd()),
            stdout: Output::Piped(Sink { spool: Some(&mut reply), ..Sink::default() }),
            stderr: Output::Piped(Sink::default()),
        };
        let fail = |why: String| Ok(vec![Some(why); preds.len()]);
        let fin = match exec::run(&helper, &self.base_env, true, io, &limits, self.signals, &mut self.buf) {
            Ok(fin) => fin,
            Err(SpawnError::NotFound(e) | SpawnError::CannotExecute(e) | SpawnError::Internal(e)) => {
                return fail(format!("cannot start the predicate helper: {e}"));
            }
        };
        if fin.timed_out {
            return fail(format!("evaluation did not finish within {}", crate::parse::human(limit)));
        }
        if let Exit::Signal(sig) = fin.exit {
            return fail(format!("evaluation crashed ({})", crate::parse::signal_name(sig)));
        }
        let bytes = reply.to_vec(u64::MAX).ok().flatten().unwrap_or_default();
        match predicate::parse_response(&bytes, preds.len()) {
            Ok(j) => Ok(j),
            Err(e) => fail(format!("predicate helper failed: {e}")),
        }
    }

    fn report_attempt(
        &mut self,
        n: u32,
        attempt: &Attempt,
        verdict: &Verdict,
        facts: &Facts,
        next: Next,
        duration: Duration,
    ) {
        let (exit_code, signal) = exit_parts(attempt);
        let failure = match attempt.status {
            Status::Exited(0) => facts.validation.join("; "),
            Status::TimedOut => match (self.cfg.timeout, self.deadline) {
                (_, Some(d)) if attempt.ended >= d => "killed at --max-time".to_string(),
                (Some(t), _) => format!("timed out after {}", crate::parse::human(t)),
                (None, _) => "timed out".to_string(),
            },
            other => other.describe(),
        };
        let rule = match verdict {
            Verdict::Success => None,
            Verdict::Retry(rule) => rule.clone(),
            Verdict::Stop(why) => Some(why.clone()),
        };
        if let Some(j) = &mut self.journal {
            let reason = match (&rule, failure.is_empty()) {
                (Some(rule), false) => Some(format!("{failure}; {rule}")),
                (Some(rule), true) => Some(rule.clone()),
                (None, false) => Some(failure.clone()),
                (None, true) => None,
            };
            if j.attempts.len() >= JOURNAL_ATTEMPTS {
                j.attempts.remove(0);
            }
            j.attempts.push(AttemptRecord {
                attempt: n,
                started: self
                    .wall
                    .checked_add(attempt.started.saturating_duration_since(self.start))
                    .unwrap_or(self.wall),
                duration,
                status: attempt.status.code(),
                verdict: verdict.word(),
                reason,
            });
            j.cut_off =
                attempt.status == Status::TimedOut && self.deadline.is_some_and(|d| attempt.ended >= d);
        }
        self.report.attempt(&AttemptReport {
            attempt: n,
            total: self.cfg.attempts,
            status: attempt.status.code(),
            exit_code,
            signal,
            timed_out: attempt.status == Status::TimedOut,
            duration,
            verdict: verdict.word(),
            failure,
            rule,
            next,
        });
    }

    /// `--on-retry`: `sh -c CMD`, stdin /dev/null, output to retry's stderr,
    /// bounded by `--timeout`. Returns a signal that interrupted it.
    fn on_retry(&mut self, n: u32, status: Status) -> Option<libc::c_int> {
        let cmd = self.cfg.on_retry.as_ref()?;
        let argv = [OsString::from("/bin/sh"), OsString::from("-c"), cmd.clone()];
        let program = match Program::new(&argv, None) {
            Ok(p) => p,
            Err(e) => {
                self.report.on_retry_failed(n, 125, e.to_string());
                return None;
            }
        };
        let null = match File::open("/dev/null") {
            Ok(f) => f,
            Err(e) => {
                self.report.on_retry_failed(n, 125, format!("cannot open /dev/null: {e}"));
                return None;
            }
        };
        let env = self.env(n + 1, Some(status));
        let limits = Limits {
            deadline: self.cfg.timeout.and_then(|t| Instant::now().checked_add(t)),
            kill_signal: self.cfg.kill_signal,
            kill_after: self.cfg.kill_after,
        };
        let io = Io {
            stdin: Input::Fd(null.as_raw_fd()),
            stdout: Output::Fd(libc::STDERR_FILENO),
            stderr: Output::Inherit,
        };
        let result = exec::run(&program, &env, true, io, &limits, self.signals, &mut self.buf);
        sys::reap_orphans(&[]);
        match result {
            Ok(fin) => {
                let st = status_of(&fin);
                if st != Status::Exited(0) {
                    self.report.on_retry_failed(n, st.code(), st.describe());
                }
                fin.interrupted
            }
            Err(SpawnError::NotFound(e) | SpawnError::CannotExecute(e) | SpawnError::Internal(e)) => {
                self.report.on_retry_failed(n, 127, format!("cannot run /bin/sh: {e}"));
                None
            }
        }
    }

    /// Sleeps until `wake` (`None`: forever) before attempt `next`; returns a
    /// signal that ended it. On a terminal a countdown line shows meanwhile;
    /// it only shortens the single polls (to redraw), never moves `wake`, and
    /// is erased when this returns (by its `Drop`).
    fn sleep_until(&mut self, wake: Option<Instant>, next: u32) -> Option<libc::c_int> {
        let mut countdown = wake.and_then(|w| self.report.countdown(next, self.cfg.attempts, w));
        loop {
            let now = Instant::now();
            if wake.is_some_and(|w| now >= w) {
                return None;
            }
            let until = match (&mut countdown, wake) {
                (Some(c), Some(w)) => Some(c.tick(now, w)),
                _ => wake,
            };
            let mut fds = [sys::pollfd(self.signals.fd(), libc::POLLIN)];
            let _ = sys::poll(&mut fds, until.map(|u| u.saturating_duration_since(now)));
            if let Some(sig) = self.signals.take().first() {
                return Some(*sig);
            }
        }
    }
}

fn status_of(fin: &Finished) -> Status {
    if fin.timed_out {
        return Status::TimedOut;
    }
    match fin.exit {
        Exit::Code(c) => Status::Exited(u8::try_from(c & 0xff).unwrap_or(u8::MAX)),
        Exit::Signal(s) => Status::Signaled(s),
    }
}

fn exit_parts(attempt: &Attempt) -> (Option<i32>, Option<i32>) {
    match attempt.finished.map(|f| f.exit) {
        Some(Exit::Code(c)) => (Some(c), None),
        Some(Exit::Signal(s)) => (None, Some(s)),
        // A spawn failure: no process exited.
        None => (None, None),
    }
}

/// A memfd holding the helper request: header line, then the input.
fn memfd_with(
    mode: Mode,
    preds: &[Predicate],
    attempt: u32,
    elapsed: Duration,
    fill: impl FnOnce(libc::c_int) -> std::io::Result<()>,
) -> Result<OwnedFd, Error> {
    let err = |e| Error::io("cannot prepare the predicate input", e);
    let fd = sys::memfd(c"retry-predicate").map_err(err)?;
    let header = predicate::request_header(preds, mode, attempt, elapsed.as_secs_f64());
    sys::write_all(fd.as_raw_fd(), &header).map_err(err)?;
    fill(fd.as_raw_fd()).map_err(err)?;
    let mut file = File::from(fd);
    file.rewind().map_err(err)?;
    Ok(OwnedFd::from(file))
}

/// retry's environment without the RETRY_* variables it sets itself (a
/// nested retry's values win over its parent's).
pub(crate) fn base_env() -> Vec<CString> {
    std::env::vars_os()
        .filter(|(k, _)| !RETRY_VARS.iter().any(|v| OsStr::new(v) == k))
        .filter_map(|(k, v)| {
            // Sized once: no reallocation for `=` and CString's NUL.
            let mut entry = Vec::with_capacity(k.len() + v.len() + 2);
            entry.extend_from_slice(k.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            CString::new(entry).ok()
        })
        .collect()
}

/// `--state-dir DIR`: created with mode 0700 if missing, kept afterwards.
fn make_state_dir(dir: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("cannot create --state-dir '{}'", dir.display()), e))
}

/// The value of `name` in a `NAME=value` list.
fn env_value(env: &[CString], name: &[u8]) -> Option<OsString> {
    env.iter().find_map(|e| {
        let bytes = e.as_bytes();
        let value = bytes.strip_prefix(name)?.strip_prefix(b"=")?;
        Some(OsString::from_vec(value.to_vec()))
    })
}

/// An OS error without Rust's " (os error N)" suffix.
fn errno_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn lossy(s: Option<&OsString>) -> String {
    s.map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}
