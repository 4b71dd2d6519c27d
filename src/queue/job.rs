//! The job file: one JSON document per queued job, with a format version.
//! Pure: (de)serialisation, validation, ids and timestamps; no I/O.
//!
//! Format version 1 (a dead letter adds `dead`):
//!
//! ```json
//! {"version": 1, "id": "20250102T030405.123456Z-1a2b3c4d",
//!  "argv": ["curl", "-fsS", "https://example.org"], "cwd": "/home/me",
//!  "options": ["-n", "2", "--queue", "/home/me/q"], "env": ["HOME=/home/me", "..."],
//!  "stdin": false, "first_start": "2025-01-02T03:04:05.123456Z", "max_age_ms": 259200000,
//!  "attempts": 3, "history": [{"attempt": 1, "started": "…", "duration_ms": 12,
//!  "status": 7, "exit_code": 7, "signal": null, "timed_out": false, "verdict": "retry",
//!  "reason": "exit status 7", "delay_ms": 1000}, …],
//!  "backoff": {"k": 3, "prev_ns": 4000000000}, "next_due": "2025-01-02T03:04:20.5Z",
//!  "dead": {"at": "…", "reason": "…"}}
//! ```
//!
//! Byte strings (argv, cwd, options, env) are JSON strings when they are
//! UTF-8, else `{"hex": "…"}`. The history holds [`AttemptRecord`]s, the
//! record every report uses, in the layout of `record::job_layout`: the
//! first release wrote only `attempt`, `started`, `duration_ms`, `status`,
//! `verdict` and `reason`, and its jobs read with the other fields unknown.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::record::AttemptRecord;

/// The format version this retry writes and the newest it reads.
pub const VERSION: u64 = 1;

/// Job files larger than this are corrupt (a job is argv, environment and
/// a bounded history: far smaller).
pub const MAX_FILE: u64 = 64 << 20;

/// A queued (or dead) job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub version: u64,
    pub id: String,
    /// COMMAND and its arguments.
    pub argv: Vec<Bytes>,
    /// The working directory of the queueing run (empty if unknown).
    pub cwd: Bytes,
    /// retry's arguments before COMMAND, as given: a drain parses them
    /// with the same parser into the same options.
    pub options: Vec<Bytes>,
    /// The environment as `NAME=value` (without retry's own `RETRY_*`).
    pub env: Vec<Bytes>,
    /// The stdin recorded by `--stdin replay` is in the side file `<id>.stdin`.
    pub stdin: bool,
    /// When the queueing run started: `$elapsed` and `--max-age` count from it.
    pub first_start: Stamp,
    /// `--max-age` given with `--queue`, or the default.
    pub max_age_ms: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// The most recent attempts, oldest first.
    #[serde(with = "crate::record::job_layout")]
    pub history: Vec<AttemptRecord>,
    /// Where the backoff schedule stands.
    pub backoff: Position,
    /// When the next attempt is due.
    pub next_due: Stamp,
    /// Set when the job is a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead: Option<Death>,
}

/// The backoff schedule's position: delays taken, and the last one
/// (capped, before jitter), so decorrelated backoff goes on from it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Position {
    pub k: u32,
    pub prev_ns: u64,
}

impl Position {
    pub fn new(k: u32, prev: Duration) -> Position {
        Position { k, prev_ns: u64::try_from(prev.as_nanos()).unwrap_or(u64::MAX) }
    }

    pub fn prev(&self) -> Duration {
        Duration::from_nanos(self.prev_ns)
    }
}

/// Why and when a job died.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Death {
    pub at: Stamp,
    pub reason: String,
}

impl Job {
    /// The last attempt's status.
    pub fn last_status(&self) -> Option<u8> {
        self.history.last().map(|r| r.status)
    }

    /// The last attempt's failure.
    pub fn last_reason(&self) -> Option<String> {
        self.history.last().and_then(|r| r.reason.clone())
    }

