//! The durable queue (SPEC "Durable queue"): `--queue DIR` keeps a job
//! whose run gave up, `--drain DIR` gives each due job one more attempt,
//! `--list DIR` shows them.
//!
//! A job is saved with retry's option arguments as given; a drain parses
//! them with the same parser into a [`Config`] (overriding what belongs to
//! the drain: one attempt, its `--max-time`, its output options) and runs
//! the attempt through [`run::run_queued`] — the same loop, child handling
//! and rules as any run, continuing the job's attempt count, clock and
//! backoff. Storage sits behind [`Store`]: [`dir::DirStore`] keeps jobs in
//! a directory, [`redis::RedisQueue`] in Redis (`redis://…#NAME`, a fleet
//! queue: leases instead of locks); [`Place`] says which a value names.

use std::ffi::{CString, OsString};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, Parser as _};

use crate::cli::{Cli, LogFormat, StdoutMode};
use crate::config::{Config, Verbosity};
use crate::error::Error;
use crate::parse::human;
use crate::report::{JobReport, JobResult, Reporter};
use crate::run::{self, Carry, JOURNAL_ATTEMPTS, Journal};
use crate::signals::Signals;
use crate::status::{Drained, End, Outcome, Status};
use crate::stdin::Replay;
use crate::store::{self, url::RedisUrl};
use crate::sys;

pub mod dir;
pub mod job;
pub mod redis;

use dir::DirStore;
use job::{Bytes, Death, Job, Listed, Position, Record, Stamp};

/// How long a queued job lives without `--max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);

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
    fn list(&mut self) -> Result<Vec<(Listed, Option<String>)>, Error>;

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
    /// The job's `RETRY_STATE_DIR`, kept until it succeeds or dies.
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

/// Where a queue lives: `--queue`, `--drain` and `--list` take a directory
/// or `redis[s]://[user:pass@]host[:port][/db]#NAME`.
#[derive(Clone, Debug)]
pub enum Place {
    Dir(PathBuf),
    Redis(RedisUrl),
}

impl Place {
    /// Reads the value of `option`. A value that starts with `redis://` or
    /// `rediss://` is a Redis queue (it needs `#NAME`; TLS is refused as
    /// the state store refuses it); anything else with `://` is refused; the
    /// rest is a directory. Errors never show the password.
    pub fn parse(raw: &std::path::Path, option: &str) -> Result<Place, Error> {
        let Some(text) = raw.to_str().filter(|t| t.contains("://")) else {
            return Ok(Place::Dir(raw.to_path_buf()));
        };
        let masked = || crate::parse::mask_url(text);
        if !["redis://", "rediss://", "redis+sentinel://"].iter().any(|p| text.starts_with(p)) {
            return Err(Error::usage(
                option,
                masked(),
                "expected a directory or redis://[user:pass@]host[:port][/db]#NAME",
            ));
        }
        let url = match store::url::parse(text) {
            Ok(store::StoreUrl::Redis(url)) => url,
            Ok(store::StoreUrl::File(_)) => return Err(Error::usage(option, masked(), "not a Redis URL")),
            Err(why) => return Err(Error::usage(option, masked(), why)),
        };
        if url.name.is_none() {
            return Err(Error::usage(
                option,
                url.masked(),
                "a Redis queue needs a name after '#', e.g. redis://cache:6379/0#jobs",
            ));
        }
        Ok(Place::Redis(url))
    }

    /// The queue as messages show it: the directory, or the URL with its
    /// password masked.
    pub fn display(&self) -> String {
        match self {
            Place::Dir(dir) => dir.display().to_string(),
            Place::Redis(url) => url.masked(),
        }
    }
}

/// `--queue DIR|URL` of a run.
#[derive(Clone, Debug)]
pub struct Target {
    pub place: Place,
    /// retry's arguments before COMMAND, as given (set by [`prepare`]; a
    /// Redis URL's password masked).
    pub options: Vec<OsString>,
    /// `--queue-env`: the only variables a Redis job keeps.
    pub env: Vec<String>,
}

