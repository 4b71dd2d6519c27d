//! The fleet queue in Redis (`--queue`, `--drain`, `--list` with
//! `redis://[user:pass@]host[:port][/db]#NAME`, a Cluster's nodes or
//! `redis+sentinel://…#NAME`): the same jobs as a queue directory (the
//! same JSON document, format version 1) in Redis, so that drains on many
//! machines share them. The connection is the state store's
//! (`store::conn::Conn`: TLS, Cluster routing, Sentinel, 2 s per
//! operation, `localhost` fallback, the password masked in every message).
//!
//! Layout, all under `retry:{queue:NAME}:` (one hash tag: a queue is one
//! Cluster slot, so every script touches one slot):
//!
//! ```text
//! due          sorted set: the jobs waiting (score: when due, µs since the
//!              epoch, by the clock of the machine that wrote the job)
//! leased       sorted set: the jobs a drain holds (score: when its lease
//!              ends, µs of the server's clock)
//! job:ID       hash: doc (the job's JSON document), due (its score), claim
//!              (how many times it was claimed: the fence), holder (the
//!              token of the claim that holds it, empty when none)
//! stdin:ID     string: the stdin recorded by --stdin replay (≤ 16 MiB)
//! dead         sorted set: the dead letters (score: when they died, µs)
//! dead:ID      hash: doc (the job with `dead` set), corrupt (the bytes of
//!              a record that could not be read, when that is why)
//! ```
//!
//! Leases: a drain claims the due job with the lowest score, atomically
//! (one Lua script): the job moves from `due` to `leased` with a lease of
//! `--lease` (30 s) by the server's clock, its `claim` counter goes up by
//! one and the drain keeps that number. A thread renews the lease every
//! third of it while the job runs. A lease that ran out (its drain died,
//! was stopped, or lost its network) puts the job back in `due` at the
//! next claim of any drain: at-least-once, never lost. Finishing a job
//! (complete, reschedule, bury) is one script that first checks the claim
//! number: a drain whose lease ran out and whose job another drain claimed
//! since writes nothing (its result is reported as lost): the newest
//! claim's result wins. A finished record stays a minute as a tombstone
//! (`done` = the claim number), so a drain that sends its result again
//! after a lost reply is told it was written.
//!
//! Scripts build the keys of one job from the queue's prefix; they all
//! share the queue's hash tag, so in a Cluster they live in the slot of
//! the keys the script declares. Keys expire: a job's after 30 days plus
//! its `--max-age` (refreshed by each reschedule), a dead letter's 30 days
//! after it died.
//!
//! A record of the wrong type (a string where a job's hash should be) or
//! shape (a hash without its document) is claimed like a job and buried
//! as corrupt, what could be read of it kept: it never stops a drain or
//! `--list`.
//!
//! Durability: a queue is as durable as the Redis it is in. After
//! enqueueing, retry waits (`WAIT 1`, within 2 s) for one replica where
//! the server has replicas, so a failover does not lose the job; a server
//! without AOF or RDB save points is warned about.
//!
//! Upgrade: the previous release kept a queue under `retry:queue:NAME:…`.
//! The first contact of this release with such a queue (on one server:
//! those keys cannot be in a Cluster) moves it, one script per job, to the
//! hash-tagged names.

use std::cell::RefCell;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Seek as _, Write as _};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, LazyLock, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;

use super::job::{self, Bytes, Job, Listed, Parsed};
use super::{Claim, Filed, Found, Store};
use crate::error::Error;
use crate::stdin::Replay;
use crate::store::StoreError;
use crate::store::redis::{Conn, IDLE, OnLoss, PRELUDE, micros, millis, renew_every, token_base};
use crate::store::url::RedisUrl;

/// `--lease` unless given.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

pub use crate::config::MIN_LEASE;

/// The most recorded stdin a Redis job carries (it is one Redis string,
/// read into memory by the drain that runs the job).
pub const MAX_STDIN: u64 = 16 << 20;

/// How long a finished job's record stays as a tombstone.
const TOMBSTONE: Duration = Duration::from_secs(60);

