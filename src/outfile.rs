//! Writes a report file (`--summary`; the `--metrics` file uses the same):
//! atomically when it is a regular file, in place when it is a FIFO, a
//! character device or a descriptor path.
//!
//! - A regular FILE (or a missing one) is replaced: a temp file in FILE's
//!   directory (`O_EXCL|O_NOFOLLOW`), written, fsynced, renamed over FILE,
//!   so a reader sees the old document or the whole new one. A symlink to
//!   a regular file keeps pointing there: the file it names is replaced.
//! - A FIFO, a character device, or `/dev/stdout`, `/dev/stderr`,
//!   `/dev/fd/N`, `/proc/self/fd/N` is opened and written in place (with
//!   `O_APPEND`), never replaced: `--summary /dev/stderr` and
//!   `--summary >(jq .)` work, and `/dev/null` stays a device even when
//!   retry runs as root. The open is `O_NONBLOCK`, so a FIFO nobody reads
//!   is an error (ENXIO) instead of a hang, and a reader that stops reading
//!   for [`STALL`] ends the write with an error.
//!
//! [`check`] runs before attempt 1: a regular FILE's directory must exist
//! and be writable, a FIFO or device must pass `access(W_OK)`; every
//! message names the path the user gave, never a temp file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Access, Mode, OFlags};
use rustix::io::Errno;

use crate::error::Error;
use crate::sys;

/// How long a FIFO's or device's reader may take no bytes before the write
/// gives up.
pub const STALL: Duration = Duration::from_secs(10);

/// How a report file is written.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// Opened and written where it is.
    InPlace,
    /// Replaced through a temp file in `dir`.
    Replace { file: PathBuf, dir: PathBuf },
}

/// `/dev/stdout`, `/dev/stderr`, `/dev/fd/N` and `/proc/self/fd/N` name a
/// descriptor of retry, not a file to replace.
fn is_descriptor_path(path: &Path) -> bool {
    let b = path.as_os_str().as_bytes();
    matches!(b, b"/dev/stdout" | b"/dev/stderr")
        || b.starts_with(b"/dev/fd/")
        || b.starts_with(b"/proc/self/fd/")
        || b.starts_with(b"/proc/thread-self/fd/")
}

/// The descriptor a descriptor path names (`/dev/stderr`: 2).
fn descriptor_number(path: &Path) -> Option<RawFd> {
    let b = path.as_os_str().as_bytes();
    let n = match b {
        b"/dev/stdout" => return Some(1),
        b"/dev/stderr" => return Some(2),
        _ => [&b"/dev/fd/"[..], b"/proc/self/fd/", b"/proc/thread-self/fd/"]
            .iter()
            .find_map(|prefix| b.strip_prefix(*prefix))?,
    };
    std::str::from_utf8(n).ok()?.parse().ok()
}

/// The directory a temp file for `path` goes to, so that the rename stays
/// on one file system and is atomic.
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What `path` is, or why it cannot be a report file.
fn classify(path: &Path) -> Result<Target, String> {
    if is_descriptor_path(path) {
        return match fs::metadata(path) {
            Ok(_) => Ok(Target::InPlace),
            Err(e) => Err(crate::parse::os_error(&e)),
        };
    }
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Target::Replace { file: path.to_path_buf(), dir: directory_of(path) });
        }
        Err(e) => return Err(crate::parse::os_error(&e)),
    };
    let t = meta.file_type();
    if t.is_fifo() || t.is_char_device() {
        Ok(Target::InPlace)
    } else if t.is_dir() {
        Err("is a directory; expected a file name".to_string())
    } else if t.is_socket() || t.is_block_device() {
        let what = if t.is_socket() { "a socket" } else { "a block device" };
        Err(format!("is {what}; expected a file, a FIFO or a character device"))
    } else {
        // A symlink to a regular file: replace the file it names, so the
        // link stays.
        let linked = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let file = if linked {
            fs::canonicalize(path).map_err(|e| crate::parse::os_error(&e))?
        } else {
            path.to_path_buf()
        };
        let dir = directory_of(&file);
        Ok(Target::Replace { file, dir })
    }
}

/// Before attempt 1: can `path` be written at the end? A usage error of
/// `option` (125) naming `path` when not.
pub fn check(option: &str, path: &Path) -> Result<(), Error> {
    let shown = path.display().to_string();
    if path.as_os_str().is_empty() {
        return Err(Error::usage(option, shown, "expected a file name"));
    }
    let bad = |why: String| Error::usage(option, shown.clone(), why);
    match classify(path).map_err(bad)? {
        Target::InPlace => rustix::fs::access(path, Access::WRITE_OK)
            .map_err(|e| bad(format!("cannot be written: {}", crate::parse::os_error(&e.into())))),
        Target::Replace { dir, .. } => {
            match fs::metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(bad(format!("'{}' is not a directory", dir.display()))),
                Err(e) => {
                    return Err(bad(format!(
                        "directory '{}': {}",
                        dir.display(),
                        crate::parse::os_error(&e)
                    )));
                }
            }
            // A file made and removed: what the write at the end needs
            // (access(2) says yes to root on a file system that refuses new
            // files, such as sysfs).
            tempfile::Builder::new().prefix(".retry-probe-").tempfile_in(&dir).map(drop).map_err(|e| {
                bad(format!("directory '{}' is not writable: {}", dir.display(), crate::parse::os_error(&e)))
            })
        }
    }
}

