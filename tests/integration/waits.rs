//! Waits the server decides (`--wait-from`), alternatives before waiting
//! (`--rotate`), progress that does not use up the budget
//! (`--reset-on-progress`), signal rules, `--delays`, and the give-up
//! hooks (`--on-give-up`, `--on-dead`). Sleeps are checked through the
//! JSON `attempt` events (which say why each sleep was what it was), with
//! only orders of magnitude taken from the clock.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime};

use predicates::prelude::*;
use proptest::prelude::*;
use serde_json::Value;

use crate::util::*;

fn sh(script: &str) -> [String; 3] {
    ["sh".into(), "-c".into(), script.into()]
}

fn events(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn of_kind<'a>(ev: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["event"] == kind).collect()
}

/// Runs retry with `--log-format json`: exit status and events.
fn json_run(t: &T, args: &[&str], script: &str) -> (Option<i32>, Vec<Value>) {
    let out =
        t.retry().args(["--log-format", "json"]).args(args).arg("--").args(sh(script)).output().unwrap();
    (out.status.code(), events(&out.stderr))
}

/// The `delay_ms` of each attempt event (`None` where no sleep followed).
fn delays(ev: &[Value]) -> Vec<Option<u64>> {
    of_kind(ev, "attempt").iter().map(|e| e["delay_ms"].as_u64()).collect()
}

// ------------------------------------------------------------ --wait-from

/// An HTTP server that answers the first request 429 with `Retry-After: 1`
/// and the next ones 200 `ok`; returns its port.
fn rate_limited_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|k| k > 0) && line != "\r\n" {
                line.clear();
            }
            let reply = if n == 0 {
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    port
}

#[test]
fn curl_waits_as_long_as_retry_after_says() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let t = T::new();
    let port = rate_limited_server();
    let start = Instant::now();
    let out = t
        .retry()
        .args([
            "-n",
            "3",
            "--wait",
            "10ms",
            "--log-format",
            "json",
            "--wait-from",
            r"(?i)^retry-after:\s*(.+)$",
        ])
        .args(["--", "curl", "-fsS", "-D", "/dev/stderr", &format!("http://127.0.0.1:{port}/")])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"ok\n");
    let ev = events(&out.stderr);
    let first = of_kind(&ev, "attempt")[0];
    assert_eq!((first["status"].as_u64(), first["hint_ms"].as_u64()), (Some(22), Some(1000)), "{first}");
    assert_eq!(first["delay_ms"], first["hint_ms"]);
    // It slept the server's second, not the schedule's 10ms (nor 10 s).
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn hints_in_every_grammar_set_the_sleep_exactly() {
    let t = T::new();
    let past_http = "Sun, 06 Nov 1994 08:49:37 GMT";
    let past_rfc = "2001-02-03T04:05:06Z";
    let soon = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(2)).to_string();
    for (hint, low, high) in [
        ("0.2", 200, 200),
        ("150ms", 150, 150),
        (past_http, 0, 0),
        (past_rfc, 0, 0),
        ("1000000001", 0, 0),
        (&*soon, 1000, 2000),
    ] {
        let script = format!("[ \"$RETRY_ATTEMPT\" = 2 ] && exit 0; echo 'wait: {hint}' >&2; exit 1");
        let (code, ev) = json_run(
            &t,
            &["-n", "1", "--wait", "5s", "--max-wait", "10ms", "--wait-from", "^wait: (.+)$"],
            &script,
        );
        assert_eq!(code, Some(0), "{hint}");
        let a = of_kind(&ev, "attempt")[0];
        let ms = a["hint_ms"].as_u64().unwrap_or_else(|| panic!("{hint}: {a}"));
        assert!((low..=high).contains(&ms), "{hint}: {ms} not in {low}..={high}");
        assert_eq!(a["delay_ms"], a["hint_ms"], "no jitter, no --max-wait cap");
    }
}

