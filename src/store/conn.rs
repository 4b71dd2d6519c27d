//! The connection to Redis that the state store and the fleet queue share
//! (SPEC "Redis in production"): one server, a Redis Cluster (routed by
//! slot) or the master a set of sentinels names; plain TCP or TLS; the
//! password from the URL or `RETRY_REDIS_PASSWORD`.
//!
//! Every operation names the key it is about (its *route*): every key of
//! one `--key` and of one queue carries the same hash tag, so each
//! operation touches one slot. On a single server the route does not
//! matter. In a Cluster, the slot map (`CLUSTER SLOTS`) says which master
//! serves the key; a `MOVED` reply updates it, an `ASK` reply sends the
//! one command to the other node with `ASKING` first. Whether the server
//! is a Cluster is found out at the first contact (`CLUSTER SLOTS` on a
//! server without cluster support is an error: then it is one server).
//!
//! Time: each operation has [`RECONNECT`] from its start, whatever
//! happens: connecting, a frozen server (every read and write has a
//! socket timeout of what is left), a lost connection (connect again), a
//! failover (a Cluster's slot map read again, a sentinel asked again for
//! the master), `LOADING`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN` and
//! `READONLY` (a master that became a replica) are waited out within it.
//! Then the operation fails with a [`StoreError`] of one line.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{
    ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo as _, RedisConnectionInfo, RedisError,
    Value,
};

use super::StoreError;
use super::url::RedisUrl;
use crate::error::Error;

/// How long one operation may take, reconnecting included (SPEC Edge rules: 2 s).
pub const RECONNECT: Duration = Duration::from_secs(2);

/// The longest a connect (name resolution included) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a command's write or reply may take (at most what is left
/// of the operation's [`RECONNECT`]).
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A pause between two tries of an operation.
const PAUSE: Duration = Duration::from_millis(50);

/// The TLS files of `--tls-ca`, `--tls-cert` and `--tls-key`, read once.
#[derive(Clone, Default)]
struct TlsFiles {
    /// PEM: the system's trust store, plus `--tls-ca` when given.
    roots: Option<Arc<Vec<u8>>>,
    /// `--tls-ca` alone (PEM), to be added to the system's roots.
    ca: Option<Vec<u8>>,
    /// PEM: the client's certificate chain and key.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

/// The process's TLS options (one set for every connection: the state
/// store's and the queue's). Set by [`configure_tls`].
static TLS: Mutex<Option<TlsFiles>> = Mutex::new(None);

/// `--tls-ca FILE`, `--tls-cert FILE`, `--tls-key FILE`: read and checked
/// now (a usage error, 125, before any attempt), used by every `rediss://`
/// connection of this process.
pub fn configure_tls(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<(), Error> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |option: &str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            Error::usage(
                option,
                path.display().to_string(),
                format!("cannot read it: {}", crate::parse::without_os_error(e.to_string())),
            )
        })
    };
    let certs = |option: &str, path: &Path, pem: &[u8]| {
        let n = CertificateDer::pem_slice_iter(pem).take_while(Result::is_ok).count();
        if n == 0 {
            return Err(Error::usage(option, path.display().to_string(), "no PEM certificate in it"));
        }
        Ok(())
    };
    let ca = match ca {
        Some(path) => {
            let pem = read("--tls-ca", path)?;
            certs("--tls-ca", path, &pem)?;
            Some(pem)
        }
        None => None,
    };
    let client = match (cert, key) {
        (Some(cert), Some(key)) => {
            let cert_pem = read("--tls-cert", cert)?;
            certs("--tls-cert", cert, &cert_pem)?;
            let key_pem = read("--tls-key", key)?;
            if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
                return Err(Error::usage("--tls-key", key.display().to_string(), "no PEM private key in it"));
            }
            Some((cert_pem, key_pem))
        }
        (Some(cert), None) => {
            return Err(Error::usage(
                "--tls-cert",
                cert.display().to_string(),
                "a client certificate needs its key: give --tls-key FILE too",
            ));
        }
        (None, Some(key)) => {
            return Err(Error::usage(
                "--tls-key",
                key.display().to_string(),
                "a key needs its certificate: give --tls-cert FILE too",
            ));
        }
        (None, None) => None,
    };
    let mut guard = TLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // (A drain configures each job with its own options: the same files
    // keep the trust store already built.)
    if !guard.as_ref().is_some_and(|old| old.ca == ca && old.client == client) {
        *guard = Some(TlsFiles { roots: None, ca, client });
    }
    Ok(())
}