/// At most this long for any key (Redis refuses an expiry that overflows).
const TTL_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The queue's own Lua helpers, after the state store's prelude (`fmt`,
/// `now`): `extend` lengthens a key's expiry, never shortens it.
static QUEUE_PRELUDE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{PRELUDE}{}",
        r"
local function extend(key, ttl)
  if redis.call('PTTL', key) < tonumber(ttl) then redis.call('PEXPIRE', key, ttl) end
end
"
    )
});

fn script(body: &str) -> Script {
    Script::new(&format!("{}{body}", *QUEUE_PRELUDE))
}

/// Adds a job. KEYS: due, job, stdin. ARGV: id, doc, due score, ttl ms,
/// has stdin (`1`/`0`), stdin.
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('DEL', KEYS[2])
redis.call('HMSET', KEYS[2], 'doc', ARGV[2], 'due', ARGV[3], 'claim', '0', 'holder', '')
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[5] == '1' then redis.call('SET', KEYS[3], ARGV[6], 'PX', ARGV[4]) end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
extend(KEYS[1], ARGV[4])
return 1
",
    )
});

/// Claims the due job with the lowest score. KEYS: due, leased. ARGV:
/// prefix, cutoff µs, lease µs, token, ttl ms of `leased`, then ids this
/// drain passed over in this pass. First, jobs whose lease ran out go back
/// to `due` (at their due time); records that are gone (expired, or
/// finished: a tombstone) lose their stray entries. Returns nil, or {id,
/// doc, claim number, why}: `why` is empty for a job, else what is wrong
/// with a record of the wrong type or shape, which is then made a hash
/// holding what could be read of it (to be buried).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', fmt(now), 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  local key = ARGV[1] .. 'job:' .. id
  local kind = redis.call('TYPE', key).ok
  if kind == 'hash' then
    local due = redis.call('HGET', key, 'due')
    if due then redis.call('ZADD', KEYS[1], due, id) end
  elseif kind ~= 'none' then
    redis.call('ZADD', KEYS[1], fmt(now), id)
  end
end
local skip = {}
for i = 6, #ARGV do skip[ARGV[i]] = true end
local offset = 0
while true do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', offset, 50)
  if #ids == 0 then return false end
  for _, id in ipairs(ids) do
    local key = ARGV[1] .. 'job:' .. id
    local kind = redis.call('TYPE', key).ok
    local why = ''
    if skip[id] then
      offset = offset + 1
    elseif kind == 'none' or (kind == 'hash' and redis.call('HEXISTS', key, 'doc') == 0
                               and redis.call('HEXISTS', key, 'done') == 1) then
      redis.call('ZREM', KEYS[1], id)
    else
      if kind ~= 'hash' then
        local raw = ''
        if kind == 'string' then raw = redis.call('GET', key) end
        why = 'the record ' .. key .. ' is a Redis ' .. kind .. ', not a hash'
        redis.call('DEL', key)
        redis.call('HSET', key, 'doc', raw, 'due', redis.call('ZSCORE', KEYS[1], id), 'claim', '0')
      elseif redis.call('HEXISTS', key, 'doc') == 0 then
        why = 'the record ' .. key .. ' has no job document (fields: ' ..
          table.concat(redis.call('HKEYS', key), ', ') .. ')'
        redis.call('HSET', key, 'doc', '', 'due', redis.call('ZSCORE', KEYS[1], id))
      end
      local n = (tonumber(redis.call('HGET', key, 'claim') or '0') or 0) + 1
      redis.call('HSET', key, 'claim', n, 'holder', ARGV[4])
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZADD', KEYS[2], fmt(now + tonumber(ARGV[3])), id)
      extend(KEYS[2], ARGV[5])
      return {id, redis.call('HGET', key, 'doc'), n, why}
    end
  end
end
",
    )
});

/// Renews a lease still held by `token`; takes the job back from `due`
/// when the lease ran out but nobody claimed it since. A released or
/// finished job (holder changed) is never taken back. KEYS: due, leased,
/// job. ARGV: id, token, lease µs. Returns 1, or 0 when the lease is lost.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('HGET', KEYS[3], 'holder') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], fmt(now + tonumber(ARGV[3])), ARGV[1])
return 1
",
    )
});

/// Gives a job back unchanged, if `token` still holds it. KEYS: due,
/// leased, job. ARGV: id, token.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('HGET', KEYS[3], 'holder') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[3], 'holder', '')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], redis.call('HGET', KEYS[3], 'due') or fmt(now), ARGV[1])
return 1
",
    )
});

