//! The durable queue: `--queue` keeps a job that gave up, `--drain` runs
//! due jobs once each, `--list` shows them; dead letters, locking, crash
//! safety and permission checks.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;

use crate::util::*;

fn sh(script: &str) -> [String; 3] {
    ["sh".into(), "-c".into(), script.into()]
}

fn q(t: &T) -> String {
    path_str(&t.path("q")).to_string()
}

/// The `*.job` files of a directory.
fn jobs_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "job")).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read_job(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The only queued job's file.
fn the_job(t: &T) -> Value {
    let jobs = jobs_in(&t.path("q"));
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    read_job(&jobs[0])
}

/// `retry --list q`, parsed.
fn list(t: &T) -> Vec<Value> {
    let out = t.retry().args(["--list", &q(t)]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Queues `script` (which fails on its first run) with `opts`.
fn enqueue(t: &T, opts: &[&str], script: &str) {
    t.retry()
        .args(["--queue", &q(t)])
        .args(opts)
        .arg("--")
        .args(sh(script))
        .assert()
        .code(75)
        .stderr(predicate::str::contains("queued as"));
}

fn drain(t: &T, extra: &[&str]) -> assert_cmd::assert::Assert {
    t.retry().args(["--drain", &q(t)]).args(extra).assert()
}

/// Sleeps until the only job is due.
fn wait_until_due(t: &T) {
    let due = the_job(t)["next_due"].as_str().unwrap().to_string();
    let due = humantime::parse_rfc3339(&due).unwrap();
    if let Ok(left) = due.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left + Duration::from_millis(5));
    }
}

#[test]
fn a_queued_job_is_drained_to_success_and_removed() {
    let t = T::new();
    let script = "echo \"$RETRY_ATTEMPT\" >> runs; [ \"$RETRY_ATTEMPT\" -ge 3 ]";
    t.retry()
        .args(["-n", "1", "--wait", "1ms", "--temp-state", "--queue", &q(&t), "--"])
        .args(sh(script))
        .assert()
        .code(75)
        .stdout("")
        .stderr(predicate::str::contains("attempt 2/2 failed: exit status 1"))
        .stderr(predicate::str::contains(format!("queued as {}/", q(&t))))
        .stderr(predicate::str::contains("next attempt due at"));
    let job = the_job(&t);
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["version"], 1);
    let id = job["id"].as_str().unwrap().to_string();
    assert!(t.path("q/state").join(&id).is_dir(), "the job keeps its state dir");
    wait_until_due(&t);
    drain(&t, &[]).code(0).stderr(predicate::str::contains(format!(
        "job {id}: succeeded on attempt 3; removed from the queue"
    )));
    assert_eq!(t.lines("runs"), ["1", "2", "3"]);
    assert!(jobs_in(&t.path("q")).is_empty());
    assert!(!t.path("q/state").join(&id).exists(), "its state dir goes with it");
    assert!(list(&t).is_empty());
    // Nothing due: 0, and a cron drain says nothing.
    drain(&t, &[]).code(0).stderr("");
}

#[test]
fn repeated_failures_reschedule_with_growing_delays() {
    let t = T::new();
    enqueue(&t, &["-n", "0", "--wait", "40ms"], "echo run >> runs; exit 4");
    let mut delays = Vec::new();
    for round in 0..3 {
        let job = the_job(&t);
        assert_eq!(job["backoff"]["k"], round + 1);
        delays.push(job["backoff"]["prev_ns"].as_u64().unwrap() / 1_000_000);
        // next_due = end of the last attempt + that delay.
        let last = job["history"].as_array().unwrap().last().unwrap().clone();
        let started = humantime::parse_rfc3339(last["started"].as_str().unwrap()).unwrap();
        let ended = started + Duration::from_millis(last["duration_ms"].as_u64().unwrap());
        let due = humantime::parse_rfc3339(job["next_due"].as_str().unwrap()).unwrap();
        let gap = due.duration_since(ended).unwrap().as_millis() as i64;
        assert!((gap - *delays.last().unwrap() as i64).abs() <= 2, "gap {gap} for {delays:?}");
        wait_until_due(&t);
        drain(&t, &[]).code(75).stderr(predicate::str::contains("rescheduled after attempt"));
    }
    assert_eq!(delays, [40, 80, 160]);
    assert_eq!(t.runs("runs"), 4);
    let job = the_job(&t);
    assert_eq!(job["attempts"], 4);
    assert_eq!(job["backoff"]["prev_ns"], 320_000_000);
    // Not due yet (320ms away): a drain leaves it alone.
    drain(&t, &[]).code(0);
    assert_eq!(t.runs("runs"), 4);
}