/// The certificates a TLS connection trusts and presents: the system's
/// trust store plus `--tls-ca` (PEM, built once), and the client's.
fn tls_certificates() -> redis::TlsCertificates {
    let mut guard = TLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let files = guard.get_or_insert_with(TlsFiles::default);
    let roots = match &files.roots {
        Some(roots) => Arc::clone(roots),
        None => {
            let mut pem = files.ca.clone().unwrap_or_default();
            pem.push(b'\n');
            for cert in rustls_native_certs::load_native_certs().certs {
                pem.extend_from_slice(&pem_block("CERTIFICATE", &cert));
            }
            let roots = Arc::new(pem);
            files.roots = Some(Arc::clone(&roots));
            roots
        }
    };
    redis::TlsCertificates {
        client_tls: files
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.clone() }),
        root_cert: Some(roots.as_ref().clone()),
    }
}

/// A DER blob as a PEM block.
fn pem_block(label: &str, der: &[u8]) -> Vec<u8> {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(if i <= chunk.len() { ABC[(n >> (18 - 6 * i)) as usize & 63] } else { b'=' });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n").into_bytes();
    for line in b64.chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
    out
}

/// The slot of a key in a Redis Cluster: CRC16 (XMODEM) of its hash tag
/// (the text between the first `{` and the next `}`, when not empty), or
/// of the whole key.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        rest.iter().position(|b| *b == b'}').filter(|close| *close > 0).map(|close| &rest[..close])
    });
    let mut crc: u16 = 0;
    for b in tagged.unwrap_or(bytes) {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { crc << 1 ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

/// A server's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Addr {
    host: String,
    port: u16,
}

impl Addr {
    fn parse(text: &str) -> Option<Addr> {
        let (host, port) = text.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some(Addr { host: host.to_string(), port: port.parse().ok()? })
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::url::node(&self.host, self.port))
    }
}

/// What the server is, once known.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    /// Not asked yet, or to be asked again (after a failover).
    Unknown,
    /// One server (or the master the sentinels named).
    Single(Addr),
    /// A Redis Cluster: `slots` says who serves what.
    Cluster,
}

/// A live connection, and how many replies of commands sent without
/// waiting (slot releases) are still to be read from it.
struct Link {
    con: redis::Connection,
    unread: usize,
}

