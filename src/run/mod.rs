//! The loop: admit → (splay) → for each attempt: gate → attempt → judge →
//! decide → report → sleep, until an [`Outcome`].
//!
//! The loop knows nothing of queues: it starts from a [`Start`] (for a
//! fresh run, nothing behind it; for a queued job in a drain, the job's
//! attempts, clock and backoff so far, its environment, directory and
//! stdin) and returns an [`Outcome`] with its attempt records and the
//! captured stdout, which the caller writes, reports, or queues. The
//! decision after each attempt is the pure [`decide::decide`]; what one
//! attempt does is in [`attempt`]; shared state is [`coord`]. The loop is
//! the only reader of the clock for decisions; sleeps and waits are
//! `ppoll`s on the signal pipe, so a signal ends a sleep at once.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStringExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt as _, SeedableRng as _};

use crate::backoff::Schedule;
use crate::capture::{Scanner, Spool, Tail};
use crate::child::Program;
use crate::config::{Config, Stdout};
use crate::environ;
use crate::error::Error;
use crate::record::AttemptRecord;
use crate::report::Reporter;
use crate::signals::Signals;
use crate::status::{End, Ending, Status};
use crate::stdin::Replay;
use crate::sys;

mod attempt;
pub mod coord;
pub mod decide;
mod progress;

use attempt::Attempt;
use coord::{Coordination, Gate};
use decide::{After, Decision, Limits, Plan, decide, ends_after};

/// Stdout larger than this is not parsed for `--until`.
pub const UNTIL_LIMIT: u64 = 64 << 20;

/// How long a predicate may run when no `--timeout` is given.
pub const PREDICATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempt records an [`Outcome`] keeps (the most recent), so `--forever`
/// stays bounded.
pub const RECORDS_KEPT: usize = 100;

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

/// Where a run stands before its first attempt: nothing for a fresh run;
/// for a queued job, what its earlier attempts left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// Attempts made before this run (`RETRY_ATTEMPT` goes on from them).
    pub attempts: u32,
    /// The last one's status (`RETRY_LAST_STATUS`).
    pub last: Option<Status>,
    /// Time since the first start (`$elapsed` goes on from it).
    pub elapsed: Duration,
    /// The backoff schedule's position: delays taken, the last one.
    pub position: (u32, Duration),
}

/// Everything a run starts from besides its options.
pub struct Start {
    pub resume: Resume,
    /// Attempts this run may make besides `-n` (a drain makes one).
    pub limit: Option<u32>,
    /// The environment without retry's `RETRY_*` variables.
    pub env: Vec<CString>,
    /// The working directory; `None`: retry's.
    pub cwd: Option<PathBuf>,
    /// Every attempt reads this file from its start (a queued job's
    /// recorded stdin, or /dev/null); `None`: retry's stdin, recorded and
    /// replayed with `--stdin replay`.
    pub stdin: Option<File>,
    /// `RETRY_STATE_DIR`, when the run has one.
    pub state_dir: Option<PathBuf>,
}

impl Start {
    /// A fresh run in retry's environment and directory.
    pub fn fresh(state_dir: Option<PathBuf>) -> Start {
        Start {
            resume: Resume::default(),
            limit: None,
            env: environ::base(),
            cwd: None,
            stdin: None,
            state_dir,
        }
    }
}

/// What a run did.
pub struct Outcome {
    pub ending: Ending,
    /// Its attempts, oldest first (the most recent [`RECORDS_KEPT`]).
    pub records: Vec<AttemptRecord>,
    /// The backoff schedule's position after the run.
    pub position: (u32, Duration),
    /// How long after its last attempt the next one is due: the schedule's
    /// next delay when the run ended on a retryable failure, the circuit's
    /// cooldown when it was refused; `None` otherwise.
    pub next_delay: Option<Duration>,
    /// The last attempt was killed at `--max-time` (a drain's budget).
    pub cut_off: bool,
    /// When the run started.
    pub started: SystemTime,
    /// How long it took.
    pub elapsed: Duration,
    /// The captured stdout of the accepted (or last) attempt, not yet
    /// written (`--stdout final`, or inspection without `--stdout live`).
    pub stdout: Option<Spool>,
    /// The stdin recorded by `--stdin replay` (a queue saves it).
    pub replay: Option<Replay>,
    /// Why no attempt could start before `--max-time` (the splay or a
    /// store wait would end after it), when none did.
    pub no_start: Option<String>,
}

