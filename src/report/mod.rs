//! What retry says about a run, on stderr: `retry: ` lines for people,
//! one JSON object per line (`--log-format json`), GitHub Actions
//! workflow commands (`--log-format github`), or the text lines with
//! GitLab CI sections (`--log-format gitlab`). Every message goes through
//! an [`Event`], so the formats say the same things; each attempt's output
//! is folded by [`fold`]. The `--summary` document is [`summary`]'s (a
//! drain's, [`drain_summary`]'s), the GitHub step summary and outputs
//! [`github`]'s, the `--metrics` file [`metrics`]'s: they are fed the same
//! records and written by [`Reporter::finish`] (a drain's by
//! [`Reporter::finish_drain`]).

use std::cell::RefCell;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::countdown::Countdown;
use crate::error::Error;
use crate::parse::human;
use crate::record::{AttemptRecord, Verdict, ms};
use crate::status::{End, Ending};

pub mod drain_summary;
pub mod fold;
pub mod github;
pub mod metrics;
pub mod summary;

use drain_summary::{DrainRecorder, JobEntry};
use fold::Fold;
use summary::{EndRecord, Kept, Recorder};

/// `--log-format`: how retry's messages are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `retry: ` lines for people.
    Text,
    /// One JSON object per line.
    Json,
    /// GitHub Actions workflow commands.
    Github,
    /// The text lines, with GitLab CI collapsible sections.
    Gitlab,
}

impl Format {
    pub fn word(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Github => "github",
            Format::Gitlab => "gitlab",
        }
    }
}

/// How much retry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
    /// `-vv`: also the scheduler's and the store's decisions.
    Debug,
}

impl Verbosity {
    pub fn word(self) -> &'static str {
        match self {
            Verbosity::Quiet => "quiet",
            Verbosity::Normal => "normal",
            Verbosity::Verbose => "verbose",
            Verbosity::Debug => "debug",
        }
    }
}

/// A finished attempt, as the run loop reports it.
#[derive(Clone, Debug)]
pub struct Attempted<'a> {
    pub record: &'a AttemptRecord,
    /// Total attempts; `None` with `--forever`.
    pub total: Option<u32>,
    /// What went wrong (`exit status 7`, why validation failed); empty on success.
    pub failure: &'a str,
    /// The rule that decided, if one had to (`stderr matched 'x'`).
    pub rule: Option<&'a str>,
    /// Why no attempt follows, when worth saying (`retry got SIGINT`).
    pub why_not: Option<String>,
}

