//! Shared state across runs (SPEC "Across runs: shared state"): the
//! circuit breaker, the rate limit and the concurrency limit of a `--key`,
//! coordinated through a state store that many processes share.
//!
//! Two layers:
//!
//! - [`Store`]: a small operation-level trait. Each operation is one
//!   short, non-blocking step on the key's shared state, decided with the
//!   store's own clock (the file store reads the system clock; a Redis
//!   store reads its server's `TIME`). A store may hold leases internally
//!   (the circuit's trial) or hand them out ([`Slot`]); a store whose
//!   leases need renewing starts its renewer thread when it hands one out
//!   and stops it when the lease is dropped, so renewals never wait for
//!   the run loop.
//! - [`Coordination`]: the policy the run loop sees: admit the run, gate
//!   each attempt (wait for a slot, then a rate turn, interruptibly and
//!   within `--max-time`), release after it, record the run's end; store
//!   errors become 125 (`store_error`) or, with `--store-optional`, a
//!   warning and an uncoordinated run.
//!
//! What a "run that gave up" is, for the circuit: one that ended exhausted,
//! stopped (a stop rule, or COMMAND not found) or at `--max-time`, after at
//! least one attempt ran. A run ended by a signal, or one whose stdout was
//! closed, counts neither way: a signal is an operator's or supervisor's
//! decision (Ctrl-C, a shutdown, a deploy), not news about the service, and
//! counting it would let a restart of many cron jobs open the circuit. A
//! trial run that ends so leaves the circuit half-open: the next run is the
//! trial.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::report::Reporter;
use crate::status::{End, Outcome};

pub mod conn;
pub mod file;
pub mod redis;
pub mod url;

pub use url::StoreUrl;

/// The largest N of `--rate N/DURATION` (SPEC Edge rules).
pub const RATE_MAX: u32 = 10_000;

/// The largest N of `--concurrency N`: the file store keeps one lock file
/// per slot and may try each of them before an attempt.
pub const CONCURRENCY_MAX: u32 = 1000;

/// How often a process waiting for a slot looks again (SPEC: at most 50 ms).
pub const SLOT_RECHECK: Duration = Duration::from_millis(50);

/// The longest key: file names add a suffix and must stay under 255 bytes.
pub const KEY_MAX: usize = 200;

/// What a key (and a queue name) may be, for messages.
pub const NAME_RULE: &str = "use 1-200 letters, digits, '.', '_' and '-', not starting with '.'";

/// Letters, digits, `._-`; not empty, not too long, not starting with `.`
/// (so never `.`, `..` or a hidden file): a key can never leave the store's
/// directory.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= KEY_MAX
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The name of a job's shared state (`--key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `--key` value parser.
pub fn parse_key(text: &str) -> Result<Key, String> {
    if valid_name(text) { Ok(Key(text.to_string())) } else { Err(NAME_RULE.to_string()) }
}

/// `--rate N/DURATION`: at most `n` attempt starts in any interval of
/// length `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub n: u32,
    pub window: Duration,
}

/// `--rate` value parser: `30/1m`, `5/500ms`, `100/s` (a bare unit is one
/// of it). N is 1 to 10,000; the window is positive.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    const HINT: &str = "expected N/DURATION with N from 1 to 10000, e.g. 30/1m or 5/500ms";
    let Some((n, window)) = text.trim().split_once('/') else {
        return Err(format!("no '/'; {HINT}"));
    };
    let n = n.trim();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{n}' is not a number; {HINT}"));
    }
    let n = match n.parse::<u32>() {
        Ok(n) if (1..=RATE_MAX).contains(&n) => n,
        _ => return Err(format!("N is out of range; {HINT}")),
    };
    let window = window.trim();
    let bare_unit = !window.is_empty() && window.bytes().all(|b| b.is_ascii_alphabetic());
    let parsed = if bare_unit {
        crate::parse::duration(&format!("1{window}"))
    } else {
        crate::parse::duration(window)
    };
    match parsed {
        Ok(w) if !w.is_zero() => Ok(Rate { n, window: w }),
        Ok(_) => Err(format!("the window must be longer than 0; {HINT}")),
        Err(e) => Err(format!("bad window: {e}")),
    }
}

