//! The durable queue (SPEC "Durable queue"): `--queue DIR` keeps a job
//! whose run gave up, `--drain DIR` gives each due job one more attempt,
//! `--list DIR` shows them.
//!
//! The queue is a client of the run loop: a `--queue` run is an ordinary
//! run whose caller hands its [`Outcome`] to [`enqueue`] when it gave up;
//! a drain turns each due job into a [`Config`] (the job's saved option
//! arguments parsed by `config::for_job`, the same parser) and a
//! [`Start`] (its attempts, clock, backoff, environment, directory and
//! stdin so far), and calls [`run::run`] for one attempt — the same loop,
//! child handling and rules as any run. Storage sits behind [`Store`]:
//! [`dir::DirStore`] keeps jobs in a directory, [`redis::RedisQueue`] in
//! Redis (`redis://…#NAME`, a fleet queue: leases instead of locks).

use std::ffi::{CString, OsString};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{self, Config, DrainConfig, ListConfig, Place, QueueTarget};
use crate::error::Error;
use crate::parse::human;
use crate::record::ms;
use crate::report::{JobReport, JobResult, Reporter};
use crate::run::{self, Outcome, Resume, Start};
use crate::signals::Signals;
use crate::status::{self, Drained, End, Ending, Status};
use crate::stdin::Replay;
use crate::sys;

pub mod dir;
pub mod gauges;
pub mod job;
pub mod redis;

use dir::DirStore;
use job::{Bytes, Death, Job, Listed, Position, Stamp};

/// Where jobs live. The drain loop only sees this trait: a store hands out
/// jobs one at a time as claims (a lock or lease held until the claim is
/// given back or dropped), and files them as done, due again, or dead.
pub trait Store {
    type Claim: Claim;

    /// Where job `id` is kept, for messages.
    fn location(&self, id: &str) -> String;

    /// Adds a new job, with its recorded stdin.
    fn enqueue(&mut self, job: &Job, stdin: Option<&Replay>) -> Result<(), Error>;

    /// The next job this drain should look at, claimed; `None` when the
    /// pass is over. Every job due at `cutoff` (the drain's start) is
    /// handed out once per pass unless another drain holds it; a store may
    /// also hand out jobs not yet due (the drain releases them, burying
    /// those past their max-age). Unreadable jobs are reported: a corrupt
    /// one has been moved to the dead letters, a newer one left alone.
    fn claim_next(&mut self, cutoff: SystemTime) -> Result<Option<Found<Self::Claim>>, Error>;

    /// The job succeeded: remove it (and its stdin and state dir).
    fn complete(&mut self, claim: Self::Claim) -> Result<Filed, Error>;

    /// The job failed again: save it as `job` (new history, next due time).
    fn reschedule(&mut self, claim: Self::Claim, job: &Job) -> Result<Filed, Error>;

    /// The job is hopeless: move it to the dead letters as `job` (with
    /// `dead` set), keeping its stdin; remove its state dir.
    fn bury(&mut self, claim: Self::Claim, job: &Job) -> Result<Filed, Error>;

    /// Every job, queued and dead, sorted by id; with what made a file
    /// unreadable, if something did.
    fn list(&mut self) -> Result<Jobs, Error>;

    /// What went wrong meanwhile without stopping the drain (a lease that
    /// could not be renewed), to be said as warnings.
    fn take_warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// What became of a finished claim's result.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Filed {
    /// Written.
    Saved,
    /// Not written: the claim was lost (its lease ran out and another
    /// drain claimed the job since, or finished it); why. The newer
    /// claim's result stands.
    Lost(String),
}

/// A job held by this drain. Dropping it releases the job unchanged.
pub trait Claim {
    fn job(&self) -> &Job;
    /// The recorded stdin, if the job has one.
    fn stdin(&self) -> std::io::Result<Option<std::fs::File>>;
    /// The job's `RETRY_STATE_DIR` when it was queued with `--temp-state`:
    /// in a directory queue its queueing run's, kept until it succeeds or
    /// dies; in a Redis queue a fresh one for this attempt.
    fn state_dir(&self) -> PathBuf;
    /// The environment the job's attempt runs with: the saved one.
    fn env(&self) -> Vec<CString> {
        self.job().env.iter().filter_map(|e| CString::new(e.0.clone()).ok()).collect()
    }
}

