//! `--metrics` in a drain: the queue's gauges and the drain's counters in
//! the drain's own FILE (key = the queue's name), and each drained job's
//! attempt as a run of its key in the job's saved `--metrics` FILE.

use std::time::{Duration, SystemTime};

use super::{Jobs, Outcome};
use crate::config::{Config, DrainConfig, Place};
use crate::error::Error;
use crate::report::Reporter;
use crate::report::metrics::{QueueSample, RunSample};
use crate::status::{Drained, End};

/// The `key` label of a queue: the directory's base name, or the Redis
/// queue's `#NAME`.
pub fn queue_key(place: &Place) -> String {
    match place {
        Place::Dir(dir) => dir.file_name().unwrap_or(dir.as_os_str()).to_string_lossy().into_owned(),
        Place::Redis(url) => url.name.clone().unwrap_or_default(),
    }
}

/// After a drain: the queue as `--list` sees it now (`jobs`, listed by
/// the drain's store when it ended: queued and dead, the oldest queued
/// job's age) and this drain's counts, into the drain's `--metrics` FILE.
/// A queue that cannot be listed is reported and its gauges left as they
/// were; the counters still move.
pub fn drain_metrics(
    cfg: &DrainConfig,
    drained: &Drained,
    jobs: Option<Result<Jobs, Error>>,
    report: &Reporter,
) {
    let (Some(path), Some(jobs)) = (&cfg.metrics, jobs) else { return };
    let now = SystemTime::now();
    let counts = [drained.succeeded, drained.rescheduled, drained.died, drained.skipped];
    let key = queue_key(&cfg.place);
    let jobs = match jobs {
        Ok(jobs) => Some(jobs),
        Err(e) => {
            report.warning(format!("--metrics: cannot list the queue for its gauges: {e}"));
            None
        }
    };
    report.metrics(path, |m| match jobs {
        Some(jobs) => {
            let queued: Vec<_> = jobs.iter().filter(|(j, _)| j.state == "queued").collect();
            let oldest = queued.iter().filter_map(|(j, _)| j.first_start).min();
            m.record_drain(&QueueSample {
                key,
                queued: queued.len() as u64,
                dead: (jobs.len() - queued.len()) as u64,
                oldest_age: oldest.and_then(|t| now.duration_since(t).ok()).unwrap_or(Duration::ZERO),
                drained: counts,
            });
        }
        None => m.record_drain_counts(&key, counts),
    });
}

/// After a drained job's attempt: a run of the job's key in its saved
/// `--metrics` FILE. `before` is the job's attempts before this one; the
/// run's `attempts` is the number of the attempt it made, and it is flaky
/// when it succeeded after earlier failures. Nothing when no attempt could
/// start (the drain's budget ran out) and the circuit did not refuse it.
pub fn job_metrics(cfg: &Config, before: u32, outcome: &Outcome, report: &Reporter) {
    let Some(path) = &cfg.metrics else { return };
    let ending = &outcome.ending;
    if ending.attempts == 0 && ending.end != End::Refused {
        return;
    }
    let number = before.saturating_add(ending.attempts);
    let success = ending.end == End::Success;
    let sample = RunSample {
        key: cfg.metrics_key(),
        outcome: ending.end.word(),
        ended: SystemTime::now(),
        duration: outcome.elapsed,
        attempts: number,
        new_attempts: ending.attempts,
        status: ending.exit_code(),
        flaky: success && number > 1,
    };
    report.metrics(path, |m| m.record_run(&sample));
}