/// Files a claimed job's result, if the claim is still the newest. KEYS:
/// due, leased, job, stdin, dead, dead job. ARGV: id, claim number, mode
/// (`done`, `again`, `dead`), doc, due score, ttl ms, dead letters' ttl
/// ms, tombstone ms, the bytes of a corrupt record (optional). Returns
/// {1, n} when written (or written before by the same claim), {0, 0} when
/// the record is gone, {2, newer claim} when another drain claimed the job
/// since, {3, its claim} when another claim finished it.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local mine = tonumber(ARGV[2])
local done = redis.call('HGET', KEYS[3], 'done')
if done then
  if tonumber(done) == mine then return {1, mine} end
  return {3, tonumber(done)}
end
if redis.call('HEXISTS', KEYS[3], 'doc') == 0 then return {0, 0} end
local claim = tonumber(redis.call('HGET', KEYS[3], 'claim') or '0') or 0
if claim ~= mine then return {2, claim} end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == 'again' then
  redis.call('HMSET', KEYS[3], 'doc', ARGV[4], 'due', ARGV[5], 'holder', '')
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
  extend(KEYS[1], ARGV[6])
  return {1, mine}
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'done', ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[8])
if ARGV[3] == 'done' then
  redis.call('DEL', KEYS[4])
  return {1, mine}
end
redis.call('DEL', KEYS[6])
redis.call('HSET', KEYS[6], 'doc', ARGV[4])
if ARGV[9] then redis.call('HSET', KEYS[6], 'corrupt', ARGV[9]) end
redis.call('PEXPIRE', KEYS[6], ARGV[7])
redis.call('PEXPIRE', KEYS[4], ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', fmt(now - tonumber(ARGV[7]) * 1000))
redis.call('ZADD', KEYS[5], fmt(now), ARGV[1])
extend(KEYS[5], ARGV[7])
return {1, mine}
",
    )
});

/// The documents of records, for `--list`. KEYS: due (for routing only).
/// ARGV: the records' prefix (`…:job:` or `…:dead:`), then ids. Returns
/// two items per id: `doc` and the document, `gone` (expired or finished
/// meanwhile), or `bad` and what is wrong with the record.
static DOCS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i = 2, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local kind = redis.call('TYPE', key).ok
  local doc = false
  if kind == 'hash' then doc = redis.call('HGET', key, 'doc') end
  if doc then
    out[#out + 1] = 'doc'; out[#out + 1] = doc
  elseif kind == 'none' or (kind == 'hash' and redis.call('HEXISTS', key, 'done') == 1) then
    out[#out + 1] = 'gone'; out[#out + 1] = ''
  elseif kind == 'hash' then
    out[#out + 1] = 'bad'; out[#out + 1] = 'the record ' .. key .. ' has no job document'
  else
    out[#out + 1] = 'bad'; out[#out + 1] = 'the record ' .. key .. ' is a Redis ' .. kind .. ', not a hash'
  end
end
return out
",
    )
});

/// Moves one job of the previous release's layout to the hash-tagged
/// names, atomically (one server: the old keys are in no Cluster). KEYS:
/// old index (due, leased or dead), old record, old stdin, new index, new
/// record, new stdin. ARGV: id. A record already at the new name wins.
static MIGRATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('RENAME', KEYS[2], KEYS[5])
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('RENAME', KEYS[3], KEYS[6]) end
  if score then redis.call('ZADD', KEYS[4], score, ARGV[1]) end
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then extend(KEYS[4], ttl) end
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
",
    )
});

/// A queue on a Redis server.
pub struct RedisQueue {
    conn: Arc<Conn>,
    url: RedisUrl,
    /// `retry:{queue:NAME}:`.
    prefix: String,
    /// The key every operation is routed by (its slot is the queue's).
    route: String,
    /// `--lease` of a drain.
    lease: Duration,
    token_base: String,
    claims: u64,
    /// Said by the lease renewers.
    warnings: Arc<Mutex<Vec<String>>>,
    /// The ids this drain passed over in its pass (given back unchanged,
    /// or written by a newer retry): not handed out again.
    passed: Rc<RefCell<Vec<String>>>,
    /// The drain's directory for its jobs' state dirs (TMPDIR/retry-*).
    scratch: Option<tempfile::TempDir>,
}