/// What [`Store::claim_next`] found.
pub enum Found<C> {
    Job(C),
    /// An unreadable job file, now a dead letter; why.
    Corrupt {
        id: String,
        reason: String,
    },
    /// A job written by a newer retry, left alone.
    Newer {
        id: String,
        version: u64,
    },
}

/// A new job id created at `now`.
pub fn new_id(now: SystemTime) -> String {
    use rand::RngExt as _;
    job::new_id(now, rand::make_rng::<rand::rngs::Xoshiro256PlusPlus>().random())
}

/// Before a `--queue` run: check (or make) the queue directory, and for a
/// Redis queue that the recorded stdin can fit, so a bad one fails with
/// 125 before anything runs.
pub fn prepare(target: &QueueTarget, stdin_replay: bool) -> Result<(), Error> {
    match &target.place {
        Place::Dir(dir) => dir::secure_dir(dir, true).map(drop),
        Place::Redis(_) if stdin_replay => redis::check_stdin_size(),
        Place::Redis(_) => Ok(()),
    }
}

/// Does a queued job keep the `--temp-state` dir of its queueing run? A
/// directory job does (`DIR/state/<id>`); a Redis job may run on
/// another machine, so its run's state dir goes at the run's end.
pub fn keeps_state_dir(target: &QueueTarget) -> bool {
    matches!(target.place, Place::Dir(_))
}

/// The `--temp-state` dir of job `id`'s queueing run in a directory queue:
/// `DIR/state/<id>` (mode 0700, made through the queue's checked
/// descriptors), which the caller removes at the run's end unless the job
/// is queued. `None` for a Redis queue (the run's dir is an ordinary one
/// in TMPDIR).
pub fn state_dir(target: &QueueTarget, id: &str) -> Result<Option<PathBuf>, Error> {
    match &target.place {
        Place::Dir(dir) => dir::new_state_dir(dir, id).map(Some),
        Place::Redis(_) => Ok(None),
    }
}

/// Before the first attempt of a `--queue` run on Redis: can the queue
/// be reached (and the password is right)? If not, the run does not
/// start (125, a `store_error`): a job that could not be queued when
/// it gives up would be lost. A server that keeps jobs only in memory
/// is warned about (`store_warning`).
pub fn check(target: &QueueTarget, report: &Reporter) -> Result<(), Error> {
    match &target.place {
        Place::Dir(_) => Ok(()),
        Place::Redis(url) => {
            let queue = redis::RedisQueue::open(url, None)?;
            if let Some(warning) = queue.memory_only() {
                report.store_warning(warning);
            }
            Ok(())
        }
    }
}

/// Does a run that ended so go to the queue? Only when it gave up on a
/// retryable failure: attempts exhausted or `--max-time` reached. A
/// permanent failure (a stop rule, 126/127) is not queued: its status
/// goes to the caller as without `--queue`. A run refused by an open
/// circuit is queued, due when the circuit's cooldown ends.
pub fn gives_up(ending: &Ending) -> bool {
    match ending.end {
        End::Exhausted | End::Deadline | End::Refused => true,
        End::Success | End::Stopped | End::Interrupted { .. } | End::ClosedStdout | End::Queued => false,
    }
}

/// Where a job went.
pub struct Queued {
    pub file: String,
    /// RFC 3339, and how far from now.
    pub due: (String, Duration),
}

