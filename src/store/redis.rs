//! The Redis store (`--state-store redis://[user:pass@]host[:port][/db]`):
//! shared state of a fleet of machines.
//!
//! Layout, per key (`api`), all under `retry:key:api:`:
//!
//! ```text
//! retry:key:api:circuit  hash {failures, last_failure_us}: consecutive runs
//!                        that gave up and when the last one ended; deleted
//!                        by a success
//! retry:key:api:trial    string: the token of the circuit's trial run, a
//!                        lease (PX) its holder renews
//! retry:key:api:starts   sorted set: the latest attempt starts (score: µs of
//!                        the server's clock), at most N of the rate limit
//! retry:key:api:slots    sorted set: the concurrency slots held (member: the
//!                        holder's token; score: when its lease ends, µs)
//! ```
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
//! of [`LEASE`] that a thread renews every [`RENEW`] while the holder runs
//! (the [`Slot`] guard, or the store for a trial, owns the thread; dropping
//! it stops the thread and releases the lease). A holder that dies, even by
//! SIGKILL, or loses its network frees its slot or trial when the lease
//! ends. (Tests may shorten the lease with the undocumented environment
//! variable `RETRY_TEST_REDIS_LEASE_MS`; it is for tests only.)
//!
//! Failures: connecting (name resolution included) and every read and write
//! have timeouts, so the store never hangs retry. A connection lost during
//! a run is re-established for at most [`RECONNECT`]; then the operation
//! fails with a [`StoreError`] and [`super::Coordination`] ends the run with
//! 125 or goes on uncoordinated (`--store-optional`). An operation whose
//! reply was lost is sent again after a reconnect: it may then count twice
//! (a start, a failed run), never zero times. Releasing a lease never
//! reconnects: if the connection is gone the lease simply runs out.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo as _, RedisConnectionInfo, RedisError, Script,
};

use super::url::RedisUrl;
use super::{Admission, Circuit, Key, Rate, RunEnd, Slot, Store, StoreError, Turn};

/// How long a slot or a trial lease lasts without renewal (SPEC: 10 s).
pub const LEASE: Duration = Duration::from_secs(10);

/// How often the holder renews it (SPEC: every 3 s).
pub const RENEW: Duration = Duration::from_secs(3);

/// How long a lost connection is re-established for (SPEC Edge rules).
pub const RECONNECT: Duration = Duration::from_secs(2);

/// The longest a connect (name resolution included) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a command's write or reply may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Keys live this long without use (SPEC Edge rules: 30 days)…
pub const IDLE: Duration = Duration::from_secs(30 * 24 * 3600);

/// …and at most this long, whatever the cooldown or window (Redis refuses
/// an expiry that overflows its clock arithmetic).
const TTL_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Test-only: a shorter lease (renewed every 3/10 of it), so that tests of
/// a crashed holder need not wait 10 s. Not documented for users.
const LEASE_ENV: &str = "RETRY_TEST_REDIS_LEASE_MS";

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

