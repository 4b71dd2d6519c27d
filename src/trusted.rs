//! Trusted directories (SPEC Edge rules "Trusted directories"): a queue
//! directory and its `dead/` and `state/`, a file store, a `--state-dir`.
//!
//! Each is opened once (`O_DIRECTORY|O_NOFOLLOW`) and checked on the open
//! descriptor: a directory owned by retry's effective user that neither
//! group nor others can write. Everything inside is then reached relative to
//! that descriptor (`openat`, `mkdirat`, `renameat`, `linkat`, `unlinkat`),
//! so renaming or swapping a component of the path afterwards, or planting
//! a symlink, never redirects a read or a write: the descriptor stays on
//! the directory that was checked.
//!
//! An entry is looked at with `fstatat` without following links before it
//! is opened, then opened `O_NONBLOCK|O_NOFOLLOW` and `fstat`ed again: a
//! FIFO, a socket, a device, a directory or a symlink where a file belongs
//! comes back as [`Entry::Other`], never opened in a way that can block
//! (a FIFO without a writer would block a plain `open` forever).
//!
//! Temp files ([`Dir::temp`]) are created `O_EXCL|O_NOFOLLOW` under a
//! random `.part-*` name and `flock`ed by their writer before a byte is
//! written; the lock dies with the writer, so a later process proves a
//! leftover dead by taking its lock ([`Dir::clean_temps`]).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::Error;
use crate::sys;

/// The name of every temp file: `.part-` and 16 hex digits.
pub const TEMP_PREFIX: &str = ".part-";

/// Temp files of the previous release (`.tmp-*`, never locked) are removed
/// once they are this old.
pub const LEGACY_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Why a directory is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The path names a symbolic link (never followed).
    Symlink,
    /// Not a directory: what it is ("a FIFO", "a regular file", ...).
    NotDir(&'static str),
    /// Owned by another user.
    Owner { uid: u32, me: u32 },
    /// Writable by group or others; the permission bits.
    Writable { mode: u32 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Symlink => f.write_str("it is a symbolic link, which retry does not follow here"),
            Problem::NotDir(what) => write!(f, "it is not a directory but {what}"),
            Problem::Owner { uid, me } => write!(f, "it is owned by uid {uid}, not by you (uid {me})"),
            Problem::Writable { mode } => write!(f, "it is writable by group or others (mode {mode:04o})"),
        }
    }
}

/// Why [`Dir::open`] or [`Dir::sub`] failed.
#[derive(Debug)]
pub enum OpenError {
    /// It was missing and could not be created.
    Create(io::Error),
    /// It could not be opened or examined.
    Open(io::Error),
    /// It exists but is not to be trusted.
    Refused(Problem),
}

/// A checked directory, held open.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What [`Dir::open_file`] found under a name.
#[derive(Debug)]
pub enum Entry {
    Missing,
    /// A regular file, opened (blocking mode restored).
    File(File),
    /// Something else, not opened: what it is ("a FIFO", "a directory", ...).
    Other(&'static str),
}

/// What a file of this type is called in messages.
pub fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Is this the same file as that?
fn same(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// The checks every trusted directory passes, on its open descriptor.
fn check(st: &Stat) -> Result<(), Problem> {
    let t = file_type(st);
    if t != FileType::Directory {
        return Err(Problem::NotDir(kind_name(t)));
    }
    let me = sys::euid();
    if st.st_uid != me {
        return Err(Problem::Owner { uid: st.st_uid, me });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Problem::Writable { mode });
    }
    Ok(())
}

/// `path` without trailing slashes: a trailing slash makes the kernel
/// follow a final symlink even under `O_NOFOLLOW`.
fn trimmed(path: &Path) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    let mut end = bytes.len();
    while end > 1 && bytes[end - 1] == b'/' {
        end -= 1;
    }
    PathBuf::from(OsStr::from_bytes(&bytes[..end]))
}

const DIR_FLAGS: OFlags =
    OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// An open that failed with ELOOP or ENOTDIR: what is there instead.