/// Writes the job of a run that gave up to its queue: `id`, `cfg`'s
/// command and saved options, the run's environment `env` (without
/// retry's RETRY_* variables), its attempts and when the next is due.
/// `Ok(Err(signal))`: a signal came while the rest of stdin was recorded;
/// nothing written.
pub fn enqueue(
    target: &QueueTarget,
    id: &str,
    cfg: &Config,
    outcome: &mut Outcome,
    env: &[CString],
    signals: &mut Signals,
) -> Result<Result<Queued, i32>, Error> {
    if let Some(r) = outcome.replay.as_mut() {
        let limit = match target.place {
            Place::Dir(_) => u64::MAX,
            Place::Redis(_) => redis::MAX_STDIN,
        };
        match r.record_rest(signals, limit) {
            Ok(None) => {}
            Ok(Some(signal)) => return Ok(Err(signal)),
            Err(e) => return Err(Error::io("cannot read the rest of stdin for the queue", e)),
        }
    }
    let now = SystemTime::now();
    // A Redis job keeps only the variables --queue-env names.
    let keep = |entry: &&CString| match target.place {
        // Never a password: the drain connects with its own.
        _ if crate::store::url::is_password_variable(entry.as_bytes()) => false,
        Place::Dir(_) => true,
        Place::Redis(_) => {
            let name = crate::environ::name_of(entry.as_bytes());
            target.env.iter().any(|n| n.as_bytes() == name)
        }
    };
    let mut job = Job {
        version: job::VERSION,
        id: id.to_string(),
        argv: cfg.command.iter().map(|a| Bytes::from_os(a)).collect(),
        cwd: std::env::current_dir().map(|d| Bytes::from_os(d.as_os_str())).unwrap_or(Bytes(Vec::new())),
        options: target.options.iter().map(|a| Bytes::from_os(a)).collect(),
        env: env.iter().filter(keep).map(|e| Bytes(e.as_bytes().to_vec())).collect(),
        stdin: outcome.replay.is_some(),
        first_start: Stamp(outcome.started),
        max_age_ms: ms(cfg.max_age.unwrap_or(config::DEFAULT_MAX_AGE)),
        attempts: 0,
        history: Vec::new(),
        backoff: Position::default(),
        next_due: Stamp(now),
        dead: None,
    };
    absorb(&mut job, outcome, now);
    let replay = outcome.replay.as_ref();
    match &target.place {
        Place::Dir(dir) => {
            let store = DirStore::open(dir, true)?.ok_or_else(|| {
                Error::io("cannot open the queue", std::io::Error::from(std::io::ErrorKind::NotFound))
            })?;
            put(store, &job, replay, now)
        }
        Place::Redis(url) => put(redis::RedisQueue::open(url, None)?, &job, replay, now),
    }
}

/// Writes `job` to `store`: where it went and when it is due.
fn put<S: Store>(
    mut store: S,
    job: &Job,
    replay: Option<&Replay>,
    now: SystemTime,
) -> Result<Result<Queued, i32>, Error> {
    store.enqueue(job, replay)?;
    let due = job.next_due.0.duration_since(now).unwrap_or(Duration::ZERO);
    Ok(Ok(Queued { file: store.location(&job.id), due: (job.next_due.to_string(), due) }))
}

/// Adds a run's attempts to the job and sets when it is due next: the end
/// of its last attempt plus the schedule's next delay.
fn absorb(job: &mut Job, outcome: &Outcome, now: SystemTime) {
    job.attempts = job.attempts.saturating_add(outcome.ending.attempts);
    job.history.extend(outcome.records.iter().cloned());
    job.trim_history(run::RECORDS_KEPT);
    let ended = outcome.records.last().map_or(now, |a| job::later(a.started, a.duration));
    job.next_due = match outcome.next_delay {
        Some(delay) => {
            job.backoff = Position::new(outcome.position.0, outcome.position.1);
            Stamp(job::later(ended, delay))
        }
        None => Stamp(now),
    };
}

/// `--list DIR|URL`: one JSON object per job on stdout; retry's exit status.
pub fn list(cfg: &ListConfig, report: &Reporter) -> u8 {
    let items = match listed(&cfg.place) {
        Ok(items) => items,
        Err(e) => return failed(report, &e),
    };
    let mut out = String::new();
    for (line, problem) in items {
        if let Some(problem) = problem {
            report.for_job(&line.id).warning(problem);
        }
        if let Ok(text) = serde_json::to_string(&line) {
            out.push_str(&text);
            out.push('\n');
        }
    }
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Ok(()) => status::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => status::CLOSED_STDOUT,
        Err(e) => {
            report.error(format!("cannot write the list to stdout: {}", crate::parse::os_error(&e)));
            status::USAGE
        }
    }
}

/// Every job of the queue at `place`, queued and dead, sorted by id; with
/// what made a file unreadable, if something did.
pub fn listed(place: &Place) -> Result<Jobs, Error> {
    match place {
        Place::Dir(dir) => match DirStore::open(dir, false) {
            // A queue nothing was ever queued to is empty.
            Ok(None) => Ok(Vec::new()),
            Ok(Some(mut store)) => store.list(),
            Err(e) => Err(e),
        },
        Place::Redis(url) => redis::RedisQueue::open(url, None).and_then(|mut store| store.list()),
    }
}

