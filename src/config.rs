//! argv → [`Mode`]: what retry is asked to do, typed and validated, with
//! every regex and jq expression compiled, so that a typo fails with 125
//! before any attempt runs. This is the one place for usage errors and
//! the only module below `lib` that knows clap (through `cli`); after it
//! nothing is a usage error.
//!
//! A drain also comes here for each job: [`for_job`] parses the job's
//! saved options with the same parser into the same [`Config`], then
//! applies what belongs to the drain.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser as _};
use regex::bytes::Regex;

use crate::backoff::{Algo, Backoff};
use crate::classify::Rules;
use crate::cli::{self, Cli, StdinMode, StdoutMode};
use crate::error::Error;
use crate::parse::{CodeSet, human};
use crate::predicate::Predicate;
use crate::record::ms;
use crate::report::summary;
use crate::report::{Format, Verbosity};
use crate::store::{self, StoreUrl, url::RedisUrl};

/// How long a queued job lives without `--max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);

/// The shortest `--lease` of a Redis queue's drain.
pub const MIN_LEASE: Duration = Duration::from_millis(100);

/// What retry was asked to do.
#[derive(Debug)]
pub enum Mode {
    /// `--help` or `--version`: clap prints it, retry exits 0.
    Help(clap::Error),
    /// Run COMMAND until it works.
    Run(Box<Config>),
    /// `--dry-run`: print the planned sleeps.
    DryRun(Box<Config>),
    /// `--drain`: one attempt for every due job of a queue.
    Drain(Box<DrainConfig>),
    /// `--list`: the jobs of a queue.
    List(ListConfig),
}

/// What happens to an attempt's stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdout {
    /// Inherited: the child writes straight to retry's stdout.
    Live,
    /// Piped and stored; only the accepted (or last) attempt's is written at
    /// the end. `tee`: also streamed as it arrives (`--stdout live` with
    /// inspection).
    Captured { tee: bool },
}

/// A regex with the text the user gave, for messages.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub source: String,
    pub regex: Regex,
}

/// The regex rules that read one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamRules {
    pub retry: Vec<Pattern>,
    pub stop: Vec<Pattern>,
}

impl StreamRules {
    pub fn is_empty(&self) -> bool {
        self.retry.is_empty() && self.stop.is_empty()
    }
}

/// Where a queue lives: `--queue`, `--drain` and `--list` take a directory
/// or `redis[s]://[user:pass@]host[:port][/db]#NAME`.
#[derive(Clone, Debug)]
pub enum Place {
    Dir(PathBuf),
    Redis(RedisUrl),
}

