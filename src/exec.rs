//! Runs one process to its end: spawn it, then a single `ppoll` loop over
//! its pidfd, its pipes, retry's signal pipe and stdin, with a timeout
//! computed from the nearest deadline — no threads, no busy polling, and
//! a timeout fires within the kernel's timer slack of its due time. On the
//! pid path (no pidfds, see [`crate::child`]) the signal pipe, which
//! SIGCHLD also wakes, says when to look whether the process exited.
//!
//! The process ends as SPEC "Processes and signals" and its Edge rules
//! say: at the deadline the group gets `--kill-signal` and SIGCONT, then
//! SIGKILL after `--kill-after`; when a timed-out leader exits, the rest
//! of its group is SIGKILLed before the leader is reaped; after any exit
//! the pipes are read until EOF or `GRACE`, then closed. Signals sent to
//! retry are forwarded to the group, then SIGCONT (a second SIGINT becomes
//! SIGKILL). A leader, or a member of its group re-parented to retry, that
//! is stopped by SIGTTIN or SIGTTOU (it wants the terminal, from a
//! background group) would never go on: the group gets SIGTERM and
//! SIGCONT, then SIGKILL after `--kill-after`, and [`Finished::stopped`]
//! says why. Orphans re-parented to retry are reaped as they exit.

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::capture::{Scanner, Spool, Tail};
use crate::child::{self, Child, Program, Spawn, SpawnError, Stdio};
use crate::signals::Signals;
use crate::stdin::Replay;
use crate::sys::{self, Exit, PIPE_SIZE};

/// How long pipes are read after the process exited (grandchildren may
/// hold them open).
pub const GRACE: Duration = Duration::from_secs(1);

/// Size of the read buffer shared by all pipes of a run.
pub const BUF: usize = 128 << 10;

/// Where the process's stdin comes from.
pub enum Input<'a> {
    Inherit,
    /// A descriptor of retry's (e.g. /dev/null, a memfd), duplicated.
    Fd(RawFd),
    /// `--stdin replay`: recorded bytes, then the rest of retry's stdin.
    Replay(&'a mut Replay),
}

/// Where one of the process's output streams goes.
pub enum Output<'a> {
    Inherit,
    /// A descriptor of retry's, duplicated (e.g. stdout of `--on-retry`
    /// onto retry's stderr).
    Fd(RawFd),
    /// A pipe retry reads: each chunk is forwarded, stored, scanned and
    /// tailed as the sink asks, as soon as it is read.
    Piped(Sink<'a>),
}

/// What happens to each chunk read from a piped stream.
#[derive(Default)]
pub struct Sink<'a> {
    /// Write it to this descriptor of retry's as it arrives (stderr
    /// passthrough, `--stdout live` tee).
    pub forward: Option<RawFd>,
    pub spool: Option<&'a mut Spool>,
    pub scanner: Option<&'a mut Scanner>,
    pub tail: Option<&'a mut Tail>,
}

/// The process's descriptors.
pub struct Io<'a> {
    pub stdin: Input<'a>,
    pub stdout: Output<'a>,
    pub stderr: Output<'a>,
}

/// When and how the process is ended if it does not end by itself.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `--timeout` or `--max-time`, whichever comes first.
    pub deadline: Option<Instant>,
    pub kill_signal: libc::c_int,
    pub kill_after: Duration,
}

/// How the process ended.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub exit: Exit,
    /// retry ended it at `Limits::deadline`.
    pub timed_out: bool,
    pub started: Instant,
    pub ended: Instant,
    /// The first signal forwarded to it, if retry was signalled meanwhile.
    pub interrupted: Option<libc::c_int>,
    /// Forwarding to retry's own descriptor failed with EPIPE (reader gone).
    pub forward_broken: bool,
    /// retry ended it because it (or a member of its group re-parented to
    /// retry) was stopped by this signal, SIGTTIN or SIGTTOU: it wanted the
    /// terminal from its own process group (not with `--foreground`).
    pub stopped: Option<libc::c_int>,
}

