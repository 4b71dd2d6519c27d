//! `retry`: run a command again until it works.
//!
//! Data flows one way (as in fd and ripgrep):
//!
//! ```text
//! main → config (cli: clap) ──► Mode::Run(Config) ──► app ──► run (the loop) ──► Outcome
//!            │  usage error → 125      │                │        └─ report, --summary, exit status
//!            │                         │                └─► queue::enqueue (a --queue run that gave up)
//!            └─► Mode::Drain / List ───┴──► queue ──(one attempt per job)──► run
//! ```
//!
//! - `cli` is the clap definition only; `config` turns argv into a typed,
//!   validated [`config::Mode`] (every regex and jq expression compiled):
//!   the one place for usage errors. Nothing below `config` knows clap.
//! - `app` does what a mode asks: a run is [`run::run`], then what follows
//!   it (queue the job when it gave up, write the kept stdout, report the
//!   end, write `--summary`, pick the exit status).
//! - `run` is the loop (attempt → judge → decide → sleep). It starts from
//!   a `run::Start` and returns a `run::Outcome` with its attempt records;
//!   it knows nothing of queues. The decision after an attempt is the pure
//!   `run::decide`; the store policy is `run::coord`.
//! - `queue` is a client of `run`: `--queue`, `--drain`, `--list`, on a
//!   directory (`queue::dir`) or Redis (`queue::redis`).
//! - Policy, pure (no I/O, clock or global RNG; unit-tested): `parse`,
//!   `backoff`, `classify`, `status` (every exit status), `record` (the
//!   one attempt record every report serialises).
//! - I/O, thin and policy-free, holding everything kernel-specific:
//!   `exec` (one process to its end), `child` (clone/exec), `capture`
//!   (with `lines`: stream rules over many lines at once, and over lines
//!   of any length), `stdin`, `flush`, `signals`, `sys`, `tmp`, `environ`,
//!   `countdown`, `trusted` (directories reached by descriptor), `outfile`
//!   (report files written atomically or in place), `running` (the
//!   attempt a lost lease must end), `hook` (`--on-retry`, `--on-give-up`,
//!   `--on-dead`). `unsafe` lives only in `sys`, `child` and `main` (argv),
//!   each block with a SAFETY note.
//! - `predicate` (jaq behind a small API), `store` (shared state: file,
//!   Redis), `report` (text, JSON, GitHub, GitLab; each attempt's fold,
//!   `report::summary`, the GitHub step files, `report::metrics`); `error`
//!   is retry's own errors (status 125).

use std::ffi::OsString;

pub mod app;
pub mod backoff;
pub mod capture;
pub mod child;
pub mod classify;
pub mod cli;
pub mod config;
pub mod countdown;
pub mod environ;
pub mod error;
pub mod exec;
pub mod flush;
pub mod hook;
pub mod lines;
pub mod outfile;
pub mod parse;
pub mod predicate;
pub mod queue;
pub mod record;
pub mod report;
pub mod run;
pub mod running;
pub mod signals;
pub mod status;
pub mod stdin;
pub mod store;
pub mod sys;
pub mod tmp;
pub mod trusted;

use config::Mode;
use error::Error;

/// Memory cap of the predicate helper process (or half of RAM if less).
pub const PREDICATE_MEMORY: u64 = 4 << 30;

/// Entry point of the binary; `args` is argv, the program's name first.
/// Returns retry's exit status.
pub fn main_entry(args: Vec<OsString>) -> u8 {
    if args.get(1).is_some_and(|a| a == predicate::HELPER_ARG) {
        // Parsing 64 MiB of JSON can take ~1.1 GiB; an expression that
        // builds an endless array must fail, not swap the machine.
        let half = sys::physical_memory() / 2;
        sys::limit_data(PREDICATE_MEMORY.min(if half == 0 { PREDICATE_MEMORY } else { half }));
        return predicate::helper_main();
    }
    sys::ensure_std_fds();
    match config::mode(&args) {
        Ok(Mode::Help(e)) => {
            let _ = e.print();
            status::OK
        }
        Ok(Mode::Run(cfg)) => app::run(&cfg),
        Ok(Mode::DryRun(cfg)) => app::dry_run(&cfg),
        Ok(Mode::Drain(cfg)) => app::drain(&cfg),
        Ok(Mode::List(cfg)) => queue::list(&cfg, &report::Reporter::new(cfg.format, cfg.verbosity)),
        Err(e) => usage_error(&e),
    }
}

/// A usage error: one `retry: ` line naming the option and the value, a
/// hint, and 125 — in text whatever `--log-format` says.
fn usage_error(e: &Error) -> u8 {
    eprintln!("retry: {e}");
    if let Some(hint) = e.hint() {
        eprintln!("retry: {hint}");
    }
    e.status()
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
    code
}