#[test]
fn a_job_past_max_age_is_a_dead_letter_with_the_reason() {
    let t = T::new();
    enqueue(&t, &["-n", "0", "--wait", "0", "--max-age", "1s"], "echo run >> runs; exit 1");
    assert_eq!(the_job(&t)["max_age_ms"], 1000);
    // Within its life it runs and is rescheduled.
    drain(&t, &[]).code(75);
    assert_eq!(t.runs("runs"), 2);
    std::thread::sleep(Duration::from_millis(1100));
    drain(&t, &[]).code(1).stderr(predicate::str::contains("moved to dead/: past its --max-age of 1s"));
    assert_eq!(t.runs("runs"), 2, "a job past its max-age does not run");
    assert!(jobs_in(&t.path("q")).is_empty());
    let dead = jobs_in(&t.path("q/dead"));
    assert_eq!(dead.len(), 1);
    let letter = read_job(&dead[0]);
    assert!(letter["dead"]["reason"].as_str().unwrap().contains("--max-age"));
    assert_eq!(letter["history"].as_array().unwrap().len(), 2, "the history goes with it");
    let listed = list(&t);
    assert_eq!(listed[0]["state"], "dead");
    assert_eq!(listed[0]["next_due"], Value::Null);
    assert!(listed[0]["reason"].as_str().unwrap().contains("past its --max-age"));
    // --max-age given to a drain applies to every job.
    enqueue(&t, &["-n", "0", "--wait", "0"], "exit 1");
    drain(&t, &["--max-age", "1ms"]).code(1);
    assert_eq!(jobs_in(&t.path("q/dead")).len(), 2);
}

