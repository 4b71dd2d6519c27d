//! The Redis store (`--state-store redis://[user:pass@]host[:port][/db]`,
//! a Cluster's nodes, or `redis+sentinel://…`): shared state of a fleet of
//! machines. The connection (TLS, Cluster routing, Sentinel, timeouts) is
//! [`super::conn`]'s.
//!
//! Layout, per key (`api`), all under `retry:{key:api}:` (one hash tag, so
//! one Cluster slot: every script touches one slot):
//!
//! ```text
//! retry:{key:api}:circuit  hash {failures, last_failure_us}: consecutive
//!                          runs that gave up and when the last one ended;
//!                          deleted by a success
//! retry:{key:api}:trial    string: the token of the circuit's trial run, a
//!                          lease (PX) its holder renews
//! retry:{key:api}:starts   sorted set: the latest attempt starts (score: µs
//!                          of the server's clock), at most N of the rate limit
//! retry:{key:api}:slots    sorted set: the concurrency slots held (member:
//!                          the holder's token; score: when its lease ends, µs)
//! ```
//!
//! State an older retry wrote under `retry:key:api:…` is not read (SPEC
//! Edge rules): it is short-lived (a window, leases, a failure count) and
//! expires by itself.
//!
//! Every read-modify-write is one Lua script (`EVALSHA`, loaded on a
//! `NOSCRIPT`), so it is atomic on the server however many clients share
//! the key, and it reads the server's clock (`TIME`), never a client's: the
//! machines of a fleet need not agree on the time. One script call is one
//! round trip per operation.
//!
//! Keys expire after 30 days without use, or after the cooldown (the
//! circuit) or the rate window (the starts) when that is longer; every use
//! refreshes the TTL, so a daily cron job keeps its count and an abandoned
//! key does not stay forever.
//!
//! Leases: a concurrency slot and the circuit's trial are held as leases
//! of `--store-lease` ([`LEASE`], 10 s) that a thread renews every 3/10 of
//! it ([`RENEW`]) while the holder runs (the [`Slot`] guard, or the store
//! for a trial, owns the thread; dropping it stops the thread and releases
//! the lease). A holder that dies, even by SIGKILL, or loses its network
//! frees its slot or trial when the lease ends. A holder whose slot lease
//! is lost (a failover to a replica that had not seen it) or cannot be
//! renewed before it ends kills its running attempt ([`crate::running`]):
//! another process may hold the slot by then.
//!
//! Failures: every operation has [`RECONNECT`] (2 s), connecting and
//! failovers included ([`Conn::run`]); then it fails with a [`StoreError`]
//! and [`super::Coordination`] ends the run with 125 or goes on
//! uncoordinated (`--store-optional`). An operation whose reply was lost
//! is sent again after a reconnect: it may then count twice (a start, a
//! failed run), never zero times. Releasing a lease never reconnects: if
//! the connection is gone the lease simply runs out.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::{RedisError, Script};

use super::url::RedisUrl;
use super::{Admission, Circuit, Key, Rate, RunEnd, Slot, Store, StoreError, Turn};

/// How long a slot or a trial lease lasts without renewal (SPEC: 10 s).
pub const LEASE: Duration = Duration::from_secs(10);

/// How often the holder renews it (SPEC: every 3 s).
pub const RENEW: Duration = Duration::from_secs(3);

pub(crate) use super::conn::Conn;
pub use super::conn::{CONNECT_TIMEOUT, IO_TIMEOUT, RECONNECT};

/// The shortest `--store-lease`: renewals every 3/10 of it must fit round trips.
pub const MIN_LEASE: Duration = Duration::from_millis(100);

/// Keys live this long without use (SPEC Edge rules: 30 days)…
pub const IDLE: Duration = Duration::from_secs(30 * 24 * 3600);

/// …and at most this long, whatever the cooldown or window (Redis refuses
/// an expiry that overflows its clock arithmetic).
const TTL_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Lua 5.1 prints numbers with 14 digits (`1.7e+15`): every number that
/// goes back to Redis as text (a score, a member, a field) is formatted
/// here first. Numbers returned from a script become integers exactly
/// (µs since the epoch fit a double's 53 bits).
pub(crate) const PRELUDE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local function fmt(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
";

/// Circuit: may a run start? KEYS: circuit, trial. ARGV: threshold,
/// cooldown µs, token, lease ms, ttl ms. Returns {admitted, trial,
/// remaining µs, failures, trial_running}.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0') or 0
if failures > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
if failures < tonumber(ARGV[1]) then return {1, 0, 0, failures, 0} end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_failure_us') or '0') or 0
-- A failure 'in the future' (the server's clock went back) ended just now.
if last > now then last = now end
local cooldown = tonumber(ARGV[2])
if now - last < cooldown then return {0, 0, cooldown - (now - last), failures, 0} end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return {1, 1, 0, failures, 0} end
return {0, 0, 0, failures, 1}
"
    ))
});

