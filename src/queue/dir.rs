//! The queue in a directory: one JSON file per job (`<id>.job`, mode
//! 0600), its recorded stdin beside it (`<id>.stdin`), its kept state dir
//! in `state/<id>/`, dead letters in `dead/`.
//!
//! The directory, `state/` and `dead/` are trusted directories
//! ([`crate::trusted`]): opened once and checked on their descriptors
//! before any job runs (a missing `state/` or `dead/` is made through the
//! checked queue directory when first needed), every file reached
//! relative to them, an entry that
//! is not a regular file never opened in a way that blocks (a job file that
//! is a FIFO, a socket, a device or a directory is buried as unreadable).
//!
//! Every write is a locked temp file in the same directory, fsynced,
//! renamed over the target, then the directory fsynced: a crash leaves the
//! old or the new file, never half of one, and the next drain removes the
//! temp file (it can take its lock). A drain claims a job with `flock` on
//! its file (the lock dies with the process, even by SIGKILL) and checks
//! that the locked file is still the one linked under the job's name: a job
//! rescheduled meanwhile is a new file, which must be locked anew. A job
//! file is only ever replaced or removed by the holder of its lock, as its
//! last step, so a drain that dies leaves the job as it was: due, and run
//! again by the next drain (at-least-once).
//!
//! Burial is one step (SPEC Edge rules "Queue crash consistency"): the
//! complete dead letter, reason included, is written to a temp file in
//! `dead/` and committed by one `link` to `dead/<id>.job` (which never
//! replaces a letter); its stdin and, for an unreadable job file, the file
//! itself are linked into `dead/` before that. A job whose dead letter
//! exists is dead, wherever else its file still is: a drain that finds
//! one still queued (its burier died before removing it) finishes the
//! burial instead of running it, and `--list` shows it once, as dead.

use std::cell::OnceCell;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use super::job::{self, Death, Job, Listed, Parsed, Stamp};
use super::{Claim, Filed, Found, Store};
use crate::error::Error;
use crate::stdin::Replay;
use crate::sys;
use crate::trusted::{self, Dir, Entry, OpenError};

/// The error for a queue directory (or its `state/`, `dead/`) that cannot
/// be made, opened or trusted.
fn open_error(path: &Path, e: OpenError) -> Error {
    let refusing = || format!("refusing the queue directory '{}'", path.display());
    match e {
        OpenError::Create(e) => {
            Error::io(format!("cannot create the queue directory '{}'", path.display()), e)
        }
        OpenError::Open(e) => Error::io(refusing(), e),
        OpenError::Refused(problem) => trusted::refused(&refusing(), path, &problem),
    }
}

fn open_root(dir: &Path, create: bool) -> Result<Option<Dir>, Error> {
    Dir::open(dir, create).map_err(|e| open_error(dir, e))
}

fn open_sub(root: &Dir, name: &str, create: bool) -> Result<Option<Dir>, Error> {
    root.sub(name, create).map_err(|e| open_error(&root.path().join(name), e))
}

/// A directory that `create` must have made.
fn made(dir: Option<Dir>, path: &Path) -> Result<Dir, Error> {
    dir.ok_or_else(|| open_error(path, OpenError::Create(io::ErrorKind::NotFound.into())))
}

/// Creates `dir` (mode 0700, with missing parents) when `create`, and
/// refuses one that is not ours alone: a symlink, owned by another user, or
/// writable by group or others (anyone who can write it could queue
/// commands that a drain runs as us). `Ok(false)`: missing and not created.
pub fn secure_dir(dir: &Path, create: bool) -> Result<bool, Error> {
    Ok(open_root(dir, create)?.is_some())
}

/// Makes `DIR/state/<id>` (mode 0700) for a new job, through the checked
/// queue directory and `state/`; returns its path (`RETRY_STATE_DIR`).
pub fn new_state_dir(dir: &Path, id: &str) -> Result<PathBuf, Error> {
    let root = made(open_root(dir, true)?, dir)?;
    let state = made(open_sub(&root, "state", true)?, &root.path().join("state"))?;
    let err =
        |e| Error::io(format!("cannot create the job's state directory in '{}'", state.path().display()), e);
    match state.mkdir(id) {
        Ok(true) => Ok(state.path().join(id)),
        Ok(false) => Err(err(io::ErrorKind::AlreadyExists.into())),
        Err(e) => Err(err(e)),
    }
}

