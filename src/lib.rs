//! `retry`: run a command again until it works.
//!
//! ```text
//! argv → cli ─ clap error ─▶ 125
//!         └→ config ─ usage error ─▶ 125
//!              └→ run: exec (child + pipes + stdin) → predicate → classify
//!                   ↺ Retry: backoff.next() → sleep (signals, --max-time)
//!                   └→ Outcome → report (+ --summary); status → exit (re-raise 128+N)
//! ```
//!
//! Pure logic (`parse`, `backoff`, `classify`, `status`) has no I/O, clock
//! or global RNG. `unsafe` lives in `sys` (thin syscall wrappers), `child`
//! (the clone/exec path) and `signals` (the handler), each with SAFETY
//! notes. jaq is used only by `predicate`; clap types stop at `config`.
//!
//! `queue` is the durable queue (`--queue`, `--drain`, `--list`): a job
//! saves retry's option arguments, and a drain parses them back into a
//! `Config` and runs the attempt through `run::run_queued`, the same loop.
//! Its storage is a directory (`queue::dir`) or Redis (`queue::redis`, on
//! the state store's connection).

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, FromArgMatches as _};

pub mod backoff;
pub mod capture;
pub mod child;
pub mod classify;
pub mod cli;
pub mod config;
pub mod countdown;
pub mod error;
pub mod exec;
pub mod flush;
pub mod parse;
pub mod predicate;
pub mod queue;
pub mod report;
pub mod run;
pub mod running;
pub mod signals;
pub mod status;
pub mod stdin;
pub mod store;
pub mod summary;
pub mod sys;

use cli::{Cli, LogFormat};
use config::Config;
use error::Error;
use report::Reporter;

/// Memory cap of the predicate helper process (or half of RAM if less).
pub const PREDICATE_MEMORY: u64 = 4 << 30;

/// Exit status for retry's own failures.
pub const EXIT_USAGE: u8 = 125;

/// Entry point of the binary; `args` is argv, the program's name first.
pub fn main_entry(args: Vec<OsString>) -> ExitCode {
    if args.get(1).is_some_and(|a| a == predicate::HELPER_ARG) {
        // Parsing 64 MiB of JSON can take ~1.1 GiB; an expression that
        // builds an endless array must fail, not swap the machine.
        let half = sys::physical_memory() / 2;
        sys::limit_data(PREDICATE_MEMORY.min(if half == 0 { PREDICATE_MEMORY } else { half }));
        return predicate::helper_main();
    }
    sys::ensure_std_fds();
    let matches = match Cli::command().try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => return clap_error(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    if cli.drain.is_some() || cli.list.is_some() {
        return queue::main(cli, &matches);
    }
    let mut cfg = match Config::from_cli(cli) {
        Ok(cfg) => cfg,
        Err(e) => return usage_error(&e),
    };
    if cfg.dry_run {
        return dry_run(&cfg);
    }
    if let Err(e) = queue::prepare(&mut cfg, &args) {
        return usage_error(&e);
    }
    let recorder = cfg.summary.as_deref().map(|path| summary::Recorder::new(&cfg, path));
    let report = Reporter::new(cfg.log_format, cfg.verbosity).with_summary(recorder);
    let mut signals = match signals::Signals::install() {
        Ok(s) => s,
        Err(e) => {
            let e = Error::io("cannot install signal handlers", e);
            report.error(e.to_string());
            report.write_summary(Some(&e));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run::run(&cfg, &mut signals, &report) {
        Ok((outcome, resources)) => {
            let code = outcome.exit_code();
            // Clean up (state dir) before a re-raised signal ends us.
            drop(resources);
            report.write_summary(None);
            if let Some(sig) = outcome.reraise() {
                sys::die_by_signal(sig);
            }
            ExitCode::from(code)
        }
        Err(e @ Error::Store(_)) => {
            report.store_error(e.to_string());
            report.write_summary(Some(&e));
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            report.error(e.to_string());
            report.write_summary(Some(&e));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Help and version exit 0; every other clap error is one `retry: ` line
/// naming the option and value, a hint, and 125 (not clap's 2).
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        _ => {}
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
    let tip = lines.find_map(|l| l.strip_prefix("tip: "));
    let mut out = format!("retry: {first}\n");
    match tip {
        Some(tip) => out.push_str(&format!("retry: {tip}\n")),
        None => out.push_str("retry: try 'retry --help' for more information\n"),
    }
    eprint!("{out}");
    ExitCode::from(EXIT_USAGE)
}

fn usage_error(e: &Error) -> ExitCode {
    eprintln!("retry: {e}");
    if let Some(hint) = e.hint() {
        eprintln!("retry: {hint}");
    }
    ExitCode::from(EXIT_USAGE)
}

/// `--dry-run`: the planned sleeps on stdout, nothing run.
fn dry_run(cfg: &Config) -> ExitCode {
    use std::io::Write as _;
    let (backoff_rng, mut splay_rng) = run::rngs(cfg.seed);
    let mut rows: Vec<(u32, Duration)> = Vec::new();
    if let Some(max) = cfg.splay {
        rows.push((1, run::splay_delay(max, &mut splay_rng)));
    }
    let retries = cfg.attempts.map_or(20, |t| t.saturating_sub(1));
    let mut schedule = backoff::Schedule::new(cfg.backoff, backoff_rng);
    for k in 1..=retries {
        rows.push((k + 1, schedule.next().unwrap_or(Duration::MAX)));
    }
    let mut out = String::new();
    let mut at = Duration::ZERO;
    if cfg.log_format != LogFormat::Json {
        out.push_str("attempt  sleep before  at\n");
    }
    for (attempt, delay) in rows {
        at = at.saturating_add(delay);
        if cfg.max_time.is_some_and(|m| at >= m) {
            break;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if cfg.log_format == LogFormat::Json {
            out.push_str(&format!(
                "{{\"attempt\":{attempt},\"delay_ms\":{},\"at_ms\":{}}}\n",
                ms(delay),
                ms(at)
            ));
        } else {
            out.push_str(&format!("{attempt:>7}  {:>12}  {}\n", parse::human(delay), parse::human(at)));
        }
    }
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(141),
        Err(_) => ExitCode::from(EXIT_USAGE),
    }
}

/// The binary's entry point (`main.rs` is `no_main`): what retry needs of
/// std's runtime start-up — SIGPIPE ignored, so a closed stdout is an EPIPE
/// retry handles (exit 141), and stdout flushed at the end — around
/// [`main_entry`]. `args` is argv as the C runtime passed it to `main`
/// (std fills `std::env::args_os` only on glibc when its own start-up is
/// skipped; musl leaves it empty). Returns the exit status.
pub fn c_main(args: Vec<OsString>) -> u8 {
    sys::ignore_sigpipe();
    let code = main_entry(args);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // `ExitCode` has no stable accessor; it is one of 256 values.
    (0..=u8::MAX).find(|&c| ExitCode::from(c) == code).unwrap_or(EXIT_USAGE)
}
