//! The file store (`--state-store file:DIR`): shared state of one machine.
//!
//! Layout, per key (`api`):
//!
//! ```text
//! DIR/                 mode 0700, owned by the user
//!   api.state          consecutive failures, when the last one ended, the
//!                      latest attempt starts (binary, below); replaced atomically
//!   api.state.tmp      the next api.state, renamed over it
//!   api.lock           empty; flock'ed around each read-modify-write of api.state
//!   api.trial          empty; flock'ed by the circuit's trial run while it runs
//!   api.slot.0 … N-1   empty; each flock'ed by an attempt that holds that slot
//! ```
//!
//! Every update of `api.state` happens under an exclusive `flock` of
//! `api.lock`, writes the temp file and renames it over the old one, without
//! fsync (SPEC Edge rules): a crash or power cut may lose recent counts but
//! never leaves a half-written file that is read as valid. A file that does
//! not parse anyway (truncated, edited, from another program) is reported
//! and reset. Locks belong to open files, so whatever a process held — the
//! state lock, a slot, the trial — is free the moment it dies, even by
//! SIGKILL. The lock files are never removed: removing a file others may be
//! locking races with them.
//!
//! `KEY.state` is binary, little-endian, so that even 10,000 recorded
//! starts cost microseconds to read and write (as JSON they took ~0.3 ms
//! per attempt):
//!
//! ```text
//! 0   8  magic and version  "RETRYST1"
//! 8   4  failures           consecutive runs that gave up (u32)
//! 12  4  count              recorded starts (u32, at most 10,000)
//! 16  8  last_failure_us    when the last of those runs ended (u64, µs since the epoch)
//! 24  8×count               the starts, oldest first (u64, µs since the epoch)
//! ```
//!
//! A file of another length than 24 + 8×count, with another magic, or
//! with unsorted starts is corrupt.
//!
//! The clock is the system clock (microseconds since the epoch); a clock
//! that jumps back is clamped so that it never makes anyone wait longer than
//! a cooldown or a rate window.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Admission, Circuit, Key, Rate, RunEnd, Slot, Store, StoreError, Turn};
use crate::sys;
use crate::trusted::{Dir, Entry, OpenError, Problem};

/// The first bytes of a state file: what it is and its format version.
const MAGIC: &[u8; 8] = b"RETRYST1";

/// The fixed part of a state file.
const HEADER: usize = 24;

/// The largest valid state file.
const STATE_MAX: usize = HEADER + 8 * super::RATE_MAX as usize;

/// One key's shared state, as stored in `KEY.state`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    /// Consecutive runs that gave up.
    failures: u32,
    /// When the last of them ended (µs since the epoch).
    last_failure_us: u64,
    /// The latest attempt starts (µs since the epoch), oldest first; at most
    /// `--rate` N of them.
    starts_us: Vec<u64>,
}

impl State {
    fn new() -> State {
        State { failures: 0, last_failure_us: 0, starts_us: Vec::new() }
    }

