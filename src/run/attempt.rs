//! One attempt: spawn the command with its pipes, wait for it (the io
//! modules do the work), then judge it — validation (`--until`,
//! `--until-match`), the stream rules, `--retry-if` (in the predicate
//! helper, retry re-executed) and [`classify`]. Also `--on-retry`.

use std::ffi::OsString;
use std::fs::File;
use std::io::Seek as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use super::{PREDICATE_TIMEOUT, Run, UNTIL_LIMIT};
use crate::capture::{Scanner, Spool, Tail};
use crate::child::{Program, SpawnError};
use crate::classify::{self, Facts, Verdict};
use crate::config::Stdout;
use crate::error::Error;
use crate::exec::{self, Finished, Input, Io, Limits, Output, Sink};
use crate::hook;
use crate::predicate::{self, Mode, Predicate};
use crate::status::Status;
use crate::sys::{self, Exit};

/// One finished, judged attempt.
pub(super) struct Attempt {
    pub status: Status,
    /// How the process ended; `None` when it could not be started.
    pub finished: Option<Finished>,
    pub started: Instant,
    pub ended: Instant,
    /// What the rules read: validation and the stream rules' matches.
    pub facts: Facts,
    pub verdict: Verdict,
    /// A failure's `--wait-from` hint: the wait it names, or the text that
    /// could not be read as one.
    pub hint: Option<Result<Duration, String>>,
}

impl Attempt {
    pub fn duration(&self) -> Duration {
        self.ended.saturating_duration_since(self.started)
    }

    /// Its exit code, or the signal that killed it (neither for a spawn
    /// failure).
    pub fn exit_parts(&self) -> (Option<i32>, Option<i32>) {
        exit_parts(self.finished)
    }
}

/// A process's end before judging.
struct Ran {
    status: Status,
    finished: Option<Finished>,
    started: Instant,
    ended: Instant,
}

