//! What retry says about a run, on stderr: `retry: ` lines for people,
//! one JSON object per line (`--log-format json`), or GitHub Actions
//! workflow commands (`--log-format github`). Every message goes through
//! an [`Event`], so the three formats say the same things.

use std::cell::RefCell;
use std::io::{IsTerminal as _, Write as _};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::LogFormat;
use crate::config::Verbosity;
use crate::countdown::Countdown;
use crate::error::Error;
use crate::parse::human;
use crate::status::{End, Outcome};
use crate::summary::{AttemptRecord, EndRecord, Recorder};

/// What happens after a failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Another attempt after this sleep.
    Retry(Duration),
    /// No further attempt; why (for the text line), if worth saying.
    Stop(Option<String>),
}

/// A finished attempt.
#[derive(Clone, Debug)]
pub struct AttemptReport {
    pub attempt: u32,
    pub total: Option<u32>,
    pub status: u8,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
    /// `success`, `retry` or `stop`.
    pub verdict: &'static str,
    /// What went wrong (`exit status 7`, why validation failed); empty on success.
    pub failure: String,
    /// The rule that decided, if one had to (`stderr matched 'x'`).
    pub rule: Option<String>,
    pub next: Next,
}

/// Everything retry reports.
#[derive(Serialize, Debug)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// `-v`: the command about to run.
    Command { argv: Vec<String> },
    /// `-v`: an attempt starts.
    AttemptStart { attempt: u32 },
    /// An attempt finished.
    Attempt {
        attempt: u32,
        status: u8,
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        duration_ms: u64,
        verdict: &'a str,
        reason: Option<String>,
        delay_ms: Option<u64>,
    },
    /// The run ended.
    Done {
        outcome: &'a str,
        attempts: u32,
        status: u8,
        elapsed_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// `--on-retry` failed (not fatal).
    OnRetryFailed { attempt: u32, status: u8, reason: String },
    /// Something worth knowing that does not stop the run.
    Warning { message: String },
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

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

/// Writes events to stderr in the chosen format, and hands them to the
/// `--summary` recorder when there is one.
#[derive(Clone)]
pub struct Reporter {
    format: LogFormat,
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
}

impl Reporter {
    pub fn new(format: LogFormat, verbosity: Verbosity) -> Reporter {
        let countdown = format == LogFormat::Text
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
        }
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
        Reporter { prefix: format!("job {id}: "), job: Some(id.to_string()), ..self.clone() }
    }

    pub fn verbose(&self) -> bool {
        self.verbosity == Verbosity::Verbose
    }

    fn emit(&self, event: &Event<'_>, text: Option<String>, github: Option<(&str, String)>) {
        let quiet = self.verbosity == Verbosity::Quiet
            && !matches!(event, Event::Error { .. } | Event::StoreError { .. });
        if quiet {
            return;
        }
        let line = match self.format {
            LogFormat::Json => serde_json::to_string(event).ok(),
            LogFormat::Text => text.map(|t| format!("retry: {}{t}", self.prefix)),
            LogFormat::Github => match github {
                Some((kind, msg)) => Some(format!("::{kind}::{}{}", self.prefix, github_escape(&msg))),
                None => text.map(|t| format!("retry: {}{t}", self.prefix)),
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
        if let Some(summary) = &self.summary {
            summary.borrow_mut().attempt_started();
        }
        if !self.verbose() {
            return;
        }
        let text = format!("attempt {} starting", of(attempt, total));
        self.emit(&Event::AttemptStart { attempt }, Some(text), None);
    }

    pub fn attempt(&self, a: &AttemptReport) {
        let delay = match &a.next {
            Next::Retry(d) => Some(*d),
            Next::Stop(_) => None,
        };
        let reason = match (&a.rule, a.failure.is_empty()) {
            (Some(rule), false) => Some(format!("{}; {rule}", a.failure)),
            (Some(rule), true) => Some(rule.clone()),
            (None, false) => Some(a.failure.clone()),
            (None, true) => None,
        };
        let event = Event::Attempt {
            attempt: a.attempt,
            status: a.status,
            exit_code: a.exit_code,
            signal: a.signal,
            timed_out: a.timed_out,
            duration_ms: ms(a.duration),
            verdict: a.verdict,
            reason,
            delay_ms: delay.map(ms),
        };
        if let (Some(summary), Event::Attempt { reason, delay_ms, .. }) = (&self.summary, &event) {
            summary.borrow_mut().attempt(AttemptRecord {
                attempt: a.attempt,
                started_at: String::new(),
                duration_ms: ms(a.duration),
                status: a.status,
                exit_code: a.exit_code,
                signal: a.signal,
                timed_out: a.timed_out,
                verdict: a.verdict.to_string(),
                reason: reason.clone(),
                delay_ms: *delay_ms,
            });
        }
        // A spawn failure was said by its error line already.
        let spawn_failure = a.exit_code.is_none() && a.signal.is_none() && !a.timed_out;
        if a.verdict == "success" || (spawn_failure && matches!(a.next, Next::Stop(_))) {
            // Success is said by the final line; JSON still gets the event.
            if self.format == LogFormat::Json {
                self.emit(&event, None, None);
            }
            return;
        }
        let mut text = format!("attempt {} failed: {}", of(a.attempt, a.total), a.failure);
        match (&a.next, &a.rule) {
            (Next::Retry(d), Some(rule)) if self.verbose() || a.verdict == "retry" => {
                text.push_str(&format!(" ({rule}); retrying in {}", human(*d)));
            }
            (Next::Retry(d), _) => text.push_str(&format!("; retrying in {}", human(*d))),
            (Next::Stop(why), rule) => {
                let why = why.clone().or_else(|| (a.verdict == "stop").then(|| rule.clone()).flatten());
                if let Some(why) = why {
                    text.push_str(&format!("; not retrying: {why}"));
                }
            }
        }
        let github = ("warning", text.clone());
        self.emit(&event, Some(text), Some(github));
    }

    pub fn done(&self, outcome: &Outcome, elapsed: Duration, total: Option<u32>) {
        let status = outcome.exit_code();
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
        };
        if let Some(summary) = &self.summary {
            summary.borrow_mut().done(EndRecord { outcome: outcome.end.word(), status, signal, elapsed });
        }
        let n = outcome.attempts;
        let attempts = if n == 1 { "1 attempt".to_string() } else { format!("{n} attempts") };
        let took = human(elapsed);
        let last = outcome.last.map(|s| s.describe()).unwrap_or_default();
        let last = if outcome.validation_failed { "validation failed".to_string() } else { last };
        let (text, github) = match outcome.end {
            End::Success if n > 1 => (Some(format!("attempt {} succeeded after {took}", of(n, total))), None),
            End::Success => (None, None),
            End::Stopped if n == 1 && outcome.last.is_some_and(|s| s.is_spawn_failure()) => (None, None),
            End::Exhausted | End::Stopped => {
                let t = format!("giving up after {attempts} in {took}: {last}");
                (Some(t.clone()), Some(("error", t)))
            }
            End::Deadline => {
                let t = if n == 0 {
                    format!("--max-time reached after {took} before any attempt could start")
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
        if text.is_some() || self.format == LogFormat::Json {
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

    pub fn warning(&self, message: String) {
        let text = format!("warning: {message}");
        let github = ("warning", message.clone());
        self.emit(&Event::Warning { message }, Some(text), Some(github));
    }

    /// `--queue`: where the job went and when it is due.
    pub fn queued(
        &self,
        id: &str,
        file: &str,
        outcome: &Outcome,
        elapsed: Duration,
        due: (String, Duration),
    ) {
        let n = outcome.attempts;
        let attempts = if n == 1 { "1 attempt".to_string() } else { format!("{n} attempts") };
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
        let (result, text, github) = match j.result {
            JobResult::Succeeded => {
                ("succeeded", format!("succeeded on attempt {}; removed from the queue", j.attempts), None)
            }
            JobResult::Rescheduled => {
                let when = j
                    .next_due
                    .as_ref()
                    .map(|(at, d)| format!("; next attempt due at {at} (in {})", human(*d)))
                    .unwrap_or_default();
                let t = format!("rescheduled after attempt {}{when}", j.attempts);
                ("rescheduled", t.clone(), Some(("warning", t)))
            }
            JobResult::Dead => {
                let t = format!("moved to {}: {}", self.dead_letters, j.reason.as_deref().unwrap_or("dead"));
                ("dead", t.clone(), Some(("error", t)))
            }
            JobResult::Lost => {
                let t = format!("warning: {}", j.reason.as_deref().unwrap_or("its claim was lost"));
                ("lost", t.clone(), Some(("warning", t)))
            }
            JobResult::Skipped => {
                let t = format!("warning: skipped: {}", j.reason.as_deref().unwrap_or("skipped"));
                ("skipped", t.clone(), Some(("warning", t)))
            }
        };
        let event = Event::Job {
            id: self.job.clone().unwrap_or_default(),
            result,
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
        if text.is_some() || self.format == LogFormat::Json {
            self.emit(&event, text, None);
        }
    }

    /// `retry: circuit 'api' open for 3m12s more after 5 failed runs`.
    pub fn circuit_open(&self, key: &str, remaining: Duration, failures: u32, trial_running: bool) {
        let runs = if failures == 1 { "1 failed run".to_string() } else { format!("{failures} failed runs") };
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
        let text = message.clone();
        self.emit(&Event::StoreError { message }, Some(text.clone()), Some(("error", text)));
    }

    /// Why retry exits 125, 126 or 127; shown even with `-q`.
    pub fn error(&self, message: String) {
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

/// GitHub workflow command data escaping.
fn github_escape(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
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