/// Runs attempts of `cfg`'s command from `start` until success, a stop,
/// the limits, `--max-time` or a signal. The attempts are reported as they
/// end; the end of the run is the caller's to report.
pub fn run(cfg: &Config, start: Start, signals: &mut Signals, report: &Reporter) -> Result<Outcome, Error> {
    let mut run = Run::new(cfg, start, signals, report)?;
    sys::become_subreaper();
    report.command(&cfg.command);
    let ending = run.attempts()?;
    sys::reap_orphans(&[]);
    // The store records the run's end before the caller may queue it.
    if let Some(c) = &mut run.coord {
        c.finish(&ending, report)?;
    }
    Ok(Outcome {
        ending,
        records: run.records.into(),
        position: run.position,
        next_delay: run.next_delay,
        cut_off: run.cut_off,
        started: run.wall,
        elapsed: run.start.elapsed(),
        stdout: run.stdout_spool.filter(|_| cfg.stdout == Stdout::Captured { tee: false }),
        replay: run.replay,
        no_start: run.no_start,
    })
}

/// Everything one run needs across attempts.
struct Run<'a> {
    cfg: &'a Config,
    report: &'a Reporter,
    signals: &'a mut Signals,
    program: Program,
    env: Vec<CString>,
    state_dir: Option<PathBuf>,
    stdout_spool: Option<Spool>,
    stdout_scanner: Option<Scanner>,
    stderr_scanner: Option<Scanner>,
    stdout_tail: Option<Tail>,
    stderr_tail: Option<Tail>,
    replay: Option<Replay>,
    /// Every attempt reads this from its start (`Start::stdin`).
    stdin_file: Option<File>,
    buf: Vec<u8>,
    start: Instant,
    /// The wall clock at `start`, for the records.
    wall: SystemTime,
    deadline: Option<Instant>,
    stdout_fifo: bool,
    resume: Resume,
    limit: Option<u32>,
    /// `--key` with `--circuit-break`, `--rate`, `--concurrency`.
    coord: Option<Coordination>,
    records: VecDeque<AttemptRecord>,
    position: (u32, Duration),
    next_delay: Option<Duration>,
    cut_off: bool,
    /// Why no attempt could start within `--max-time`, when none did.
    no_start: Option<String>,
}