#[test]
fn an_unreadable_hint_is_reported_and_the_schedule_decides() {
    let t = T::new();
    let (code, ev) = json_run(
        &t,
        &["-n", "1", "--wait", "20ms", "--wait-from", "^wait: (.+)$"],
        "[ \"$RETRY_ATTEMPT\" = 2 ] && exit 0; echo 'wait: soonish' >&2; exit 1",
    );
    assert_eq!(code, Some(0));
    let unreadable = of_kind(&ev, "hint_unreadable");
    assert_eq!(unreadable.len(), 1, "{ev:?}");
    assert_eq!(
        (unreadable[0]["attempt"].as_u64(), unreadable[0]["text"].as_str()),
        (Some(1), Some("soonish"))
    );
    let a = of_kind(&ev, "attempt")[0];
    assert_eq!((a["delay_ms"].as_u64(), a.get("hint_ms")), (Some(20), None));
    // In text, with -v.
    t.retry()
        .args([
            "-v",
            "-n",
            "0",
            "--wait-from",
            "^wait: (.+)$",
            "--",
            "sh",
            "-c",
            "echo 'wait: soonish' >&2; exit 1",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot read 'soonish' as a wait (--wait-from)"));
}

#[test]
fn a_hint_past_max_time_ends_the_run_at_once_and_a_queued_job_is_due_then() {
    let t = T::new();
    let start = Instant::now();
    let (code, ev) = json_run(
        &t,
        &["-n", "5", "--max-time", "5s", "--wait-from", "^wait: (.+)$"],
        "echo 'wait: 60' >&2; exit 3",
    );
    assert!(start.elapsed() < Duration::from_secs(4), "it did not sleep into the deadline");
    assert_eq!(code, Some(3));
    assert_eq!(of_kind(&ev, "attempt").len(), 1);
    assert_eq!(of_kind(&ev, "done")[0]["outcome"], "deadline");
    // --queue: due at the hinted moment, not by the schedule.
    let q = t.path("q");
    let (code, ev) = json_run(
        &t,
        &["-n", "0", "--wait", "1s", "--queue", path_str(&q), "--wait-from", "^wait: (.+)$"],
        "echo 'wait: 1h' >&2; exit 3",
    );
    assert_eq!(code, Some(75));
    let due = humantime::parse_rfc3339(of_kind(&ev, "queued")[0]["next_due"].as_str().unwrap()).unwrap();
    let left = due.duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600), "{left:?}");
}

#[test]
fn a_hint_alone_does_not_make_a_failure_retryable() {
    let t = T::new();
    let (code, ev) = json_run(
        &t,
        &["-n", "3", "--retry-on-exit", "7", "--wait-from", "^wait: (.+)$"],
        "echo 'wait: 10ms' >&2; exit 3",
    );
    assert_eq!(code, Some(3));
    assert_eq!(of_kind(&ev, "attempt").len(), 1);
}

// ------------------------------------------------------------ --rotate