#[test]
fn a_permanent_failure_in_a_drain_is_a_dead_letter() {
    let t = T::new();
    enqueue(&t, &["-n", "0", "--wait", "0", "--stop-on-exit", "3"], "[ -e third ] && exit 3; exit 1");
    std::fs::write(t.path("third"), "").unwrap();
    drain(&t, &[]).code(1).stderr(predicate::str::contains("attempt 2 failed: exit status 3")).stderr(
        predicate::str::contains(
            "moved to dead/: permanent failure on attempt 2: exit status 3; status 3 is in --stop-on-exit",
        ),
    );
    assert_eq!(jobs_in(&t.path("q/dead")).len(), 1);
    // A command that is gone by then (127) is permanent too.
    let script = t.path("gone.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    t.retry().args(["-n", "0", "--wait", "0", "--queue", &q(&t), path_str(&script)]).assert().code(75);
    std::fs::remove_file(&script).unwrap();
    drain(&t, &[]).code(1).stderr(predicate::str::contains("command not found"));
    assert_eq!(jobs_in(&t.path("q/dead")).len(), 2);
}

#[test]
fn a_permanent_failure_is_not_queued() {
    let t = T::new();
    t.retry()
        .args(["-n", "3", "--wait", "1ms", "--stop-on-exit", "3", "--temp-state", "--queue", &q(&t), "--"])
        .args(sh("echo run >> runs; exit 3"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("queued").not());
    assert_eq!(t.runs("runs"), 1);
    t.retry().args(["--temp-state", "--queue", &q(&t), "no-such-command-xyz"]).assert().code(127);
    assert!(jobs_in(&t.path("q")).is_empty());
    assert!(std::fs::read_dir(t.path("q/state")).unwrap().next().is_none(), "no state dir left behind");
    // A success is not queued either.
    t.retry().args(["--queue", &q(&t), "true"]).assert().code(0).stderr("");
    assert!(jobs_in(&t.path("q")).is_empty());
}

#[test]
fn stdin_is_replayed_from_the_queue_and_is_dev_null_without_replay() {
    let t = T::new();
    // Attempt 1 reads one byte only; the queue still keeps all of stdin.
    let script = "if [ \"$RETRY_ATTEMPT\" = 1 ]; then head -c 1 >> got; exit 1; fi; cat >> got";
    t.retry()
        .args(["--stdin", "replay", "-n", "0", "--wait", "0", "--queue", &q(&t), "--"])
        .args(sh(script))
        .write_stdin("abc")
        .assert()
        .code(75);
    let job = the_job(&t);
    assert_eq!(job["stdin"], true);
    let side = t.path("q").join(format!("{}.stdin", job["id"].as_str().unwrap()));
    assert_eq!(std::fs::read(&side).unwrap(), b"abc");
    assert_eq!(std::fs::metadata(&side).unwrap().permissions().mode() & 0o777, 0o600);
    t.retry().args(["--drain", &q(&t)]).write_stdin("the drain's stdin").assert().code(0);
    assert_eq!(std::fs::read_to_string(t.path("got")).unwrap(), "aabc");
    assert!(!side.exists());
    // Without --stdin replay a drained job reads /dev/null.
    enqueue(&t, &["-n", "0", "--wait", "0"], "cat > seen; [ \"$RETRY_ATTEMPT\" -ge 2 ]");
    t.retry().args(["--drain", &q(&t)]).write_stdin("not for the job").assert().code(0);
    assert_eq!(std::fs::read_to_string(t.path("seen")).unwrap(), "");
}

#[test]
fn a_drained_job_keeps_its_directory_environment_counters_and_state_dir() {
    let t = T::new();
    let work = t.path("work");
    std::fs::create_dir(&work).unwrap();
    let script = "echo \"attempt=$RETRY_ATTEMPT max=$RETRY_MAX_ATTEMPTS last=$RETRY_LAST_STATUS pwd=$(pwd) \
                  foo=$FOO bar=$BAR\" >> ../log; \
                  if [ \"$RETRY_ATTEMPT\" = 1 ]; then echo progress > \"$RETRY_STATE_DIR/p\"; exit 5; fi; \
                  cat \"$RETRY_STATE_DIR/p\" >> ../log";
    t.retry()
        .current_dir(&work)
        .env("FOO", "queued")
        .args(["-n", "0", "--wait", "0", "--temp-state", "--queue", &q(&t), "--"])
        .args(sh(script))
        .assert()
        .code(75);
    let id = the_job(&t)["id"].as_str().unwrap().to_string();
    t.retry().env("BAR", "drain").args(["--drain", &q(&t)]).assert().code(0);
    let w = path_str(&work);
    assert_eq!(
        t.lines("log"),
        [
            format!("attempt=1 max=1 last= pwd={w} foo=queued bar="),
            format!("attempt=2 max= last=5 pwd={w} foo=queued bar="),
            "progress".to_string(),
        ]
    );
    assert!(!t.path("q/state").join(id).exists());
}

#[test]
fn predicates_see_the_jobs_attempt_and_elapsed_time() {
    let t = T::new();
    t.retry()
        .args(["-n", "0", "--wait", "0", "--queue", &q(&t), "--until", "$attempt >= 2 and $elapsed > 1"])
        .args(["echo", "{\"ok\": true}"])
        .assert()
        .code(75)
        // Captured stdout is not written when the job is queued.
        .stdout("");
    std::thread::sleep(Duration::from_millis(1050));
    drain(&t, &[]).code(0).stdout("{\"ok\": true}\n");
}

#[test]
fn a_missing_working_directory_falls_back_to_the_drains() {
    let t = T::new();
    let gone = t.path("gone");
    std::fs::create_dir(&gone).unwrap();
    t.retry()
        .current_dir(&gone)
        .args(["-n", "0", "--wait", "0", "--queue", &q(&t), "--"])
        .args(sh("[ \"$RETRY_ATTEMPT\" -ge 2 ] && pwd > \"$HOME/where\""))
        .assert()
        .code(75);
    std::fs::remove_dir(&gone).unwrap();
    drain(&t, &[]).code(0).stderr(predicate::str::contains("is missing; running in the drain's"));
    assert_eq!(t.lines("where"), [path_str(t.dir.path())]);
}

#[test]
fn list_prints_exactly_the_spec_fields_and_no_environment() {
    let t = T::new();
    t.retry()
        .env("SECRET_TOKEN", "hunter2")
        .args(["-n", "0", "--wait", "1h", "--queue", &q(&t), "--", "sh", "-c", "exit 6"])
        .assert()
        .code(75);
    std::thread::sleep(Duration::from_millis(5));
    t.retry()
        .args(["-n", "0", "--wait", "0", "--stop-on-exit", "2", "--queue", &q(&t), "--"])
        .args(sh("[ \"$RETRY_ATTEMPT\" -ge 2 ] && exit 2; exit 1"))
        .assert()
        .code(75);
    drain(&t, &[]).code(1);
    let out = t.retry().args(["--list", &q(&t)]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("hunter2"));
    let items: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(items.len(), 2);
    for item in &items {
        let mut keys: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["argv", "attempts", "id", "last_status", "next_due", "reason", "state"]);
    }
    // Sorted by id = by creation time.
    assert!(items[0]["id"].as_str().unwrap() < items[1]["id"].as_str().unwrap());
    assert_eq!(items[0]["state"], "queued");
    assert_eq!(items[0]["argv"], serde_json::json!(["sh", "-c", "exit 6"]));
    assert_eq!(items[0]["attempts"], 1);
    assert_eq!(items[0]["last_status"], 6);
    assert_eq!(items[0]["reason"], "exit status 6");
    let due = items[0]["next_due"].as_str().unwrap();
    let due = humantime::parse_rfc3339(due).unwrap();
    let ahead = due.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(ahead > Duration::from_secs(3500), "{ahead:?}");
    assert_eq!(items[1]["state"], "dead");
    assert_eq!(items[1]["next_due"], Value::Null);
    assert_eq!(items[1]["attempts"], 2);
    assert_eq!(items[1]["last_status"], 2);
    // A missing queue lists nothing.
    t.retry().args(["--list", path_str(&t.path("nothing-here"))]).assert().code(0).stdout("");
}

#[test]
fn the_queued_event_and_outcome_in_json() {
    let t = T::new();
    let out = t
        .retry()
        .args(["--log-format", "json", "-n", "1", "--wait", "1ms", "--queue", &q(&t), "--stdout", "final"])
        .args(sh("echo partial; exit 9"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(out.stdout, b"", "a queued run writes no captured stdout");
    let events: Vec<Value> =
        String::from_utf8(out.stderr).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let queued = events.iter().find(|e| e["event"] == "queued").expect("a queued event");
    let id = the_job(&t)["id"].as_str().unwrap().to_string();
    assert_eq!(queued["id"], id.as_str());
    assert_eq!(queued["file"], format!("{}/{id}.job", q(&t)).as_str());
    assert_eq!(queued["attempts"], 2);
    assert_eq!(queued["last_status"], 9);
    assert!(queued["next_due"].as_str().unwrap().ends_with('Z'));
    let done = events.last().unwrap();
    assert_eq!(
        (done["event"].as_str(), done["outcome"].as_str(), done["status"].as_u64()),
        (Some("done"), Some("queued"), Some(75))
    );
    // A drain's events: one per job, and a summary.
    wait_until_due(&t);
    let out = t.retry().args(["--drain", &q(&t), "--log-format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(75));
    let events: Vec<Value> =
        String::from_utf8(out.stderr).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["attempt", "job", "drained"]);
    assert_eq!(events[0]["attempt"], 3);
    assert_eq!(events[1]["result"], "rescheduled");
    assert_eq!(events[1]["id"], id.as_str());
    assert_eq!(events[2]["rescheduled"], 1);
    assert_eq!(events[2]["status"], 75);
}

#[test]
fn drain_exit_status_is_1_when_a_job_died_even_if_others_were_rescheduled() {
    let t = T::new();
    enqueue(&t, &["-n", "0", "--wait", "0"], "exit 1");
    enqueue(
        &t,
        &["-n", "0", "--wait", "0", "--retry-on-exit", "1"],
        "[ \"$RETRY_ATTEMPT\" -ge 2 ] && exit 8; exit 1",
    );
    drain(&t, &[]).code(1);
    assert_eq!(jobs_in(&t.path("q")).len(), 1);
    assert_eq!(jobs_in(&t.path("q/dead")).len(), 1);
    drain(&t, &[]).code(75);
}

#[test]
fn parallel_drains_run_each_job_exactly_once() {
    let t = T::new();
    let n = 24;
    for i in 0..n {
        t.retry()
            .args(["-n", "0", "--wait", "0", "--queue", &q(&t), "--", "sh", "-c"])
            .arg("echo \"$1 $RETRY_ATTEMPT\" >> \"$HOME/ran\"; [ \"$RETRY_ATTEMPT\" -ge 2 ] && sleep 0.02")
            .args(["job", &i.to_string()])
            .assert()
            .code(75);
    }
    let drains: Vec<_> = (0..3).map(|_| t.spawn(&["--drain", &q(&t)])).collect();
    for mut d in drains {
        assert_eq!(wait_exit(&mut d).code(), Some(0));
    }
    let mut second: Vec<String> = t.lines("ran").into_iter().filter(|l| l.ends_with(" 2")).collect();
    second.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("{i} 2")).collect();
    want.sort();
    assert_eq!(second, want, "each job ran exactly once");
    assert!(jobs_in(&t.path("q")).is_empty());
}

#[test]
fn a_drain_killed_mid_job_leaves_it_for_the_next_drain() {
    let t = T::new();
    enqueue(
        &t,
        &["-n", "0", "--wait", "0"],
        "echo \"$RETRY_ATTEMPT\" >> runs; [ \"$RETRY_ATTEMPT\" = 1 ] && exit 1; \
         if [ ! -e started ]; then touch started; exec sleep 30; fi",
    );
    let before = std::fs::read(&jobs_in(&t.path("q"))[0]).unwrap();
    let mut first = t.spawn(&["--drain", &q(&t)]);
    t.wait_for("started");
    // Another drain meanwhile: the job is held, so it is not run twice.
    drain(&t, &[]).code(0);
    assert_eq!(t.lines("runs"), ["1", "2"]);
    kill(first.id(), libc::SIGKILL);
    wait_exit(&mut first);
    // The job is intact, and its attempt's process died with the drain.
    assert_eq!(std::fs::read(&jobs_in(&t.path("q"))[0]).unwrap(), before);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.live_processes().is_empty() {
        assert!(Instant::now() < deadline, "left running: {:?}", t.live_processes());
        std::thread::sleep(Duration::from_millis(20));
    }
    drain(&t, &[]).code(0).stderr(predicate::str::contains("succeeded on attempt 2"));
    assert_eq!(t.lines("runs"), ["1", "2", "2"]);
    assert!(jobs_in(&t.path("q")).is_empty());
}

#[test]
fn a_job_cut_off_by_the_drains_max_time_is_rescheduled_due_at_once() {
    let t = T::new();
    enqueue(
        &t,
        &["-n", "0", "--wait", "0", "--stop-on-exit", "124"],
        "[ \"$RETRY_ATTEMPT\" = 2 ] && sleep 30; exit 1",
    );
    let started = Instant::now();
    drain(&t, &["--max-time", "300ms"])
        .code(75)
        .stderr(predicate::str::contains("attempt 2 failed: killed at --max-time"));
    assert!(started.elapsed() < Duration::from_secs(10));
    let job = the_job(&t);
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["backoff"]["k"], 1, "a cut-off does not advance the backoff");
    let due = humantime::parse_rfc3339(job["next_due"].as_str().unwrap()).unwrap();
    assert!(due <= std::time::SystemTime::now());
    drain(&t, &[]).code(75);
    assert_eq!(the_job(&t)["attempts"], 3);
}

#[test]
fn the_queue_directory_is_private_and_refused_when_not() {
    let t = T::new();
    let dir = t.path("deep/q");
    enqueue_in(&t, &dir);
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let job = &jobs_in(&dir)[0];
    assert_eq!(std::fs::metadata(job).unwrap().permissions().mode() & 0o777, 0o600);
    let state = std::fs::read_dir(dir.join("state")).unwrap().next().unwrap().unwrap().path();
    assert_eq!(std::fs::metadata(state).unwrap().permissions().mode() & 0o777, 0o700);
    // Writable by others: refused by every mode, before anything runs.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let d = path_str(&dir);
    t.retry()
        .args(["--queue", d, "--", "sh", "-c", "echo ran >> runs"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("refusing the queue directory"))
        .stderr(predicate::str::contains("writable by group or others (mode 0777)"));
    assert_eq!(t.runs("runs"), 0);
    t.retry().args(["--drain", d]).assert().code(125).stderr(predicate::str::contains("refusing"));
    t.retry().args(["--list", d]).assert().code(125);
    // Owned by someone else: refused too.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    t.retry()
        .args(["--drain", d])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("owned by uid 65534, not by you"));
    t.retry().args(["--queue", d, "false"]).assert().code(125);
    assert_eq!(jobs_in(&dir).len(), 1, "nothing touched");
}

fn enqueue_in(t: &T, dir: &Path) {
    t.retry().args(["-n", "0", "--temp-state", "--queue", path_str(dir), "false"]).assert().code(75);
}

#[test]
fn a_corrupt_job_file_goes_to_dead_letters_with_the_reason() {
    let t = T::new();
    enqueue(&t, &["-n", "0", "--wait", "0"], "[ \"$RETRY_ATTEMPT\" -ge 2 ]");
    let id = "20200101T000000.000000Z-0badf00d";
    std::fs::write(t.path("q").join(format!("{id}.job")), b"{\"version\": 1, \"id\": trunc").unwrap();
    drain(&t, &[])
        .code(1)
        .stderr(predicate::str::contains(format!("job {id}: moved to dead/: corrupt job file")))
        .stderr(predicate::str::contains("succeeded on attempt 2"));
    assert_eq!(
        std::fs::read(t.path("q/dead").join(format!("{id}.corrupt"))).unwrap(),
        b"{\"version\": 1, \"id\": trunc",
        "the original bytes are kept"
    );
    let listed = list(&t);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["state"], "dead");
    assert!(listed[0]["reason"].as_str().unwrap().starts_with("corrupt job file"));
    drain(&t, &[]).code(0);
}

#[test]
fn a_job_from_a_newer_version_is_skipped_and_reported_not_buried() {
    let t = T::new();
    std::fs::create_dir(t.path("q")).unwrap();
    std::fs::set_permissions(t.path("q"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let id = "20300101T000000.000000Z-00000002";
    let file = t.path("q").join(format!("{id}.job"));
    std::fs::write(&file, br#"{"version": 2, "id": "20300101T000000.000000Z-00000002", "new": true}"#)
        .unwrap();
    drain(&t, &[]).code(0).stderr(predicate::str::contains(format!(
        "job {id}: warning: skipped: written by a newer retry (job format version 2"
    )));
    assert!(file.exists());
    assert!(!t.path("q/dead").exists());
    let out = t.retry().args(["--list", &q(&t)]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer retry"));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["id"], id);
}

#[test]
fn a_drain_refuses_options_that_belong_to_jobs() {
    let t = T::new();
    let d = q(&t);
    for (args, says) in [
        (vec!["-n", "3"], "'--retries' cannot be used with --drain"),
        (vec!["--stdin", "pass"], "'--stdin' cannot be used with --drain"),
        (vec!["--wait", "1s"], "'--wait' cannot be used with --drain"),
        (vec!["--", "true"], "--drain takes no COMMAND"),
    ] {
        t.retry().args(["--drain", &d]).args(&args).assert().code(125).stderr(predicate::str::contains(says));
    }
    t.retry()
        .args(["--list", &d, "--max-time", "1s"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("'--max-time' cannot be used with --list"));
    t.retry().args(["--drain", &d, "--queue", &d]).assert().code(125);
    t.retry()
        .args(["--max-age", "1s", "true"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("give it with --queue or --drain"));
    // What a drain takes.
    t.retry()
        .args([
            "--drain",
            &d,
            "--max-time",
            "1m",
            "--max-age",
            "2d",
            "-q",
            "--log-format",
            "text",
            "--stdout",
            "final",
        ])
        .assert()
        .code(0);
}

#[test]
fn help_describes_the_queue_options() {
    let t = T::new();
    let help = t.retry().arg("--help").output().unwrap();
    let text = String::from_utf8(help.stdout).unwrap();
    for flag in ["--queue <DIR>", "--drain <DIR>", "--list <DIR>", "--max-age <DURATION>", "*/5 * * * *"] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

/// The state store options of these tests: one key, a circuit that opens
/// after one failed run and stays open for an hour.
fn circuit(t: &T) -> Vec<String> {
    let store = format!("file:{}", t.path("store").display());
    s(&["--key", "api", "--state-store", &store, "--circuit-break", "1", "--circuit-cooldown", "1h"])
}

fn seconds_until(rfc3339: &str) -> u64 {
    let due = humantime::parse_rfc3339(rfc3339).unwrap();
    due.duration_since(std::time::SystemTime::now()).unwrap_or_default().as_secs()
}

#[test]
fn a_queue_run_refused_by_an_open_circuit_is_queued_due_when_it_may_close() {
    let t = T::new();
    // One run that gives up opens the circuit.
    t.retry().args(circuit(&t)).args(["-n", "0", "false"]).assert().code(1);
    t.retry()
        .args(circuit(&t))
        .args(["-n", "0", "--queue", &q(&t), "--"])
        .args(sh("touch ran"))
        .assert()
        .code(75)
        .stderr(predicate::str::contains("circuit 'api' open"))
        .stderr(predicate::str::contains("queued as"));
    assert!(!t.path("ran").exists(), "COMMAND did not run");
    let jobs = list(&t);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["attempts"], 0);
    let due = seconds_until(jobs[0]["next_due"].as_str().unwrap());
    assert!((3500..=3600).contains(&due), "due in {due}s, not at the cooldown's end");
}

#[test]
fn a_drain_honours_a_jobs_open_circuit_and_reschedules_it_to_the_cooldowns_end() {
    let t = T::new();
    // The queueing run gives up (opening the circuit) and is queued, due at once.
    let opts = circuit(&t);
    let mut opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    opts.extend(["-n", "0", "--wait", "0"]);
    enqueue(&t, &opts, "echo run >> runs; exit 1");
    assert_eq!(t.runs("runs"), 1);
    drain(&t, &[]).code(75);
    assert_eq!(t.runs("runs"), 1, "the drain did not run a job whose circuit is open");
    let job = &list(&t)[0];
    assert_eq!(job["attempts"], 1);
    let due = seconds_until(job["next_due"].as_str().unwrap());
    assert!((3500..=3600).contains(&due), "due in {due}s");
}

#[test]
fn a_job_queued_without_a_state_dir_has_none_when_drained() {
    let t = T::new();
    let script =
        "echo \"attempt=$RETRY_ATTEMPT dir=${RETRY_STATE_DIR-unset}\" >> log; [ \"$RETRY_ATTEMPT\" -ge 2 ]";
    t.retry().args(["-n", "0", "--wait", "0", "--queue", &q(&t), "--"]).args(sh(script)).assert().code(75);
    assert!(!t.path("q/state").exists(), "nothing made for a state dir");
    drain(&t, &[]).code(0);
    assert_eq!(t.lines("log"), ["attempt=1 dir=unset", "attempt=2 dir=unset"]);
}
