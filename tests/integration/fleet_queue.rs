//! The fleet queue: `--queue`, `--drain` and `--list` on
//! `redis://…#NAME`, against a real `redis-server`. Each "machine" is a
//! process of its own (another working directory, another environment).
//! Leases are short here (`--lease 300ms`); the default is 30 s.

use std::process::Child;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;

use crate::server::{Certs, RedisServer, free_port, read_all, spawn_with};
use crate::util::*;

/// Runs each named test, `fn name(t: &T, server: &RedisServer)`, on a
/// plain server (`name::plain`) and on a TLS-only one (`name::tls`: retry
/// trusts the test CA through `SSL_CERT_FILE`, the system trust store's
/// variable, so the tests' own command lines need no change).
macro_rules! on_plain_and_tls {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[test]
                fn plain() {
                    let t = T::new();
                    let server = RedisServer::start();
                    super::$name(&t, &server);
                }

                #[test]
                fn tls() {
                    let t = T::new().with_env("SSL_CERT_FILE", &Certs::get().file("ca.pem"));
                    let server = RedisServer::start_tls(false);
                    super::$name(&t, &server);
                }
            }
        )*
    };
}

on_plain_and_tls!(
    a_job_queued_on_one_machine_runs_on_another,
    four_drains_over_200_due_jobs_run_each_exactly_once,
    a_drain_killed_mid_job_gives_it_back_when_its_lease_ends,
    a_lease_is_renewed_while_a_long_job_runs,
    a_stale_drain_is_reported_and_the_newer_claims_result_wins,
    dead_letters_are_kept_with_their_history_and_listed,
    queue_env_picks_what_a_redis_job_keeps_and_is_refused_elsewhere,
    stdin_travels_with_the_job_and_is_bounded,
    the_queue_url_and_lease_are_checked_before_anything_runs,
    unreadable_records_are_buried_with_their_bytes_or_left_alone_when_newer,
    a_connection_dropped_mid_drain_is_made_again_and_the_result_written,
);

fn sh(script: &str) -> Vec<String> {
    s(&["sh", "-c", script])
}

