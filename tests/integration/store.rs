//! Shared state across runs: the circuit breaker and its trial run, the
//! sliding-window rate limit and the concurrency limit across real
//! processes, and crash recovery, each on BOTH stores (the file store and a
//! real `redis-server`: `name::file`, `name::redis`); then the file store's
//! own refusals. Redis-only behaviour (lost server, auth, leases, key
//! expiry) is in `fleet.rs`.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::server::{Backend, spawn_with};
use crate::util::*;
use crate::{on_both_stores, on_stores_but_tls};

on_both_stores!(
    circuit_opens_after_n_runs_that_gave_up_and_refuses_with_75_without_running,
    refused_run_in_json_reports_circuit_open_and_outcome_refused,
    after_the_cooldown_one_trial_runs_while_others_are_refused_and_its_result_decides,
    a_trial_killed_by_sigkill_does_not_wedge_the_circuit,
    a_run_ended_by_a_signal_does_not_count_towards_the_circuit,
    rate_limit_holds_as_a_sliding_window_across_processes,
    concurrency_never_exceeds_n_across_processes,
    a_slot_is_free_during_the_backoff_sleep_and_soon_after_sigkill,
    a_rate_wait_is_interrupted_by_a_signal,
    a_rate_wait_past_max_time_ends_with_the_last_attempts_status,
);

// Not over TLS: a hundred TLS handshakes of the debug build at once, on
// two cores shared with the other tests, overrun the 2 s connect budget.
// (The crowd over TLS is what benches/store.sh times, on the release build.)
on_stores_but_tls!(a_hundred_concurrent_runs_on_one_key_lose_no_count_and_respect_rate_and_concurrency);

/// `--key KEY --state-store file:<sandbox>/store`.
fn store_args(t: &T, key: &str) -> Vec<String> {
    Backend::file(t).args(key)
}

/// A child that appends a line to `count`, then exits CODE.
fn counted(code: u32) -> Vec<String> {
    s(&["sh", "-c", &format!("echo run >> count; exit {code}")])
}

fn circuit(b: &Backend, key: &str, n: &str, cooldown: &str) -> Vec<String> {
    let mut args = b.args(key);
    args.extend(s(&["--circuit-break", n, "--circuit-cooldown", cooldown, "-n", "0"]));
    args
}

fn circuit_opens_after_n_runs_that_gave_up_and_refuses_with_75_without_running(t: &T, b: &Backend) {
    for _ in 0..2 {
        t.retry().args(circuit(b, "api", "2", "1h")).args(counted(1)).assert().code(1);
    }
    t.retry().args(circuit(b, "api", "2", "1h")).args(counted(0)).assert().code(75).stderr(
        predicate::str::is_match(r"^retry: circuit 'api' open for (59m\d+s|1h) more after 2 failed runs\n$")
            .unwrap(),
    );
    assert_eq!(t.runs("count"), 2, "a refused run does not run COMMAND");
    // Another key is not affected.
    t.retry().args(circuit(b, "other", "2", "1h")).args(counted(0)).assert().success();
}

fn refused_run_in_json_reports_circuit_open_and_outcome_refused(t: &T, b: &Backend) {
    t.retry().args(circuit(b, "api", "1", "1h")).args(counted(3)).assert().code(3);
    let out = t
        .retry()
        .args(["--log-format", "json"])
        .args(circuit(b, "api", "1", "1h"))
        .args(counted(0))
        .assert()
        .code(75)
        .get_output()
        .stderr
        .clone();
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["event"], "circuit_open");
    assert_eq!(lines[0]["key"], "api");
    assert_eq!(lines[0]["failures"], 1);
    assert!(lines[0]["remaining_ms"].as_u64().unwrap() > 3_500_000);
    assert_eq!(lines[1]["event"], "done");
    assert_eq!(lines[1]["outcome"], "refused");
    assert_eq!(lines[1]["status"], 75);
    assert_eq!(lines[1]["attempts"], 0);
}

