//! `--summary FILE`: a JSON document written atomically at the end of every
//! run (success, exhausted, stop rule, --max-time, spawn failure, signal,
//! retry's own error), with no temp file left beside it; a directory that
//! does not exist is a usage error before anything runs.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt as _;

use serde_json::Value;

use crate::util::*;

fn fail_times(t: &T, n: u32, code: u32) -> Vec<String> {
    s(&[path_str(&fixture("fail-times.sh")), path_str(&t.path("count")), &n.to_string(), &code.to_string()])
}

/// The summary in the sandbox's `out/` directory, after checking that
/// nothing else (no temp file) is there.
fn summary(t: &T) -> Value {
    let names: Vec<String> = std::fs::read_dir(t.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["s.json"], "only the summary is left in its directory");
    let text = std::fs::read_to_string(t.path("out/s.json")).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn target(t: &T) -> String {
    std::fs::create_dir_all(t.path("out")).unwrap();
    path_str(&t.path("out/s.json")).to_string()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// `2026-11-23T11:52:38.984Z`
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn summary_of_a_success_after_retries() {
    let t = T::new();
    let file = target(&t);
    t.retry()
        .args(["-n", "4", "--wait", "10ms", "--summary", &file])
        .args(fail_times(&t, 2, 7))
        .assert()
        .success();
    let doc = summary(&t);
    assert_eq!(
        keys(&doc),
        [
            "version",
            "command",
            "options",
            "started_at",
            "ended_at",
            "elapsed_ms",
            "outcome",
            "status",
            "signal",
            "flaky",
            "exit",
            "error",
            "attempt_count",
            "attempts_omitted",
            "attempts",
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["flaky"], true);
    assert_eq!(doc["exit"], Value::Null);
    assert_eq!(doc["command"], serde_json::json!(fail_times(&t, 2, 7)));
    assert_eq!(doc["outcome"], "success");
    assert_eq!(doc["status"], 0);
    assert_eq!(doc["signal"], Value::Null);
    assert_eq!(doc["error"], Value::Null);
    assert_eq!(doc["attempt_count"], 3);
    assert_eq!(doc["attempts_omitted"], 0);
    assert!(doc["elapsed_ms"].as_u64().unwrap() >= 30);
    assert!(is_rfc3339_utc(doc["started_at"].as_str().unwrap()), "{}", doc["started_at"]);
    assert!(is_rfc3339_utc(doc["ended_at"].as_str().unwrap()));
    let attempts = doc["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(
            keys(a),
            [
                "attempt",
                "started_at",
                "duration_ms",
                "status",
                "exit_code",
                "signal",
                "timed_out",
                "verdict",
                "reason",
                "delay_ms"
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(a["attempt"], i + 1);
        assert!(is_rfc3339_utc(a["started_at"].as_str().unwrap()), "{a}");
        assert!(a["duration_ms"].is_u64());
    }
    assert_eq!(attempts[0]["status"], 7);
    assert_eq!(attempts[0]["exit_code"], 7);
    assert_eq!(attempts[0]["verdict"], "retry");
    assert_eq!(attempts[0]["reason"], "exit status 7");
    assert_eq!(attempts[0]["delay_ms"], 10);
    assert_eq!(attempts[1]["delay_ms"], 20);
    assert_eq!(attempts[2]["verdict"], "success");
    assert_eq!(attempts[2]["delay_ms"], Value::Null);
    // Start times follow each other with the sleeps between them.
    let t0 = attempts[0]["started_at"].as_str().unwrap();
    let t2 = attempts[2]["started_at"].as_str().unwrap();
    assert!(t0 < t2, "{t0} {t2}");
}

#[test]
fn summary_lists_the_options_in_force_typed() {
    let t = T::new();
    let file = target(&t);
    t.retry()
        .args(["-n", "0", "-t", "1.5s", "--kill-signal", "INT", "--algo", "fibonacci", "-w", "2s"])
        .args([
            "--retry-on-exit",
            "7,75-78",
            "--retry-on-exit",
            "1",
            "--until-match",
            "ok",
            "--jitter",
            "equal",
        ])
        .args(["--stdin", "replay", "--summary", &file, "echo", "ok"])
        .assert()
        .success();
    let o = &summary(&t)["options"];
    assert_eq!(o["retries"], 0);
    assert_eq!(o["forever"], false);
    assert_eq!(o["timeout_ms"], 1500);
    assert_eq!(o["kill_after_ms"], 10_000);
    assert_eq!(o["kill_signal"], "SIGINT");
    assert_eq!(o["max_time_ms"], Value::Null);
    assert_eq!(o["algo"], "fibonacci");
    assert_eq!(o["wait_ms"], 2000);
    assert_eq!(o["multiplier"], 2.0);
    assert_eq!(o["max_wait_ms"], Value::Null);
    assert_eq!(o["jitter"], 0.5);
    assert_eq!(o["retry_on_exit"], "1,7,75-78");
    assert_eq!(o["until_match"], serde_json::json!(["ok"]));
    assert_eq!(o["until"], serde_json::json!([]));
    assert_eq!(o["stdout"], "final");
    assert_eq!(o["stdin"], "replay");
    assert_eq!(o["log_format"], "text");
    assert_eq!(o["verbosity"], "normal");
    assert_eq!(o["summary"], file.as_str());
}

#[test]
fn summary_when_attempts_are_exhausted_and_on_a_stop_rule() {
    let t = T::new();
    let file = target(&t);
    t.retry().args(["-n", "1", "-w", "1ms", "--summary", &file]).args(fail_times(&t, 9, 3)).assert().code(3);
    let doc = summary(&t);
    assert_eq!(doc["outcome"], "exhausted");
    assert_eq!(doc["status"], 3);
    assert_eq!(doc["attempt_count"], 2);

    let t = T::new();
    let file = target(&t);
    t.retry().args(["--stop-on-exit", "3", "--summary", &file]).args(fail_times(&t, 9, 3)).assert().code(3);
    let doc = summary(&t);
    assert_eq!(doc["outcome"], "stopped");
    assert_eq!(doc["attempts"][0]["verdict"], "stop");
}

#[test]
fn summary_at_max_time_and_on_a_spawn_failure() {
    let t = T::new();
    let file = target(&t);
    t.retry().args(["--max-time", "100ms", "--summary", &file, "sleep", "5"]).assert().code(124);
    let doc = summary(&t);
    assert_eq!(doc["outcome"], "deadline");
    assert_eq!(doc["status"], 124);
    assert_eq!(doc["attempts"][0]["timed_out"], true);

    let t = T::new();
    let file = target(&t);
    t.retry().args(["--summary", &file, "retry-test-no-such-command"]).assert().code(127);
    let doc = summary(&t);
    assert_eq!(doc["outcome"], "stopped");
    assert_eq!(doc["status"], 127);
    assert_eq!(doc["attempts"][0]["status"], 127);
    assert_eq!(doc["attempts"][0]["exit_code"], Value::Null);
}

#[test]
fn summary_is_written_before_retry_dies_of_the_signal_that_ended_a_sleep() {
    let t = T::new();
    let file = target(&t);
    let mut child =
        t.spawn(&["-n", "3", "--wait", "30s", "--summary", &file, "sh", "-c", "touch started; exit 1"]);
    t.wait_for("started");
    std::thread::sleep(std::time::Duration::from_millis(100));
    kill(child.id(), libc::SIGTERM);
    let status = wait_exit(&mut child);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "retry re-raised SIGTERM: {status:?}");
    let doc = summary(&t);
    assert_eq!(doc["outcome"], "interrupted");
    assert_eq!(doc["status"], 143);
    assert_eq!(doc["signal"], libc::SIGTERM);
    assert_eq!(doc["attempt_count"], 1);
    assert_eq!(doc["attempts"][0]["delay_ms"], 30_000);
}

#[test]
fn summary_of_an_attempt_interrupted_by_a_forwarded_signal() {
    let t = T::new();
    let file = target(&t);
    let dir = t.path("");
    let fx = fixture("trap-signal.sh");
    let mut child = t.spawn(&["-n", "5", "--summary", &file, path_str(&fx), path_str(&dir), "INT", "9"]);
    t.wait_for("started");
    kill(child.id(), libc::SIGINT);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(9));
    let doc = summary(&t);
    assert_eq!(doc["outcome"], "interrupted");
    assert_eq!(doc["status"], 9);
    assert_eq!(doc["signal"], libc::SIGINT);
    assert_eq!(doc["attempts"][0]["exit_code"], 9);
}

#[test]
fn summary_of_retrys_own_error() {
    let t = T::new();
    let file = target(&t);
    t.retry()
        .env("TMPDIR", t.path("missing"))
        .args(["--summary", &file, "--temp-state", "true"])
        .assert()
        .code(125);
    let doc = summary(&t);
    assert_eq!(doc["outcome"], "error");
    assert_eq!(doc["status"], 125);
    assert!(doc["error"].as_str().unwrap().contains("TMPDIR"), "{doc}");
    assert_eq!(doc["attempt_count"], 0);
}

#[test]
fn summary_replaces_an_existing_file() {
    let t = T::new();
    let file = target(&t);
    std::fs::write(&file, "old").unwrap();
    t.retry().args(["--summary", &file, "true"]).assert().success();
    assert_eq!(summary(&t)["outcome"], "success");
}

#[test]
fn summary_keeps_the_first_and_last_hundred_attempts_of_a_long_run() {
    let t = T::new();
    let file = target(&t);
    t.retry()
        .args(["--forever", "--wait", "0", "--summary", &file])
        .args(fail_times(&t, 249, 1))
        .assert()
        .success();
    let doc = summary(&t);
    assert_eq!(doc["attempt_count"], 250);
    assert_eq!(doc["attempts_omitted"], 50);
    let numbers: Vec<u64> =
        doc["attempts"].as_array().unwrap().iter().map(|a| a["attempt"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (1..=100).chain(151..=250).collect();
    assert_eq!(numbers, want);
    assert_eq!(doc["options"]["forever"], true);
    assert_eq!(doc["options"]["retries"], Value::Null);
}

#[test]
fn summary_into_a_missing_directory_is_a_usage_error_before_anything_runs() {
    let t = T::new();
    let missing = t.path("no/such/dir/s.json");
    t.retry().args(["--summary", path_str(&missing)]).args(fail_times(&t, 0, 0)).assert().code(125).stderr(
        predicates::str::starts_with(format!(
            "retry: invalid value '{}' for '--summary': directory '{}': No such file or directory",
            missing.display(),
            t.path("no/such/dir").display()
        )),
    );
    assert_eq!(t.runs("count"), 0, "nothing ran");
    // A directory given as FILE is refused too.
    t.retry().args(["--summary", path_str(&t.path(""))]).args(fail_times(&t, 0, 0)).assert().code(125);
    assert_eq!(t.runs("count"), 0);
}

#[test]
fn summary_in_the_current_directory() {
    let t = T::new();
    t.retry().args(["--summary", "s.json", "true"]).assert().success();
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(t.path("s.json")).unwrap()).unwrap();
    assert_eq!(doc["outcome"], "success");
}