/// `--circuit-break N` with `--circuit-cooldown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Circuit {
    /// Consecutive runs that gave up before the circuit opens.
    pub threshold: u32,
    pub cooldown: Duration,
}

/// The shared-state options of a run (`--key` and what needs it).
#[derive(Clone, Debug)]
pub struct Shared {
    pub key: Key,
    pub store: StoreUrl,
    pub circuit: Option<Circuit>,
    pub rate: Option<Rate>,
    pub concurrency: Option<u32>,
    /// `--store-optional`: an unreachable store means an uncoordinated run.
    pub optional: bool,
    /// `--store-lease`: a Redis slot's or trial's lease (else 10 s).
    pub lease: Option<Duration>,
}

/// The shared-state options as given (for [`Shared::from_options`]).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub key: Option<Key>,
    pub state_store: Option<String>,
    pub circuit_break: Option<u32>,
    pub circuit_cooldown: Option<Duration>,
    pub rate: Option<Rate>,
    pub concurrency: Option<u32>,
    pub store_optional: bool,
    pub store_lease: Option<Duration>,
    pub tls_ca: Option<std::path::PathBuf>,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

/// The default `--circuit-cooldown`.
pub const COOLDOWN: Duration = Duration::from_secs(300);

impl Shared {
    /// Validates the options together and resolves the store URL (option,
    /// else `RETRY_STATE_STORE`, else the default directory). `None`
    /// without `--key`.
    pub fn from_options(o: Options) -> Result<Option<Shared>, Error> {
        let needs_key = [
            ("--circuit-break", o.circuit_break.is_some()),
            ("--rate", o.rate.is_some()),
            ("--concurrency", o.concurrency.is_some()),
        ];
        if o.key.is_none() {
            if let Some((opt, _)) = needs_key.iter().find(|(_, given)| *given) {
                return Err(Error::Conflict(format!(
                    "{opt} needs --key NAME: the name of the job's state shared across runs"
                )));
            }
        }
        if o.circuit_cooldown.is_some() && o.circuit_break.is_none() {
            return Err(Error::Conflict("--circuit-cooldown needs --circuit-break N".to_string()));
        }
        if let Some(lease) = o.store_lease.filter(|l| *l < redis::MIN_LEASE) {
            return Err(Error::usage(
                "--store-lease",
                crate::parse::human(lease),
                "a lease is at least 100ms (it is renewed every 3/10 of it)",
            ));
        }
        // For every rediss:// connection of this process, the queue's too.
        conn::configure_tls(o.tls_ca.as_deref(), o.tls_cert.as_deref(), o.tls_key.as_deref())?;
        let Some(key) = o.key else { return Ok(None) };
        let from_env = std::env::var("RETRY_STATE_STORE").ok().filter(|v| !v.is_empty());
        let (option, text) = match (o.state_store, from_env) {
            (Some(text), _) => ("--state-store", Some(text)),
            (None, Some(text)) => ("RETRY_STATE_STORE", Some(text)),
            (None, None) => ("--state-store", None),
        };
        let store = match text {
            Some(text) => {
                url::parse(&text).map_err(|why| Error::usage(option, crate::parse::mask_url(&text), why))?
            }
            None => StoreUrl::File(default_dir().ok_or_else(|| {
                Error::Conflict(
                    "cannot find the default state store: neither XDG_STATE_HOME nor HOME is set; \
                     give --state-store file:DIR"
                        .to_string(),
                )
            })?),
        };
        match &store {
            StoreUrl::Redis(r) if r.name.is_some() => {
                return Err(Error::usage(
                    option,
                    r.masked(),
                    "a #NAME names a queue; a state store takes none",
                ));
            }
            StoreUrl::Redis(_) | StoreUrl::File(_) => {}
        }
        Ok(Some(Shared {
            key,
            store,
            circuit: o
                .circuit_break
                .map(|threshold| Circuit { threshold, cooldown: o.circuit_cooldown.unwrap_or(COOLDOWN) }),
            rate: o.rate,
            concurrency: o.concurrency,
            optional: o.store_optional,
            lease: o.store_lease,
        }))
    }

    /// Does anything need the store?
    pub fn active(&self) -> bool {
        self.circuit.is_some() || self.rate.is_some() || self.concurrency.is_some()
    }
}