/// Why retry exits 125: a store's failure as `store_error`, others as
/// `error`. Returns 125.
pub fn failed(report: &Reporter, e: &Error) -> u8 {
    match e {
        Error::Store(message) => report.store_error(message.clone()),
        Error::Usage { .. } | Error::Conflict(_) | Error::Args { .. } | Error::Io { .. } => {
            report.error(e.to_string())
        }
    }
    e.status()
}

/// `--drain DIR|URL`: drains the queue and says how it went; retry's exit
/// status (a signal that ended the drain is re-raised).
pub fn drain_main(cfg: &DrainConfig, signals: &mut Signals, report: &Reporter) -> u8 {
    let start = Instant::now();
    let result = match &cfg.place {
        Place::Dir(dir) => match DirStore::open(dir, true) {
            Ok(Some(mut store)) => {
                drain(&mut store, cfg, signals, report).map(|d| (d, gauge_jobs(&mut store, cfg)))
            }
            Ok(None) => return status::USAGE,
            Err(e) => Err(e),
        },
        Place::Redis(url) => {
            let lease = cfg.lease.unwrap_or(redis::DEFAULT_LEASE);
            match redis::RedisQueue::open(url, Some(lease)) {
                Ok(mut store) => {
                    let report = report.clone().with_dead_letters("the dead letters");
                    if let Some(warning) = store.memory_only() {
                        report.store_warning(warning);
                    }
                    drain(&mut store, cfg, signals, &report).map(|d| (d, gauge_jobs(&mut store, cfg)))
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok((drained, jobs)) => {
            report.drained(&cfg.place.display(), &drained, start.elapsed());
            gauges::drain_metrics(cfg, &drained, jobs, report);
            report.finish_drain(drained.exit_code(), Some(&drained), None);
            if let Some(sig) = drained.interrupted {
                sys::die_by_signal(sig);
            }
            drained.exit_code()
        }
        Err(e) => {
            let code = failed(report, &e);
            report.finish_drain(code, None, Some(&e));
            code
        }
    }
}

/// Every job of a queue as `--list` shows it, with what made its file
/// unreadable, if something did.
pub type Jobs = Vec<(Listed, Option<String>)>;

/// The jobs of a drained queue, listed by the drain's own store for
/// `--metrics`' gauges (none without `--metrics`).
fn gauge_jobs<S: Store>(store: &mut S, cfg: &DrainConfig) -> Option<Result<Jobs, Error>> {
    cfg.metrics.as_ref().map(|_| store.list())
}

/// One pass over the queue: every due job gets one attempt.
pub fn drain<S: Store>(
    store: &mut S,
    cfg: &DrainConfig,
    signals: &mut Signals,
    report: &Reporter,
) -> Result<Drained, Error> {
    let start = Instant::now();
    let cutoff = SystemTime::now();
    let deadline = cfg.max_time.and_then(|m| start.checked_add(m));
    let mut drained = Drained::default();
    loop {
        // No job starts after the drain's budget, or after a signal.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Some(sig) = signals.take().first() {
            drained.interrupted = Some(*sig);
            break;
        }
        let Some(found) = store.claim_next(cutoff)? else { break };
        let claim = match found {
            Found::Job(claim) => claim,
            Found::Corrupt { id, reason } => {
                drained.died += 1;
                let report = report.for_job(&id);
                report.job(&JobReport::unrun(JobResult::Dead, reason.clone()));
                on_dead(cfg, &id, &reason, &[], 0, signals, &report);
                continue;
            }
            Found::Newer { id, version } => {
                drained.skipped += 1;
                let why = format!("{}; left in the queue", job::newer(version));
                report.for_job(&id).job(&JobReport::unrun(JobResult::Skipped, why));
                continue;
            }
        };
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            break;
        }
        let mut drain = Drain { store, cfg, signals, drained: &mut drained };
        if drain.one_job(claim, cutoff, remaining, report)? {
            break;
        }
    }
    Ok(drained)
}

/// One drain's state while it looks at a job.
struct Drain<'a, S: Store> {
    store: &'a mut S,
    cfg: &'a DrainConfig,
    signals: &'a mut Signals,
    drained: &'a mut Drained,
}

