//! The command line people enjoy: `0` means no limit, `--success-exit`,
//! `-vv`, messages that say what happened and name what was wrong.

use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;

use crate::util::*;

#[test]
fn zero_means_no_limit_for_timeout_and_max_time() {
    let t = T::new();
    t.retry().args(["-t", "0", "--", "sh", "-c", "sleep 0.3; echo done"]).assert().success().stdout("done\n");
    t.retry().args(["--max-time", "0", "--", "echo", "hi"]).assert().success().stdout("hi\n");
    // A template like -t ${T:-0} in a drain too.
    let q = path_str(&t.path("q")).to_string();
    t.retry()
        .args(["-n", "0", "--wait", "0", "--queue", &q, "--", "sh", "-c", "[ \"$RETRY_ATTEMPT\" = 2 ]"])
        .assert()
        .code(75);
    t.retry().args(["--drain", &q, "--max-time", "0"]).assert().code(0);
}

#[test]
fn success_exit_statuses_succeed_and_still_meet_until() {
    let t = T::new();
    t.retry()
        .args([
            "-n",
            "3",
            "--wait",
            "1ms",
            "--success-exit",
            "0,24",
            "--",
            "sh",
            "-c",
            "echo run >> runs; exit 24",
        ])
        .assert()
        .code(0)
        .stderr("");
    assert_eq!(t.runs("runs"), 1);
    // --until still applies: status 24 with the wrong output is a validation failure (exit 1).
    t.retry()
        .args(["-n", "1", "--wait", "1ms", "--success-exit", "24", "--until", ".ok"])
        .args(["--", "sh", "-c", "echo '{\"ok\": false}'; exit 24"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--until '.ok'"));
    for bad in ["124", "0,125-127", "130", "255"] {
        t.retry().args(["--success-exit", bad, "true"]).assert().code(125).stderr(
            predicate::str::contains("--success-exit").and(predicate::str::contains("cannot be a success")),
        );
    }
    t.retry().args(["--success-exit", "128", "true"]).assert().code(0);
}

#[test]
fn vv_adds_the_schedules_and_the_stores_decisions() {
    let t = T::new();
    let store = format!("file:{}", path_str(&t.path("store")));
    t.retry()
        .args([
            "-vv",
            "-n",
            "1",
            "--wait",
            "5ms",
            "--key",
            "k",
            "--state-store",
            &store,
            "--rate",
            "9/1s",
            "false",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "attempt 1: next attempt in 5ms: backoff step 1 (5ms before jitter)",
        ))
        .stderr(predicate::str::contains("key 'k': attempt 2 took a --rate turn"));
    let out = t
        .retry()
        .args(["-vv", "--log-format", "json", "-n", "1", "--wait", "5ms", "false"])
        .output()
        .unwrap();
    let events: Vec<Value> =
        String::from_utf8_lossy(&out.stderr).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let schedule: Vec<&Value> = events.iter().filter(|e| e["event"] == "schedule").collect();
    assert_eq!(schedule.len(), 2, "{events:?}");
    assert_eq!(schedule[0]["delay_ms"], 5);
}

#[test]
fn a_splay_that_does_not_fit_max_time_is_named() {
    let t = T::new();
    let start = Instant::now();
    t.retry()
        .args(["--splay", "1h", "--max-time", "1s", "--", "touch", "ran"])
        .assert()
        .code(124)
        .stderr(predicate::str::contains("before any attempt could start: the --splay sleep of"));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!t.path("ran").exists());
}

#[test]
fn a_missing_interpreter_is_named() {
    let t = T::new();
    let script = t.path("script.sh");
    std::fs::write(&script, "#!/nonexistent/bin/sh -e\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    t.retry()
        .arg(&script)
        .assert()
        .code(127)
        .stderr(predicate::str::contains("/nonexistent/bin/sh: bad interpreter: No such file or directory"));
    t.retry()
        .arg("no-such-command-xyz")
        .assert()
        .code(127)
        .stderr(predicate::str::contains("command not found"));
}

#[test]
fn bad_values_name_the_option_and_list_the_choices() {
    let t = T::new();
    for (args, wants) in [
        (
            &["--algo", "random", "true"][..],
            &["'random'", "--algo", "possible values: exponential, linear"][..],
        ),
        (&["--log-format", "yaml", "true"], &["'yaml'", "text, json, github"]),
        (&["--stdin", "foo", "true"], &["'foo'", "pass, replay"]),
        (&["--stdout", "x", "true"], &["'x'", "live, final"]),
        (&["--retry-on-exit", "-1", "true"], &["'-1'", "--retry-on-exit", "no sign"]),
    ] {
        let out = t.retry().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(125));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 2, "one line and a hint: {err}");
        for want in wants {
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
    // A regex that is not UTF-8 names its option.
    use std::os::unix::ffi::OsStrExt as _;
    let out = t
        .retry()
        .arg("--stop-on-stderr")
        .arg(std::ffi::OsStr::from_bytes(b"\xffbad"))
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("for '--stop-on-stderr': not valid UTF-8"));
}

#[test]
fn dry_run_warns_about_jitter_with_decorrelated_as_a_run_does() {
    let t = T::new();
    t.retry()
        .args(["--dry-run", "-n", "1", "--algo", "decorrelated", "--jitter", "full"])
        .assert()
        .success()
        .stderr(predicate::str::contains("--jitter has no effect with --algo decorrelated"));
}

#[test]
fn writing_to_a_full_disk_is_said_not_only_exited() {
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let t = T::new();
    // retry with stdout on /dev/full: its status and stderr.
    let to_full = |args: &[&str]| {
        let mut cmd = std::process::Command::new(bin());
        t.env(&mut cmd);
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = cmd.args(args).stdin(std::process::Stdio::null()).stdout(full).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = to_full(&["--dry-run", "-n", "2"]);
    assert_eq!(code, Some(125));
    assert!(err.contains("cannot write the schedule to stdout: No space left on device"), "{err}");
    let q = path_str(&t.path("q")).to_string();
    t.retry().args(["-n", "0", "--queue", &q, "false"]).assert().code(75);
    let (code, err) = to_full(&["--list", &q]);
    assert_eq!(code, Some(125));
    assert!(err.contains("cannot write the list to stdout: No space left on device"), "{err}");
}

#[test]
fn jobs_say_one_attempt_and_a_job_that_would_drain_is_dead() {
    let t = T::new();
    let q = path_str(&t.path("q")).to_string();
    t.retry().args(["-n", "0", "--wait", "0", "--max-age", "1ms", "--queue", &q, "false"]).assert().code(75);
    std::thread::sleep(Duration::from_millis(20));
    t.retry()
        .args(["--drain", &q])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("ago, 1 attempt); last failure"));
    // A job whose saved options hold --drain is not a job: it is buried.
    let id = "20250101T000000.000000Z-0000d1a1";
    let doc = serde_json::json!({
        "version": 1, "id": id, "argv": ["true"], "cwd": "/", "options": ["--drain", "/tmp/x"],
        "env": [], "stdin": false, "first_start": "2025-01-01T00:00:00Z", "max_age_ms": 315360000000u64,
        "attempts": 1, "history": [], "backoff": {"k": 1, "prev_ns": 0}, "next_due": "2025-01-01T00:00:00Z"
    });
    std::fs::write(t.path("q").join(format!("{id}.job")), doc.to_string()).unwrap();
    t.retry().args(["--drain", &q]).assert().code(1).stderr(predicate::str::contains(format!(
        "job {id}: moved to dead/: its saved options are not valid any more"
    )));
}

#[test]
fn a_password_that_is_also_a_word_leaves_the_messages_alone() {
    let server = crate::server::RedisServer::start_with(Some("right"));
    let t = T::new();
    let url = format!("redis://:wrong@127.0.0.1:{}", server.port);
    let out =
        t.retry().args(["--key", "k", "--state-store", &url, "--rate", "1/s", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    // The URL's password is masked; the word in retry's own text is not.
    assert!(err.contains("redis://:***@127.0.0.1"), "{err}");
    assert!(err.contains("a wrong user name or password"), "{err}");
    assert!(!err.contains(":wrong@"), "{err}");
}

#[test]
fn list_and_drain_say_the_same_of_a_newer_job_and_json_names_it() {
    let t = T::new();
    let q = t.path("q");
    std::fs::create_dir(&q).unwrap();
    std::fs::set_permissions(&q, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let id = "20300101T000000.000000Z-00000009";
    std::fs::write(q.join(format!("{id}.job")), format!(r#"{{"version": 99, "id": "{id}"}}"#)).unwrap();
    let out = t.retry().args(["--list", path_str(&q), "--log-format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let warning: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stderr).lines().next().unwrap()).unwrap();
    assert_eq!((warning["event"].as_str(), warning["id"].as_str()), (Some("warning"), Some(id)));
    let said = "written by a newer retry (job format version 99; this one reads up to 1)";
    assert!(warning["message"].as_str().unwrap().contains(said), "{warning}");
    t.retry().args(["--drain", path_str(&q)]).assert().code(0).stderr(predicate::str::contains(said));
}

#[test]
fn an_insecure_queue_directory_writes_the_summary_like_other_store_errors() {
    let t = T::new();
    let q = t.path("q");
    std::fs::create_dir(&q).unwrap();
    std::fs::set_permissions(&q, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let summary = t.path("s.json");
    t.retry()
        .args(["--summary", path_str(&summary), "--queue", path_str(&q), "--", "touch", "ran"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("writable by group or others"));
    assert!(!t.path("ran").exists());
    let doc: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!((doc["outcome"].as_str(), doc["status"].as_u64()), (Some("error"), Some(125)));
    assert!(doc["error"].as_str().unwrap().contains("writable by group or others"), "{doc}");
}