/// The default store: `$XDG_STATE_HOME/retry` (when set and absolute), else
/// `~/.local/state/retry`; `None` when neither variable helps.
pub fn default_dir() -> Option<std::path::PathBuf> {
    let absolute = |v: std::ffi::OsString| {
        let p = std::path::PathBuf::from(v);
        p.is_absolute().then_some(p)
    };
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").and_then(absolute) {
        return Some(dir.join("retry"));
    }
    std::env::var_os("HOME").and_then(absolute).map(|h| h.join(".local/state/retry"))
}

/// A store failure.
#[derive(Debug)]
pub struct StoreError {
    /// A directory that is unsafe to use: never overridden by `--store-optional`.
    pub insecure: bool,
    /// Trying again will not help (a refused password or certificate).
    pub lasting: bool,
    pub message: String,
}

impl StoreError {
    pub fn unavailable(message: impl Into<String>) -> StoreError {
        StoreError { insecure: false, lasting: false, message: message.into() }
    }
    pub fn insecure(message: impl Into<String>) -> StoreError {
        StoreError { insecure: true, lasting: true, message: message.into() }
    }
    /// The same failure, marked as one that trying again will not help.
    pub fn lasting(self) -> StoreError {
        StoreError { lasting: true, ..self }
    }
}

/// The circuit's answer to a run that wants to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Run. `trial`: the circuit is half-open and this run is its one
    /// trial; the store holds the trial's lease until `record_run` (or
    /// until the store is dropped, or the process dies).
    Admitted { trial: bool },
    /// Do not run: the circuit is open for `remaining` more (zero when a
    /// trial run is in progress: `trial_running`).
    Refused { remaining: Duration, failures: u32, trial_running: bool },
}

/// How an admitted run ended, for the circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Closes the circuit; the count of consecutive failures starts over.
    Succeeded,
    /// One more consecutive failure; the circuit opens (again) at the threshold.
    GaveUp,
    /// Neither (a signal, a closed stdout): nothing changes, a trial
    /// lease is released.
    Abandoned,
}

/// The rate limit's answer before an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Start now: the start is recorded.
    Go,
    /// No turn before this much time has passed; ask again then.
    Wait(Duration),
}

/// A concurrency slot, held while an attempt runs; dropping it releases it.
/// A store puts whatever holds the slot in here: the file store a locked
/// file, a Redis store a lease whose renewer thread stops on drop.
pub struct Slot {
    _held: Box<dyn Send>,
}

impl Slot {
    pub fn new(held: impl Send + 'static) -> Slot {
        Slot { _held: Box::new(held) }
    }
}

/// The operations a state store offers, one short step each on one key's
/// shared state, atomic across every process that shares the store. None
/// of them blocks for long: waiting is [`Coordination`]'s job.
pub trait Store: Send {
    /// Circuit: may a run start now?
    fn admit(&mut self, key: &Key, circuit: &Circuit) -> Result<Admission, StoreError>;

    /// Circuit: an admitted run ended (releases its trial lease, if any).
    fn record_run(&mut self, key: &Key, circuit: &Circuit, end: RunEnd) -> Result<(), StoreError>;

    /// Rate: `Go` records a start now (the caller starts the attempt at
    /// once); `Wait` says how long until a turn may be free.
    fn rate_turn(&mut self, key: &Key, rate: &Rate) -> Result<Turn, StoreError>;

    /// Concurrency: one of `n` slots, or `None` when all are held.
    fn acquire_slot(&mut self, key: &Key, n: u32) -> Result<Option<Slot>, StoreError>;

    /// Things worth a warning since the last call (e.g. a corrupt state
    /// file that was reset).
    fn take_warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// Opens the store a URL names (`lease`: `--store-lease`, for Redis).
pub fn open(url: &StoreUrl, lease: Option<Duration>) -> Result<Box<dyn Store>, StoreError> {
    match url {
        StoreUrl::File(dir) => Ok(Box::new(file::FileStore::open(dir)?)),
        StoreUrl::Redis(r) => Ok(Box::new(redis::RedisStore::open(r, lease)?)),
    }
}

/// What the gate before an attempt decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Start the attempt now.
    Go,
    /// `--max-time` ends before a turn or a slot comes.
    Deadline,
    /// A signal arrived while waiting.
    Interrupted(i32),
}