impl<S: Store> Drain<'_, S> {
    /// Looks at one claimed job: buries it when past its max-age, runs it
    /// when due. `Ok(true)`: the drain must stop (signal, closed stdout).
    fn one_job(
        &mut self,
        claim: S::Claim,
        cutoff: SystemTime,
        remaining: Option<Duration>,
        report: &Reporter,
    ) -> Result<bool, Error> {
        let job = claim.job().clone();
        let report = report.for_job(&job.id).with_argv(job.argv.iter().map(Bytes::lossy).collect());
        let now = SystemTime::now();
        let max_age = self.cfg.max_age.unwrap_or(Duration::from_millis(job.max_age_ms));
        let age = now.duration_since(job.first_start.0).unwrap_or(Duration::ZERO);
        if age > max_age {
            let reason = format!(
                "past its --max-age of {} (first attempt {} ago, {}); last failure: {}",
                human(max_age),
                human(age),
                crate::parse::count(u64::from(job.attempts), "attempt"),
                job.last_reason().unwrap_or_else(|| "none".to_string())
            );
            return self.bury(claim, job, reason, &report);
        }
        if job.next_due.0 > cutoff {
            return Ok(false);
        }
        let (cfg, start) = match self.prepare(&claim, &job, remaining, now, &report)? {
            Ok(prepared) => prepared,
            Err(reason) => return self.bury(claim, job, reason, &report),
        };
        let outcome = run::run(&cfg, start, self.signals, &report)?;
        gauges::job_metrics(&cfg, job.attempts, &outcome, &report);
        for warning in self.store.take_warnings() {
            report.warning(warning);
        }
        self.file(claim, job, outcome, &report)
    }

    /// The [`Config`] and [`Start`] of a due job's attempt: its saved
    /// options parsed for this drain, its recorded stdin (or /dev/null),
    /// its working directory when it still exists, its state dir, and
    /// where its attempts, clock and backoff stand. `Ok(Err(why))`: the job
    /// cannot run and goes to the dead letters.
    fn prepare(
        &self,
        claim: &S::Claim,
        job: &Job,
        remaining: Option<Duration>,
        now: SystemTime,
        report: &Reporter,
    ) -> Result<Result<(Config, Start), String>, Error> {
        let options: Vec<OsString> = job.options.iter().map(Bytes::to_os).collect();
        let argv: Vec<OsString> = job.argv.iter().map(Bytes::to_os).collect();
        let cwd = PathBuf::from(job.cwd.to_os());
        let cfg = match config::for_job(&options, &argv, self.cfg, remaining, &cwd, job.backoff.k) {
            Ok(cfg) => cfg,
            Err(why) => {
                return Ok(Err(format!("its saved options are not valid any more: {why}")));
            }
        };
        let stdin = match claim.stdin() {
            Ok(Some(f)) => f,
            Ok(None) => {
                std::fs::File::open("/dev/null").map_err(|e| Error::io("cannot open /dev/null", e))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err("its recorded stdin is missing".to_string()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Ok(Err(format!("its recorded stdin is unreadable: {e}")));
            }
            Err(e) => return Err(Error::io(format!("cannot open the recorded stdin of job {}", job.id), e)),
        };
        let cwd = if cwd.is_dir() {
            Some(cwd)
        } else {
            report.warning(format!(
                "its working directory '{}' is missing; running in the drain's",
                cwd.display()
            ));
            None
        };
        // The job's own --state-dir (checked as for a run), else with
        // --temp-state the one the queue keeps for it (checked by the claim
        // when it exists, made when it went missing); else none.
        let state_dir = match (&cfg.state_dir, cfg.temp_state) {
            (Some(dir), _) => {
                crate::trusted::state_dir(dir)?;
                Some(dir.clone())
            }
            (None, true) => {
                let dir = claim.state_dir();
                if !dir.exists() {
                    crate::trusted::state_dir(&dir)?;
                }
                Some(dir)
            }
            (None, false) => None,
        };
        let start = Start {
            resume: Resume {
                attempts: job.attempts,
                // Only its number matters (RETRY_LAST_STATUS); Exited(n) says n.
                last: job.last_status().map(Status::Exited),
                elapsed: now.duration_since(job.first_start.0).unwrap_or(Duration::ZERO),
                position: (job.backoff.k, job.backoff.prev()),
            },
            limit: Some(1),
            env: claim.env(),
            cwd,
            stdin: Some(stdin),
            state_dir,
        };
        Ok(Ok((cfg, start)))
    }

    /// Files what the attempt of `job` came to: removed on success,
    /// rescheduled, or buried; said as a `job` event. `Ok(true)`: the
    /// drain must stop (a signal, a closed stdout).
    fn file(
        &mut self,
        claim: S::Claim,
        mut job: Job,
        mut outcome: Outcome,
        report: &Reporter,
    ) -> Result<bool, Error> {
        let now = SystemTime::now();
        match outcome.ending.end {
            End::Success => {
                // A drained job's captured stdout is written on success
                // only; a signal during the write leaves the job as it was.
                if let Some(spool) = outcome.stdout.take() {
                    if let Some(signal) = crate::flush::kept_stdout(spool, self.signals)? {
                        self.drained.interrupted = Some(signal);
                        return Ok(true);
                    }
                }
                job.attempts = job.attempts.saturating_add(outcome.ending.attempts);
                if let Filed::Lost(why) = self.store.complete(claim)? {
                    let what = format!("succeeded on attempt {}", job.attempts);
                    self.lost(report, &job, &what, why);
                    return Ok(false);
                }
                self.drained.succeeded += 1;
                report.job(&JobReport {
                    result: JobResult::Succeeded,
                    attempts: job.attempts,
                    last_status: Some(0),
                    next_due: None,
                    reason: None,
                });
                return Ok(false);
            }
            // The drain was signalled: leave the job as it was (it runs again).
            End::Interrupted { signal, .. } => {
                self.drained.interrupted = Some(signal);
                return Ok(true);
            }
            // The job's circuit is open: due when it may close, no attempt
            // counted, its backoff where it was.
            End::Refused => {
                let cooldown = outcome.next_delay.unwrap_or(Duration::ZERO);
                job.next_due = Stamp(job::later(now, cooldown));
                if let Filed::Lost(why) = self.store.reschedule(claim, &job)? {
                    self.lost(report, &job, "rescheduled (its circuit is open)", why);
                    return Ok(false);
                }
                self.drained.rescheduled += 1;
                report.job(&JobReport {
                    result: JobResult::Rescheduled,
                    attempts: job.attempts,
                    last_status: job.last_status(),
                    next_due: Some((job.next_due.to_string(), cooldown)),
                    reason: Some("its --circuit-break circuit is open".to_string()),
                });
                return Ok(false);
            }
            // The budget ran out before the attempt could start.
            _ if outcome.ending.attempts == 0 => return Ok(false),
            End::Exhausted | End::Stopped | End::Deadline | End::ClosedStdout | End::Queued => {}
        }
        let before = job.backoff;
        absorb(&mut job, &outcome, now);
        if outcome.cut_off {
            // Killed at the drain's --max-time: not the job's failure. Due at
            // once, its backoff where it was.
            job.backoff = before;
            job.next_due = Stamp(now);
        } else if outcome.ending.end == End::Stopped {
            let reason = format!(
                "permanent failure on attempt {}: {}",
                job.attempts,
                job.last_reason().unwrap_or_else(|| "not retryable".to_string())
            );
            return self.bury(claim, job, reason, report);
        }
        if let Filed::Lost(why) = self.store.reschedule(claim, &job)? {
            self.lost(report, &job, &format!("rescheduled after attempt {}", job.attempts), why);
        } else {
            self.drained.rescheduled += 1;
            let due = job.next_due.0.duration_since(now).unwrap_or(Duration::ZERO);
            report.job(&JobReport {
                result: JobResult::Rescheduled,
                attempts: job.attempts,
                last_status: job.last_status(),
                next_due: Some((job.next_due.to_string(), due)),
                reason: job.last_reason(),
            });
        }
        if outcome.ending.end == End::ClosedStdout {
            self.drained.closed_stdout = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// Moves a job to the dead letters with `reason`.
    fn bury(
        &mut self,
        claim: S::Claim,
        mut job: Job,
        reason: String,
        report: &Reporter,
    ) -> Result<bool, Error> {
        job.dead = Some(Death { at: Stamp(SystemTime::now()), reason: reason.clone() });
        if let Filed::Lost(why) = self.store.bury(claim, &job)? {
            self.lost(report, &job, "moved to the dead letters", why);
            return Ok(false);
        }
        self.drained.died += 1;
        report.job(&JobReport {
            result: JobResult::Dead,
            attempts: job.attempts,
            last_status: job.last_status(),
            next_due: None,
            reason: Some(reason.clone()),
        });
        on_dead(self.cfg, &job.id, &reason, &job.argv, job.attempts, self.signals, report);
        Ok(false)
    }

    /// A result this drain could not file because its claim was lost: said
    /// as a `lost` job (counted with the skipped ones), the newer claim's
    /// result standing.
    fn lost(&mut self, report: &Reporter, job: &Job, result: &str, why: String) {
        self.drained.skipped += 1;
        report.job(&JobReport {
            result: JobResult::Lost,
            attempts: job.attempts,
            last_status: job.last_status(),
            next_due: None,
            reason: Some(format!("its result ({result}) is dropped: {why}")),
        });
    }
}

/// `--on-dead`: `sh -c CMD` for a job this drain just buried, with its
/// id, reason, argv (a JSON array), attempts and the queue (masked) in
/// `RETRY_JOB_*` and `RETRY_QUEUE`; at most 60 s. Its failure is logged.
fn on_dead(
    cfg: &DrainConfig,
    id: &str,
    reason: &str,
    argv: &[Bytes],
    attempts: u32,
    signals: &mut Signals,
    report: &Reporter,
) {
    let Some(cmd) = &cfg.on_dead else { return };
    let argv: Vec<String> = argv.iter().map(Bytes::lossy).collect();
    let argv = serde_json::to_string(&argv).unwrap_or_else(|_| "[]".to_string());
    let mut env = crate::environ::base();
    for (name, value) in [
        ("RETRY_JOB_ID", id),
        ("RETRY_JOB_REASON", reason),
        ("RETRY_JOB_ARGV", &argv),
        ("RETRY_JOB_ATTEMPTS", &attempts.to_string()),
        ("RETRY_QUEUE", &cfg.place.display()),
    ] {
        env.extend(crate::environ::entry(name.as_bytes(), value.as_bytes()));
    }
    let kill = (libc::SIGTERM, Duration::from_secs(10));
    let ran = crate::hook::run(cmd, &env, Some(crate::hook::DEFAULT_LIMIT), kill, signals, &mut Vec::new());
    if let Some((status, why)) = ran.failed {
        report.on_dead_failed(status, why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AttemptRecord, Verdict};

    #[test]
    fn the_next_attempt_is_due_after_the_last_one_plus_the_delay() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut job = Job::corrupt("x", t0, String::new());
        job.dead = None;
        let record = |attempt, at: u64| AttemptRecord {
            attempt,
            started: t0 + Duration::from_secs(at),
            duration: Duration::from_secs(2),
            status: 7,
            exit_code: Some(7),
            signal: None,
            timed_out: false,
            verdict: Verdict::Retry,
            reason: Some("exit status 7".to_string()),
            delay: None,
            hint: None,
            progress: None,
        };
        let ending = Ending {
            end: End::Exhausted,
            last: Some(Status::Exited(7)),
            validation_failed: false,
            attempts: 2,
        };
        let mut outcome = Outcome {
            ending,
            records: vec![record(1, 0), record(2, 10)],
            position: (2, Duration::from_secs(8)),
            next_delay: Some(Duration::from_secs(8)),
            cut_off: false,
            started: t0,
            elapsed: Duration::from_secs(12),
            stdout: None,
            replay: None,
            no_start: None,
        };
        absorb(&mut job, &outcome, t0 + Duration::from_secs(13));
        assert_eq!(job.attempts, 2);
        assert_eq!(job.next_due.0, t0 + Duration::from_secs(20));
        assert_eq!(job.backoff, Position::new(2, Duration::from_secs(8)));
        assert_eq!(job.last_status(), Some(7));
        // Without a delay (no attempt could start) it is due at once.
        let now = t0 + Duration::from_secs(99);
        outcome.ending.attempts = 0;
        outcome.records.clear();
        outcome.next_delay = None;
        absorb(&mut job, &outcome, now);
        assert_eq!(job.next_due.0, now);
    }
}