impl Finished {
    /// The attempt's status as SPEC counts it: 124 when retry ended it at
    /// the deadline, 128+N of the stopping signal when it was ended for a
    /// stop by SIGTTIN/SIGTTOU, else its exit code or 128+N.
    pub fn status(&self) -> crate::status::Status {
        use crate::status::Status;
        if self.timed_out {
            return Status::TimedOut;
        }
        if let Some(sig) = self.stopped {
            return Status::Stopped(sig);
        }
        match self.exit {
            Exit::Code(c) => Status::Exited(u8::try_from(c & 0xff).unwrap_or(u8::MAX)),
            Exit::Signal(s) => Status::Signaled(s),
        }
    }
}

/// A stream retry reads, with its sink.
struct Reader<'a> {
    fd: Option<OwnedFd>,
    sink: Sink<'a>,
    broken: bool,
    /// Forward with tee(2) (until it fails: retry's descriptor is not a pipe).
    tee: bool,
}

impl<'a> Reader<'a> {
    fn new(piped: Option<(OwnedFd, Sink<'a>)>) -> Reader<'a> {
        match piped {
            Some((fd, sink)) => Reader { fd: Some(fd), sink, broken: false, tee: true },
            None => Reader { fd: None, sink: Sink::default(), broken: false, tee: false },
        }
    }

    /// Reads what is there; false at EOF or on error.
    ///
    /// The bytes pass through retry's memory only where something must
    /// look at them. Captured and nothing else (`--stdout final` without
    /// stdout rules): spliced from the pipe into the spill file once the
    /// in-memory part is full ([`Spool::splice_from`]). Forwarded and scanned (`--stdout
    /// live` with a stdout rule): tee(2) puts the bytes in retry's stdout
    /// pipe without a copy, and one read takes them for the scanner (when
    /// stdout is not a pipe: read, then write).
    fn pump(&mut self, buf: &mut [u8]) -> bool {
        let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return false;
        };
        let spool_only =
            self.sink.forward.is_none() && self.sink.scanner.is_none() && self.sink.tail.is_none();
        if let (true, Some(spool)) = (spool_only, self.sink.spool.as_deref_mut()) {
            loop {
                match spool.splice_from(fd) {
                    Some(Ok(0)) => return false,
                    Some(Ok(_)) => {}
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    // The spill file failed (a full disk): keep what
                    // fits; validation sees less.
                    Some(Err(_)) => {
                        self.sink.spool = None;
                        break;
                    }
                    None => break,
                }
            }
        }
        loop {
            let mut limit = buf.len();
            let mut teed = false;
            if let (Some(out), true) = (self.sink.forward, self.tee) {
                match sys::tee(fd, out, limit) {
                    Ok(0) => return false,
                    Ok(n) => (limit, teed) = (n, true),
                    // The pipe is empty (or a non-blocking stdout is full):
                    // the read below tells which.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                        self.broken = true;
                        self.sink.forward = None;
                    }
                    // Not a pipe (EINVAL): read and write from now on.
                    Err(_) => self.tee = false,
                }
            }
            let n = match sys::read(fd, &mut buf[..limit]) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            };
            let chunk = &buf[..n];
            if let (Some(out), false) = (self.sink.forward, teed) {
                if let Err(e) = sys::write_all(out, chunk) {
                    if e.raw_os_error() == Some(libc::EPIPE) {
                        self.broken = true;
                    }
                    self.sink.forward = None;
                }
            }
            if let Some(spool) = self.sink.spool.as_deref_mut() {
                if spool.push(chunk).is_err() {
                    // A full disk: keep what fits; validation sees less.
                    self.sink.spool = None;
                }
            }
            if let Some(scanner) = self.sink.scanner.as_deref_mut() {
                scanner.feed(chunk);
            }
            if let Some(tail) = self.sink.tail.as_deref_mut() {
                tail.push(chunk);
            }
        }
    }

    fn close(&mut self) {
        self.fd = None;
        if let Some(scanner) = self.sink.scanner.as_deref_mut() {
            scanner.finish();
        }
    }
}

/// Feeds `--stdin replay` into the child's stdin pipe.
struct Feeder<'a> {
    fd: Option<OwnedFd>,
    replay: &'a mut Replay,
    /// Position in the recording of the next byte to send.
    pos: u64,
    pending: Vec<u8>,
    sent: usize,
}