impl Link {
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

/// The connections and what is known of the servers.
struct State {
    mode: Mode,
    links: HashMap<Addr, Link>,
    /// Cluster: slot ranges and their masters, from `CLUSTER SLOTS`.
    slots: Vec<(u16, u16, Addr)>,
    /// Cluster: slots a `MOVED` reply moved since.
    moved: HashMap<u16, Addr>,
}

impl State {
    /// Something changed (a failover?): find out again at the next try.
    fn stale(&mut self) {
        self.mode = Mode::Unknown;
        self.moved.clear();
    }
}

/// One Redis deployment as retry uses it, shared by the store (or the
/// queue) and its lease renewers.
pub(crate) struct Conn {
    url: RedisUrl,
    password: Option<String>,
    /// `state store 'redis://…'` (password masked), for messages.
    pub(crate) name: String,
    state: Mutex<State>,
}

/// How a failed command is dealt with.
enum Fault {
    /// The server said no: the operation fails.
    No,
    /// The connection is in doubt: connect again (and find the servers
    /// again) within the budget.
    Lost,
    /// The server cannot answer now (`LOADING`, `TRYAGAIN`,
    /// `CLUSTERDOWN`, `MASTERDOWN`): ask again within the budget.
    Busy,
    /// `READONLY`: a master that became a replica; find the master again.
    Demoted,
    /// `MOVED slot addr`.
    Moved(u16, Addr),
    /// `ASK slot addr`.
    Ask(Addr),
}

/// Is the connection itself in doubt (rather than the server saying no)?
pub(crate) fn lost(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal()
}

fn fault(e: &RedisError) -> Fault {
    use redis::ServerErrorKind as S;
    let redirect = || e.redirect_node().and_then(|(addr, slot)| Some((slot, Addr::parse(addr)?)));
    match e.kind() {
        ErrorKind::Server(S::Moved) => redirect().map_or(Fault::No, |(slot, a)| Fault::Moved(slot, a)),
        ErrorKind::Server(S::Ask) => redirect().map_or(Fault::No, |(_, a)| Fault::Ask(a)),
        ErrorKind::Server(S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown) => Fault::Busy,
        ErrorKind::Server(S::ReadOnly) => Fault::Demoted,
        _ if lost(e) => Fault::Lost,
        _ => Fault::No,
    }
}

/// One line: the first line of `text`, control characters as spaces.
pub(crate) fn one_line(text: &str) -> String {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    first.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// What a TLS failure means, in words (rustls's words are kept after it).
fn tls_reason(text: &str, tls: bool) -> Option<String> {
    let has = |s: &str| text.contains(s);
    let why = if has("UnknownIssuer") || has("BadSignature") || has("UnknownCA") && !has("alert") {
        "TLS: the server's certificate is not signed by a CA this machine trusts (give its CA with --tls-ca FILE)"
    } else if has("NotValidForName") || has("not valid for name") {
        "TLS: the server's certificate is not valid for this host name"
    } else if has("Expired") {
        "TLS: the server's certificate has expired (or is not valid yet)"
    } else if has("CertificateRequired") || has("HandshakeFailure") && tls {
        "TLS: the server wants a client certificate (--tls-cert FILE --tls-key FILE)"
    } else if has("alert") && tls {
        "TLS: the server refused the handshake (a client certificate it does not trust?)"
    } else if has("InvalidContentType") || has("corrupt message") || has("InvalidMessage") {
        "TLS: the server does not speak TLS (a plain port? then write redis://)"
    } else if has("invalid peer certificate") {
        "TLS: the server's certificate is not valid"
    } else {
        return None;
    };
    Some(format!("{why}: {}", one_line(text)))
}

/// The host's addresses, resolved within `budget` (a resolver that hangs
/// is left behind on its thread). `localhost` falls back to the loopback
/// addresses when it does not resolve: a statically linked build may have
/// no working name service at all.
pub(crate) fn resolve(host: &str, port: u16, budget: Duration) -> Result<Vec<SocketAddr>, String> {
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
        Ok(Err(e)) => {
            Err(format!("cannot resolve '{host}': {}", crate::parse::without_os_error(e.to_string())))
        }
        Err(RecvTimeoutError::Timeout) => {
            Err(format!("cannot resolve '{host}' within {}", crate::parse::human(budget)))
        }
        Err(RecvTimeoutError::Disconnected) => Err(format!("cannot resolve '{host}'")),
    }
}

impl Conn {
    /// Connects (with timeouts), authenticates, selects the database and
    /// finds out what the server is: an unreachable server, a refused
    /// password or a bad certificate is an error here. `name` says what
    /// the server is for in messages (`state store 'redis://…'`),
    /// password masked.
    pub(crate) fn open(url: &RedisUrl, name: String) -> Result<Arc<Conn>, StoreError> {
        let conn = Conn {
            url: url.clone(),
            password: url.password(),
            name,
            state: Mutex::new(State {
                mode: Mode::Unknown,
                links: HashMap::new(),
                slots: Vec::new(),
                moved: HashMap::new(),
            }),
        };
        // One pass over the servers: one that refuses, or a wrong
        // password, is said at once (the 2 s of reconnecting are for a
        // store lost during a run).
        conn.run_inner("cannot connect", "", CONNECT_TIMEOUT, false, |_| Ok(()))?;
        Ok(Arc::new(conn))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The error text with the password masked where it is quoted from a
    /// URL, should a library ever echo one (`:PASS@`, `//PASS@`); nowhere
    /// else, so a password that is also a word leaves Redis's own text alone.
    fn scrub(&self, text: String) -> String {
        match &self.password {
            Some(p) => scrub(text, p),
            None => text,
        }
    }

    /// A failure as one line: `NAME: DOING: WHY`.
    pub(crate) fn failed(&self, doing: &str, e: &RedisError) -> StoreError {
        let text = crate::parse::without_os_error(e.to_string());
        let why = match e.kind() {
            ErrorKind::AuthenticationFailed => {
                "authentication failed (a wrong user name or password?)".to_string()
            }
            ErrorKind::Parse => {
                "the server does not speak the Redis protocol (is something else at that address?)"
                    .to_string()
            }
            _ if e.is_timeout() && self.url.tls && doing.starts_with("cannot connect") => format!(
                "timed out (no reply within {}; a plain port? then write redis://)",
                crate::parse::human(RECONNECT)
            ),
            _ if e.is_timeout() => format!("timed out (no reply within {})", crate::parse::human(RECONNECT)),
            _ => match tls_reason(&text, self.url.tls) {
                Some(why) => why,
                // A server's reply: `NOAUTH Authentication required.`
                None => match (e.code(), e.detail()) {
                    (Some(code), Some(detail)) => format!("{code} {detail}"),
                    _ if e.is_connection_dropped() && !self.url.tls && !e.is_connection_refusal() => {
                        format!("{} (a TLS port? then write rediss://)", one_line(&text))
                    }
                    _ => text,
                },
            },
        };
        StoreError::unavailable(self.scrub(one_line(&format!("{}: {doing}: {why}", self.name))))
    }

    /// Connects to one server within `budget`: resolution, TCP (and TLS),
    /// AUTH and SELECT, with timeouts on every step. `sentinel`: a
    /// sentinel, asked without the master's password and database.
    fn connect(
        &self,
        addr: &Addr,
        budget: Duration,
        sentinel: bool,
    ) -> Result<redis::Connection, StoreError> {
        let start = Instant::now();
        let doing = format!("cannot connect to {addr}");
        let ips = resolve(&addr.host, addr.port, budget)
            .map_err(|why| StoreError::unavailable(one_line(&format!("{}: {why}", self.name))))?;
        let mut redis_info = RedisConnectionInfo::default().set_lib_name("retry", env!("CARGO_PKG_VERSION"));
        if !sentinel {
            redis_info = redis_info.set_db(i64::from(self.url.db));
            if let Some(user) = &self.url.user {
                redis_info = redis_info.set_username(user);
            }
            if let Some(password) = &self.password {
                redis_info = redis_info.set_password(password);
            }
        }
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let mut last = None;
        for ip in ips {
            let left = budget.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            let con = if self.url.tls && !sentinel {
                // The certificate is checked against the name in the URL.
                let info = ConnectionAddr::TcpTls {
                    host: addr.host.clone(),
                    port: addr.port,
                    insecure: false,
                    tls_params: None,
                }
                .into_connection_info()
                .map(|i: ConnectionInfo| {
                    i.set_redis_settings(redis_info.clone()).set_tcp_settings(tcp.clone())
                });
                info.and_then(|info| redis::Client::build_with_tls(info, tls_certificates()))
                    .and_then(|client| client.get_connection_with_timeout(left))
            } else {
                let info = ConnectionAddr::Tcp(ip.ip().to_string(), ip.port()).into_connection_info().map(
                    |i: ConnectionInfo| {
                        i.set_redis_settings(redis_info.clone()).set_tcp_settings(tcp.clone())
                    },
                );
                info.and_then(|info| redis::Client::open(info)?.get_connection_with_timeout(left))
            };
            match con {
                Ok(con) => return Ok(con),
                // The server answered: another address (or a second
                // later) will not help. Nor will it for a certificate, or
                // for a server that accepts and hangs up at once (a TLS
                // port spoken to in plain text).
                Err(e) if !lost(&e) => return Err(self.failed("cannot connect", &e).lasting()),
                Err(e)
                    if tls_reason(&crate::parse::without_os_error(e.to_string()), self.url.tls).is_some()
                        || e.is_connection_dropped() && !e.is_connection_refusal() =>
                {
                    return Err(self.failed(&doing, &e).lasting());
                }
                Err(e) => last = Some(e),
            }
            if self.url.tls {
                break;
            }
        }
        Err(match last {
            Some(e) => self.failed(&doing, &e),
            None => StoreError::unavailable(format!(
                "{}: {doing} within {}",
                self.name,
                crate::parse::human(budget)
            )),
        })
    }

    /// The link to `addr`, connected if need be.
    fn link<'s>(&self, st: &'s mut State, addr: &Addr, budget: Duration) -> Result<&'s mut Link, StoreError> {
        if !st.links.contains_key(addr) {
            let con = self.connect(addr, budget, false)?;
            st.links.insert(addr.clone(), Link { con, unread: 0 });
        }
        st.links.get_mut(addr).ok_or_else(|| StoreError::unavailable(format!("{}: not connected", self.name)))
    }

