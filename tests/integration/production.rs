//! Redis as fleets run it (SPEC "Redis in production"), against real
//! servers started here on 127.0.0.1: TLS and mutual TLS, the password out
//! of argv, persistence warnings, a Cluster (through a node that does not
//! serve the slot; a master killed mid-drain), Sentinel (a failover
//! mid-run), records of the wrong type, one-line messages for servers that
//! are not Redis or do not answer, and queues written by the previous
//! release.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;

use crate::server::{Certs, Cluster, RedisServer, Sentinels, read_all, shared_cluster, spawn_with};
use crate::util::*;

fn sh(script: &str) -> Vec<String> {
    s(&["sh", "-c", script])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    text(bytes).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// A Redis deployment a fleet-queue scenario runs on.
enum Flavor {
    Plain(RedisServer),
    Tls(RedisServer),
    Cluster(&'static Cluster, #[allow(dead_code)] std::sync::MutexGuard<'static, ()>),
}

impl Flavor {
    /// The queue `jobs` (in a Cluster: through a node that does not serve it).
    fn q(&self) -> String {
        match self {
            Flavor::Plain(s) | Flavor::Tls(s) => format!("{}#jobs", s.url()),
            Flavor::Cluster(c, _) => format!("{}#jobs", c.url_not_serving("retry:{queue:jobs}:due")),
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Flavor::Plain(s) | Flavor::Tls(s) => s.retry_args(),
            Flavor::Cluster(..) => Vec::new(),
        }
    }

    fn client(&self) -> redis::Connection {
        match self {
            Flavor::Plain(s) | Flavor::Tls(s) => s.client(),
            Flavor::Cluster(c, _) => c.client_for("retry:{queue:jobs}:due"),
        }
    }
}

/// Queue, list, drain, bury, and a record of the wrong type, on one flavor.
fn fleet_queue_round_trip(t: &T, f: &Flavor) {
    let q = f.q();
    let extra = f.args();
    // One that succeeds in the drain, one that dies there (a stop rule).
    for (opts, script) in [(s(&[]), "echo ran >> ran"), (s(&["--stop-on-exit", "3"]), "exit 3")] {
        t.retry()
            .args(&extra)
            .args(["-n", "0", "--wait", "0", "--queue", &q])
            .args(opts)
            .arg("--")
            .args(sh(&format!("[ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; {script}")))
            .assert()
            .code(75);
    }
    // A record of the wrong type, as in the issue: it must not wedge anything.
    let mut con = f.client();
    let _: () = redis::cmd("SET").arg("retry:{queue:jobs}:job:x").arg("x").query(&mut con).unwrap();
    let _: () = redis::cmd("ZADD").arg("retry:{queue:jobs}:due").arg(1).arg("x").query(&mut con).unwrap();
    let out = t.retry().args(&extra).args(["--list", &q]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed = json_lines(&out.stdout);
    assert_eq!(listed.len(), 3, "{listed:?}");
    let x = listed.iter().find(|j| j["id"] == "x").unwrap();
    assert!(x["reason"].as_str().unwrap().contains("is a Redis string, not a hash"), "{x}");
    let out = t.retry().args(&extra).args(["--drain", &q, "--log-format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a job died: {}", text(&out.stderr));
    let drained = json_lines(&out.stderr).into_iter().find(|e| e["event"] == "drained").unwrap();
    assert_eq!((drained["succeeded"].as_u64(), drained["dead"].as_u64()), (Some(1), Some(2)), "{drained}");
    assert_eq!(t.runs("ran"), 1);
    let out = t.retry().args(&extra).args(["--list", &q]).output().unwrap();
    let listed = json_lines(&out.stdout);
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|j| j["state"] == "dead"), "{listed:?}");
}

#[test]
fn the_fleet_queue_works_over_plain_tls_mutual_tls_and_a_cluster() {
    for flavor in ["plain", "tls", "mutual", "cluster"] {
        let t = T::new();
        let f = match flavor {
            "plain" => Flavor::Plain(RedisServer::start()),
            "tls" => Flavor::Tls(RedisServer::start_tls(false)),
            "mutual" => Flavor::Tls(RedisServer::start_tls(true)),
            _ => {
                let (c, g) = shared_cluster();
                Flavor::Cluster(c, g)
            }
        };
        fleet_queue_round_trip(&t, &f);
    }
}

/// `--key k --rate 100/1s --state-store URL` and the command.
fn rate_run(t: &T, url: &str, extra: &[String]) -> assert_cmd::assert::Assert {
    t.retry()
        .args(extra)
        .args(["--key", "k", "--rate", "100/1s", "--state-store", url, "--", "true"])
        .timeout(Duration::from_secs(20))
        .assert()
}

#[test]
fn tls_faults_are_one_clear_line_and_125_quickly() {
    let t = T::new();
    let server = RedisServer::start_tls(false);
    let mutual = RedisServer::start_tls(true);
    let certs = Certs::get();
    let plain = RedisServer::start();
    let ca = certs.args(false);
    let other_ca = s(&["--tls-ca", &certs.file("other-ca.pem")]);
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (server.url(), other_ca, "not signed by a CA this machine trusts"),
        (server.url(), Vec::new(), "not signed by a CA this machine trusts"),
        (format!("rediss://127.0.0.1:{}", server.port), ca.clone(), "not valid for this host name"),
        (format!("redis://127.0.0.1:{}", server.port), Vec::new(), "a TLS port? then write rediss://"),
        (mutual.url(), ca.clone(), "TLS"),
        (format!("rediss://localhost:{}", plain.port), ca.clone(), "a plain port? then write redis://"),
    ];
    for (url, extra, says) in cases {
        let start = Instant::now();
        let out = rate_run(&t, &url, &extra).code(125).get_output().clone();
        let took = start.elapsed();
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{url}: one line: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(took < Duration::from_secs(5), "{url}: took {took:?}");
    }
    // The right CA (and certificate) work.
    rate_run(&t, &server.url(), &ca).success().stderr("");
    rate_run(&t, &mutual.url(), &certs.args(true)).success().stderr("");
    // Bad files are usage errors, before anything runs.
    for (args, says) in [
        (s(&["--tls-ca", "/nonexistent.pem"]), "--tls-ca"),
        (s(&["--tls-ca", &certs.file("ca.key")]), "no PEM certificate"),
        (s(&["--tls-cert", &certs.file("client.pem")]), "needs its key"),
        (
            s(&["--tls-cert", &certs.file("client.pem"), "--tls-key", &certs.file("ca.pem")]),
            "no PEM private key",
        ),
    ] {
        rate_run(&t, &server.url(), &args).code(125).stderr(predicate::str::contains(says));
    }
}