impl Feeder<'_> {
    /// Wants to read retry's stdin (recording exhausted, not at EOF).
    fn wants_stdin(&self) -> bool {
        self.fd.is_some()
            && self.sent == self.pending.len()
            && self.pos >= self.replay.len()
            && !self.replay.eof
    }

    fn wants_write(&self) -> bool {
        self.fd.is_some() && (self.sent < self.pending.len() || self.pos < self.replay.len())
    }

    /// Fills `pending` from the recording or (when `stdin_ready`) from
    /// retry's stdin; closes the pipe when everything was sent.
    fn refill(&mut self, buf: &mut [u8], stdin_ready: bool) {
        if self.fd.is_none() || self.sent < self.pending.len() {
            return;
        }
        self.pending.clear();
        self.sent = 0;
        if self.pos < self.replay.len() {
            match self.replay.read_at(self.pos, buf) {
                Ok(n) if n > 0 => {
                    self.pending.extend_from_slice(&buf[..n]);
                    self.pos += n as u64;
                }
                _ => self.fd = None,
            }
        } else if self.replay.eof {
            self.fd = None;
        } else if stdin_ready {
            match self.replay.read_more(buf) {
                Ok(n) if n > 0 => {
                    self.pending.extend_from_slice(&buf[..n]);
                    self.pos += n as u64;
                }
                Ok(_) => self.fd = None,
                Err(_) => self.fd = None,
            }
        }
    }

    fn write(&mut self) {
        let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        while self.sent < self.pending.len() {
            match sys::write(fd, &self.pending[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // EPIPE: the child closed its stdin; it gets no more.
                Err(_) => {
                    self.fd = None;
                    return;
                }
            }
        }
    }
}

/// A pipe for a child stream: (retry's end, nonblocking; child's end).
fn pipe_for(child_reads: bool) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = sys::pipe()?;
    let (ours, theirs) = if child_reads { (w, r) } else { (r, w) };
    sys::set_nonblocking(ours.as_fd())?;
    if !child_reads {
        // 1 MiB instead of 64 KiB: far fewer wake-ups of retry and of the
        // writing child for bulk output. Pages are only allocated as data
        // waits in the pipe; where the limit is lower (pipe-max-size, the
        // user's quota), the pipe keeps its default size.
        let _ = sys::set_pipe_size(ours.as_fd(), PIPE_SIZE);
    }
    Ok((ours, theirs))
}

/// Grows pipe `fd` (retry's stdout or stderr, shared with the reader
/// downstream) to [`PIPE_SIZE`]: fewer wake-ups of the writer and of the
/// reader for bulk output. Only grows it; not a pipe, or refused (the
/// user's pipe quota): nothing changes.
pub fn grow_pipe(fd: RawFd) {
    if let Ok(size) = sys::pipe_size(fd) {
        if size < PIPE_SIZE {
            let _ = sys::set_pipe_size(fd, PIPE_SIZE);
        }
    }
}

/// The child's side of an output stream, and retry's reader if piped.
type Opened<'a> = (Stdio, Option<OwnedFd>, Option<(OwnedFd, Sink<'a>)>);

fn open(out: Output<'_>) -> std::io::Result<Opened<'_>> {
    Ok(match out {
        Output::Inherit => (Stdio::Inherit, None, None),
        Output::Fd(fd) => (Stdio::Fd(fd), None, None),
        Output::Piped(sink) => {
            let (ours, theirs) = pipe_for(false)?;
            (Stdio::Fd(child::raw(&theirs)), Some(theirs), Some((ours, sink)))
        }
    })
}

/// The child's stdin, retry's end of it if piped, and the feeder that
/// writes a replayed stdin there.
type OpenedStdin<'a> = (Stdio, Option<OwnedFd>, Option<Feeder<'a>>);

