//! One finished attempt, as every report keeps it: the JSON `attempt`
//! event, the `--summary` document and a queued job's history all
//! serialise this one [`AttemptRecord`]. Pure data; no I/O.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What was decided about an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// It succeeded.
    Success,
    /// It failed and may be retried.
    Retry,
    /// It failed for good (a stop rule, a spawn failure, no retry rule).
    Stop,
}

impl Verdict {
    /// The word logs and reports use.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Success => "success",
            Verdict::Retry => "retry",
            Verdict::Stop => "stop",
        }
    }
}

/// One finished attempt.
///
/// Serialised (for `--summary`) as `{"attempt", "started_at",
/// "duration_ms", "status", "exit_code", "signal", "timed_out", "verdict",
/// "reason", "delay_ms"}`. The JSON `attempt` event shows it without
/// `started_at` ([`Event`](crate::report::Event)); a queued job's history
/// keeps it in the job file's layout ([`job_layout`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based; a queued job's attempts count from its first.
    pub attempt: u32,
    /// When it started (RFC 3339, UTC, milliseconds).
    #[serde(rename = "started_at", alias = "started", with = "rfc3339")]
    pub started: SystemTime,
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
    /// Its status: exit code, 124, 128+N, 126, 127.
    pub status: u8,
    /// The exit code when it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal that killed it (not one retry sent for a timeout).
    #[serde(default)]
    pub signal: Option<i32>,
    /// retry killed it for `--timeout` or `--max-time`.
    #[serde(default)]
    pub timed_out: bool,
    pub verdict: Verdict,
    /// What went wrong and the rule that decided; `None` on success.
    pub reason: Option<String>,
    /// The sleep that followed it; `None` when no attempt followed (yet).
    #[serde(rename = "delay_ms", default, with = "opt_millis")]
    pub delay: Option<Duration>,
    /// The sleep a `--wait-from` hint set (then `delay` is the same).
    #[serde(rename = "hint_ms", default, with = "opt_millis", skip_serializing_if = "Option::is_none")]
    pub hint: Option<Duration>,
    /// With `--reset-on-progress`: did it change its state dir?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<bool>,
}

/// An attempt's `reason`: what went wrong, then the rule that decided
/// (`exit status 7; stderr matched 'x'`); `None` when neither is known.
pub fn reason(failure: &str, rule: Option<&str>) -> Option<String> {
    match (rule, failure.is_empty()) {
        (Some(rule), false) => Some(format!("{failure}; {rule}")),
        (Some(rule), true) => Some(rule.to_string()),
        (None, false) => Some(failure.to_string()),
        (None, true) => None,
    }
}

/// A queued job's history in the job file's layout (format version 1):
/// `started` for `started_at`, as the first release wrote and reads it.
/// The other fields follow under their usual names; the first release's
/// reader ignores them, and a record it wrote reads with them unknown.
pub mod job_layout {
    use super::*;

    #[derive(Serialize)]
    struct Out<'a> {
        attempt: u32,
        #[serde(with = "rfc3339")]
        started: SystemTime,
        #[serde(with = "millis")]
        duration_ms: Duration,
        status: u8,
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        verdict: Verdict,
        reason: &'a Option<String>,
        #[serde(with = "opt_millis")]
        delay_ms: Option<Duration>,
        #[serde(with = "opt_millis", skip_serializing_if = "Option::is_none")]
        hint_ms: Option<Duration>,
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<bool>,
    }

    pub fn serialize<S: Serializer>(history: &[AttemptRecord], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(history.iter().map(|r| Out {
            attempt: r.attempt,
            started: r.started,
            duration_ms: r.duration,
            status: r.status,
            exit_code: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            verdict: r.verdict,
            reason: &r.reason,
            delay_ms: r.delay,
            hint_ms: r.hint,
            progress: r.progress,
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AttemptRecord>, D::Error> {
        Vec::<AttemptRecord>::deserialize(d)
    }
}

/// Milliseconds of `d`, saturating.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// RFC 3339, UTC, milliseconds: the time format of every report.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t.clamp(SystemTime::UNIX_EPOCH, latest())).to_string()
}

/// The latest time RFC 3339 (four-digit years) can write.
pub fn latest() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text)
            .map_err(|e| serde::de::Error::custom(format!("bad time '{text}': {e}")))
    }
}

mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(ms(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod opt_millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&ms(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|v| v.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AttemptRecord {
        AttemptRecord {
            attempt: 2,
            started: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            duration: Duration::from_millis(12),
            status: 7,
            exit_code: Some(7),
            signal: None,
            timed_out: false,
            verdict: Verdict::Retry,
            reason: Some("exit status 7".into()),
            delay: Some(Duration::from_secs(1)),
            hint: None,
            progress: None,
        }
    }

    #[test]
    fn serialises_with_the_report_field_names() {
        let v = serde_json::to_value(record()).unwrap();
        assert_eq!(v["started_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["duration_ms"], 12);
        assert_eq!(v["verdict"], "retry");
        assert_eq!(v["delay_ms"], 1000);
        let back: AttemptRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, record());
    }

    #[test]
    fn reads_a_format_1_job_record() {
        let old = r#"{"attempt":1,"started":"2025-01-02T03:04:05.123456Z","duration_ms":5,
                      "status":7,"verdict":"retry","reason":"exit status 7"}"#;
        let r: AttemptRecord = serde_json::from_str(old).unwrap();
        assert_eq!((r.attempt, r.status, r.verdict, r.delay), (1, 7, Verdict::Retry, None));
        assert_eq!(r.exit_code, None);
    }
}