fn store_error(e: StoreError) -> Error {
    Error::Store(e.message)
}

/// µs since the epoch, rounded down (the drain's cutoff) or up (a due time):
/// a job whose score is at most the cutoff is due by both clocks' readings.
fn floor_us(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_micros()).unwrap_or(u64::MAX)
}

fn ceil_us(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    if d.subsec_nanos() % 1000 == 0 { us } else { us.saturating_add(1) }
}

/// A queued job's keys live 30 days past its `--max-age`.
fn job_ttl(max_age_ms: u64) -> u64 {
    millis(IDLE.saturating_add(Duration::from_millis(max_age_ms)).min(TTL_MAX))
}

fn to_json(job: &Job) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(job).map_err(|e| Error::io("cannot encode a job", io::Error::other(e)))
}

/// The drain's environment with the job's saved variables over it.
fn overlay(mut env: Vec<CString>, saved: &[Bytes]) -> Vec<CString> {
    for entry in saved {
        let Some(eq) = entry.0.iter().position(|b| *b == b'=') else { continue };
        let name = &entry.0[..=eq];
        env.retain(|e| !e.as_bytes().starts_with(name));
        if let Ok(c) = CString::new(entry.0.clone()) {
            env.push(c);
        }
    }
    env
}

/// Before a `--stdin replay` run queued to Redis: a stdin that is a file
/// with more than [`MAX_STDIN`] bytes left is refused before anything
/// runs. (A pipe's size is known only when it has been read: that is
/// checked when the job is queued.)
pub fn check_stdin_size() -> Result<(), Error> {
    use std::os::fd::AsFd as _;
    let Ok(fd) = io::stdin().as_fd().try_clone_to_owned() else { return Ok(()) };
    let mut file = File::from(fd);
    let Ok(meta) = file.metadata() else { return Ok(()) };
    if !meta.is_file() {
        return Ok(());
    }
    let left = meta.len().saturating_sub(file.stream_position().unwrap_or(0));
    if left > MAX_STDIN {
        return Err(Error::Conflict(format!(
            "--stdin replay with a Redis queue: stdin is a file of {} bytes, and a Redis job carries at \
             most {} MiB of stdin; use a directory queue for larger input",
            left,
            MAX_STDIN >> 20
        )));
    }
    Ok(())
}

impl RedisQueue {
    /// Connects and checks the server (`PING`): an unreachable server or a
    /// refused password is an error here. `lease`: a drain's `--lease`.
    pub fn open(url: &RedisUrl, lease: Option<Duration>) -> Result<RedisQueue, Error> {
        let Some(name) = url.name.as_deref() else {
            return Err(Error::Conflict(format!("{}: a Redis queue needs #NAME", url.masked())));
        };
        let conn = Conn::open(url, format!("queue '{}'", url.masked())).map_err(store_error)?;
        let prefix = format!("retry:{{queue:{name}}}:");
        let queue = RedisQueue {
            conn,
            url: url.clone(),
            route: format!("{prefix}due"),
            prefix,
            lease: lease.unwrap_or(DEFAULT_LEASE),
            token_base: token_base(),
            claims: 0,
            warnings: Arc::new(Mutex::new(Vec::new())),
            passed: Rc::new(RefCell::new(Vec::new())),
            scratch: None,
        };
        queue.upgrade(name)?;
        Ok(queue)
    }

    /// The warning to give once when the queue's server keeps its data
    /// only in memory (SPEC "Redis in production").
    pub fn memory_only(&self) -> Option<String> {
        self.conn.memory_only(&self.route)
    }