    fn encode(&self) -> Vec<u8> {
        let count = self.starts_us.len().min(super::RATE_MAX as usize);
        let mut out = Vec::with_capacity(HEADER + 8 * count);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.failures.to_le_bytes());
        out.extend_from_slice(&u32::try_from(count).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.last_failure_us.to_le_bytes());
        for s in &self.starts_us[self.starts_us.len() - count..] {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    /// The state in `bytes`, or why they are not one.
    fn decode(bytes: &[u8]) -> Result<State, String> {
        let word = |at: usize| -> u64 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let half = |at: usize| -> u32 {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        if bytes.len() < HEADER {
            return Err(format!("truncated: {} bytes", bytes.len()));
        }
        if &bytes[..8] != MAGIC {
            return Err(if bytes.starts_with(b"RETRYST") {
                "written by another version of retry".to_string()
            } else {
                "not a retry state file".to_string()
            });
        }
        let count = half(12) as usize;
        if count > super::RATE_MAX as usize {
            return Err(format!("{count} starts recorded"));
        }
        let want = HEADER + 8 * count;
        if bytes.len() != want {
            return Err(format!("{} bytes where {want} were expected", bytes.len()));
        }
        let starts_us: Vec<u64> = (0..count).map(|i| word(HEADER + 8 * i)).collect();
        if starts_us.windows(2).any(|w| w[0] > w[1]) {
            return Err("starts out of order".to_string());
        }
        Ok(State { failures: half(8), last_failure_us: word(16), starts_us })
    }
}

/// The store's clock: microseconds since the epoch.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What the circuit is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CircuitNow {
    Closed,
    Open {
        remaining: Duration,
    },
    /// The cooldown is over: one trial run may go.
    HalfOpen,
}

fn circuit_now(state: &State, circuit: &Circuit, now: u64) -> CircuitNow {
    if state.failures < circuit.threshold {
        return CircuitNow::Closed;
    }
    // A failure "in the future" (the clock went back) ended just now.
    let since = now.saturating_sub(state.last_failure_us.min(now));
    let cooldown = micros(circuit.cooldown);
    if since < cooldown {
        CircuitNow::Open { remaining: Duration::from_micros(cooldown - since) }
    } else {
        CircuitNow::HalfOpen
    }
}

/// The sliding window: a start at `now` is allowed when fewer than `n`
/// starts lie in the window that ends now, i.e. when the n-th latest start
/// is at least `window` old; then it is recorded. `starts` stays sorted and
/// holds at most `n` entries.
fn rate_decide(starts: &mut Vec<u64>, now: u64, n: u32, window: Duration) -> Turn {
    let window = micros(window);
    // A start "in the future" (the clock went back) happened just now.
    for s in starts.iter_mut() {
        *s = (*s).min(now);
    }
    starts.retain(|&s| now - s < window);
    let n = usize::try_from(n).unwrap_or(usize::MAX).max(1);
    if starts.len() >= n {
        let oldest = starts[starts.len() - n];
        return Turn::Wait(Duration::from_micros(window - (now - oldest)));
    }
    starts.push(now);
    if starts.len() > n {
        starts.drain(..starts.len() - n);
    }
    Turn::Go
}

/// The file store of one directory, held open (SPEC Edge rules "Trusted
/// directories"): every file is reached relative to it, never through its
/// path again, and an entry that is not a regular file is refused (125),
/// never opened in a way that blocks.
pub struct FileStore {
    dir: Dir,
    /// The state lock file of the key used last (a run uses one key; a
    /// drain of many jobs reopens it when the key changes).
    lock: Option<(Key, File)>,
    /// The circuit trial locks this process holds, by key.
    trials: HashMap<String, File>,
    warnings: Vec<String>,
}

/// Releases the state lock when an update ends, however it ends.
struct Locked<'a>(&'a File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        sys::funlock(self.0.as_fd());
    }
}

fn name(dir: &Path) -> String {
    format!("state store 'file:{}'", dir.display())
}

/// `KEY.suffix`: a file of the key in the store.
fn file_of(key: &Key, suffix: &str) -> String {
    format!("{}.{suffix}", key.as_str())
}

/// Opens (creating it empty, mode 0600, if missing) the lock file `file`.
fn open_lock_file(dir: &Dir, file: &str) -> Result<File, StoreError> {
    match dir.lock_file(file) {
        Ok(Entry::File(f)) => Ok(f),
        Ok(Entry::Other(kind)) => Err(not_regular(dir, file, kind)),
        Ok(Entry::Missing) => Err(io_error(dir, "open", file, &io::ErrorKind::NotFound.into())),
        Err(e) => Err(io_error(dir, "open", file, &e)),
    }
}

fn io_error(dir: &Dir, doing: &str, file: &str, e: &io::Error) -> StoreError {
    StoreError::unavailable(format!("{}: cannot {doing} '{file}': {e}", name(dir.path())))
}