    /// Finds out what the servers are: asks the sentinels for the master,
    /// or the seed nodes (and the nodes known from an earlier slot map)
    /// whether they are a Cluster.
    fn discover(&self, st: &mut State, deadline: Instant) -> Result<(), StoreError> {
        let seeds: Vec<Addr> =
            self.url.nodes.iter().map(|(h, p)| Addr { host: h.clone(), port: *p }).collect();
        if let Some(master) = &self.url.sentinel {
            return self.ask_sentinels(st, &seeds, master, deadline);
        }
        let mut candidates: Vec<Addr> = st.slots.iter().map(|(_, _, a)| a.clone()).collect();
        candidates.extend(seeds);
        candidates.dedup();
        let mut why = None;
        for addr in candidates {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let link = match self.link(st, &addr, left) {
                Ok(link) => link,
                Err(e) if e.lasting => return Err(e),
                Err(e) => {
                    why = Some(e);
                    continue;
                }
            };
            let _ = link.con.set_read_timeout(Some(left));
            let answer = link.ready().and_then(|con| redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(con));
            match answer {
                Ok(value) => {
                    st.slots = parse_slots(&value, &addr);
                    st.moved.clear();
                    if st.slots.is_empty() {
                        why = Some(StoreError::unavailable(format!(
                            "{}: the cluster serves no slot yet",
                            self.name
                        )));
                        continue;
                    }
                    if self.url.db != 0 {
                        return Err(StoreError::unavailable(format!(
                            "{}: a Redis Cluster has only database 0: leave /{} out of the URL",
                            self.name, self.url.db
                        )));
                    }
                    st.mode = Mode::Cluster;
                    return Ok(());
                }
                Err(e) if lost(&e) => {
                    st.links.remove(&addr);
                    why = Some(self.failed("cannot connect", &e));
                }
                Err(e) if matches!(e.code(), Some("NOAUTH" | "WRONGPASS")) => {
                    st.links.remove(&addr);
                    return Err(self.failed("cannot connect", &e).lasting());
                }
                // No cluster support (or CLUSTER not allowed): one server.
                Err(_) => {
                    st.mode = Mode::Single(addr);
                    return Ok(());
                }
            }
        }
        Err(why.unwrap_or_else(|| StoreError::unavailable(format!("{}: cannot connect", self.name))))
    }

