//! `--log-format json` and `--log-format github`: every line retry writes
//! on stderr is a JSON object with an `event` field (each event kind and
//! each outcome), and GitHub lines are escaped workflow commands without
//! the `retry: ` prefix.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt as _;

use serde_json::Value;

use crate::util::*;

fn fail_times(t: &T, n: u32, code: u32) -> Vec<String> {
    s(&[path_str(&fixture("fail-times.sh")), path_str(&t.path("count")), &n.to_string(), &code.to_string()])
}

/// Every stderr line, parsed; panics on a line that is not a JSON object
/// with a string `event`.
fn events(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            assert!(v["event"].is_string(), "no event field: {line}");
            v
        })
        .collect()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["event"].as_str().unwrap()).collect()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn json_run(t: &T, args: &[&str], command: &[String]) -> (Option<i32>, Vec<Value>) {
    let out = t.retry().args(["--log-format", "json"]).args(args).args(command).output().unwrap();
    (out.status.code(), events(&out.stderr))
}

// SPEC: every JSON event carries `ts`, the time it was written.
const ATTEMPT_FIELDS: [&str; 11] = [
    "event",
    "ts",
    "attempt",
    "status",
    "exit_code",
    "signal",
    "timed_out",
    "duration_ms",
    "verdict",
    "reason",
    "delay_ms",
];
const DONE_FIELDS: [&str; 7] = ["event", "ts", "outcome", "attempts", "status", "elapsed_ms", "flaky"];

#[test]
fn json_attempt_and_done_events_have_exactly_the_spec_fields() {
    let t = T::new();
    let (code, ev) = json_run(&t, &["-n", "3", "--wait", "10ms"], &fail_times(&t, 2, 7));
    assert_eq!(code, Some(0));
    assert_eq!(kinds(&ev), ["attempt", "attempt", "attempt", "done"]);
    for e in &ev[..3] {
        assert_eq!(keys(e), ATTEMPT_FIELDS.into_iter().collect(), "{e}");
    }
    assert_eq!(keys(&ev[3]), DONE_FIELDS.into_iter().collect());
    let first = &ev[0];
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["status"], 7);
    assert_eq!(first["exit_code"], 7);
    assert_eq!(first["signal"], Value::Null);
    assert_eq!(first["timed_out"], false);
    assert!(first["duration_ms"].is_u64());
    assert_eq!(first["verdict"], "retry");
    assert_eq!(first["reason"], "exit status 7");
    assert_eq!(first["delay_ms"], 10);
    assert_eq!(ev[1]["delay_ms"], 20);
    let success = &ev[2];
    assert_eq!(success["verdict"], "success");
    assert_eq!(success["status"], 0);
    assert_eq!(success["reason"], Value::Null);
    assert_eq!(success["delay_ms"], Value::Null);
    assert_eq!(ev[3]["outcome"], "success");
    assert_eq!(ev[3]["attempts"], 3);
    assert_eq!(ev[3]["status"], 0);
    assert_eq!(ev[3]["flaky"], true);
    assert!(ev[3]["elapsed_ms"].as_u64().unwrap() >= 30);
    // ts: RFC 3339, UTC, milliseconds, in the order the events were written.
    let ts: Vec<&str> = ev.iter().map(|e| e["ts"].as_str().unwrap()).collect();
    for t in &ts {
        assert!(t.len() == 24 && t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
        humantime::parse_rfc3339(t).unwrap();
    }
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
}

#[test]
fn json_success_on_the_first_attempt_still_reports_it() {
    let t = T::new();
    let (code, ev) = json_run(&t, &[], &s(&["true"]));
    assert_eq!(code, Some(0));
    assert_eq!(kinds(&ev), ["attempt", "done"]);
    assert_eq!(ev[1]["outcome"], "success");
}

#[test]
fn json_outcome_exhausted() {
    let t = T::new();
    let (code, ev) = json_run(&t, &["-n", "1", "--wait", "1ms"], &fail_times(&t, 9, 3));
    assert_eq!(code, Some(3));
    assert_eq!(kinds(&ev), ["attempt", "attempt", "done"]);
    // The last attempt's failure was retryable, but no attempt follows it.
    assert_eq!(ev[1]["verdict"], "retry");
    assert_eq!(ev[1]["delay_ms"], Value::Null);
    assert_eq!(ev[2]["outcome"], "exhausted");
    assert_eq!(ev[2]["status"], 3);
    assert_eq!(ev[2]["attempts"], 2);
}