/// The run loop's view of shared state: admit, gate each attempt, release,
/// record. Owned by the run; `None` of it exists without `--key` and an
/// option that needs the store.
pub struct Coordination {
    shared: Shared,
    /// `None` once an error under `--store-optional` turned coordination off.
    store: Option<Box<dyn Store>>,
    slot: Option<Slot>,
    admitted: bool,
}

/// Sleeps until the instant (`None`: forever) unless a signal comes first;
/// returns that signal. The run loop's own interruptible sleep.
pub type Sleep<'a> = dyn FnMut(Option<Instant>) -> Option<i32> + 'a;

impl Coordination {
    /// Opens the store when an option needs it. An insecure directory is
    /// always an error; an unreachable store is one unless `--store-optional`.
    pub fn open(shared: Option<&Shared>, report: &Reporter) -> Result<Option<Coordination>, Error> {
        let Some(shared) = shared.filter(|s| s.active()) else {
            return Ok(None);
        };
        report.store_open(shared.key.as_str(), shared.store.masked());
        let store = match open(&shared.store, shared.lease) {
            Ok(store) => Some(store),
            Err(e) if shared.optional && !e.insecure => {
                report.warning(format!("{}; running without coordination (--store-optional)", e.message));
                None
            }
            Err(e) => return Err(Error::Store(e.message)),
        };
        Ok(Some(Coordination { shared: shared.clone(), store, slot: None, admitted: false }))
    }

    /// A failed store operation: 125, or under `--store-optional` a warning
    /// and no coordination from now on.
    fn failed(&mut self, e: StoreError, report: &Reporter) -> Result<(), Error> {
        if self.shared.optional && !e.insecure {
            report.warning(format!("{}; going on without coordination (--store-optional)", e.message));
            self.store = None;
            self.slot = None;
            Ok(())
        } else {
            Err(Error::Store(e.message))
        }
    }

    fn warnings(&mut self, report: &Reporter) {
        if let Some(store) = &mut self.store {
            for w in store.take_warnings() {
                report.warning(w);
            }
        }
    }

    /// Before attempt 1: `Some(how long the circuit stays open)` when it
    /// refuses the run (said on stderr as `circuit_open`), `None` to go on.
    pub fn admit(&mut self, report: &Reporter) -> Result<Option<Duration>, Error> {
        let (Some(circuit), Some(store)) = (self.shared.circuit, self.store.as_mut()) else {
            return Ok(None);
        };
        let answer = store.admit(&self.shared.key, &circuit);
        self.warnings(report);
        let key = &self.shared.key;
        match answer {
            Ok(Admission::Admitted { trial }) => {
                if trial {
                    report.circuit_trial(key.as_str());
                }
                self.admitted = true;
                Ok(None)
            }
            Ok(Admission::Refused { remaining, failures, trial_running }) => {
                report.circuit_open(key.as_str(), remaining, failures, trial_running);
                Ok(Some(remaining))
            }
            Err(e) => self.failed(e, report).map(|()| None),
        }
    }