fn after_the_cooldown_one_trial_runs_while_others_are_refused_and_its_result_decides(t: &T, b: &Backend) {
    let args = circuit(b, "api", "2", "300ms");
    for _ in 0..2 {
        t.retry().args(&args).args(counted(1)).assert().code(1);
    }
    t.retry().args(&args).args(counted(0)).assert().code(75);
    std::thread::sleep(Duration::from_millis(350));
    // The trial: it waits for `go`, then fails.
    let mut trial_args = args.clone();
    trial_args.extend(s(&["sh", "-c", "touch started; while [ ! -e go ]; do sleep 0.01; done; exit 1"]));
    let trial_args: Vec<&str> = trial_args.iter().map(String::as_str).collect();
    let mut trial = t.spawn(&trial_args);
    t.wait_for("started");
    t.retry()
        .args(&args)
        .args(counted(0))
        .assert()
        .code(75)
        .stderr("retry: circuit 'api' open after 2 failed runs: a trial run is in progress\n");
    std::fs::write(t.path("go"), "").unwrap();
    assert_eq!(wait_exit(&mut trial).code(), Some(1));
    assert!(stderr_of(trial).contains("circuit 'api' half-open: this run is the trial"));
    // The trial failed: open again, for a whole cooldown.
    t.retry()
        .args(&args)
        .args(counted(0))
        .assert()
        .code(75)
        .stderr(predicate::str::is_match(r"open for \d+ms more after 3 failed runs").unwrap());
    std::thread::sleep(Duration::from_millis(350));
    // A successful trial closes it, and the count starts over.
    t.retry().args(&args).args(counted(0)).assert().success();
    t.retry().args(&args).args(counted(1)).assert().code(1);
    t.retry().args(&args).args(counted(0)).assert().success();
    assert_eq!(t.runs("count"), 5);
}

fn a_trial_killed_by_sigkill_does_not_wedge_the_circuit(t: &T, b: &Backend) {
    let args = circuit(b, "api", "1", "100ms");
    t.retry().args(&args).args(counted(1)).assert().code(1);
    std::thread::sleep(Duration::from_millis(150));
    let mut trial_args = args.clone();
    // (The Redis store's trial lease is shortened to 1s here; the file
    // store takes no lease.)
    trial_args.extend(s(&["--store-lease", "1s", "sh", "-c", "touch started; sleep 30"]));
    let mut trial = spawn_with(t, &trial_args, &[]);
    t.wait_for("started");
    kill(trial.id(), libc::SIGKILL);
    wait_exit(&mut trial);
    let killed = Instant::now();
    // The dead trial's lock is gone at once (file store), or its lease runs
    // out (Redis): then this run is the next trial, and closes the circuit.
    loop {
        let out = t.retry().args(&args).args(counted(0)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(0) {
            assert!(stderr.contains("this run is the trial"), "{stderr}");
            break;
        }
        assert_eq!(out.status.code(), Some(75), "{stderr}");
        assert!(stderr.contains("a trial run is in progress"), "{stderr}");
        assert!(b.is_redis(), "the file store's trial lock died with its holder");
        assert!(killed.elapsed() < Duration::from_secs(4), "the dead trial's lease never ran out");
        std::thread::sleep(Duration::from_millis(50));
    }
    t.retry().args(&args).args(counted(0)).assert().success().stderr("");
}

fn a_run_ended_by_a_signal_does_not_count_towards_the_circuit(t: &T, b: &Backend) {
    let mut args = circuit(b, "api", "1", "1h");
    args.extend(s(&["sh", "-c", "touch started; sleep 30"]));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = t.spawn(&args_ref);
    t.wait_for("started");
    kill(child.id(), libc::SIGTERM);
    wait_exit(&mut child);
    t.retry().args(circuit(b, "api", "1", "1h")).args(counted(0)).assert().success();
}

/// Spawns `n` retry processes with `args` at once and waits for them all;
/// returns their exit codes.
fn crowd(t: &T, n: usize, args: &[String]) -> Vec<Option<i32>> {
    crowd_output(t, n, args).into_iter().map(|(code, _)| code).collect()
}

/// Like `crowd`, with each process's stdout.
fn crowd_output(t: &T, n: usize, args: &[String]) -> Vec<(Option<i32>, String)> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            let mut cmd = StdCommand::new(bin());
            cmd.env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", t.dir.path())
                .env("TMPDIR", t.path("tmp"))
                .env("RETRY_TEST_MARKER", &t.marker)
                .current_dir(t.dir.path())
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            if !matches!(out.status.code(), Some(1)) {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            }
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .collect()
}

