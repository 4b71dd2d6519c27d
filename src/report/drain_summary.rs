//! `--summary FILE` with `--drain`: a JSON document of the drain, written
//! atomically at its end like a run's (also when a signal or retry's own
//! failure ends it): the queue, start, end and exit status, the counts,
//! and every job the drain looked at — its id, argv, the attempt it ran
//! and that attempt's status, the result (`succeeded`, `rescheduled`,
//! `dead`, `skipped`, `lost`) and the reason. A queued job's own saved
//! `--summary` is not written by drains (README "Durable queue").

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::error::Error;
use crate::record::{ms, rfc3339};

/// Jobs listed; a drain of more lists the first ones and counts the rest.
pub const KEEP_JOBS: usize = 10_000;

/// One job the drain looked at.
#[derive(Serialize, Debug, Clone)]
pub struct JobEntry {
    pub id: String,
    /// COMMAND and its arguments; null when the job could not be read.
    pub argv: Option<Vec<String>>,
    /// The number of the attempt this drain ran (counted from the job's
    /// first); null when it ran none (skipped, buried unrun).
    pub attempt: Option<u32>,
    /// That attempt's status; null when it ran none.
    pub status: Option<u8>,
    pub result: &'static str,
    /// Why: the attempt's failure, why the job died, was skipped or lost.
    pub reason: Option<String>,
}

/// The drain's counts, as the `drained` event says them.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Counts {
    pub succeeded: u32,
    pub rescheduled: u32,
    pub dead: u32,
    pub skipped: u32,
}

/// Collects a drain for `--summary`.
#[derive(Debug)]
pub struct DrainRecorder {
    path: PathBuf,
    queue: String,
    started_at: SystemTime,
    start: Instant,
    jobs: Vec<JobEntry>,
    omitted: u64,
}

#[derive(Serialize)]
struct Document<'a> {
    version: u32,
    /// `drain`, so a reader tells it from a run's document.
    kind: &'static str,
    queue: &'a str,
    started_at: String,
    ended_at: String,
    elapsed_ms: u64,
    /// The drain's exit status.
    status: u8,
    /// The signal that ended the drain, else null.
    signal: Option<i32>,
    error: Option<&'a str>,
    counts: Counts,
    job_count: u64,
    jobs_omitted: u64,
    jobs: &'a [JobEntry],
}

impl DrainRecorder {
    /// A recorder for a drain of `queue` (as messages show it), to write to `path`.
    pub fn new(path: &Path, queue: String) -> DrainRecorder {
        DrainRecorder {
            path: path.to_path_buf(),
            queue,
            started_at: SystemTime::now(),
            start: Instant::now(),
            jobs: Vec::new(),
            omitted: 0,
        }
    }

    pub fn job(&mut self, entry: JobEntry) {
        if self.jobs.len() < KEEP_JOBS {
            self.jobs.push(entry);
        } else {
            self.omitted = self.omitted.saturating_add(1);
        }
    }

    /// Writes the document: the drain's exit `status`, the `signal` that
    /// ended it, or retry's own `error`.
    pub fn write(
        &self,
        status: u8,
        signal: Option<i32>,
        counts: Counts,
        error: Option<&Error>,
    ) -> Result<(), Error> {
        let message = error.map(|e| e.to_string());
        let doc = Document {
            version: 1,
            kind: "drain",
            queue: &self.queue,
            started_at: rfc3339(self.started_at),
            ended_at: rfc3339(SystemTime::now()),
            elapsed_ms: ms(self.start.elapsed()),
            status,
            signal,
            error: message.as_deref(),
            counts,
            job_count: (self.jobs.len() as u64).saturating_add(self.omitted),
            jobs_omitted: self.omitted,
            jobs: &self.jobs,
        };
        super::summary::write_json(&self.path, &doc)
    }
}