    /// Sentinel: the first sentinel that answers names the master, which
    /// must say it is one (`ROLE`).
    fn ask_sentinels(
        &self,
        st: &mut State,
        sentinels: &[Addr],
        master: &str,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let mut why = None;
        for sentinel in sentinels {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut con = match self.connect(sentinel, left, true) {
                Ok(con) => con,
                Err(e) if e.lasting => return Err(e),
                Err(e) => {
                    why = Some(e);
                    continue;
                }
            };
            let _ = con.set_read_timeout(Some(left));
            let answer: Result<Option<(String, u16)>, _> =
                redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(master).query(&mut con);
            let addr = match answer {
                Ok(Some((host, port))) => Addr { host, port },
                Ok(None) => {
                    why = Some(StoreError::unavailable(format!(
                        "{}: sentinel {sentinel} knows no master named '{master}'",
                        self.name
                    )));
                    continue;
                }
                Err(e) => {
                    why = Some(self.failed(&format!("cannot ask sentinel {sentinel}"), &e));
                    continue;
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let link = match self.link(st, &addr, left) {
                Ok(link) => link,
                Err(e) if e.lasting => return Err(e),
                Err(e) => {
                    why = Some(e);
                    continue;
                }
            };
            let _ = link.con.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let role = link.ready().and_then(|con| redis::cmd("ROLE").query::<Value>(con));
            match role {
                Ok(Value::Array(items)) if matches!(items.first(), Some(Value::BulkString(b)) if b == b"master") =>
                {
                    st.mode = Mode::Single(addr);
                    return Ok(());
                }
                Ok(_) => {
                    st.links.remove(&addr);
                    why = Some(StoreError::unavailable(format!(
                        "{}: {addr}, named master by sentinel {sentinel}, is not a master (a failover under way?)",
                        self.name
                    )));
                }
                Err(e) => {
                    st.links.remove(&addr);
                    why = Some(self.failed(&format!("cannot connect to {addr}"), &e));
                }
            }
        }
        Err(why.unwrap_or_else(|| StoreError::unavailable(format!("{}: no sentinel answered", self.name))))
    }

    /// The server that serves `route`.
    fn route(&self, st: &mut State, route: &str, deadline: Instant) -> Result<Addr, StoreError> {
        if st.mode == Mode::Unknown {
            self.discover(st, deadline)?;
        }
        if let Some(addr) = self.known_route(st, route) {
            return Ok(addr);
        }
        if st.mode == Mode::Cluster {
            st.stale();
            return Err(StoreError::unavailable(format!(
                "{}: no node of the cluster serves slot {}",
                self.name,
                slot(route)
            )));
        }
        Err(StoreError::unavailable(format!("{}: not connected", self.name)))
    }

    /// Runs `op` on the server of `route`. A lost connection, a failover,
    /// a server that is loading, a redirection: tried again until
    /// [`RECONNECT`] has passed since the call. A server's "no" is an
    /// error at once.
    pub(crate) fn run<T>(
        &self,
        doing: &str,
        route: &str,
        op: impl FnMut(&mut redis::Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        self.run_within(doing, route, RECONNECT, op)
    }

    /// [`Conn::run`] with a shorter budget than [`RECONNECT`] (a lease
    /// renewal that must end before the lease does).
    pub(crate) fn run_within<T>(
        &self,
        doing: &str,
        route: &str,
        budget: Duration,
        op: impl FnMut(&mut redis::Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        self.run_inner(doing, route, budget, true, op)
    }

    /// `again`: try again within the budget after a failure.
    fn run_inner<T>(
        &self,
        doing: &str,
        route: &str,
        budget: Duration,
        again: bool,
        mut op: impl FnMut(&mut redis::Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        let budget = budget.min(RECONNECT);
        let deadline = Instant::now() + budget;
        let mut st = self.lock();
        let mut asking: Option<Addr> = None;
        let mut why: Option<StoreError> = None;
        let mut redirects = 0;
        loop {
            if let (false, Some(e)) = (again, &why) {
                return Err(StoreError::unavailable(e.message.clone()));
            }
            if Instant::now() >= deadline {
                let why = why.map_or_else(|| format!("{}: {doing}: timed out", self.name), |e| e.message);
                return Err(StoreError::unavailable(format!(
                    "{why} (reconnecting for {} did not help)",
                    crate::parse::human(budget)
                )));
            }
            let (addr, ask) = match asking.take() {
                Some(addr) => (addr, true),
                None => match self.route(&mut st, route, deadline) {
                    Ok(addr) => (addr, false),
                    Err(e) if e.lasting => return Err(e),
                    Err(e) => {
                        why = Some(e);
                        pause(deadline);
                        continue;
                    }
                },
            };
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            let result = match self.link(&mut st, &addr, left) {
                Ok(link) => {
                    let timeouts = link
                        .con
                        .set_read_timeout(Some(left.min(IO_TIMEOUT)))
                        .and_then(|()| link.con.set_write_timeout(Some(left.min(IO_TIMEOUT))));
                    timeouts.and_then(|()| link.ready()).and_then(|con| {
                        if ask {
                            redis::cmd("ASKING").query::<()>(con)?;
                        }
                        op(con)
                    })
                }
                // Nothing sent: the server cannot be reached.
                Err(e) => {
                    // A refused password or certificate does not get better.
                    if e.lasting {
                        return Err(e);
                    }
                    // A sentinel may name another master by now; another
                    // node of a Cluster may serve the slot.
                    self.stale_if_it_moves(&mut st);
                    why = Some(e);
                    pause(deadline);
                    continue;
                }
            };
            let e = match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            match fault(&e) {
                Fault::No => return Err(self.failed(doing, &e)),
                Fault::Moved(slot, to) => {
                    st.moved.insert(slot, to);
                    redirects += 1;
                    if redirects > 16 {
                        return Err(self.failed(doing, &e));
                    }
                }
                Fault::Ask(to) => {
                    redirects += 1;
                    if redirects > 16 {
                        return Err(self.failed(doing, &e));
                    }
                    asking = Some(to);
                }
                Fault::Busy => {
                    why = Some(self.failed(doing, &e));
                    self.stale_if_it_moves(&mut st);
                    pause(deadline);
                }
                Fault::Lost | Fault::Demoted => {
                    st.links.remove(&addr);
                    self.stale_if_it_moves(&mut st);
                    why = Some(self.failed(doing, &e));
                    pause(deadline);
                }
            }
        }
    }

    /// Runs `op` once on the server of `route` if connected to it; never
    /// reconnects (for releases, whose leases run out by themselves).
    pub(crate) fn once(
        &self,
        route: &str,
        op: impl FnOnce(&mut redis::Connection) -> Result<(), RedisError>,
    ) {
        let mut st = self.lock();
        let Some(addr) = self.known_route(&st, route) else { return };
        if let Some(link) = st.links.get_mut(&addr) {
            let _ = link.con.set_read_timeout(Some(IO_TIMEOUT));
            if link.ready().and_then(op).is_err_and(|e| lost(&e)) {
                st.links.remove(&addr);
            }
        }
    }

    /// Sends `cmd` to the server of `route` if connected, without waiting
    /// for its reply (read before the next command); never reconnects.
    /// Redis runs a connection's commands in order, so what follows sees
    /// its effect.
    pub(crate) fn send(&self, route: &str, cmd: &redis::Cmd) {
        let mut st = self.lock();
        let Some(addr) = self.known_route(&st, route) else { return };
        if let Some(link) = st.links.get_mut(&addr) {
            match link.con.send_packed_command(&cmd.get_packed_command()) {
                Ok(()) => link.unread += 1,
                Err(_) => {
                    st.links.remove(&addr);
                }
            }
        }
    }

    /// The server of `route` as known now, without asking anyone.
    fn known_route(&self, st: &State, route: &str) -> Option<Addr> {
        match &st.mode {
            Mode::Single(addr) => Some(addr.clone()),
            Mode::Cluster => {
                let slot = slot(route);
                st.moved.get(&slot).cloned().or_else(|| {
                    st.slots.iter().find(|(lo, hi, _)| (*lo..=*hi).contains(&slot)).map(|(_, _, a)| a.clone())
                })
            }
            Mode::Unknown => None,
        }
    }

    /// After a lost connection: a Sentinel's master may have failed over,
    /// and another node of a Cluster may serve the slot, so find out again.
    fn stale_if_it_moves(&self, st: &mut State) {
        if self.url.sentinel.is_some() || st.mode == Mode::Cluster {
            st.stale();
        }
    }

    /// Is this a Cluster?
    pub(crate) fn is_cluster(&self) -> bool {
        self.lock().mode == Mode::Cluster
    }

    /// Would the server of `route` lose its data in a restart? The
    /// warning to give, once: neither AOF (`INFO persistence`) nor RDB
    /// save points (`CONFIG GET save`). Nothing where `CONFIG` (or `INFO`)
    /// is refused, as on managed Redis: persistence is then assumed.
    pub(crate) fn memory_only(&self, route: &str) -> Option<String> {
        let answer = self.run("cannot read the persistence settings", route, |con| {
            let info: String = redis::cmd("INFO").arg("persistence").query(con)?;
            if info.lines().any(|l| l.trim() == "aof_enabled:1") {
                return Ok(false);
            }
            match redis::cmd("CONFIG").arg("GET").arg("save").query::<Vec<String>>(con) {
                Ok(pair) => Ok(pair.get(1).is_some_and(|s| s.trim().is_empty())),
                Err(e) if lost(&e) => Err(e),
                Err(_) => Ok(false),
            }
        });
        let addr = self.known_route(&self.lock(), route).map_or_else(|| self.url.first(), |a| a.to_string());
        answer.ok().filter(|m| *m).map(|_| {
            format!(
                "redis at {addr} keeps queued jobs only in memory: a restart loses them (enable appendonly)"
            )
        })
    }

    /// Where the server of `route` has replicas, waits until one has the
    /// writes made so far (`WAIT 1`), within what is left of [`RECONNECT`].
    /// `Some(false)`: no replica acknowledged in time.
    pub(crate) fn wait_for_replica(&self, route: &str) -> Option<bool> {
        let start = Instant::now();
        self.run("cannot wait for a replica", route, |con| {
            let role: Value = redis::cmd("ROLE").query(con)?;
            let replicas = match &role {
                Value::Array(items) => match items.get(2) {
                    Some(Value::Array(r)) => r.len(),
                    _ => 0,
                },
                _ => 0,
            };
            if replicas == 0 {
                return Ok(None);
            }
            let ms = RECONNECT.saturating_sub(start.elapsed()).saturating_sub(Duration::from_millis(300));
            let acked: i64 = redis::cmd("WAIT").arg(1).arg(super::redis::millis(ms)).query(con)?;
            Ok(Some(acked >= 1))
        })
        .ok()
        .flatten()
    }
}

fn pause(deadline: Instant) {
    std::thread::sleep(PAUSE.min(deadline.saturating_duration_since(Instant::now())));
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id…], replicas…]…]`. An
/// empty host is the node that answered.
fn parse_slots(value: &Value, asked: &Addr) -> Vec<(u16, u16, Addr)> {
    let Value::Array(ranges) = value else { return Vec::new() };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(items) = range else { continue };
        let (Some(lo), Some(hi), Some(Value::Array(master))) =
            (items.first().and_then(int), items.get(1).and_then(int), items.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let Some(port) = master.get(1).and_then(int) else { continue };
        let host = if host.is_empty() || host == "?" { asked.host.clone() } else { host };
        out.push((lo, hi, Addr { host, port }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification's CRC16 reference.
        assert_eq!(slot("123456789"), 0x31c3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("retry:{key:api}:slots"), slot("{key:api}"));
        assert_eq!(slot("retry:{key:api}:circuit"), slot("key:api"));
        assert_eq!(slot("a{}b"), slot("a{}b"), "an empty tag hashes the whole key");
        assert_ne!(slot("retry:{key:api}:x"), slot("retry:{key:apj}:x"));
    }

    #[test]
    fn pem_blocks_are_base64_in_lines_of_64() {
        let pem = pem_block("CERTIFICATE", b"Man");
        assert_eq!(pem, b"-----BEGIN CERTIFICATE-----\nTWFu\n-----END CERTIFICATE-----\n");
        assert!(String::from_utf8(pem_block("X", b"Ma")).unwrap().contains("\nTWE=\n"));
        assert!(String::from_utf8(pem_block("X", b"M")).unwrap().contains("\nTQ==\n"));
        let long = String::from_utf8(pem_block("X", &[7u8; 100])).unwrap();
        assert!(long.lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("\n  first\nsecond"), "first");
        assert_eq!(one_line("a\tb\u{1b}c"), "a b c");
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
        assert_eq!(Addr::parse("127.0.0.1:7001"), Some(Addr { host: "127.0.0.1".into(), port: 7001 }));
        assert_eq!(Addr::parse("[::1]:7001").map(|a| a.to_string()), Some("[::1]:7001".to_string()));
    }
}

/// `text` with `password` masked where a URL quotes it (see [`Conn::scrub`]).
fn scrub(text: String, password: &str) -> String {
    if password.is_empty() {
        return text;
    }
    text.replace(&format!(":{password}@"), ":***@").replace(&format!("//{password}@"), "//***@")
}

#[cfg(test)]
mod scrub_tests {
    use super::scrub;

    #[test]
    fn a_password_is_masked_only_where_a_url_quotes_it() {
        let text =
            "WRONGPASS invalid username-password pair or user is disabled; wrong user name or password";
        assert_eq!(scrub(text.to_string(), "wrong"), text);
        assert_eq!(scrub("redis://u:wrong@h:1 said no".into(), "wrong"), "redis://u:***@h:1 said no");
        assert_eq!(scrub("at redis://wrong@h".into(), "wrong"), "at redis://***@h");
    }
}