/// Circuit: an admitted run ended. KEYS: circuit, trial. ARGV: how
/// (`succeeded`, `gave_up`, `abandoned`), token, ttl ms.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
if ARGV[1] == 'succeeded' then
  redis.call('DEL', KEYS[1])
elseif ARGV[1] == 'gave_up' then
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
  redis.call('HSET', KEYS[1], 'last_failure_us', fmt(now))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
-- After the state: the next run sees the trial's verdict.
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"
    ))
});

/// Rate: the sliding window. KEYS: starts. ARGV: n, window µs, token, ttl
/// ms. A start is allowed when fewer than n starts lie in the window that
/// ends now (the n-th latest is at least a window old); it is recorded.
/// Returns {1, 0} or {0, µs to wait}.
static RATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
local n = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now - window))
local count = redis.call('ZCARD', KEYS[1])
if count > n then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, count - n - 1)
  count = n
end
if count >= n then
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], count - n, count - n, 'WITHSCORES')[2])
  -- A start 'in the future' (the clock went back) happened just now.
  if oldest > now then oldest = now end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {0, window - (now - oldest)}
end
redis.call('ZADD', KEYS[1], fmt(now), fmt(now) .. ':' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, 0}
"
    ))
});

/// Concurrency: take a slot. KEYS: slots. ARGV: n, token, lease µs, ttl
/// ms. Leases that ran out are dropped first. Returns 1 or 0.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], fmt(now + tonumber(ARGV[3])), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"
    ))
});

/// Concurrency: renew a slot's lease. KEYS: slots. ARGV: token, lease µs,
/// ttl ms. Returns 0 when the lease had run out (and was taken away).
static RENEW_SLOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
local until_us = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0') or 0
if until_us <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], fmt(now + tonumber(ARGV[2])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"
    ))
});

/// Circuit: renew the trial's lease. KEYS: trial. ARGV: token, lease ms.
static RENEW_TRIAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// Release a trial lease if it is still ours. KEYS: trial. ARGV: token.
static RELEASE_TRIAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

pub(crate) fn micros(d: Duration) -> u64 {
    // A double holds integers exactly up to 2^53 µs (285 years).
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).min(1 << 53)
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A key's TTL: 30 days idle, or `longer` when that is longer.
fn ttl(longer: Duration) -> u64 {
    millis(IDLE.max(longer).min(TTL_MAX))
}

/// Lease timing: `--store-lease` (10 s), renewed every 3/10 of it.
#[derive(Clone, Copy, Debug)]
struct Timing {
    lease: Duration,
    renew: Duration,
}

impl Timing {
    fn new(lease: Option<Duration>) -> Timing {
        match lease {
            Some(lease) => Timing { lease, renew: lease * 3 / 10 },
            None => Timing { lease: LEASE, renew: RENEW },
        }
    }
}

/// What a renewer does to the running attempt when its lease is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnLoss {
    /// Nothing (the circuit's trial: the next run is the trial).
    Nothing,
    /// Kill it when the server cannot be reached to renew the lease before
    /// it ends (a drain's job: SPEC "Redis in production"). A lease found
    /// taken by another claim is left to the claim's fence.
    KillIfUnreachable,
    /// Kill it then, and also when the lease is found lost (a
    /// `--concurrency` slot: a failover to a replica that had not seen it
    /// may let another process take it; the limit holds again at once).
    KillIfLost,
}

