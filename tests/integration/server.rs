//! A real `redis-server` for the tests (Debian package `redis-server`),
//! started on 127.0.0.1 at a free port in a temp dir, without persistence,
//! and the stores the shared-state tests run against.
//!
//! One server per test: it is killed when its `RedisServer` is dropped
//! (also when the test panics), and, should the test binary itself die,
//! by `PR_SET_PDEATHSIG` when the thread that started it ends.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// The test-only environment variable that shortens a Redis lease.
pub const LEASE_ENV: &str = "RETRY_TEST_REDIS_LEASE_MS";

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
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
    pub fn start_with(password: Option<&str>) -> RedisServer {
        if Command::new("redis-server").arg("--version").output().is_err() {
            panic!(
                "redis-server is not installed: apt-get install redis-server (the shared-state tests need it)"
            );
        }
        for _ in 0..5 {
            let port = free_port();
            if let Some(server) = RedisServer::try_start(port, password) {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts on `port` (again, after [`RedisServer::kill`]); `None` when
    /// it does not answer within 5 s (the port was taken meanwhile).
    fn try_start(port: u16, password: Option<&str>) -> Option<RedisServer> {
        let dir = tempfile::Builder::new().prefix("retry-redis-").tempdir().unwrap();
        let mut server = RedisServer { child: None, port, password: password.map(str::to_string), dir };
        server.spawn().then_some(server)
    }

    fn spawn(&mut self) -> bool {
        let dir = self.dir.path();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
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
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
    }

    /// `redis://127.0.0.1:PORT` (with the password when there is one).
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
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
}

impl Backend {
    /// `file:<sandbox>/store`.
    pub fn file(t: &T) -> Backend {
        Backend::File(format!("file:{}", path_str(&t.path("store"))))
    }

    pub fn redis() -> Backend {
        Backend::Redis(RedisServer::start())
    }

    pub fn url(&self) -> String {
        match self {
            Backend::File(url) => url.clone(),
            Backend::Redis(server) => server.url(),
        }
    }

    pub fn is_redis(&self) -> bool {
        matches!(self, Backend::Redis(_))
    }

    /// `--key KEY --state-store URL`.
    pub fn args(&self, key: &str) -> Vec<String> {
        store_args(&self.url(), key)
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
/// on each store: `name::file` and `name::redis`.
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
            }
        )*
    };
}