/// A queue directory.
pub struct DirStore {
    root: Rc<Dir>,
    /// `state/` and `dead/`: checked when the store is opened, when they
    /// exist, and made (through `root`) when first needed.
    state: OnceCell<Dir>,
    dead: OnceCell<Dir>,
    /// Opened to write (`--queue`, `--drain`); `--list` writes nothing.
    writes: bool,
    /// The job names of this drain's pass, oldest first, and the next one.
    pass: Option<(Vec<String>, usize)>,
}

/// A job this process holds the lock of.
pub struct DirClaim {
    job: Job,
    /// Holds the flock; closing it releases the job.
    _lock: File,
    root: Rc<Dir>,
    state: PathBuf,
}

impl Claim for DirClaim {
    fn job(&self) -> &Job {
        &self.job
    }

    /// The recorded stdin; a missing one is `NotFound`, one that is not a
    /// regular file `InvalidData` (never opened).
    fn stdin(&self) -> io::Result<Option<File>> {
        if !self.job.stdin {
            return Ok(None);
        }
        match self.root.open_file(&stdin_name(&self.job.id))? {
            Entry::File(f) => Ok(Some(f)),
            Entry::Missing => Err(io::ErrorKind::NotFound.into()),
            Entry::Other(kind) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it is not a regular file but {kind}"),
            )),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.state.clone()
    }
}

fn job_name(id: &str) -> String {
    format!("{id}.job")
}

fn stdin_name(id: &str) -> String {
    format!("{id}.stdin")
}

/// What reading a job file gave.
fn read_job(file: &File, id: &str) -> io::Result<Parsed> {
    let mut bytes = Vec::new();
    match file.take(job::MAX_FILE + 1).read_to_end(&mut bytes) {
        Err(e) if exhausted(&e) => Err(e),
        Err(e) => Ok(Parsed::Corrupt(format!("cannot read it: {e}"))),
        Ok(_) if bytes.len() as u64 > job::MAX_FILE => {
            Ok(Parsed::Corrupt(format!("larger than {} MiB", job::MAX_FILE >> 20)))
        }
        Ok(_) => Ok(job::parse(&bytes, id)),
    }
}