impl Target {
    pub fn new(place: Place) -> Target {
        Target { place, options: Vec::new(), env: Vec::new() }
    }

    /// A new job id created at `now`.
    pub fn new_id(&self, now: SystemTime) -> String {
        use rand::RngExt as _;
        job::new_id(now, rand::make_rng::<rand::rngs::Xoshiro256PlusPlus>().random())
    }

    /// Does a queued job keep the state dir of its queueing run? A
    /// directory job does (`DIR/state/<id>`); a Redis job may run on
    /// another machine, so its run's state dir goes at the run's end.
    pub fn keeps_state_dir(&self) -> bool {
        matches!(self.place, Place::Dir(_))
    }

    /// A new job id and its state dir (mode 0700), removed when dropped
    /// unless the job is queued: `DIR/state/<id>`, or for a Redis queue a
    /// `retry-*` dir in TMPDIR.
    pub fn state_dir(&self, now: SystemTime) -> Result<(String, PathBuf), Error> {
        let id = self.new_id(now);
        let dir = match &self.place {
            Place::Dir(dir) => dir,
            Place::Redis(_) => {
                return Ok((id, run::temp_state_dir("cannot create the state directory")?.keep()));
            }
        };
        let parent = dir.join("state");
        let err =
            |e| Error::io(format!("cannot create the job's state directory in '{}'", parent.display()), e);
        dir::secure_dir(&parent, true)?;
        let tmp = tempfile::Builder::new()
            .prefix(&id)
            .rand_bytes(0)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&parent)
            .map_err(err)?;
        // The run removes it at its end, unless the job is queued.
        Ok((id, tmp.keep()))
    }

    /// Before the first attempt of a `--queue` run on Redis: can the queue
    /// be reached (and the password is right)? If not, the run does not
    /// start (125, a `store_error`): a job that could not be queued when
    /// it gives up would be lost. A server that keeps jobs only in memory
    /// is warned about (`store_warning`).
    pub fn check(&self, report: &Reporter) -> Result<(), Error> {
        match &self.place {
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
}

/// `--queue DIR|URL` with `--queue-env NAME,...` (which only a Redis queue
/// takes: a directory queue keeps the whole environment).
pub fn target(raw: Option<&std::path::Path>, env: Vec<String>) -> Result<Option<Target>, Error> {
    for name in &env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(Error::usage(
                "--queue-env",
                name,
                "expected variable names, e.g. API_TOKEN,HTTPS_PROXY",
            ));
        }
    }
    let Some(raw) = raw else {
        return match env.first() {
            Some(name) => Err(Error::usage(
                "--queue-env",
                name,
                "it names what a queued job keeps: give it with --queue",
            )),
            None => Ok(None),
        };
    };
    let place = Place::parse(raw, "--queue")?;
    if let (Place::Dir(_), Some(name)) = (&place, env.first()) {
        return Err(Error::usage(
            "--queue-env",
            name,
            "a directory queue keeps the whole environment; --queue-env is for a Redis queue (redis://…#NAME)",
        ));
    }
    Ok(Some(Target { env, ..Target::new(place) }))
}

/// Before a `--queue` run: keep retry's own arguments and check (or make)
/// the queue directory, so a bad one fails with 125 before anything runs.
pub fn prepare(cfg: &mut Config, args: &[OsString]) -> Result<(), Error> {
    let command = &cfg.command;
    let replay = cfg.stdin_replay;
    let Some(target) = &mut cfg.queue else { return Ok(()) };
    let Some(options) = options_before(args, command) else {
        return Err(Error::Conflict("cannot tell retry's options from COMMAND".to_string()));
    };
    match &mut target.place {
        Place::Dir(dir) => {
            *dir = absolute(dir);
            dir::secure_dir(dir, true)?;
            // A --state-store URL is kept without its password.
            target.options = store::url::without_passwords(options);
        }
        Place::Redis(url) => {
            // The job keeps the URL without its password (a drain does
            // not use it: it has its own).
            // (A --state-store URL is kept without its password.)
            target.options = options
                .into_iter()
                .map(|a| {
                    let masked = mask_queue_arg(a.clone(), url);
                    if masked == a { store::url::without_password(a) } else { masked }
                })
                .collect();
            if replay {
                redis::check_stdin_size()?;
            }
        }
    }
    Ok(())
}