/// Something that is not a regular file where the store keeps one: never
/// opened, refused (also under --store-optional: the directory is not as
/// retry left it).
fn not_regular(dir: &Dir, file: &str, kind: &str) -> StoreError {
    StoreError::insecure(format!(
        "{}: '{file}' is not a regular file but {kind}: refusing to use it; remove it",
        name(dir.path())
    ))
}

impl FileStore {
    /// Creates DIR (and its parents) with mode 0700 when missing, and
    /// refuses a DIR that is a symlink, that others could write to or that
    /// belongs to someone else.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        let what = name(dir);
        let dir = match Dir::open(dir, true) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Err(StoreError::unavailable(format!("{what}: cannot create the directory"))),
            Err(OpenError::Create(e)) => {
                return Err(StoreError::unavailable(format!("{what}: cannot create the directory: {e}")));
            }
            Err(OpenError::Open(e)) => return Err(StoreError::unavailable(format!("{what}: {e}"))),
            Err(OpenError::Refused(problem)) => return Err(refused(&what, &problem)),
        };
        Ok(FileStore { dir, lock: None, trials: HashMap::new(), warnings: Vec::new() })
    }

    /// Runs `update` on the key's state under its lock; writes the state
    /// back when `update` says it changed (or when a corrupt file must be
    /// reset). `update` gets the store's clock.
    fn with_state<T>(
        &mut self,
        key: &Key,
        update: impl FnOnce(&mut State, u64, &mut HashMap<String, File>) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let lock = match self.lock.take() {
            Some((k, file)) if k == *key => file,
            _ => open_lock_file(&self.dir, &file_of(key, "lock"))?,
        };
        let result = self.locked(key, &lock, update);
        self.lock = Some((key.clone(), lock));
        result
    }

    fn locked<T>(
        &mut self,
        key: &Key,
        lock: &File,
        update: impl FnOnce(&mut State, u64, &mut HashMap<String, File>) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        sys::flock(lock.as_fd(), true, true)
            .map_err(|e| io_error(&self.dir, "lock", &file_of(key, "lock"), &e))?;
        let _unlock = Locked(lock);
        let file = file_of(key, "state");
        let (mut state, reset) = match read_state(&self.dir, &file) {
            Ok(Some(state)) => (state, false),
            Ok(None) => (State::new(), false),
            Err(Corrupt::Io(e)) => return Err(io_error(&self.dir, "read", &file, &e)),
            Err(Corrupt::NotRegular(kind)) => return Err(not_regular(&self.dir, &file, kind)),
            Err(Corrupt::Bad(why)) => {
                self.warnings.push(format!(
                    "{}: state file '{}' was corrupt ({why}); it was reset",
                    name(self.dir.path()),
                    self.dir.path().join(&file).display()
                ));
                (State::new(), true)
            }
        };
        let (value, changed) = update(&mut state, now_us(), &mut self.trials)?;
        if changed || reset {
            let tmp = file_of(key, "state.tmp");
            write_state(&self.dir, &tmp, &file, &state).map_err(|(step, e)| {
                let failed = match step {
                    Step::Tmp => &tmp,
                    Step::Rename => &file,
                };
                io_error(&self.dir, "write", failed, &e)
            })?;
        }
        Ok(value)
    }
}

/// The store's refusal of its directory, in its own words.
fn refused(what: &str, problem: &Problem) -> StoreError {
    match problem {
        Problem::Owner { uid, me } => StoreError::insecure(format!(
            "{what} is owned by uid {uid}, not by you (uid {me}): refusing to use it"
        )),
        Problem::Writable { mode } => StoreError::insecure(format!(
            "{what} is group- or world-writable (mode {mode:04o}): refusing to use it; \
             chmod go-w it or use another directory"
        )),
        Problem::Symlink => StoreError::insecure(format!(
            "{what} is a symbolic link: refusing to use it; give the directory it points to"
        )),
        Problem::NotDir(kind) => StoreError::unavailable(format!("{what}: not a directory but {kind}")),
    }
}

/// Which file a write failed on.
enum Step {
    Tmp,
    Rename,
}

