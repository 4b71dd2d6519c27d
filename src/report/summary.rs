//! `--summary FILE`: a JSON document about the whole run, written
//! atomically (a temp file in FILE's directory, then a rename; a FIFO or a
//! device in place: [`crate::outfile`]) at the end of
//! every run — success, giving up, a stop rule, `--max-time`, a spawn
//! failure, an interrupt by signal (before retry re-raises it), and retry's
//! own errors. The [`Recorder`] collects what the reporter sees; memory
//! stays bounded with `--forever`: the first [`KEEP_FIRST`] and the last
//! [`KEEP_LAST`] attempts are kept, the ones between are counted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::error::Error;
use crate::record::{AttemptRecord, ms, rfc3339};

/// Attempts kept from the start of the run.
pub const KEEP_FIRST: usize = 100;
/// Attempts kept from the end of the run.
pub const KEEP_LAST: usize = 100;
/// An attempt's `reason` longer than this is cut (at a character boundary).
pub const REASON_LIMIT: usize = 4096;
/// The version of the document's layout; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// `--summary FILE` must be writable at the end: checked before anything
/// runs, so a typo is a usage error (125), not a lost report
/// ([`crate::outfile::check`]).
pub fn check_target(path: &Path) -> Result<(), Error> {
    crate::outfile::check("--summary", path)
}

/// The options in force, typed (durations in milliseconds, defaults
/// filled in), not the raw argv (made by `Config::summary_options`). The
/// store URL is shown masked so a password never reaches the file.
#[derive(Serialize, Debug)]
pub struct Options {
    /// `-n`; null with `--forever`.
    pub retries: Option<u32>,
    pub forever: bool,
    pub timeout_ms: Option<u64>,
    pub kill_after_ms: u64,
    pub kill_signal: String,
    pub max_time_ms: Option<u64>,
    pub algo: &'static str,
    pub wait_ms: u64,
    pub multiplier: f64,
    pub max_wait_ms: Option<u64>,
    pub jitter: f64,
    pub reset_after_ms: Option<u64>,
    /// `--reset-on-progress`.
    pub reset_on_progress: bool,
    /// `--delays`, when it replaces `--algo` (then `algo` is `delays`).
    pub delays_ms: Option<Vec<u64>>,
    /// `--wait-from` regexes.
    pub wait_from: Vec<String>,
    /// `--rotate`: each variable and its values.
    pub rotate: Vec<RotateOption>,
    pub on_give_up: Option<String>,
    /// `--retry-on-signal`, `--stop-on-signal`: `SIGKILL,SIGTERM`.
    pub retry_on_signal: Option<String>,
    pub stop_on_signal: Option<String>,
    pub splay_ms: Option<u64>,
    pub seed: Option<u64>,
    pub on_retry: Option<String>,
    pub retry_on_exit: Option<String>,
    pub stop_on_exit: Option<String>,
    pub retry_on_stdout: Vec<String>,
    pub retry_on_stderr: Vec<String>,
    pub stop_on_stdout: Vec<String>,
    pub stop_on_stderr: Vec<String>,
    pub retry_if: Vec<String>,
    pub until: Vec<String>,
    pub until_match: Vec<String>,
    /// `live` or `final`: what is in force, inspection included.
    pub stdout: &'static str,
    pub stdin: &'static str,
    pub foreground: bool,
    pub state_dir: Option<String>,
    /// `--temp-state`.
    pub temp_state: bool,
    /// `quiet`, `normal` or `verbose`.
    pub verbosity: &'static str,
    pub log_format: &'static str,
    pub summary: String,
    /// `--flaky-exit N`.
    pub flaky_exit: Option<u8>,
    /// `--metrics FILE`.
    pub metrics: Option<String>,
    /// `--key`; null without one (then the shared-state options are null too).
    pub key: Option<String>,
    /// The store in use (option, `RETRY_STATE_STORE` or the default), masked.
    pub state_store: Option<String>,
    pub circuit_break: Option<u32>,
    /// In force with `--circuit-break` (default 5m), else null.
    pub circuit_cooldown_ms: Option<u64>,
    pub rate: Option<RateOption>,
    pub concurrency: Option<u32>,
    pub store_optional: bool,
    /// `--store-lease` (null: the default 10 s).
    pub store_lease_ms: Option<u64>,
    /// `--tls-ca`, `--tls-cert`, `--tls-key`: the files, as given.
    pub tls_ca: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// `--queue DIR|URL` (a URL's password masked).
    pub queue: Option<String>,
    /// `--queue-env`: the names of the variables a Redis job keeps.
    pub queue_env: Vec<String>,
    /// In force with `--queue` (default 3 days), else null.
    pub max_age_ms: Option<u64>,
}

