//! `--stdin replay`: what the first attempt reads of retry's stdin is
//! recorded (memory, then the run's spill file) and replayed byte for byte
//! to every later attempt. retry reads its stdin only as fast as an attempt
//! consumes it; when an attempt stops reading early, the next attempt gets
//! the recording and then the rest of stdin, read as it asks for it — so
//! every attempt sees all of stdin, and stdin is read to EOF only when
//! another attempt runs and wants it.

use std::fs::File;
use std::io;

use crate::capture::Spool;
use crate::sys;

pub struct Replay {
    record: Spool,
    /// retry's stdin reached EOF: the recording is complete.
    pub eof: bool,
}

impl Replay {
    pub fn new(spill: File) -> Replay {
        Replay { record: Spool::new(Some(spill)), eof: false }
    }

    /// Bytes recorded so far.
    pub fn len(&self) -> u64 {
        self.record.len()
    }

    pub fn is_empty(&self) -> bool {
        self.record.is_empty()
    }

    pub fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.record.read_at(pos, buf)
    }

    /// The whole recording, when it is at most `limit` bytes (a Redis job's
    /// stdin).
    pub fn to_vec(&self, limit: u64) -> io::Result<Option<Vec<u8>>> {
        self.record.to_vec(limit)
    }

    /// Writes the whole recording to `fd` (a queued job's side file).
    pub fn write_to(&self, fd: std::os::fd::RawFd) -> io::Result<()> {
        self.record.write_to(fd)
    }

    /// Records the rest of retry's stdin, to EOF: a queued job keeps all of
    /// it. Stops early once more than `limit` bytes are recorded (the
    /// caller refuses such a recording). Returns a signal that came
    /// meanwhile (the recording is then cut short and must not be used).
    pub fn record_rest(
        &mut self,
        signals: &mut crate::signals::Signals,
        limit: u64,
    ) -> io::Result<Option<libc::c_int>> {
        let mut buf = vec![0u8; 64 << 10];
        while !self.eof && self.len() <= limit {
            let mut fds =
                [sys::pollfd(libc::STDIN_FILENO, libc::POLLIN), sys::pollfd(signals.fd(), libc::POLLIN)];
            sys::poll(&mut fds, None)?;
            if let Some(sig) = signals.take().first() {
                return Ok(Some(*sig));
            }
            if fds[0].revents != 0 {
                match self.read_more(&mut buf) {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    Ok(_) | Err(_) => {}
                }
            }
        }
        Ok(None)
    }

    /// Reads the next bytes of retry's stdin into `buf` and records them;
    /// `Ok(0)` at EOF. Call only when stdin polled readable.
    pub fn read_more(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match sys::read(libc::STDIN_FILENO, buf) {
            Ok(n) => n,
            // A stdin that cannot be read (closed, EIO on a lost terminal)
            // ends like EOF.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
            Err(_) => 0,
        };
        if n == 0 {
            self.eof = true;
        } else {
            self.record.push(&buf[..n])?;
        }
        Ok(n)
    }
}