    /// Keeps the most recent `max` records.
    pub fn trim_history(&mut self, max: usize) {
        let extra = self.history.len().saturating_sub(max);
        self.history.drain(..extra);
    }

    /// A dead letter for a job file that could not be read: the original
    /// bytes are kept beside it.
    pub fn corrupt(id: &str, now: SystemTime, reason: String) -> Job {
        Job {
            version: VERSION,
            id: id.to_string(),
            argv: Vec::new(),
            cwd: Bytes(Vec::new()),
            options: Vec::new(),
            env: Vec::new(),
            stdin: false,
            first_start: Stamp(now),
            max_age_ms: 0,
            attempts: 0,
            history: Vec::new(),
            backoff: Position::default(),
            next_due: Stamp(now),
            dead: Some(Death { at: Stamp(now), reason }),
        }
    }
}

/// What a job file holds.
#[derive(Debug)]
pub enum Parsed {
    Job(Box<Job>),
    /// Written by a newer retry: leave it alone.
    Newer(u64),
    /// Not a job this retry can run; why.
    Corrupt(String),
}

/// Reads a job file's bytes; `id` is the file's name without `.job`.
pub fn parse(bytes: &[u8], id: &str) -> Parsed {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return Parsed::Corrupt(format!("not a JSON document: {e}")),
    };
    let version = match value.get("version").map(|v| v.as_u64()) {
        None => return Parsed::Corrupt("no format version".to_string()),
        Some(None) => return Parsed::Corrupt("the format version is not a number".to_string()),
        Some(Some(v)) => v,
    };
    if version > VERSION {
        return Parsed::Newer(version);
    }
    if version == 0 {
        return Parsed::Corrupt("format version 0 does not exist".to_string());
    }
    let job: Job = match serde_json::from_value(value) {
        Ok(j) => j,
        Err(e) => return Parsed::Corrupt(format!("not a valid job: {e}")),
    };
    if job.id != id {
        return Parsed::Corrupt(format!("its id '{}' is not its file name", job.id));
    }
    if job.argv.is_empty() && job.dead.is_none() {
        return Parsed::Corrupt("it has no command".to_string());
    }
    Parsed::Job(Box::new(job))
}

/// Why a job written by a newer retry is left alone (`--list` and drains).
pub fn newer(version: u64) -> String {
    format!("written by a newer retry (job format version {version}; this one reads up to {VERSION})")
}

/// A new job id: the UTC creation time to the microsecond, then random
/// hex, so ids sort by creation time and never collide in practice:
/// `20250102T030405.123456Z-1a2b3c4d`.
pub fn new_id(now: SystemTime, random: u32) -> String {
    let stamp: String = humantime::format_rfc3339_micros(clamp(now))
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{stamp}-{random:08x}")
}

/// A file name stem that may be a job id (no path separators, not hidden).
pub fn plausible_id(id: &str) -> bool {
    !id.is_empty() && !id.starts_with('.') && !id.contains('/')
}

/// The latest time RFC 3339 (four-digit years) can write.
fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

fn clamp(t: SystemTime) -> SystemTime {
    t.clamp(UNIX_EPOCH, latest())
}

/// `t + d`, saturating at the latest writable time.
pub fn later(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).map_or(latest(), clamp)
}

/// A wall-clock time, written as RFC 3339 UTC with microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(pub SystemTime);

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_micros(clamp(self.0)))
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stamp, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text)
            .map(Stamp)
            .map_err(|e| serde::de::Error::custom(format!("bad time '{text}': {e}")))
    }
}

