//! `--metrics FILE`: a run's (or a drain's) numbers in the Prometheus text
//! exposition format, for node_exporter's textfile collector and any
//! scraper that reads such a file (SPEC "Messages and reports").
//!
//! One FILE may hold the series of several keys (`key="…"`, the `--key`,
//! else the command's base name; for a drain the queue's name): an update
//! reads FILE, replaces its own key's series, carries its counters
//! forward, keeps every other series, and writes FILE anew — all under an
//! exclusive `flock` of `FILE.lock`, so concurrent runs lose no increment.
//! The new FILE is a temp file in the same directory, mode 0644 whatever
//! the umask (a scraper may run as another user), synced, then renamed over
//! FILE: a reader sees the old file or the new one, never a part.
//!
//! The model and its text form are pure ([`Exposition`]); [`update`] is
//! the I/O.

use std::fmt::Write as _;
use std::io::Read as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Error;

/// A FILE larger than this is not read (it is not retry's: a few keys'
/// series take a few KiB); it is written anew.
pub const MAX_FILE: u64 = 16 << 20;

/// The `outcome` label values of `retry_runs_total`: the `done` event's.
pub const OUTCOMES: [&str; 7] =
    ["success", "exhausted", "stopped", "deadline", "interrupted", "refused", "queued"];

/// The `result` label values of `retry_drain_jobs_total`.
pub const RESULTS: [&str; 4] = ["succeeded", "rescheduled", "dead", "skipped"];

/// Every series retry writes: name, type, help. The run series first,
/// then the queue's.
const FAMILIES: [(&str, Kind, &str); 11] = [
    ("retry_last_run_timestamp_seconds", Kind::Gauge, "When the last run of the key ended, in Unix time."),
    (
        "retry_last_success_timestamp_seconds",
        Kind::Gauge,
        "When a run of the key last succeeded, in Unix time (absent until one has).",
    ),
    ("retry_last_run_duration_seconds", Kind::Gauge, "How long the last run of the key took."),
    ("retry_last_run_attempts", Kind::Gauge, "Attempts the last run of the key made."),
    ("retry_last_run_status", Kind::Gauge, "The status of the last run of the key (0: success)."),
    (
        "retry_last_run_flaky",
        Kind::Gauge,
        "1 when the last run of the key succeeded after a failed attempt, else 0.",
    ),
    ("retry_runs_total", Kind::Counter, "Runs of the key, by outcome."),
    ("retry_attempts_total", Kind::Counter, "Attempts made by runs of the key."),
    ("retry_queue_jobs", Kind::Gauge, "Jobs in the queue, by state (queued, dead)."),
    (
        "retry_queue_oldest_job_age_seconds",
        Kind::Gauge,
        "Age of the oldest job still queued (since it was first queued); 0 when none.",
    ),
    ("retry_drain_jobs_total", Kind::Counter, "Jobs looked at by drains of the queue, by result."),
];

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
    /// Histogram, summary, …: kept as read.
    Other,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Untyped | Kind::Other => "untyped",
        }
    }
}

/// One sample line: labels in order, the value as written.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's own name (a histogram's `_bucket`, …; else the family's).
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// An explicit timestamp, kept as read (retry writes none).
    pub timestamp: Option<String>,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One metric family: `# HELP`, `# TYPE` and its samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    /// The `# TYPE` word as read, for a type retry does not write.
    pub kind_word: String,
    pub samples: Vec<Sample>,
}

/// A whole metrics file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    pub families: Vec<Family>,
}

/// What one run adds to FILE.
#[derive(Clone, Debug)]
pub struct RunSample {
    pub key: String,
    /// The `done` event's outcome.
    pub outcome: &'static str,
    pub ended: SystemTime,
    pub duration: Duration,
    /// `retry_last_run_attempts`: the attempts of the run (for a drained
    /// job, the number of the attempt it made).
    pub attempts: u32,
    /// Added to `retry_attempts_total`: the attempts this run made.
    pub new_attempts: u32,
    pub status: u8,
    pub flaky: bool,
}

/// What one drain writes to FILE.
#[derive(Clone, Debug)]
pub struct QueueSample {
    /// The queue's name: the directory's base name or the Redis `#NAME`.
    pub key: String,
    pub queued: u64,
    pub dead: u64,
    pub oldest_age: Duration,
    /// This drain's counts, in the order of [`RESULTS`].
    pub drained: [u32; 4],
}