enum Corrupt {
    Io(io::Error),
    NotRegular(&'static str),
    Bad(String),
}

/// The state in `file`; `None` when there is none yet.
fn read_state(dir: &Dir, file: &str) -> Result<Option<State>, Corrupt> {
    let file = match dir.open_file(file) {
        Ok(Entry::File(f)) => f,
        Ok(Entry::Missing) => return Ok(None),
        Ok(Entry::Other(kind)) => return Err(Corrupt::NotRegular(kind)),
        Err(e) => return Err(Corrupt::Io(e)),
    };
    let size = file.metadata().map_or(0, |m| usize::try_from(m.len()).unwrap_or(usize::MAX));
    let mut bytes = Vec::with_capacity(size.min(STATE_MAX) + 1);
    file.take(STATE_MAX as u64 + 1).read_to_end(&mut bytes).map_err(Corrupt::Io)?;
    if bytes.is_empty() {
        return Err(Corrupt::Bad("empty".to_string()));
    }
    State::decode(&bytes).map(Some).map_err(Corrupt::Bad)
}

/// Temp file `tmp`, then rename over `file`; no fsync (SPEC Edge rules).
/// Under the key's lock nobody else writes `tmp`: whatever is there (a
/// leftover, a planted symlink) is removed, never followed, and the temp
/// file is created anew (`O_EXCL|O_NOFOLLOW`).
fn write_state(dir: &Dir, tmp: &str, file: &str, state: &State) -> Result<(), (Step, io::Error)> {
    let bytes = state.encode();
    dir.unlink(tmp).map_err(|e| (Step::Tmp, e))?;
    let mut out = dir.create_new(tmp).map_err(|e| (Step::Tmp, e))?;
    out.write_all(&bytes).map_err(|e| (Step::Tmp, e))?;
    drop(out);
    dir.rename(tmp, dir, file).map_err(|e| (Step::Rename, e))
}

impl Store for FileStore {
    fn admit(&mut self, key: &Key, circuit: &Circuit) -> Result<Admission, StoreError> {
        let trial = file_of(key, "trial");
        // The update below borrows the store; the trial lock is opened in
        // the same directory through a second descriptor of it.
        let dir = self.dir.try_clone().map_err(|e| io_error(&self.dir, "open", &trial, &e))?;
        self.with_state(key, |state, now, trials| {
            let answer = match circuit_now(state, circuit, now) {
                CircuitNow::Closed => Admission::Admitted { trial: false },
                CircuitNow::Open { remaining } => {
                    Admission::Refused { remaining, failures: state.failures, trial_running: false }
                }
                CircuitNow::HalfOpen => {
                    // Decided under the state lock, so a trial that ends
                    // (state first, then its lock) is seen as ended.
                    let file = open_lock_file(&dir, &trial)?;
                    let mine = sys::flock(file.as_fd(), true, false)
                        .map_err(|e| io_error(&dir, "lock", &trial, &e))?;
                    if mine {
                        trials.insert(key.as_str().to_string(), file);
                        Admission::Admitted { trial: true }
                    } else {
                        Admission::Refused {
                            remaining: Duration::ZERO,
                            failures: state.failures,
                            trial_running: true,
                        }
                    }
                }
            };
            Ok((answer, false))
        })
    }

    fn record_run(&mut self, key: &Key, _circuit: &Circuit, end: RunEnd) -> Result<(), StoreError> {
        let result = self.with_state(key, |state, now, _| {
            let changed = match end {
                RunEnd::Succeeded => {
                    let changed = state.failures != 0;
                    state.failures = 0;
                    state.last_failure_us = 0;
                    changed
                }
                RunEnd::GaveUp => {
                    state.failures = state.failures.saturating_add(1);
                    state.last_failure_us = now;
                    true
                }
                RunEnd::Abandoned => false,
            };
            Ok(((), changed))
        });
        // After the state is written: the next run sees the trial's verdict.
        self.trials.remove(key.as_str());
        result
    }

