//! The queue in a directory: one JSON file per job (`<id>.job`, mode
//! 0600), its recorded stdin beside it (`<id>.stdin`), its kept state dir
//! in `state/<id>/`, dead letters in `dead/`.
//!
//! Every write is a temp file in the same directory, fsynced, renamed over
//! the target, then the directory fsynced: a crash leaves the old or the
//! new file, never half of one. A drain claims a job with `flock` on its
//! file (the lock dies with the process, even by SIGKILL) and checks that
//! the locked file is still the one linked under the job's name: a job
//! rescheduled meanwhile is a new file, which must be locked anew. A job
//! file is only ever replaced or removed by the holder of its lock, as
//! its last step, so a drain that dies leaves the job as it was: due, and
//! run again by the next drain (at-least-once).

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::job::{self, Job, Listed, Parsed};
use super::{Claim, Filed, Found, Store};
use crate::error::Error;
use crate::stdin::Replay;
use crate::sys;

/// Temp files a crash left behind are removed after this long.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Creates `dir` (mode 0700, with missing parents) when `create`, and
/// refuses one that is not ours alone: owned by another user, or writable
/// by group or others (anyone who can write it could queue commands that
/// a drain runs as us). `Ok(false)`: missing and not created.
pub fn secure_dir(dir: &Path, create: bool) -> Result<bool, Error> {
    let what = || format!("refusing the queue directory '{}'", dir.display());
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
                Error::io(format!("cannot create the queue directory '{}'", dir.display()), e)
            })?;
            fs::metadata(dir).map_err(|e| Error::io(what(), e))?
        }
        Err(e) => return Err(Error::io(what(), e)),
    };
    let refuse = |why: String| Err(Error::io(what(), io::Error::new(io::ErrorKind::PermissionDenied, why)));
    if !meta.is_dir() {
        return refuse("it is not a directory".to_string());
    }
    let me = sys::euid();
    if meta.uid() != me {
        return refuse(format!("it is owned by uid {}, not by you (uid {me})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "it is writable by group or others (mode {:04o}); run: chmod go-w '{}'",
            meta.mode() & 0o7777,
            dir.display()
        ));
    }
    Ok(true)
}

/// A queue directory.
pub struct DirStore {
    dir: PathBuf,
    /// The job names of this drain's pass, oldest first, and the next one.
    pass: Option<(Vec<String>, usize)>,
}

/// A job this process holds the lock of.
pub struct DirClaim {
    job: Job,
    /// Holds the flock; closing it releases the job.
    _lock: File,
    stdin: PathBuf,
    state: PathBuf,
}

impl Claim for DirClaim {
    fn job(&self) -> &Job {
        &self.job
    }

    fn stdin(&self) -> io::Result<Option<File>> {
        if self.job.stdin { File::open(&self.stdin).map(Some) } else { Ok(None) }
    }

    fn state_dir(&self) -> PathBuf {
        self.state.clone()
    }
}

impl DirStore {
    /// Opens (with `create`, makes) the queue directory after checking it.
    /// `Ok(None)`: it does not exist and was not created.
    pub fn open(dir: &Path, create: bool) -> Result<Option<DirStore>, Error> {
        if !secure_dir(dir, create)? {
            return Ok(None);
        }
        Ok(Some(DirStore { dir: dir.to_path_buf(), pass: None }))
    }