impl<'a> Run<'a> {
    /// Prepares a run: temporary files before attempt 1 (so a bad TMPDIR
    /// fails with 125), the command's path, the scanners, the store.
    fn new(
        cfg: &'a Config,
        start: Start,
        signals: &'a mut Signals,
        report: &'a Reporter,
    ) -> Result<Run<'a>, Error> {
        let begin = Instant::now();
        let wall = SystemTime::now();
        // Streamed stdout (`--stdout live` with a stdout rule) is kept only
        // for `--until`, which parses all of it; the rules scan it as it
        // passes (the spill file cost a disk write of every byte).
        let stdout_spool = match cfg.stdout {
            Stdout::Captured { tee: false } => Some(Spool::new(Some(crate::tmp::spill_file()?))),
            Stdout::Captured { tee: true } if !cfg.until.is_empty() => {
                Some(Spool::new(Some(crate::tmp::spill_file()?)))
            }
            Stdout::Captured { tee: true } | Stdout::Live => None,
        };
        let replay = match (&start.stdin, cfg.stdin_replay) {
            (None, true) => Some(Replay::new(crate::tmp::spill_file()?)),
            (Some(_), _) | (None, false) => None,
        };
        let path = environ::value(&start.env, b"PATH");
        let mut program = Program::new(&cfg.command, path.as_deref())
            .map_err(|e| Error::usage("COMMAND", lossy(cfg.command.first()), e.to_string()))?;
        program.cwd = start.cwd.and_then(|d| CString::new(d.into_os_string().into_vec()).ok());
        // `--wait-from` reads stderr always, stdout when it is captured anyway.
        let hints: Vec<_> = cfg.wait_from.iter().map(|p| p.regex.clone()).collect();
        let stdout_hints =
            if matches!(cfg.stdout, Stdout::Captured { .. }) { hints.clone() } else { Vec::new() };
        let scanner = |patterns: Vec<regex::bytes::Regex>, hints: Vec<regex::bytes::Regex>| {
            (!patterns.is_empty() || !hints.is_empty()).then(|| Scanner::new(patterns).with_hints(hints))
        };
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
        Ok(Run {
            cfg,
            report,
            signals,
            program,
            env: start.env,
            state_dir: start.state_dir,
            stdout_scanner: scanner(stdout_patterns, stdout_hints),
            stderr_scanner: scanner(stderr_patterns, hints),
            stdout_tail: (tails && matches!(cfg.stdout, Stdout::Captured { .. })).then(Tail::default),
            stderr_tail: tails.then(Tail::default),
            stdout_spool,
            replay,
            stdin_file: start.stdin,
            buf: Vec::new(),
            start: begin,
            wall,
            deadline: cfg.max_time.and_then(|m| begin.checked_add(m)),
            stdout_fifo: sys::is_fifo(libc::STDOUT_FILENO),
            resume: start.resume,
            limit: start.limit,
            coord,
            records: VecDeque::new(),
            position: start.resume.position,
            next_delay: None,
            cut_off: false,
            no_start: None,
        })
    }

    /// The attempts, until the run ends.
    fn attempts(&mut self) -> Result<Ending, Error> {
        let cfg = self.cfg;
        let mut ending = Ending { end: End::Deadline, last: None, validation_failed: false, attempts: 0 };
        // An open circuit refuses the run at once, before any splay. A
        // queued job is due again when the circuit may close.
        if let Some(cooldown) = self.admit()? {
            self.next_delay = Some(cooldown);
            ending.end = End::Refused;
            return Ok(ending);
        }
        let (backoff_rng, mut splay_rng) = rngs(cfg.seed);
        let (k, prev) = self.resume.position;
        let mut plan = Plan::new(Schedule::resume(cfg.backoff.clone(), backoff_rng, k, prev), cfg.cycle());
        let limits = Limits {
            attempts: cfg.attempts,
            this_run: self.limit,
            reset_after: cfg.reset_after,
            reset_on_progress: cfg.reset_on_progress,
        };
        // Attempts of this run that count against -n (not those that made
        // progress, with --reset-on-progress).
        let mut counted = 0u32;
        if let Some(warning) = cfg.jitter_warning() {
            self.report.warning(warning);
        }
        if let Some(max) = cfg.splay {
            let splay = splay_delay(max, &mut splay_rng);
            let wake = self.start.checked_add(splay);
            if ends_after(wake, self.deadline) {
                self.no_start =
                    Some(format!("the --splay sleep of {} would end after it", crate::parse::human(splay)));
                return Ok(ending);
            }
            if let Some(signal) = self.sleep_until(wake, 1) {
                ending.end = End::Interrupted { signal, during_sleep: true };
                return Ok(ending);
            }
        }
        loop {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                ending.end = End::Deadline;
                return Ok(ending);
            }
            // `this` counts the attempts of this run, `n` those of the job.
            let this = ending.attempts + 1;
            let n = self.resume.attempts.saturating_add(this);
            match self.gate(n)? {
                Gate::Go => {}
                Gate::Deadline(wait) => {
                    if ending.attempts == 0 {
                        self.no_start = Some(format!("{wait} would end after it"));
                    }
                    ending.end = End::Deadline;
                    return Ok(ending);
                }
                Gate::Interrupted(signal) => {
                    ending.end = End::Interrupted { signal, during_sleep: true };
                    return Ok(ending);
                }
            }
            let before =
                self.state_dir.as_deref().filter(|_| cfg.reset_on_progress).map(progress::Snapshot::of);
            let attempt = self.attempt(n, ending.last.or(self.resume.last))?;
            let progress =
                before.zip(self.state_dir.as_deref()).map(|(b, dir)| progress::Snapshot::of(dir) != b);
            counted += u32::from(progress != Some(true));
            let hint = match &attempt.hint {
                Some(Ok(wait)) => Some(*wait),
                Some(Err(text)) => {
                    self.report.hint_unreadable(n, text);
                    None
                }
                None => None,
            };
            ending.attempts = this;
            ending.last = Some(attempt.status);
            ending.validation_failed = !attempt.facts.validation.is_empty();
            let verdict = attempt.verdict.verdict();
            let after = After {
                verdict,
                interrupted: attempt.finished.and_then(|f| f.interrupted).or_else(|| self.signals.first()),
                number: n,
                this_run: this,
                counted,
                progress: progress == Some(true),
                hint,
                ran: attempt.duration(),
                // Looked at only when it matters: one system call.
                stdout_closed: verdict == crate::record::Verdict::Retry && self.stdout_closed(&attempt),
                time_left: self.deadline.map(|d| d.saturating_duration_since(attempt.ended)),
            };
            let decision = decide(&after, &limits, &mut plan);
            if self.report.debug() {
                self.explain(n, &decision, &plan);
            }
            if let Decision::Retry { delay, .. } | Decision::GiveUp { delay, .. } = decision {
                self.next_delay = Some(delay);
                self.position = plan.position();
            }
            self.cut_off = self.killed_at_deadline(&attempt);
            self.record(n, &attempt, &decision, progress);
            match decision {
                Decision::Retry { delay, .. } => {
                    if let Some(signal) = self.on_retry(n, attempt.status) {
                        ending.end = End::Interrupted { signal, during_sleep: true };
                        return Ok(ending);
                    }
                    if let Some(signal) = self.sleep_until(attempt.ended.checked_add(delay), n + 1) {
                        ending.end = End::Interrupted { signal, during_sleep: true };
                        return Ok(ending);
                    }
                }
                Decision::Stop(end) | Decision::GiveUp { end, .. } => {
                    ending.end = end;
                    return Ok(ending);
                }
                Decision::Interrupted(signal) => {
                    ending.end = End::Interrupted { signal, during_sleep: false };
                    return Ok(ending);
                }
            }
        }
    }

    /// `-vv`: why the sleep after attempt `n` is what it is.
    fn explain<R: rand::Rng>(&self, n: u32, decision: &Decision, plan: &Plan<R>) {
        let (delay, why) = match decision {
            Decision::Retry { delay, hinted: true } => (Some(*delay), "the --wait-from hint".to_string()),
            Decision::Retry { delay, hinted: false } => (Some(*delay), plan.explain(n)),
            Decision::GiveUp { end: End::Deadline, delay, .. } => {
                (None, format!("the sleep of {} would end after --max-time", crate::parse::human(*delay)))
            }
            Decision::GiveUp { delay, .. } => (
                None,
                format!(
                    "no attempt left in this run; the next is due {} after this one",
                    crate::parse::human(*delay)
                ),
            ),
            Decision::Stop(_) | Decision::Interrupted(_) => return,
        };
        self.report.schedule(n, delay, why);
    }

    /// Keeps the attempt's record and reports it.
    fn record(&mut self, n: u32, attempt: &Attempt, decision: &Decision, progress: Option<bool>) {
        let failure = self.failure(attempt);
        let rule = attempt.verdict.rule();
        let (exit_code, signal) = attempt.exit_parts();
        let record = AttemptRecord {
            attempt: n,
            started: self
                .wall
                .checked_add(attempt.started.saturating_duration_since(self.start))
                .unwrap_or(self.wall),
            duration: attempt.duration(),
            status: attempt.status.code(),
            exit_code,
            signal,
            timed_out: attempt.status == Status::TimedOut,
            verdict: attempt.verdict.verdict(),
            reason: crate::record::reason(&failure, rule),
            delay: decision.delay(),
            hint: decision.hinted_delay(),
            progress,
        };
        self.report.attempt(&crate::report::Attempted {
            record: &record,
            total: self.cfg.attempts,
            failure: &failure,
            rule,
            why_not: decision.why_not(),
        });
        if self.records.len() >= RECORDS_KEPT {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// Before attempt 1: the circuit's cooldown when it refuses the run.
    fn admit(&mut self) -> Result<Option<Duration>, Error> {
        match &mut self.coord {
            Some(c) => c.admit(self.report),
            None => Ok(None),
        }
    }

    /// Time since the job's first start: this run's, plus a queued job's past.
    fn elapsed(&self) -> Duration {
        self.resume.elapsed.saturating_add(self.start.elapsed())
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

    /// Is retry's stdout a pipe without readers now?
    fn stdout_closed(&self, attempt: &Attempt) -> bool {
        attempt.finished.is_some_and(|f| f.forward_broken)
            || (self.stdout_fifo && sys::pipe_is_broken(libc::STDOUT_FILENO))
    }

    /// The environment of attempt `n`: the base one plus `RETRY_*`.
    fn env(&self, n: u32, last: Option<Status>) -> Vec<CString> {
        // --rotate: this attempt's values.
        environ::with_retry_vars(
            &self.env,
            Some(n),
            self.cfg.attempts,
            last.map(Status::code),
            self.cfg.rotation_of(n),
            self.state_dir.as_deref(),
        )
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

fn lossy(s: Option<&OsString>) -> String {
    s.map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}