    /// Moves a queue the previous release wrote under
    /// `retry:queue:NAME:…` to the hash-tagged names, job by job.
    fn upgrade(&self, name: &str) -> Result<(), Error> {
        if self.conn.is_cluster() {
            return Ok(());
        }
        let old = format!("retry:queue:{name}:");
        let indexes = ["due", "leased", "dead"].map(|i| format!("{old}{i}"));
        let there: i64 = self
            .conn
            .run("cannot look for a queue of the previous release", &self.route, |con| {
                redis::cmd("EXISTS").arg(&indexes).query(con)
            })
            .map_err(store_error)?;
        if there == 0 {
            return Ok(());
        }
        for (index, record) in [("due", "job"), ("leased", "job"), ("dead", "dead")] {
            let old_index = format!("{old}{index}");
            loop {
                let ids: Vec<String> = self
                    .conn
                    .run("cannot move a queue of the previous release", &self.route, |con| {
                        redis::cmd("ZRANGE").arg(&old_index).arg(0).arg(99).query(con)
                    })
                    .map_err(store_error)?;
                if ids.is_empty() {
                    break;
                }
                for id in ids {
                    let new_index = self.key(index);
                    self.conn
                        .run("cannot move a job of the previous release", &self.route, |con| {
                            MIGRATE
                                .key(&old_index)
                                .key(format!("{old}{record}:{id}"))
                                .key(format!("{old}stdin:{id}"))
                                .key(&new_index)
                                .key(self.key(&format!("{record}:{id}")))
                                .key(self.key(&format!("stdin:{id}")))
                                .arg(&id)
                                .invoke::<i64>(con)
                        })
                        .map_err(store_error)?;
                }
            }
        }
        Ok(())
    }

    fn key(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// The keys of job `id`.
    fn keys(&self, id: &str) -> Keys {
        Keys {
            due: self.key("due"),
            leased: self.key("leased"),
            job: self.key(&format!("job:{id}")),
            stdin: self.key(&format!("stdin:{id}")),
            dead: self.key("dead"),
            dead_job: self.key(&format!("dead:{id}")),
        }
    }

    /// `TMPDIR/retry-*/ID`, made: a drained job's `RETRY_STATE_DIR` (a job
    /// may run on any machine, so it gets a fresh one each time).
    fn state_path(&mut self, id: &str) -> Result<PathBuf, Error> {
        let scratch = match self.scratch.take() {
            Some(scratch) => scratch,
            None => crate::tmp::state_dir("cannot create the jobs' state directory")?,
        };
        let path = self.scratch.insert(scratch).path().join(id);
        let made =
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&path);
        match made {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                Err(Error::io(format!("cannot create the state directory '{}'", path.display()), e))
            }
            Ok(()) | Err(_) => Ok(path),
        }
    }

    /// Files a claim's result with [`FINISH`].
    fn finish(
        &mut self,
        hold: &mut Hold,
        mode: &str,
        job: Option<&Job>,
        corrupt: Option<&[u8]>,
    ) -> Result<Filed, Error> {
        hold.stop_renewing();
        let k = self.keys(&hold.id);
        let doc = match job {
            Some(job) => to_json(job)?,
            None => Vec::new(),
        };
        let score = job.map_or(0, |j| ceil_us(j.next_due.0));
        let ttl = job.map_or(job_ttl(0), |j| job_ttl(j.max_age_ms));
        let outcome = match mode {
            "done" => "it succeeded",
            "again" => "it is to run again",
            _ => "it is to go to the dead letters",
        };
        let (status, claim): (i64, i64) = self
            .conn
            .run("cannot file a job's result", &self.route, |con| {
                let mut inv = FINISH.prepare_invoke();
                inv.key(&k.due).key(&k.leased).key(&k.job).key(&k.stdin).key(&k.dead).key(&k.dead_job);
                inv.arg(&hold.id)
                    .arg(hold.number)
                    .arg(mode)
                    .arg(&doc)
                    .arg(score)
                    .arg(ttl)
                    .arg(millis(IDLE))
                    .arg(millis(TOMBSTONE));
                if let Some(raw) = corrupt {
                    inv.arg(raw);
                }
                inv.invoke(con)
            })
            .map_err(|e| {
                Error::Store(format!(
                    "{}; the result of job {} ({outcome}) was not recorded: the job stays in the queue \
                     and runs again once its lease ends",
                    e.message, hold.id
                ))
            })?;
        hold.settled = true;
        let mine = hold.number;
        Ok(match status {
            1 => Filed::Saved,
            2 => Filed::Lost(format!(
                "this drain's lease ran out while the job ran and another drain claimed it since \
                 (claim {claim}; this drain's was {mine})"
            )),
            3 => Filed::Lost(format!(
                "this drain's lease ran out while the job ran and another drain finished it \
                 meanwhile (claim {claim}; this drain's was {mine})"
            )),
            _ => Filed::Lost(
                "the job's record is gone from the queue: another drain may have finished it more \
                 than a minute ago (after this drain's lease ran out), or the server lost its data \
                 (a restart without persistence, or a failover)"
                    .to_string(),
            ),
        })
    }

    /// A corrupt record: a dead letter that says why, the bytes kept.
    fn bury_corrupt(&mut self, mut hold: Hold, raw: &[u8], why: String) -> Result<Found<RedisClaim>, Error> {
        let id = hold.id.clone();
        let reason = format!("corrupt job record (its bytes are kept with the dead letter): {why}");
        let letter = Job::corrupt(&id, SystemTime::now(), reason.clone());
        // Lost means another drain has it: nothing to say twice.
        let _ = self.finish(&mut hold, "dead", Some(&letter), Some(raw))?;
        Ok(Found::Corrupt { id, reason })
    }

    /// Reads the docs of `ids` from the hashes `<kind>:<id>`, 100 at a
    /// time: `None` for a record gone meanwhile, `Err(why)` for one of the
    /// wrong type or shape.
    #[allow(clippy::type_complexity)]
    fn docs(&self, kind: &str, ids: &[String]) -> Result<Vec<Option<Result<Vec<u8>, String>>>, Error> {
        let mut out = Vec::with_capacity(ids.len());
        let prefix = self.key(&format!("{kind}:"));
        for chunk in ids.chunks(100) {
            let items: Vec<Vec<u8>> = self
                .conn
                .run("cannot list the jobs", &self.route, |con| {
                    let mut inv = DOCS.prepare_invoke();
                    inv.key(&self.route).arg(&prefix);
                    for id in chunk {
                        inv.arg(id);
                    }
                    inv.invoke(con)
                })
                .map_err(store_error)?;
            for pair in items.chunks(2) {
                out.push(match pair {
                    [tag, doc] if tag == b"doc" => Some(Ok(doc.clone())),
                    [tag, why] if tag == b"bad" => Some(Err(String::from_utf8_lossy(why).into_owned())),
                    _ => None,
                });
            }
        }
        Ok(out)
    }
}

