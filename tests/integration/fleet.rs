//! The Redis store's own behaviour, against a real `redis-server`: an
//! unreachable or password-protected server, a server lost mid-run, lease
//! renewal, the key layout and its expiry, `localhost`, and passwords in
//! no output. (The shared-state behaviour both stores share is in
//! `store.rs`, run on each.)

use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::server::{RedisServer, free_port, read_all, spawn_with, store_args};
use crate::util::*;

/// A child that appends a line to `count`, then exits CODE.
fn counted(code: u32) -> Vec<String> {
    s(&["sh", "-c", &format!("echo run >> count; exit {code}")])
}

fn stderr_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unreachable_server_is_125_before_the_first_attempt_unless_store_optional() {
    let t = T::new();
    let url = format!("redis://127.0.0.1:{}", free_port());
    let start = Instant::now();
    let out = t
        .retry()
        .args(["--log-format", "json", "--key", "k", "--rate", "5/1s", "--state-store", &url])
        .args(counted(0))
        .assert()
        .code(125)
        .get_output()
        .stderr
        .clone();
    assert!(start.elapsed() < Duration::from_secs(5), "a refused connection fails fast");
    let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(line["event"], "store_error");
    let message = line["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("state store '{url}/0': cannot connect to 127.0.0.1:")),
        "{message}"
    );
    // -q still says why retry exits 125.
    t.retry()
        .args(["-q", "--key", "k", "--concurrency", "1", "--state-store", &url])
        .args(counted(0))
        .assert()
        .code(125)
        .stderr(predicate::str::contains("cannot connect to"));
    assert_eq!(t.runs("count"), 0);
    t.retry()
        .args(["--key", "k", "--circuit-break", "1", "--store-optional", "--state-store", &url])
        .args(counted(0))
        .assert()
        .success()
        .stderr(
            predicate::str::contains("cannot connect to")
                .and(predicate::str::contains("running without coordination (--store-optional)")),
        );
    assert_eq!(t.runs("count"), 1);
}

#[test]
fn a_wrong_password_is_refused_and_the_right_one_works() {
    let t = T::new();
    let server = RedisServer::start_with(Some("s3cret-pw"));
    let port = server.port;
    for (url, says) in [
        (format!("redis://:wrong-pw@127.0.0.1:{port}"), "authentication failed"),
        (format!("redis://default:wrong-pw@127.0.0.1:{port}/1"), "authentication failed"),
        (format!("redis://127.0.0.1:{port}"), "NOAUTH"),
    ] {
        let out = t
            .retry()
            .args(["--key", "k", "--rate", "5/1s", "--state-store", &url])
            .args(counted(0))
            .assert()
            .code(125)
            .stderr(predicate::str::contains(says).and(predicate::str::contains("wrong-pw").not()))
            .get_output()
            .clone();
        assert_eq!(stderr_text(&out).lines().count(), 1, "one line: {}", stderr_text(&out));
    }
    assert_eq!(t.runs("count"), 0);
    for url in [server.url(), format!("redis://default:s3cret-pw@127.0.0.1:{port}/2")] {
        t.retry()
            .args(["--key", "k", "--rate", "5/1s", "--state-store", &url])
            .args(counted(0))
            .assert()
            .success();
    }
    assert_eq!(t.runs("count"), 2);
}

#[test]
fn a_password_in_the_store_url_appears_in_no_output() {
    let t = T::new();
    let server = RedisServer::start_with(Some("hunter2-secret"));
    let masked = format!("redis://:***@127.0.0.1:{}/0", server.port);
    // Text with -v, JSON with -v, the summary; a good and a wrong password;
    // the option and the environment variable.
    let runs: [(&[&str], String, i32); 4] = [
        (&["-v"], server.url(), 1),
        (&["-v", "--log-format", "json"], server.url(), 1),
        (&["-v", "--log-format", "github"], server.url(), 1),
        (&["-v"], server.url().replace("hunter2-secret", "hunter2-secret-not"), 125),
    ];
    for (i, (flags, url, code)) in runs.iter().enumerate() {
        for via_env in [false, true] {
            let summary = t.path(&format!("summary-{i}-{via_env}.json"));
            let mut cmd = t.retry();
            cmd.args(*flags).args(["--summary", path_str(&summary), "-n", "1", "--wait", "10ms"]);
            cmd.args(["--key", "k", "--rate", "100/1s", "--concurrency", "2", "--circuit-break", "50"]);
            if via_env {
                cmd.env("RETRY_STATE_STORE", url);
            } else {
                cmd.args(["--state-store", url]);
            }
            let out = cmd.args(counted(1)).assert().code(*code).get_output().clone();
            let all = [out.stdout.clone(), out.stderr.clone(), std::fs::read(&summary).unwrap()].concat();
            let text = String::from_utf8_lossy(&all);
            assert!(!text.contains("hunter2"), "{text}");
            let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
            assert_eq!(doc["options"]["state_store"], masked.as_str(), "{doc}");
            if *code == 1 {
                assert!(stderr_text(&out).contains(&masked), "-v names the store: {}", stderr_text(&out));
            }
        }
    }
    assert!(!String::from_utf8_lossy(&read_all(t.dir.path())).contains("hunter2"));
}