/// The ids of the `*.job` files in `dir`, sorted (= by creation time).
fn ids_in(dir: &Dir) -> io::Result<Vec<String>> {
    let mut ids: Vec<String> = dir
        .names()?
        .iter()
        .filter_map(|name| {
            name.to_str()?.strip_suffix(".job").filter(|id| job::plausible_id(id)).map(String::from)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

impl DirStore {
    /// Opens (with `create`, makes) the queue directory after checking it,
    /// and its `dead/` and (with `create`) `state/` when they exist, so a
    /// drain refuses an untrusted one before any job runs; a missing one is
    /// made through the checked directory when first needed. `Ok(None)`:
    /// the directory does not exist and was not created.
    pub fn open(dir: &Path, create: bool) -> Result<Option<DirStore>, Error> {
        let Some(root) = open_root(dir, create)? else { return Ok(None) };
        let (state, dead) = (OnceCell::new(), OnceCell::new());
        if let Some(d) = open_sub(&root, "dead", false)? {
            let _ = dead.set(d);
        }
        if create {
            if let Some(d) = open_sub(&root, "state", false)? {
                let _ = state.set(d);
            }
        }
        Ok(Some(DirStore { root: Rc::new(root), state, dead, writes: create, pass: None }))
    }

    /// `dead/`, made when missing.
    fn dead(&self) -> Result<&Dir, Error> {
        self.sub(&self.dead, "dead")
    }

    /// `state/`, made when missing.
    fn state(&self) -> Result<&Dir, Error> {
        self.sub(&self.state, "state")
    }

    fn sub<'a>(&self, cell: &'a OnceCell<Dir>, name: &str) -> Result<&'a Dir, Error> {
        if cell.get().is_none() {
            if !self.writes {
                return Err(self.io("cannot change the queue", io::Error::other("opened to read")));
            }
            let dir = made(open_sub(&self.root, name, true)?, &self.root.path().join(name))?;
            let _ = cell.set(dir);
        }
        cell.get().ok_or_else(|| self.io("cannot open", io::ErrorKind::NotFound.into()))
    }

    fn io(&self, what: &str, e: io::Error) -> Error {
        Error::io(format!("{what} in the queue '{}'", self.root.path().display()), e)
    }

    fn sync(&self, dir: &Dir) -> Result<(), Error> {
        dir.sync().map_err(|e| self.io("cannot sync", e))
    }

    /// Locks and reads one job. `None`: gone, held by another drain, or
    /// found dead (its burial is finished here).
    fn try_claim(&self, id: &str) -> Result<Option<Found<DirClaim>>, Error> {
        let name = job_name(id);
        // A reschedule replaces the file: lock the one that is linked now.
        for _ in 0..8 {
            let file = match self.root.open_file(&name) {
                Ok(Entry::File(f)) => f,
                Ok(Entry::Missing) => return Ok(None),
                Ok(Entry::Other(kind)) => {
                    return self.corrupt(id, format!("it is not a regular file but {kind}"));
                }
                Err(e) if exhausted(&e) => return Err(self.io(&format!("cannot open job {id}"), e)),
                // Nobody can open it, so nobody runs it: set it aside.
                Err(e) => return self.corrupt(id, format!("cannot open it: {e}")),
            };
            if !sys::try_lock(file.as_fd()).map_err(|e| self.io(&format!("cannot lock job {id}"), e))? {
                return Ok(None);
            }
            let linked = self.root.names_file(&name, &file);
            if !linked.map_err(|e| self.io(&format!("cannot read job {id}"), e))? {
                // Replaced (locked anew next round) or removed.
                continue;
            }
            // Buried by a drain that died before it removed the queued
            // copy: the job is dead, not due.
            let dead = self.dead.get().map(|d| d.exists(&name)).transpose();
            if dead.map_err(|e| self.io(&format!("cannot read job {id}"), e))? == Some(true) {
                self.finish_burial(id)?;
                return Ok(None);
            }
            let parsed = read_job(&file, id).map_err(|e| self.io(&format!("cannot read job {id}"), e))?;
            return match parsed {
                Parsed::Job(job) => self.claimed(*job, file),
                Parsed::Newer(version) => Ok(Some(Found::Newer { id: id.to_string(), version })),
                Parsed::Corrupt(why) => self.corrupt(id, why),
            };
        }
        Ok(None)
    }

    /// A job locked and read: its state dir (`state/<id>`, kept for a job
    /// queued with `--temp-state`), when it has one, must be a directory of
    /// ours; a job whose state dir is not is buried, since its attempt
    /// would write where it should not.
    fn claimed(&self, mut job: Job, lock: File) -> Result<Option<Found<DirClaim>>, Error> {
        let state = self.state()?;
        let path = state.path().join(&job.id);
        match state.sub(&job.id, false) {
            Ok(_) => {
                Ok(Some(Found::Job(DirClaim { job, _lock: lock, root: Rc::clone(&self.root), state: path })))
            }
            Err(OpenError::Refused(problem)) => {
                let reason = format!("its state directory '{}' is refused: {problem}", path.display());
                job.dead = Some(Death { at: Stamp(SystemTime::now()), reason: reason.clone() });
                let id = job.id.clone();
                self.write_dead(&job)?;
                self.finish_burial(&id)?;
                Ok(Some(Found::Corrupt { id, reason }))
            }
            Err(OpenError::Create(e) | OpenError::Open(e)) => {
                Err(self.io(&format!("cannot make the state directory of job {}", job.id), e))
            }
        }
    }

    /// Buries an unreadable job file and says so; `None` when another drain
    /// buried it first.
    fn corrupt(&self, id: &str, why: String) -> Result<Option<Found<DirClaim>>, Error> {
        let reason = format!("corrupt job file (kept as dead/{id}.corrupt): {why}");
        if self.bury_corrupt(id, &reason)? {
            Ok(Some(Found::Corrupt { id: id.to_string(), reason }))
        } else {
            Ok(None)
        }
    }

    /// Moves an unreadable job file to `dead/<id>.corrupt`, as it is, with
    /// a dead letter `dead/<id>.job` that says why. The file is linked into
    /// `dead/` before the letter is committed, so the letter's commit is
    /// the one step that makes the job dead; a directory, which cannot be
    /// linked, is renamed there after it. `Ok(false)`: a letter was there.
    fn bury_corrupt(&self, id: &str, reason: &str) -> Result<bool, Error> {
        let dead = self.dead()?;
        let kept = format!("{id}.corrupt");
        match self.root.link(&job_name(id), dead, &kept) {
            // Linked now, or by an earlier try of a drain that died.
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOENT)) => {}
            Err(e) => return Err(self.io(&format!("cannot move job {id} to dead/"), e)),
        }
        let mut letter = Job::corrupt(id, SystemTime::now(), reason.to_string());
        letter.stdin =
            self.root.exists(&stdin_name(id)).map_err(|e| self.io(&format!("cannot read job {id}"), e))?;
        let committed = self.write_dead(&letter)?;
        self.finish_burial(id)?;
        Ok(committed)
    }

    /// Commits a dead letter: the job's recorded stdin linked into `dead/`,
    /// then the letter written to a temp file there and linked as
    /// `<id>.job`. `Ok(false)`: a letter of that id was there already
    /// (the job was dead before).
    fn write_dead(&self, letter: &Job) -> Result<bool, Error> {
        let dead = self.dead()?;
        let id = &letter.id;
        if letter.stdin {
            match self.root.link(&stdin_name(id), dead, &stdin_name(id)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&format!("cannot keep the stdin of job {id}"), e)),
            }
        }
        let bytes = to_json(letter)?;
        let err = |e| self.io(&format!("cannot write the dead letter of job {id}"), e);
        let tmp = dead.temp().map_err(err)?;
        tmp.file().write_all(&bytes).map_err(err)?;
        let committed = tmp.commit_new(&job_name(id), true).map_err(err)?;
        self.sync(dead)?;
        Ok(committed)
    }

    /// The last step of a burial (repeated by a later drain when the first
    /// died before it): the queued copy goes, then the stdin and state dir.
    fn finish_burial(&self, id: &str) -> Result<(), Error> {
        let name = job_name(id);
        match self.root.unlink(&name) {
            Ok(()) => {}
            // A directory where the job file was: kept as `.corrupt`.
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => self
                .root
                .rename(&name, self.dead()?, &format!("{id}.corrupt"))
                .map_err(|e| self.io(&format!("cannot move job {id} to dead/"), e))?,
            Err(e) => return Err(self.io(&format!("cannot remove job {id}"), e)),
        }
        self.remove_side_files(id);
        self.sync(&self.root)
    }

    /// Removes a finished job's stdin and state dir (after its file, so a
    /// crash in between leaves only harmless leftovers, never a job
    /// without its stdin).
    fn remove_side_files(&self, id: &str) {
        let _ = self.root.remove_tree(&stdin_name(id));
        if let Some(state) = self.state.get() {
            let _ = state.remove_tree(id);
        }
    }

    /// The jobs of `dir` for `--list`.
    fn list_in(&self, dir: &Dir, dead: bool, out: &mut super::Jobs) -> Result<(), Error> {
        for id in ids_in(dir).map_err(|e| self.io("cannot read the jobs", e))? {
            let parsed = match dir.open_file(&job_name(&id)) {
                Ok(Entry::Missing) => continue,
                Ok(Entry::Other(kind)) => Parsed::Corrupt(format!("it is not a regular file but {kind}")),
                Ok(Entry::File(file)) => {
                    read_job(&file, &id).map_err(|e| self.io(&format!("cannot read job {id}"), e))?
                }
                Err(e) if exhausted(&e) => return Err(self.io(&format!("cannot read job {id}"), e)),
                Err(e) => Parsed::Corrupt(format!("cannot read it: {e}")),
            };
            out.push(Listed::parsed(parsed, &id, dead, "file"));
        }
        Ok(())
    }
}