impl Run<'_> {
    /// Runs attempt `n` (after one that ended with `last`) and judges it.
    /// Its `--concurrency` slot is given back as soon as it ends.
    pub(super) fn attempt(&mut self, n: u32, last: Option<Status>) -> Result<Attempt, Error> {
        let ran = self.spawn(n, last);
        if let Some(c) = &mut self.coord {
            c.release();
        }
        let ran = ran?;
        sys::reap_orphans(&[]);
        let mut facts = self.facts(&ran);
        if self.cfg.rules.is_success(ran.status) {
            facts.validation = self.validate(n)?;
        }
        if classify::retry_if_needed(&facts, &self.cfg.rules) {
            facts.retry_if = Some(self.retry_if(n, &ran, &facts)?);
        }
        if let Status::Stopped(sig) = ran.status {
            self.report.error(format!(
                "attempt {n} stopped by {}: it reads the terminal; run it with --foreground",
                crate::parse::signal_name(sig)
            ));
        }
        let verdict = classify::classify(&facts, &self.cfg.rules);
        let hint = match verdict {
            Verdict::Success => None,
            Verdict::Retry(_) | Verdict::Stop(_) => self.hint(),
        };
        Ok(Attempt {
            status: ran.status,
            finished: ran.finished,
            started: ran.started,
            ended: ran.ended,
            facts,
            verdict,
            hint,
        })
    }

    /// The `--wait-from` hint of the attempt that just ended: the last
    /// matching line of stderr, else of stdout.
    fn hint(&self) -> Option<Result<Duration, String>> {
        let text =
            [&self.stderr_scanner, &self.stdout_scanner].into_iter().flatten().find_map(|s| s.hint())?;
        let text = String::from_utf8_lossy(text);
        Some(crate::parse::hint(&text, std::time::SystemTime::now()).ok_or_else(|| text.into_owned()))
    }

    /// Was the attempt killed because the run reached `--max-time`?
    pub(super) fn killed_at_deadline(&self, attempt: &Attempt) -> bool {
        attempt.status == Status::TimedOut && self.deadline.is_some_and(|d| attempt.ended >= d)
    }

    /// What went wrong with an attempt, for its report; empty on success.
    pub(super) fn failure(&self, attempt: &Attempt) -> String {
        match attempt.status {
            status if self.cfg.rules.is_success(status) => attempt.facts.validation.join("; "),
            _ if self.killed_at_deadline(attempt) => "killed at --max-time".to_string(),
            Status::TimedOut => match self.cfg.timeout {
                Some(t) => format!("timed out after {}", crate::parse::human(t)),
                None => "timed out".to_string(),
            },
            other => other.describe(),
        }
    }

    fn spawn(&mut self, n: u32, last: Option<Status>) -> Result<Ran, Error> {
        let cfg = self.cfg;
        self.report.attempt_start(n, cfg.attempts);
        let env = self.env(n, last);
        let io_err = |e| Error::io("cannot reset the capture file", e);
        if let Some(s) = &mut self.stdout_spool {
            s.clear().map_err(io_err)?;
        }
        for s in [&mut self.stdout_scanner, &mut self.stderr_scanner].into_iter().flatten() {
            s.clear();
        }
        for t in [&mut self.stdout_tail, &mut self.stderr_tail].into_iter().flatten() {
            t.clear();
        }
        let now = Instant::now();
        let timeout = cfg.timeout.and_then(|t| now.checked_add(t));
        let limits = Limits {
            deadline: [timeout, self.deadline].into_iter().flatten().min(),
            kill_signal: cfg.kill_signal,
            kill_after: cfg.kill_after,
        };
        if let Some(f) = &mut self.stdin_file {
            f.rewind().map_err(|e| Error::io("cannot rewind the recorded stdin", e))?;
        }
        let stdin = match (&mut self.replay, &self.stdin_file) {
            (_, Some(f)) => Input::Fd(f.as_raw_fd()),
            (Some(r), None) => Input::Replay(r),
            (None, None) => Input::Inherit,
        };
        let stdout = match cfg.stdout {
            Stdout::Live => Output::Inherit,
            Stdout::Captured { tee } => Output::Piped(Sink {
                forward: tee.then_some(libc::STDOUT_FILENO),
                spool: self.stdout_spool.as_mut(),
                scanner: self.stdout_scanner.as_mut(),
                tail: self.stdout_tail.as_mut(),
            }),
        };
        let stderr = if cfg.pipes_stderr() {
            Output::Piped(Sink {
                forward: Some(libc::STDERR_FILENO),
                spool: None,
                scanner: self.stderr_scanner.as_mut(),
                tail: self.stderr_tail.as_mut(),
            })
        } else {
            Output::Inherit
        };
        let io = Io { stdin, stdout, stderr };
        let result =
            exec::run(&self.program, &env, !cfg.foreground, io, &limits, self.signals, &mut self.buf);
        let ended = Instant::now();
        match result {
            Ok(fin) => {
                Ok(Ran { status: fin.status(), finished: Some(fin), started: fin.started, ended: fin.ended })
            }
            Err(SpawnError::NotFound(e)) => {
                // ENOENT for a file that exists: its `#!` interpreter is missing.
                let message = match self.program.found().and_then(|p| interpreter(&p)) {
                    Some(interp) => format!(
                        "cannot run '{}': {interp}: bad interpreter: No such file or directory",
                        self.program.name
                    ),
                    None => format!("cannot run '{}': command not found", self.program.name),
                };
                self.report.error(message);
                drop(e);
                Ok(Ran { status: Status::NotFound, finished: None, started: now, ended })
            }
            Err(SpawnError::CannotExecute(e)) => {
                self.report.error(format!(
                    "cannot execute '{}': {}",
                    self.program.name,
                    crate::parse::os_error(&e)
                ));
                Ok(Ran { status: Status::CannotExecute, finished: None, started: now, ended })
            }
            Err(SpawnError::Internal(e)) => Err(Error::io("cannot start the command", e)),
        }
    }

    fn facts(&self, attempt: &Ran) -> Facts {
        let first = |rules: &[crate::config::Pattern], scanner: &Option<Scanner>, offset: usize| {
            rules
                .iter()
                .enumerate()
                .find(|(i, _)| matched(scanner, offset + i))
                .map(|(_, p)| p.source.clone())
        };
        let (out, err) = (&self.cfg.stdout_rules, &self.cfg.stderr_rules);
        Facts {
            status: Some(attempt.status),
            validation: Vec::new(),
            stdout_retry: first(&out.retry, &self.stdout_scanner, 0),
            stdout_stop: first(&out.stop, &self.stdout_scanner, out.retry.len()),
            stderr_retry: first(&err.retry, &self.stderr_scanner, 0),
            stderr_stop: first(&err.stop, &self.stderr_scanner, err.retry.len()),
            retry_if: None,
        }
    }

    /// `--until-match` and `--until` on an attempt that exited 0.
    fn validate(&mut self, n: u32) -> Result<Vec<String>, Error> {
        let cfg = self.cfg;
        let mut why = Vec::new();
        let offset = cfg.stdout_rules.retry.len() + cfg.stdout_rules.stop.len();
        for (i, p) in cfg.until_match.iter().enumerate() {
            if !matched(&self.stdout_scanner, offset + i) {
                why.push(format!("--until-match '{}' matched no line", p.source));
            }
        }
        if cfg.until.is_empty() {
            return Ok(why);
        }
        let judged = match &self.stdout_spool {
            Some(spool) if spool.len() > UNTIL_LIMIT => {
                vec![
                    Some(format!("stdout is larger than {} MiB, not parsed", UNTIL_LIMIT >> 20));
                    cfg.until.len()
                ]
            }
            Some(spool) => {
                let input = memfd_with(Mode::Until, &cfg.until, n, self.elapsed(), |fd| spool.write_to(fd))?;
                self.evaluate(&cfg.until, input)?
            }
            None => vec![Some("stdout was not captured".to_string()); cfg.until.len()],
        };
        for (p, j) in cfg.until.iter().zip(judged) {
            if let Some(reason) = j {
                why.push(format!("--until '{}': {reason}", p.source()));
            }
        }
        Ok(why)
    }

    /// `--retry-if` on the attempt's context object; `Ok` if one held.
    fn retry_if(&mut self, n: u32, attempt: &Ran, facts: &Facts) -> Result<Result<(), String>, Error> {
        let cfg = self.cfg;
        let (exit_code, signal) = exit_parts(attempt.finished);
        let text = |t: &Option<Tail>| t.as_ref().map(|t| String::from_utf8_lossy(&t.bytes()).into_owned());
        let context = serde_json::json!({
            "attempt": n,
            "status": attempt.status.code(),
            "exit_code": exit_code,
            "signal": signal,
            "timed_out": attempt.status == Status::TimedOut,
            "elapsed": self.elapsed().as_secs_f64(),
            "duration": attempt.ended.saturating_duration_since(attempt.started).as_secs_f64(),
            "stdout": text(&self.stdout_tail),
            "stderr": text(&self.stderr_tail),
            "validation": facts.validation,
        });
        let bytes = serde_json::to_vec(&context).unwrap_or_default();
        let input =
            memfd_with(Mode::RetryIf, &cfg.retry_if, n, self.elapsed(), |fd| sys::write_all(fd, &bytes))?;
        let judged = self.evaluate(&cfg.retry_if, input)?;
        let mut reasons = Vec::new();
        for (p, j) in cfg.retry_if.iter().zip(judged) {
            match j {
                None => return Ok(Ok(())),
                Some(reason) => reasons.push(format!("'{}': {reason}", p.source())),
            }
        }
        Ok(Err(reasons.join("; ")))
    }

    /// Runs the predicate helper (retry re-executed) on `input`, bounded by
    /// `--timeout` (else 10 s), so a runaway expression can neither hang
    /// nor crash retry.
    fn evaluate(&mut self, preds: &[Predicate], input: OwnedFd) -> Result<Vec<Option<String>>, Error> {
        let helper =
            Program::new(&[OsString::from("/proc/self/exe"), OsString::from(predicate::HELPER_ARG)], None)
                .map_err(|e| Error::io("cannot prepare the predicate helper", e))?;
        let mut reply = Spool::new(None);
        let limit = self.cfg.timeout.unwrap_or(PREDICATE_TIMEOUT);
        let limits = Limits {
            deadline: Instant::now().checked_add(limit),
            kill_signal: libc::SIGKILL,
            kill_after: Duration::ZERO,
        };
        // The helper's stderr is read and dropped: the crash report of a
        // runaway expression is summed up in the validation reason instead.
        let io = Io {
            stdin: Input::Fd(input.as_raw_fd()),
            stdout: Output::Piped(Sink { spool: Some(&mut reply), ..Sink::default() }),
            stderr: Output::Piped(Sink::default()),
        };
        let fail = |why: String| Ok(vec![Some(why); preds.len()]);
        let fin = match exec::run(&helper, &self.env, true, io, &limits, self.signals, &mut self.buf) {
            Ok(fin) => fin,
            Err(SpawnError::NotFound(e) | SpawnError::CannotExecute(e) | SpawnError::Internal(e)) => {
                return fail(format!("cannot start the predicate helper: {e}"));
            }
        };
        if fin.timed_out {
            return fail(format!("evaluation did not finish within {}", crate::parse::human(limit)));
        }
        if let Exit::Signal(sig) = fin.exit {
            return fail(format!("evaluation crashed ({})", crate::parse::signal_name(sig)));
        }
        let bytes = reply.to_vec(u64::MAX).ok().flatten().unwrap_or_default();
        match predicate::parse_response(&bytes, preds.len()) {
            Ok(j) => Ok(j),
            Err(e) => fail(format!("predicate helper failed: {e}")),
        }
    }

    /// `--on-retry`: `sh -c CMD` (see [`hook`]), bounded by `--timeout`.
    /// Returns a signal that interrupted it.
    pub(super) fn on_retry(&mut self, n: u32, status: Status) -> Option<libc::c_int> {
        let cmd = self.cfg.on_retry.as_ref()?;
        let env = self.env(n + 1, Some(status));
        let kill = (self.cfg.kill_signal, self.cfg.kill_after);
        let ran = hook::run(cmd, &env, self.cfg.timeout, kill, self.signals, &mut self.buf);
        if let Some((code, why)) = ran.failed {
            self.report.on_retry_failed(n, code, why);
        }
        ran.interrupted
    }
}