/// Unix time in seconds, with milliseconds.
fn unix(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (d.as_millis() as f64) / 1000.0
}

fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

impl Exposition {
    fn family_mut(&mut self, name: &str) -> &mut Family {
        if let Some(i) = self.families.iter().position(|f| f.name == name) {
            return &mut self.families[i];
        }
        let (kind, help) = FAMILIES
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or((Kind::Untyped, ""), |(_, kind, help)| (*kind, *help));
        self.families.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            kind_word: kind.word().to_string(),
            samples: Vec::new(),
        });
        let last = self.families.len() - 1;
        &mut self.families[last]
    }

    /// The value of `name{key, extra}`, if FILE has it.
    pub fn value(&self, name: &str, key: &str, extra: Option<(&str, &str)>) -> Option<f64> {
        let family = self.families.iter().find(|f| f.name == name)?;
        family.samples.iter().find(|s| matches(s, key, extra)).map(|s| s.value)
    }

    /// Sets `name{key, extra}` to `value`, replacing that series.
    fn set(&mut self, name: &str, key: &str, extra: Option<(&str, &str)>, value: f64) {
        let family = self.family_mut(name);
        let mut labels = vec![("key".to_string(), key.to_string())];
        if let Some((k, v)) = extra {
            labels.push((k.to_string(), v.to_string()));
        }
        let sample = Sample { name: name.to_string(), labels, value, timestamp: None };
        match family.samples.iter_mut().find(|s| matches(s, key, extra)) {
            Some(old) => *old = sample,
            None => family.samples.push(sample),
        }
    }

    /// Adds `by` to the counter `name{key, extra}` (from 0 when absent).
    fn add(&mut self, name: &str, key: &str, extra: Option<(&str, &str)>, by: f64) {
        let now = self.value(name, key, extra).filter(|v| v.is_finite() && *v >= 0.0).unwrap_or(0.0);
        self.set(name, key, extra, now + by);
    }

    /// Removes every series of `key` from the family `name`.
    fn drop_key(&mut self, name: &str, key: &str) {
        if let Some(f) = self.families.iter_mut().find(|f| f.name == name) {
            f.samples.retain(|s| s.label("key") != Some(key));
        }
    }

    /// A run of `s.key` ended: its series replaced, its counters carried.
    pub fn record_run(&mut self, s: &RunSample) {
        let key = s.key.as_str();
        let success = s.outcome == "success";
        self.set("retry_last_run_timestamp_seconds", key, None, unix(s.ended));
        if success {
            self.set("retry_last_success_timestamp_seconds", key, None, unix(s.ended));
        }
        self.set("retry_last_run_duration_seconds", key, None, secs(s.duration));
        self.set("retry_last_run_attempts", key, None, f64::from(s.attempts));
        self.set("retry_last_run_status", key, None, f64::from(s.status));
        self.set("retry_last_run_flaky", key, None, if s.flaky { 1.0 } else { 0.0 });
        // Every outcome is present (0 until it happens), so rate() and
        // increase() see the first one.
        for outcome in OUTCOMES {
            let by = if outcome == s.outcome { 1.0 } else { 0.0 };
            self.add("retry_runs_total", key, Some(("outcome", outcome)), by);
        }
        self.add("retry_attempts_total", key, None, f64::from(s.new_attempts));
    }

    /// A drain of the queue `s.key` ended: the gauges replaced, the
    /// counters carried.
    pub fn record_drain(&mut self, s: &QueueSample) {
        let key = s.key.as_str();
        self.drop_key("retry_queue_jobs", key);
        self.set("retry_queue_jobs", key, Some(("state", "queued")), s.queued as f64);
        self.set("retry_queue_jobs", key, Some(("state", "dead")), s.dead as f64);
        self.set("retry_queue_oldest_job_age_seconds", key, None, secs(s.oldest_age));
        self.record_drain_counts(key, s.drained);
    }

    /// A drain's counts (in the order of [`RESULTS`]) added to its counters.
    pub fn record_drain_counts(&mut self, key: &str, drained: [u32; 4]) {
        for (result, n) in RESULTS.iter().zip(drained) {
            self.add("retry_drain_jobs_total", key, Some(("result", result)), f64::from(n));
        }
    }

    /// The text form: every family with `# HELP` and `# TYPE`, retry's
    /// families first in their fixed order (their samples sorted by their
    /// labels, so the file is stable), then any others by name.
    pub fn render(&self) -> String {
        let mut families: Vec<&Family> = self.families.iter().filter(|f| !f.samples.is_empty()).collect();
        let rank = |name: &str| FAMILIES.iter().position(|(n, _, _)| *n == name).unwrap_or(FAMILIES.len());
        families.sort_by(|a, b| rank(&a.name).cmp(&rank(&b.name)).then_with(|| a.name.cmp(&b.name)));
        let mut out = String::new();
        for f in families {
            let help = if f.help.is_empty() { "Written by retry." } else { f.help.as_str() };
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind_word);
            let mut samples: Vec<&Sample> = f.samples.iter().collect();
            // Another writer's samples stay in their order (a histogram's
            // buckets, then its sum and count).
            if rank(&f.name) < FAMILIES.len() {
                samples.sort_by(|a, b| a.labels.cmp(&b.labels));
            }
            for s in samples {
                out.push_str(&s.name);
                if !s.labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in s.labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = write!(out, " {}", number(s.value));
                if let Some(ts) = &s.timestamp {
                    let _ = write!(out, " {ts}");
                }
                out.push('\n');
            }
        }
        out
    }

    /// Reads the text form. Errors name the line.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let mut exp = Exposition::default();
        // The family the last HELP or TYPE line named.
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim_start();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                let rest = rest.trim_start();
                if let Some(rest) = rest.strip_prefix("HELP ") {
                    let (name, help) = rest.trim_start().split_once(' ').unwrap_or((rest.trim(), ""));
                    check_name(name).map_err(|e| format!("line {n}: {e}"))?;
                    exp.family_mut(name).help = unescape_help(help);
                } else if let Some(rest) = rest.strip_prefix("TYPE ") {
                    let mut words = rest.split_whitespace();
                    let (Some(name), Some(word)) = (words.next(), words.next()) else {
                        return Err(format!("line {n}: a TYPE line needs a name and a type"));
                    };
                    check_name(name).map_err(|e| format!("line {n}: {e}"))?;
                    let kind = match word {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "untyped" => Kind::Untyped,
                        "histogram" | "summary" => Kind::Other,
                        other => return Err(format!("line {n}: unknown type '{other}'")),
                    };
                    let family = exp.family_mut(name);
                    family.kind = kind;
                    family.kind_word = word.to_string();
                }
                continue;
            }
            let sample = parse_sample(line).map_err(|e| format!("line {n}: {e}"))?;
            let family = family_of(&exp, &sample.name);
            exp.family_mut(&family).samples.push(sample);
        }
        Ok(exp)
    }
}