fn a_hundred_concurrent_runs_on_one_key_lose_no_count_and_respect_rate_and_concurrency(t: &T, b: &Backend) {
    let mut args = b.args("crowd");
    args.extend(s(&["--circuit-break", "100", "--circuit-cooldown", "1h", "--rate", "100/1h", "-n", "0"]));
    args.extend(s(&["--concurrency", "10"]));
    args.extend(s(&[
        "sh",
        "-c",
        "echo \"s $(date +%s%N)\" >> events; sleep 0.02; echo \"e $(date +%s%N)\" >> events; \
         echo run >> count; exit 1",
    ]));
    let codes = crowd(t, 100, &args);
    assert!(codes.iter().all(|c| *c == Some(1)), "{codes:?}");
    assert_eq!(t.runs("count"), 100, "the children counted themselves");
    assert!(most_at_once(t) <= 10, "{} attempts ran at once", most_at_once(t));
    // The circuit counted every one of them: exactly 100.
    t.retry()
        .args(b.args("crowd"))
        .args(["--circuit-break", "100", "--circuit-cooldown", "1h"])
        .args(counted(0))
        .assert()
        .code(75)
        .stderr(predicate::str::contains("after 100 failed runs"));
    // And the rate limit every start: 100 of 100 used, one more fits in 101.
    t.retry()
        .args(b.args("crowd"))
        .args(["--rate", "100/1h", "--max-time", "300ms"])
        .args(counted(0))
        .assert()
        .code(124)
        .stderr(predicate::str::contains("before any attempt could start"));
    t.retry().args(b.args("crowd")).args(["--rate", "101/1h"]).args(counted(0)).assert().success();
    assert_eq!(t.runs("count"), 101);
}

/// The most attempts that ran at once, from the `s`/`e` lines of `events`.
fn most_at_once(t: &T) -> i32 {
    let mut events: Vec<(i128, i32)> = times(t, "events", "s ").into_iter().map(|t| (t, 1)).collect();
    events.extend(times(t, "events", "e ").into_iter().map(|t| (t, -1)));
    // Ends before starts at the same instant.
    events.sort_unstable();
    let (mut running, mut most) = (0, 0);
    for (_, d) in events {
        running += d;
        most = most.max(running);
    }
    most
}

/// Nanosecond timestamps from `date +%s%N` lines, sorted.
fn times(t: &T, file: &str, prefix: &str) -> Vec<i128> {
    let mut v: Vec<i128> = t
        .lines(file)
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|n| n.trim().parse().unwrap())
        .collect();
    v.sort_unstable();
    v
}