/// Everything retry reports.
#[derive(Serialize, Debug)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// `-v`: the command about to run.
    Command { argv: Vec<String> },
    /// `-v`: an attempt starts.
    AttemptStart { attempt: u32 },
    /// An attempt finished: its record, without `started_at`.
    Attempt {
        attempt: u32,
        status: u8,
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        duration_ms: u64,
        verdict: Verdict,
        reason: &'a Option<String>,
        delay_ms: Option<u64>,
        /// The sleep a `--wait-from` hint set.
        #[serde(skip_serializing_if = "Option::is_none")]
        hint_ms: Option<u64>,
        /// With `--reset-on-progress`: did it change its state dir?
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<bool>,
    },
    /// A `--wait-from` regex matched text that is not a wait.
    HintUnreadable { attempt: u32, text: &'a str },
    /// `--on-give-up` failed (it does not change the status).
    OnGiveUpFailed { status: u8, reason: String },
    /// `--on-dead` failed for a dead job (it does not change the status).
    OnDeadFailed { id: String, status: u8, reason: String },
    /// The run ended.
    Done {
        outcome: &'a str,
        attempts: u32,
        status: u8,
        elapsed_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// It succeeded after at least one failed attempt.
        flaky: bool,
        /// retry's exit status, when `--flaky-exit` made it differ from `status`.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit: Option<u8>,
    },
    /// `--on-retry` failed (not fatal).
    OnRetryFailed { attempt: u32, status: u8, reason: String },
    /// Something worth knowing that does not stop the run.
    Warning {
        message: String,
        /// The job it is about (a drain's or `--list`'s).
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// `-vv`: why the sleep after an attempt is what it is.
    Schedule { attempt: u32, delay_ms: Option<u64>, why: String },
    /// `-vv`: a decision of the shared-state store.
    StoreDecision { key: &'a str, decision: String },
    /// Why retry exits 125, 126 or 127 (printed even with `-q`).
    Error { message: String },
    /// `--queue`: the run gave up and its job was written to the queue.
    Queued { id: String, file: String, attempts: u32, last_status: Option<u8>, next_due: String },
    /// `--drain`: what became of one job (`result`: succeeded, rescheduled,
    /// dead, skipped, or lost: its claim was lost and its result dropped).
    Job {
        id: String,
        result: &'a str,
        attempts: u32,
        last_status: Option<u8>,
        next_due: Option<String>,
        reason: Option<String>,
    },
    /// `--drain`: the drain ended.
    Drained {
        dir: String,
        succeeded: u32,
        rescheduled: u32,
        dead: u32,
        skipped: u32,
        status: u8,
        elapsed_ms: u64,
    },
    /// The circuit of `--key` is open: this run is refused (exit 75).
    CircuitOpen { key: &'a str, failures: u32, remaining_ms: u64, trial_running: bool },
    /// The circuit of `--key` is half-open and this run is its trial.
    CircuitTrial { key: &'a str },
    /// `-v`: an attempt waits for its `--rate` turn or a `--concurrency` slot.
    StoreWait {
        attempt: u32,
        wait: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
    },
    /// The state store cannot be used: exit 125 (printed even with `-q`).
    StoreError { message: String },
    /// A Redis server that keeps queued jobs only in memory (said once).
    StoreWarning { message: String },
    /// `-v`: the store a `--key` shares its state in (password masked).
    StoreOpen { key: &'a str, store: String },
}

/// What became of a job in a drain.
#[derive(Clone, Debug)]
pub struct JobReport {
    pub result: JobResult,
    pub attempts: u32,
    pub last_status: Option<u8>,
    /// RFC 3339, and how far from now, when rescheduled.
    pub next_due: Option<(String, Duration)>,
    pub reason: Option<String>,
}

impl JobReport {
    /// A job the drain did not run (a corrupt file buried, a newer one
    /// skipped): no attempt, and why.
    pub fn unrun(result: JobResult, reason: String) -> JobReport {
        JobReport { result, attempts: 0, last_status: None, next_due: None, reason: Some(reason) }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobResult {
    Succeeded,
    Rescheduled,
    Dead,
    Skipped,
    /// This drain's claim on a Redis job was lost (its lease ran out and
    /// another drain claimed it): its result is dropped.
    Lost,
}

impl JobResult {
    /// The `result` word of the `job` event.
    pub fn word(self) -> &'static str {
        match self {
            JobResult::Succeeded => "succeeded",
            JobResult::Rescheduled => "rescheduled",
            JobResult::Dead => "dead",
            JobResult::Skipped => "skipped",
            JobResult::Lost => "lost",
        }
    }
}

/// What the end of a run writes besides `--summary`, and how its log is
/// folded: from the run's options (made by `app`).
#[derive(Clone, Debug, Default)]
pub struct Ends {
    /// COMMAND and its arguments.
    pub command: Vec<String>,
    /// `-n`'s total attempts; `None` with `--forever`.
    pub total: Option<u32>,
    /// The attempt whose GitLab section starts expanded: the last possible
    /// one; `None` when none is known to be (`--forever`).
    pub expand: Option<u32>,
    /// `--flaky-exit N`.
    pub flaky_exit: Option<u8>,
    /// `--log-format github`: `$GITHUB_STEP_SUMMARY` and `$GITHUB_OUTPUT`.
    pub github: Option<github::Files>,
    /// `--metrics FILE` and the run's `key` label.
    pub metrics: Option<(PathBuf, String)>,
}

/// A run as its end reports need it.
#[derive(Debug)]
struct RunLog {
    ends: Ends,
    /// Attempts, bounded, for the step summary.
    kept: Kept,
    /// Set by [`Reporter::done`].
    end: Option<(EndRecord, u32)>,
}

/// What one job's reporter saw, for a drain's `--summary`.
#[derive(Debug, Default)]
struct Seen {
    argv: Option<Vec<String>>,
    /// The attempt the drain ran: its number and status.
    attempt: Option<(u32, u8)>,
}

/// Writes events to stderr in the chosen format, and hands them to the
/// `--summary` recorder when there is one.
#[derive(Clone)]
pub struct Reporter {
    format: Format,
    verbosity: Verbosity,
    /// Text on a terminal, not `-q`: sleeps over a second show a countdown.
    countdown: bool,
    summary: Option<Rc<RefCell<Recorder>>>,
    /// Put before every text line (`job <id>: ` in a drain).
    prefix: String,
    /// The job these lines are about (a drain's).
    job: Option<String>,
    /// Where a drain's dead jobs go, for text lines: `dead/`.
    dead_letters: &'static str,
    /// The fold of each attempt's output (a group, a section), per run or job.
    fold: Rc<RefCell<Fold>>,
    /// A run's end reports (step summary, outputs, metrics, `--flaky-exit`).
    run: Option<Rc<RefCell<RunLog>>>,
    /// A drain's `--summary`.
    drain_log: Option<Rc<RefCell<DrainRecorder>>>,
    /// What this job's reporter saw (a drain's).
    seen: Rc<RefCell<Seen>>,
}

impl Reporter {
    pub fn new(format: Format, verbosity: Verbosity) -> Reporter {
        let countdown = format == Format::Text
            && verbosity != Verbosity::Quiet
            && std::io::stderr().is_terminal()
            && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
        Reporter {
            format,
            verbosity,
            countdown,
            summary: None,
            prefix: String::new(),
            job: None,
            dead_letters: "dead/",
            fold: Rc::new(RefCell::new(Fold::new(None))),
            run: None,
            drain_log: None,
            seen: Rc::default(),
        }
    }

    /// What the end of the run writes besides `--summary`, and which
    /// attempt's GitLab section starts expanded.
    pub fn with_ends(mut self, ends: Ends) -> Reporter {
        self.fold = Rc::new(RefCell::new(Fold::new(ends.expand)));
        let kept = Kept::new(github::SUMMARY_ATTEMPTS.0, github::SUMMARY_ATTEMPTS.1);
        self.run = Some(Rc::new(RefCell::new(RunLog { ends, kept, end: None })));
        self
    }

    /// Records the drain for its `--summary`.
    pub fn with_drain_summary(mut self, recorder: Option<DrainRecorder>) -> Reporter {
        self.drain_log = recorder.map(|r| Rc::new(RefCell::new(r)));
        self
    }

    /// The job's argv, for the drain's `--summary` (a `for_job` reporter).
    pub fn with_argv(self, argv: Vec<String>) -> Reporter {
        self.seen.borrow_mut().argv = Some(argv);
        self
    }

    /// The end of a run: `--summary`, then with `--log-format github` the
    /// step summary and outputs, then `--metrics`; `error` is retry's own
    /// failure that ended the run. A failure to write one is reported (even
    /// with `-q`) but does not change the exit status.
    pub fn finish(&self, error: Option<&Error>) {
        self.close_fold();
        self.write_summary(error);
        let Some(run) = &self.run else { return };
        let run = run.borrow();
        let (end, attempts) = match (&run.end, error) {
            (Some((end, n)), None) => (end.clone(), *n),
            (_, Some(_)) | (None, None) => (EndRecord::error(Duration::ZERO), run.kept.count()),
        };
        if let Some(files) = &run.ends.github {
            let message = error.map(|e| e.to_string());
            let report = github::RunEnd {
                command: &run.ends.command,
                end: &end,
                attempts,
                total: run.ends.total,
                kept: &run.kept,
                error: message.as_deref(),
            };
            let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), attempts);
            for (path, text, var) in [
                (&files.step_summary, github::step_summary(&report), "GITHUB_STEP_SUMMARY"),
                (&files.output, github::outputs(&report, seed), "GITHUB_OUTPUT"),
            ] {
                let Some(path) = path else { continue };
                if let Err(e) = github::append(path, &text) {
                    self.error(format!(
                        "cannot write ${var} '{}': {}",
                        path.display(),
                        crate::parse::os_error(&e)
                    ));
                }
            }
        }
        // A run that retry's own failure cut short has no outcome to count.
        if let (Some((path, key)), None) = (&run.ends.metrics, error) {
            let sample = metrics::RunSample {
                key: key.clone(),
                outcome: end.outcome,
                ended: SystemTime::now(),
                duration: end.elapsed,
                attempts,
                new_attempts: attempts,
                status: end.status,
                flaky: end.flaky,
            };
            self.metrics(path, |m| m.record_run(&sample));
        }
    }

    /// Updates the `--metrics` FILE `path`; a failure is reported.
    pub fn metrics(&self, path: &std::path::Path, change: impl FnOnce(&mut metrics::Exposition)) {
        match metrics::update(path, change) {
            Ok(None) => {}
            Ok(Some(problem)) => self.warning(problem),
            Err(e) => self.error(e.to_string()),
        }
    }

    /// The end of a drain: its `--summary`, if one was asked for.
    pub fn finish_drain(&self, status: u8, d: Option<&crate::status::Drained>, error: Option<&Error>) {
        let Some(log) = &self.drain_log else { return };
        let counts = d.map(|d| drain_summary::Counts {
            succeeded: d.succeeded,
            rescheduled: d.rescheduled,
            dead: d.died,
            skipped: d.skipped,
        });
        let signal = d.and_then(|d| d.interrupted);
        let result = log.borrow().write(status, signal, counts.unwrap_or_default(), error);
        if let Err(e) = result {
            self.error(e.to_string());
        }
    }

    /// Writes a fold marker line (not with `-q`).
    fn raw(&self, line: Option<String>) {
        if let (Some(line), false) = (line, self.verbosity == Verbosity::Quiet) {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    /// Closes the open group or section, if any.
    fn close_fold(&self) {
        let line = self.fold.borrow_mut().close(self.format, SystemTime::now());
        self.raw(line);
    }

    /// Records the run for `--summary`.
    pub fn with_summary(mut self, recorder: Option<Recorder>) -> Reporter {
        self.summary = recorder.map(|r| Rc::new(RefCell::new(r)));
        self
    }

    /// Writes the `--summary` file, if one was asked for; `error` is retry's
    /// own failure that ended the run. A failure to write it is reported
    /// (even with `-q`) but does not change the exit status.
    pub fn write_summary(&self, error: Option<&Error>) {
        let Some(summary) = &self.summary else { return };
        let result = summary.borrow().write(error);
        if let Err(e) = result {
            self.error(e.to_string());
        }
    }

    /// A live countdown for a sleep until `wake` before attempt `next`, when
    /// stderr is a terminal, the format is text, not `-q`, and the sleep is
    /// over a second.
    pub fn countdown(&self, next: u32, total: Option<u32>, wake: Instant) -> Option<Countdown> {
        let long = wake.saturating_duration_since(Instant::now()) > Duration::from_secs(1);
        (self.countdown && long).then(|| Countdown::new(of(next, total)))
    }

    /// Says "moved to `place`" for a drain's dead jobs (instead of `dead/`).
    pub fn with_dead_letters(mut self, place: &'static str) -> Reporter {
        self.dead_letters = place;
        self
    }

    /// The same reporter for the lines about one queued job in a drain:
    /// text lines start with `job <id>: `.
    pub fn for_job(&self, id: &str) -> Reporter {
        Reporter {
            prefix: format!("job {id}: "),
            job: Some(id.to_string()),
            fold: Rc::new(RefCell::new(Fold::new(None))),
            seen: Rc::default(),
            ..self.clone()
        }
    }

    pub fn verbose(&self) -> bool {
        self.verbosity >= Verbosity::Verbose
    }

    /// `-vv`.
    pub fn debug(&self) -> bool {
        self.verbosity >= Verbosity::Debug
    }

    fn emit(&self, event: &Event<'_>, text: Option<String>, github: Option<(&str, String)>) {
        let quiet = self.verbosity == Verbosity::Quiet
            && !matches!(event, Event::Error { .. } | Event::StoreError { .. });
        if quiet {
            return;
        }
        let line = match self.format {
            Format::Json => {
                // Every JSON event carries the time it was written.
                #[derive(Serialize)]
                struct Line<'e, 'a> {
                    #[serde(flatten)]
                    event: &'e Event<'a>,
                    ts: String,
                }
                let ts = crate::record::rfc3339(std::time::SystemTime::now());
                serde_json::to_string(&Line { event, ts }).ok()
            }
            Format::Text | Format::Gitlab => text.map(|t| format!("retry: {}{t}", self.prefix)),
            Format::Github => match github {
                Some((kind, msg)) => {
                    Some(format!("::{kind}::{}", github::escape_data(&format!("{}{msg}", self.prefix))))
                }
                None => text.map(|t| github::plain(&format!("retry: {}{t}", self.prefix))),
            },
        };
        if let Some(mut line) = line {
            line.push('\n');
            // Nothing useful can be done when stderr is gone.
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    pub fn command(&self, argv: &[std::ffi::OsString]) {
        if !self.verbose() {
            return;
        }
        let argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let text = format!("running {}", shell_words(&argv));
        self.emit(&Event::Command { argv }, Some(text), None);
    }

    pub fn attempt_start(&self, attempt: u32, total: Option<u32>) {
        let title = format!("retry: {}attempt {}", self.prefix, of(attempt, total));
        let line = self.fold.borrow_mut().open(self.format, attempt, &title, SystemTime::now());
        self.raw(line);
        if !self.verbose() {
            return;
        }
        let text = format!("attempt {} starting", of(attempt, total));
        self.emit(&Event::AttemptStart { attempt }, Some(text), None);
    }

    pub fn attempt(&self, a: &Attempted<'_>) {
        let r = a.record;
        let event = Event::Attempt {
            attempt: r.attempt,
            status: r.status,
            exit_code: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            duration_ms: ms(r.duration),
            verdict: r.verdict,
            reason: &r.reason,
            delay_ms: r.delay.map(ms),
            hint_ms: r.hint.map(ms),
            progress: r.progress,
        };
        // The attempt's output ended before this line.
        self.close_fold();
        if let Some(summary) = &self.summary {
            summary.borrow_mut().attempt(r.clone());
        }
        if let Some(run) = &self.run {
            run.borrow_mut().kept.push(r.clone());
        }
        self.seen.borrow_mut().attempt = Some((r.attempt, r.status));
        // GitLab: a line after each section says how the attempt ended.
        if r.verdict == Verdict::Success && self.format == Format::Gitlab {
            let text = format!("attempt {} succeeded in {}", of(r.attempt, a.total), human(r.duration));
            self.emit(&event, Some(text), None);
            return;
        }
        // A spawn failure was said by its error line already.
        let spawn_failure = r.exit_code.is_none() && r.signal.is_none() && !r.timed_out;
        if r.verdict == Verdict::Success || (spawn_failure && r.delay.is_none()) {
            // Success is said by the final line; JSON still gets the event.
            if self.format == Format::Json {
                self.emit(&event, None, None);
            }
            return;
        }
        let mut text = format!("attempt {} failed: {}", of(r.attempt, a.total), a.failure);
        match (r.delay, a.rule) {
            (Some(d), Some(rule)) => text.push_str(&format!(" ({rule}); retrying in {}", human(d))),
            (Some(d), None) => text.push_str(&format!("; retrying in {}", human(d))),
            (None, rule) => {
                let why = a.why_not.as_deref().or(if r.verdict == Verdict::Stop { rule } else { None });
                if let Some(why) = why {
                    text.push_str(&format!("; not retrying: {why}"));
                }
            }
        }
        let github = ("warning", text.clone());
        self.emit(&event, Some(text), Some(github));
    }

    /// The run ended; `no_start` says why no attempt could start before
    /// `--max-time`, when none did and the reason is known.
    pub fn done(&self, outcome: &Ending, elapsed: Duration, total: Option<u32>, no_start: Option<&str>) {
        self.close_fold();
        let status = outcome.exit_code();
        let flaky_exit = self.run.as_ref().and_then(|r| r.borrow().ends.flaky_exit);
        let exit = Some(outcome.exit_status(flaky_exit)).filter(|e| *e != status);
        let signal = match outcome.end {
            End::Interrupted { signal, .. } => Some(signal),
            End::Success
            | End::Exhausted
            | End::Stopped
            | End::Deadline
            | End::ClosedStdout
            | End::Queued
            | End::Refused => None,
        };
        let event = Event::Done {
            outcome: outcome.end.word(),
            attempts: outcome.attempts,
            status,
            elapsed_ms: ms(elapsed),
            signal,
            flaky: outcome.flaky(),
            exit,
        };
        let record =
            EndRecord { outcome: outcome.end.word(), status, signal, elapsed, flaky: outcome.flaky(), exit };
        if let Some(summary) = &self.summary {
            summary.borrow_mut().done(record.clone());
        }
        if let Some(run) = &self.run {
            run.borrow_mut().end = Some((record, outcome.attempts));
        }
        let n = outcome.attempts;
        let attempts = crate::parse::count(u64::from(n), "attempt");
        let took = human(elapsed);
        let last = outcome.last.map(|s| s.describe()).unwrap_or_default();
        let last = if outcome.validation_failed { "validation failed".to_string() } else { last };
        let (text, github) = match outcome.end {
            End::Success if n > 1 => {
                // A flaky run: a notice on GitHub, an error when --flaky-exit fails the step.
                let failures = crate::parse::count(u64::from(n - 1), "failure");
                let mut t = format!("attempt {} succeeded after {failures} in {took} (flaky)", of(n, total));
                let kind = match exit {
                    Some(code) => {
                        t.push_str(&format!("; exit status {code} (--flaky-exit)"));
                        "error"
                    }
                    None => "notice",
                };
                (Some(t.clone()), Some((kind, t)))
            }
            End::Success => (None, None),
            End::Stopped if n == 1 && outcome.last.is_some_and(|s| s.is_spawn_failure()) => (None, None),
            End::Exhausted | End::Stopped => {
                let t = format!("giving up after {attempts} in {took}: {last}");
                (Some(t.clone()), Some(("error", t)))
            }
            End::Deadline => {
                let t = if n == 0 {
                    let why = no_start.map(|w| format!(": {w}")).unwrap_or_default();
                    format!("--max-time reached after {took} before any attempt could start{why}")
                } else {
                    format!("giving up after {attempts} in {took}: --max-time reached; last attempt: {last}")
                };
                (Some(t.clone()), Some(("error", t)))
            }
            End::Interrupted { signal, .. } => {
                let name = crate::parse::signal_name(signal);
                let t = format!("interrupted by {name} after {attempts} in {took}");
                (Some(t.clone()), Some(("error", t)))
            }
            End::ClosedStdout => {
                let t = format!("stdout is closed; stopping after {attempts} in {took}");
                (Some(t.clone()), Some(("error", t)))
            }
            // The `queued` line said it all.
            End::Queued => (None, None),
            // Said by the circuit_open line.
            End::Refused => (None, None),
        };
        if text.is_some() || self.format == Format::Json {
            self.emit(&event, text, github);
        }
    }

    pub fn on_retry_failed(&self, attempt: u32, status: u8, reason: String) {
        let text = format!("--on-retry failed: {reason}");
        self.emit(
            &Event::OnRetryFailed { attempt, status, reason },
            Some(text.clone()),
            Some(("warning", text)),
        );
    }

    /// `--wait-from` matched `text` in attempt `attempt`'s output, which
    /// is not a wait: the schedule's delay is used (text with `-v`).
    pub fn hint_unreadable(&self, attempt: u32, text: &str) {
        let line = self.verbose().then(|| {
            format!(
                "attempt {attempt}: cannot read '{text}' as a wait (--wait-from); using the backoff delay"
            )
        });
        if line.is_some() || self.format == Format::Json {
            self.emit(&Event::HintUnreadable { attempt, text }, line, None);
        }
    }

    /// `-vv`: why the sleep after attempt `attempt` is `delay` (`None`:
    /// no attempt follows).
    pub fn schedule(&self, attempt: u32, delay: Option<Duration>, why: String) {
        if !self.debug() {
            return;
        }
        let text = match delay {
            Some(d) => format!("attempt {attempt}: next attempt in {}: {why}", human(d)),
            None => format!("attempt {attempt}: no next attempt: {why}"),
        };
        self.emit(&Event::Schedule { attempt, delay_ms: delay.map(ms), why }, Some(text), None);
    }

    /// `-vv`: what the store decided for `key`.
    pub fn store_decision(&self, key: &str, decision: String) {
        if !self.debug() {
            return;
        }
        let text = format!("key '{key}': {decision}");
        self.emit(&Event::StoreDecision { key, decision }, Some(text), None);
    }

    pub fn on_give_up_failed(&self, status: u8, reason: String) {
        let text = format!("--on-give-up failed: {reason}");
        self.emit(&Event::OnGiveUpFailed { status, reason }, Some(text.clone()), Some(("warning", text)));
    }

    /// `--on-dead` failed for job `id` (a `for_job` reporter).
    pub fn on_dead_failed(&self, status: u8, reason: String) {
        let text = format!("--on-dead failed: {reason}");
        let id = self.job.clone().unwrap_or_default();
        self.emit(&Event::OnDeadFailed { id, status, reason }, Some(text.clone()), Some(("warning", text)));
    }

    pub fn warning(&self, message: String) {
        let text = format!("warning: {message}");
        let github = ("warning", message.clone());
        self.emit(&Event::Warning { message, id: self.job.clone() }, Some(text), Some(github));
    }

    /// `--queue`: where the job went and when it is due.
    pub fn queued(&self, id: &str, file: &str, outcome: &Ending, elapsed: Duration, due: (String, Duration)) {
        let n = outcome.attempts;
        let attempts = crate::parse::count(u64::from(n), "attempt");
        let last = match (outcome.validation_failed, outcome.last) {
            (true, _) => "validation failed".to_string(),
            (false, Some(s)) => s.describe(),
            (false, None) => "no attempt could start".to_string(),
        };
        let text = format!(
            "giving up for now after {attempts} in {}: {last}; queued as {file}, next attempt due at {} (in {})",
            human(elapsed),
            due.0,
            human(due.1)
        );
        let event = Event::Queued {
            id: id.to_string(),
            file: file.to_string(),
            attempts: n,
            last_status: outcome.last.map(|s| s.code()),
            next_due: due.0,
        };
        self.emit(&event, Some(text.clone()), Some(("warning", text)));
    }

    /// `--drain`: what became of the job (a `for_job` reporter).
    pub fn job(&self, j: &JobReport) {
        if let Some(log) = &self.drain_log {
            let seen = self.seen.borrow();
            log.borrow_mut().job(JobEntry {
                id: self.job.clone().unwrap_or_default(),
                argv: seen.argv.clone(),
                attempt: seen.attempt.map(|(n, _)| n),
                status: seen.attempt.map(|(_, s)| s),
                result: j.result.word(),
                reason: j.reason.clone(),
            });
        }
        let (text, github) = match j.result {
            JobResult::Succeeded => {
                (format!("succeeded on attempt {}; removed from the queue", j.attempts), None)
            }
            JobResult::Rescheduled => {
                let when = j
                    .next_due
                    .as_ref()
                    .map(|(at, d)| format!("; next attempt due at {at} (in {})", human(*d)))
                    .unwrap_or_default();
                let t = format!("rescheduled after attempt {}{when}", j.attempts);
                (t.clone(), Some(("warning", t)))
            }
            JobResult::Dead => {
                let t = format!("moved to {}: {}", self.dead_letters, j.reason.as_deref().unwrap_or("dead"));
                (t.clone(), Some(("error", t)))
            }
            JobResult::Lost => {
                let t = format!("warning: {}", j.reason.as_deref().unwrap_or("its claim was lost"));
                (t.clone(), Some(("warning", t)))
            }
            JobResult::Skipped => {
                let t = format!("warning: skipped: {}", j.reason.as_deref().unwrap_or("skipped"));
                (t.clone(), Some(("warning", t)))
            }
        };
        let event = Event::Job {
            id: self.job.clone().unwrap_or_default(),
            result: j.result.word(),
            attempts: j.attempts,
            last_status: j.last_status,
            next_due: j.next_due.as_ref().map(|(at, _)| at.clone()),
            reason: j.reason.clone(),
        };
        self.emit(&event, Some(text), github);
    }

    /// `--drain`: the counts at the end (text with `-v` only).
    pub fn drained(&self, dir: &str, d: &crate::status::Drained, elapsed: Duration) {
        let event = Event::Drained {
            dir: dir.to_string(),
            succeeded: d.succeeded,
            rescheduled: d.rescheduled,
            dead: d.died,
            skipped: d.skipped,
            status: d.exit_code(),
            elapsed_ms: ms(elapsed),
        };
        let text = self.verbose().then(|| {
            format!(
                "drained {dir} in {}: {} succeeded, {} rescheduled, {} dead, {} skipped",
                human(elapsed),
                d.succeeded,
                d.rescheduled,
                d.died,
                d.skipped
            )
        });
        if text.is_some() || self.format == Format::Json {
            self.emit(&event, text, None);
        }
    }

    /// `retry: circuit 'api' open for 3m12s more after 5 failed runs`.
    pub fn circuit_open(&self, key: &str, remaining: Duration, failures: u32, trial_running: bool) {
        let runs = crate::parse::count(u64::from(failures), "failed run");
        let text = if trial_running {
            format!("circuit '{key}' open after {runs}: a trial run is in progress")
        } else {
            format!("circuit '{key}' open for {} more after {runs}", human(remaining))
        };
        let event = Event::CircuitOpen { key, failures, remaining_ms: ms(remaining), trial_running };
        self.emit(&event, Some(text.clone()), Some(("error", text)));
    }

    pub fn circuit_trial(&self, key: &str) {
        let text = format!("circuit '{key}' half-open: this run is the trial");
        self.emit(&Event::CircuitTrial { key }, Some(text.clone()), Some(("warning", text)));
    }

    /// `-v`: an attempt waits for the store.
    pub fn store_wait(&self, attempt: u32, wait: &str, delay: Option<Duration>) {
        if !self.verbose() {
            return;
        }
        let text = match delay {
            Some(d) => format!("attempt {attempt} waits {} for its --{wait} turn", human(d)),
            None => format!("attempt {attempt} waits for a --{wait} slot"),
        };
        self.emit(&Event::StoreWait { attempt, wait, delay_ms: delay.map(ms) }, Some(text), None);
    }

    /// `-v`: where the key's state lives; `store` is already masked.
    pub fn store_open(&self, key: &str, store: String) {
        if !self.verbose() {
            return;
        }
        let text = format!("key '{key}' shares its state in {store}");
        self.emit(&Event::StoreOpen { key, store }, Some(text), None);
    }

    /// A warning about the store itself, said as it is (`retry: redis at …`).
    pub fn store_warning(&self, message: String) {
        let text = message.clone();
        self.emit(&Event::StoreWarning { message }, Some(text.clone()), Some(("warning", text)));
    }

    /// Why retry exits 125 because of the state store; shown even with `-q`.
    pub fn store_error(&self, message: String) {
        self.close_fold();
        let text = message.clone();
        self.emit(&Event::StoreError { message }, Some(text.clone()), Some(("error", text)));
    }

    /// Why retry exits 125, 126 or 127; shown even with `-q`.
    pub fn error(&self, message: String) {
        self.close_fold();
        let text = message.clone();
        self.emit(&Event::Error { message }, Some(text.clone()), Some(("error", text)));
    }
}

/// `2/4`, or `2` with `--forever`.
pub fn of(attempt: u32, total: Option<u32>) -> String {
    match total {
        Some(t) => format!("{attempt}/{t}"),
        None => attempt.to_string(),
    }
}

/// Words quoted for a POSIX shell where needed, for `-v`.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain =
                !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
            if plain { a.clone() } else { format!("'{}'", a.replace('\'', "'\\''")) }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