/// A byte string (argv, paths, environment): JSON text when it is UTF-8,
/// else `{"hex": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn from_os(s: &std::ffi::OsStr) -> Bytes {
        Bytes(s.as_bytes().to_vec())
    }

    pub fn to_os(&self) -> OsString {
        OsString::from_vec(self.0.clone())
    }

    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BytesRepr {
    Text(String),
    Raw { hex: String },
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let hex = self.0.iter().map(|b| format!("{b:02x}")).collect();
                BytesRepr::Raw { hex }.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        match BytesRepr::deserialize(d)? {
            BytesRepr::Text(t) => Ok(Bytes(t.into_bytes())),
            BytesRepr::Raw { hex } => {
                let digits = hex.as_bytes();
                if digits.len() % 2 != 0 {
                    return Err(serde::de::Error::custom("odd number of hex digits"));
                }
                digits
                    .chunks(2)
                    .map(|pair| {
                        std::str::from_utf8(pair)
                            .ok()
                            .and_then(|p| u8::from_str_radix(p, 16).ok())
                            .ok_or_else(|| serde::de::Error::custom("bad hex digit"))
                    })
                    .collect::<Result<Vec<u8>, _>>()
                    .map(Bytes)
            }
        }
    }
}

/// One line of `--list`: exactly SPEC's fields.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Listed {
    pub id: String,
    /// `queued` or `dead`.
    pub state: &'static str,
    pub argv: Vec<String>,
    pub attempts: u32,
    /// RFC 3339; `None` when dead.
    pub next_due: Option<String>,
    pub last_status: Option<u8>,
    /// A queued job's last failure; why a dead one died.
    pub reason: Option<String>,
    /// When it was first queued (its first start); not listed. `None` for
    /// an unreadable file.
    #[serde(skip)]
    pub first_start: Option<SystemTime>,
}

impl Listed {
    pub fn of(job: &Job, dead: bool) -> Listed {
        Listed {
            id: job.id.clone(),
            state: if dead { "dead" } else { "queued" },
            argv: job.argv.iter().map(Bytes::lossy).collect(),
            attempts: job.attempts,
            next_due: (!dead).then(|| job.next_due.to_string()),
            last_status: job.last_status(),
            reason: match &job.dead {
                Some(death) => Some(death.reason.clone()),
                None => job.last_reason(),
            },
            first_start: Some(job.first_start.0),
        }
    }

    /// A file that could not be read as a job.
    pub fn unreadable(id: &str, dead: bool, reason: String) -> Listed {
        Listed {
            id: id.to_string(),
            state: if dead { "dead" } else { "queued" },
            argv: Vec::new(),
            attempts: 0,
            next_due: None,
            last_status: None,
            reason: Some(reason),
            first_start: None,
        }
    }