fn rate_limit_holds_as_a_sliding_window_across_processes(t: &T, b: &Backend) {
    let mut args = b.args("rate");
    // Splay and short waits make the processes ask at scattered times.
    args.extend(s(&["--rate", "4/500ms", "-n", "2", "--wait", "70ms", "--splay", "300ms"]));
    // Each attempt is `date` itself (no shell, so it reads the clock right
    // after its exec) and fails validation, so all of them print.
    args.extend(s(&["--until-match", "^never$", "--stdout", "live", "date", "+%s%N"]));
    let started = Instant::now();
    let outs = crowd_output(t, 4, &args);
    assert!(outs.iter().all(|(c, _)| *c == Some(1)), "{outs:?}");
    let mut starts: Vec<i128> =
        outs.iter().flat_map(|(_, out)| out.lines().map(|l| l.trim().parse::<i128>().unwrap())).collect();
    starts.sort_unstable();
    assert_eq!(starts.len(), 12);
    // The children read the clock a little after retry recorded the start,
    // by a spawn's latency that varies (more on a loaded machine): allow
    // 100 ms of it. A token bucket would put 8 starts within a few ms.
    let window = 500_000_000i128;
    let slack = 100_000_000i128;
    for w in starts.windows(5) {
        assert!(w[4] - w[0] >= window - slack, "5 starts within {} ms", (w[4] - w[0]) / 1_000_000);
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "12 starts at 4 per 500ms take 2 windows");
}

fn concurrency_never_exceeds_n_across_processes(t: &T, b: &Backend) {
    let mut args = b.args("conc");
    args.extend(s(&["--concurrency", "2", "-n", "1", "--wait", "0"]));
    args.extend(s(&[
        "sh",
        "-c",
        "echo \"s $(date +%s%N)\" >> events; sleep 0.05; echo \"e $(date +%s%N)\" >> events; exit 1",
    ]));
    let codes = crowd(t, 8, &args);
    assert!(codes.iter().all(|c| *c == Some(1)), "{codes:?}");
    assert_eq!(t.lines("events").len(), 32);
    let most = most_at_once(t);
    assert!(most <= 2, "{most} attempts ran at once");
}

/// A slot of a SIGKILLed holder is free at once on the file store (the lock
/// dies with the process) and within the 10 s lease on Redis.
fn a_slot_is_free_during_the_backoff_sleep_and_soon_after_sigkill(t: &T, b: &Backend) {
    let mut args = b.args("slot");
    args.extend(s(&["--concurrency", "1", "-n", "1", "--wait", "30s"]));
    args.extend(s(&["sh", "-c", "touch started; exit 1"]));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sleeper = t.spawn(&args_ref);
    t.wait_for("started");
    std::thread::sleep(Duration::from_millis(100));
    t.retry()
        .args(b.args("slot"))
        .args(["--concurrency", "1", "--max-time", "5s", "true"])
        .assert()
        .success();
    kill(sleeper.id(), libc::SIGKILL);
    wait_exit(&mut sleeper);

    let mut args = b.args("slot");
    args.extend(s(&["--concurrency", "1", "sh", "-c", "touch holding; sleep 30"]));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut holder = t.spawn(&args_ref);
    t.wait_for("holding");
    // Held: another attempt waits, here until --max-time.
    t.retry()
        .args(b.args("slot"))
        .args(["--concurrency", "1", "--max-time", "300ms"])
        .args(counted(0))
        .assert()
        .code(124);
    assert_eq!(t.runs("count"), 0);
    kill(holder.id(), libc::SIGKILL);
    wait_exit(&mut holder);
    let start = Instant::now();
    t.retry()
        .args(b.args("slot"))
        .args(["--concurrency", "1", "--max-time", "20s"])
        .args(counted(0))
        .assert()
        .success();
    if b.is_redis() {
        // The lease ends at most 10 s after its last renewal, which came
        // before the kill.
        assert!(start.elapsed() < Duration::from_secs(11), "the dead holder's lease did not run out");
    } else {
        assert!(start.elapsed() < Duration::from_secs(2), "the dead holder's slot was free at once");
    }
}

fn a_rate_wait_is_interrupted_by_a_signal(t: &T, b: &Backend) {
    t.retry().args(b.args("r")).args(["--rate", "1/1h", "true"]).assert().success();
    let mut args = b.args("r");
    args.extend(s(&["-v", "--rate", "1/1h", "true"]));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut waiter = t.spawn(&args_ref);
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    kill(waiter.id(), libc::SIGTERM);
    let status = wait_exit(&mut waiter);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(stderr_of(waiter).contains("attempt 1 waits 1h for its --rate turn"), "-v says why it waits");
}