    fn job_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.job"))
    }

    fn stdin_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.stdin"))
    }

    /// `DIR/state/<id>`: a queued job's `RETRY_STATE_DIR`.
    pub fn state_path(&self, id: &str) -> PathBuf {
        self.dir.join("state").join(id)
    }

    fn dead_dir(&self) -> Result<PathBuf, Error> {
        let dead = self.dir.join("dead");
        secure_dir(&dead, true)?;
        Ok(dead)
    }

    fn io(&self, what: &str, e: io::Error) -> Error {
        Error::io(format!("{what} in the queue '{}'", self.dir.display()), e)
    }

    /// The ids of the `*.job` files in `dir`, sorted (= by creation time);
    /// removes temp files a crash left behind.
    fn ids_in(&self, dir: &Path) -> Result<Vec<String>, Error> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io("cannot read the jobs", e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io("cannot read the jobs", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".tmp-") {
                let old = entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP);
                if old {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            if let Some(id) = name.strip_suffix(".job").filter(|id| job::plausible_id(id)) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Locks and reads one job. `None`: gone, or held by another drain.
    fn try_claim(&self, id: &str) -> Result<Option<Found<DirClaim>>, Error> {
        let path = self.job_path(id);
        // A reschedule replaces the file: lock the one that is linked now.
        for _ in 0..8 {
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) if exhausted(&e) => return Err(self.io(&format!("cannot open job {id}"), e)),
                // Nobody can open it, so nobody runs it: set it aside.
                Err(e) => return self.corrupt(id, format!("cannot open it: {e}")),
            };
            if !sys::try_lock(file.as_fd()).map_err(|e| self.io(&format!("cannot lock job {id}"), e))? {
                return Ok(None);
            }
            let held = file.metadata().map_err(|e| self.io(&format!("cannot read job {id}"), e))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.io(&format!("cannot read job {id}"), e)),
            }
            let mut bytes = Vec::new();
            let parsed = match (&mut file).take(job::MAX_FILE + 1).read_to_end(&mut bytes) {
                Err(e) if exhausted(&e) => return Err(self.io(&format!("cannot read job {id}"), e)),
                Err(e) => Parsed::Corrupt(format!("cannot read it: {e}")),
                Ok(_) if bytes.len() as u64 > job::MAX_FILE => {
                    Parsed::Corrupt(format!("larger than {} MiB", job::MAX_FILE >> 20))
                }
                Ok(_) => job::parse(&bytes, id),
            };
            return match parsed {
                Parsed::Job(job) => Ok(Some(Found::Job(DirClaim {
                    job: *job,
                    _lock: file,
                    stdin: self.stdin_path(id),
                    state: self.state_path(id),
                }))),
                Parsed::Newer(version) => Ok(Some(Found::Newer { id: id.to_string(), version })),
                Parsed::Corrupt(why) => self.corrupt(id, why),
            };
        }
        Ok(None)
    }

    /// Buries an unreadable job file and says so.
    fn corrupt(&self, id: &str, why: String) -> Result<Option<Found<DirClaim>>, Error> {
        let reason = format!("corrupt job file (kept as dead/{id}.corrupt): {why}");
        self.bury_corrupt(id, &reason)?;
        Ok(Some(Found::Corrupt { id: id.to_string(), reason }))
    }

    /// Moves an unreadable job file to `dead/<id>.corrupt`, as it is, with
    /// a dead letter `dead/<id>.job` that says why (the lock is held).
    fn bury_corrupt(&self, id: &str, reason: &str) -> Result<(), Error> {
        let dead = self.dead_dir()?;
        let mut letter = Job::corrupt(id, SystemTime::now(), reason.to_string());
        letter.stdin = self.stdin_path(id).exists();
        self.write_dead(&dead, &letter)?;
        fs::rename(self.job_path(id), dead.join(format!("{id}.corrupt")))
            .map_err(|e| self.io(&format!("cannot move job {id} to dead/"), e))?;
        self.sync(&dead)?;
        self.remove_side_files(id);
        self.sync(&self.dir)
    }

    /// Writes a dead letter, with the job's recorded stdin linked beside it.
    fn write_dead(&self, dead: &Path, letter: &Job) -> Result<(), Error> {
        let id = &letter.id;
        write_atomic(dead, &format!("{id}.job"), &to_json(letter)?)
            .map_err(|e| self.io(&format!("cannot write the dead letter of job {id}"), e))?;
        if letter.stdin {
            let target = dead.join(format!("{id}.stdin"));
            match fs::hard_link(self.stdin_path(id), &target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists || e.kind() == io::ErrorKind::NotFound => {
                }
                Err(e) => return Err(self.io(&format!("cannot keep the stdin of job {id}"), e)),
            }
        }
        Ok(())
    }

    /// Removes a finished job's stdin and state dir (after its file, so a
    /// crash in between leaves only harmless leftovers, never a job
    /// without its stdin).
    fn remove_side_files(&self, id: &str) {
        let _ = fs::remove_file(self.stdin_path(id));
        let _ = fs::remove_dir_all(self.state_path(id));
    }

    fn sync(&self, dir: &Path) -> Result<(), Error> {
        sync_dir(dir).map_err(|e| self.io("cannot sync", e))
    }

    /// The jobs of `dir` for `--list`.
    fn list_in(&self, dir: &Path, dead: bool, out: &mut Vec<(Listed, Option<String>)>) -> Result<(), Error> {
        for id in self.ids_in(dir)? {
            let path = dir.join(format!("{id}.job"));
            let mut bytes = Vec::new();
            let read = File::open(&path).and_then(|f| f.take(job::MAX_FILE + 1).read_to_end(&mut bytes));
            let parsed = match read {
                Ok(_) => job::parse(&bytes, &id),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if exhausted(&e) => return Err(self.io(&format!("cannot read job {id}"), e)),
                Err(e) => Parsed::Corrupt(format!("cannot read it: {e}")),
            };
            let (line, problem) = match parsed {
                Parsed::Job(job) => (Listed::of(&job, dead), None),
                Parsed::Newer(v) => {
                    let why = format!(
                        "written by a newer retry (job format version {v}; this one reads {})",
                        job::VERSION
                    );
                    (Listed::unreadable(&id, dead, why.clone()), Some(why))
                }
                Parsed::Corrupt(why) => {
                    let why = format!("corrupt job file: {why}");
                    (Listed::unreadable(&id, dead, why.clone()), Some(why))
                }
            };
            out.push((line, problem));
        }
        Ok(())
    }
}