fn exit_parts(finished: Option<Finished>) -> (Option<i32>, Option<i32>) {
    match finished.map(|f| f.exit) {
        Some(Exit::Code(c)) => (Some(c), None),
        Some(Exit::Signal(s)) => (None, Some(s)),
        // A spawn failure: no process exited.
        None => (None, None),
    }
}

/// A memfd holding the helper request: header line, then the input.
fn memfd_with(
    mode: Mode,
    preds: &[Predicate],
    attempt: u32,
    elapsed: Duration,
    fill: impl FnOnce(libc::c_int) -> std::io::Result<()>,
) -> Result<OwnedFd, Error> {
    let err = |e| Error::io("cannot prepare the predicate input", e);
    let fd = sys::memfd(c"retry-predicate").map_err(err)?;
    let header = predicate::request_header(preds, mode, attempt, elapsed.as_secs_f64());
    sys::write_all(fd.as_raw_fd(), &header).map_err(err)?;
    fill(fd.as_raw_fd()).map_err(err)?;
    let mut file = File::from(fd);
    file.rewind().map_err(err)?;
    Ok(OwnedFd::from(file))
}

/// The interpreter a `#!` line names (the first 256 bytes of `script`).
fn interpreter(script: &std::path::Path) -> Option<String> {
    use std::io::Read as _;
    let mut head = [0u8; 256];
    let n = File::open(script).and_then(|mut f| f.read(&mut head)).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let text = String::from_utf8_lossy(line);
    text.split_whitespace().next().map(str::to_string)
}

/// Did rule `i` of `scanner` (in the order its rules were given) match a line?
fn matched(scanner: &Option<Scanner>, i: usize) -> bool {
    scanner.as_ref().and_then(|s| s.matched().get(i).copied()).unwrap_or(false)
}
