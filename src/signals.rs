//! SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to retry: counted by a
//! handler that also writes a byte to a self-pipe, so the run
//! loop's single `ppoll` wakes up for a signal as for a child's exit or
//! output. Installed before the first spawn (as GNU timeout does).
//!
//! SIGCHLD wakes the same pipe: a child exited (the attempt's leader, on
//! the pid path without pidfds; an orphan re-parented to retry, which
//! [`Signals::take`] reaps at once, during an attempt or a sleep alike) or
//! stopped ([`Signals::children`] tells the exec loop to look). SIGCHLD is
//! blocked outside `ppoll` (see `sys::block_outside_poll`), so it never
//! interrupts another system call with EINTR, in any thread.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use crate::sys;

/// The signals retry forwards to the running attempt.
pub const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Deliveries per signal of `FORWARDED`, written by the handlers.
static COUNTS: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
/// The first signal received (0 until then).
static FIRST: AtomicI32 = AtomicI32::new(0);
/// Write end of the self-pipe (-1 until installed).
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// SIGCHLD deliveries.
static CHILDREN: AtomicU32 = AtomicU32::new(0);

/// The receiving side, owned by the run loop.
pub struct Signals {
    read: OwnedFd,
    seen: [u32; 4],
    /// `CHILDREN` when `take` last reaped orphans, and when `children`
    /// was last asked.
    reaped: u32,
    children: u32,
}

/// Wakes the loop: write(2) is async-signal-safe; the fd is a
/// non-blocking pipe that is never closed. A full pipe already guarantees
/// a wake-up, so errors are ignored.
fn wake() {
    let fd = WAKE.load(Ordering::SeqCst);
    let _ = sys::write(fd, &[1u8]);
}

/// The handler of every signal retry catches: counts it and wakes the
/// loop. Only atomics and write(2), both async-signal-safe; errno is
/// kept (see [`sys::catch`]).
extern "C" fn on_signal(sig: libc::c_int) {
    let _errno = sys::SavedErrno::new();
    if sig == libc::SIGCHLD {
        CHILDREN.fetch_add(1, Ordering::SeqCst);
    } else if let Some(i) = FORWARDED.iter().position(|&s| s == sig) {
        COUNTS[i].fetch_add(1, Ordering::SeqCst);
        let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    }
    wake();
}

impl Signals {
    /// Creates the self-pipe and installs the handlers: one `sigaction`
    /// each (signal-hook's registry, which chains handlers retry never
    /// has, cost twice the system calls and ~17,000 instructions at every
    /// start).
    pub fn install() -> io::Result<Signals> {
        let (read, write) = sys::pipe_nonblocking()?;
        // The write end lives for the whole process: handlers may run at
        // any time until exit.
        WAKE.store(write.as_raw_fd(), Ordering::SeqCst);
        std::mem::forget(write);
        for sig in FORWARDED {
            sys::catch(sig, on_signal)?;
        }
        // Blocked before the handler exists and before any thread starts
        // (threads inherit the mask). A handler also replaces a SIG_IGN
        // inherited from retry's parent, under which exited children would
        // vanish unreported. No SA_NOCLDSTOP: stops are reported too.
        sys::block_outside_poll(libc::SIGCHLD)?;
        sys::catch(libc::SIGCHLD, on_signal)?;
        let now = CHILDREN.load(Ordering::SeqCst);
        Ok(Signals { read, seen: [0; 4], reaped: now, children: now })
    }

    /// Poll this for POLLIN: a signal arrived.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The signals delivered since the last call, one entry per delivery,
    /// in `FORWARDED` order within one call. Reaps the orphans that exited
    /// meanwhile (never the running attempt's leader).
    pub fn take(&mut self) -> Vec<libc::c_int> {
        let mut buf = [0u8; 64];
        while matches!(sys::read(self.read.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
        let children = CHILDREN.load(Ordering::SeqCst);
        if children != self.reaped {
            self.reaped = children;
            crate::child::reap_orphans();
        }
        let mut out = Vec::new();
        for (i, &sig) in FORWARDED.iter().enumerate() {
            let now = COUNTS[i].load(Ordering::SeqCst);
            for _ in self.seen[i]..now {
                out.push(sig);
            }
            self.seen[i] = now;
        }
        out
    }

    /// The first signal retry received, if any.
    pub fn first(&self) -> Option<libc::c_int> {
        match FIRST.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }

    /// Did a child exit or stop since the last call? (Read after `take`,
    /// which empties the pipe: a SIGCHLD counted before the byte it writes
    /// is seen now, or wakes the next `ppoll`.)
    pub fn children(&mut self) -> bool {
        let now = CHILDREN.load(Ordering::SeqCst);
        let changed = now != self.children;
        self.children = now;
        changed
    }

    /// How many SIGINTs arrived so far (a second one means SIGKILL).
    pub fn sigints(&self) -> u32 {
        COUNTS[0].load(Ordering::SeqCst)
    }
}