/// The family a sample belongs to: its own name, or the histogram or
/// summary it is a `_bucket`, `_sum` or `_count` of.
fn family_of(exp: &Exposition, sample: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            if exp.families.iter().any(|f| f.name == base && f.kind == Kind::Other) {
                return base.to_string();
            }
        }
    }
    sample.to_string()
}

fn matches(s: &Sample, key: &str, extra: Option<(&str, &str)>) -> bool {
    s.label("key") == Some(key) && extra.is_none_or(|(k, v)| s.label(k) == Some(v))
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("'{name}' is not a metric name"))
    }
}

/// `name{a="1",b="x\"y"} 3 [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
    let name = &line[..end];
    check_name(name)?;
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            // Skip blanks and a separating comma.
            while chars.next_if(|(_, c)| c.is_whitespace() || *c == ',').is_some() {}
            if let Some((i, '}')) = chars.peek().copied() {
                chars.next();
                rest = &body[i + 1..];
                break;
            }
            let mut label = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| c.is_ascii_alphanumeric() || *c == '_') {
                label.push(c);
            }
            if label.is_empty() {
                return Err("bad label list".to_string());
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('=') {
                return Err(format!("label '{label}' has no '='"));
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("the value of label '{label}' is not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, other)) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => return Err("unterminated label value".to_string()),
                    },
                    Some((_, '\n')) | None => return Err("unterminated label value".to_string()),
                    Some((_, c)) => value.push(c),
                }
            }
            labels.push((label, value));
        }
    }
    let mut words = rest.split_whitespace();
    let value = words.next().ok_or("no value")?;
    let value = parse_value(value).ok_or_else(|| format!("'{value}' is not a number"))?;
    let timestamp = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err("text after the timestamp".to_string());
    }
    Ok(Sample { name: name.to_string(), labels, value, timestamp })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// A value as Prometheus writes it: integers without a fraction.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".to_string() } else { "-Inf".to_string() }
    } else {
        // Rust writes the shortest text that reads back to the same f64,
        // never an exponent: 1700000000.123, 3, 0.5.
        format!("{v}")
    }
}