/// An argument with the password of the queue URL `url` masked: the URL
/// itself, or `--queue=URL`.
fn mask_queue_arg(arg: OsString, url: &RedisUrl) -> OsString {
    let Some(text) = arg.to_str() else { return arg };
    let (flag, value) = match text.strip_prefix("--queue=") {
        Some(value) => ("--queue=", value),
        None => ("", text),
    };
    let is_it = value.contains("://")
        && matches!(store::url::parse(value), Ok(store::StoreUrl::Redis(ref u)) if u == url);
    if is_it && url.password.is_some() { OsString::from(format!("{flag}{}", url.masked())) } else { arg }
}

/// retry's arguments before COMMAND, exactly as given. COMMAND and its
/// arguments are the tail of argv (option parsing stops at COMMAND), so
/// parsing `retry OPTIONS COMMAND…` again gives the same options.
fn options_before(args: &[OsString], command: &[OsString]) -> Option<Vec<OsString>> {
    let end = args.len().checked_sub(command.len()).filter(|_| args.ends_with(command))?;
    Some(args.get(1..end)?.to_vec())
}

/// Does a run that ended so go to the queue? Only when it gave up on a
/// retryable failure: attempts exhausted or `--max-time` reached. A
/// permanent failure (a stop rule, 126/127) is not queued: its status
/// goes to the caller as without `--queue`. A run refused by an open
/// circuit is queued, due when the circuit's cooldown ends.
pub fn gives_up(outcome: &Outcome) -> bool {
    match outcome.end {
        End::Exhausted | End::Deadline | End::Refused => true,
        End::Success | End::Stopped | End::Interrupted { .. } | End::ClosedStdout | End::Queued => false,
    }
}

/// A run that gave up, as `--queue` saves it.
pub struct Draft<'a> {
    pub id: &'a str,
    pub cfg: &'a Config,
    pub outcome: &'a Outcome,
    pub journal: &'a Journal,
    /// retry's environment without its RETRY_* variables.
    pub env: &'a [CString],
}

/// Where a job went.
pub struct Queued {
    pub file: String,
    /// RFC 3339, and how far from now.
    pub due: (String, Duration),
}