/// A lease's renewer: a detached thread that calls `renew` (on the server
/// of `route`) every `every` until the returned sender is dropped. `renew`
/// answers 1 when the lease was renewed, anything else when it was lost.
/// A renewal that fails is tried again at once, within what is left of
/// the lease (`lease` from the last renewal, less a twentieth of it for
/// safety); the attempt is killed ([`crate::running`]) as `on_loss` says.
/// (A process that was stopped and wakes after its lease ended tries once
/// more, with the full 2 s.) Each of these goes to `warnings` as a line
/// naming `what`. Dropping the sender does not wait for the
/// thread (a thread's wake-up costs more than a round trip on a busy
/// machine): a renewal already under way may still run after the release,
/// so a renew script must never recreate a released lease.
#[allow(clippy::too_many_arguments)]
pub(crate) fn renew_every(
    conn: &Arc<Conn>,
    route: String,
    lease: Duration,
    every: Duration,
    what: String,
    warnings: &Arc<Mutex<Vec<String>>>,
    on_loss: OnLoss,
    mut renew: impl FnMut(&mut redis::Connection) -> Result<i64, RedisError> + Send + 'static,
) -> mpsc::Sender<()> {
    let (stop, stopped) = mpsc::channel::<()>();
    let c = Arc::clone(conn);
    let push = |w: &Arc<Mutex<Vec<String>>>, message: String| {
        w.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(message);
    };
    let w = Arc::clone(warnings);
    let say = move |message: String| push(&w, message);
    // Said before the kill: whoever reaps the attempt finds the reason.
    // (A lease is renewed only while its attempt runs.)
    let w = Arc::clone(warnings);
    let say_and_kill = move |message: String, kill: bool| {
        if kill {
            push(&w, format!("{message}; its attempt was killed"));
            crate::running::kill();
        } else {
            push(&w, message);
        }
    };
    let safety = lease / 20;
    // Detached: it ends when told to or with the process.
    let _renewer = std::thread::Builder::new()
        .name("lease".to_string())
        .spawn(move || {
            let mut until = Instant::now() + lease;
            // Until the lease is dropped (the sender goes away).
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let mut failed = false;
                loop {
                    let mut left = until.saturating_duration_since(Instant::now()).saturating_sub(safety);
                    if left.is_zero() && failed {
                        if let Err(TryRecvError::Empty) = stopped.try_recv() {
                            let message = format!(
                                "{}: could not renew {what} before its lease ended; another process \
                                 may hold it now",
                                c.name
                            );
                            say_and_kill(message, on_loss != OnLoss::Nothing);
                        }
                        return;
                    }
                    if left.is_zero() {
                        // Woken after the lease ended (the process was
                        // stopped): one more try.
                        left = RECONNECT;
                        failed = true;
                    }
                    let asked = Instant::now();
                    let renewed = c.run_within("cannot renew a lease", &route, left, &mut renew);
                    if let Err(TryRecvError::Disconnected) = stopped.try_recv() {
                        // Released meanwhile: a renewal that found nothing
                        // (or failed) is no news.
                        return;
                    }
                    match renewed {
                        Ok(1) => {
                            until = asked + lease;
                            break;
                        }
                        Ok(_) => {
                            let message = format!(
                                "{}: lost {what}: its lease ran out before it was renewed (or the \
                                 server lost it in a failover); another process may hold it now",
                                c.name
                            );
                            say_and_kill(message, on_loss == OnLoss::KillIfLost);
                            return;
                        }
                        Err(e) if !failed => {
                            failed = true;
                            say(format!("{}; {what} runs out unless renewed soon", e.message));
                        }
                        Err(_) => {}
                    }
                }
            }
        })
        .ok();
    stop
}

/// What a lease is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Slot,
    Trial,
}

/// A lease this process holds: its renewer thread runs until the lease is
/// dropped, which releases it.
struct Lease {
    stop: Option<mpsc::Sender<()>>,
    conn: Arc<Conn>,
    held: Held,
    redis_key: String,
    token: String,
    /// Release on drop (not when a script already did).
    release: bool,
}

impl Lease {
    fn start(
        conn: &Arc<Conn>,
        held: Held,
        redis_key: String,
        token: String,
        store: &RedisStore,
        key: &Key,
    ) -> Lease {
        let (k, t) = (redis_key.clone(), token.clone());
        let timing = store.timing;
        let what = match held {
            Held::Slot => format!("its --concurrency slot of key '{}'", key.as_str()),
            Held::Trial => format!("the circuit trial of key '{}'", key.as_str()),
        };
        // A slot lost is a limit broken: its attempt must not go on.
        let on_loss = if held == Held::Slot { OnLoss::KillIfLost } else { OnLoss::Nothing };
        let route = redis_key.clone();
        let stop = renew_every(
            conn,
            route,
            timing.lease,
            timing.renew,
            what,
            &store.warnings,
            on_loss,
            move |con| match held {
                Held::Slot => RENEW_SLOT
                    .key(&k)
                    .arg(&t)
                    .arg(micros(timing.lease))
                    .arg(ttl(Duration::ZERO))
                    .invoke::<i64>(con),
                Held::Trial => RENEW_TRIAL.key(&k).arg(&t).arg(millis(timing.lease)).invoke::<i64>(con),
            },
        );
        Lease { stop: Some(stop), conn: Arc::clone(conn), held, redis_key, token, release: true }
    }

