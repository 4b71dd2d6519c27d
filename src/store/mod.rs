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
//! - the policy the run loop sees (admit the run, gate each attempt,
//!   release after it, record the run's end) is `run::coord`, a client of
//!   this module: a store knows nothing of runs, reports or exit statuses.

use std::time::Duration;

use crate::error::Error;

pub mod conn;
pub mod file;
pub mod redis;
pub mod url;

pub use url::StoreUrl;

pub use crate::parse::{
    CONCURRENCY_MAX, KEY_MAX, Key, NAME_RULE, RATE_MAX, Rate, parse_key, parse_rate, valid_name,
};

/// How often a process waiting for a slot looks again (SPEC: at most 50 ms).
pub const SLOT_RECHECK: Duration = Duration::from_millis(50);

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