/// `io::Error`'s text without its ` (os error N)` tail.
fn plain(text: String) -> String {
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Lease timing: the SPEC's 10 s / 3 s unless a test shortened it.
#[derive(Clone, Copy, Debug)]
struct Timing {
    lease: Duration,
    renew: Duration,
}

impl Timing {
    fn from_env() -> Timing {
        let ms = std::env::var(LEASE_ENV).ok().and_then(|v| v.parse::<u64>().ok()).filter(|ms| *ms >= 100);
        match ms {
            Some(ms) => {
                Timing { lease: Duration::from_millis(ms), renew: Duration::from_millis(ms * 3 / 10) }
            }
            None => Timing { lease: LEASE, renew: RENEW },
        }
    }
}

/// One connection, shared by the store and its lease renewers, and how to
/// make it again. The fleet queue (`crate::queue::redis`) uses it too.
pub(crate) struct Conn {
    url: RedisUrl,
    /// `state store 'redis://…'` (password masked), for messages.
    name: String,
    con: Mutex<Option<Link>>,
}

/// A live connection, and how many replies of commands sent without
/// waiting (slot releases) are still to be read from it.
struct Link {
    con: redis::Connection,
    unread: usize,
}

impl Link {
    fn new(con: redis::Connection) -> Link {
        Link { con, unread: 0 }
    }

    /// The connection, once the replies still owed are read (they came
    /// long ago: reading them costs no wait). Their content does not
    /// matter; a lost connection does.
    fn ready(&mut self) -> Result<&mut redis::Connection, RedisError> {
        while self.unread > 0 {
            match self.con.recv_response() {
                Err(e) if lost(&e) => return Err(e),
                Ok(_) | Err(_) => self.unread -= 1,
            }
        }
        Ok(&mut self.con)
    }
}

/// Is the connection itself in doubt (rather than the server saying no)?
fn lost(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal()
}

impl Conn {
    /// Connects (with timeouts), authenticates, selects the database and
    /// checks that the server answers `PING`. `name` says what the server
    /// is for in messages (`state store 'redis://…'`), password masked.
    pub(crate) fn open(url: &RedisUrl, name: String) -> Result<Arc<Conn>, StoreError> {
        if url.tls {
            return Err(StoreError::unavailable(format!("{name}: {TLS_REFUSED}")));
        }
        let conn = Conn { url: url.clone(), name, con: Mutex::new(None) };
        let mut con = conn.connect(CONNECT_TIMEOUT)?;
        redis::cmd("PING").query::<String>(&mut con).map_err(|e| conn.failed("cannot connect", &e))?;
        *conn.lock() = Some(Link::new(con));
        Ok(Arc::new(conn))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Link>> {
        // A renewer that panicked cannot leave the connection half-used
        // in a way that matters: the next error reconnects.
        self.con.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The error text with the password, should a library ever echo it,
    /// replaced.
    fn scrub(&self, text: String) -> String {
        match &self.url.password {
            Some(p) if p.len() >= 4 => text.replace(p.as_str(), "***"),
            _ => text,
        }
    }

    fn failed(&self, doing: &str, e: &RedisError) -> StoreError {
        let why = match e.kind() {
            redis::ErrorKind::AuthenticationFailed => {
                "authentication failed (a wrong user name or password?)".to_string()
            }
            // A server's reply: `NOAUTH Authentication required.`
            _ => match (e.code(), e.detail()) {
                (Some(code), Some(detail)) => format!("{code} {detail}"),
                _ => plain(e.to_string()),
            },
        };
        StoreError::unavailable(self.scrub(format!("{}: {doing}: {why}", self.name)))
    }

    /// Connects to one of the host's addresses, within `budget`:
    /// resolution, TCP, AUTH and SELECT, with timeouts on every step.
    fn connect(&self, budget: Duration) -> Result<redis::Connection, StoreError> {
        let start = Instant::now();
        let addrs = resolve(&self.url.host, self.url.port, budget)
            .map_err(|why| StoreError::unavailable(format!("{}: {why}", self.name)))?;
        let mut redis_info = RedisConnectionInfo::default()
            .set_db(i64::from(self.url.db))
            .set_lib_name("retry", env!("CARGO_PKG_VERSION"));
        if let Some(user) = &self.url.user {
            redis_info = redis_info.set_username(user);
        }
        if let Some(password) = &self.url.password {
            redis_info = redis_info.set_password(password);
        }
        let mut last = None;
        for addr in addrs {
            let left = budget.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            let info = ConnectionAddr::Tcp(addr.ip().to_string(), addr.port()).into_connection_info().map(
                |i: ConnectionInfo| {
                    i.set_redis_settings(redis_info.clone())
                        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
                },
            );
            let con = info.and_then(|info| redis::Client::open(info)?.get_connection_with_timeout(left));
            match con {
                Ok(con) => {
                    con.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| self.failed("cannot connect", &e))?;
                    con.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| self.failed("cannot connect", &e))?;
                    return Ok(con);
                }
                // The server answered: another address will not help.
                Err(e) if !lost(&e) => return Err(self.failed("cannot connect", &e)),
                Err(e) => last = Some((addr, e)),
            }
        }
        Err(match last {
            Some((addr, e)) => self.failed(&format!("cannot connect to {addr}"), &e),
            None => StoreError::unavailable(format!(
                "{}: cannot connect within {}",
                self.name,
                crate::parse::human(budget)
            )),
        })
    }

    /// Runs `op` on the connection; when the connection is lost (or was
    /// lost before), reconnects and runs it again, for at most
    /// [`RECONNECT`]. A server's "no" is an error at once.
    pub(crate) fn run<T>(
        &self,
        doing: &str,
        mut op: impl FnMut(&mut redis::Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.lock();
        let mut why = match guard.as_mut().map(|link| link.ready().and_then(&mut op)) {
            Some(Ok(value)) => return Ok(value),
            Some(Err(e)) if !lost(&e) => return Err(self.failed(doing, &e)),
            Some(Err(e)) => self.failed(doing, &e),
            None => StoreError::unavailable(format!("{}: not connected", self.name)),
        };
        *guard = None;
        let until = Instant::now() + RECONNECT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::unavailable(format!(
                    "{} (reconnecting for {} did not help)",
                    why.message,
                    crate::parse::human(RECONNECT)
                )));
            }
            match self.connect(left.min(CONNECT_TIMEOUT)) {
                Ok(mut con) => match op(&mut con) {
                    Ok(value) => {
                        *guard = Some(Link::new(con));
                        return Ok(value);
                    }
                    Err(e) if !lost(&e) => {
                        *guard = Some(Link::new(con));
                        return Err(self.failed(doing, &e));
                    }
                    Err(e) => why = self.failed(doing, &e),
                },
                Err(e) => why = e,
            }
            std::thread::sleep(
                Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())),
            );
        }
    }

    /// Runs `op` once if connected; never reconnects (for releases, whose
    /// leases run out by themselves).
    pub(crate) fn once(&self, op: impl FnOnce(&mut redis::Connection) -> Result<(), RedisError>) {
        let mut guard = self.lock();
        if let Some(link) = guard.as_mut() {
            if link.ready().and_then(op).is_err_and(|e| lost(&e)) {
                *guard = None;
            }
        }
    }

    /// Sends `cmd` if connected, without waiting for its reply (read
    /// before the next command); never reconnects. Redis runs a
    /// connection's commands in order, so what follows sees its effect.
    fn send(&self, cmd: &redis::Cmd) {
        let mut guard = self.lock();
        if let Some(link) = guard.as_mut() {
            match link.con.send_packed_command(&cmd.get_packed_command()) {
                Ok(()) => link.unread += 1,
                Err(_) => *guard = None,
            }
        }
    }
}