    /// Before each attempt: wait for a slot, then for a rate turn (giving
    /// the slot back while waiting for the turn, so a slot is held only
    /// while an attempt runs), within `deadline`, interruptibly.
    pub fn gate(
        &mut self,
        attempt: u32,
        deadline: Option<Instant>,
        sleep: &mut Sleep<'_>,
        report: &Reporter,
    ) -> Result<Gate, Error> {
        let mut said = false;
        loop {
            if let Some(n) = self.shared.concurrency {
                if let Some(gate) = self.wait_for_slot(n, attempt, deadline, sleep, report, &mut said)? {
                    return Ok(gate);
                }
            }
            let (Some(rate), Some(store)) = (self.shared.rate, self.store.as_mut()) else {
                return Ok(Gate::Go);
            };
            let turn = store.rate_turn(&self.shared.key, &rate);
            self.warnings(report);
            let wait = match turn {
                Ok(Turn::Go) => return Ok(Gate::Go),
                Ok(Turn::Wait(wait)) => wait,
                Err(e) => {
                    self.failed(e, report)?;
                    return Ok(Gate::Go);
                }
            };
            self.slot = None;
            report.store_wait(attempt, "rate", Some(wait));
            let wake = Instant::now().checked_add(wait);
            let past_deadline = match (deadline, wake) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(d), Some(w)) => w >= d,
            };
            if past_deadline {
                return Ok(Gate::Deadline);
            }
            if let Some(sig) = sleep(wake) {
                return Ok(Gate::Interrupted(sig));
            }
        }
    }

    /// Takes a free slot, looking again every [`SLOT_RECHECK`]; `Some` when
    /// the deadline or a signal ended the wait first.
    fn wait_for_slot(
        &mut self,
        n: u32,
        attempt: u32,
        deadline: Option<Instant>,
        sleep: &mut Sleep<'_>,
        report: &Reporter,
        said: &mut bool,
    ) -> Result<Option<Gate>, Error> {
        while let Some(store) = self.store.as_mut() {
            let got = store.acquire_slot(&self.shared.key, n);
            self.warnings(report);
            match got {
                Ok(Some(slot)) => {
                    self.slot = Some(slot);
                    return Ok(None);
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed(e, report)?;
                    continue;
                }
            }
            if !*said {
                report.store_wait(attempt, "concurrency", None);
                *said = true;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Some(Gate::Deadline));
            }
            let wake = now.checked_add(SLOT_RECHECK).map(|w| deadline.map_or(w, |d| w.min(d)));
            if let Some(sig) = sleep(wake) {
                return Ok(Some(Gate::Interrupted(sig)));
            }
        }
        Ok(None)
    }

    /// After each attempt: its slot is free again.
    pub fn release(&mut self) {
        self.slot = None;
    }

    /// At the end of an admitted run: tell the circuit how it went.
    pub fn finish(&mut self, outcome: &Outcome, report: &Reporter) -> Result<(), Error> {
        self.slot = None;
        // What the lease renewers said (a slot lost, an attempt killed).
        self.warnings(report);
        let (Some(circuit), Some(store), true) = (self.shared.circuit, self.store.as_mut(), self.admitted)
        else {
            return Ok(());
        };
        self.admitted = false;
        let result = store.record_run(&self.shared.key, &circuit, run_end(outcome));
        self.warnings(report);
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.failed(e, report),
        }
    }
}

/// What a run's end means to the circuit (see the module doc).
pub fn run_end(outcome: &Outcome) -> RunEnd {
    match outcome.end {
        End::Success => RunEnd::Succeeded,
        // (The store records a run before `--queue` may turn it into Queued.)
        End::Exhausted | End::Stopped | End::Deadline | End::Queued if outcome.attempts > 0 => RunEnd::GaveUp,
        End::Exhausted | End::Stopped | End::Deadline | End::Queued => RunEnd::Abandoned,
        End::Interrupted { .. } | End::ClosedStdout | End::Refused => RunEnd::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in ["api", "nightly-sync", "a.b_c-9", "A", &"k".repeat(KEY_MAX)] {
            assert!(parse_key(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "a b", "é", "a\0b", &"k".repeat(KEY_MAX + 1)] {
            assert!(parse_key(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rates() {
        let r = |n, ms| Ok(Rate { n, window: Duration::from_millis(ms) });
        assert_eq!(parse_rate("30/1m"), r(30, 60_000));
        assert_eq!(parse_rate("5/500ms"), r(5, 500));
        assert_eq!(parse_rate("100/s"), r(100, 1000));
        assert_eq!(parse_rate("10000/1h"), r(10_000, 3_600_000));
        assert_eq!(parse_rate("2/1.5s"), r(2, 1500));
        for bad in
            ["", "10", "/1s", "x/1s", "0/1s", "10001/1s", "-1/1s", "5/0s", "5/", "5/x", "5/1q", "1.5/1s"]
        {
            assert!(parse_rate(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn what_counts_as_giving_up() {
        let o = |end, attempts| Outcome { end, last: None, validation_failed: false, attempts };
        assert_eq!(run_end(&o(End::Success, 1)), RunEnd::Succeeded);
        for end in [End::Exhausted, End::Stopped, End::Deadline] {
            assert_eq!(run_end(&o(end, 2)), RunEnd::GaveUp);
        }
        assert_eq!(run_end(&o(End::Deadline, 0)), RunEnd::Abandoned);
        assert_eq!(run_end(&o(End::Interrupted { signal: 2, during_sleep: true }, 2)), RunEnd::Abandoned);
        assert_eq!(run_end(&o(End::ClosedStdout, 1)), RunEnd::Abandoned);
    }
}
