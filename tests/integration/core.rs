//! The core engine: attempts, exit-status rules, backoff, timeouts,
//! --max-time, the RETRY_* environment, the state dir, exit statuses and
//! usage errors.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::util::*;

fn fail_times(t: &T, n: u32, code: u32) -> Vec<String> {
    s(&[path_str(&fixture("fail-times.sh")), path_str(&t.path("count")), &n.to_string(), &code.to_string()])
}

both_paths! {
    fn succeeds_after_failures_and_counts_each_run() {
        let t = T::new();
        t.retry().args(["-n", "5", "--wait", "10ms", "--"]).args(fail_times(&t, 2, 1)).assert().success();
        assert_eq!(t.runs("count"), 3);
    }
}

#[test]
fn gives_up_with_the_last_status_after_n_plus_one_attempts() {
    let t = T::new();
    t.retry()
        .args(["-n", "2", "--wait", "10ms"])
        .args(fail_times(&t, 99, 7))
        .assert()
        .code(7)
        .stderr(predicate::str::contains("retry: attempt 1/3 failed: exit status 7; retrying in 10ms"))
        .stderr(predicate::str::contains("retry: giving up after 3 attempts in"));
    assert_eq!(t.runs("count"), 3);
}

#[test]
fn retries_zero_runs_once_and_default_is_four_attempts() {
    let t = T::new();
    t.retry().args(["-n", "0"]).args(fail_times(&t, 99, 3)).assert().code(3);
    assert_eq!(t.runs("count"), 1);
    let t = T::new();
    t.retry().args(["--wait", "1ms"]).args(fail_times(&t, 99, 3)).assert().code(3);
    assert_eq!(t.runs("count"), 4);
}

#[test]
fn forever_retries_until_success() {
    let t = T::new();
    t.retry()
        .args(["--forever", "--wait", "1ms", "--max-wait", "2ms"])
        .args(fail_times(&t, 12, 1))
        .assert()
        .success();
    assert_eq!(t.runs("count"), 13);
}

#[test]
fn options_stop_at_the_first_word_of_the_command() {
    let t = T::new();
    t.retry().args(["-n", "0", "echo", "-n", "--wait", "-x"]).assert().success().stdout("--wait -x");
}

#[test]
fn stop_on_exit_makes_a_failure_permanent() {
    let t = T::new();
    t.retry()
        .args(["-n", "5", "--wait", "10ms", "--stop-on-exit", "3,75-78"])
        .args(fail_times(&t, 99, 77))
        .assert()
        .code(77)
        .stderr(predicate::str::contains("not retrying: status 77 is in --stop-on-exit"));
    assert_eq!(t.runs("count"), 1);
}

#[test]
fn retry_on_exit_retries_only_the_listed_statuses() {
    let t = T::new();
    t.retry()
        .args(["-n", "5", "--wait", "1ms", "--retry-on-exit", "1,75-78"])
        .args(fail_times(&t, 2, 76))
        .assert()
        .success();
    assert_eq!(t.runs("count"), 3);
    let t = T::new();
    t.retry()
        .args(["-n", "5", "--wait", "1ms", "--retry-on-exit", "1,75-78"])
        .args(fail_times(&t, 99, 4))
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no retry rule matched"));
    assert_eq!(t.runs("count"), 1);
}

#[test]
fn stop_rules_win_over_retry_rules() {
    let t = T::new();
    t.retry()
        .args(["-n", "5", "--wait", "1ms", "--retry-on-exit", "1-10", "--stop-on-exit", "5"])
        .args(fail_times(&t, 99, 5))
        .assert()
        .code(5);
    assert_eq!(t.runs("count"), 1);
}

both_paths! {
    fn stops_on_exit_127_without_retrying_when_command_is_missing() {
        let t = T::new();
        t.retry()
            .args(["-n", "5", "--wait", "1ms", "no-such-command-xyz"])
            .assert()
            .code(127)
            .stderr("retry: cannot run 'no-such-command-xyz': command not found\n");
        // -q still says why.
        t.retry()
            .args(["-q", "./missing"])
            .assert()
            .code(127)
            .stderr(predicate::str::contains("cannot run './missing'"));
    }
}

