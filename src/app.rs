//! What each [`Mode`](crate::config::Mode) does once the command line is
//! understood: a run (the loop, then what happens after it: queue the job
//! when it gave up, write the kept stdout, say how it ended, write
//! `--summary`, pick the exit status), `--dry-run`, and a drain's setup.
//! Every function returns retry's exit status.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, DrainConfig};
use crate::error::Error;
use crate::report::drain_summary::DrainRecorder;
use crate::report::summary::Recorder;
use crate::report::{self, Format, Reporter};
use crate::run::{self, Start};
use crate::signals::Signals;
use crate::status::{self, End, Ending};
use crate::{environ, flush, parse, queue, sys};

/// A run: attempts until success or the end, then what follows.
pub fn run(cfg: &Config) -> u8 {
    let recorder =
        cfg.summary.as_deref().map(|p| Recorder::new(p, cfg.command_lossy(), cfg.summary_options(p)));
    let report = Reporter::new(cfg.format, cfg.verbosity).with_summary(recorder).with_ends(ends(cfg));
    let result = Signals::install()
        .map_err(|e| Error::io("cannot install signal handlers", e))
        .and_then(|mut signals| run_to_end(cfg, &mut signals, &report));
    match result {
        Ok((ending, state_dir)) => {
            // Clean up (state dir) before a re-raised signal ends us.
            drop(state_dir);
            report.finish(None);
            if let Some(sig) = ending.reraise() {
                sys::die_by_signal(sig);
            }
            ending.exit_status(cfg.flaky_exit)
        }
        Err(e) => {
            queue::failed(&report, &e);
            report.finish(Some(&e));
            e.status()
        }
    }
}

/// What the end of a run writes besides `--summary`, from its options.
fn ends(cfg: &Config) -> report::Ends {
    report::Ends {
        command: cfg.command_lossy(),
        total: cfg.attempts,
        // The last possible attempt's GitLab section starts expanded; with
        // --forever none is known, nor with --reset-on-progress (an attempt
        // that made progress does not count).
        expand: cfg.attempts.filter(|_| !cfg.reset_on_progress),
        flaky_exit: cfg.flaky_exit,
        github: (cfg.format == Format::Github).then(report::github::Files::from_env),
        metrics: cfg.metrics.clone().map(|path| (path, cfg.metrics_key())),
    }
}

/// The run's own state dir, removed on drop: one `rmdir` for the usual
/// empty dir (std's `remove_dir_all` costs nine system calls even then), the
/// whole tree only when the command left something in it.
struct StateDir(Option<PathBuf>);