impl Store for DirStore {
    type Claim = DirClaim;

    fn location(&self, id: &str) -> String {
        self.root.path().join(job_name(id)).display().to_string()
    }

    fn enqueue(&mut self, job: &Job, stdin: Option<&Replay>) -> Result<(), Error> {
        let id = &job.id;
        let err = |e| self.io(&format!("cannot write job {id}"), e);
        if let Some(replay) = stdin {
            self.root.write_atomic(&stdin_name(id), true, |f| replay.write_to(f.as_raw_fd())).map_err(err)?;
        }
        let bytes = to_json(job)?;
        self.root.write_atomic(&job_name(id), true, |mut f| f.write_all(&bytes)).map_err(err)?;
        self.sync(&self.root)
    }

    fn claim_next(&mut self, _cutoff: SystemTime) -> Result<Option<Found<DirClaim>>, Error> {
        if self.pass.is_none() {
            // Temp files of drains that died (a live writer holds its lock).
            self.root.clean_temps();
            if let Some(dead) = self.dead.get() {
                dead.clean_temps();
            }
            self.pass = Some((ids_in(&self.root).map_err(|e| self.io("cannot read the jobs", e))?, 0));
        }
        loop {
            let Some((ids, next)) = self.pass.as_mut() else { return Ok(None) };
            let Some(id) = ids.get(*next).cloned() else { return Ok(None) };
            *next += 1;
            if let Some(found) = self.try_claim(&id)? {
                return Ok(Some(found));
            }
        }
    }