#[test]
fn the_summary_lists_the_shared_state_options() {
    let t = T::new();
    let server = RedisServer::start();
    let summary = t.path("s.json");
    t.retry()
        .args(["--summary", path_str(&summary), "-n", "0", "--store-optional"])
        .args(["--key", "api", "--state-store", &server.url(), "--circuit-break", "3", "--rate", "30/1m"])
        .args(["--concurrency", "4"])
        .args(counted(0))
        .assert()
        .success();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let o = &doc["options"];
    assert_eq!(o["key"], "api");
    assert_eq!(o["state_store"], format!("redis://127.0.0.1:{}/0", server.port));
    assert_eq!(o["circuit_break"], 3);
    assert_eq!(o["circuit_cooldown_ms"], 300_000);
    assert_eq!(o["rate"], serde_json::json!({"n": 30, "window_ms": 60_000}));
    assert_eq!(o["concurrency"], 4);
    assert_eq!(o["store_optional"], true);
    assert_eq!(o["queue"], serde_json::Value::Null);
    assert_eq!(o["max_age_ms"], serde_json::Value::Null);
}

/// The attempt that runs while the server dies: it writes `started`,
/// waits for `go`, records its end, fails.
fn slow_attempt() -> Vec<String> {
    s(&["sh", "-c", "touch started; while [ ! -e go ]; do sleep 0.01; done; echo end >> ends; exit 1"])
}