/// Writes the job of a run that gave up to its queue. `Ok(Err(signal))`:
/// a signal came while the rest of stdin was recorded; nothing written.
pub fn enqueue(
    target: &Target,
    draft: Draft<'_>,
    mut replay: Option<&mut Replay>,
    signals: &mut Signals,
) -> Result<Result<Queued, i32>, Error> {
    if let Some(r) = replay.as_deref_mut() {
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
    let first_start = draft.journal.started.unwrap_or(now);
    // A Redis job keeps only the variables --queue-env names.
    let keep = |entry: &&CString| match target.place {
        _ if store::url::is_password_variable(entry.as_bytes()) => false,
        Place::Dir(_) => true,
        Place::Redis(_) => {
            let bytes = entry.as_bytes();
            let name = bytes.split(|b| *b == b'=').next().unwrap_or(bytes);
            target.env.iter().any(|n| n.as_bytes() == name)
        }
    };
    let mut job = Job {
        version: job::VERSION,
        id: draft.id.to_string(),
        argv: draft.cfg.command.iter().map(|a| Bytes::from_os(a)).collect(),
        cwd: std::env::current_dir().map(|d| Bytes::from_os(d.as_os_str())).unwrap_or(Bytes(Vec::new())),
        options: target.options.iter().map(|a| Bytes::from_os(a)).collect(),
        env: draft.env.iter().filter(keep).map(|e| Bytes(e.as_bytes().to_vec())).collect(),
        stdin: replay.is_some(),
        first_start: Stamp(first_start),
        max_age_ms: millis(draft.cfg.max_age.unwrap_or(DEFAULT_MAX_AGE)),
        attempts: 0,
        history: Vec::new(),
        backoff: Position::default(),
        next_due: Stamp(now),
        dead: None,
    };
    absorb(&mut job, draft.outcome, draft.journal, now);
    let replay = replay.as_deref();
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
fn absorb(job: &mut Job, outcome: &Outcome, journal: &Journal, now: SystemTime) {
    job.attempts = job.attempts.saturating_add(outcome.attempts);
    job.history.extend(journal.attempts.iter().map(|a| Record {
        attempt: a.attempt,
        started: Stamp(a.started),
        duration_ms: millis(a.duration),
        status: a.status,
        verdict: a.verdict.to_string(),
        reason: a.reason.clone(),
    }));
    job.trim_history(JOURNAL_ATTEMPTS);
    let ended = journal.attempts.last().map_or(now, |a| job::later(a.started, a.duration));
    job.next_due = match journal.next_delay {
        Some(delay) => {
            job.backoff = Position::new(journal.backoff.0, journal.backoff.1);
            Stamp(job::later(ended, delay))
        }
        None => Stamp(now),
    };
}

/// `dir` made absolute (without resolving links), for messages and for
/// the jobs' state dirs.
fn absolute(dir: &std::path::Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The options a drain takes for itself (clap ids).
const DRAIN_OPTIONS: [&str; 14] = [
    "drain",
    "max_age",
    "max_time",
    "lease",
    "stdout",
    "quiet",
    "verbose",
    "log_format",
    "state_store",
    "store_optional",
    "store_lease",
    "tls_ca",
    "tls_cert",
    "tls_key",
];
/// The options `--list` takes.
const LIST_OPTIONS: [&str; 7] = ["list", "quiet", "verbose", "log_format", "tls_ca", "tls_cert", "tls_key"];

/// A drain's own options.
#[derive(Clone, Debug)]
pub struct DrainOptions {
    /// The queue, for messages (a URL's password masked).
    pub name: String,
    pub max_age: Option<Duration>,
    pub max_time: Option<Duration>,
    pub stdout: Option<StdoutMode>,
    pub quiet: bool,
    pub verbose: bool,
    pub log_format: Option<LogFormat>,
    /// `--state-store` for the jobs' shared state (else each job's own).
    pub state_store: Option<String>,
    /// `--store-optional` for every job.
    pub store_optional: bool,
    /// `--store-lease` for every job (else each job's own).
    pub store_lease: Option<Duration>,
    /// `--tls-ca`, `--tls-cert`, `--tls-key`: the drain's, never a job's.
    pub tls: [Option<PathBuf>; 3],
}

/// Refuses, with 125, any option that is not the mode's own: a drain runs
/// each job with the options saved with it.
fn check_options(matches: &ArgMatches, mode: &str, allowed: &[&str]) -> Result<(), Error> {
    let cmd = Cli::command();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if allowed.contains(&id) || matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        if arg.is_positional() {
            return Err(Error::Conflict(format!(
                "{mode} takes no COMMAND: it works on the jobs in DIR (a job keeps its own command)"
            )));
        }
        let name = arg.get_long().map_or_else(|| id.to_string(), |l| format!("--{l}"));
        let takes = if mode == "--drain" {
            "a drain takes only --max-age, --max-time, --lease, --stdout, -q, -v, --log-format \
             and the store options (--state-store, --store-optional, --store-lease, --tls-ca, \
             --tls-cert, --tls-key); each job runs with the options saved with it"
        } else {
            "--list takes only -q, -v, --log-format, --tls-ca, --tls-cert and --tls-key"
        };
        return Err(Error::Conflict(format!("'{name}' cannot be used with {mode}: {takes}")));
    }
    Ok(())
}

/// Why retry exits 125: a store's failure as `store_error`, others as `error`.
fn failed(report: &Reporter, e: &Error) -> ExitCode {
    match e {
        Error::Store(message) => report.store_error(message.clone()),
        Error::Usage { .. } | Error::Conflict(_) | Error::Io { .. } => report.error(e.to_string()),
    }
    ExitCode::from(crate::EXIT_USAGE)
}

/// `--drain DIR|URL` and `--list DIR|URL`: their own small main.
pub fn main(cli: Cli, matches: &ArgMatches) -> ExitCode {
    let verbosity = match (cli.quiet, cli.verbose) {
        (true, _) => Verbosity::Quiet,
        (false, true) => Verbosity::Verbose,
        (false, false) => Verbosity::Normal,
    };
    let report = Reporter::new(cli.log_format.unwrap_or(LogFormat::Text), verbosity);
    let usage = |e: Error| {
        eprintln!("retry: {e}");
        if let Some(hint) = e.hint() {
            eprintln!("retry: {hint}");
        }
        ExitCode::from(crate::EXIT_USAGE)
    };
    if let Err(e) =
        store::conn::configure_tls(cli.tls_ca.as_deref(), cli.tls_cert.as_deref(), cli.tls_key.as_deref())
    {
        return usage(e);
    }
    if let Some(raw) = cli.list.as_deref() {
        if let Err(e) = check_options(matches, "--list", &LIST_OPTIONS) {
            return usage(e);
        }
        return match Place::parse(raw, "--list") {
            Ok(Place::Dir(dir)) => list_dir(&absolute(&dir), &report),
            Ok(Place::Redis(url)) => match redis::RedisQueue::open(&url, None) {
                Ok(store) => list(store, &report),
                Err(e) => failed(&report, &e),
            },
            Err(e) => usage(e),
        };
    }
    let Some(raw) = cli.drain.as_deref() else { return ExitCode::from(crate::EXIT_USAGE) };
    if let Err(e) = check_options(matches, "--drain", &DRAIN_OPTIONS) {
        return usage(e);
    }
    let place = match Place::parse(raw, "--drain") {
        Ok(place) => place,
        Err(e) => return usage(e),
    };
    match (&place, cli.lease) {
        (Place::Dir(_), Some(lease)) => {
            return usage(Error::usage(
                "--lease",
                human(lease),
                "a lease is for a Redis queue; a directory queue's lock ends with its drain",
            ));
        }
        (Place::Redis(_), Some(lease)) if lease < redis::MIN_LEASE => {
            return usage(Error::usage("--lease", human(lease), "a lease is at least 100ms"));
        }
        (Place::Dir(_) | Place::Redis(_), _) => {}
    }
    let place = match place {
        Place::Dir(dir) => Place::Dir(absolute(&dir)),
        Place::Redis(url) => Place::Redis(url),
    };
    let opts = DrainOptions {
        name: place.display(),
        max_age: cli.max_age,
        max_time: cli.max_time,
        stdout: cli.stdout,
        quiet: cli.quiet,
        verbose: cli.verbose,
        log_format: cli.log_format,
        state_store: cli.state_store.clone(),
        store_optional: cli.store_optional,
        store_lease: cli.store_lease,
        tls: [cli.tls_ca.clone(), cli.tls_cert.clone(), cli.tls_key.clone()],
    };
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => return failed(&report, &Error::io("cannot install signal handlers", e)),
    };
    match place {
        Place::Dir(dir) => match DirStore::open(&dir, true) {
            Ok(Some(store)) => drain_main(store, &opts, &mut signals, &report),
            Ok(None) => ExitCode::from(crate::EXIT_USAGE),
            Err(e) => failed(&report, &e),
        },
        Place::Redis(url) => {
            let lease = cli.lease.unwrap_or(redis::DEFAULT_LEASE);
            match redis::RedisQueue::open(&url, Some(lease)) {
                Ok(store) => {
                    let report = report.with_dead_letters("the dead letters");
                    if let Some(warning) = store.memory_only() {
                        report.store_warning(warning);
                    }
                    drain_main(store, &opts, &mut signals, &report)
                }
                Err(e) => failed(&report, &e),
            }
        }
    }
}

/// Drains `store` and says how it went: the drain's exit status.
fn drain_main<S: Store>(store: S, opts: &DrainOptions, signals: &mut Signals, report: &Reporter) -> ExitCode {
    let start = Instant::now();
    match drain(store, opts, signals, report) {
        Ok(drained) => {
            report.drained(&opts.name, &drained, start.elapsed());
            if let Some(sig) = drained.interrupted {
                sys::die_by_signal(sig);
            }
            ExitCode::from(drained.exit_code())
        }
        Err(e) => failed(report, &e),
    }
}

/// `--list DIR`: a queue nothing was ever queued to is empty.
fn list_dir(dir: &std::path::Path, report: &Reporter) -> ExitCode {
    match DirStore::open(dir, false) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(store)) => list(store, report),
        Err(e) => failed(report, &e),
    }
}