fn open_stdin(input: Input<'_>) -> std::io::Result<OpenedStdin<'_>> {
    Ok(match input {
        Input::Inherit => (Stdio::Inherit, None, None),
        Input::Fd(fd) => (Stdio::Fd(fd), None, None),
        Input::Replay(replay) => {
            let (ours, theirs) = pipe_for(true)?;
            let feeder = Feeder { fd: Some(ours), replay, pos: 0, pending: Vec::new(), sent: 0 };
            (Stdio::Fd(child::raw(&theirs)), Some(theirs), Some(feeder))
        }
    })
}

/// Spawns `program` with `env` and runs it to its end.
pub fn run(
    program: &Program,
    env: &[std::ffi::CString],
    own_group: bool,
    io: Io<'_>,
    limits: &Limits,
    signals: &mut Signals,
    buf: &mut Vec<u8>,
) -> Result<Finished, SpawnError> {
    let internal = SpawnError::Internal;
    let (stdin, stdin_child, mut feeder) = open_stdin(io.stdin).map_err(internal)?;
    let (stdout, out_child, out_reader) = open(io.stdout).map_err(internal)?;
    let (stderr, err_child, err_reader) = open(io.stderr).map_err(internal)?;
    let started = Instant::now();
    let cwd = program.cwd.as_deref();
    let spawned = child::spawn(&Spawn { program, env, stdin, stdout, stderr, own_group, cwd });
    // The child's ends belong to the child now (or to nobody on failure).
    drop((stdin_child, out_child, err_child));
    let mut child = spawned?;
    let mut readers = [Reader::new(out_reader), Reader::new(err_reader)];
    for out in readers.iter().filter_map(|r| r.sink.forward) {
        // Streamed through retry into a pipe (`--stdout live` with a rule):
        // a bigger pipe downstream too, as for the captured stdout.
        grow_pipe(out);
    }
    // The read buffer is made at the first attempt that needs one: a run
    // whose output is not piped never touches (or maps) it.
    if buf.len() < BUF && (feeder.is_some() || readers.iter().any(|r| r.fd.is_some())) {
        buf.resize(BUF, 0);
    }
    let buf = &mut buf[..];
    let mut state = Waiting {
        exit: None,
        timed_out: false,
        kill_at: None,
        killed: false,
        interrupted: None,
        stopped: None,
    };
    loop {
        let now = Instant::now();
        if state.exit.is_none() {
            state.enforce(&child, limits, now);
        }
        let ended = state.exit.map(|(_, at)| at);
        let drained = readers.iter().all(|r| r.fd.is_none());
        if let Some(at) = ended {
            if drained || now >= at + GRACE {
                break;
            }
        }
        // What to wait for, and until when.
        let mut fds = Vec::with_capacity(6);
        fds.push(sys::pollfd(signals.fd(), libc::POLLIN));
        let pid_slot = match (ended, child.pidfd()) {
            (None, Some(pidfd)) => {
                fds.push(sys::pollfd(pidfd.as_raw_fd(), libc::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let mut reader_slots = [None, None];
        for (slot, r) in reader_slots.iter_mut().zip(&readers) {
            if let Some(fd) = &r.fd {
                fds.push(sys::pollfd(fd.as_raw_fd(), libc::POLLIN));
                *slot = Some(fds.len() - 1);
            }
        }
        if let Some(f) = feeder.as_mut() {
            f.refill(buf, false);
        }
        let (mut in_slot, mut stdin_slot) = (None, None);
        if let Some(f) = &feeder {
            if let (true, Some(fd)) = (f.wants_write(), &f.fd) {
                fds.push(sys::pollfd(fd.as_raw_fd(), libc::POLLOUT));
                in_slot = Some(fds.len() - 1);
            } else if f.wants_stdin() {
                fds.push(sys::pollfd(libc::STDIN_FILENO, libc::POLLIN));
                stdin_slot = Some(fds.len() - 1);
            }
        }
        let wake = [
            state.exit.is_none().then_some(limits.deadline).flatten().filter(|_| !state.timed_out),
            state.kill_at,
            ended.map(|at| at + GRACE),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = wake.map(|w| w.saturating_duration_since(now));
        if let Err(e) = sys::poll(&mut fds, timeout) {
            return Err(SpawnError::Internal(e));
        }
        let ready = |slot: Option<usize>| slot.is_some_and(|i| fds[i].revents != 0);
        // A signal to forward, or SIGCHLD: a child exited or stopped (the
        // orphans that exited are reaped by `take`).
        let children = fds[0].revents != 0 && {
            state.forward(&child, signals);
            signals.children()
        };
        if children && state.exit.is_none() && child.own_group() {
            state.check_stops(&child, limits, Instant::now());
        }
        if state.exit.is_none() && (ready(pid_slot) || (children && child.pidfd().is_none())) {
            if let Ok(Some(exit)) = child.peek() {
                state.leader_exited(&mut child, exit);
                if let Some(f) = feeder.as_mut() {
                    f.fd = None;
                }
            }
        }
        for (slot, r) in reader_slots.iter().zip(readers.iter_mut()) {
            if ready(*slot) && !r.pump(buf) {
                r.close();
            }
        }
        if let Some(f) = feeder.as_mut() {
            if ready(stdin_slot) {
                f.refill(buf, true);
            }
            if ready(in_slot) || ready(stdin_slot) {
                f.write();
            }
        }
    }
    for r in readers.iter_mut() {
        r.close();
    }
    let (exit, ended) = state.exit.unwrap_or((Exit::Signal(libc::SIGKILL), Instant::now()));
    Ok(Finished {
        exit,
        timed_out: state.timed_out,
        started,
        ended,
        interrupted: state.interrupted,
        forward_broken: readers.iter().any(|r| r.broken),
        stopped: state.stopped,
    })
}

/// The state of waiting for one process.
struct Waiting {
    exit: Option<(Exit, Instant)>,
    timed_out: bool,
    kill_at: Option<Instant>,
    /// retry sent SIGKILL to the attempt.
    killed: bool,
    interrupted: Option<libc::c_int>,
    /// The group is being ended because a member stopped for the terminal.
    stopped: Option<libc::c_int>,
}

impl Waiting {
    /// The leader exited (`exit`, not reaped yet): reaps it, and the rest
    /// of its group when retry was ending it.
    fn leader_exited(&mut self, child: &mut Child, exit: Exit) {
        if self.timed_out || self.stopped.is_some() {
            // A leader retry is ending is gone: end the rest of its group
            // now, while the group id is still reserved.
            child.kill_group();
            self.killed = true;
        }
        let exit = child.reap().unwrap_or(exit);
        if self.killed {
            child.settle_group(GRACE);
        }
        // Orphans that exited while the leader's exit was pending.
        child::reap_orphans();
        self.exit = Some((exit, Instant::now()));
    }

    /// Applies the deadline and the SIGKILL escalation.
    fn enforce(&mut self, child: &Child, limits: &Limits, now: Instant) {
        if !self.timed_out && limits.deadline.is_some_and(|d| now >= d) {
            self.timed_out = true;
            child.signal(limits.kill_signal);
            // A stopped process could not act on the signal.
            child.signal(libc::SIGCONT);
            self.kill_at = Some(now.checked_add(limits.kill_after).unwrap_or(now));
        }
        if self.kill_at.is_some_and(|k| now >= k) {
            child.signal(libc::SIGKILL);
            self.kill_at = None;
            self.killed = true;
        }
    }

    /// Forwards signals sent to retry; a second SIGINT sends SIGKILL.
    fn forward(&mut self, child: &Child, signals: &mut Signals) {
        for sig in signals.take() {
            self.interrupted.get_or_insert(sig);
            if self.exit.is_some() {
                continue;
            }
            if sig == libc::SIGINT && signals.sigints() >= 2 {
                child.signal(libc::SIGKILL);
                self.killed = true;
            } else {
                child.signal(sig);
                // A stopped process would not act on it until continued.
                child.signal(libc::SIGCONT);
            }
        }
    }

    /// Reads the stop reports of retry's children: the leader, or a member
    /// of its group re-parented to retry, stopped by SIGTTIN or SIGTTOU ends
    /// the attempt (SIGTERM and SIGCONT now, SIGKILL after --kill-after).
    /// Other stops (SIGSTOP, SIGTSTP) are someone's deliberate choice.
    fn check_stops(&mut self, child: &Child, limits: &Limits, now: Instant) {
        while let Some((pid, sig)) = sys::stopped_child() {
            let terminal = sig == libc::SIGTTIN || sig == libc::SIGTTOU;
            let ours = pid == child.pid() || sys::getpgid(pid) == Some(child.pid());
            if terminal && ours && self.stopped.is_none() && !self.timed_out {
                self.stopped = Some(sig);
                child.signal(libc::SIGTERM);
                child.signal(libc::SIGCONT);
                if self.kill_at.is_none() && !self.killed {
                    self.kill_at = Some(now.checked_add(limits.kill_after).unwrap_or(now));
                }
            }
        }
    }
}
