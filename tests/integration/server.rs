//! A real `redis-server` for the tests (Debian package `redis-server`),
//! started on 127.0.0.1 at a free port in a temp dir (nothing is saved
//! during a test: a restart after SIGKILL starts empty), and the stores the
//! shared-state tests run against.
//!
//! One server per test (they start in milliseconds, TLS ones too): it is
//! killed when its `RedisServer` is dropped (also when the test panics),
//! and, should the test binary itself die, by `PR_SET_PDEATHSIG` when the
//! thread that started it ends. A Cluster (six processes, seconds to form)
//! is shared by the tests of the binary, one test at a time, each on an
//! empty cluster; a test that kills a node starts a cluster of its own.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::util::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persistence {
    None,
    Rdb,
    Aof,
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
    /// TLS only (`--port 0 --tls-port PORT`); `Some(true)`: clients must
    /// present a certificate (mutual TLS).
    tls: Option<bool>,
    /// Persistence: AOF (`appendonly yes`), RDB save points (a save an
    /// hour: none happens in a test, so a restart after SIGKILL starts
    /// empty, yet retry sees persistence configured and does not warn), or
    /// none at all.
    persistence: Persistence,
}

/// A port nothing listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// With `requirepass` when a password is given.
    /// Speaking TLS only; `mutual`: clients need a certificate.
    pub fn start_tls(mutual: bool) -> RedisServer {
        RedisServer::start_as(None, Some(mutual), Persistence::Rdb)
    }

    /// With AOF persistence.
    pub fn start_aof() -> RedisServer {
        RedisServer::start_as(None, None, Persistence::Aof)
    }

    /// With no persistence at all (retry warns about it).
    pub fn start_memory_only() -> RedisServer {
        RedisServer::start_as(None, None, Persistence::None)
    }

    pub fn start_with(password: Option<&str>) -> RedisServer {
        RedisServer::start_as(password, None, Persistence::Rdb)
    }

    fn start_as(password: Option<&str>, tls: Option<bool>, persistence: Persistence) -> RedisServer {
        if Command::new("redis-server").arg("--version").output().is_err() {
            panic!(
                "redis-server is not installed: apt-get install redis-server (the shared-state tests need it)"
            );
        }
        for _ in 0..5 {
            let port = free_port();
            if let Some(server) = RedisServer::try_start(port, password, tls, persistence) {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts on `port` (again, after [`RedisServer::kill`]); `None` when
    /// it does not answer within 5 s (the port was taken meanwhile).
    fn try_start(
        port: u16,
        password: Option<&str>,
        tls: Option<bool>,
        persistence: Persistence,
    ) -> Option<RedisServer> {
        let dir = tempfile::Builder::new().prefix("retry-redis-").tempdir().unwrap();
        let mut server =
            RedisServer { child: None, port, password: password.map(str::to_string), dir, tls, persistence };
        server.spawn().then_some(server)
    }

    fn spawn(&mut self) -> bool {
        let dir = self.dir.path();
        let mut cmd = Command::new("redis-server");
        let port = self.port.to_string();
        match self.tls {
            None => cmd.args(["--port", &port]),
            Some(mutual) => {
                let c = Certs::get();
                cmd.args(["--port", "0", "--tls-port", &port])
                    .args(["--tls-cert-file", &c.file("server.pem"), "--tls-key-file", &c.file("server.key")])
                    .args(["--tls-ca-cert-file", &c.file("ca.pem")])
                    .args(["--tls-auth-clients", if mutual { "yes" } else { "no" }])
            }
        };
        let (save, aof) = match self.persistence {
            Persistence::None => ("", "no"),
            Persistence::Rdb => ("3600 1", "no"),
            Persistence::Aof => ("", "yes"),
        };
        cmd.args(["--bind", "127.0.0.1", "--save", save])
            .args(["--appendonly", aof, "--appendfsync", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning", "--dir", path_str(dir)])
            .args(["--logfile", path_str(&dir.join("log"))]);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: prctl with integers, async-signal-safe, in the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            if self.answers() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    /// Does a PING get a Redis reply (PONG, or NOAUTH with a password)?
    fn answers(&self) -> bool {
        if self.tls.is_some() {
            return Certs::get().client(self.port).is_ok();
        }
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
    }

    /// `redis://127.0.0.1:PORT` (with the password when there is one), or
    /// `rediss://localhost:PORT` (the name in the server's certificate).
    pub fn url(&self) -> String {
        match (&self.password, self.tls) {
            (_, Some(_)) => format!("rediss://localhost:{}", self.port),
            (Some(p), None) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            (None, None) => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The options retry needs for it: the TLS files.
    pub fn retry_args(&self) -> Vec<String> {
        match self.tls {
            Some(mutual) => Certs::get().args(mutual),
            None => Vec::new(),
        }
    }

    /// The server's pid (to freeze it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILLs the server (its data is gone: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server did not restart on port {}", self.port);
    }

    /// A client connection for inspecting keys.
    pub fn client(&self) -> redis::Connection {
        if self.tls.is_some() {
            return Certs::get().client(self.port).unwrap();
        }
        redis::Client::open(self.url().as_str()).unwrap().get_connection().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The store a shared-state test runs against.
pub enum Backend {
    File(String),
    Redis(RedisServer),
    /// The shared cluster, held for this test.
    Cluster(&'static Cluster, #[allow(dead_code)] MutexGuard<'static, ()>),
}

impl Backend {
    /// `file:<sandbox>/store`.
    pub fn file(t: &T) -> Backend {
        Backend::File(format!("file:{}", path_str(&t.path("store"))))
    }

    pub fn redis() -> Backend {
        Backend::Redis(RedisServer::start())
    }

    pub fn redis_tls(mutual: bool) -> Backend {
        Backend::Redis(RedisServer::start_tls(mutual))
    }

    pub fn cluster() -> Backend {
        let (cluster, guard) = shared_cluster();
        Backend::Cluster(cluster, guard)
    }

    pub fn url(&self) -> String {
        match self {
            Backend::File(url) => url.clone(),
            Backend::Redis(server) => server.url(),
            Backend::Cluster(cluster, _) => {
                let nodes: Vec<String> = cluster.masters().iter().map(|p| format!("127.0.0.1:{p}")).collect();
                format!("redis://{}", nodes.join(","))
            }
        }
    }

    pub fn is_redis(&self) -> bool {
        !matches!(self, Backend::File(_))
    }

    /// `--key KEY --state-store URL` (and the TLS files). A Cluster is
    /// given one node that does not serve the key: retry is redirected.
    pub fn args(&self, key: &str) -> Vec<String> {
        match self {
            Backend::Redis(server) => [store_args(&self.url(), key), server.retry_args()].concat(),
            Backend::Cluster(cluster, _) => {
                store_args(&cluster.url_not_serving(&format!("retry:{{key:{key}}}:slots")), key)
            }
            Backend::File(_) => store_args(&self.url(), key),
        }
    }
}

/// `--key KEY --state-store URL`.
pub fn store_args(url: &str, key: &str) -> Vec<String> {
    s(&["--key", key, "--state-store", url])
}

/// `T::spawn` with extra environment variables.
pub fn spawn_with(t: &T, args: &[String], env: &[(&str, &str)]) -> Child {
    let mut cmd = retry_std();
    t.env(&mut cmd);
    cmd.envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Every file the test wrote, for "the password is in no output".
pub fn read_all(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().is_ok_and(|f| f.is_file()) {
            out.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    out
}

/// Runs the named shared-state test, `fn name(t: &T, b: &Backend)`, once
/// on each store: `name::file`, `name::redis`, and Redis over TLS, mutual
/// TLS and a Cluster (`name::redis_tls`, `redis_mutual_tls`,
/// `redis_cluster`).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn file() {
                    let t = $crate::util::T::new();
                    let b = $crate::server::Backend::file(&t);
                    super::$name(&t, &b);
                }

                #[test]
                fn redis() {
                    let t = $crate::util::T::new();
                    let b = $crate::server::Backend::redis();
                    super::$name(&t, &b);
                }

                #[test]
                fn redis_tls() {
                    let t = $crate::util::T::new();
                    let b = $crate::server::Backend::redis_tls(false);
                    super::$name(&t, &b);
                }

                #[test]
                fn redis_mutual_tls() {
                    let t = $crate::util::T::new();
                    let b = $crate::server::Backend::redis_tls(true);
                    super::$name(&t, &b);
                }

                #[test]
                fn redis_cluster() {
                    let t = $crate::util::T::new();
                    let b = $crate::server::Backend::cluster();
                    super::$name(&t, &b);
                }
            }
        )*
    };
}

// ----- TLS, Cluster and Sentinel -----

/// A CA, and certificates it signed, made with the `openssl` CLI once per
/// test binary: `server` (for `localhost` only, so `127.0.0.1` is a wrong
/// host name), `client` (for mutual TLS), and a second CA that signed
/// nothing the servers use.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn get() -> &'static Certs {
        static CERTS: OnceLock<Certs> = OnceLock::new();
        CERTS.get_or_init(|| {
            // In cargo's temp dir for tests, one per test process; those of
            // test processes that are gone are removed.
            let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
            for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("redis-certs-") {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            let dir = tmp.join(format!("redis-certs-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let openssl = |args: &[&str]| {
                let out = Command::new("openssl")
                    .args(args)
                    .current_dir(&dir)
                    .output()
                    .expect("openssl is installed");
                assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            };
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
            for ca in ["ca", "other-ca"] {
                let (key, pem, subj) =
                    (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=retry test {ca}"));
                let mut args = vec!["req", "-x509"];
                args.extend(ec);
                args.extend(["-keyout", &key, "-out", &pem, "-days", "3", "-subj", &subj]);
                args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
                args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
                openssl(&args);
            }
            for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
                let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
                let mut args = vec!["req"];
                args.extend(ec);
                args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
                openssl(&args);
                let ext = format!("{name}.ext");
                std::fs::write(
                    dir.join(&ext),
                    format!(
                        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
                    ),
                )
                .unwrap();
                openssl(&[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "3",
                    "-extfile",
                    &ext,
                ]);
            }
            Certs { dir }
        })
    }

    pub fn file(&self, name: &str) -> String {
        path_str(&self.dir.join(name)).to_string()
    }

    /// retry's options for a TLS server (`mutual`: with the client's certificate).
    pub fn args(&self, mutual: bool) -> Vec<String> {
        let mut args = vec!["--tls-ca".to_string(), self.file("ca.pem")];
        if mutual {
            args.extend([
                "--tls-cert".to_string(),
                self.file("client.pem"),
                "--tls-key".to_string(),
                self.file("client.key"),
            ]);
        }
        args
    }

    /// A client of the tests' own (trusting the test CA, with the client certificate).
    pub fn client(&self, port: u16) -> redis::RedisResult<redis::Connection> {
        let read = |n: &str| std::fs::read(self.dir.join(n)).unwrap();
        let client = redis::Client::build_with_tls(
            format!("rediss://localhost:{port}"),
            redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: read("client.pem"),
                    client_key: read("client.key"),
                }),
                root_cert: Some(read("ca.pem")),
            },
        )?;
        client.get_connection_with_timeout(Duration::from_secs(2))
    }
}

/// Server processes that outlive the test that started them (a topology
/// shared by the tests of this binary): started on a thread that lives as
/// long as the binary, so that `PR_SET_PDEATHSIG` kills them only when the
/// test binary ends.
fn on_keeper<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    type Job = Box<dyn FnOnce() + Send>;
    static KEEPER: OnceLock<Mutex<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    let tx = KEEPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for job in rx {
                job();
            }
        });
        Mutex::new(tx)
    });
    let (back, answer) = std::sync::mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = back.send(f());
    });
    tx.lock().unwrap().send(job).unwrap();
    answer.recv().unwrap()
}