fn a_rate_wait_past_max_time_ends_with_the_last_attempts_status(t: &T, b: &Backend) {
    let start = Instant::now();
    t.retry()
        .args(b.args("r"))
        .args(["--rate", "1/1h", "-n", "3", "--wait", "0", "--max-time", "20s"])
        .args(counted(3))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--max-time reached; last attempt: exit status 3"));
    assert!(start.elapsed() < Duration::from_secs(5), "a wait past the budget is not taken");
    assert_eq!(t.runs("count"), 1);
}

#[test]
fn an_unsafe_store_directory_is_refused_even_with_store_optional() {
    let t = T::new();
    let dir = t.path("store");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    for optional in [false, true] {
        let mut cmd = t.retry();
        cmd.args(store_args(&t, "k")).args(["--rate", "5/1s"]);
        if optional {
            cmd.arg("--store-optional");
        }
        cmd.args(counted(0))
            .assert()
            .code(125)
            .stderr(predicate::str::contains("is group- or world-writable (mode 0777): refusing to use it"));
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Owned by someone else (the tests run as root: chown to nobody).
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        t.retry()
            .args(store_args(&t, "k"))
            .args(["--rate", "5/1s", "--store-optional"])
            .args(counted(0))
            .assert()
            .code(125)
            .stderr(predicate::str::contains(
                "is owned by uid 65534, not by you (uid 0): refusing to use it",
            ));
    }
    assert_eq!(t.runs("count"), 0);
}

#[test]
fn the_default_store_is_created_0700_under_xdg_state_home_or_home() {
    let t = T::new();
    t.retry().args(["--key", "k", "--rate", "5/1s", "true"]).assert().success();
    let dir = t.path(".local/state/retry");
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    assert!(dir.join("k.state").exists());
    t.retry()
        .env("XDG_STATE_HOME", t.path("xdg"))
        .args(["--key", "k", "--rate", "5/1s", "true"])
        .assert()
        .success();
    assert!(t.path("xdg/retry/k.state").exists());
    t.retry()
        .env("RETRY_STATE_STORE", format!("file:{}", path_str(&t.path("env"))))
        .args(["--key", "k", "--rate", "5/1s", "true"])
        .assert()
        .success();
    assert!(t.path("env/k.state").exists());
}

#[test]
fn keys_that_could_leave_the_directory_are_usage_errors() {
    let t = T::new();
    for key in ["a/b", "..", "../x", ".", ".hidden", "", "a b"] {
        t.retry()
            .args(["--key", key, "--rate", "5/1s", "--state-store", "file:store"])
            .args(counted(0))
            .assert()
            .code(125)
            .stderr(predicate::str::contains("for '--key <NAME>'"));
    }
    assert_eq!(t.runs("count"), 0);
    assert!(!t.path("store").exists());
}

#[test]
fn bad_option_values_are_usage_errors() {
    let t = T::new();
    for rate in ["10", "x/1s", "0/1s", "10001/1s", "5/0s", "5/x", "/1s", "-1/1s", "1.5/1s"] {
        t.retry().args(["--key", "k", "--rate", rate, "true"]).assert().code(125).stderr(
            predicate::str::starts_with(format!("retry: invalid value '{rate}' for '--rate <N/DURATION>'")),
        );
    }
    for (args, says) in [
        (&["--rate", "5/1s"][..], "--rate needs --key NAME"),
        (&["--circuit-break", "3"], "--circuit-break needs --key NAME"),
        (&["--concurrency", "3"], "--concurrency needs --key NAME"),
        (&["--key", "k", "--circuit-cooldown", "1m"], "--circuit-cooldown needs --circuit-break"),
        (&["--key", "k", "--circuit-break", "0"], "invalid value '0' for '--circuit-break <N>'"),
        (&["--key", "k", "--concurrency", "1001"], "invalid value '1001' for '--concurrency <N>'"),
        (&["--key", "k", "--rate", "1/s", "--state-store", "/tmp/x"], "unknown kind of store"),
        (&["--key", "k", "--rate", "1/s", "--state-store", "file:"], "the directory is missing"),
    ] {
        t.retry().args(args).arg("true").assert().code(125).stderr(predicate::str::contains(says));
    }
}

