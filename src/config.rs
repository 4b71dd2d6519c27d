//! `Cli` → `Config`: typed, validated, with every regex and jq expression
//! compiled, so that a typo fails with 125 before any attempt runs. After
//! this module nothing is a usage error.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use regex::bytes::Regex;

use crate::backoff::{Algo, Backoff};
use crate::classify::Rules;
use crate::cli::{self, Cli, LogFormat, StdinMode, StdoutMode};
use crate::error::Error;
use crate::parse::CodeSet;
use crate::predicate::Predicate;

/// How much retry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
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
    pub splay: Option<Duration>,
    pub seed: Option<u64>,
    pub dry_run: bool,
    pub on_retry: Option<OsString>,
    pub rules: Rules,
    pub stdout_rules: StreamRules,
    pub stderr_rules: StreamRules,
    pub until: Vec<Predicate>,
    pub until_match: Vec<Pattern>,
    pub retry_if: Vec<Predicate>,
    pub stdout: Stdout,
    pub stdin_replay: bool,
    pub foreground: bool,
    pub state_dir: Option<PathBuf>,
    pub verbosity: Verbosity,
    pub log_format: LogFormat,
    /// `--summary FILE`; its directory exists (checked here).
    pub summary: Option<PathBuf>,
    /// `--queue DIR`: where the job goes when the run gives up.
    pub queue: Option<crate::queue::Target>,
    /// `--max-age`: how long a queued job lives (default in `queue`).
    pub max_age: Option<Duration>,
    /// `--key` and the options that share state across runs.
    pub shared: Option<crate::store::Shared>,
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, Error> {
        let patterns = |option: &str, sources: Vec<String>| -> Result<Vec<Pattern>, Error> {
            sources
                .into_iter()
                .map(|source| match Regex::new(&source) {
                    Ok(regex) => Ok(Pattern { source, regex }),
                    Err(e) => Err(Error::usage(option, source, regex_error(&e))),
                })
                .collect()
        };
        let predicates = |option: &str, sources: Vec<String>| -> Result<Vec<Predicate>, Error> {
            sources
                .into_iter()
                .map(|source| {
                    Predicate::compile(&source).map_err(|e| Error::usage(option, &source, e.to_string()))
                })
                .collect()
        };
        let stdout_rules = StreamRules {
            retry: patterns("--retry-on-stdout", cli.retry_on_stdout)?,
            stop: patterns("--stop-on-stdout", cli.stop_on_stdout)?,
        };
        let stderr_rules = StreamRules {
            retry: patterns("--retry-on-stderr", cli.retry_on_stderr)?,
            stop: patterns("--stop-on-stderr", cli.stop_on_stderr)?,
        };
        let until_match = patterns("--until-match", cli.until_match)?;
        let until = predicates("--until", cli.until)?;
        let retry_if = predicates("--retry-if", cli.retry_if)?;
        let union = |sets: Vec<CodeSet>| sets.into_iter().reduce(CodeSet::union);
        let rules = Rules {
            retry_on_exit: union(cli.retry_on_exit),
            stop_on_exit: union(cli.stop_on_exit),
            retry_on_stdout: !stdout_rules.retry.is_empty(),
            retry_on_stderr: !stderr_rules.retry.is_empty(),
            retry_if: !retry_if.is_empty(),
        };
        let inspect_stdout = !until.is_empty() || !until_match.is_empty() || !stdout_rules.is_empty();
        let stdout = match (cli.stdout, inspect_stdout) {
            (Some(StdoutMode::Final), _) => Stdout::Captured { tee: false },
            (Some(StdoutMode::Live), true) => Stdout::Captured { tee: true },
            (Some(StdoutMode::Live), false) | (None, false) => Stdout::Live,
            (None, true) => Stdout::Captured { tee: false },
        };
        if let Some(path) = &cli.summary {
            crate::summary::check_target(path)?;
        }
        if cli.command.first().is_some_and(|c| c.is_empty()) {
            return Err(Error::usage("COMMAND", "", "the command name is empty"));
        }
        let algo = match cli.algo.unwrap_or(cli::Algo::Exponential) {
            cli::Algo::Exponential => Algo::Exponential,
            cli::Algo::Linear => Algo::Linear,
            cli::Algo::Fibonacci => Algo::Fibonacci,
            cli::Algo::Constant => Algo::Constant,
            cli::Algo::Decorrelated => Algo::Decorrelated,
        };
        if let (Some(age), None, None) = (cli.max_age, &cli.queue, &cli.drain) {
            return Err(Error::usage(
                "--max-age",
                crate::parse::human(age),
                "it is the life of a queued job: give it with --queue or --drain",
            ));
        }
        let queue = crate::queue::target(cli.queue.as_deref(), cli.queue_env)?;
        let verbosity = match (cli.quiet, cli.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, true) => Verbosity::Verbose,
            (false, false) => Verbosity::Normal,
        };
        let shared = crate::store::Shared::from_options(crate::store::Options {
            key: cli.key,
            state_store: cli.state_store,
            circuit_break: cli.circuit_break,
            circuit_cooldown: cli.circuit_cooldown,
            rate: cli.rate,
            concurrency: cli.concurrency,
            store_optional: cli.store_optional,
            store_lease: cli.store_lease,
            tls_ca: cli.tls_ca,
            tls_cert: cli.tls_cert,
            tls_key: cli.tls_key,
        })?;
        Ok(Config {
            command: cli.command,
            attempts: if cli.forever { None } else { Some(cli.retries.unwrap_or(3).saturating_add(1)) },
            timeout: cli.timeout,
            kill_after: cli.kill_after.unwrap_or(Duration::from_secs(10)),
            kill_signal: cli.kill_signal.unwrap_or(libc::SIGTERM),
            max_time: cli.max_time,
            backoff: Backoff {
                algo,
                wait: cli.wait.unwrap_or(Duration::from_secs(1)),
                multiplier: cli.multiplier.unwrap_or(2.0),
                cap: cli.max_wait.unwrap_or(Duration::MAX),
                jitter: cli.jitter.unwrap_or(0.0),
            },
            reset_after: cli.reset_after,
            splay: cli.splay,
            seed: cli.seed,
            dry_run: cli.dry_run,
            on_retry: cli.on_retry,
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
            verbosity,
            log_format: cli.log_format.unwrap_or(LogFormat::Text),
            summary: cli.summary,
            queue,
            max_age: cli.max_age,
            shared,
        })
    }

    /// stderr is piped (and still streamed live) only when a rule reads it,
    /// so that otherwise the child keeps retry's terminal.
    pub fn pipes_stderr(&self) -> bool {
        !self.stderr_rules.is_empty() || !self.retry_if.is_empty()
    }

    /// `--jitter` given with `--algo decorrelated`, which ignores it.
    pub fn jitter_ignored(&self) -> bool {
        self.backoff.algo == Algo::Decorrelated && self.backoff.jitter > 0.0
    }
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

    #[test]
    fn regex_errors_are_one_line_with_a_column() {
        // Built at run time: clippy rejects invalid regex literals.
        let bad = |p: &str| Regex::new(p).unwrap_err();
        assert_eq!(regex_error(&bad("ab(c")), "unclosed group at column 3");
        assert!(!regex_error(&bad("a{2,1}")).contains('\n'));
    }
}
