//! Writing the kept attempt's captured stdout to retry's stdout at the end
//! of a run, so that a signal still ends retry. The write blocks for as long
//! as the reader downstream does not read (`retry --stdout final cmd | less`),
//! and the signal handlers restart an interrupted write (SA_RESTART): done
//! on the main thread, SIGINT or SIGTERM would wait for the reader. So a
//! helper thread writes while the main thread waits on the signal pipe; a
//! signal abandons the write (the process ends by that signal right after
//! its cleanup, which ends the thread too).

use std::io;
use std::os::fd::{AsRawFd as _, RawFd};

use crate::capture::Spool;
use crate::signals::Signals;
use crate::sys;

/// How the write ended.
pub enum Flushed {
    /// Everything was written, or the write failed (e.g. EPIPE: the reader
    /// left), which ends the run all the same.
    Done(io::Result<()>),
    /// A signal arrived first; part of the output may have been written.
    Interrupted(libc::c_int),
}

/// Writes all of `spool` to `fd`, unless a signal to retry comes first.
pub fn write_out(spool: Spool, fd: RawFd, signals: &mut Signals) -> Flushed {
    if let Some(&sig) = signals.take().first() {
        return Flushed::Interrupted(sig);
    }
    if spool.is_empty() {
        return Flushed::Done(Ok(()));
    }
    // A bigger pipe downstream: fewer wake-ups of the writer and of the
    // reader for bulk output.
    crate::exec::grow_pipe(fd);
    // The writer holds `done_w`; its end (POLLHUP on `done_r`) wakes us.
    let (done_r, done_w) = match sys::pipe() {
        Ok(p) => p,
        Err(_) => return Flushed::Done(spool.write_to(fd)),
    };
    let writer = std::thread::Builder::new().name("stdout".into()).spawn(move || {
        let result = spool.write_to(fd);
        drop(done_w);
        result
    });
    let writer = match writer {
        Ok(w) => w,
        // No thread could start (the system is out of them): the output
        // moved into the failed closure is lost; say why.
        Err(e) => return Flushed::Done(Err(e)),
    };
    loop {
        let mut fds =
            [sys::pollfd(signals.fd(), libc::POLLIN), sys::pollfd(done_r.as_raw_fd(), libc::POLLIN)];
        let _ = sys::poll(&mut fds, None);
        if let Some(&sig) = signals.take().first() {
            return Flushed::Interrupted(sig);
        }
        if fds[1].revents != 0 {
            return Flushed::Done(writer.join().unwrap_or_else(|_| Err(io::Error::other("writer panicked"))));
        }
    }
}

/// Writes a run's kept stdout (the accepted, or last, attempt's) to
/// retry's stdout. `Ok(Some(signal))`: a signal came while a stalled
/// reader blocked the write. EPIPE means the reader left on purpose
/// (`| head`); any other failure (a full disk) loses the output: retry's
/// own failure, 125, never a silent success.
pub fn kept_stdout(spool: Spool, signals: &mut Signals) -> Result<Option<libc::c_int>, crate::error::Error> {
    match write_out(spool, libc::STDOUT_FILENO, signals) {
        Flushed::Interrupted(signal) => Ok(Some(signal)),
        Flushed::Done(Err(e)) if e.raw_os_error() != Some(libc::EPIPE) => {
            Err(crate::error::Error::io("cannot write the captured stdout", e))
        }
        Flushed::Done(_) => Ok(None),
    }
}