/// `--rotate NAME=V1,V2,...`, typed.
#[derive(Serialize, Debug)]
pub struct RotateOption {
    pub name: String,
    pub values: Vec<String>,
}

/// `--rate N/DURATION`, typed.
#[derive(Serialize, Debug)]
pub struct RateOption {
    pub n: u32,
    pub window_ms: u64,
}

/// How the run ended, as the `done` event says it.
#[derive(Clone, Debug)]
pub struct EndRecord {
    pub outcome: &'static str,
    pub status: u8,
    pub signal: Option<i32>,
    pub elapsed: Duration,
    /// It succeeded after at least one failed attempt.
    pub flaky: bool,
    /// retry's exit status when `--flaky-exit` made it differ from `status`.
    pub exit: Option<u8>,
}

impl EndRecord {
    /// How a run ended that retry's own failure cut short (125).
    pub fn error(elapsed: Duration) -> EndRecord {
        EndRecord {
            outcome: "error",
            status: crate::status::USAGE,
            signal: None,
            elapsed,
            flaky: false,
            exit: None,
        }
    }
}

/// A run's attempts, bounded: the first `first` and the last `last` are
/// kept, the ones between counted (so `--forever` stays bounded).
#[derive(Debug)]
pub struct Kept {
    limits: (usize, usize),
    first: Vec<AttemptRecord>,
    last: VecDeque<AttemptRecord>,
    omitted: u64,
    count: u32,
}

impl Kept {
    pub fn new(first: usize, last: usize) -> Kept {
        Kept { limits: (first, last), first: Vec::new(), last: VecDeque::new(), omitted: 0, count: 0 }
    }

    pub fn push(&mut self, record: AttemptRecord) {
        self.count = self.count.saturating_add(1);
        if self.first.len() < self.limits.0 {
            self.first.push(record);
            return;
        }
        if self.last.len() >= self.limits.1 {
            self.omitted = self.omitted.saturating_add(1);
            if self.last.pop_front().is_none() {
                return;
            }
        }
        self.last.push_back(record);
    }

    /// Every attempt pushed.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Attempts counted but not kept.
    pub fn omitted(&self) -> u64 {
        self.omitted
    }

    /// The kept attempts, oldest first (the omitted ones sat after the
    /// first [`Kept::before_gap`]).
    pub fn records(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.first.iter().chain(self.last.iter())
    }

    /// How many kept attempts come before the gap.
    pub fn before_gap(&self) -> usize {
        self.first.len()
    }
}

/// Collects a run for `--summary`.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    command: Vec<String>,
    options: Options,
    started_at: SystemTime,
    start: Instant,
    attempts: Kept,
    end: Option<EndRecord>,
}

/// The file's layout (README "Summary file").
#[derive(Serialize)]
struct Document<'a> {
    version: u32,
    command: &'a [String],
    options: &'a Options,
    started_at: String,
    ended_at: String,
    elapsed_ms: u64,
    outcome: &'a str,
    status: u8,
    signal: Option<i32>,
    flaky: bool,
    exit: Option<u8>,
    error: Option<&'a str>,
    attempt_count: u32,
    attempts_omitted: u64,
    attempts: Vec<&'a AttemptRecord>,
}

impl Recorder {
    /// A recorder for a run of `command` with `options`, to write to `path`.
    pub fn new(path: &Path, command: Vec<String>, options: Options) -> Recorder {
        Recorder {
            path: path.to_path_buf(),
            command,
            options,
            started_at: SystemTime::now(),
            start: Instant::now(),
            attempts: Kept::new(KEEP_FIRST, KEEP_LAST),
            end: None,
        }
    }