fn not_a_dir(st: rustix::io::Result<Stat>, e: Errno) -> OpenError {
    match st {
        Ok(st) if file_type(&st) == FileType::Symlink => OpenError::Refused(Problem::Symlink),
        Ok(st) if file_type(&st) != FileType::Directory => {
            OpenError::Refused(Problem::NotDir(kind_name(file_type(&st))))
        }
        Ok(_) | Err(_) => OpenError::Open(e.into()),
    }
}

impl Dir {
    /// Opens and checks the directory `path`; with `create`, makes it
    /// first (mode 0700, missing parents too) when it is missing.
    /// `Ok(None)`: missing, and not created.
    pub fn open(path: &Path, create: bool) -> Result<Option<Dir>, OpenError> {
        let path = trimmed(path);
        if create {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !parent.is_dir() {
                    use std::os::unix::fs::DirBuilderExt as _;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)
                        .map_err(OpenError::Create)?;
                }
            }
            match rustix::fs::mkdir(&path, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(OpenError::Create(e.into())),
            }
        }
        let fd = match rustix::fs::open(&path, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if !create => return Ok(None),
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                return Err(not_a_dir(rustix::fs::lstat(&path), e));
            }
            Err(e) => return Err(OpenError::Open(e.into())),
        };
        Dir::checked(fd, path).map(Some)
    }

    fn checked(fd: OwnedFd, path: PathBuf) -> Result<Dir, OpenError> {
        let st = rustix::fs::fstat(&fd).map_err(|e| OpenError::Open(e.into()))?;
        check(&st).map_err(OpenError::Refused)?;
        Ok(Dir { fd, path })
    }

    /// The subdirectory `name`, opened and checked like [`Dir::open`];
    /// with `create`, made (mode 0700) when missing.
    pub fn sub(&self, name: &str, create: bool) -> Result<Option<Dir>, OpenError> {
        if create {
            match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(OpenError::Create(e.into())),
            }
        }
        let fd = match rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if !create => return Ok(None),
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                return Err(not_a_dir(rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW), e));
            }
            Err(e) => return Err(OpenError::Open(e.into())),
        };
        Dir::checked(fd, self.path.join(name)).map(Some)
    }

    /// A second descriptor of the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir { fd: self.fd.try_clone()?, path: self.path.clone() })
    }

    /// Creates the file `name` (mode 0600) for writing; fails if anything
    /// is there, a symlink included (`O_EXCL|O_NOFOLLOW`).
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600))?;
        Ok(File::from(fd))
    }

    /// The path it was opened by, for messages (and for a child that is
    /// given a path, like `RETRY_STATE_DIR`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is under `name`, without following a link; `None`: nothing.
    pub fn stat(&self, name: &str) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Is `name` (not followed) the file that `file` is open on?
    pub fn names_file(&self, name: &str, file: &File) -> io::Result<bool> {
        let held = rustix::fs::fstat(file)?;
        Ok(self.stat(name)?.is_some_and(|now| same(&now, &held)))
    }

    /// Does anything exist under `name`?
    pub fn exists(&self, name: &str) -> io::Result<bool> {
        self.stat(name).map(|s| s.is_some())
    }

    /// Opens the regular file `name` for reading. Anything else is not
    /// opened (or, if it changed between the look and the open, closed at
    /// once) and comes back as [`Entry::Other`].
    pub fn open_file(&self, name: &str) -> io::Result<Entry> {
        self.open_entry(name, OFlags::RDONLY, false)
    }

    /// Opens (creating it empty, mode 0600, when missing) the regular file
    /// `name` for locking.
    pub fn lock_file(&self, name: &str) -> io::Result<Entry> {
        self.open_entry(name, OFlags::RDWR, true)
    }

    fn open_entry(&self, name: &str, access: OFlags, create: bool) -> io::Result<Entry> {
        match self.stat(name)? {
            None if !create => return Ok(Entry::Missing),
            Some(st) if file_type(&st) != FileType::RegularFile => {
                return Ok(Entry::Other(kind_name(file_type(&st))));
            }
            None | Some(_) => {}
        }
        let mut flags = access | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC;
        if create {
            flags |= OFlags::CREATE;
        }
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Entry::Missing),
            // A symlink put there since the look (ELOOP), or a socket (ENXIO).
            Err(Errno::LOOP) => return Ok(Entry::Other(kind_name(FileType::Symlink))),
            Err(Errno::NXIO) => return Ok(Entry::Other(kind_name(FileType::Socket))),
            Err(Errno::ISDIR) => return Ok(Entry::Other(kind_name(FileType::Directory))),
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if file_type(&st) != FileType::RegularFile {
            return Ok(Entry::Other(kind_name(file_type(&st))));
        }
        // Blocking again: the file may become a child's stdin.
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)?;
        Ok(Entry::File(File::from(fd)))
    }

    /// The names in the directory (without `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(out)
    }

    /// A new temp file, locked by this process until it is committed or
    /// dropped (then removed).
    pub fn temp(&self) -> io::Result<Temp<'_>> {
        use rand::RngExt as _;
        let mut rng = rand::make_rng::<rand::rngs::Xoshiro256PlusPlus>();
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..100 {
            let name = format!("{TEMP_PREFIX}{:016x}", rng.random::<u64>());
            let fd = match rustix::fs::openat(&self.fd, name.as_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => fd,
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            };
            // A cleaner may take the lock between the create and here (it
            // then removes the name): try another name.
            let file = File::from(fd);
            if !sys::try_lock(file.as_fd())? || !self.names_file(&name, &file)? {
                continue;
            }
            return Ok(Temp { dir: self, name: Some(name), file });
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free temp file name"))
    }

    /// Writes `name` atomically: a temp file, fsynced when `sync`, renamed
    /// over `name`. The caller fsyncs the directory when the name must last.
    pub fn write_atomic(
        &self,
        name: &str,
        sync: bool,
        fill: impl FnOnce(&File) -> io::Result<()>,
    ) -> io::Result<()> {
        let tmp = self.temp()?;
        fill(tmp.file())?;
        tmp.commit(self, name, sync)
    }

    /// Removes the temp files that writers left when they died: a `.part-*`
    /// file whose lock this process can take (its writer would hold it while
    /// alive), and a previous release's `.tmp-*` file older than
    /// [`LEGACY_TEMP_AGE`]. Best effort: what cannot be removed stays.
    pub fn clean_temps(&self) {
        let Ok(names) = self.names() else { return };
        for name in names {
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                self.remove_dead_temp(name);
            } else if name.starts_with(".tmp-") {
                let old = self.stat(name).ok().flatten().is_some_and(|st| {
                    let mtime = u64::try_from(st.st_mtime).unwrap_or(0);
                    let age = SystemTime::now()
                        .duration_since(UNIX_EPOCH + Duration::from_secs(mtime))
                        .unwrap_or(Duration::ZERO);
                    file_type(&st) == FileType::RegularFile && age > LEGACY_TEMP_AGE
                });
                if old {
                    let _ = self.unlink(name);
                }
            }
        }
    }

    fn remove_dead_temp(&self, name: &str) {
        let Ok(Entry::File(file)) = self.open_file(name) else { return };
        if !sys::try_lock(file.as_fd()).unwrap_or(false) {
            return;
        }
        // Still the file of that name (a commit renames it away, and its
        // new name is not ours to remove).
        if self.names_file(name, &file).unwrap_or(false) {
            let _ = self.unlink(name);
        }
    }

    /// Removes the file (or symlink, FIFO, ...) `name`; a missing one is
    /// not an error.
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `name` whatever it is: a directory with everything in it
    /// (never following a symlink out of it), or any other file.
    pub fn remove_tree(&self, name: &str) -> io::Result<()> {
        self.remove_tree_at(name, 0)
    }

    fn remove_tree_at(&self, name: &str, depth: u32) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => return Ok(()),
            Err(Errno::NOTDIR) => return self.unlink(name),
            Err(Errno::NOTEMPTY | Errno::EXIST) if depth < 128 => {}
            Err(e) => return Err(e.into()),
        }
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())?;
        let inner = Dir { fd, path: self.path.join(name) };
        for entry in inner.names()? {
            if let Some(entry) = entry.to_str() {
                inner.remove_tree_at(entry, depth + 1)?;
            } else {
                // Not UTF-8: removed by its bytes.
                match rustix::fs::unlinkat(&inner.fd, entry.as_os_str(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(Errno::ISDIR) => {
                        return Err(io::Error::other("a directory whose name is not UTF-8 is in the way"));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames `from` here to `to` in `dir` (replacing what is there).
    pub fn rename(&self, from: &str, dir: &Dir, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &dir.fd, to).map_err(Into::into)
    }

    /// Links `from` here as `to` in `dir`, without following a symlink.
    /// `Ok(false)`: `to` exists (nothing changed).
    pub fn link(&self, from: &str, dir: &Dir, to: &str) -> io::Result<bool> {
        match rustix::fs::linkat(&self.fd, from, &dir.fd, to, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the directory's renames, links and removals durable.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(Into::into)
    }

    /// Makes the subdirectory `name` (mode 0700). `Ok(false)`: it exists.
    pub fn mkdir(&self, name: &str) -> io::Result<bool> {
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// A temp file of a [`Dir`], locked by this process. Dropped uncommitted,
/// it is removed.
#[derive(Debug)]
pub struct Temp<'d> {
    dir: &'d Dir,
    /// Its name; `None` once committed.
    name: Option<String>,
    file: File,
}

impl Temp<'_> {
    pub fn file(&self) -> &File {
        &self.file
    }

    fn name(&self) -> io::Result<&str> {
        self.name.as_deref().ok_or_else(|| io::Error::other("temp file already committed"))
    }

    /// Renames it to `to` in `dir`, replacing what is there (fsynced first
    /// when `sync`).
    pub fn commit(mut self, dir: &Dir, to: &str, sync: bool) -> io::Result<()> {
        if sync {
            self.file.sync_all()?;
        }
        self.dir.rename(self.name()?, dir, to)?;
        self.name = None;
        Ok(())
    }

    /// Links it as `to` in its directory only if nothing is there yet, then
    /// removes its temp name (fsynced first when `sync`). `Ok(false)`: `to`
    /// existed, nothing was committed.
    pub fn commit_new(self, to: &str, sync: bool) -> io::Result<bool> {
        if sync {
            self.file.sync_all()?;
        }
        // Dropping `self` removes the temp name, committed or not.
        self.dir.link(self.name()?, self.dir, to)
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            // Still locked: no cleaner can have taken the name meanwhile.
            let _ = self.dir.unlink(name);
        }
    }
}

/// `--state-dir DIR` (SPEC "Across runs", the store's checks): created 0700
/// when missing (its parents too); an existing one must be a directory, not
/// a symlink, owned by retry's effective user and not group- or
/// world-writable. Anything else is retry's error (125) naming the path.
pub fn state_dir(path: &Path) -> Result<Dir, Error> {
    let shown = path.display();
    match Dir::open(path, true) {
        Ok(Some(dir)) => Ok(dir),
        Ok(None) => {
            Err(Error::io(format!("cannot create --state-dir '{shown}'"), io::ErrorKind::NotFound.into()))
        }
        Err(OpenError::Create(e)) => Err(Error::io(format!("cannot create --state-dir '{shown}'"), e)),
        Err(OpenError::Open(e)) => Err(Error::io(format!("cannot open --state-dir '{shown}'"), e)),
        Err(OpenError::Refused(problem)) => {
            Err(refused(&format!("refusing --state-dir '{shown}'"), path, &problem))
        }
    }
}

/// The error for a refused directory: `what: problem`, with the fix when
/// there is a simple one.
pub fn refused(what: &str, path: &Path, problem: &Problem) -> Error {
    let why = match problem {
        Problem::Writable { .. } => format!("{problem}; run: chmod go-w '{}'", path.display()),
        Problem::Symlink | Problem::NotDir(_) | Problem::Owner { .. } => problem.to_string(),
    };
    Error::io(what, io::Error::new(io::ErrorKind::PermissionDenied, why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn refuses_symlinks_files_and_writable_directories() {
        let t = tempdir();
        let real = t.path().join("real");
        assert!(Dir::open(&real, false).expect("open").is_none());
        let dir = Dir::open(&real, true).expect("create").expect("made");
        assert_eq!(std::fs::metadata(&real).expect("meta").permissions().mode() & 0o777, 0o700);
        drop(dir);
        std::os::unix::fs::symlink(&real, t.path().join("link")).expect("symlink");
        for path in [t.path().join("link"), t.path().join("link/")] {
            assert!(matches!(Dir::open(&path, true), Err(OpenError::Refused(Problem::Symlink))), "{path:?}");
        }
        std::fs::write(t.path().join("file"), "").expect("write");
        assert!(matches!(
            Dir::open(&t.path().join("file"), false),
            Err(OpenError::Refused(Problem::NotDir("a regular file")))
        ));
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o770)).expect("chmod");
        assert!(matches!(
            Dir::open(&real, false),
            Err(OpenError::Refused(Problem::Writable { mode: 0o770 }))
        ));
    }

    #[test]
    fn entries_that_are_not_regular_files_are_never_opened() {
        let t = tempdir();
        let dir = Dir::open(t.path(), false).expect("open").expect("there");
        rustix::fs::mkfifoat(&dir.fd, "fifo", Mode::from_raw_mode(0o600)).expect("mkfifo");
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("link")).expect("symlink");
        std::fs::create_dir(t.path().join("sub")).expect("mkdir");
        assert!(matches!(dir.open_file("fifo").expect("fifo"), Entry::Other("a FIFO")));
        assert!(matches!(dir.lock_file("fifo").expect("fifo"), Entry::Other("a FIFO")));
        assert!(matches!(dir.open_file("link").expect("link"), Entry::Other("a symbolic link")));
        assert!(matches!(dir.lock_file("sub").expect("sub"), Entry::Other("a directory")));
        assert!(matches!(dir.open_file("none").expect("none"), Entry::Missing));
        assert!(matches!(dir.lock_file("new").expect("new"), Entry::File(_)));
    }

    #[test]
    fn temp_files_commit_atomically_and_leftovers_are_cleaned_once_dead() {
        let t = tempdir();
        let dir = Dir::open(t.path(), false).expect("open").expect("there");
        dir.write_atomic("a", true, |mut f| f.write_all(b"one")).expect("write");
        assert_eq!(std::fs::read(t.path().join("a")).expect("read"), b"one");
        // A live writer's temp file survives a cleaner; a dead one's does not.
        let live = dir.temp().expect("temp");
        let other = Dir::open(t.path(), false).expect("open").expect("there");
        other.clean_temps();
        let count =
            || other.names().expect("names").iter().filter(|n| n.as_bytes().starts_with(b".part-")).count();
        assert_eq!(count(), 1);
        // What a writer killed mid-write leaves: a temp file nobody locks.
        std::fs::write(t.path().join(".part-0123456789abcdef"), "half").expect("write");
        assert_eq!(count(), 2);
        other.clean_temps();
        assert_eq!(count(), 1);
        drop(live);
        assert_eq!(count(), 0);
        // commit_new never replaces.
        let tmp = dir.temp().expect("temp");
        tmp.file().write_all(b"two").expect("write");
        assert!(!tmp.commit_new("a", true).expect("commit"));
        assert_eq!(std::fs::read(t.path().join("a")).expect("read"), b"one");
        assert_eq!(count(), 0);
    }

    #[test]
    fn remove_tree_stays_inside() {
        let t = tempdir();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("keep"), "").expect("write");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("x/y")).expect("mkdir");
        std::fs::write(root.join("x/y/f"), "").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("x/link")).expect("symlink");
        let dir = Dir::open(&root, false).expect("open").expect("there");
        dir.remove_tree("x").expect("remove");
        assert!(!root.join("x").exists());
        assert!(outside.join("keep").exists());
    }
}