/// `--list`: one JSON object per job on stdout.
fn list<S: Store>(mut store: S, report: &Reporter) -> ExitCode {
    let items = match store.list() {
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(141),
        Err(_) => ExitCode::from(crate::EXIT_USAGE),
    }
}

/// One pass over the queue: every due job gets one attempt.
pub fn drain<S: Store>(
    mut store: S,
    opts: &DrainOptions,
    signals: &mut Signals,
    report: &Reporter,
) -> Result<Drained, Error> {
    let start = Instant::now();
    let cutoff = SystemTime::now();
    let deadline = opts.max_time.and_then(|m| start.checked_add(m));
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
                let j = JobReport {
                    result: JobResult::Dead,
                    attempts: 0,
                    last_status: None,
                    next_due: None,
                    reason: Some(reason),
                };
                report.for_job(&id).job(&j);
                continue;
            }
            Found::Newer { id, version } => {
                drained.skipped += 1;
                let why = format!(
                    "written by a newer retry (job format version {version}; this one reads up to {}); left in the queue",
                    job::VERSION
                );
                let j = JobReport {
                    result: JobResult::Skipped,
                    attempts: 0,
                    last_status: None,
                    next_due: None,
                    reason: Some(why),
                };
                report.for_job(&id).job(&j);
                continue;
            }
        };
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            break;
        }
        let stop = one_job(&mut store, claim, opts, cutoff, remaining, signals, report, &mut drained)?;
        if stop {
            break;
        }
    }
    Ok(drained)
}