#[test]
fn json_outcome_stopped_by_a_stop_rule() {
    let t = T::new();
    let (code, ev) = json_run(&t, &["--stop-on-exit", "4", "--wait", "1ms"], &fail_times(&t, 9, 4));
    assert_eq!(code, Some(4));
    assert_eq!(kinds(&ev), ["attempt", "done"]);
    assert_eq!(ev[0]["verdict"], "stop");
    assert!(ev[0]["reason"].as_str().unwrap().contains("--stop-on-exit"), "{}", ev[0]);
    assert_eq!(ev[1]["outcome"], "stopped");
}

#[test]
fn json_outcome_deadline() {
    let t = T::new();
    let (code, ev) = json_run(&t, &["--max-time", "300ms", "--wait", "1s"], &fail_times(&t, 9, 5));
    assert_eq!(code, Some(5));
    assert_eq!(kinds(&ev), ["attempt", "done"]);
    assert_eq!(ev[1]["outcome"], "deadline");
    // An attempt killed at --max-time: 124 and timed_out.
    let t = T::new();
    let (code, ev) = json_run(&t, &["--max-time", "100ms"], &s(&["sleep", "5"]));
    assert_eq!(code, Some(124));
    assert_eq!(ev[0]["timed_out"], true);
    assert_eq!(ev[0]["status"], 124);
    assert_eq!(ev[0]["exit_code"], Value::Null);
    assert_eq!(ev[1]["outcome"], "deadline");
}

#[test]
fn json_outcome_interrupted_names_the_signal() {
    let t = T::new();
    let mut child =
        t.spawn(&["--log-format", "json", "-n", "3", "--wait", "30s", "sh", "-c", "touch started; exit 1"]);
    t.wait_for("started");
    std::thread::sleep(std::time::Duration::from_millis(100));
    kill(child.id(), libc::SIGTERM);
    wait_exit(&mut child);
    let out = child.wait_with_output().unwrap();
    let ev = events(&out.stderr);
    assert_eq!(kinds(&ev), ["attempt", "done"]);
    assert_eq!(ev[1]["outcome"], "interrupted");
    assert_eq!(ev[1]["status"], 143);
    // The one extra field of done, only when a signal ended the run.
    assert_eq!(ev[1]["signal"], libc::SIGTERM);
}

#[test]
fn json_signal_death_of_an_attempt() {
    let t = T::new();
    let out =
        t.retry().args(["--log-format", "json", "-n", "0", "sh", "-c", "kill -USR1 $$"]).output().unwrap();
    // retry dies of the same signal, so a calling shell sees 128+N.
    assert_eq!(out.status.signal(), Some(libc::SIGUSR1));
    let ev = events(&out.stderr);
    assert_eq!(ev[0]["signal"], libc::SIGUSR1);
    assert_eq!(ev[0]["exit_code"], Value::Null);
    assert_eq!(ev[0]["status"], 128 + libc::SIGUSR1);
}

#[test]
fn json_verbose_adds_command_and_attempt_start() {
    let t = T::new();
    let (_, ev) = json_run(&t, &["-v", "-n", "1", "--wait", "1ms"], &fail_times(&t, 1, 1));
    assert_eq!(kinds(&ev), ["command", "attempt_start", "attempt", "attempt_start", "attempt", "done"]);
    assert_eq!(ev[0]["argv"][0], path_str(&fixture("fail-times.sh")));
    assert_eq!(ev[1]["attempt"], 1);
    assert_eq!(ev[3]["attempt"], 2);
}

#[test]
fn json_spawn_failure_is_an_error_event_then_attempt_and_done() {
    let t = T::new();
    let (code, ev) = json_run(&t, &[], &s(&["retry-test-no-such-command"]));
    assert_eq!(code, Some(127));
    assert_eq!(kinds(&ev), ["error", "attempt", "done"]);
    assert!(ev[0]["message"].as_str().unwrap().contains("command not found"));
    assert_eq!(ev[1]["status"], 127);
    assert_eq!(ev[1]["exit_code"], Value::Null);
    assert_eq!(ev[2]["outcome"], "stopped");
}

#[test]
fn json_warning_and_on_retry_failed_events() {
    let t = T::new();
    let (code, ev) = json_run(
        &t,
        &["-n", "1", "--wait", "1ms", "--algo", "decorrelated", "--jitter", "full", "--on-retry", "exit 3"],
        &fail_times(&t, 9, 1),
    );
    assert_eq!(code, Some(1));
    assert_eq!(kinds(&ev), ["warning", "attempt", "on_retry_failed", "attempt", "done"]);
    assert!(ev[0]["message"].as_str().unwrap().contains("--jitter"));
    assert_eq!(ev[2]["attempt"], 1);
    assert_eq!(ev[2]["status"], 3);
    assert_eq!(ev[2]["reason"], "exit status 3");
}