#[test]
fn rotation_tries_each_value_back_to_back_then_backs_off() {
    let t = T::new();
    let (code, ev) = json_run(
        &t,
        &["-n", "5", "--wait", "40ms", "--rotate", "MIRROR=a,b,c", "--rotate", "PORT=1,2,3"],
        "echo \"$MIRROR:$PORT\" >> tried; exit 1",
    );
    assert_eq!(code, Some(1));
    assert_eq!(t.lines("tried"), ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3"]);
    // One schedule step per cycle: 40ms after the first cycle; none inside.
    assert_eq!(delays(&ev), [Some(0), Some(0), Some(40), Some(0), Some(0), None]);
    // --dry-run shows which value each attempt gets.
    t.retry()
        .args(["--dry-run", "-n", "3", "--wait", "1s", "--rotate", "M=a,b"])
        .assert()
        .success()
        .stdout("attempt  sleep before  at  M\n      1           0ms  0ms  a\n      2           0ms  0ms  b\n      3            1s  1s  a\n      4           0ms  1s  b\n");
    t.retry()
        .args(["--rotate", "A=1,2", "--rotate", "B=1", "true"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("--rotate"));
}

#[test]
fn a_queued_job_continues_its_rotation() {
    let t = T::new();
    let q = path_str(&t.path("q")).to_string();
    t.retry()
        .args(["-n", "0", "--wait", "0", "--rotate", "M=a,b,c", "--queue", &q, "--"])
        .args(sh("echo \"$M\" >> tried; [ \"$M\" = c ]"))
        .assert()
        .code(75);
    // Each drain makes one attempt with the next value; inside the cycle
    // the job is due at once.
    t.retry().args(["--drain", &q]).assert().code(75);
    t.retry().args(["--drain", &q]).assert().code(0);
    assert_eq!(t.lines("tried"), ["a", "b", "c"]);
}

// ------------------------------------------------------------ --reset-on-progress

#[test]
fn attempts_that_make_progress_do_not_use_up_the_budget() {
    let t = T::new();
    // Attempts 1-3 get further (append to the state dir), 4 and 5 do not.
    let script = "echo \"$RETRY_ATTEMPT\" >> ran; \
                  [ \"$RETRY_ATTEMPT\" -le 3 ] && echo part >> \"$RETRY_STATE_DIR/progress\"; exit 1";
    let (code, ev) =
        json_run(&t, &["-n", "1", "--wait", "10ms", "--temp-state", "--reset-on-progress"], script);
    assert_eq!(code, Some(1));
    assert_eq!(t.lines("ran"), ["1", "2", "3", "4", "5"], "-n 1 counts the two attempts without progress");
    let attempts = of_kind(&ev, "attempt");
    let progress: Vec<_> = attempts.iter().map(|a| a["progress"].as_bool().unwrap()).collect();
    assert_eq!(progress, [true, true, true, false, false]);
    // After progress the schedule starts over (d_1); then it grows.
    assert_eq!(delays(&ev), [Some(10), Some(10), Some(10), Some(20), None]);
    // It needs a state dir.
    t.retry()
        .args(["--reset-on-progress", "true"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("--temp-state or --state-dir"));
    t.retry()
        .args(["--reset-on-progress", "--temp-state", "--queue", "redis://127.0.0.1:1#q", "true"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("--state-dir"));
}

// ------------------------------------------------------------ signal rules

#[test]
fn signal_rules_tell_a_death_by_signal_from_an_exit_status() {
    let t = T::new();
    // retry re-raises the signal its last attempt died of.
    let died_of = |args: &[&str], script: &str| {
        let out = t.retry().args(args).arg("--").args(sh(script)).output().unwrap();
        let signal = std::os::unix::process::ExitStatusExt::signal(&out.status);
        (signal, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let killed = "echo run >> runs; kill -9 $$";
    let exited = "echo run >> exits; exit 137";
    let rules = ["-n", "1", "--wait", "1ms", "--retry-on-signal", "KILL"];
    assert_eq!(died_of(&rules, killed).0, Some(9));
    assert_eq!(t.runs("runs"), 2, "a SIGKILL death is retried");
    t.retry().args(rules).arg("--").args(sh(exited)).assert().code(137);
    assert_eq!(t.runs("exits"), 1, "an exit status of 137 is not a SIGKILL");
    // --stop-on-signal wins, and leaves exit 137 to the other rules.
    let stop = ["-n", "1", "--wait", "1ms", "--stop-on-signal", "9"];
    let (signal, stderr) = died_of(&stop, "echo run >> stopped; kill -9 $$");
    assert_eq!(signal, Some(9));
    assert!(stderr.contains("SIGKILL is in --stop-on-signal"), "{stderr}");
    assert_eq!(t.runs("stopped"), 1);
    t.retry().args(stop).arg("--").args(sh("echo run >> retried; exit 137")).assert().code(137);
    assert_eq!(t.runs("retried"), 2);
    // An attempt retry killed for --timeout is status 124, not a signal death.
    t.retry()
        .args([
            "-n",
            "1",
            "-t",
            "100ms",
            "--retry-on-signal",
            "TERM",
            "--",
            "sh",
            "-c",
            "echo run >> timed; sleep 5",
        ])
        .assert()
        .code(124);
    assert_eq!(t.runs("timed"), 1);
}

// ------------------------------------------------------------ --delays

#[test]
fn a_delay_list_repeats_its_last_item_capped_and_jittered() {
    let t = T::new();
    let (code, ev) = json_run(&t, &["-n", "3", "--delays", "10ms,30ms"], "exit 1");
    assert_eq!(code, Some(1));
    assert_eq!(delays(&ev), [Some(10), Some(30), Some(30), None]);
    let (_, ev) = json_run(&t, &["-n", "3", "--delays", "10ms,30ms", "--max-wait", "20ms"], "exit 1");
    assert_eq!(delays(&ev), [Some(10), Some(20), Some(20), None]);
    let (_, ev) =
        json_run(&t, &["-n", "3", "--delays", "10ms,30ms", "--jitter", "full", "--seed", "4"], "exit 1");
    let got = delays(&ev);
    assert!(got[..3].iter().zip([10, 30, 30]).all(|(d, max)| d.unwrap() <= max), "{got:?}");
    t.retry().args(["--delays", "1s", "--wait", "2s", "true"]).assert().code(125);
    t.retry()
        .args(["--delays", "1s,x", "true"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("--delays"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// For any --delays/--rotate combination, --dry-run shows the sleeps a
    /// real run takes under the same --seed.
    #[test]
    fn dry_run_sleeps_equal_the_real_runs(
        list in proptest::collection::vec(0u64..25, 1..4),
        values in 1usize..4,
        retries in 1u32..5,
        jitter in prop_oneof![Just("0"), Just("0.5"), Just("full")],
        seed in 0u64..1000,
    ) {
        let t = T::new();
        let list = list.iter().map(|ms| format!("{ms}ms")).collect::<Vec<_>>().join(",");
        let rotate = format!("V={}", (0..values).map(|v| v.to_string()).collect::<Vec<_>>().join(","));
        let n = retries.to_string();
        let seed = seed.to_string();
        let args = ["-n", &n, "--delays", &list, "--rotate", &rotate, "--jitter", jitter, "--seed", &seed, "--log-format", "json"];
        let dry = t.retry().arg("--dry-run").args(args).output().unwrap();
        let planned: Vec<u64> = String::from_utf8_lossy(&dry.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["attempt"].as_u64() != Some(1))
            .map(|r| r["delay_ms"].as_u64().unwrap())
            .collect();
        let real = t.retry().args(args).args(["--", "false"]).output().unwrap();
        let slept: Vec<u64> = delays(&events(&real.stderr)).into_iter().flatten().collect();
        prop_assert_eq!(planned, slept);
    }
}

// ------------------------------------------------------------ hooks

#[test]
fn on_give_up_runs_once_with_the_outcome_and_never_changes_the_status() {
    let t = T::new();
    let hook = "echo \"$RETRY_OUTCOME $RETRY_ATTEMPT $RETRY_LAST_STATUS\" >> gave-up";
    t.retry()
        .args(["-n", "2", "--wait", "1ms", "--on-give-up", hook, "--", "sh", "-c", "exit 4"])
        .assert()
        .code(4);
    t.retry()
        .args(["-n", "2", "--stop-on-exit", "5", "--on-give-up", hook, "--", "sh", "-c", "exit 5"])
        .assert()
        .code(5);
    t.retry()
        .args([
            "--forever",
            "--wait",
            "50ms",
            "--max-time",
            "120ms",
            "--on-give-up",
            hook,
            "--",
            "sh",
            "-c",
            "exit 6",
        ])
        .assert()
        .code(6);
    assert_eq!(t.lines("gave-up").len(), 3);
    assert_eq!(t.lines("gave-up")[..2], ["exhausted 3 4", "stopped 1 5"]);
    assert!(t.lines("gave-up")[2].starts_with("deadline "), "{:?}", t.lines("gave-up"));
    // Not on success, nor when the job is queued.
    t.retry().args(["--on-give-up", hook, "true"]).assert().code(0);
    let q = path_str(&t.path("q")).to_string();
    t.retry().args(["-n", "0", "--queue", &q, "--on-give-up", hook, "false"]).assert().code(75);
    assert_eq!(t.lines("gave-up").len(), 3);
    // Its failure is logged; a hook over --timeout is ended.
    let start = Instant::now();
    t.retry()
        .args(["-n", "0", "-t", "200ms", "--on-give-up", "sleep 30", "--", "sh", "-c", "exit 3"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--on-give-up failed: timed out"));
    assert!(start.elapsed() < Duration::from_secs(20));
    t.retry()
        .args(["-n", "0", "--on-give-up", "exit 9", "--", "sh", "-c", "exit 3"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--on-give-up failed: exit status 9"));
}

#[test]
fn on_dead_tells_about_each_job_the_drain_buries() {
    let t = T::new();
    let q = path_str(&t.path("q")).to_string();
    t.retry()
        .args(["-n", "0", "--wait", "0", "--stop-on-exit", "5", "--queue", &q, "--"])
        .args(sh("[ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; exit 5"))
        .assert()
        .code(75);
    let hook = "printf '%s|%s|%s|%s|%s\\n' \"$RETRY_JOB_ID\" \"$RETRY_JOB_REASON\" \"$RETRY_JOB_ARGV\" \
                \"$RETRY_JOB_ATTEMPTS\" \"$RETRY_QUEUE\" >> dead; exit 2";
    t.retry()
        .args(["--drain", &q, "--on-dead", hook])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--on-dead failed: exit status 2"));
    let lines = t.lines("dead");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let f: Vec<&str> = lines[0].split('|').collect();
    let listed = t.retry().args(["--list", &q]).output().unwrap();
    let dead: Value = serde_json::from_slice(listed.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!((dead["state"].as_str(), dead["id"].as_str()), (Some("dead"), Some(f[0])));
    assert!(f[1].starts_with("permanent failure on attempt 2"), "{f:?}");
    let argv: Vec<String> = serde_json::from_str(f[2]).unwrap();
    assert_eq!(argv[0], "sh");
    assert_eq!((f[3], f[4]), ("2", q.as_str()));
    // Once per dead job: the next drain has nothing to bury.
    t.retry().args(["--drain", &q, "--on-dead", hook]).assert().code(0);
    assert_eq!(t.lines("dead").len(), 1);
    t.retry().args(["--on-dead", "true", "true"]).assert().code(125);
}