    fn rate_turn(&mut self, key: &Key, rate: &Rate) -> Result<Turn, StoreError> {
        self.with_state(key, |state, now, _| {
            let turn = rate_decide(&mut state.starts_us, now, rate.n, rate.window);
            Ok((turn, turn == Turn::Go))
        })
    }

    fn acquire_slot(&mut self, key: &Key, n: u32) -> Result<Option<Slot>, StoreError> {
        let n = n.max(1);
        // Start at a different slot in each process, so that a crowd does
        // not queue on slot 0.
        let first = std::process::id() % n;
        for i in 0..n {
            let slot = file_of(key, &format!("slot.{}", (first + i) % n));
            let file = open_lock_file(&self.dir, &slot)?;
            if sys::flock(file.as_fd(), true, false).map_err(|e| io_error(&self.dir, "lock", &slot, &e))? {
                return Ok(Some(Slot::new(file)));
            }
        }
        Ok(None)
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    fn state(failures: u32, last: u64) -> State {
        State { failures, last_failure_us: last, ..State::new() }
    }

    #[test]
    fn circuit_closed_open_half_open() {
        let c = Circuit { threshold: 3, cooldown: Duration::from_secs(60) };
        let t0 = 1_000_000_000 * MS;
        assert_eq!(circuit_now(&state(2, t0), &c, t0), CircuitNow::Closed);
        assert_eq!(
            circuit_now(&state(3, t0), &c, t0 + 1000 * MS),
            CircuitNow::Open { remaining: Duration::from_secs(59) }
        );
        assert_eq!(circuit_now(&state(3, t0), &c, t0 + 60_000 * MS), CircuitNow::HalfOpen);
        // The clock went back: open for one cooldown, not longer.
        assert_eq!(
            circuit_now(&state(5, t0), &c, t0 - 3_600_000 * MS),
            CircuitNow::Open { remaining: Duration::from_secs(60) }
        );
    }

    #[test]
    fn sliding_window_never_holds_more_than_n() {
        let w = Duration::from_millis(100);
        let mut starts = Vec::new();
        let mut recorded = Vec::new();
        let mut now = 0u64;
        // A crowd asking every 7 ms for 2 s.
        while now < 2_000 * MS {
            match rate_decide(&mut starts, now, 3, w) {
                Turn::Go => recorded.push(now),
                Turn::Wait(d) => assert!(d <= w && !d.is_zero()),
            }
            now += 7 * MS;
        }
        for pair in recorded.windows(4) {
            assert!(pair[3] - pair[0] >= 100 * MS, "{pair:?}");
        }
        assert!(recorded.len() >= 55, "{}", recorded.len());
        assert!(starts.len() <= 3);
    }

    #[test]
    fn rate_wait_is_until_the_oldest_start_leaves_the_window() {
        let w = Duration::from_millis(1000);
        let mut starts = vec![100 * MS, 400 * MS];
        assert_eq!(rate_decide(&mut starts, 500 * MS, 2, w), Turn::Wait(Duration::from_millis(600)));
        assert_eq!(rate_decide(&mut starts, 1100 * MS, 2, w), Turn::Go);
        assert_eq!(starts, vec![400 * MS, 1100 * MS]);
        // The clock went back: wait at most one window.
        let mut starts = vec![9_000 * MS];
        assert_eq!(rate_decide(&mut starts, 1_000 * MS, 1, w), Turn::Wait(w));
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn state_files_round_trip() {
        let s = State { failures: 3, last_failure_us: u64::MAX - 1, starts_us: vec![5, 9, 9, 1 << 60] };
        let bytes = s.encode();
        assert_eq!(bytes.len(), HEADER + 32);
        assert_eq!(State::decode(&bytes), Ok(s));
        assert_eq!(State::decode(&State::new().encode()), Ok(State::new()));
    }

    #[test]
    fn corrupt_state_is_reset_with_a_warning() {
        let dir = tempdir();
        let mut store = FileStore::open(dir.path()).expect("open");
        let key = super::super::parse_key("k").expect("key");
        let mut valid = State { failures: 2, last_failure_us: 7, starts_us: vec![1, 2, 3] }.encode();
        valid.pop();
        let mut unsorted = State { failures: 0, last_failure_us: 0, starts_us: vec![1, 2] }.encode();
        unsorted.swap(HEADER, HEADER + 8);
        let other_version = [&b"RETRYST2"[..], &[0u8; 16]].concat();
        for garbage in [&b""[..], b"{\"failures\":", b"\xff\xfe", &valid, &unsorted, &other_version] {
            std::fs::write(dir.path().join("k.state"), garbage).expect("write");
            let c = Circuit { threshold: 1, cooldown: Duration::from_secs(60) };
            assert_eq!(store.admit(&key, &c).expect("admit"), Admission::Admitted { trial: false });
            let w = store.take_warnings();
            assert_eq!(w.len(), 1, "{w:?}");
            assert!(w[0].contains("was corrupt"), "{w:?}");
            let bytes = std::fs::read(dir.path().join("k.state")).expect("read");
            assert_eq!(State::decode(&bytes), Ok(State::new()));
        }
    }

    #[test]
    fn trial_lock_admits_one_trial_and_is_released_by_record_run() {
        let dir = tempdir();
        let key = super::super::parse_key("k").expect("key");
        let c = Circuit { threshold: 1, cooldown: Duration::ZERO };
        let mut a = FileStore::open(dir.path()).expect("open");
        let mut b = FileStore::open(dir.path()).expect("open");
        assert_eq!(a.admit(&key, &c).expect("a"), Admission::Admitted { trial: false });
        a.record_run(&key, &c, RunEnd::GaveUp).expect("record");
        assert_eq!(a.admit(&key, &c).expect("a"), Admission::Admitted { trial: true });
        assert!(matches!(
            b.admit(&key, &c).expect("b"),
            Admission::Refused { trial_running: true, failures: 1, .. }
        ));
        a.record_run(&key, &c, RunEnd::Succeeded).expect("record");
        assert_eq!(b.admit(&key, &c).expect("b"), Admission::Admitted { trial: false });
    }

    #[test]
    fn keys_are_independent_within_one_store() {
        let dir = tempdir();
        let (a, b) = (super::super::parse_key("a").expect("key"), super::super::parse_key("b").expect("key"));
        let c = Circuit { threshold: 1, cooldown: Duration::ZERO };
        let mut store = FileStore::open(dir.path()).expect("open");
        let rate = Rate { n: 1, window: Duration::from_secs(3600) };
        assert_eq!(store.rate_turn(&a, &rate).expect("a"), Turn::Go);
        assert_eq!(store.rate_turn(&b, &rate).expect("b"), Turn::Go);
        assert!(matches!(store.rate_turn(&a, &rate).expect("a"), Turn::Wait(_)));
        for k in [&a, &b] {
            store.record_run(k, &c, RunEnd::GaveUp).expect("record");
            assert_eq!(store.admit(k, &c).expect("admit"), Admission::Admitted { trial: true });
        }
        store.record_run(&a, &c, RunEnd::Succeeded).expect("record");
        assert_eq!(store.admit(&a, &c).expect("a"), Admission::Admitted { trial: false });
        // b's trial is still held.
        let mut other = FileStore::open(dir.path()).expect("open");
        assert!(matches!(other.admit(&b, &c).expect("b"), Admission::Refused { trial_running: true, .. }));
    }

    #[test]
    fn slots_are_exclusive_and_freed_on_drop() {
        let dir = tempdir();
        let key = super::super::parse_key("k").expect("key");
        let mut a = FileStore::open(dir.path()).expect("open");
        let mut b = FileStore::open(dir.path()).expect("open");
        let one = a.acquire_slot(&key, 2).expect("a").expect("slot");
        let two = b.acquire_slot(&key, 2).expect("b").expect("slot");
        assert!(a.acquire_slot(&key, 2).expect("a").is_none());
        drop(one);
        assert!(b.acquire_slot(&key, 2).expect("b").is_some());
        drop(two);
    }
}