#[test]
fn the_password_from_the_environment_stays_out_of_argv_and_out_of_jobs() {
    let t = T::new();
    let server = RedisServer::start_with(Some("hunter2-secret"));
    let url = format!("redis://127.0.0.1:{}", server.port);
    let pw = [("RETRY_REDIS_PASSWORD", "hunter2-secret")];
    // A running retry: its argv holds no password.
    let args = s(&[
        "--key",
        "k",
        "--concurrency",
        "1",
        "--state-store",
        &url,
        "--",
        "sh",
        "-c",
        "touch up; sleep 5",
    ]);
    let mut running = spawn_with(&t, &args, &pw);
    t.wait_for("up");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", running.id())).unwrap();
    assert!(!text(&cmdline).contains("hunter2"), "{}", text(&cmdline));
    kill(running.id(), libc::SIGTERM);
    wait_exit(&mut running);
    // Without it: NOAUTH, one line.
    t.retry()
        .args(["--key", "k", "--rate", "1/1s", "--state-store", &url, "true"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("NOAUTH"));
    // Queued with the password in the --state-store URL and in the
    // environment: neither the Redis job nor a directory job keeps it.
    let q = format!("{url}#jobs");
    let store_url = format!("redis://:hunter2-secret@127.0.0.1:{}", server.port);
    for queue in [q.as_str(), "qdir"] {
        t.retry()
            .envs(pw)
            .args(["-n", "0", "--wait", "0", "--queue", queue, "--queue-env", "RETRY_REDIS_PASSWORD"])
            .args(["--key", "k", "--rate", "100/1s", "--state-store", &store_url, "--"])
            .args(sh("[ -e ok ] && echo ran >> ran; [ -e ok ]"))
            .assert()
            .code(if queue == "qdir" { 125 } else { 75 });
    }
    // (--queue-env is for a Redis queue: the directory job again without it.)
    t.retry()
        .envs(pw)
        .args(["-n", "0", "--wait", "0", "--queue", "qdir"])
        .args(["--key", "k", "--rate", "100/1s", "--state-store", &store_url, "--"])
        .args(sh("[ -e ok ] && echo ran >> ran; [ -e ok ]"))
        .assert()
        .code(75);
    let mut con = server.client();
    let keys: Vec<String> = redis::cmd("KEYS").arg("retry:{queue:jobs}:*").query(&mut con).unwrap();
    let mut stored = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut con).unwrap();
        if kind == "hash" {
            let all: Vec<Vec<u8>> = redis::cmd("HGETALL").arg(&key).query(&mut con).unwrap();
            stored.extend(all.concat());
        }
    }
    assert!(!stored.is_empty());
    assert!(!text(&stored).contains("hunter2"), "{}", text(&stored));
    let files: Vec<u8> = std::fs::read_dir(t.path("qdir"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .flat_map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert!(!files.is_empty());
    assert!(
        !text(&files).contains("hunter2") && !text(&files).contains("RETRY_REDIS_PASSWORD"),
        "{}",
        text(&files)
    );
    // Each drain connects with its own password, to the queue and to the
    // job's store.
    std::fs::write(t.path("ok"), "").unwrap();
    t.retry().envs(pw).args(["--drain", &q]).assert().success();
    t.retry().envs(pw).args(["--drain", "qdir"]).assert().success();
    assert_eq!(t.runs("ran"), 2);
    // A dead letter holds none either.
    t.retry()
        .envs(pw)
        .args(["-n", "0", "--wait", "0", "--queue", &q, "--stop-on-exit", "3"])
        .args(["--state-store", &store_url, "--key", "k", "--rate", "100/1s", "--"])
        .args(sh("[ -e dead ] && exit 3; exit 1"))
        .assert()
        .code(75);
    std::fs::write(t.path("dead"), "").unwrap();
    t.retry().envs(pw).args(["--drain", &q]).assert().code(1);
    let dead: Vec<String> = redis::cmd("KEYS").arg("retry:{queue:jobs}:dead:*").query(&mut con).unwrap();
    assert_eq!(dead.len(), 1);
    let letter: Vec<Vec<u8>> = redis::cmd("HGETALL").arg(&dead[0]).query(&mut con).unwrap();
    assert!(!text(&letter.concat()).contains("hunter2"));
    assert!(!String::from_utf8_lossy(&read_all(t.dir.path())).contains("hunter2"));
}

#[test]
fn a_memory_only_server_is_warned_about_once_and_one_with_aof_never() {
    let t = T::new();
    let memory = RedisServer::start_memory_only();
    let aof = RedisServer::start_aof();
    for (server, warned) in [(&memory, true), (&aof, false)] {
        let q = format!("{}#jobs", server.url());
        let out = t
            .retry()
            .args(["--log-format", "json", "-n", "0", "--wait", "0", "--queue", &q, "false"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
        let warnings: Vec<Value> =
            json_lines(&out.stderr).into_iter().filter(|e| e["event"] == "store_warning").collect();
        assert_eq!(warnings.len(), usize::from(warned), "{}", text(&out.stderr));
        if warned {
            let message = warnings[0]["message"].as_str().unwrap();
            assert_eq!(
                message,
                format!(
                    "redis at 127.0.0.1:{} keeps queued jobs only in memory: a restart loses them (enable appendonly)",
                    server.port
                )
            );
        }
        let out = t.retry().args(["--drain", &q]).output().unwrap();
        let says = text(&out.stderr).matches("keeps queued jobs only in memory").count();
        assert_eq!(says, usize::from(warned), "{}", text(&out.stderr));
        // --list only reads: no warning.
        let out = t.retry().args(["--list", &q]).output().unwrap();
        assert!(!text(&out.stderr).contains("only in memory"));
    }
}

#[test]
fn a_server_that_is_not_redis_or_does_not_answer_is_one_line() {
    let t = T::new();
    // Something else at the address: an HTTP server's reply.
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut con in http.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = con.read(&mut buf);
            let _ = con.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nno\n");
        }
    });
    // A server that accepts and never answers.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for con in mute.incoming().flatten() {
            held.push(con);
        }
    });
    for (port, says) in [(http_port, "does not speak the Redis protocol"), (mute_port, "timed out")] {
        let url = format!("redis://127.0.0.1:{port}");
        let start = Instant::now();
        let out = t
            .retry()
            .args(["--log-format", "json", "--key", "k", "--rate", "1/1s", "--state-store", &url, "true"])
            .assert()
            .code(125)
            .get_output()
            .clone();
        assert!(start.elapsed() < Duration::from_secs(6), "{:?}", start.elapsed());
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let event: Value = serde_json::from_str(stderr.trim()).unwrap();
        assert_eq!(event["event"], "store_error");
        let message = event["message"].as_str().unwrap();
        assert!(message.contains(says) && !message.contains('\n'), "{message}");
    }
}