/// Writes `bytes` to the report file `path`: replaced atomically (the new
/// file gets `mode`, whatever the umask) or written in place, as the
/// module says. The error names `path`'s directory at most, never a temp
/// file.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    match classify(path).map_err(io::Error::other)? {
        Target::InPlace => write_in_place(path, bytes),
        Target::Replace { file, dir } => replace(&file, &dir, bytes, mode),
    }
}

fn write_in_place(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let flags = OFlags::WRONLY | OFlags::APPEND | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        // A socket cannot be opened (a service's stdout often is one):
        // retry's own descriptor is written instead.
        Err(Errno::NXIO) => match descriptor_number(path) {
            Some(n) => return write_descriptor(n, bytes),
            None => return Err(io::Error::other("nobody is reading it")),
        },
        Err(e) => return Err(io::Error::other(crate::parse::os_error(&e.into()))),
    };
    let mut rest = bytes;
    let mut since = Instant::now();
    while !rest.is_empty() {
        match rustix::io::write(&fd, rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                rest = &rest[n..];
                since = Instant::now();
            }
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                let left = STALL.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("its reader took nothing for {}s", STALL.as_secs()),
                    ));
                }
                let mut fds = [sys::pollfd(fd.as_raw_fd(), libc::POLLOUT)];
                sys::poll(&mut fds, Some(left.min(Duration::from_millis(500))))?;
            }
            Err(Errno::PIPE) => return Err(io::Error::other("its reader went away")),
            Err(e) => return Err(io::Error::other(crate::parse::os_error(&e.into()))),
        }
    }
    Ok(())
}

/// Writes to descriptor `fd` of retry, which stays as it is (blocking, not
/// retry's to change): a chunk at a time once it is writable, so a reader
/// that takes nothing for [`STALL`] ends the write.
fn write_descriptor(fd: RawFd, bytes: &[u8]) -> io::Result<()> {
    let mut rest = bytes;
    let mut since = Instant::now();
    while !rest.is_empty() {
        let left = STALL.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("its reader took nothing for {}s", STALL.as_secs()),
            ));
        }
        let mut fds = [sys::pollfd(fd, libc::POLLOUT)];
        if sys::poll(&mut fds, Some(left.min(Duration::from_millis(500))))? == 0 {
            continue;
        }
        // At most PIPE_BUF bytes: a writable pipe takes them without blocking.
        let chunk = &rest[..rest.len().min(4096)];
        match sys::write(fd, chunk) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                rest = &rest[n..];
                since = Instant::now();
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                return Err(io::Error::other("its reader went away"));
            }
            Err(e) => return Err(io::Error::other(crate::parse::os_error(&e))),
        }
    }
    Ok(())
}

/// Removes a temp file unless it was renamed into place.
struct Pending(Option<PathBuf>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

fn replace(file: &Path, dir: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use rand::RngExt as _;
    let in_dir = |doing: &str, e: &io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot {doing} a temporary file in '{}': {}", dir.display(), crate::parse::os_error(e)),
        )
    };
    let base = file.file_name().map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    let mut rng = rand::make_rng::<rand::rngs::Xoshiro256PlusPlus>();
    let mut attempt = 0;
    let (mut out, mut pending) = loop {
        let tmp = dir.join(format!(".{base}.tmp-{:08x}", rng.random::<u32>()));
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        match opened {
            Ok(f) => break (f, Pending(Some(tmp))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(in_dir("create", &e)),
        }
    };
    let written = out
        .write_all(bytes)
        .and_then(|()| out.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| File::sync_all(&out));
    written.map_err(|e| in_dir("write", &e))?;
    let Some(tmp) = pending.0.as_deref() else { return Err(io::Error::other("no temp file")) };
    fs::rename(tmp, file).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot replace it: {}", crate::parse::os_error(&e)))
    })?;
    pending.0 = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_paths_fifos_and_devices_are_written_in_place() {
        assert_eq!(classify(Path::new("/dev/null")), Ok(Target::InPlace));
        assert_eq!(classify(Path::new("/dev/stderr")), Ok(Target::InPlace));
        assert_eq!(classify(Path::new("/dev/fd/2")), Ok(Target::InPlace));
        assert_eq!(descriptor_number(Path::new("/dev/stderr")), Some(2));
        assert_eq!(descriptor_number(Path::new("/proc/self/fd/63")), Some(63));
        assert_eq!(descriptor_number(Path::new("/dev/null")), None);
        assert!(classify(Path::new("/")).is_err());
        assert_eq!(
            classify(Path::new("report.json")),
            Ok(Target::Replace { file: PathBuf::from("report.json"), dir: PathBuf::from(".") })
        );
    }

    #[test]
    fn a_symlinked_file_is_replaced_where_it_points() {
        let t = tempfile::tempdir().expect("temp dir");
        let real = t.path().join("real.json");
        fs::write(&real, "old").expect("write");
        let link = t.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        write(&link, b"new", 0o644).expect("write");
        assert!(fs::symlink_metadata(&link).expect("meta").file_type().is_symlink());
        assert_eq!(fs::read(&real).expect("read"), b"new");
        assert_eq!(fs::metadata(&real).expect("meta").permissions().mode() & 0o777, 0o644);
        assert_eq!(fs::read_dir(t.path()).expect("dir").count(), 2, "no temp file left");
    }
}