impl Store for DirStore {
    type Claim = DirClaim;

    fn location(&self, id: &str) -> String {
        self.job_path(id).display().to_string()
    }

    fn enqueue(&mut self, job: &Job, stdin: Option<&Replay>) -> Result<(), Error> {
        let id = &job.id;
        let err = |e| self.io(&format!("cannot write job {id}"), e);
        if let Some(replay) = stdin {
            write_atomic_with(&self.dir, &format!("{id}.stdin"), |f| {
                replay.write_to(std::os::fd::AsRawFd::as_raw_fd(f))
            })
            .map_err(err)?;
        }
        write_atomic(&self.dir, &format!("{id}.job"), &to_json(job)?).map_err(err)?;
        self.sync(&self.dir)
    }

    fn claim_next(&mut self, _cutoff: SystemTime) -> Result<Option<Found<DirClaim>>, Error> {
        if self.pass.is_none() {
            self.pass = Some((self.ids_in(&self.dir)?, 0));
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
        fs::remove_file(self.job_path(id)).map_err(|e| self.io(&format!("cannot remove job {id}"), e))?;
        self.remove_side_files(id);
        // The lock is held until here: a claim is never lost.
        Ok(Filed::Saved)
    }

    fn reschedule(&mut self, claim: DirClaim, job: &Job) -> Result<Filed, Error> {
        let id = &claim.job.id;
        write_atomic(&self.dir, &format!("{id}.job"), &to_json(job)?)
            .map_err(|e| self.io(&format!("cannot reschedule job {id}"), e))?;
        self.sync(&self.dir)?;
        Ok(Filed::Saved)
    }

    fn bury(&mut self, claim: DirClaim, job: &Job) -> Result<Filed, Error> {
        let id = &claim.job.id;
        let dead = self.dead_dir()?;
        self.write_dead(&dead, job)?;
        self.sync(&dead)?;
        fs::remove_file(self.job_path(id)).map_err(|e| self.io(&format!("cannot remove job {id}"), e))?;
        self.remove_side_files(id);
        self.sync(&self.dir)?;
        Ok(Filed::Saved)
    }

    fn list(&mut self) -> Result<Vec<(Listed, Option<String>)>, Error> {
        let mut out = Vec::new();
        self.list_in(&self.dir.clone(), false, &mut out)?;
        self.list_in(&self.dir.join("dead"), true, &mut out)?;
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

/// Writes `name` in `dir` atomically: a temp file (mode 0600) in `dir`,
/// fsynced, renamed over `name`. The caller fsyncs `dir`.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(dir, name, |f| (&*f).write_all(bytes))
}

fn write_atomic_with(dir: &Path, name: &str, fill: impl FnOnce(&File) -> io::Result<()>) -> io::Result<()> {
    let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    fill(tmp.as_file())?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

/// fsync of a directory: makes its renames and new names durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