impl StateDir {
    /// Leaves the directory in place (a queued job keeps it).
    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            if std::fs::remove_dir(dir).is_err() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// The run and what follows it; the state dir to remove at the end.
fn run_to_end(cfg: &Config, signals: &mut Signals, report: &Reporter) -> Result<(Ending, StateDir), Error> {
    let begin = Instant::now();
    if let Some(target) = &cfg.queue {
        queue::prepare(target, cfg.stdin_replay)?;
    }
    let id = cfg.queue.as_ref().map(|_| queue::new_id(SystemTime::now()));
    // RETRY_STATE_DIR only when asked for (SPEC: a run writes nothing to
    // disk otherwise). A `--temp-state` run queued in a directory keeps its
    // state dir there (DIR/state/<id>), so the job's later attempts find
    // what the first ones left.
    let (state_dir, mut kept) = match (&cfg.state_dir, cfg.temp_state) {
        (Some(dir), _) => {
            crate::trusted::state_dir(dir)?;
            (Some(dir.clone()), StateDir(None))
        }
        (None, true) => {
            let in_queue = match (&cfg.queue, &id) {
                (Some(target), Some(id)) => queue::state_dir(target, id)?,
                _ => None,
            };
            let path = match in_queue {
                Some(path) => path,
                None => crate::tmp::state_dir("cannot create the --temp-state directory")?.keep(),
            };
            (Some(path.clone()), StateDir(Some(path)))
        }
        (None, false) => (None, StateDir(None)),
    };
    // A Redis queue that cannot be reached now would lose the job later.
    if let Some(target) = &cfg.queue {
        queue::check(target, report)?;
    }
    let mut outcome = run::run(cfg, Start::fresh(state_dir.clone()), signals, report)?;
    if let (Some(target), Some(id)) = (&cfg.queue, &id) {
        if queue::gives_up(&outcome.ending) {
            match queue::enqueue(target, id, cfg, &mut outcome, &environ::base(), signals)? {
                Ok(queued) => {
                    report.queued(id, &queued.file, &outcome.ending, begin.elapsed(), queued.due);
                    outcome.ending.end = End::Queued;
                    // The job's state dir lives on in a directory queue.
                    if queue::keeps_state_dir(target) {
                        kept.keep();
                    }
                }
                // A signal came while the rest of stdin was read: not queued.
                Err(signal) => outcome.ending.end = End::Interrupted { signal, during_sleep: true },
            }
        }
    }
    // Captured stdout: the accepted attempt's, or the last one's when retry
    // gave up; nothing when interrupted or queued (SPEC Edge rules, "A
    // closed stdout").
    if let Some(spool) = outcome.stdout.take() {
        let silent = matches!(
            outcome.ending.end,
            End::Interrupted { .. } | End::ClosedStdout | End::Queued | End::Refused
        );
        if !silent && outcome.ending.attempts > 0 {
            if let Some(signal) = flush::kept_stdout(spool, signals)? {
                outcome.ending.end = End::Interrupted { signal, during_sleep: true };
            }
        }
    }
    report.done(&outcome.ending, begin.elapsed(), cfg.attempts, outcome.no_start.as_deref());
    on_give_up(cfg, &outcome.ending, state_dir.as_deref(), signals, report);
    Ok((outcome.ending, kept))
}

/// `--on-give-up`: once, when the run ended without success (exhausted,
/// stopped, deadline; not interrupted, refused or queued), with the last
/// attempt's `RETRY_*` variables and `RETRY_OUTCOME`, bounded by
/// `--timeout` else 60 s. Its failure is logged; the status stays.
fn on_give_up(
    cfg: &Config,
    ending: &Ending,
    state_dir: Option<&std::path::Path>,
    signals: &mut Signals,
    report: &Reporter,
) {
    let Some(cmd) = &cfg.on_give_up else { return };
    match ending.end {
        End::Exhausted | End::Stopped | End::Deadline => {}
        End::Success | End::Interrupted { .. } | End::ClosedStdout | End::Queued | End::Refused => return,
    }
    let env = environ::with_retry_vars(
        &environ::base(),
        (ending.attempts > 0).then_some(ending.attempts),
        cfg.attempts,
        ending.last.map(|s| s.code()),
        [("RETRY_OUTCOME", ending.end.word())],
        state_dir,
    );
    let limit = Some(cfg.timeout.unwrap_or(crate::hook::DEFAULT_LIMIT));
    let ran = crate::hook::run(cmd, &env, limit, (cfg.kill_signal, cfg.kill_after), signals, &mut Vec::new());
    if let Some((status, why)) = ran.failed {
        report.on_give_up_failed(status, why);
    }
}

/// `--drain`: the drain's signals and reporter, then the queue's work.
pub fn drain(cfg: &DrainConfig) -> u8 {
    let recorder = cfg.summary.as_deref().map(|p| DrainRecorder::new(p, cfg.place.display()));
    let report = Reporter::new(cfg.format, cfg.verbosity).with_drain_summary(recorder);
    match Signals::install() {
        Ok(mut signals) => queue::drain_main(cfg, &mut signals, &report),
        Err(e) => {
            let e = Error::io("cannot install signal handlers", e);
            let code = queue::failed(&report, &e);
            report.finish_drain(code, None, Some(&e));
            code
        }
    }
}

/// `--dry-run`: the planned sleeps on stdout, nothing run. It walks the
/// same [`run::decide::Plan`] a run takes, so a `--seed` gives the same
/// sleeps in both; with `--rotate` each row shows the attempt's values.
pub fn dry_run(cfg: &Config) -> u8 {
    if let Some(warning) = cfg.jitter_warning() {
        Reporter::new(cfg.format, cfg.verbosity).warning(warning);
    }
    let (backoff_rng, mut splay_rng) = run::rngs(cfg.seed);
    let mut rows: Vec<(u32, Duration)> = Vec::new();
    match cfg.splay {
        Some(max) => rows.push((1, run::splay_delay(max, &mut splay_rng))),
        // With --rotate, attempt 1's values are worth a row too.
        None if !cfg.rotate.is_empty() => rows.push((1, Duration::ZERO)),
        None => {}
    }
    let retries = cfg.attempts.map_or(20, |t| t.saturating_sub(1));
    let schedule = crate::backoff::Schedule::new(cfg.backoff.clone(), backoff_rng);
    let mut plan = run::decide::Plan::new(schedule, cfg.cycle());
    for k in 1..=retries {
        rows.push((k + 1, plan.sleep_after(k, false)));
    }
    let mut out = String::new();
    let mut at = Duration::ZERO;
    if cfg.format != Format::Json {
        out.push_str("attempt  sleep before  at");
        for r in &cfg.rotate {
            out.push_str(&format!("  {}", r.name));
        }
        out.push('\n');
    }
    for (attempt, delay) in rows {
        at = at.saturating_add(delay);
        if cfg.max_time.is_some_and(|m| at >= m) {
            break;
        }
        let ms = crate::record::ms;
        if cfg.format == Format::Json {
            out.push_str(&format!("{{\"attempt\":{attempt},\"delay_ms\":{},\"at_ms\":{}", ms(delay), ms(at)));
            if !cfg.rotate.is_empty() {
                let env: serde_json::Map<String, serde_json::Value> =
                    cfg.rotation_of(attempt).map(|(n, v)| (n.to_string(), v.into())).collect();
                out.push_str(&format!(",\"env\":{}", serde_json::Value::Object(env)));
            }
            out.push_str("}\n");
        } else {
            out.push_str(&format!("{attempt:>7}  {:>12}  {}", parse::human(delay), parse::human(at)));
            for (_, value) in cfg.rotation_of(attempt) {
                out.push_str(&format!("  {value}"));
            }
            out.push('\n');
        }
    }
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Ok(()) => status::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => status::CLOSED_STDOUT,
        Err(e) => {
            Reporter::new(cfg.format, cfg.verbosity)
                .error(format!("cannot write the schedule to stdout: {}", parse::os_error(&e)));
            status::USAGE
        }
    }
}