    /// Tells the renewer to stop, without waiting for it (a thread's
    /// wake-up costs more than a round trip on a busy machine). A renewal
    /// already under way may still run, after the release: it finds the
    /// lease gone (the renew scripts never recreate one) and ends quietly.
    fn stop_renewing(&mut self) {
        drop(self.stop.take());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_renewing();
        if !self.release {
            return;
        }
        let (k, t) = (&self.redis_key, &self.token);
        match self.held {
            // Once per attempt: not worth a round trip of waiting.
            Held::Slot => self.conn.send(k, redis::cmd("ZREM").arg(k).arg(t)),
            Held::Trial => self.conn.once(k, |con| RELEASE_TRIAL.key(k).arg(t).invoke::<i64>(con).map(drop)),
        }
    }
}

/// The Redis store of one server and database.
pub struct RedisStore {
    conn: Arc<Conn>,
    timing: Timing,
    /// This process's tokens: `host:pid:random`, then a counter.
    token_base: String,
    tokens: u64,
    /// The circuit trial leases this process holds, by key.
    trials: HashMap<String, Lease>,
    /// Said by the renewers, taken by [`Store::take_warnings`].
    warnings: Arc<Mutex<Vec<String>>>,
}

/// A process's tokens start so: `host:pid:random` (so `ZRANGE … slots`
/// shows who holds what).
pub(crate) fn token_base() -> String {
    let random: u64 = {
        use rand::RngExt as _;
        rand::make_rng::<rand::rngs::Xoshiro256PlusPlus>().random()
    };
    format!("{}:{}:{random:016x}", hostname(), std::process::id())
}

/// This machine's name, for tokens; `-` when unknown.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_graphic()).take(64).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".to_string())
}

impl RedisStore {
    /// Connects (with timeouts), authenticates, selects the database and
    /// checks that the server answers: an unreachable server or a refused
    /// password is an error here, before any attempt.
    pub fn open(url: &RedisUrl, lease: Option<Duration>) -> Result<RedisStore, StoreError> {
        let conn = Conn::open(url, format!("state store '{}'", url.masked()))?;
        Ok(RedisStore {
            conn,
            timing: Timing::new(lease),
            token_base: token_base(),
            tokens: 0,
            trials: HashMap::new(),
            warnings: Arc::new(Mutex::new(Vec::new())),
        })
    }

    fn token(&mut self) -> String {
        self.tokens += 1;
        format!("{}:{}", self.token_base, self.tokens)
    }
}

/// `retry:{key:KEY}:WHAT`: hash-tagged, so a key's state is one slot.
fn redis_key(key: &Key, what: &str) -> String {
    format!("retry:{{key:{}}}:{what}", key.as_str())
}

impl Store for RedisStore {
    fn admit(&mut self, key: &Key, circuit: &Circuit) -> Result<Admission, StoreError> {
        let (circuit_key, trial_key) = (redis_key(key, "circuit"), redis_key(key, "trial"));
        let token = self.token();
        let (admitted, trial, remaining_us, failures, trial_running): (i64, i64, i64, i64, i64) =
            self.conn.run("cannot read the circuit", &circuit_key, |con| {
                ADMIT
                    .key(&circuit_key)
                    .key(&trial_key)
                    .arg(circuit.threshold)
                    .arg(micros(circuit.cooldown))
                    .arg(&token)
                    .arg(millis(self.timing.lease))
                    .arg(ttl(circuit.cooldown))
                    .invoke(con)
            })?;
        let failures = u32::try_from(failures).unwrap_or(u32::MAX);
        if admitted == 0 {
            return Ok(Admission::Refused {
                remaining: Duration::from_micros(u64::try_from(remaining_us).unwrap_or(0)),
                failures,
                trial_running: trial_running != 0,
            });
        }
        if trial != 0 {
            let lease = Lease::start(&self.conn, Held::Trial, trial_key, token, self, key);
            self.trials.insert(key.as_str().to_string(), lease);
        }
        Ok(Admission::Admitted { trial: trial != 0 })
    }