struct Keys {
    due: String,
    leased: String,
    job: String,
    stdin: String,
    dead: String,
    dead_job: String,
}

/// A claim on a job: its number (the fence), its token, the renewer; given
/// back on drop unless settled.
struct Hold {
    id: String,
    number: i64,
    token: String,
    conn: Arc<Conn>,
    keys: Keys,
    stop: Option<mpsc::Sender<()>>,
    /// Filed (or lost): nothing to give back.
    settled: bool,
    passed: Rc<RefCell<Vec<String>>>,
}

impl Hold {
    fn stop_renewing(&mut self) {
        drop(self.stop.take());
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.stop_renewing();
        if self.settled {
            return;
        }
        // Given back unchanged: due again, but not in this drain's pass.
        // If the server cannot be reached now, the lease runs out.
        let k = &self.keys;
        self.conn.once(&k.due, |con| {
            RELEASE
                .key(&k.due)
                .key(&k.leased)
                .key(&k.job)
                .arg(&self.id)
                .arg(&self.token)
                .invoke::<i64>(con)
                .map(drop)
        });
        self.passed.borrow_mut().push(self.id.clone());
    }
}

/// A job a drain holds on a Redis queue.
pub struct RedisClaim {
    job: Job,
    hold: Hold,
    /// Its `RETRY_STATE_DIR` for this attempt, removed with the claim.
    state: PathBuf,
}

impl Drop for RedisClaim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl Claim for RedisClaim {
    fn job(&self) -> &Job {
        &self.job
    }

    /// The recording, copied from Redis into an unlinked temp file.
    fn stdin(&self) -> io::Result<Option<File>> {
        if !self.job.stdin {
            return Ok(None);
        }
        let key = &self.hold.keys.stdin;
        let bytes: Option<Vec<u8>> = self
            .hold
            .conn
            .run("cannot read a job's stdin", &self.hold.keys.due, |con| {
                redis::cmd("GET").arg(key).query(con)
            })
            .map_err(|e| io::Error::other(e.message))?;
        let Some(bytes) = bytes else { return Err(io::Error::from(io::ErrorKind::NotFound)) };
        let mut file = tempfile::tempfile()?;
        file.write_all(&bytes)?;
        file.rewind()?;
        Ok(Some(file))
    }