#[test]
fn a_server_lost_mid_run_ends_the_run_with_125_after_the_attempt_finishes() {
    let t = T::new();
    let mut server = RedisServer::start();
    let mut args = store_args(&server.url(), "k");
    args.extend(s(&["--rate", "100/1s", "--circuit-break", "5", "-n", "2", "--wait", "10ms"]));
    args.extend(slow_attempt());
    let mut child = spawn_with(&t, &args, &[]);
    t.wait_for("started");
    server.kill();
    std::fs::write(t.path("go"), "").unwrap();
    let lost = Instant::now();
    let status = wait_exit(&mut child);
    let took = lost.elapsed();
    let stderr = stderr_of(child);
    assert_eq!(status.code(), Some(125), "{stderr}");
    assert_eq!(t.runs("ends"), 1, "the running attempt finished, no other started");
    assert!(stderr.contains("retry: attempt 1/3 failed: exit status 1"), "{stderr}");
    assert!(stderr.contains("(reconnecting for 2s did not help)"), "{stderr}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn a_server_lost_mid_run_under_store_optional_goes_on_uncoordinated() {
    let t = T::new();
    let mut server = RedisServer::start();
    let mut args = store_args(&server.url(), "k");
    args.extend(s(&[
        "--store-optional",
        "--rate",
        "100/1s",
        "--concurrency",
        "1",
        "-n",
        "2",
        "--wait",
        "10ms",
    ]));
    args.extend(slow_attempt());
    let mut child = spawn_with(&t, &args, &[]);
    t.wait_for("started");
    server.kill();
    std::fs::write(t.path("go"), "").unwrap();
    let lost = Instant::now();
    let status = wait_exit(&mut child);
    let stderr = stderr_of(child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(t.runs("ends"), 3, "every attempt ran");
    assert_eq!(stderr.matches("going on without coordination (--store-optional)").count(), 1, "{stderr}");
    assert!(lost.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_server_back_within_2s_is_reconnected_and_the_run_goes_on() {
    let t = T::new();
    let mut server = RedisServer::start();
    let mut args = store_args(&server.url(), "k");
    args.extend(s(&["--rate", "100/1s", "--concurrency", "1", "-n", "2", "--wait", "10ms"]));
    args.extend(slow_attempt());
    let mut child = spawn_with(&t, &args, &[]);
    t.wait_for("started");
    server.restart();
    std::fs::write(t.path("go"), "").unwrap();
    let status = wait_exit(&mut child);
    let stderr = stderr_of(child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(t.runs("ends"), 3);
    assert!(!stderr.contains("state store"), "{stderr}");
}

#[test]
fn a_slot_lease_is_renewed_while_its_attempt_runs_and_released_after() {
    let t = T::new();
    let server = RedisServer::start();
    let url = server.url();
    let mut args = store_args(&url, "k");
    args.extend(s(&["--store-lease", "1s", "--concurrency", "1", "sh", "-c", "touch holding; sleep 3"]));
    let mut holder = spawn_with(&t, &args, &[]);
    t.wait_for("holding");
    // Twice the 1 s lease: only renewals (every 300 ms) keep it held.
    let mut args = store_args(&url, "k");
    args.extend(s(&["--store-lease", "1s", "--concurrency", "1", "--max-time", "2s"]));
    args.extend(counted(0));
    let mut waiter = spawn_with(&t, &args, &[]);
    assert_eq!(wait_exit(&mut waiter).code(), Some(124), "{}", stderr_of(waiter));
    assert_eq!(t.runs("count"), 0);
    assert_eq!(wait_exit(&mut holder).code(), Some(0));
    let mut con = server.client();
    let held: i64 = redis::cmd("ZCARD").arg("retry:{key:k}:slots").query(&mut con).unwrap();
    assert_eq!(held, 0, "released when the attempt ended, not when the lease ran out");
}

#[test]
fn keys_are_hash_tagged_retry_key_and_expire_after_30_days_idle_or_the_cooldown() {
    let t = T::new();
    let server = RedisServer::start();
    let url = server.url();
    let day: i64 = 24 * 3600 * 1000;
    let mut con = server.client();
    let pttl =
        |con: &mut redis::Connection, key: &str| -> i64 { redis::cmd("PTTL").arg(key).query(con).unwrap() };
    t.retry()
        .args(store_args(&url, "api"))
        .args([
            "--circuit-break",
            "5",
            "--circuit-cooldown",
            "60days",
            "--rate",
            "10/1h",
            "--concurrency",
            "2",
        ])
        .args(["-n", "0"])
        .args(counted(1))
        .assert()
        .code(1);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    keys.sort();
    // The slots' set is empty again, and Redis drops empty sets.
    assert_eq!(keys, ["retry:{key:api}:circuit", "retry:{key:api}:starts"]);
    let circuit = pttl(&mut con, "retry:{key:api}:circuit");
    assert!(circuit > 59 * day && circuit <= 60 * day, "{circuit}");
    let starts = pttl(&mut con, "retry:{key:api}:starts");
    assert!(starts > 29 * day && starts <= 30 * day, "{starts}");
    // A short cooldown: 30 days.
    t.retry()
        .args(store_args(&url, "b"))
        .args(["--circuit-break", "5", "-n", "0"])
        .args(counted(1))
        .assert()
        .code(1);
    let circuit = pttl(&mut con, "retry:{key:b}:circuit");
    assert!(circuit > 29 * day && circuit <= 30 * day, "{circuit}");
    // A success closes the circuit: nothing is left of it.
    t.retry().args(store_args(&url, "b")).args(["--circuit-break", "5"]).args(counted(0)).assert().success();
    let exists: i64 = redis::cmd("EXISTS").arg("retry:{key:b}:circuit").query(&mut con).unwrap();
    assert_eq!(exists, 0);
}

#[test]
fn localhost_resolves_with_the_built_binary() {
    let t = T::new();
    let server = RedisServer::start();
    let url = format!("redis://localhost:{}", server.port);
    let run = || {
        let mut cmd = t.retry();
        cmd.args(["--key", "k", "--rate", "1/1h", "--state-store", &url, "--max-time", "500ms"])
            .args(counted(0));
        cmd
    };
    run().assert().success().stderr("");
    // The second run finds the first one's start: the same server.
    run().assert().code(124).stderr(predicate::str::contains("before any attempt could start"));
    assert_eq!(t.runs("count"), 1);
}