    fn complete(&mut self, claim: DirClaim) -> Result<Filed, Error> {
        let id = &claim.job.id;
        // No fsync: if a crash undoes the removal, the job runs once more.
        self.root.unlink(&job_name(id)).map_err(|e| self.io(&format!("cannot remove job {id}"), e))?;
        self.remove_side_files(id);
        // A stdin linked into dead/ by a burial that died before its letter.
        if let Some(dead) = self.dead.get() {
            if dead.exists(&job_name(id)).is_ok_and(|there| !there) {
                let _ = dead.unlink(&stdin_name(id));
            }
        }
        // The lock is held until here: a claim is never lost.
        Ok(Filed::Saved)
    }

    fn reschedule(&mut self, claim: DirClaim, job: &Job) -> Result<Filed, Error> {
        let id = &claim.job.id;
        let bytes = to_json(job)?;
        self.root
            .write_atomic(&job_name(id), true, |mut f| f.write_all(&bytes))
            .map_err(|e| self.io(&format!("cannot reschedule job {id}"), e))?;
        self.sync(&self.root)?;
        Ok(Filed::Saved)
    }

    fn bury(&mut self, claim: DirClaim, job: &Job) -> Result<Filed, Error> {
        // Under the job's lock: no other drain buries it meanwhile, and
        // try_claim finished any earlier burial, so the letter is new.
        self.write_dead(job)?;
        self.finish_burial(&claim.job.id)?;
        Ok(Filed::Saved)
    }

    /// Every job once: the queue is read before `dead/`, and a job that is
    /// in both (buried meanwhile, or by a drain that died before removing
    /// it) is shown as dead.
    fn list(&mut self) -> Result<super::Jobs, Error> {
        let mut out = Vec::new();
        self.list_in(&self.root, false, &mut out)?;
        // A drain may have made dead/ since the store was opened.
        if self.dead.get().is_none() {
            if let Some(d) = open_sub(&self.root, "dead", false)? {
                let _ = self.dead.set(d);
            }
        }
        if let Some(dead) = self.dead.get() {
            let mut buried = Vec::new();
            self.list_in(dead, true, &mut buried)?;
            let ids: HashSet<&str> = buried.iter().map(|(l, _)| l.id.as_str()).collect();
            out.retain(|(l, _)| !ids.contains(l.id.as_str()));
            out.extend(buried);
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(out)
    }
}

/// Out of descriptors or memory: retry's trouble, not the job file's.
fn exhausted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM))
}

fn to_json(job: &Job) -> Result<Vec<u8>, Error> {
    let mut bytes =
        serde_json::to_vec(job).map_err(|e| Error::io("cannot encode a job", io::Error::other(e)))?;
    bytes.push(b'\n');
    Ok(bytes)
}