    /// The `--list` line of a stored job as parsed, and what made it
    /// unreadable, if something did; `what` names the store's unit
    /// (`file`, `record`) in the reason.
    pub fn parsed(parsed: Parsed, id: &str, dead: bool, what: &str) -> (Listed, Option<String>) {
        let why = match parsed {
            Parsed::Job(job) => return (Listed::of(&job, dead), None),
            Parsed::Newer(v) => newer(v),
            Parsed::Corrupt(why) => format!("corrupt job {what}: {why}"),
        };
        (Listed::unreadable(id, dead, why.clone()), Some(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        Job {
            version: VERSION,
            id: new_id(t, 0xabc),
            argv: vec![Bytes(b"echo".to_vec()), Bytes(vec![0xff, b'x'])],
            cwd: Bytes(b"/tmp".to_vec()),
            options: vec![Bytes(b"-n".to_vec()), Bytes(b"2".to_vec())],
            env: vec![Bytes(b"A=1".to_vec())],
            stdin: true,
            first_start: Stamp(t),
            max_age_ms: 1000,
            attempts: 3,
            history: vec![AttemptRecord {
                attempt: 3,
                started: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                duration: Duration::from_millis(5),
                status: 7,
                exit_code: Some(7),
                signal: None,
                timed_out: false,
                verdict: crate::record::Verdict::Retry,
                reason: Some("exit status 7".to_string()),
                delay: Some(Duration::from_millis(40)),
                hint: None,
                progress: None,
            }],
            backoff: Position::new(3, Duration::from_millis(40)),
            next_due: Stamp(t + Duration::from_secs(8)),
            dead: None,
        }
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = new_id(t, u32::MAX);
        let b = new_id(t + Duration::from_micros(1), 0);
        assert_eq!(a, "20231114T221320.000000Z-ffffffff");
        assert!(a < b);
        assert!(plausible_id(&a));
    }

    #[test]
    fn a_job_round_trips_with_raw_bytes() {
        let j = job();
        let text = serde_json::to_string(&j).unwrap();
        assert!(text.contains(r#"{"hex":"ff78"}"#), "{text}");
        assert!(text.contains(r#""next_due":"2023-11-14T22:13:28.123456Z""#), "{text}");
        match parse(text.as_bytes(), &j.id) {
            Parsed::Job(back) => assert_eq!(*back, j),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreadable_files_are_corrupt_or_newer_never_a_panic() {
        let j = job();
        let id = j.id.clone();
        let corrupt = |bytes: &[u8]| matches!(parse(bytes, &id), Parsed::Corrupt(_));
        assert!(corrupt(b""));
        assert!(corrupt(b"{not json"));
        assert!(corrupt(b"[1,2]"));
        assert!(corrupt(br#"{"version":"1"}"#));
        assert!(corrupt(br#"{"version":1}"#));
        assert!(corrupt(br#"{"version":0}"#));
        assert!(corrupt(&[b'['; 100_000]));
        let mut v = serde_json::to_value(&j).unwrap();
        v["next_due"] = "yesterday".into();
        assert!(corrupt(v.to_string().as_bytes()));
        assert!(matches!(parse(v.to_string().as_bytes(), "other"), Parsed::Corrupt(_)));
        assert!(matches!(parse(br#"{"version":2,"whatever":true}"#, &id), Parsed::Newer(2)));
    }

    #[test]
    fn a_job_written_by_the_first_release_is_read_as_it_is() {
        // As the first release wrote it (no exit_code, signal, timed_out, delay_ms).
        let v1 = r#"{"version":1,"id":"20250102T030405.123456Z-1a2b3c4d","argv":["sh","-c","exit 7"],
            "cwd":"/tmp","options":["-n","1","--queue","/q"],"env":["A=1"],"stdin":false,
            "first_start":"2025-01-02T03:04:05.123456Z","max_age_ms":259200000,"attempts":2,
            "history":[{"attempt":2,"started":"2025-01-02T03:04:06.5Z","duration_ms":12,"status":7,
            "verdict":"retry","reason":"exit status 7"}],"backoff":{"k":2,"prev_ns":2000000000},
            "next_due":"2025-01-02T03:04:08.5Z"}"#;
        let Parsed::Job(job) = parse(v1.as_bytes(), "20250102T030405.123456Z-1a2b3c4d") else { panic!() };
        assert_eq!((job.attempts, job.last_status(), job.backoff.k), (2, Some(7), 2));
        assert_eq!(job.history[0].verdict, crate::record::Verdict::Retry);
        assert_eq!(job.last_reason().as_deref(), Some("exit status 7"));
    }

    #[test]
    fn listing_shows_only_the_spec_fields() {
        let mut j = job();
        let line = serde_json::to_value(Listed::of(&j, false)).unwrap();
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 7);
        assert_eq!(line["argv"][1], "\u{fffd}x");
        assert_eq!(line["last_status"], 7);
        j.dead = Some(Death { at: j.next_due, reason: "why".into() });
        let dead = Listed::of(&j, true);
        assert_eq!((dead.next_due, dead.reason.as_deref()), (None, Some("why")));
    }

    #[test]
    fn times_saturate() {
        let t = later(SystemTime::now(), Duration::MAX);
        assert_eq!(Stamp(t).to_string(), "9999-12-31T23:59:59.000000Z");
    }
}