/// Looks at one claimed job: buries it when past its max-age, runs it when
/// due. `Ok(true)`: the drain must stop (signal, closed stdout).
#[allow(clippy::too_many_arguments)]
fn one_job<S: Store>(
    store: &mut S,
    claim: S::Claim,
    opts: &DrainOptions,
    cutoff: SystemTime,
    remaining: Option<Duration>,
    signals: &mut Signals,
    report: &Reporter,
    drained: &mut Drained,
) -> Result<bool, Error> {
    let mut job = claim.job().clone();
    let report = report.for_job(&job.id);
    let now = SystemTime::now();
    let bury = |store: &mut S, claim: S::Claim, mut job: Job, reason: String, drained: &mut Drained| {
        job.dead = Some(Death { at: Stamp(SystemTime::now()), reason: reason.clone() });
        if let Filed::Lost(why) = store.bury(claim, &job)? {
            lost(&report, &job, "moved to the dead letters", why, drained);
            return Ok(false);
        }
        drained.died += 1;
        report.job(&JobReport {
            result: JobResult::Dead,
            attempts: job.attempts,
            last_status: job.last_status(),
            next_due: None,
            reason: Some(reason),
        });
        Ok::<bool, Error>(false)
    };
    let max_age = opts.max_age.unwrap_or(Duration::from_millis(job.max_age_ms));
    let age = now.duration_since(job.first_start.0).unwrap_or(Duration::ZERO);
    if age > max_age {
        let reason = format!(
            "past its --max-age of {} (first attempt {} ago, {} attempts); last failure: {}",
            human(max_age),
            human(age),
            job.attempts,
            job.last_reason().unwrap_or_else(|| "none".to_string())
        );
        return bury(store, claim, job, reason, drained);
    }
    if job.next_due.0 > cutoff {
        return Ok(false);
    }
    let cfg = match job_config(&job, opts, remaining) {
        Ok(cfg) => cfg,
        Err(why) => {
            return bury(
                store,
                claim,
                job,
                format!("its saved options are not valid any more: {why}"),
                drained,
            );
        }
    };
    let stdin = match claim.stdin() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return bury(store, claim, job, "its recorded stdin is missing".to_string(), drained);
        }
        Err(e) => return Err(Error::io(format!("cannot open the recorded stdin of job {}", job.id), e)),
    };
    let cwd = PathBuf::from(job.cwd.to_os());
    let cwd = if cwd.is_dir() {
        Some(cwd)
    } else {
        report
            .warning(format!("its working directory '{}' is missing; running in the drain's", cwd.display()));
        None
    };
    let carry = Carry {
        attempts: job.attempts,
        // Only its number matters (RETRY_LAST_STATUS); Exited(n) says n.
        last: job.last_status().map(Status::Exited),
        elapsed: now.duration_since(job.first_start.0).unwrap_or(Duration::ZERO),
        backoff: (job.backoff.k, job.backoff.prev()),
        limit: 1,
        state_dir: claim.state_dir(),
        env: claim.env(),
        cwd,
        stdin,
    };
    let (outcome, journal, resources) = run::run_queued(&cfg, signals, &report, carry)?;
    drop(resources);
    for warning in store.take_warnings() {
        report.warning(warning);
    }
    let now = SystemTime::now();
    match outcome.end {
        End::Success => {
            job.attempts = job.attempts.saturating_add(outcome.attempts);
            if let Filed::Lost(why) = store.complete(claim)? {
                let what = format!("succeeded on attempt {}", job.attempts);
                lost(&report, &job, &what, why, drained);
                return Ok(false);
            }
            drained.succeeded += 1;
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
            drained.interrupted = Some(signal);
            return Ok(true);
        }
        // The job's circuit is open: due when it may close, no attempt
        // counted, its backoff where it was.
        End::Refused => {
            let cooldown = journal.next_delay.unwrap_or(Duration::ZERO);
            job.next_due = Stamp(job::later(now, cooldown));
            if let Filed::Lost(why) = store.reschedule(claim, &job)? {
                lost(&report, &job, "rescheduled (its circuit is open)", why, drained);
                return Ok(false);
            }
            drained.rescheduled += 1;
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
        _ if outcome.attempts == 0 => return Ok(false),
        End::Exhausted | End::Stopped | End::Deadline | End::ClosedStdout | End::Queued => {}
    }
    let before = job.backoff;
    absorb(&mut job, &outcome, &journal, now);
    if journal.cut_off {
        // Killed at the drain's --max-time: not the job's failure. Due at
        // once, its backoff where it was.
        job.backoff = before;
        job.next_due = Stamp(now);
    } else if outcome.end == End::Stopped {
        let reason = format!(
            "permanent failure on attempt {}: {}",
            job.attempts,
            job.last_reason().unwrap_or_else(|| "not retryable".to_string())
        );
        return bury(store, claim, job, reason, drained);
    }
    if let Filed::Lost(why) = store.reschedule(claim, &job)? {
        lost(&report, &job, &format!("rescheduled after attempt {}", job.attempts), why, drained);
    } else {
        drained.rescheduled += 1;
        let due = job.next_due.0.duration_since(now).unwrap_or(Duration::ZERO);
        report.job(&JobReport {
            result: JobResult::Rescheduled,
            attempts: job.attempts,
            last_status: job.last_status(),
            next_due: Some((job.next_due.to_string(), due)),
            reason: job.last_reason(),
        });
    }
    if outcome.end == End::ClosedStdout {
        drained.closed_stdout = true;
        return Ok(true);
    }
    Ok(false)
}