    pub fn attempt(&mut self, mut record: AttemptRecord) {
        if let Some(reason) = &mut record.reason {
            truncate(reason, REASON_LIMIT);
        }
        self.attempts.push(record);
    }

    pub fn done(&mut self, end: EndRecord) {
        self.end = Some(end);
    }

    /// Writes the document; `error` when retry's own failure ended the run.
    pub fn write(&self, error: Option<&Error>) -> Result<(), Error> {
        let message = error.map(|e| e.to_string());
        let end = match (&self.end, error) {
            (Some(end), None) => end.clone(),
            (_, Some(_)) | (None, None) => EndRecord::error(self.start.elapsed()),
        };
        let doc = Document {
            version: SCHEMA_VERSION,
            command: &self.command,
            options: &self.options,
            started_at: rfc3339(self.started_at),
            ended_at: rfc3339(SystemTime::now()),
            elapsed_ms: ms(end.elapsed),
            outcome: end.outcome,
            status: end.status,
            signal: end.signal,
            flaky: end.flaky,
            exit: end.exit,
            error: message.as_deref(),
            attempt_count: self.attempts.count(),
            attempts_omitted: self.attempts.omitted(),
            attempts: self.attempts.records().collect(),
        };
        write_json(&self.path, &doc)
    }
}

/// Writes a `--summary` document to `path`: replaced atomically, or
/// written in place when a FIFO or device.
pub(super) fn write_json(path: &Path, doc: &impl Serialize) -> Result<(), Error> {
    let what = || format!("cannot write --summary '{}'", path.display());
    let mut bytes = serde_json::to_vec_pretty(doc)
        .map_err(|e| Error::io(what(), std::io::Error::other(e.to_string())))?;
    bytes.push(b'\n');
    crate::outfile::write(path, &bytes, 0o600).map_err(|e| Error::io(what(), e))
}

/// Cuts `s` to at most `limit` bytes at a character boundary, marking the cut.
fn truncate(s: &mut String, limit: usize) {
    if s.len() <= limit {
        return;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> AttemptRecord {
        AttemptRecord {
            attempt: n,
            started: SystemTime::now(),
            duration: Duration::from_millis(1),
            status: 1,
            exit_code: Some(1),
            signal: None,
            timed_out: false,
            verdict: crate::record::Verdict::Retry,
            reason: Some("exit status 1".into()),
            delay: Some(Duration::from_millis(10)),
            hint: None,
            progress: None,
        }
    }

    #[test]
    fn keeps_the_first_and_last_attempts_and_counts_the_rest() {
        let args: Vec<std::ffi::OsString> = ["retry", "--forever", "true"].iter().map(Into::into).collect();
        let Ok(crate::config::Mode::Run(cfg)) = crate::config::mode(&args) else { panic!("not a run") };
        let path = Path::new("s.json");
        let mut r = Recorder::new(path, vec!["true".into()], cfg.summary_options(path));
        let total = (KEEP_FIRST + KEEP_LAST + 1234) as u32;
        for n in 1..=total {
            r.attempt(record(n));
        }
        let kept = &r.attempts;
        assert_eq!(kept.count(), total);
        assert_eq!(kept.first.len(), KEEP_FIRST);
        assert_eq!(kept.before_gap(), KEEP_FIRST);
        assert_eq!(kept.last.len(), KEEP_LAST);
        assert_eq!(kept.omitted(), 1234);
        assert_eq!(kept.first[0].attempt, 1);
        assert_eq!(kept.last.back().unwrap().attempt, total);
        assert_eq!(kept.last.front().unwrap().attempt, total - KEEP_LAST as u32 + 1);
        assert_eq!(kept.records().count(), KEEP_FIRST + KEEP_LAST);
        let first = serde_json::to_value(&kept.first[0]).unwrap();
        assert!(first["started_at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let mut s = "é".repeat(3000);
        truncate(&mut s, REASON_LIMIT);
        assert!(s.len() <= REASON_LIMIT + '…'.len_utf8());
        assert!(s.ends_with('…'));
        let mut short = "short".to_string();
        truncate(&mut short, REASON_LIMIT);
        assert_eq!(short, "short");
    }
}