/// A label value in the text format: `\`, `"` and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: `\` and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape_help(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// `--metrics FILE` must be writable where it is: checked before anything
/// runs, so a typo is a usage error (125), not a silent gap in a graph.
/// FILE, when it exists, must be a regular file (it is replaced by a
/// rename, which must not swap a device or a FIFO for a file).
pub fn check_target(path: &Path) -> Result<(), Error> {
    let shown = path.display().to_string();
    let usage = |why: String| Error::usage("--metrics", &shown, why);
    if path.as_os_str().is_empty() {
        return Err(usage("expected a file name".to_string()));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Err(usage("is a directory; expected a file name".to_string())),
        Ok(m) if !m.is_file() => return Err(usage("is not a regular file".to_string())),
        Ok(_) | Err(_) => {}
    }
    crate::outfile::check("--metrics", path)
}

/// `FILE.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Reads FILE, applies `change`, writes FILE anew, under `FILE.lock`.
/// `Ok(Some(why))` when FILE could not be read as metrics and was written
/// anew (its other series lost: counters start again, which Prometheus
/// reads as a reset).
pub fn update(path: &Path, change: impl FnOnce(&mut Exposition)) -> Result<Option<String>, Error> {
    let what = || format!("cannot write --metrics '{}'", path.display());
    let lock_at = lock_path(path);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_at)
        .or_else(|e| match e.kind() {
            // Another user's lock file: reading is enough for flock.
            std::io::ErrorKind::PermissionDenied => std::fs::File::open(&lock_at),
            _ => Err(e),
        })
        .map_err(|e| Error::io(format!("{}: cannot open '{}'", what(), lock_at.display()), e))?;
    crate::sys::flock(lock.as_fd(), true, true)
        .map_err(|e| Error::io(format!("{}: cannot lock '{}'", what(), lock_at.display()), e))?;
    let (mut exp, problem) = match read(path) {
        Ok(text) => match Exposition::parse(&text) {
            Ok(exp) => (exp, None),
            Err(why) => {
                (Exposition::default(), Some(format!("'{}' is not a metrics file ({why})", path.display())))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Exposition::default(), None),
        Err(e) => (
            Exposition::default(),
            Some(format!("cannot read '{}' ({})", path.display(), crate::parse::os_error(&e))),
        ),
    };
    change(&mut exp);
    write(path, exp.render().as_bytes()).map_err(|e| Error::io(what(), e))?;
    // The lock goes with `lock`, after the rename.
    drop(lock);
    Ok(problem.map(|p| format!("{p}; written anew")))
}