/// A result this drain could not file because its claim was lost: said
/// as a `lost` job (counted with the skipped ones), the newer claim's
/// result standing.
fn lost(report: &Reporter, job: &Job, result: &str, why: String, drained: &mut Drained) {
    drained.skipped += 1;
    report.job(&JobReport {
        result: JobResult::Lost,
        attempts: job.attempts,
        last_status: job.last_status(),
        next_due: None,
        reason: Some(format!("its result ({result}) is dropped: {why}")),
    });
}

/// The [`Config`] of one drained attempt: the job's saved options parsed
/// as they were given, then what belongs to the drain. Its `-n` and
/// `--max-time` governed the queueing run only: a drain makes one attempt
/// (no limit shown: `RETRY_MAX_ATTEMPTS` is empty) within its own budget.
fn job_config(job: &Job, opts: &DrainOptions, max_time: Option<Duration>) -> Result<Config, String> {
    let args = std::iter::once(OsString::from("retry"))
        .chain(job.options.iter().map(Bytes::to_os))
        .chain(job.argv.iter().map(Bytes::to_os));
    let mut cli = Cli::try_parse_from(args).map_err(|e| {
        let text = e.render().to_string();
        text.lines().next().unwrap_or("cannot parse").trim_start_matches("error: ").to_string()
    })?;
    cli.retries = None;
    cli.forever = true;
    cli.max_time = max_time;
    cli.splay = None;
    cli.dry_run = false;
    cli.queue = None;
    cli.drain = None;
    cli.list = None;
    cli.max_age = None;
    cli.queue_env = Vec::new();
    cli.lease = None;
    cli.quiet = opts.quiet;
    cli.verbose = opts.verbose;
    cli.log_format = opts.log_format;
    if opts.stdout.is_some() {
        cli.stdout = opts.stdout;
    }
    // The store options of the drain win over the job's (the Edge rules).
    if opts.state_store.is_some() {
        cli.state_store.clone_from(&opts.state_store);
    }
    cli.store_optional |= opts.store_optional;
    if opts.store_lease.is_some() {
        cli.store_lease = opts.store_lease;
    }
    // TLS files are the draining machine's.
    [cli.tls_ca, cli.tls_cert, cli.tls_key] = opts.tls.clone();
    // A seeded job draws differently at each step of its schedule.
    cli.seed = cli.seed.map(|s| s ^ u64::from(job.backoff.k).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // Relative paths were relative to the queueing run's directory.
    if let Some(dir) = cli.state_dir.take() {
        let cwd = PathBuf::from(job.cwd.to_os());
        cli.state_dir =
            Some(if dir.is_relative() && !cwd.as_os_str().is_empty() { cwd.join(dir) } else { dir });
    }
    Config::from_cli(cli).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::AttemptRecord;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_are_what_comes_before_command() {
        let args = os(&["retry", "-n", "2", "--queue", "q", "--", "curl", "-n", "--", "x"]);
        let got = options_before(&args, &os(&["curl", "-n", "--", "x"])).unwrap();
        assert_eq!(got, os(&["-n", "2", "--queue", "q", "--"]));
        let args = os(&["retry", "--queue", "q", "true"]);
        assert_eq!(options_before(&args, &os(&["true"])).unwrap(), os(&["--queue", "q"]));
        assert_eq!(options_before(&args, &os(&["false"])), None);
    }

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
            verdict: "retry",
            reason: Some("exit status 7".to_string()),
        };
        let journal = Journal {
            started: Some(t0),
            attempts: vec![record(1, 0), record(2, 10)],
            backoff: (2, Duration::from_secs(8)),
            next_delay: Some(Duration::from_secs(8)),
            cut_off: false,
        };
        let outcome = Outcome {
            end: End::Exhausted,
            last: Some(Status::Exited(7)),
            validation_failed: false,
            attempts: 2,
        };
        absorb(&mut job, &outcome, &journal, t0 + Duration::from_secs(13));
        assert_eq!(job.attempts, 2);
        assert_eq!(job.next_due.0, t0 + Duration::from_secs(20));
        assert_eq!(job.backoff, Position::new(2, Duration::from_secs(8)));
        assert_eq!(job.last_status(), Some(7));
        // Without a delay (no attempt could start) it is due at once.
        let now = t0 + Duration::from_secs(99);
        absorb(&mut job, &Outcome { attempts: 0, ..outcome }, &Journal::default(), now);
        assert_eq!(job.next_due.0, now);
    }
}