#[test]
fn json_run_time_error_is_an_error_event() {
    // A TMPDIR that does not exist for --temp-state: retry's own failure,
    // after parsing.
    let t = T::new();
    let out = t
        .retry()
        .env("TMPDIR", t.path("missing"))
        .args(["--log-format", "json", "--temp-state", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let ev = events(&out.stderr);
    assert_eq!(kinds(&ev), ["error"]);
    assert!(ev[0]["message"].as_str().unwrap().contains("TMPDIR"));
}

#[test]
fn json_quiet_prints_only_errors() {
    let t = T::new();
    let (_, ev) = json_run(&t, &["-q", "-n", "1", "--wait", "1ms"], &fail_times(&t, 9, 1));
    assert!(ev.is_empty(), "{ev:?}");
    let (_, ev) = json_run(&t, &["-q"], &s(&["retry-test-no-such-command"]));
    assert_eq!(kinds(&ev), ["error"]);
}

#[test]
fn json_usage_errors_stay_text() {
    let t = T::new();
    let out = t.retry().args(["--log-format", "json", "--wait", "5x", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("retry: invalid value '5x'"));
}

#[test]
fn json_child_stderr_passes_through_between_events() {
    let t = T::new();
    let out = t
        .retry()
        .args(["--log-format", "json", "-n", "1", "--wait", "1ms", "sh", "-c", "echo child-says >&2; exit 1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let (child, ours): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| *l == "child-says");
    assert_eq!(child.len(), 2);
    events(ours.join("\n").as_bytes());
}

#[test]
fn github_warns_per_failed_attempt_and_errors_once_when_giving_up() {
    let t = T::new();
    let out = t
        .retry()
        .args(["--log-format", "github", "-n", "2", "--wait", "10ms"])
        .args(fail_times(&t, 9, 7))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    // Each attempt's output is folded in a group (empty here), its
    // warning after the group.
    assert_eq!(
        lines[..9],
        [
            "::group::retry: attempt 1/3",
            "::endgroup::",
            "::warning::attempt 1/3 failed: exit status 7; retrying in 10ms",
            "::group::retry: attempt 2/3",
            "::endgroup::",
            "::warning::attempt 2/3 failed: exit status 7; retrying in 20ms",
            "::group::retry: attempt 3/3",
            "::endgroup::",
            "::warning::attempt 3/3 failed: exit status 7",
        ]
    );
    assert_eq!(lines.len(), 10, "{text}");
    assert!(lines[9].starts_with("::error::giving up after 3 attempts in "), "{}", lines[9]);
    assert!(lines[9].ends_with(": exit status 7"));
    assert!(!text.lines().any(|l| l.starts_with("retry: ")), "{text}");
}

#[test]
fn github_messages_are_escaped_as_workflow_command_data() {
    // A (?x) regex may hold a newline; `%` must not start an escape.
    let t = T::new();
    let out = t
        .retry()
        .args(["--log-format", "github", "-n", "1", "--wait", "1ms"])
        .args(["--retry-on-stderr", "(?x) 100% \n boom"])
        .args(["sh", "-c", "echo 100%boom >&2; exit 1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let warning = text.lines().find(|l| l.starts_with("::warning::")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        warning,
        "::warning::attempt 1/2 failed: exit status 1 (stderr matched '(?x) 100%25 %0A boom'); retrying in 1ms"
    );
    assert_eq!(text.lines().filter(|l| l.starts_with("::error::")).count(), 1);
}

#[test]
fn github_spawn_failure_and_success_after_retries() {
    let t = T::new();
    let out = t.retry().args(["--log-format", "github", "retry-test-no-such-command"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "::group::retry: attempt 1/4\n::endgroup::\n\
         ::error::cannot run 'retry-test-no-such-command': command not found\n"
    );
    // A success after retries is a notice: it was flaky.
    let t = T::new();
    let out = t
        .retry()
        .args(["--log-format", "github", "--wait", "1ms"])
        .args(fail_times(&t, 1, 1))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "::group::retry: attempt 1/4",
            "::endgroup::",
            "::warning::attempt 1/4 failed: exit status 1; retrying in 1ms"
        ],
        "{text}"
    );
    assert_eq!(lines[3..5], ["::group::retry: attempt 2/4", "::endgroup::"], "{text}");
    assert!(lines[5].starts_with("::notice::attempt 2/4 succeeded after 1 failure in "), "{text}");
    assert!(lines[5].ends_with(" (flaky)"), "{text}");
    assert_eq!(lines.len(), 6, "{text}");
}