both_paths! {
    fn a_command_that_cannot_be_executed_is_126_and_not_retried() {
        let t = T::new();
        std::fs::write(t.path("noexec"), "#!/bin/sh\nexit 0\n").unwrap();
        t.retry()
            .args(["-n", "5", "--wait", "1ms", "./noexec"])
            .assert()
            .code(126)
            .stderr(predicate::str::contains("cannot execute './noexec': Permission denied"));
        t.retry().args(["-n", "5", "--wait", "1ms", "/"]).assert().code(126);
    }
}

both_paths! {
    fn a_script_without_shebang_runs_with_sh() {
        let t = T::new();
        std::fs::write(t.path("plain"), "echo from-sh\nexit 0\n").unwrap();
        std::fs::set_permissions(t.path("plain"), std::fs::Permissions::from_mode(0o755)).unwrap();
        t.retry().args(["./plain"]).assert().success().stdout("from-sh\n");
    }
}

both_paths! {
    fn a_child_that_itself_exits_127_is_retried() {
        let t = T::new();
        t.retry().args(["-n", "2", "--wait", "1ms"]).args(fail_times(&t, 1, 127)).assert().success();
        assert_eq!(t.runs("count"), 2);
    }
}

both_paths! {
    fn timeout_kills_the_attempt_counts_124_and_retries() {
        let t = T::new();
        let start = Instant::now();
        t.retry()
            .args(["-n", "1", "--wait", "10ms", "-t", "100ms", "sleep", "30"])
            .assert()
            .code(124)
            .stderr(predicate::str::contains("attempt 1/2 failed: timed out after 100ms; retrying in 10ms"));
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

both_paths! {
    fn timeout_ends_the_whole_process_tree_and_leaves_no_zombie() {
        let t = T::new();
        let dir = t.path("");
        t.retry()
            .args(["-n", "0", "-t", "300ms", "--kill-after", "200ms"])
            .arg(fixture("heartbeat-tree.sh"))
            .arg(&dir)
            .assert()
            .code(124);
        assert!(t.path("started").exists());
        let beats = std::fs::read_to_string(t.path("heartbeat")).unwrap().lines().count();
        std::thread::sleep(Duration::from_millis(200));
        let later = std::fs::read_to_string(t.path("heartbeat")).unwrap().lines().count();
        assert_eq!(beats, later, "the grandchild kept beating after the timeout");
        assert_eq!(t.live_processes(), Vec::<u32>::new());
        assert!(zombies_named("heartbeat-tree.").is_empty());
    }
}

both_paths! {
    fn a_child_ignoring_the_timeout_signal_is_killed_after_kill_after() {
        let t = T::new();
        let start = Instant::now();
        t.retry()
            .args(["-n", "0", "-t", "100ms", "--kill-after", "200ms"])
            .arg(fixture("ignore-signal.sh"))
            .arg(t.path(""))
            .arg("TERM")
            .assert()
            .code(124);
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(t.live_processes().is_empty());
    }
}

both_paths! {
    fn kill_signal_chooses_the_timeout_signal() {
        for sig in ["INT", "SIGINT", "2"] {
            let t = T::new();
            t.retry()
                .args(["-n", "0", "-t", "200ms", "--kill-signal", sig])
                .arg(fixture("trap-signal.sh"))
                .arg(t.path(""))
                .args(["INT", "0"])
                .assert()
                .code(124);
            assert!(t.path("got-INT").exists(), "{sig}");
        }
    }
}

both_paths! {
    fn max_time_kills_a_running_attempt_with_124() {
        let t = T::new();
        let start = Instant::now();
        t.retry()
            .args(["-n", "5", "--max-time", "300ms", "sleep", "30"])
            .assert()
            .code(124)
            .stderr(predicate::str::contains("killed at --max-time"));
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn max_time_skips_a_sleep_that_would_end_after_it() {
    let t = T::new();
    let start = Instant::now();
    t.retry()
        .args(["-n", "5", "--wait", "20s", "--max-time", "2s"])
        .args(fail_times(&t, 99, 3))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("not retrying: the next attempt would start after --max-time"))
        .stderr(predicate::str::contains("--max-time reached"));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(t.runs("count"), 1);
}

#[test]
fn max_time_before_any_attempt_is_124() {
    let t = T::new();
    t.retry()
        .args(["--splay", "10s", "--seed", "1", "--max-time", "1ms", "--log-format", "json"])
        .args(fail_times(&t, 0, 0))
        .assert()
        .code(124)
        .stderr(predicate::str::contains(r#""outcome":"deadline","attempts":0,"status":124"#));
    assert_eq!(t.runs("count"), 0);
}

#[test]
fn attempts_see_retry_variables_and_nested_values_win() {
    let t = T::new();
    let out = t.path("env");
    t.retry()
        .env("RETRY_ATTEMPT", "99")
        .env("RETRY_MAX_ATTEMPTS", "99")
        .args(["-n", "2", "--wait", "1ms", "--temp-state"])
        .arg(fixture("record-env.sh"))
        .arg(&out)
        .arg("7")
        .assert()
        .code(7);
    let lines = t.lines("env");
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("attempt=1 max=3 last= dir="), "{}", lines[0]);
    assert!(lines[1].starts_with("attempt=2 max=3 last=7 dir="), "{}", lines[1]);
    assert!(lines[2].starts_with("attempt=3 max=3 last=7 dir="), "{}", lines[2]);
    let dir = |l: &str| l.split("dir=").nth(1).unwrap().to_string();
    assert_eq!(dir(&lines[0]), dir(&lines[2]), "one state dir across the attempts");
    let state = std::path::PathBuf::from(dir(&lines[0]));
    assert!(state.file_name().unwrap().to_str().unwrap().starts_with("retry-"));
    assert!(!state.exists(), "the fresh state dir is removed at the end");
}

#[test]
fn forever_leaves_max_attempts_empty() {
    let t = T::new();
    t.retry()
        .args(["--forever", "--wait", "1ms", "--max-time", "2s", "sh", "-c"])
        .arg(format!("echo \"max=$RETRY_MAX_ATTEMPTS\" > {}; exit 0", t.path("env").display()))
        .assert()
        .success();
    assert_eq!(t.lines("env"), ["max="]);
}

#[test]
fn state_dir_is_created_0700_and_kept() {
    let t = T::new();
    let dir = t.path("state/sub");
    t.retry()
        .args(["-n", "1", "--wait", "1ms", "--state-dir"])
        .arg(&dir)
        .args(["sh", "-c", "echo $RETRY_ATTEMPT >> \"$RETRY_STATE_DIR/progress\"; exit 1"])
        .assert()
        .code(1);
    assert_eq!(std::fs::read_to_string(dir.join("progress")).unwrap(), "1\n2\n");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_run_without_a_state_dir_sets_none_and_needs_no_tmpdir() {
    let t = T::new();
    let out = t.path("env");
    for tmpdir in [t.path("missing"), std::path::PathBuf::from("/proc")] {
        t.retry()
            .env("TMPDIR", &tmpdir)
            .args(["-n", "1", "--wait", "1ms"])
            .arg(fixture("record-env.sh"))
            .arg(&out)
            .arg("0")
            .assert()
            .code(0)
            .stderr("");
    }
    let lines = t.lines("env");
    assert_eq!(lines.len(), 2);
    assert!(
        lines.iter().all(|l| l.starts_with("attempt=1 max=2 last= dir=") && l.ends_with("dir=")),
        "{lines:?}"
    );
    // And `retry -- true` with a TMPDIR that cannot be used at all.
    t.retry().env("TMPDIR", "/nonexistent").args(["--", "true"]).assert().code(0).stderr("");
}

#[test]
fn temp_state_gives_a_private_dir_that_goes_at_the_end_and_conflicts_with_state_dir() {
    let t = T::new();
    let out = t.retry()
        .args(["-n", "1", "--wait", "1ms", "--temp-state", "--", "sh", "-c"])
        .arg("stat -c %a \"$RETRY_STATE_DIR\"; echo \"$RETRY_STATE_DIR\"; touch \"$RETRY_STATE_DIR/x\"; exit 1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!((lines[0], lines[2]), ("700", "700"), "{lines:?}");
    assert_eq!(lines[1], lines[3], "one dir for the whole run");
    assert!(lines[1].starts_with(path_str(&t.path("tmp/retry-"))), "{}", lines[1]);
    assert!(!std::path::Path::new(lines[1]).exists(), "removed at the end, with what the attempts left");
    t.retry()
        .args(["--temp-state", "--state-dir", "s", "true"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("--temp-state"));
}

#[test]
fn an_unwritable_tmpdir_is_125_before_any_attempt() {
    let t = T::new();
    t.retry()
        .env("TMPDIR", t.path("missing"))
        .arg("--temp-state")
        .args(fail_times(&t, 0, 0))
        .assert()
        .code(125)
        .stderr(predicate::str::contains("TMPDIR"));
    assert_eq!(t.runs("count"), 0);
}

#[test]
fn backoff_delays_follow_the_algorithm() {
    for (algo, want) in [
        ("exponential", ["10ms", "20ms", "40ms", "80ms"]),
        ("linear", ["10ms", "20ms", "30ms", "40ms"]),
        ("fibonacci", ["10ms", "10ms", "20ms", "30ms"]),
        ("constant", ["10ms", "10ms", "10ms", "10ms"]),
    ] {
        let t = T::new();
        let out = t.retry().args(["-n", "4", "--wait", "10ms", "--algo", algo, "false"]).assert().code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        let got: Vec<&str> = stderr.lines().filter_map(|l| l.split("retrying in ").nth(1)).collect();
        assert_eq!(got, want, "{algo}");
    }
}

#[test]
fn max_wait_caps_the_delay() {
    let t = T::new();
    let out = t
        .retry()
        .args(["-n", "4", "--wait", "10ms", "--multiplier", "3", "--max-wait", "50ms", "false"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let got: Vec<&str> = stderr.lines().filter_map(|l| l.split("retrying in ").nth(1)).collect();
    assert_eq!(got, ["10ms", "30ms", "50ms", "50ms"]);
}

#[test]
fn reset_after_restarts_the_schedule_after_a_long_attempt() {
    let t = T::new();
    let out = t
        .retry()
        .args(["-n", "3", "--wait", "10ms", "--reset-after", "50ms", "sh", "-c", "sleep 0.1; exit 1"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let got: Vec<&str> = stderr.lines().filter_map(|l| l.split("retrying in ").nth(1)).collect();
    assert_eq!(got, ["10ms", "10ms", "10ms"]);
}

#[test]
fn dry_run_prints_the_schedule_and_runs_nothing() {
    let t = T::new();
    t.retry()
        .args(["--dry-run", "-n", "3", "--wait", "2s"])
        .args(fail_times(&t, 0, 0))
        .assert()
        .success()
        .stdout("attempt  sleep before  at\n      2            2s  2s\n      3            4s  6s\n      4            8s  14s\n");
    assert_eq!(t.runs("count"), 0);
    t.retry()
        .args(["--dry-run", "-n", "2", "--wait", "1s", "--algo", "linear", "--log-format", "json"])
        .assert()
        .success()
        .stdout("{\"attempt\":2,\"delay_ms\":1000,\"at_ms\":1000}\n{\"attempt\":3,\"delay_ms\":2000,\"at_ms\":3000}\n");
    let forever = t.retry().args(["--dry-run", "--forever", "--log-format", "json"]).assert().success();
    assert_eq!(forever.get_output().stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), 20);
}

#[test]
fn the_same_seed_gives_the_same_sleeps_in_dry_run_and_real_run() {
    let t = T::new();
    let common = ["-n", "3", "--wait", "20ms", "--jitter", "full", "--splay", "30ms", "--log-format", "json"];
    let args: Vec<&str> = common.iter().copied().chain(["--seed", "42"]).collect();
    let plan = t.retry().arg("--dry-run").args(&args).assert().success();
    let plan: Vec<serde_json::Value> = String::from_utf8_lossy(&plan.get_output().stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(plan[0]["attempt"], 1, "the splay comes first");
    let again = t.retry().arg("--dry-run").args(&args).assert().success();
    let first = t.retry().arg("--dry-run").args(&args).assert().success();
    assert_eq!(again.get_output().stdout, first.get_output().stdout);
    let real = t.retry().args(&args).arg("false").assert().code(1);
    let delays: Vec<serde_json::Value> = String::from_utf8_lossy(&real.get_output().stderr)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "attempt" && !e["delay_ms"].is_null())
        .map(|e| e["delay_ms"].clone())
        .collect();
    let planned: Vec<serde_json::Value> = plan[1..].iter().map(|p| p["delay_ms"].clone()).collect();
    assert_eq!(delays, planned);
    let other = t.retry().arg("--dry-run").args(common).args(["--seed", "43"]).assert().success();
    assert_ne!(other.get_output().stdout, first.get_output().stdout);
}

both_paths! {
    fn on_retry_runs_between_attempts_with_the_variables() {
        let t = T::new();
        let log = t.path("hook");
        t.retry()
            .args(["-n", "2", "--wait", "1ms", "--on-retry"])
            .arg(format!(
                "echo hook-output; echo \"next=$RETRY_ATTEMPT last=$RETRY_LAST_STATUS\" >> {}",
                log.display()
            ))
            .args(fail_times(&t, 99, 4))
            .assert()
            .code(4)
            .stdout("")
            .stderr(predicate::str::contains("hook-output"));
        assert_eq!(t.lines("hook"), ["next=2 last=4", "next=3 last=4"]);
    }
}

#[test]
fn a_failing_on_retry_is_logged_not_fatal() {
    let t = T::new();
    t.retry()
        .args(["-n", "2", "--wait", "1ms", "--on-retry", "exit 9"])
        .args(fail_times(&t, 2, 1))
        .assert()
        .success()
        .stderr(predicate::str::contains("--on-retry failed: exit status 9"));
}

#[test]
fn quiet_prints_nothing_and_verbose_prints_more() {
    let t = T::new();
    t.retry().args(["-q", "-n", "1", "--wait", "1ms", "false"]).assert().code(1).stderr("");
    t.retry()
        .args(["-v", "-n", "1", "--wait", "1ms", "false", "a b"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("retry: running false 'a b'"))
        .stderr(predicate::str::contains("retry: attempt 2/2 starting"));
}

both_paths! {
    fn own_process_group_unless_foreground() {
        let t = T::new();
        let out = t.path("ids");
        // The child records its pid and process group.
        let script = format!("cut -d' ' -f1,5 /proc/$$/stat > {}", out.display());
        t.retry().args(["-n", "0", "sh", "-c", &script]).assert().success();
        let ids = t.lines("ids");
        let v: Vec<&str> = ids[0].split(' ').collect();
        assert_eq!(v[0], v[1], "the attempt leads its own group");
        t.retry().args(["-n", "0", "--foreground", "sh", "-c", &script]).assert().success();
        let ids = t.lines("ids");
        let v: Vec<&str> = ids[0].split(' ').collect();
        assert_ne!(v[0], v[1], "--foreground keeps retry's group");
    }
}

#[test]
fn help_and_version_exit_zero() {
    let t = T::new();
    t.retry().arg("--help").assert().success().stdout(predicate::str::contains("Examples:"));
    t.retry().arg("-h").assert().success().stdout(predicate::str::contains("--retries"));
    t.retry().arg("--version").assert().success().stdout(predicate::str::starts_with("retry "));
}

#[test]
fn bad_input_is_one_line_naming_the_option_then_125_and_nothing_runs() {
    let t = T::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "'--bogus'"),
        (&["--wait", "5x"], "invalid value '5x' for '--wait <DURATION>'"),
        (&["--timeout", "-1"], "'--timeout <DURATION>'"),
        (&["--jitter", "2"], "invalid value '2' for '--jitter <F>'"),
        (&["--algo", "quadratic"], "invalid value 'quadratic' for '--algo <ALGO>'"),
        (&["--kill-signal", "TERMX"], "invalid value 'TERMX' for '--kill-signal <SIG>'"),
        (&["--forever", "-n", "3"], "cannot be used with"),
        (&["--retry-on-exit", "1,x"], "invalid value '1,x' for '--retry-on-exit <CODES>'"),
        (&["--stop-on-exit", "300"], "invalid value '300' for '--stop-on-exit <CODES>'"),
        (&["--multiplier", "0.5"], "invalid value '0.5' for '--multiplier <M>'"),
        (&["-n", "many"], "invalid value 'many' for '--retries <N>'"),
    ];
    for (args, want) in cases {
        let out = t.retry().args(*args).args(fail_times(&t, 0, 0)).assert().code(125);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: {stderr}");
        assert!(lines[0].starts_with("retry: ") && lines[0].contains(want), "{args:?}: {stderr}");
    }
    t.retry().assert().code(125).stderr(predicate::str::contains("missing COMMAND"));
    assert_eq!(t.runs("count"), 0);
}

#[test]
fn closed_stdout_stops_retrying_with_141() {
    let t = T::new();
    let mut child = std::process::Command::new(bin())
        .args(["-n", "5", "--wait", "50ms", "sh", "-c"])
        .arg(format!("echo run >> {}; echo data; exit 1", t.path("count").display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(141), "{status:?}");
    assert_eq!(t.runs("count"), 1);
}