#[test]
fn a_frozen_server_ends_a_run_within_the_2s_budget() {
    let t = T::new();
    let server = RedisServer::start();
    let url = server.url();
    let args =
        s(&["--key", "k", "--rate", "100/1s", "-n", "3", "--wait", "10ms", "--state-store", &url, "--"]);
    let mut run = spawn_with(&t, &[args, sh("touch up; [ -e go ] || sleep 1; exit 1")].concat(), &[]);
    t.wait_for("up");
    let pid = server.pid();
    kill(pid, libc::SIGSTOP);
    std::fs::write(t.path("go"), "").unwrap();
    let frozen = Instant::now();
    let status = wait_exit(&mut run);
    let took = frozen.elapsed();
    kill(pid, libc::SIGCONT);
    let stderr = stderr_of(run);
    assert_eq!(status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    // The attempt itself took up to a second; then 2 s at most, not 10.
    assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
}

#[test]
fn a_job_whose_result_could_not_be_filed_says_so() {
    let t = T::new();
    let mut server = RedisServer::start();
    let q = format!("{}#jobs", server.url());
    // The server goes away while the job runs: its success is not recorded.
    t.retry()
        .args(["-n", "0", "--wait", "0", "--queue", &q, "--"])
        .args(sh("[ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; touch up; while [ ! -e go ]; do sleep 0.05; done"))
        .assert()
        .code(75);
    let mut d = spawn_with(&t, &s(&["--drain", &q]), &[]);
    t.wait_for("up");
    server.kill();
    std::fs::write(t.path("go"), "").unwrap();
    let status = wait_exit(&mut d);
    let stderr = stderr_of(d);
    assert_eq!(status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("(it succeeded) was not recorded: the job stays in the queue"), "{stderr}");
    // The server is back, empty (no persistence): a job that ran while the
    // data was lost is `lost`, and the message does not blame another drain.
    server.restart();
    let _ = std::fs::remove_file(t.path("up"));
    let _ = std::fs::remove_file(t.path("go"));
    t.retry()
        .args(["-n", "0", "--wait", "0", "--queue", &q, "--"])
        .args(sh("[ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; touch up; while [ ! -e go ]; do sleep 0.05; done"))
        .assert()
        .code(75);
    let mut d = spawn_with(&t, &s(&["--drain", &q, "--log-format", "json"]), &[]);
    t.wait_for("up");
    let _: () = redis::cmd("FLUSHALL").query(&mut server.client()).unwrap();
    std::fs::write(t.path("go"), "").unwrap();
    wait_exit(&mut d);
    let stderr = stderr_of(d);
    let job = json_lines(stderr.as_bytes()).into_iter().find(|e| e["event"] == "job").unwrap();
    assert_eq!(job["result"], "lost", "{stderr}");
    let reason = job["reason"].as_str().unwrap();
    assert!(reason.contains("or the server lost its data"), "{reason}");
}

#[test]
fn store_lease_is_checked_and_a_drain_that_cannot_renew_kills_its_attempt() {
    let t = T::new();
    t.retry()
        .args(["--key", "k", "--concurrency", "1", "--store-lease", "10ms", "true"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("--store-lease").and(predicate::str::contains("at least 100ms")));
    let server = RedisServer::start();
    let q = format!("{}#jobs", server.url());
    t.retry()
        .args(["-n", "0", "--wait", "0", "--queue", &q, "--"])
        .args(sh("[ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; touch up; exec sleep 30"))
        .assert()
        .code(75);
    let mut d = spawn_with(&t, &s(&["--drain", &q, "--lease", "1s"]), &[]);
    t.wait_for("up");
    t.wait_for_process("sleep");
    // The server freezes: renewals fail; the attempt is killed before
    // the lease (1 s from the last renewal) ends.
    kill(server.pid(), libc::SIGSTOP);
    let frozen = Instant::now();
    let gone = loop {
        if !t.live_processes().iter().any(|p| proc_stat(*p).is_some_and(|s| s.comm == "sleep")) {
            break frozen.elapsed();
        }
        assert!(frozen.elapsed() < Duration::from_secs(10), "the attempt still runs");
        std::thread::sleep(Duration::from_millis(20));
    };
    kill(server.pid(), libc::SIGCONT);
    assert!(gone < Duration::from_millis(1500), "killed after {gone:?}");
    wait_exit(&mut d);
    let stderr = stderr_of(d);
    assert!(stderr.contains("its attempt was killed"), "{stderr}");
}

#[test]
fn a_queue_of_the_previous_release_is_moved_and_drains() {
    let t = T::new();
    let server = RedisServer::start();
    let q = format!("{}#jobs", server.url());
    // Today's layout and job JSON (format version 1), written by raw commands.
    let fixture = std::fs::read_to_string(fixture("redis-job-v1.json")).unwrap();
    let mut con = server.client();
    for (i, id) in ["20250101T000000.000000Z-00000001", "20250101T000001.000000Z-00000002"].iter().enumerate()
    {
        let doc = fixture.replace("ID", id).replace("MARK", &format!("ran{i}"));
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg(format!("retry:queue:jobs:job:{id}"))
            .arg("doc")
            .arg(&doc)
            .arg("due")
            .arg(1)
            .arg("claim")
            .arg(0)
            .arg("holder")
            .arg("")
            .cmd("ZADD")
            .arg("retry:queue:jobs:due")
            .arg(1)
            .arg(*id)
            .query(&mut con)
            .unwrap();
    }
    let dead = fixture.replace("ID", "20250101T000002.000000Z-00000003").replace("MARK", "never");
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("retry:queue:jobs:dead:20250101T000002.000000Z-00000003")
        .arg("doc")
        .arg(&dead)
        .cmd("ZADD")
        .arg("retry:queue:jobs:dead")
        .arg(1)
        .arg("20250101T000002.000000Z-00000003")
        .query(&mut con)
        .unwrap();
    let out = t.retry().args(["--list", &q]).output().unwrap();
    let listed = json_lines(&out.stdout);
    assert_eq!(listed.len(), 3, "{}", text(&out.stderr));
    let old: Vec<String> = redis::cmd("KEYS").arg("retry:queue:*").query(&mut con).unwrap();
    assert!(old.is_empty(), "moved: {old:?}");
    t.retry().args(["--drain", &q, "--max-age", "5000days"]).assert().success();
    assert_eq!(t.runs("ran0") + t.runs("ran1"), 2);
    let out = t.retry().args(["--list", &q]).output().unwrap();
    let listed = json_lines(&out.stdout);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "dead");
}

#[test]
fn a_cluster_master_killed_mid_drain_loses_no_acknowledged_job() {
    let t = T::new();
    let cluster = Cluster::start();
    let q = format!("{}#jobs", cluster.url_not_serving("retry:{queue:jobs}:due"));
    let all: Vec<String> = cluster.masters().iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let q_all = format!("redis://{}#jobs", all.join(","));
    for i in 0..20 {
        t.retry()
            .args(["-n", "0", "--wait", "0", "--queue", &q, "--"])
            .args(sh(&format!("[ -e go ] && echo {i} >> done; [ -e go ]")))
            .assert()
            .code(75);
    }
    std::fs::write(t.path("go"), "").unwrap();
    let master = cluster.master_of("retry:{queue:jobs}:due");
    // A drain runs while the queue's master dies; its replica takes over.
    let mut d = spawn_with(&t, &s(&["--drain", &q_all]), &[]);
    cluster.kill(master);
    wait_exit(&mut d);
    cluster.wait_ok();
    // Drains until the queue is empty: every acknowledged job ran.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = t.retry().args(["--drain", &q_all]).output().unwrap();
        let listed = t.retry().args(["--list", &q_all]).output().unwrap();
        if out.status.code() == Some(0) && listed.status.code() == Some(0) && listed.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut done = t.lines("done");
    done.sort();
    done.dedup();
    assert_eq!(done.len(), 20, "{done:?}");
}

#[test]
fn sentinel_finds_the_master_and_follows_a_failover_mid_run() {
    let t = T::new();
    let sentinels = Sentinels::start();
    let url = sentinels.url();
    let q = format!("{url}#jobs");
    t.retry()
        .args(["-n", "0", "--wait", "0", "--queue", &q, "--"])
        .args(sh("[ -e ok ] && echo ran >> ran; [ -e ok ]"))
        .assert()
        .code(75);
    // A run with a rate limit that lasts across the failover.
    let args =
        s(&["--key", "k", "--rate", "1000/1s", "-n", "20", "--wait", "200ms", "--state-store", &url, "--"]);
    let mut run = spawn_with(&t, &[args, sh("echo x >> tries; [ -e after ]")].concat(), &[]);
    std::thread::sleep(Duration::from_millis(500));
    let new_master = sentinels.failover();
    assert_eq!(new_master, sentinels.data[1]);
    std::fs::write(t.path("after"), "").unwrap();
    let status = wait_exit(&mut run);
    assert_eq!(status.code(), Some(0), "{}", stderr_of(run));
    // The queued job survived the failover (WAIT 1) and drains from the new master.
    std::fs::write(t.path("ok"), "").unwrap();
    let out = t.retry().args(["--drain", &q]).output().unwrap();
    assert_eq!((out.status.code(), t.runs("ran")), (Some(0), 1), "{}", text(&out.stderr));
}

#[test]
fn a_server_still_loading_its_data_is_waited_for() {
    let t = T::new();
    let dir = tempfile::Builder::new().prefix("retry-loading-").tempdir().unwrap();
    let port = crate::server::free_port();
    let base = s(&["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    let answers = || crate::server::node_client(port).is_ok();
    let mut first = crate::server::server_process(
        &[base.clone(), s(&["--enable-debug-command", "yes"])].concat(),
        dir.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut con = crate::server::node_client(port).unwrap();
    let _: () = redis::cmd("DEBUG").arg("POPULATE").arg(4000).query(&mut con).unwrap();
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    let _ = first.kill();
    let _ = first.wait();
    // Loading 4,000 keys 50 µs each, answering LOADING meanwhile.
    let slow = s(&["--key-load-delay", "50", "--loading-process-events-interval-bytes", "1024"]);
    let mut second = crate::server::server_process(&[base, slow].concat(), dir.path());
    let loading = || {
        crate::server::node_client(port)
            .and_then(|mut c| redis::cmd("GET").arg("x").query::<Option<String>>(&mut c))
            .is_err_and(|e| e.code() == Some("LOADING"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !loading() {
        assert!(Instant::now() < deadline, "the server never said LOADING");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = t.retry().args(["--list", &format!("redis://127.0.0.1:{port}#jobs")]).output().unwrap();
    let still_loading = loading();
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!still_loading, "retry answered before the server had loaded");
}

#[test]
fn where_config_is_refused_persistence_is_assumed() {
    let t = T::new();
    let dir = tempfile::Builder::new().prefix("retry-noconfig-").tempdir().unwrap();
    let port = crate::server::free_port();
    // Memory only, and CONFIG renamed away, as managed Redis does.
    let args = s(&["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    let mut server =
        crate::server::server_process(&[args, s(&["--rename-command", "CONFIG", ""])].concat(), dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::server::node_client(port).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let q = format!("redis://127.0.0.1:{port}#jobs");
    let out = t.retry().args(["-n", "0", "--wait", "0", "--queue", &q, "false"]).output().unwrap();
    let drain = t.retry().args(["--drain", &q]).output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("only in memory"), "{}", text(&out.stderr));
    assert!(!text(&drain.stderr).contains("only in memory"), "{}", text(&drain.stderr));
}

#[test]
fn a_slot_lost_in_a_failover_kills_its_attempt_within_a_lease() {
    let t = T::new();
    let server = RedisServer::start();
    let url = server.url();
    let args = s(&[
        "-n",
        "0",
        "--key",
        "k",
        "--concurrency",
        "1",
        "--store-lease",
        "1s",
        "--state-store",
        &url,
        "--",
    ]);
    let mut holder = spawn_with(&t, &[args.clone(), sh("touch up; exec sleep 30")].concat(), &[]);
    t.wait_for("up");
    t.wait_for_process("sleep");
    // A failover to a replica that had not received the slot: the record
    // is gone. Another process takes the slot (the one extra holder)...
    let _: () = redis::cmd("DEL").arg("retry:{key:k}:slots").query(&mut server.client()).unwrap();
    let lost = Instant::now();
    let mut other = spawn_with(&t, &[args, sh("touch other; sleep 0.2")].concat(), &[]);
    // ...and the holder, at its next renewal (every 3/10 of the lease),
    // kills its attempt: the extra holder lasts less than one lease.
    let status = wait_exit(&mut holder);
    let took = lost.elapsed();
    assert!(took < Duration::from_secs(1), "the holder ran on for {took:?}");
    let stderr = stderr_of(holder);
    // (retry re-raises the signal its attempt died of.)
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{stderr}");
    assert!(
        stderr.contains("lost its --concurrency slot of key 'k'")
            && stderr.contains("its attempt was killed"),
        "{stderr}"
    );
    assert_eq!(wait_exit(&mut other).code(), Some(0));
    assert!(t.path("other").exists());
}