#[test]
fn a_redis_url_is_parsed_and_its_password_never_shown() {
    let t = T::new();
    for (url, says) in [
        ("rediss://app:hunter2@cache:6380,/2", "the host is missing"),
        ("rediss://app:hunter2@cache:port/2", "'port' is not a port"),
        ("redis://app:hunter2@cache#jobs", "a #NAME names a queue"),
        ("redis://app:hunter2@cache/x", "'/x' is not a database number"),
    ] {
        let out = t
            .retry()
            .args(["--key", "k", "--rate", "1/s", "--state-store", url, "true"])
            .assert()
            .code(125)
            .stderr(predicate::str::contains(says))
            .get_output()
            .stderr
            .clone();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("hunter2") && text.contains("app:***@cache"), "{text}");
    }
    t.retry()
        .env("RETRY_STATE_STORE", "redis://:hunter2@cache:0")
        .args(["--key", "k", "--rate", "1/s", "true"])
        .assert()
        .code(125)
        .stderr(
            predicate::str::contains("for 'RETRY_STATE_STORE': '0' is not a port")
                .and(predicate::str::contains("hunter2").not()),
        );
}

#[test]
fn a_corrupt_state_file_is_reported_and_reset() {
    let t = T::new();
    let state = t.path("store/k.state");
    // A real state file (one start recorded), cut short; then garbage.
    t.retry().args(store_args(&t, "k")).args(["--rate", "5/1h", "true"]).assert().success();
    let mut bytes = std::fs::read(&state).unwrap();
    bytes.truncate(bytes.len() - 3);
    for garbage in [bytes, b"{\"failures\": 7".to_vec()] {
        std::fs::write(&state, garbage).unwrap();
        t.retry()
            .args(circuit(&Backend::file(&t), "k", "1", "1h"))
            .args(counted(0))
            .assert()
            .success()
            .stderr(predicate::str::is_match(r"^retry: warning: state store 'file:.*': state file '.*/k.state' was corrupt \([^)]+\); it was reset\n$").unwrap());
        // Reset to a valid, empty state: the next run has nothing to say.
        t.retry()
            .args(circuit(&Backend::file(&t), "k", "1", "1h"))
            .args(counted(0))
            .assert()
            .success()
            .stderr("");
    }
    assert_eq!(t.runs("count"), 4);
}

#[test]
fn an_unusable_store_is_125_with_store_error_unless_store_optional() {
    let t = T::new();
    std::fs::write(t.path("file"), "").unwrap();
    let url = format!("file:{}/sub", path_str(&t.path("file")));
    let out = t
        .retry()
        .args(["--log-format", "json", "--key", "k", "--rate", "5/1s", "--state-store", &url])
        .args(counted(0))
        .assert()
        .code(125)
        .get_output()
        .stderr
        .clone();
    let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(line["event"], "store_error");
    assert!(line["message"].as_str().unwrap().contains("cannot create the directory"), "{line}");
    // -q still says why retry exits 125.
    t.retry()
        .args(["-q", "--key", "k", "--rate", "5/1s", "--state-store", &url])
        .args(counted(0))
        .assert()
        .code(125)
        .stderr(predicate::str::contains("cannot create the directory"));
    assert_eq!(t.runs("count"), 0);
    t.retry()
        .args(["--key", "k", "--rate", "5/1s", "--store-optional", "--state-store", &url])
        .args(counted(0))
        .assert()
        .success()
        .stderr(
            predicate::str::contains("retry: warning: ")
                .and(predicate::str::contains("running without coordination")),
        );
    assert_eq!(t.runs("count"), 1);
}