impl Place {
    /// Reads the value of `option`. A value that starts with `redis://`,
    /// `rediss://` or `redis+sentinel://` is a Redis queue (it needs
    /// `#NAME`); anything else with `://` is refused; the rest is a
    /// directory, made absolute (without resolving links). Errors never
    /// show the password.
    pub fn parse(raw: &Path, option: &str) -> Result<Place, Error> {
        let Some(text) = raw.to_str().filter(|t| t.contains("://")) else {
            return Ok(Place::Dir(std::path::absolute(raw).unwrap_or_else(|_| raw.to_path_buf())));
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
            Ok(StoreUrl::Redis(url)) => url,
            Ok(StoreUrl::File(_)) => return Err(Error::usage(option, masked(), "not a Redis URL")),
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
pub struct QueueTarget {
    pub place: Place,
    /// retry's arguments before COMMAND, as given (a Redis URL's password
    /// masked): a job saves them, and a drain parses them again.
    pub options: Vec<OsString>,
    /// `--queue-env`: the only variables a Redis job keeps.
    pub env: Vec<String>,
}

/// A run's options.
#[derive(Debug)]
pub struct Config {
    /// COMMAND and its arguments; empty only with `--dry-run`.
    pub command: Vec<OsString>,
    /// Total attempts (N+1); `None` with `--forever`.
    pub attempts: Option<u32>,
    pub timeout: Option<Duration>,
    pub kill_after: Duration,
    pub kill_signal: i32,
    pub max_time: Option<Duration>,
    pub backoff: Backoff,
    pub reset_after: Option<Duration>,
    /// `--reset-on-progress` (the run has a state dir: checked here).
    pub reset_on_progress: bool,
    /// `--wait-from`: where a failed attempt's output names the wait.
    pub wait_from: Vec<Pattern>,
    /// `--rotate`: variables whose values attempts take in turn (all of
    /// the same length, checked here).
    pub rotate: Vec<crate::parse::Rotation>,
    pub splay: Option<Duration>,
    pub seed: Option<u64>,
    pub on_retry: Option<OsString>,
    /// `--on-give-up`.
    pub on_give_up: Option<OsString>,
    pub rules: Rules,
    pub stdout_rules: StreamRules,
    pub stderr_rules: StreamRules,
    pub until: Vec<Predicate>,
    pub until_match: Vec<Pattern>,
    pub retry_if: Vec<Predicate>,
    pub stdout: Stdout,
    pub stdin_replay: bool,
    pub foreground: bool,
    /// `--state-dir DIR`: `RETRY_STATE_DIR`, kept.
    pub state_dir: Option<PathBuf>,
    /// `--temp-state`: a fresh `RETRY_STATE_DIR`, removed at the end.
    pub temp_state: bool,
    pub verbosity: Verbosity,
    pub format: Format,
    /// `--summary FILE`; its directory exists (checked here).
    pub summary: Option<PathBuf>,
    /// `--flaky-exit N`: the exit status of a flaky success.
    pub flaky_exit: Option<u8>,
    /// `--metrics FILE`; its directory is writable (checked here, except
    /// for a drained job: see [`for_job`]).
    pub metrics: Option<PathBuf>,
    /// `--queue DIR`: where the job goes when the run gives up.
    pub queue: Option<QueueTarget>,
    /// `--max-age`: how long a queued job lives (default [`DEFAULT_MAX_AGE`]).
    pub max_age: Option<Duration>,
    /// `--key` and the options that share state across runs.
    pub shared: Option<store::Shared>,
    /// `--tls-ca`, `--tls-cert`, `--tls-key` (set up for the process by
    /// `store::conn::configure_tls`; kept for the summary).
    pub tls: [Option<PathBuf>; 3],
}

/// A drain's own options (a job runs with the options saved with it).
#[derive(Clone, Debug)]
pub struct DrainConfig {
    pub place: Place,
    /// `--max-age`, for every job of this drain (else each job's own).
    pub max_age: Option<Duration>,
    /// The drain's budget: no job starts after it.
    pub max_time: Option<Duration>,
    /// `--lease` of a Redis queue.
    pub lease: Option<Duration>,
    /// `--stdout`, for every job (else each job's own).
    pub stdout: Option<StdoutMode>,
    pub verbosity: Verbosity,
    pub format: Format,
    /// `--state-store` for the jobs' shared state (else each job's own).
    pub state_store: Option<String>,
    /// `--store-optional` for every job.
    pub store_optional: bool,
    /// `--summary FILE`: a document of the drain.
    pub summary: Option<PathBuf>,
    /// `--metrics FILE`: the queue's gauges and the drain's counters.
    pub metrics: Option<PathBuf>,
    /// `--on-dead`: run for each job this drain buries.
    pub on_dead: Option<OsString>,
    /// `--store-lease` for every job (else each job's own).
    pub store_lease: Option<Duration>,
    /// `--tls-ca`, `--tls-cert`, `--tls-key`: the drain's, never a job's.
    pub tls: [Option<PathBuf>; 3],
}

/// `--list`'s options.
#[derive(Clone, Debug)]
pub struct ListConfig {
    pub place: Place,
    pub verbosity: Verbosity,
    pub format: Format,
}

/// The options a drain takes for itself (clap ids).
const DRAIN_OPTIONS: [&str; 17] = [
    "on_dead",
    "store_lease",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "drain",
    "summary",
    "metrics",
    "max_age",
    "max_time",
    "lease",
    "stdout",
    "quiet",
    "verbose",
    "log_format",
    "state_store",
    "store_optional",
];

/// The options `--list` takes.
const LIST_OPTIONS: [&str; 7] = ["list", "quiet", "verbose", "log_format", "tls_ca", "tls_cert", "tls_key"];

/// The command line (argv, the program's name first) as a [`Mode`].
pub fn mode(args: &[OsString]) -> Result<Mode, Error> {
    // The parser and its matches are never freed: the process ends soon
    // after, and freeing them cost ~24,000 instructions at every start.
    // `from_arg_matches_mut` takes the values out of the matches instead
    // of copying them (`from_arg_matches` clones all: ~35,000 more).
    // Parsed with the command without help texts (`cli::LeanCli`); help,
    // --version and errors come from the full one, as the user sees them.
    let mut cmd = std::mem::ManuallyDrop::new(cli::LeanCli::command());
    let mut matches = match cmd.try_get_matches_from_mut(args) {
        Ok(m) => std::mem::ManuallyDrop::new(m),
        Err(_) => {
            return match Cli::command().try_get_matches_from(args) {
                Err(e) => clap_error(e),
                Ok(_) => Err(Error::Args { message: "invalid arguments".to_string(), tip: None }),
            };
        }
    };
    // Before the values are taken out: which options were given.
    if matches.contains_id("list") {
        check_options(&cmd, &matches, "--list", &LIST_OPTIONS)?;
    } else if matches.contains_id("drain") {
        check_options(&cmd, &matches, "--drain", &DRAIN_OPTIONS)?;
    }
    let cli = match Cli::from_arg_matches_mut(&mut matches) {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    if cli.list.is_some() || cli.drain.is_some() {
        // For every rediss:// connection of this process (a run's are set up
        // with its store options).
        store::conn::configure_tls(cli.tls_ca.as_deref(), cli.tls_cert.as_deref(), cli.tls_key.as_deref())?;
    }
    if let Some(raw) = cli.list.as_deref() {
        let place = Place::parse(raw, "--list")?;
        return Ok(Mode::List(ListConfig { place, verbosity: verbosity(&cli), format: format(&cli) }));
    }
    if let Some(raw) = cli.drain.as_deref() {
        return drain(&cli, raw).map(|d| Mode::Drain(Box::new(d)));
    }
    let dry_run = cli.dry_run;
    let mut cfg = Config::from_cli(cli)?;
    if let Some(target) = &mut cfg.queue {
        target.options = queue_options(args, &cfg.command, &target.place)?;
    }
    Ok(if dry_run { Mode::DryRun(Box::new(cfg)) } else { Mode::Run(Box::new(cfg)) })
}

/// The [`Config`] of one drained attempt of a queued job: its saved
/// `options` (retry's arguments before COMMAND) parsed as they were given,
/// then what belongs to the drain. The job's `-n` and `--max-time`
/// governed the queueing run only: a drain makes one attempt (no limit
/// shown: `RETRY_MAX_ATTEMPTS` is empty) within `budget`, what is left of
/// its own. `cwd` is the job's saved working directory (relative paths
/// were relative to it); `step` where its schedule stands (a seeded job
/// draws differently at each step). Errors say why the options are not
/// valid any more.
pub fn for_job(
    options: &[OsString],
    argv: &[OsString],
    drain: &DrainConfig,
    budget: Option<Duration>,
    cwd: &Path,
    step: u32,
) -> Result<Config, String> {
    let args =
        std::iter::once(OsString::from("retry")).chain(options.iter().cloned()).chain(argv.iter().cloned());
    let mut cli = Cli::try_parse_from(args).map_err(|e| {
        let text = e.render().to_string();
        text.lines().next().unwrap_or("cannot parse").trim_start_matches("error: ").to_string()
    })?;
    if cli.drain.is_some() || cli.list.is_some() {
        return Err("they hold --drain or --list: a job runs a command".to_string());
    }
    cli.retries = None;
    cli.forever = true;
    cli.max_time = budget;
    cli.splay = None;
    cli.dry_run = false;
    cli.queue = None;
    cli.drain = None;
    cli.list = None;
    cli.max_age = None;
    cli.queue_env = Vec::new();
    cli.lease = None;
    // A job's saved --on-give-up belongs to its queueing run (a drain
    // reports a dead job through its own --on-dead).
    cli.on_give_up = None;
    // A job's saved --summary and --flaky-exit belong to its queueing run
    // (README "Durable queue"). Its --metrics FILE is the drain's to
    // update, unchecked: a directory gone since is a failure to write at
    // the end (reported), not a reason to bury the job.
    cli.summary = None;
    cli.flaky_exit = None;
    let metrics = cli.metrics.take().map(|m| in_job_dir(m, cwd));
    if drain.stdout.is_some() {
        cli.stdout = drain.stdout;
    }
    // The store options of the drain win over the job's (the Edge rules).
    if drain.state_store.is_some() {
        cli.state_store.clone_from(&drain.state_store);
    }
    cli.store_optional |= drain.store_optional;
    if drain.store_lease.is_some() {
        cli.store_lease = drain.store_lease;
    }
    // TLS files are the draining machine's.
    [cli.tls_ca, cli.tls_cert, cli.tls_key] = drain.tls.clone();
    cli.seed = cli.seed.map(|s| s ^ u64::from(step).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    cli.state_dir = cli.state_dir.take().map(|dir| in_job_dir(dir, cwd));
    let mut cfg = Config::from_cli(cli).map_err(|e| e.to_string())?;
    cfg.metrics = metrics;
    // Messages are the drain's: its verbosity and format, not the job's.
    cfg.verbosity = drain.verbosity;
    cfg.format = drain.format;
    Ok(cfg)
}

/// A path a job saved as given: a relative one was relative to the job's
/// working directory `cwd`, not to the drain's.
fn in_job_dir(path: PathBuf, cwd: &Path) -> PathBuf {
    if path.is_relative() && !cwd.as_os_str().is_empty() { cwd.join(path) } else { path }
}

impl Config {
    fn from_cli(cli: Cli) -> Result<Config, Error> {
        let stdout_rules = StreamRules {
            retry: patterns("--retry-on-stdout", cli.retry_on_stdout)?,
            stop: patterns("--stop-on-stdout", cli.stop_on_stdout)?,
        };
        let stderr_rules = StreamRules {
            retry: patterns("--retry-on-stderr", cli.retry_on_stderr)?,
            stop: patterns("--stop-on-stderr", cli.stop_on_stderr)?,
        };
        let until_match = patterns("--until-match", cli.until_match)?;
        let wait_from = patterns("--wait-from", cli.wait_from)?;
        let until = predicates("--until", cli.until)?;
        let retry_if = predicates("--retry-if", cli.retry_if)?;
        let union = |sets: Vec<CodeSet>| sets.into_iter().reduce(CodeSet::union);
        let success = success_codes(union(cli.success_exit))?;
        let signals =
            |sets: Vec<crate::parse::SignalSet>| sets.into_iter().reduce(crate::parse::SignalSet::union);
        let rules = Rules {
            success,
            retry_on_exit: union(cli.retry_on_exit),
            stop_on_exit: union(cli.stop_on_exit),
            retry_on_signal: signals(cli.retry_on_signal),
            stop_on_signal: signals(cli.stop_on_signal),
            retry_on_stdout: !stdout_rules.retry.is_empty(),
            retry_on_stderr: !stderr_rules.retry.is_empty(),
            retry_if: !retry_if.is_empty(),
        };
        let inspect_stdout = !until.is_empty() || !until_match.is_empty() || !stdout_rules.is_empty();
        let stdout = stdout_of(cli.stdout, inspect_stdout);
        if let Some(path) = &cli.summary {
            summary::check_target(path)?;
        }
        if let Some(path) = &cli.metrics {
            crate::report::metrics::check_target(path)?;
        }
        if cli.command.first().is_some_and(|c| c.is_empty()) {
            return Err(Error::usage("COMMAND", "", "the command name is empty"));
        }
        let algo = algo_of(cli.algo, cli.delays.is_some());
        check_rotation(&cli.rotate)?;
        if cli.reset_on_progress {
            check_reset_on_progress(cli.queue.as_deref(), cli.state_dir.is_some(), cli.temp_state)?;
        }
        if let (Some(age), None, None) = (cli.max_age, &cli.queue, &cli.drain) {
            return Err(Error::usage(
                "--max-age",
                human(age),
                "it is the life of a queued job: give it with --queue or --drain",
            ));
        }
        let queue = queue_target(cli.queue.as_deref(), cli.queue_env)?;
        let verbosity = verbosity_of(cli.quiet, cli.verbose);
        // `-t 0` and `--max-time 0` mean no limit, as with timeout(1).
        let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        let format = format_of(cli.log_format);
        let shared = store::Shared::from_options(store::Options {
            key: cli.key,
            state_store: cli.state_store,
            circuit_break: cli.circuit_break,
            circuit_cooldown: cli.circuit_cooldown,
            rate: cli.rate,
            concurrency: cli.concurrency,
            store_optional: cli.store_optional,
            store_lease: cli.store_lease,
            tls_ca: cli.tls_ca.clone(),
            tls_cert: cli.tls_cert.clone(),
            tls_key: cli.tls_key.clone(),
        })?;
        let tls = [cli.tls_ca, cli.tls_cert, cli.tls_key];
        Ok(Config {
            command: cli.command,
            attempts: if cli.forever { None } else { Some(cli.retries.unwrap_or(3).saturating_add(1)) },
            timeout: nonzero(cli.timeout),
            kill_after: cli.kill_after.unwrap_or(Duration::from_secs(10)),
            kill_signal: cli.kill_signal.unwrap_or(libc::SIGTERM),
            max_time: nonzero(cli.max_time),
            backoff: Backoff {
                algo,
                wait: cli.wait.unwrap_or(Duration::from_secs(1)),
                multiplier: cli.multiplier.unwrap_or(2.0),
                cap: cli.max_wait.unwrap_or(Duration::MAX),
                jitter: cli.jitter.unwrap_or(0.0),
                delays: cli.delays.map(|d| d.0).unwrap_or_default(),
            },
            reset_after: cli.reset_after,
            reset_on_progress: cli.reset_on_progress,
            wait_from,
            rotate: cli.rotate,
            splay: cli.splay,
            seed: cli.seed,
            on_retry: cli.on_retry,
            on_give_up: cli.on_give_up,
            rules,
            stdout_rules,
            stderr_rules,
            until,
            until_match,
            retry_if,
            stdout,
            stdin_replay: cli.stdin == StdinMode::Replay,
            foreground: cli.foreground,
            state_dir: cli.state_dir,
            temp_state: cli.temp_state,
            verbosity,
            format,
            summary: cli.summary,
            flaky_exit: cli.flaky_exit,
            metrics: cli.metrics,
            queue,
            max_age: cli.max_age,
            shared,
            tls,
        })
    }

    /// stderr is piped (and still streamed live) only when a rule reads it,
    /// so that otherwise the child keeps retry's terminal.
    pub fn pipes_stderr(&self) -> bool {
        !self.stderr_rules.is_empty() || !self.retry_if.is_empty() || !self.wait_from.is_empty()
    }

    /// Attempts per `--rotate` cycle (1 without it).
    pub fn cycle(&self) -> u32 {
        self.rotate.first().map_or(1, |r| u32::try_from(r.values.len()).unwrap_or(u32::MAX))
    }

    /// The `--rotate` variables of attempt `n` (1-based): `NAME=value` each.
    pub fn rotation_of(&self, n: u32) -> impl Iterator<Item = (&str, &str)> {
        self.rotate.iter().map(move |r| {
            let i = usize::try_from(n.saturating_sub(1)).unwrap_or(0) % r.values.len().max(1);
            (r.name.as_str(), r.values.get(i).map_or("", String::as_str))
        })
    }

    /// The warning for `--jitter` given with `--algo decorrelated`, which
    /// ignores it.
    pub fn jitter_warning(&self) -> Option<String> {
        (self.backoff.algo == Algo::Decorrelated && self.backoff.jitter > 0.0)
            .then(|| "--jitter has no effect with --algo decorrelated".to_string())
    }

    /// The `key` label of `--metrics`: `--key`, else the command's base
    /// name (`curl` for `/usr/bin/curl`).
    pub fn metrics_key(&self) -> String {
        if let Some(shared) = &self.shared {
            return shared.key.as_str().to_string();
        }
        let first = self.command.first().map(Path::new);
        first
            .and_then(Path::file_name)
            .or(first.map(Path::as_os_str))
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }

    /// The command as `--summary` and `-v` show it.
    pub fn command_lossy(&self) -> Vec<String> {
        self.command.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    /// The options in force as `--summary FILE` shows them: typed, with
    /// defaults filled in, passwords masked.
    pub fn summary_options(&self, summary: &Path) -> summary::Options {
        let b = &self.backoff;
        let sources = |ps: &[Pattern]| ps.iter().map(|p| p.source.clone()).collect();
        let exprs = |ps: &[Predicate]| ps.iter().map(|p| p.source().to_string()).collect();
        let lossy = |p: &Path| p.to_string_lossy().into_owned();
        let shared = self.shared.as_ref();
        summary::Options {
            retries: self.attempts.map(|t| t.saturating_sub(1)),
            forever: self.attempts.is_none(),
            timeout_ms: self.timeout.map(ms),
            kill_after_ms: ms(self.kill_after),
            kill_signal: crate::parse::signal_name(self.kill_signal),
            max_time_ms: self.max_time.map(ms),
            algo: b.algo.word(),
            wait_ms: ms(b.wait),
            multiplier: b.multiplier,
            max_wait_ms: (b.cap != Duration::MAX).then(|| ms(b.cap)),
            jitter: b.jitter,
            reset_after_ms: self.reset_after.map(ms),
            reset_on_progress: self.reset_on_progress,
            delays_ms: (b.algo == Algo::Delays).then(|| b.delays.iter().copied().map(ms).collect()),
            wait_from: sources(&self.wait_from),
            rotate: self
                .rotate
                .iter()
                .map(|r| summary::RotateOption { name: r.name.clone(), values: r.values.clone() })
                .collect(),
            on_give_up: self.on_give_up.as_ref().map(|c| c.to_string_lossy().into_owned()),
            retry_on_signal: self.rules.retry_on_signal.map(|s| s.to_text()),
            stop_on_signal: self.rules.stop_on_signal.map(|s| s.to_text()),
            splay_ms: self.splay.map(ms),
            seed: self.seed,
            on_retry: self.on_retry.as_ref().map(|c| c.to_string_lossy().into_owned()),
            retry_on_exit: self.rules.retry_on_exit.map(|c| c.to_text()),
            stop_on_exit: self.rules.stop_on_exit.map(|c| c.to_text()),
            retry_on_stdout: sources(&self.stdout_rules.retry),
            retry_on_stderr: sources(&self.stderr_rules.retry),
            stop_on_stdout: sources(&self.stdout_rules.stop),
            stop_on_stderr: sources(&self.stderr_rules.stop),
            retry_if: exprs(&self.retry_if),
            until: exprs(&self.until),
            until_match: sources(&self.until_match),
            stdout: match self.stdout {
                Stdout::Live | Stdout::Captured { tee: true } => "live",
                Stdout::Captured { tee: false } => "final",
            },
            stdin: if self.stdin_replay { "replay" } else { "pass" },
            foreground: self.foreground,
            state_dir: self.state_dir.as_deref().map(lossy),
            temp_state: self.temp_state,
            verbosity: self.verbosity.word(),
            log_format: self.format.word(),
            summary: lossy(summary),
            flaky_exit: self.flaky_exit,
            metrics: self.metrics.as_deref().map(lossy),
            key: shared.map(|sh| sh.key.as_str().to_string()),
            state_store: shared.map(|sh| sh.store.masked()),
            circuit_break: shared.and_then(|sh| sh.circuit).map(|c| c.threshold),
            circuit_cooldown_ms: shared.and_then(|sh| sh.circuit).map(|c| ms(c.cooldown)),
            rate: shared
                .and_then(|sh| sh.rate)
                .map(|r| summary::RateOption { n: r.n, window_ms: ms(r.window) }),
            concurrency: shared.and_then(|sh| sh.concurrency),
            store_optional: shared.is_some_and(|sh| sh.optional),
            store_lease_ms: shared.and_then(|sh| sh.lease).map(ms),
            tls_ca: self.tls[0].as_deref().map(lossy),
            tls_cert: self.tls[1].as_deref().map(lossy),
            tls_key: self.tls[2].as_deref().map(lossy),
            queue: self.queue.as_ref().map(|q| q.place.display()),
            queue_env: self.queue.as_ref().map(|q| q.env.clone()).unwrap_or_default(),
            max_age_ms: self.queue.as_ref().map(|_| ms(self.max_age.unwrap_or(DEFAULT_MAX_AGE))),
        }
    }
}

fn verbosity_of(quiet: bool, verbose: u8) -> Verbosity {
    match (quiet, verbose) {
        (true, _) => Verbosity::Quiet,
        (false, 0) => Verbosity::Normal,
        (false, 1) => Verbosity::Verbose,
        (false, _) => Verbosity::Debug,
    }
}

/// An option value that must be text: a regex or a jq expression.
fn utf8(option: &str, value: OsString, what: &str) -> Result<String, Error> {
    value.into_string().map_err(|raw| {
        Error::usage(option, raw.to_string_lossy(), format!("not valid UTF-8; expected {what}"))
    })
}

fn format_of(f: Option<cli::LogFormat>) -> Format {
    match f.unwrap_or(cli::LogFormat::Text) {
        cli::LogFormat::Text => Format::Text,
        cli::LogFormat::Json => Format::Json,
        cli::LogFormat::Github => Format::Github,
        cli::LogFormat::Gitlab => Format::Gitlab,
    }
}

fn verbosity(cli: &Cli) -> Verbosity {
    verbosity_of(cli.quiet, cli.verbose)
}

fn format(cli: &Cli) -> Format {
    format_of(cli.log_format)
}

/// `--drain DIR|URL` and the options it takes.
fn drain(cli: &Cli, raw: &Path) -> Result<DrainConfig, Error> {
    let place = Place::parse(raw, "--drain")?;
    match (&place, cli.lease) {
        (Place::Dir(_), Some(lease)) => {
            return Err(Error::usage(
                "--lease",
                human(lease),
                "a lease is for a Redis queue; a directory queue's lock ends with its drain",
            ));
        }
        (Place::Redis(_), Some(lease)) if lease < MIN_LEASE => {
            return Err(Error::usage("--lease", human(lease), "a lease is at least 100ms"));
        }
        (Place::Dir(_) | Place::Redis(_), _) => {}
    }
    if let Some(path) = &cli.summary {
        summary::check_target(path)?;
    }
    if let Some(path) = &cli.metrics {
        crate::report::metrics::check_target(path)?;
    }
    Ok(DrainConfig {
        place,
        max_age: cli.max_age,
        max_time: cli.max_time.filter(|d| !d.is_zero()),
        lease: cli.lease,
        stdout: cli.stdout,
        verbosity: verbosity(cli),
        format: format(cli),
        state_store: cli.state_store.clone(),
        store_optional: cli.store_optional,
        summary: cli.summary.clone(),
        metrics: cli.metrics.clone(),
        on_dead: cli.on_dead.clone(),
        store_lease: cli.store_lease,
        tls: [cli.tls_ca.clone(), cli.tls_cert.clone(), cli.tls_key.clone()],
    })
}

/// Refuses, with 125, any option that is not the mode's own: a drain runs
/// each job with the options saved with it.
fn check_options(
    cmd: &clap::Command,
    matches: &ArgMatches,
    mode: &str,
    allowed: &[&str],
) -> Result<(), Error> {
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
            "a drain takes only --max-age, --max-time, --lease, --on-dead, --summary, --metrics, \
             --stdout, -q, -v, --log-format and the store options (--state-store, --store-optional, \
             --store-lease, --tls-ca, --tls-cert, --tls-key); each job runs with the options saved \
             with it"
        } else {
            "--list takes only -q, -v, --log-format, --tls-ca, --tls-cert and --tls-key"
        };
        return Err(Error::Conflict(format!("'{name}' cannot be used with {mode}: {takes}")));
    }
    Ok(())
}

/// Compiles the regexes of a stream-rule option (`--retry-on-stdout`, ...).
fn patterns(option: &str, sources: Vec<OsString>) -> Result<Vec<Pattern>, Error> {
    sources
        .into_iter()
        .map(|source| {
            let source = utf8(option, source, "a regex; match raw bytes with escapes such as (?-u)\\xFF")?;
            match Regex::new(&source) {
                Ok(regex) => Ok(Pattern { source, regex }),
                Err(e) => Err(Error::usage(option, source, regex_error(&e))),
            }
        })
        .collect()
}

/// Compiles the jq expressions of `--until` or `--retry-if`.
fn predicates(option: &str, sources: Vec<OsString>) -> Result<Vec<Predicate>, Error> {
    sources
        .into_iter()
        .map(|source| {
            let source = utf8(option, source, "a jq expression")?;
            Predicate::compile(&source).map_err(|e| Error::usage(option, &source, e.to_string()))
        })
        .collect()
}

/// `--success-exit`: no timeout, own failure or death by signal can be one.
fn success_codes(set: Option<CodeSet>) -> Result<Option<CodeSet>, Error> {
    if let Some(set) = &set {
        if let Some(bad) = (124..=127).chain(129..=255).find(|&c| set.contains(c)) {
            return Err(Error::usage(
                "--success-exit",
                set.to_text(),
                format!(
                    "status {bad} cannot be a success: 124-127 are timeouts and retry's own failures, \
                     above 128 deaths by signal"
                ),
            ));
        }
    }
    Ok(set)
}

/// Where stdout goes: a rule or predicate that reads it captures it, and
/// `--stdout live` then streams it too.
fn stdout_of(mode: Option<StdoutMode>, inspected: bool) -> Stdout {
    match (mode, inspected) {
        (Some(StdoutMode::Final), _) => Stdout::Captured { tee: false },
        (Some(StdoutMode::Live), true) => Stdout::Captured { tee: true },
        (Some(StdoutMode::Live), false) | (None, false) => Stdout::Live,
        (None, true) => Stdout::Captured { tee: false },
    }
}

/// The backoff algorithm: `--delays` is one of its own.
fn algo_of(algo: Option<cli::Algo>, delays: bool) -> Algo {
    match (algo.unwrap_or(cli::Algo::Exponential), delays) {
        (_, true) => Algo::Delays,
        (cli::Algo::Exponential, false) => Algo::Exponential,
        (cli::Algo::Linear, false) => Algo::Linear,
        (cli::Algo::Fibonacci, false) => Algo::Fibonacci,
        (cli::Algo::Constant, false) => Algo::Constant,
        (cli::Algo::Decorrelated, false) => Algo::Decorrelated,
    }
}

/// `--reset-on-progress` watches the state dir, so it needs one that
/// follows the job wherever it runs.
fn check_reset_on_progress(
    queue: Option<&std::path::Path>,
    state_dir: bool,
    temp_state: bool,
) -> Result<(), Error> {
    let redis_queue = queue.and_then(|q| q.to_str()).is_some_and(|q| q.contains("://"));
    match (state_dir, temp_state, redis_queue) {
        (true, _, _) | (false, true, false) => Ok(()),
        (false, true, true) => Err(Error::Conflict(
            "--reset-on-progress with a Redis --queue needs --state-dir DIR: a --temp-state \
             dir does not follow a job to the draining machine"
                .to_string(),
        )),
        (false, false, _) => Err(Error::Conflict(
            "--reset-on-progress needs a state dir to watch: give --temp-state or --state-dir DIR"
                .to_string(),
        )),
    }
}

/// `--rotate`: every list as long as the first, no variable twice.
fn check_rotation(rotate: &[crate::parse::Rotation]) -> Result<(), Error> {
    let Some(first) = rotate.first() else { return Ok(()) };
    for (i, r) in rotate.iter().enumerate() {
        if r.values.len() != first.values.len() {
            return Err(Error::usage(
                "--rotate",
                format!("{}={}", r.name, r.values.join(",")),
                format!(
                    "{} value(s), but {} has {}: rotations advance together and need as many values",
                    r.values.len(),
                    first.name,
                    first.values.len()
                ),
            ));
        }
        if rotate[..i].iter().any(|o| o.name == r.name) {
            return Err(Error::usage("--rotate", &r.name, "the variable is rotated twice"));
        }
    }
    Ok(())
}

/// `--queue DIR|URL` with `--queue-env NAME,...` (which only a Redis queue
/// takes: a directory queue keeps the whole environment).
fn queue_target(raw: Option<&Path>, env: Vec<String>) -> Result<Option<QueueTarget>, Error> {
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
    Ok(Some(QueueTarget { place, options: Vec::new(), env }))
}

/// The arguments a `--queue` job saves: retry's own before COMMAND, as
/// given, with the Redis queue URL's password masked (a drain does not use
/// it: it has its own).
fn queue_options(args: &[OsString], command: &[OsString], place: &Place) -> Result<Vec<OsString>, Error> {
    let Some(options) = options_before(args, command) else {
        return Err(Error::Conflict("cannot tell retry's options from COMMAND".to_string()));
    };
    // A job never keeps a password: not the queue URL's (a drain has its
    // own), not a --state-store URL's.
    Ok(match place {
        Place::Dir(_) => store::url::without_passwords(options),
        Place::Redis(url) => options
            .into_iter()
            .map(|a| {
                let masked = mask_queue_arg(a.clone(), url);
                if masked == a { store::url::without_password(a) } else { masked }
            })
            .collect(),
    })
}

/// An argument with the password of the queue URL `url` masked: the URL
/// itself, or `--queue=URL`.
fn mask_queue_arg(arg: OsString, url: &RedisUrl) -> OsString {
    let Some(text) = arg.to_str() else { return arg };
    let (flag, value) = match text.strip_prefix("--queue=") {
        Some(value) => ("--queue=", value),
        None => ("", text),
    };
    let is_it =
        value.contains("://") && matches!(store::url::parse(value), Ok(StoreUrl::Redis(ref u)) if u == url);
    if is_it && url.password.is_some() { OsString::from(format!("{flag}{}", url.masked())) } else { arg }
}

/// retry's arguments before COMMAND, exactly as given. COMMAND and its
/// arguments are the tail of argv (option parsing stops at COMMAND), so
/// parsing `retry OPTIONS COMMAND…` again gives the same options.
fn options_before(args: &[OsString], command: &[OsString]) -> Option<Vec<OsString>> {
    let end = args.len().checked_sub(command.len()).filter(|_| args.ends_with(command))?;
    Some(args.get(1..end)?.to_vec())
}

/// Help and version are a [`Mode`]; every other clap error is one line
/// naming the option and value, with clap's tip as the hint.
fn clap_error(e: clap::Error) -> Result<Mode, Error> {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return Ok(Mode::Help(e));
    }
    let rendered = e.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut first = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if e.kind() == ErrorKind::MissingRequiredArgument {
        // clap lists the missing arguments on the next lines.
        let missing: Vec<&str> =
            lines.clone().take_while(|l| l.starts_with('<') || l.starts_with("--")).collect();
        first = if missing.iter().any(|m| m.starts_with("<COMMAND>")) {
            "missing COMMAND: give the command to run, e.g. retry -n 3 -- curl -fsS URL".to_string()
        } else {
            format!("missing required arguments: {}", missing.join(" "))
        };
    }
    // A bad choice lists the good ones (clap puts them on a line of their own).
    if let Some(values) = lines.clone().find_map(|l| l.strip_prefix("[possible values: ")) {
        first = format!("{first} (possible values: {})", values.trim_end_matches(']'));
    }
    let tip = lines.find_map(|l| l.strip_prefix("tip: ")).map(str::to_string);
    Err(Error::Args { message: first, tip })
}

/// One line from the regex crate's multi-line message: the error and the
/// column the caret points at.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let message = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| lines.last().copied().unwrap_or("invalid regex"))
        .trim();
    let column = lines.iter().find_map(|l| {
        let t = l.trim_start();
        (t.starts_with('^') && t.trim_end().bytes().all(|b| b == b'^'))
            .then(|| l.len() - t.len())
            .map(|indent| indent.saturating_sub(4) + 1)
    });
    match column {
        Some(c) => format!("{message} at column {c}"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn regex_errors_are_one_line_with_a_column() {
        // Built at run time: clippy rejects invalid regex literals.
        let bad = |p: &str| Regex::new(p).unwrap_err();
        assert_eq!(regex_error(&bad("ab(c")), "unclosed group at column 3");
        assert!(!regex_error(&bad("a{2,1}")).contains('\n'));
    }

    fn mode_of(args: &[&str]) -> Result<Mode, Error> {
        mode(&os(&[&["retry"], args].concat()))
    }

    /// The message of the usage error `args` give.
    fn error_of(args: &[&str]) -> String {
        match mode_of(args) {
            Err(e) => {
                assert_eq!(e.status(), 125, "{e}");
                e.to_string()
            }
            Ok(m) => panic!("{args:?} gave {m:?}"),
        }
    }

    #[test]
    fn each_mode() {
        let Ok(Mode::Run(cfg)) = mode_of(&["-n", "2", "--", "curl", "-n", "x"]) else { panic!() };
        assert_eq!((cfg.attempts, cfg.command.len()), (Some(3), 3));
        assert!(matches!(mode_of(&["--dry-run", "--algo", "linear"]), Ok(Mode::DryRun(_))));
        assert!(matches!(mode_of(&["--help"]), Ok(Mode::Help(_))));
        assert!(matches!(mode_of(&["-h"]), Ok(Mode::Help(_))));
        assert!(matches!(mode_of(&["--version"]), Ok(Mode::Help(_))));
        let Ok(Mode::Drain(d)) = mode_of(&["--drain", "q", "--max-time", "4m", "-q", "--log-format", "json"])
        else {
            panic!()
        };
        assert!(matches!(&d.place, Place::Dir(p) if p.is_absolute() && p.ends_with("q")));
        assert_eq!(
            (d.max_time, d.verbosity, d.format),
            (Some(Duration::from_secs(240)), Verbosity::Quiet, Format::Json)
        );
        let Ok(Mode::Drain(d)) = mode_of(&["--drain", "redis://:pw@h:1/2#jobs", "--lease", "1m"]) else {
            panic!()
        };
        assert!(matches!(&d.place, Place::Redis(u) if u.name.as_deref() == Some("jobs")));
        let Ok(Mode::List(l)) = mode_of(&["--list", "q", "-v"]) else { panic!() };
        assert_eq!(l.verbosity, Verbosity::Verbose);
    }

    #[test]
    fn a_queued_run_keeps_its_options_without_the_password() {
        let Ok(Mode::Run(cfg)) = mode_of(&["-n", "1", "--queue", "redis://:pw@h:1/0#jobs", "--", "true"])
        else {
            panic!()
        };
        let target = cfg.queue.unwrap();
        assert_eq!(target.options, os(&["-n", "1", "--queue", "redis://:***@h:1/0#jobs", "--"]));
    }

    #[test]
    fn each_usage_error_names_the_option_and_value() {
        for (args, wants) in [
            (&["--wait", "5x", "true"][..], &["'5x'", "--wait"][..]),
            (&["--retry-on-stderr", "a(", "true"], &["'a('", "--retry-on-stderr", "column"]),
            (&["--until", ".a ==", "true"], &["--until"]),
            (&["--max-age", "1d", "true"], &["--max-age", "--queue or --drain"]),
            (&["--queue-env", "A=1", "--queue", "q", "true"], &["--queue-env", "variable names"]),
            (&["--queue-env", "A", "--queue", "q", "true"], &["--queue-env", "directory queue"]),
            (&["--queue", "redis://h", "true"], &["--queue", "#"]),
            (&["--queue", "http://h", "true"], &["--queue", "redis://"]),
            (&["--drain", "q", "--lease", "1s"], &["--lease", "Redis"]),
            (&["--drain", "redis://h#q", "--lease", "10ms"], &["--lease", "100ms"]),
            (&["--drain", "q", "-n", "3"], &["'--retries' cannot be used with --drain"]),
            (&["--drain", "q", "true"], &["--drain takes no COMMAND"]),
            (&["--list", "q", "--max-time", "1s"], &["--list takes only"]),
            (&["--rate", "5/1s", "true"], &["--rate needs --key"]),
            (&["--circuit-cooldown", "1m", "--key", "k", "true"], &["--circuit-break"]),
            (&["--key", "a/b", "true"], &["'a/b'", "--key"]),
            (&["", "x"], &["COMMAND", "empty"]),
            (&[][..], &["missing COMMAND"]),
            (&["--no-such-option", "true"], &["--no-such-option"]),
        ] {
            let message = error_of(args);
            for want in wants {
                assert!(message.contains(want), "{args:?}: {message}");
            }
            assert!(!message.contains('\n'), "{args:?}: {message}");
        }
    }

    #[test]
    fn a_drained_job_gets_the_drains_options() {
        let Ok(Mode::Drain(d)) =
            mode_of(&["--drain", "q", "--stdout", "final", "--state-store", "file:/s", "-v"])
        else {
            panic!()
        };
        let saved = os(&[
            "-n",
            "5",
            "--max-time",
            "1h",
            "--key",
            "k",
            "--rate",
            "1/s",
            "--state-dir",
            "st",
            "--seed",
            "7",
        ]);
        let cfg =
            for_job(&saved, &os(&["true"]), &d, Some(Duration::from_secs(9)), Path::new("/job"), 2).unwrap();
        assert_eq!((cfg.attempts, cfg.max_time), (None, Some(Duration::from_secs(9))));
        assert_eq!(cfg.stdout, Stdout::Captured { tee: false });
        assert_eq!(cfg.verbosity, Verbosity::Verbose);
        assert_eq!(cfg.state_dir.as_deref(), Some(Path::new("/job/st")));
        assert!(matches!(&cfg.shared.as_ref().unwrap().store, StoreUrl::File(p) if p == Path::new("/s")));
        assert_ne!(cfg.seed, Some(7), "a seeded job draws anew at each step");
        let bad = for_job(&os(&["--wait", "x"]), &os(&["true"]), &d, None, Path::new("/"), 0).unwrap_err();
        assert!(bad.contains("--wait"), "{bad}");
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
}