/// The host's addresses, resolved within `budget` (a resolver that hangs
/// is left behind on its thread). `localhost` falls back to the loopback
/// addresses when it does not resolve: a statically linked build may have
/// no working name service at all.
fn resolve(host: &str, port: u16, budget: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let loopback = || {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]
    };
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    let spawned = std::thread::Builder::new().name("resolve".to_string()).spawn(move || {
        let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    });
    let localhost = host.eq_ignore_ascii_case("localhost");
    let answer = match spawned {
        Ok(_) => rx.recv_timeout(budget),
        Err(_) => Err(RecvTimeoutError::Disconnected),
    };
    match answer {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        _ if localhost => Ok(loopback()),
        Ok(Ok(_)) => Err(format!("'{host}' has no address")),
        Ok(Err(e)) => Err(format!("cannot resolve '{host}': {}", plain(e.to_string()))),
        Err(RecvTimeoutError::Timeout) => {
            Err(format!("cannot resolve '{host}' within {}", crate::parse::human(budget)))
        }
        Err(RecvTimeoutError::Disconnected) => Err(format!("cannot resolve '{host}'")),
    }
}

/// Starts a detached thread that calls `renew` every `every` until the
/// returned sender is dropped: a lease's renewer. `renew` answers 1 when
/// the lease was renewed, anything else when it was lost (then, and when
/// the server cannot be reached for [`RECONNECT`], a warning naming `what`
/// goes to `warnings`). Dropping the sender does not wait for the thread
/// (a thread's wake-up costs more than a round trip on a busy machine): a
/// renewal already under way may still run after the release, so a renew
/// script must never recreate a released lease.
pub(crate) fn renew_every(
    conn: &Arc<Conn>,
    every: Duration,
    what: String,
    warnings: &Arc<Mutex<Vec<String>>>,
    mut renew: impl FnMut(&mut redis::Connection) -> Result<i64, RedisError> + Send + 'static,
) -> mpsc::Sender<()> {
    let (stop, stopped) = mpsc::channel::<()>();
    let (c, w) = (Arc::clone(conn), Arc::clone(warnings));
    // Detached: it ends when told to or with the process.
    let _renewer = std::thread::Builder::new()
        .name("lease".to_string())
        .spawn(move || {
            // Until the lease is dropped (the sender goes away).
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let renewed = c.run("cannot renew a lease", &mut renew);
                if let Err(TryRecvError::Disconnected) = stopped.try_recv() {
                    // Released meanwhile: a renewal that found nothing
                    // (or failed) is no news.
                    break;
                }
                let message = match renewed {
                    Ok(1) => continue,
                    Ok(_) => format!(
                        "{}: lost {what}: its lease ran out before it was renewed; \
                         another process may hold it now",
                        c.name
                    ),
                    Err(e) => format!("{}; {what} runs out unless renewed soon", e.message),
                };
                w.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(message);
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
        let stop = renew_every(conn, timing.renew, what, &store.warnings, move |con| match held {
            Held::Slot => RENEW_SLOT
                .key(&k)
                .arg(&t)
                .arg(micros(timing.lease))
                .arg(ttl(Duration::ZERO))
                .invoke::<i64>(con),
            Held::Trial => RENEW_TRIAL.key(&k).arg(&t).arg(millis(timing.lease)).invoke::<i64>(con),
        });
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
            Held::Slot => self.conn.send(redis::cmd("ZREM").arg(k).arg(t)),
            Held::Trial => self.conn.once(|con| RELEASE_TRIAL.key(k).arg(t).invoke::<i64>(con).map(drop)),
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
    pub fn open(url: &RedisUrl) -> Result<RedisStore, StoreError> {
        let conn = Conn::open(url, format!("state store '{}'", url.masked()))?;
        Ok(RedisStore {
            conn,
            timing: Timing::from_env(),
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

/// Why `rediss://` is refused (README "TLS").
pub const TLS_REFUSED: &str = "TLS (rediss://) is not supported by this build: reach the server through a \
                               TLS tunnel on this machine (stunnel, spiped, ssh -L) and give redis://127.0.0.1:PORT";

fn redis_key(key: &Key, what: &str) -> String {
    format!("retry:key:{}:{what}", key.as_str())
}

impl Store for RedisStore {
    fn admit(&mut self, key: &Key, circuit: &Circuit) -> Result<Admission, StoreError> {
        let (circuit_key, trial_key) = (redis_key(key, "circuit"), redis_key(key, "trial"));
        let token = self.token();
        let (admitted, trial, remaining_us, failures, trial_running): (i64, i64, i64, i64, i64) =
            self.conn.run("cannot read the circuit", |con| {
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
        self.conn.run("cannot record the run", |con| {
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
        let (go, wait_us): (i64, i64) = self.conn.run("cannot take a --rate turn", |con| {
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
        let got: i64 = self.conn.run("cannot take a --concurrency slot", |con| {
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
    fn addresses_and_localhost() {
        let t = Duration::from_secs(2);
        assert_eq!(resolve("127.0.0.1", 7, t), Ok(vec!["127.0.0.1:7".parse().unwrap()]));
        assert_eq!(resolve("::1", 7, t), Ok(vec!["[::1]:7".parse().unwrap()]));
        let local = resolve("localhost", 7, t).expect("localhost");
        assert!(
            !local.is_empty() && local.iter().all(|a| a.ip().is_loopback() && a.port() == 7),
            "{local:?}"
        );
        assert!(resolve("no-such-host.invalid", 7, t).is_err());
    }

    #[test]
    fn the_lease_is_10s_renewed_every_3s() {
        // (Unless a test shortened it through the environment.)
        if std::env::var_os(LEASE_ENV).is_none() {
            let t = Timing::from_env();
            assert_eq!((t.lease, t.renew), (LEASE, RENEW));
        }
        assert!(RENEW * 3 < LEASE, "two renewals in a row may fail before a lease runs out");
    }
}