    fn record_run(&mut self, key: &Key, circuit: &Circuit, end: RunEnd) -> Result<(), StoreError> {
        // Stop renewing first; the script below releases the trial with
        // the verdict (if it fails, the lease runs out by itself).
        let token = match self.trials.remove(key.as_str()) {
            Some(mut lease) => {
                lease.stop_renewing();
                lease.release = false;
                lease.token.clone()
            }
            None => String::new(),
        };
        let how = match end {
            RunEnd::Succeeded => "succeeded",
            RunEnd::GaveUp => "gave_up",
            RunEnd::Abandoned => "abandoned",
        };
        let (circuit_key, trial_key) = (redis_key(key, "circuit"), redis_key(key, "trial"));
        self.conn.run("cannot record the run", &circuit_key, |con| {
            RECORD
                .key(&circuit_key)
                .key(&trial_key)
                .arg(how)
                .arg(&token)
                .arg(ttl(circuit.cooldown))
                .invoke::<i64>(con)
        })?;
        Ok(())
    }

    fn rate_turn(&mut self, key: &Key, rate: &Rate) -> Result<Turn, StoreError> {
        let starts = redis_key(key, "starts");
        let token = self.token();
        let (go, wait_us): (i64, i64) = self.conn.run("cannot take a --rate turn", &starts, |con| {
            RATE.key(&starts)
                .arg(rate.n)
                .arg(micros(rate.window))
                .arg(&token)
                .arg(ttl(rate.window))
                .invoke(con)
        })?;
        if go != 0 {
            return Ok(Turn::Go);
        }
        let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0).max(1));
        Ok(Turn::Wait(wait.min(rate.window)))
    }

    fn acquire_slot(&mut self, key: &Key, n: u32) -> Result<Option<Slot>, StoreError> {
        let slots = redis_key(key, "slots");
        let token = self.token();
        let got: i64 = self.conn.run("cannot take a --concurrency slot", &slots, |con| {
            ACQUIRE
                .key(&slots)
                .arg(n.max(1))
                .arg(&token)
                .arg(micros(self.timing.lease))
                .arg(ttl(Duration::ZERO))
                .invoke(con)
        })?;
        if got == 0 {
            return Ok(None);
        }
        Ok(Some(Slot::new(Lease::start(&self.conn, Held::Slot, slots, token, self, key))))
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_30_days_or_the_cooldown_whichever_is_longer() {
        let day = 24 * 3600 * 1000;
        assert_eq!(ttl(Duration::ZERO), 30 * day);
        assert_eq!(ttl(Duration::from_secs(300)), 30 * day);
        assert_eq!(ttl(Duration::from_secs(60 * 24 * 3600)), 60 * day);
        assert_eq!(ttl(Duration::MAX), 10 * 365 * day);
    }

    #[test]
    fn numbers_sent_to_lua_stay_exact() {
        assert_eq!(micros(Duration::from_millis(1500)), 1_500_000);
        assert_eq!(micros(Duration::MAX), 1 << 53);
        assert_eq!(millis(Duration::ZERO), 1, "PX 0 is an error");
    }

    #[test]
    fn the_lease_is_10s_renewed_every_3s() {
        let t = Timing::new(None);
        assert_eq!((t.lease, t.renew), (LEASE, RENEW));
        assert!(RENEW * 3 < LEASE, "two renewals in a row may fail before a lease runs out");
        let t = Timing::new(Some(Duration::from_secs(1)));
        assert_eq!((t.lease, t.renew), (Duration::from_secs(1), Duration::from_millis(300)));
    }

    #[test]
    fn a_keys_state_is_one_slot() {
        let key = super::super::parse_key("api").unwrap();
        assert_eq!(redis_key(&key, "slots"), "retry:{key:api}:slots");
        let slots: Vec<u16> = ["circuit", "trial", "starts", "slots"]
            .iter()
            .map(|w| super::super::conn::slot(&redis_key(&key, w)))
            .collect();
        assert!(slots.windows(2).all(|w| w[0] == w[1]), "{slots:?}");
    }
}