    fn state_dir(&self) -> PathBuf {
        self.state.clone()
    }

    /// The drain's environment, with the variables the job kept
    /// (`--queue-env`) over it: the draining machine may be another one.
    fn env(&self) -> Vec<CString> {
        overlay(crate::environ::base(), &self.job.env)
    }
}

impl Store for RedisQueue {
    type Claim = RedisClaim;

    fn location(&self, id: &str) -> String {
        format!("{id} in {}", self.url.masked())
    }

    fn enqueue(&mut self, job: &Job, stdin: Option<&Replay>) -> Result<(), Error> {
        let id = &job.id;
        let what = || format!("cannot queue job {id} in {}", self.url.masked());
        let stdin = match stdin.map(|r| r.to_vec(MAX_STDIN)).transpose().map_err(|e| Error::io(what(), e))? {
            None => None,
            Some(Some(bytes)) => Some(bytes),
            Some(None) => {
                return Err(Error::io(
                    what(),
                    io::Error::other(format!(
                        "its recorded stdin is larger than {} MiB, the most a Redis job carries; \
                         use a directory queue for larger input",
                        MAX_STDIN >> 20
                    )),
                ));
            }
        };
        let doc = to_json(job)?;
        let k = self.keys(id);
        let (score, ttl) = (ceil_us(job.next_due.0), job_ttl(job.max_age_ms));
        self.conn
            .run(&format!("cannot queue job {id}"), &self.route, |con| {
                ENQUEUE
                    .key(&k.due)
                    .key(&k.job)
                    .key(&k.stdin)
                    .arg(id)
                    .arg(&doc)
                    .arg(score)
                    .arg(ttl)
                    .arg(if stdin.is_some() { "1" } else { "0" })
                    .arg(stdin.as_deref().unwrap_or_default())
                    .invoke::<i64>(con)
            })
            .map_err(store_error)?;
        // Where the server has replicas: one has the job before retry
        // says it is queued, so a failover does not lose it.
        if self.conn.wait_for_replica(&self.route) == Some(false) {
            self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!(
                "{}: no replica acknowledged job {id} within 2s: a failover now could lose it",
                self.url.masked()
            ));
        }
        Ok(())
    }

    fn claim_next(&mut self, cutoff: SystemTime) -> Result<Option<Found<RedisClaim>>, Error> {
        self.claims += 1;
        let token = format!("{}:{}", self.token_base, self.claims);
        let (due, leased) = (self.key("due"), self.key("leased"));
        let skip = self.passed.borrow().clone();
        let got: Option<(String, Vec<u8>, i64, String)> = self
            .conn
            .run("cannot claim a job", &self.route, |con| {
                let mut inv = CLAIM.prepare_invoke();
                inv.key(&due).key(&leased);
                inv.arg(&self.prefix)
                    .arg(floor_us(cutoff))
                    .arg(micros(self.lease))
                    .arg(&token)
                    .arg(millis(IDLE));
                for id in &skip {
                    inv.arg(id);
                }
                inv.invoke(con)
            })
            .map_err(store_error)?;
        let Some((id, doc, number, wrong)) = got else { return Ok(None) };
        let mut hold = Hold {
            keys: self.keys(&id),
            id: id.clone(),
            number,
            token: token.clone(),
            conn: Arc::clone(&self.conn),
            stop: None,
            settled: false,
            passed: Rc::clone(&self.passed),
        };
        if !wrong.is_empty() {
            return self.bury_corrupt(hold, &doc, wrong).map(Some);
        }
        let job = match job::parse(&doc, &id) {
            Parsed::Job(job) => job,
            // Given back as it is (by dropping the hold).
            Parsed::Newer(version) => return Ok(Some(Found::Newer { id, version })),
            Parsed::Corrupt(why) => return self.bury_corrupt(hold, &doc, why).map(Some),
        };
        let k = self.keys(&id);
        let lease = self.lease;
        hold.stop = Some(renew_every(
            &self.conn,
            self.route.clone(),
            lease,
            lease / 3,
            "the job's lease".to_string(),
            &self.warnings,
            OnLoss::KillIfUnreachable,
            move |con| {
                RENEW
                    .key(&k.due)
                    .key(&k.leased)
                    .key(&k.job)
                    .arg(&id)
                    .arg(&token)
                    .arg(micros(lease))
                    .invoke(con)
            },
        ));
        let state = self.state_path(&hold.id)?;
        Ok(Some(Found::Job(RedisClaim { job: *job, hold, state })))
    }

    fn complete(&mut self, mut claim: RedisClaim) -> Result<Filed, Error> {
        self.finish(&mut claim.hold, "done", None, None)
    }

    fn reschedule(&mut self, mut claim: RedisClaim, job: &Job) -> Result<Filed, Error> {
        self.finish(&mut claim.hold, "again", Some(job), None)
    }

    fn bury(&mut self, mut claim: RedisClaim, job: &Job) -> Result<Filed, Error> {
        self.finish(&mut claim.hold, "dead", Some(job), None)
    }

    fn list(&mut self) -> Result<super::Jobs, Error> {
        let (due, leased, dead) = (self.key("due"), self.key("leased"), self.key("dead"));
        // One transaction: a job moving between `due` and `leased` is seen once.
        let (mut queued, leased_ids, dead_ids): (Vec<String>, Vec<String>, Vec<String>) = self
            .conn
            .run("cannot list the jobs", &self.route, |con| {
                redis::pipe()
                    .atomic()
                    .cmd("ZRANGE")
                    .arg(&due)
                    .arg(0)
                    .arg(-1)
                    .cmd("ZRANGE")
                    .arg(&leased)
                    .arg(0)
                    .arg(-1)
                    .cmd("ZRANGE")
                    .arg(&dead)
                    .arg(0)
                    .arg(-1)
                    .query(con)
            })
            .map_err(store_error)?;
        queued.extend(leased_ids);
        queued.sort();
        queued.dedup();
        let mut out = Vec::new();
        for (ids, kind, is_dead) in [(&queued, "job", false), (&dead_ids, "dead", true)] {
            for (id, doc) in ids.iter().zip(self.docs(kind, ids)?) {
                let parsed = match doc {
                    // Gone meanwhile (finished, or expired).
                    None => continue,
                    Some(Ok(doc)) => job::parse(&doc, id),
                    Some(Err(why)) => Parsed::Corrupt(why),
                };
                out.push(Listed::parsed(parsed, id, is_dead, "record"));
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(out)
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_due_by_its_score_is_due_by_its_time() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(floor_us(t), 1_700_000_000_123_456);
        assert_eq!(ceil_us(t), 1_700_000_000_123_457);
        let exact = UNIX_EPOCH + Duration::from_micros(5);
        assert_eq!((floor_us(exact), ceil_us(exact)), (5, 5));
        // ceil(due) <= floor(cutoff) implies due <= cutoff.
        let cutoff = UNIX_EPOCH + Duration::new(1_700_000_000, 123_457_100);
        assert!(ceil_us(t) <= floor_us(cutoff) && t <= cutoff);
    }

    #[test]
    fn keys_live_30_days_past_the_max_age() {
        let day = 24 * 3600 * 1000;
        assert_eq!(job_ttl(0), 30 * day);
        assert_eq!(job_ttl(3 * day), 33 * day);
        assert_eq!(job_ttl(u64::MAX), 10 * 365 * day);
    }

    #[test]
    fn saved_variables_go_over_the_drains() {
        let c = |s: &str| CString::new(s).unwrap();
        let base = vec![c("PATH=/bin"), c("TOKEN=drain"), c("TOKENS=x")];
        let saved = [Bytes(b"TOKEN=job".to_vec()), Bytes(b"EXTRA=1".to_vec()), Bytes(b"junk".to_vec())];
        let got = overlay(base, &saved);
        assert_eq!(got, [c("PATH=/bin"), c("TOKENS=x"), c("TOKEN=job"), c("EXTRA=1")]);
    }

    #[test]
    fn the_stdin_limit_is_16_mib() {
        assert_eq!(MAX_STDIN, 16 * 1024 * 1024);
        assert!(MIN_LEASE / 3 >= Duration::from_millis(30));
    }
}