/// The queue `jobs` on `server`.
fn q(server: &RedisServer) -> String {
    format!("{}#jobs", server.url())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Queues `script` (which fails on its first run) with `opts` (`--wait 0` unless given).
fn enqueue(t: &T, server: &RedisServer, opts: &[&str], script: &str) {
    let wait: &[&str] = if opts.contains(&"--wait") { &[] } else { &["--wait", "0"] };
    t.retry()
        .args(["-n", "0", "--queue", &q(server)])
        .args(wait)
        .args(opts)
        .arg("--")
        .args(sh(script))
        .assert()
        .code(75)
        .stderr(predicate::str::contains("queued as"));
}

fn drain(t: &T, server: &RedisServer, extra: &[&str]) -> assert_cmd::assert::Assert {
    t.retry().args(["--drain", &q(server)]).args(extra).assert()
}

/// `retry --drain` started in the background.
fn spawn_drain(t: &T, server: &RedisServer, extra: &[&str]) -> Child {
    let mut args = vec!["--drain".to_string(), q(server)];
    args.extend(s(extra));
    spawn_with(t, &args, &[])
}

/// `retry --list`, parsed.
fn list(t: &T, server: &RedisServer) -> Vec<Value> {
    let out = t.retry().args(["--list", &q(server)]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    text(bytes).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect()
}

/// The keys of the server, sorted.
fn keys(server: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut server.client()).unwrap();
    keys.sort();
    keys
}

fn job_doc(server: &RedisServer, id: &str) -> Value {
    let doc: Vec<u8> = redis::cmd("HGET")
        .arg(format!("retry:{{queue:jobs}}:job:{id}"))
        .arg("doc")
        .query(&mut server.client())
        .unwrap();
    serde_json::from_slice(&doc).unwrap()
}

fn a_job_queued_on_one_machine_runs_on_another(t: &T, server: &RedisServer) {
    let (a, b) = (t.path("a"), t.path("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let script = "echo \"attempt=$RETRY_ATTEMPT pwd=$(pwd) token=$TOKEN shell=$SHELL_NAME \
                  drain=$DRAIN_ONLY\" >> \"$HOME/log\"; \
                  [ -d \"$RETRY_STATE_DIR\" ] && echo \"$RETRY_STATE_DIR\" >> \"$HOME/states\"; \
                  [ \"$RETRY_ATTEMPT\" -ge 2 ]";
    // Machine A queues it, keeping only TOKEN of its environment.
    t.retry()
        .current_dir(&a)
        .env("TOKEN", "from-a")
        .env("SHELL_NAME", "a-only")
        .args(["-n", "0", "--wait", "0", "--temp-state", "--queue-env", "TOKEN", "--queue", &q(server), "--"])
        .args(sh(script))
        .assert()
        .code(75)
        .stderr(predicate::str::contains(format!("in {}/0#jobs, next attempt due", server.url())));
    let listed = list(t, server);
    assert_eq!(listed.len(), 1);
    let id = listed[0]["id"].as_str().unwrap().to_string();
    // The same job document as in a directory queue.
    let doc = job_doc(server, &id);
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["env"], serde_json::json!(["TOKEN=from-a"]));
    assert_eq!(doc["cwd"], path_str(&a));
    assert_eq!(doc["attempts"], 1);
    // Machine B drains it: the saved directory exists there, so it is used;
    // B's environment with TOKEN over it.
    t.retry()
        .current_dir(&b)
        .env("TOKEN", "from-b")
        .env("DRAIN_ONLY", "b")
        .args(["--drain", &q(server)])
        .assert()
        .code(0)
        .stderr(predicate::str::contains(format!(
            "job {id}: succeeded on attempt 2; removed from the queue"
        )));
    assert_eq!(
        t.lines("log"),
        [
            format!("attempt=1 pwd={} token=from-a shell=a-only drain=", path_str(&a)),
            format!("attempt=2 pwd={} token=from-a shell= drain=b", path_str(&a)),
        ]
    );
    // Each run had a state dir of its own, gone afterwards.
    let states = t.lines("states");
    assert_eq!(states.len(), 2);
    assert_ne!(states[0], states[1]);
    assert!(states.iter().all(|d| !std::path::Path::new(d).exists()), "{states:?}");
    assert!(list(t, server).is_empty());
    // A working directory that does not exist on the draining machine: the drain's.
    let gone = t.path("gone");
    std::fs::create_dir(&gone).unwrap();
    t.retry()
        .current_dir(&gone)
        .args(["-n", "0", "--wait", "0", "--queue", &q(server), "--"])
        .args(sh("[ \"$RETRY_ATTEMPT\" -ge 2 ] && pwd > \"$HOME/where\""))
        .assert()
        .code(75);
    std::fs::remove_dir(&gone).unwrap();
    t.retry()
        .current_dir(&b)
        .args(["--drain", &q(server)])
        .assert()
        .code(0)
        .stderr(predicate::str::contains("is missing; running in the drain's"));
    assert_eq!(t.lines("where"), [path_str(&b)]);
    // Nothing is left but the finished jobs' tombstones (a minute).
    assert!(keys(server).iter().all(|k| k.starts_with("retry:{queue:jobs}:job:")), "{:?}", keys(server));
}

fn four_drains_over_200_due_jobs_run_each_exactly_once(t: &T, server: &RedisServer) {
    let n = 200;
    let url = q(server);
    // Queued from 8 processes at a time.
    std::thread::scope(|scope| {
        for part in 0..8 {
            let (t, url) = (&t, &url);
            scope.spawn(move || {
                for i in (part..n).step_by(8) {
                    let mut cmd = std::process::Command::new(bin());
                    t.env(&mut cmd);
                    let status = cmd
                        .args(["-q", "-n", "0", "--wait", "0", "--queue", url, "--", "sh", "-c"])
                        .arg("[ \"$RETRY_ATTEMPT\" -ge 2 ] || exit 1; echo \"$1\" >> \"$HOME/ran\"")
                        .args(["job", &i.to_string()])
                        .status()
                        .unwrap();
                    assert_eq!(status.code(), Some(75));
                }
            });
        }
    });
    assert_eq!(list(t, server).len(), n);
    let drains: Vec<Child> = (0..4).map(|_| spawn_drain(t, server, &[])).collect();
    let mut exits = Vec::new();
    for mut d in drains {
        exits.push(wait_exit(&mut d).code());
        let stderr = stderr_of(d);
        assert!(!stderr.contains("warning") && !stderr.contains("lost"), "{stderr}");
    }
    assert_eq!(exits, [Some(0); 4]);
    let mut ran = t.lines("ran");
    ran.sort_by_key(|l| l.parse::<usize>().unwrap());
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(ran, want, "each job ran exactly once");
    assert!(list(t, server).is_empty());
}

fn a_drain_killed_mid_job_gives_it_back_when_its_lease_ends(t: &T, server: &RedisServer) {
    enqueue(
        t,
        server,
        &[],
        "echo \"$RETRY_ATTEMPT\" >> runs; [ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; \
         if [ ! -e started ]; then touch started; exec sleep 30; fi",
    );
    let mut first = spawn_drain(t, server, &["--lease", "1s"]);
    t.wait_for("started");
    t.wait_for_process("sleep");
    // Meanwhile another drain: the job is leased, so it is not run twice.
    drain(t, server, &[]).code(0).stderr("");
    kill(first.id(), libc::SIGKILL);
    wait_exit(&mut first);
    let killed = Instant::now();
    // The attempt's process died with its drain.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.live_processes().is_empty() {
        assert!(Instant::now() < deadline, "left running: {:?}", t.live_processes());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(list(t, server).len(), 1, "the job is still queued");
    // Once the lease has run out, the next drain runs it.
    loop {
        let out = t.retry().args(["--drain", &q(server)]).output().unwrap();
        if text(&out.stderr).contains("succeeded on attempt 2") {
            break;
        }
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(killed.elapsed() < Duration::from_secs(10), "the job never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(killed.elapsed() >= Duration::from_millis(300), "not before its lease ran out");
    assert_eq!(t.lines("runs"), ["1", "2", "2"]);
    assert!(list(t, server).is_empty());
}

fn a_lease_is_renewed_while_a_long_job_runs(t: &T, server: &RedisServer) {
    enqueue(
        t,
        server,
        &[],
        "echo \"$RETRY_ATTEMPT\" >> runs; [ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; touch started; sleep 1.5",
    );
    let mut holder = spawn_drain(t, server, &["--lease", "300ms"]);
    t.wait_for("started");
    // Five times the lease: only its renewals (every 100ms) keep the job held.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        drain(t, server, &["--lease", "300ms"]).code(0).stderr("");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(wait_exit(&mut holder).code(), Some(0));
    let stderr = stderr_of(holder);
    assert!(stderr.contains("succeeded on attempt 2") && !stderr.contains("warning"), "{stderr}");
    assert_eq!(t.lines("runs"), ["1", "2"]);
}

fn a_stale_drain_is_reported_and_the_newer_claims_result_wins(t: &T, server: &RedisServer) {
    // Drain A's attempt waits for `go` and would succeed; drain B's fails.
    enqueue(
        t,
        server,
        &[],
        "[ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; \
         if [ -e a-started ]; then echo b >> runs; exit 4; fi; \
         echo a >> runs; touch a-started; while [ ! -e go ]; do sleep 0.01; done; exit 0",
    );
    let mut a = spawn_drain(t, server, &["--lease", "300ms", "--log-format", "json"]);
    t.wait_for("a-started");
    // A stops (its renewals too) and its lease runs out; B claims the job.
    kill(a.id(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(500));
    drain(t, server, &["--lease", "300ms"])
        .code(75)
        .stderr(predicate::str::contains("rescheduled after attempt 2"));
    std::fs::write(t.path("go"), "").unwrap();
    kill(a.id(), libc::SIGCONT);
    assert_eq!(wait_exit(&mut a).code(), Some(0));
    let out = a.wait_with_output().unwrap();
    let events = json_lines(&out.stderr);
    let job = events.iter().find(|e| e["event"] == "job").expect("a job event");
    assert_eq!(job["result"], "lost", "{events:?}");
    let reason = job["reason"].as_str().unwrap();
    assert!(reason.starts_with("its result (succeeded on attempt 2) is dropped: "), "{reason}");
    assert!(reason.contains("another drain claimed it since (claim 2; this drain's was 1)"), "{reason}");
    let drained = events.last().unwrap();
    assert_eq!((drained["event"].as_str(), drained["skipped"].as_u64()), (Some("drained"), Some(1)));
    // B's result stands: the job is queued after B's failed attempt.
    assert_eq!(t.lines("runs"), ["a", "b"]);
    let listed = list(t, server);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["attempts"].as_u64(), listed[0]["last_status"].as_u64()), (Some(2), Some(4)));
}

fn dead_letters_are_kept_with_their_history_and_listed(t: &T, server: &RedisServer) {
    enqueue(t, server, &["--stop-on-exit", "3"], "[ \"$RETRY_ATTEMPT\" -ge 2 ] && exit 3; exit 1");
    std::thread::sleep(Duration::from_millis(5));
    enqueue(t, server, &["--wait", "1h"], "exit 6");
    drain(t, server, &[])
        .code(1)
        .stderr(predicate::str::contains(
            "moved to the dead letters: permanent failure on attempt 2: exit status 3; status 3 is in --stop-on-exit",
        ));
    let listed = list(t, server);
    assert_eq!(listed.len(), 2);
    for item in &listed {
        let mut keys: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["argv", "attempts", "id", "last_status", "next_due", "reason", "state"]);
    }
    // Sorted by id = by creation time.
    let (dead, queued) = (&listed[0], &listed[1]);
    assert!(dead["id"].as_str().unwrap() < queued["id"].as_str().unwrap());
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["next_due"], Value::Null);
    assert_eq!((dead["attempts"].as_u64(), dead["last_status"].as_u64()), (Some(2), Some(3)));
    assert!(dead["reason"].as_str().unwrap().starts_with("permanent failure on attempt 2"));
    assert_eq!(queued["state"], "queued");
    assert_eq!(queued["reason"], "exit status 6");
    // The dead letter keeps its history, under the queue's name, for 30 days.
    let id = dead["id"].as_str().unwrap();
    let key = format!("retry:{{queue:jobs}}:dead:{id}");
    let mut con = server.client();
    let doc: Vec<u8> = redis::cmd("HGET").arg(&key).arg("doc").query(&mut con).unwrap();
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc["history"].as_array().unwrap().len(), 2);
    assert!(doc["dead"]["reason"].as_str().unwrap().contains("--stop-on-exit"));
    let day: i64 = 24 * 3600 * 1000;
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap();
    assert!(ttl > 29 * day && ttl <= 30 * day, "{ttl}");
    let dead_ids: Vec<String> =
        redis::cmd("ZRANGE").arg("retry:{queue:jobs}:dead").arg(0).arg(-1).query(&mut con).unwrap();
    assert_eq!(dead_ids, [id]);
    // A queued job's keys live 30 days past its max-age (3 days).
    let queued_key = format!("retry:{{queue:jobs}}:job:{}", queued["id"].as_str().unwrap());
    let ttl: i64 = redis::cmd("PTTL").arg(&queued_key).query(&mut con).unwrap();
    assert!(ttl > 32 * day && ttl <= 33 * day, "{ttl}");
    // Past its --max-age: buried without running.
    drain(t, server, &["--max-age", "1ms"]).code(0);
    std::thread::sleep(Duration::from_millis(5));
    enqueue(t, server, &[], "echo run >> runs; exit 1");
    drain(t, server, &["--max-age", "1ms"])
        .code(1)
        .stderr(predicate::str::contains("moved to the dead letters: past its --max-age of 1ms"));
    assert_eq!(t.runs("runs"), 1, "a job past its max-age does not run");
    let states: Vec<String> =
        list(t, server).iter().map(|j| j["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states, ["dead", "queued", "dead"]);
}

fn queue_env_picks_what_a_redis_job_keeps_and_is_refused_elsewhere(t: &T, server: &RedisServer) {
    t.retry()
        .env("A", "1")
        .env("B", "2")
        .env("C", "3")
        .args(["-n", "0", "--queue-env", "A,MISSING", "--queue-env", "C", "--queue", &q(server), "false"])
        .assert()
        .code(75);
    let id = list(t, server)[0]["id"].as_str().unwrap().to_string();
    assert_eq!(job_doc(server, &id)["env"], serde_json::json!(["A=1", "C=3"]));
    // Without --queue-env a Redis job keeps no variable.
    t.retry().env("A", "1").args(["-n", "0", "--queue", &q(server), "false"]).assert().code(75);
    let id = list(t, server)[1]["id"].as_str().unwrap().to_string();
    assert_eq!(job_doc(server, &id)["env"], serde_json::json!([]));
    // A directory queue keeps the whole environment: --queue-env is refused.
    let dir = path_str(&t.path("q")).to_string();
    for (args, says) in [
        (vec!["--queue-env", "A", "--queue", &dir, "true"], "a directory queue keeps the whole environment"),
        (vec!["--queue-env", "A", "true"], "--queue"),
        (vec!["--queue-env", "A=1", "--queue", &q(server), "true"], "expected variable names"),
    ] {
        t.retry().args(&args).assert().code(125).stderr(predicate::str::contains(says));
    }
}

fn stdin_travels_with_the_job_and_is_bounded(t: &T, server: &RedisServer) {
    // Attempt 1 reads one byte only; the job still carries all of stdin.
    let script = "if [ \"$RETRY_ATTEMPT\" = 1 ]; then head -c 1 >> got; exit 1; fi; cat >> got";
    t.retry()
        .args(["--stdin", "replay", "-n", "0", "--wait", "0", "--queue", &q(server), "--"])
        .args(sh(script))
        .write_stdin("abc")
        .assert()
        .code(75);
    let id = list(t, server)[0]["id"].as_str().unwrap().to_string();
    let stdin: Vec<u8> = redis::cmd("GET")
        .arg(format!("retry:{{queue:jobs}}:stdin:{id}"))
        .query(&mut server.client())
        .unwrap();
    assert_eq!(stdin, b"abc");
    t.retry().args(["--drain", &q(server)]).write_stdin("not the job's").assert().code(0);
    assert_eq!(std::fs::read_to_string(t.path("got")).unwrap(), "aabc");
    assert!(keys(server).iter().all(|k| !k.contains(":stdin:")), "{:?}", keys(server));
    // More than 16 MiB from a pipe: known only when the run gives up; not queued, 125.
    let big = vec![b'x'; (16 << 20) + 1];
    t.retry()
        .args(["--stdin", "replay", "-n", "0", "--queue", &q(server), "--"])
        .args(sh("cat > /dev/null; echo ran >> runs; exit 1"))
        .write_stdin(big.clone())
        .assert()
        .code(125)
        .stderr(predicate::str::contains(
            "its recorded stdin is larger than 16 MiB, the most a Redis job carries; use a directory queue",
        ));
    assert_eq!(t.runs("runs"), 1);
    assert!(list(t, server).is_empty(), "nothing queued");
    // Exactly 16 MiB is fine.
    t.retry()
        .args(["--stdin", "replay", "-n", "0", "--queue", &q(server), "--"])
        .args(sh("cat > /dev/null; exit 1"))
        .write_stdin(vec![b'y'; 16 << 20])
        .assert()
        .code(75);
    // A file that is too large is refused before anything runs.
    std::fs::write(t.path("big"), &big).unwrap();
    let mut cmd = std::process::Command::new(bin());
    t.env(&mut cmd);
    let out = cmd
        .args(["--stdin", "replay", "--queue", &q(server), "--"])
        .args(sh("echo ran >> runs"))
        .stdin(std::fs::File::open(t.path("big")).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("stdin is a file of 16777217 bytes"), "{}", text(&out.stderr));
    assert_eq!(t.runs("runs"), 1);
}

#[test]
fn an_unreachable_or_refusing_server_is_125_with_one_clear_line() {
    let t = T::new();
    let dead = format!("redis://127.0.0.1:{}#jobs", free_port());
    let start = Instant::now();
    // --queue: checked before the first attempt, so nothing runs.
    t.retry().args(["--queue", &dead, "--"]).args(sh("echo ran >> runs")).assert().code(125).stderr(
        predicate::str::starts_with(format!(
            "retry: queue '{}': cannot connect to 127.0.0.1:",
            dead.replace("#jobs", "/0#jobs")
        )),
    );
    assert_eq!(t.runs("runs"), 0);
    for mode in ["--drain", "--list"] {
        let out = t.retry().args([mode, &dead, "--log-format", "json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(125));
        let events = json_lines(&out.stderr);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["event"], "store_error");
        assert!(events[0]["message"].as_str().unwrap().contains("Connection refused"), "{events:?}");
        assert_eq!(out.stdout, b"");
    }
    // -q still says why.
    t.retry()
        .args(["-q", "--drain", &dead])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("cannot connect"));
    assert!(start.elapsed() < Duration::from_secs(10), "a refused connection fails fast");
    // A wrong password, or none.
    let server = RedisServer::start_with(Some("s3cret-pw"));
    let port = server.port;
    for (url, says) in [
        (format!("redis://:wrong-pw@127.0.0.1:{port}#jobs"), "authentication failed"),
        (format!("redis://127.0.0.1:{port}#jobs"), "NOAUTH"),
    ] {
        for args in [vec!["--queue", &url, "true"], vec!["--drain", &url], vec!["--list", &url]] {
            let out = t.retry().args(&args).output().unwrap();
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains(says) && !stderr.contains("wrong-pw"), "{stderr}");
        }
    }
}

#[test]
fn a_server_lost_mid_drain_ends_it_with_125_after_the_job_finishes() {
    let t = T::new();
    let mut server = RedisServer::start();
    enqueue(
        &t,
        &server,
        &[],
        "[ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; touch started; while [ ! -e go ]; do sleep 0.01; done; \
         echo end >> ends",
    );
    let mut d = spawn_drain(&t, &server, &[]);
    t.wait_for("started");
    server.kill();
    std::fs::write(t.path("go"), "").unwrap();
    let lost = Instant::now();
    let status = wait_exit(&mut d);
    let took = lost.elapsed();
    let stderr = stderr_of(d);
    assert_eq!(status.code(), Some(125), "{stderr}");
    assert_eq!(t.runs("ends"), 1, "the running job finished");
    assert!(stderr.contains("(reconnecting for 2s did not help)"), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_password_is_masked_everywhere() {
    let t = T::new();
    let server = RedisServer::start_with(Some("hunter2-secret"));
    let url = q(&server);
    let masked = format!("redis://:***@127.0.0.1:{}/0#jobs", server.port);
    let summary = t.path("summary.json");
    let mut outputs = Vec::new();
    for format in ["text", "json", "github"] {
        let out = t
            .retry()
            .env("TOKEN", "hunter2-secret")
            .args(["-v", "--log-format", format, "--summary", path_str(&summary), "-n", "0"])
            .args(["--queue-env", "TOKEN", "--queue", &url, "false"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(&masked), "{}", text(&out.stderr));
        let doc: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        assert_eq!(doc["options"]["queue"], masked.as_str());
        assert_eq!(doc["options"]["queue_env"], serde_json::json!(["TOKEN"]));
        outputs.extend([out.stdout, out.stderr, std::fs::read(&summary).unwrap()]);
    }
    for args in [
        vec!["--list", &url],
        vec!["-v", "--drain", &url],
        vec!["--drain", &url, "--log-format", "json", "-v"],
    ] {
        let out = t.retry().args(&args).output().unwrap();
        outputs.extend([out.stdout, out.stderr]);
    }
    let wrong = url.replace("hunter2-secret", "hunter2-secret-not");
    for args in [vec!["--list", &wrong], vec!["--drain", &wrong], vec!["--queue", &wrong, "true"]] {
        let out = t.retry().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(125));
        outputs.extend([out.stdout, out.stderr]);
    }
    let all = text(&outputs.concat());
    assert!(all.contains("\"event\":\"drained\""), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
    assert!(!String::from_utf8_lossy(&read_all(t.dir.path())).contains("hunter2"));
    // The job in Redis keeps the variable it was asked to (the job needs
    // it), but not the queue's password: its saved options show it masked.
    let listed = list(&t, &server);
    let id = listed[0]["id"].as_str().unwrap();
    let doc = job_doc(&server, id);
    let options = doc["options"].to_string();
    assert!(!options.contains("hunter2") && options.contains(&masked), "{options}");
}

fn the_queue_url_and_lease_are_checked_before_anything_runs(t: &T, server: &RedisServer) {
    let url = q(server);
    let dir = path_str(&t.path("q")).to_string();
    for (args, says) in [
        (vec!["--queue", "redis://:pw@127.0.0.1:1", "true"], "a Redis queue needs a name after '#'"),
        // (TLS is spoken since the production release; nothing listens here.)
        (vec!["--drain", "rediss://:pw@127.0.0.1:1#q"], "cannot connect to 127.0.0.1:1"),
        (vec!["--list", "redis://h#a/b"], "is not a valid name"),
        (vec!["--queue", "https://:pw@h/q", "true"], "expected a directory or redis://"),
        (vec!["--drain", &url, "--lease", "50ms"], "a lease is at least 100ms"),
        (vec!["--drain", &dir, "--lease", "1s"], "a lease is for a Redis queue"),
        (vec!["--list", &url, "--lease", "1s"], "cannot be used with --list"),
        (vec!["--lease", "1s", "true"], "--drain"),
        (vec!["--drain", &url, "-n", "1"], "a drain takes only --max-age, --max-time, --lease"),
    ] {
        let out = t.retry().args(&args).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(stderr.contains(says) && !stderr.contains("pw@"), "{args:?}: {stderr}");
    }
    assert!(keys(server).is_empty());
    // What a drain of a Redis queue takes.
    t.retry()
        .args([
            "--drain",
            &url,
            "--lease",
            "2m",
            "--max-time",
            "1m",
            "--max-age",
            "2d",
            "-q",
            "--stdout",
            "final",
        ])
        .assert()
        .code(0);
}

#[test]
fn help_describes_the_fleet_queue() {
    let t = T::new();
    let help = text(&t.retry().arg("--help").output().unwrap().stdout);
    for words in
        ["--queue-env <NAME[,NAME...]>", "--lease <DURATION>", "redis://…#NAME", "16 MiB", "[default: 30s]"]
    {
        assert!(help.contains(words), "{words} missing from --help");
    }
}

fn unreadable_records_are_buried_with_their_bytes_or_left_alone_when_newer(t: &T, server: &RedisServer) {
    let mut con = server.client();
    let put = |con: &mut redis::Connection, id: &str, doc: &str| {
        let key = format!("retry:{{queue:jobs}}:job:{id}");
        let () = redis::cmd("HSET").arg(&key).arg("doc").arg(doc).arg("due").arg(0).query(con).unwrap();
        let () = redis::cmd("HSET").arg(&key).arg("claim").arg(0).arg("holder").arg("").query(con).unwrap();
        let _: i64 = redis::cmd("ZADD").arg("retry:{queue:jobs}:due").arg(0).arg(id).query(con).unwrap();
    };
    let corrupt = "20200101T000000.000000Z-0badf00d";
    let newer = "20300101T000000.000000Z-00000002";
    put(&mut con, corrupt, "{\"version\": 1, \"id\": trunc");
    put(&mut con, newer, &format!("{{\"version\": 2, \"id\": \"{newer}\", \"new\": true}}"));
    drain(t, server, &[])
        .code(1)
        .stderr(predicate::str::contains(format!(
            "job {corrupt}: moved to the dead letters: corrupt job record"
        )))
        .stderr(predicate::str::contains(format!(
            "job {newer}: warning: skipped: written by a newer retry (job format version 2"
        )));
    let raw: Vec<u8> = redis::cmd("HGET")
        .arg(format!("retry:{{queue:jobs}}:dead:{corrupt}"))
        .arg("corrupt")
        .query(&mut con)
        .unwrap();
    assert_eq!(raw, b"{\"version\": 1, \"id\": trunc", "the bytes are kept");
    // The newer job is left as it was, for a newer drain; and said again.
    drain(t, server, &[]).code(0).stderr(predicate::str::contains("skipped: written by a newer retry"));
    let out = t.retry().args(["--list", &q(server)]).output().unwrap();
    assert!(text(&out.stderr).contains("newer retry"), "{}", text(&out.stderr));
    let listed = json_lines(&out.stdout);
    let states: Vec<(&str, &str)> =
        listed.iter().map(|j| (j["id"].as_str().unwrap(), j["state"].as_str().unwrap())).collect();
    assert_eq!(states, [(corrupt, "dead"), (newer, "queued")]);
    assert!(listed[0]["reason"].as_str().unwrap().starts_with("corrupt job record"));
}

fn a_connection_dropped_mid_drain_is_made_again_and_the_result_written(t: &T, server: &RedisServer) {
    enqueue(
        t,
        server,
        &[],
        "[ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; touch started; while [ ! -e go ]; do sleep 0.01; done",
    );
    let mut d = spawn_drain(t, server, &[]);
    t.wait_for("started");
    // The server drops every client but this one (the drain's connection).
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut server.client())
        .unwrap();
    assert!(killed >= 1);
    std::fs::write(t.path("go"), "").unwrap();
    assert_eq!(wait_exit(&mut d).code(), Some(0));
    let stderr = stderr_of(d);
    assert!(stderr.contains("succeeded on attempt 2; removed from the queue"), "{stderr}");
    assert!(list(t, server).is_empty());
}