/// A `redis-server` child with these arguments (PDEATHSIG set).
pub fn server_process(args: &[String], dir: &Path) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(args)
        .args(["--daemonize", "no", "--loglevel", "warning", "--dir", path_str(dir)])
        .args(["--logfile", path_str(&dir.join("log"))]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: prctl with integers, async-signal-safe, in the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

/// Until every replica among `ports` has its master's data.
fn wait_replicas_in_sync(ports: &[u16]) {
    wait_until("the replicas are in sync", Duration::from_secs(30), || {
        ports.iter().all(|p| {
            node_client(*p)
                .and_then(|mut c| redis::cmd("INFO").arg("replication").query::<String>(&mut c))
                .is_ok_and(|info| info.contains("role:master") || info.contains("master_link_status:up"))
        })
    });
}

/// A plain client of one node.
pub fn node_client(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_secs(2))
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Redis Cluster of three masters with one replica each,
/// `cluster-node-timeout` 1 s, on 127.0.0.1.
pub struct Cluster {
    children: Mutex<Vec<(u16, Child)>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let mut ports = Vec::new();
        let mut children = Vec::new();
        let mut dirs = Vec::new();
        while ports.len() < 6 {
            let port = free_port();
            if ports.contains(&port) || port > 55535 {
                continue;
            }
            let dir = tempfile::Builder::new().prefix("retry-cluster-").tempdir().unwrap();
            let args = s(&[
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "1000",
                // A replica that lost its master always stands for election.
                "--cluster-replica-validity-factor",
                "0",
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
            ]);
            children.push((port, server_process(&args, dir.path())));
            ports.push(port);
            dirs.push(dir);
        }
        for port in &ports {
            wait_until("a cluster node answers", Duration::from_secs(10), || node_client(*port).is_ok());
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        create.args(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create.output().unwrap();
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Cluster { children: Mutex::new(children), _dirs: dirs };
        cluster.wait_ok();
        let ports: Vec<u16> = cluster.children.lock().unwrap().iter().map(|(p, _)| *p).collect();
        wait_replicas_in_sync(&ports);
        cluster
    }

    /// Until every live node says `cluster_state:ok` and each of the
    /// 16384 slots has a master.
    pub fn wait_ok(&self) {
        let live: Vec<u16> = self.children.lock().unwrap().iter().map(|(p, _)| *p).collect();
        let infos = || {
            live.iter()
                .map(|p| {
                    node_client(*p)
                        .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut c))
                        .unwrap_or_else(|e| e.to_string())
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        wait_until("the cluster is ok", Duration::from_secs(31), || {
            assert!(Instant::now() < deadline, "the cluster is not ok: {}", infos());
            live.iter().all(|p| {
                node_client(*p)
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .is_ok_and(|info| {
                        info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                    })
            })
        });
    }

    /// The masters' ports, as the cluster sees them now.
    pub fn masters(&self) -> Vec<u16> {
        let live: Vec<u16> = self.children.lock().unwrap().iter().map(|(p, _)| *p).collect();
        live.into_iter()
            .filter(|p| {
                node_client(*p)
                    .and_then(|mut c| redis::cmd("ROLE").query::<redis::Value>(&mut c))
                    .is_ok_and(|v| matches!(v, redis::Value::Array(ref a) if matches!(a.first(), Some(redis::Value::BulkString(b)) if b == b"master")))
            })
            .collect()
    }

    /// The master that serves `key`.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut node_client(self.masters()[0]).unwrap())
            .unwrap();
        for port in self.masters() {
            let mut c = node_client(port).unwrap();
            let n: i64 = redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query(&mut c).unwrap_or(-1);
            let _ = n;
            let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
            if let redis::Value::Array(ranges) = slots {
                for r in ranges {
                    if let redis::Value::Array(items) = r {
                        if let (
                            Some(redis::Value::Int(lo)),
                            Some(redis::Value::Int(hi)),
                            Some(redis::Value::Array(m)),
                        ) = (items.first(), items.get(1), items.get(2))
                        {
                            if (*lo..=*hi).contains(&slot) {
                                if let Some(redis::Value::Int(p)) = m.get(1) {
                                    return *p as u16;
                                }
                            }
                        }
                    }
                }
            }
        }
        panic!("no master serves {key}");
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&self, port: u16) {
        let mut children = self.children.lock().unwrap();
        if let Some(i) = children.iter().position(|(p, _)| *p == port) {
            let (_, mut child) = children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Empties every master.
    pub fn flush(&self) {
        for port in self.masters() {
            let _: () = redis::cmd("FLUSHALL").query(&mut node_client(port).unwrap()).unwrap();
        }
    }

    /// A node that does not serve `key`'s slot, for URLs that must be
    /// redirected.
    pub fn url_not_serving(&self, key: &str) -> String {
        let serving = self.master_of(key);
        let other = self.masters().into_iter().find(|p| *p != serving).unwrap();
        format!("redis://127.0.0.1:{other}")
    }

    /// A client of the master that serves `key`.
    pub fn client_for(&self, key: &str) -> redis::Connection {
        node_client(self.master_of(key)).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in self.children.lock().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The cluster the tests of this binary share, and the lock a test holds
/// while it uses it (tests on it run one at a time; each starts on an
/// empty cluster).
pub fn shared_cluster() -> (&'static Cluster, MutexGuard<'static, ()>) {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let guard = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let cluster = CLUSTER.get_or_init(|| on_keeper(Cluster::start));
    cluster.wait_ok();
    cluster.flush();
    (cluster, guard)
}

/// One master, one replica and three sentinels (`down-after-milliseconds`
/// 1 s) watching it as `mymaster`.
pub struct Sentinels {
    pub ports: Vec<u16>,
    pub data: Vec<u16>,
    children: Mutex<Vec<(u16, Child)>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Sentinels {
    pub fn start() -> Sentinels {
        let mut children = Vec::new();
        let mut dirs = Vec::new();
        let master = free_port();
        let replica = loop {
            let p = free_port();
            if p != master {
                break p;
            }
        };
        for (port, replicaof) in [(master, None), (replica, Some(master))] {
            let dir = tempfile::Builder::new().prefix("retry-sentinel-data-").tempdir().unwrap();
            let mut args =
                s(&["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
            if let Some(m) = replicaof {
                args.extend(s(&["--replicaof", "127.0.0.1", &m.to_string()]));
            }
            children.push((port, server_process(&args, dir.path())));
            dirs.push(dir);
        }
        for port in [master, replica] {
            wait_until("a data node answers", Duration::from_secs(10), || node_client(port).is_ok());
        }
        wait_replicas_in_sync(&[master, replica]);
        let mut ports = Vec::new();
        while ports.len() < 3 {
            let port = free_port();
            if ports.contains(&port) || port == master || port == replica {
                continue;
            }
            let dir = tempfile::Builder::new().prefix("retry-sentinel-").tempdir().unwrap();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 3000\n\
                     sentinel parallel-syncs mymaster 1\n"
                ),
            )
            .unwrap();
            let mut cmd = Command::new("redis-server");
            cmd.arg(&conf).arg("--sentinel").args([
                "--daemonize",
                "no",
                "--logfile",
                path_str(&dir.path().join("log")),
            ]);
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            // SAFETY: prctl with integers, async-signal-safe, in the child.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            children.push((port, cmd.spawn().unwrap()));
            ports.push(port);
            dirs.push(dir);
        }
        let sentinels =
            Sentinels { ports, data: vec![master, replica], children: Mutex::new(children), _dirs: dirs };
        // Every sentinel knows the master and its replica.
        wait_until("the sentinels see the replica", Duration::from_secs(20), || {
            sentinels.ports.iter().all(|p| {
                node_client(*p)
                    .and_then(|mut c| {
                        redis::cmd("SENTINEL")
                            .arg("REPLICAS")
                            .arg("mymaster")
                            .query::<Vec<redis::Value>>(&mut c)
                    })
                    .is_ok_and(|r| !r.is_empty())
            })
        });
        sentinels
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/mymaster", hosts.join(","))
    }

    /// The master's port, as the sentinels say now.
    pub fn master(&self) -> u16 {
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster")
            .query(&mut node_client(self.ports[0]).unwrap())
            .unwrap();
        port
    }

    /// A failover now (`SENTINEL FAILOVER`), waited for: the replica is the
    /// master, as every sentinel says.
    pub fn failover(&self) -> u16 {
        let old = self.master();
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg("mymaster")
            .query(&mut node_client(self.ports[0]).unwrap())
            .unwrap();
        wait_until("the failover", Duration::from_secs(20), || self.master() != old);
        self.master()
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, child) in self.children.lock().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// [`on_both_stores`] without the TLS variants: `name::file`,
/// `name::redis` and `name::redis_cluster`.
#[macro_export]
macro_rules! on_stores_but_tls {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn file() {
                    let t = $crate::util::T::new();
                    let b = $crate::server::Backend::file(&t);
                    super::$name(&t, &b);
                }

                #[test]
                fn redis() {
                    let t = $crate::util::T::new();
                    let b = $crate::server::Backend::redis();
                    super::$name(&t, &b);
                }

                #[test]
                fn redis_cluster() {
                    let t = $crate::util::T::new();
                    let b = $crate::server::Backend::cluster();
                    super::$name(&t, &b);
                }
            }
        )*
    };
}