/// FILE's text: at most [`MAX_FILE`] bytes of a regular file, opened
/// without following a symlink and without blocking on a FIFO.
fn read(path: &Path) -> std::io::Result<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(std::io::Error::other(format!("larger than {} MiB", MAX_FILE >> 20)));
    }
    let mut text = String::new();
    file.take(MAX_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// FILE replaced atomically, mode 0644 whatever the umask, so a scraper
/// running as another user can read it. (Not `*.prom` while written: the
/// temp file is hidden, and node_exporter reads only `*.prom`.)
fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::outfile::write(path, bytes, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(key: &str, outcome: &'static str, attempts: u32) -> RunSample {
        RunSample {
            key: key.to_string(),
            outcome,
            ended: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            duration: Duration::from_millis(1500),
            attempts,
            new_attempts: attempts,
            status: if outcome == "success" { 0 } else { 7 },
            flaky: outcome == "success" && attempts > 1,
        }
    }

    #[test]
    fn a_run_adds_to_the_counters_and_keeps_other_keys() {
        let mut exp = Exposition::default();
        exp.record_run(&run("a", "success", 3));
        exp.record_run(&run("b", "exhausted", 4));
        let text = exp.render();
        let mut again = Exposition::parse(&text).unwrap();
        assert_eq!(again.render(), text, "parse and render are inverse");
        again.record_run(&run("a", "exhausted", 2));
        let v = |name, key, extra| again.value(name, key, extra);
        assert_eq!(v("retry_runs_total", "a", Some(("outcome", "success"))), Some(1.0));
        assert_eq!(v("retry_runs_total", "a", Some(("outcome", "exhausted"))), Some(1.0));
        assert_eq!(v("retry_runs_total", "a", Some(("outcome", "queued"))), Some(0.0));
        assert_eq!(v("retry_attempts_total", "a", None), Some(5.0));
        assert_eq!(v("retry_runs_total", "b", Some(("outcome", "exhausted"))), Some(1.0));
        assert_eq!(v("retry_last_run_status", "a", None), Some(7.0));
        assert_eq!(v("retry_last_run_flaky", "a", None), Some(0.0));
        // The last success is carried over a failed run.
        assert_eq!(v("retry_last_success_timestamp_seconds", "a", None), Some(1_700_000_000.25));
        assert_eq!(v("retry_last_success_timestamp_seconds", "b", None), None);
        let text = again.render();
        assert!(text.contains("retry_last_run_timestamp_seconds{key=\"a\"} 1700000000.25\n"), "{text}");
        assert!(text.contains("retry_last_run_duration_seconds{key=\"a\"} 1.5\n"), "{text}");
        assert_eq!(text.matches("# HELP retry_runs_total ").count(), 1);
    }

    #[test]
    fn labels_are_escaped_and_read_back() {
        let mut exp = Exposition::default();
        let key = "we\"ird\\key\nname}, x=\"1\"";
        exp.record_run(&run(key, "success", 1));
        let text = exp.render();
        assert!(text.contains(r#"key="we\"ird\\key\nname}, x=\"1\"""#), "{text}");
        assert_eq!(text.lines().count(), text.split('\n').count() - 1, "no raw newline in a sample");
        let back = Exposition::parse(&text).unwrap();
        assert_eq!(back.value("retry_runs_total", key, Some(("outcome", "success"))), Some(1.0));
    }

    #[test]
    fn a_drain_replaces_its_gauges_and_adds_its_counts() {
        let mut exp = Exposition::default();
        let sample = |queued, drained| QueueSample {
            key: "q".to_string(),
            queued,
            dead: 1,
            oldest_age: Duration::from_secs(90),
            drained,
        };
        exp.record_drain(&sample(3, [1, 2, 0, 0]));
        exp.record_drain(&sample(0, [2, 0, 1, 0]));
        assert_eq!(exp.value("retry_queue_jobs", "q", Some(("state", "queued"))), Some(0.0));
        assert_eq!(exp.value("retry_drain_jobs_total", "q", Some(("result", "succeeded"))), Some(3.0));
        assert_eq!(exp.value("retry_drain_jobs_total", "q", Some(("result", "dead"))), Some(1.0));
        assert_eq!(exp.value("retry_queue_oldest_job_age_seconds", "q", None), Some(90.0));
    }

    #[test]
    fn foreign_families_are_kept() {
        let text = "# HELP other_seconds Something else.\n# TYPE other_seconds histogram\n\
                    other_seconds_bucket{le=\"+Inf\"} 3\nother_seconds_sum 1.5\nother_seconds_count 3\n";
        let mut exp = Exposition::parse(text).unwrap();
        exp.record_run(&run("a", "success", 1));
        let out = exp.render();
        assert!(out.ends_with(text), "{out}");
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        for bad in ["x{a=\"1} 3", "1x 3", "x{a=1} 3", "x 3 4 5", "# TYPE x nonsense", "x{a=\"1\"}"] {
            let e = Exposition::parse(&format!("# HELP x y\n{bad}\n")).unwrap_err();
            assert!(e.starts_with("line 2: "), "{bad}: {e}");
        }
    }
}
