//! `--metrics FILE`: every file the tests write is read by Prometheus's
//! official Python client (`prometheus_client`'s text parser, Debian's
//! python3-prometheus-client) and linted by `promtool check metrics`
//! (Debian's prometheus): no regex reads them. Counters carried across
//! runs, several keys in one file, label escaping, the atomic replace
//! (mode 0644 whatever the umask), concurrent runs, the checks before
//! attempt 1, drains' queue gauges (directory and Redis queues), and a
//! drain's `--summary`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::server::RedisServer;
use crate::util::*;

/// One series of a metrics file.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// FILE as Prometheus's client library reads it, after `promtool check
/// metrics` found nothing to say; every family typed and documented, no
/// series twice.
fn read_metrics(path: &Path) -> Vec<Series> {
    let lint = StdCommand::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(path).unwrap())
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e} (apt-get install prometheus)"));
    let said = String::from_utf8_lossy(&lint.stdout).into_owned() + &String::from_utf8_lossy(&lint.stderr);
    assert!(lint.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
    let out = StdCommand::new("/usr/bin/python3")
        .arg(fixture("prom-parse.py"))
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(
        out.status.success(),
        "prometheus_client refused the file (apt-get install python3-prometheus-client): {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    let families: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut series = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for f in families {
        let kind = f["type"].as_str().unwrap();
        assert!(kind == "counter" || kind == "gauge", "{f}");
        assert!(!f["help"].as_str().unwrap().is_empty(), "{f}");
        for s in f["samples"].as_array().unwrap() {
            let labels: BTreeMap<String, String> = serde_json::from_value(s["labels"].clone()).unwrap();
            let name = s["name"].as_str().unwrap().to_string();
            assert!(seen.insert((name.clone(), labels.clone())), "{name} {labels:?} twice");
            series.push(Series { name, labels, value: s["value"].as_f64().unwrap() });
        }
    }
    series
}

/// The value of `name` with exactly these labels.
fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    series.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn runs(series: &[Series], key: &str, outcome: &str) -> f64 {
    value(series, "retry_runs_total", &[("key", key), ("outcome", outcome)]).unwrap()
}

#[test]
fn counters_and_the_last_success_are_carried_across_runs() {
    let t = T::new();
    let m = t.path("m.prom");
    let m_arg = path_str(&m);
    let fail_once = fixture("fail-times.sh");
    let count = t.path("count");
    let start = now();
    t.retry().args(["--metrics", m_arg, "--key", "job", "-n", "0", "false"]).assert().code(1);
    let first = read_metrics(&m);
    assert_eq!(value(&first, "retry_last_success_timestamp_seconds", &[("key", "job")]), None);
    assert_eq!(runs(&first, "job", "exhausted"), 1.0);
    for outcome in ["success", "stopped", "deadline", "interrupted", "refused", "queued"] {
        assert_eq!(runs(&first, "job", outcome), 0.0, "{outcome}");
    }
    // A flaky success: attempt 1 fails, attempt 2 succeeds.
    t.retry()
        .args(["--metrics", m_arg, "--key", "job", "-n", "3", "--wait", "1ms"])
        .args([path_str(&fail_once), path_str(&count), "1", "5"])
        .assert()
        .code(0);
    let second = read_metrics(&m);
    let success_at = value(&second, "retry_last_success_timestamp_seconds", &[("key", "job")]).unwrap();
    assert!(success_at >= start && success_at <= now(), "{success_at}");
    assert_eq!(value(&second, "retry_last_run_flaky", &[("key", "job")]), Some(1.0));
    assert_eq!(value(&second, "retry_last_run_attempts", &[("key", "job")]), Some(2.0));
    std::thread::sleep(Duration::from_millis(20));
    t.retry().args(["--metrics", m_arg, "--key", "job", "-n", "0", "sh", "-c", "exit 4"]).assert().code(4);
    let third = read_metrics(&m);
    let v = |name| value(&third, name, &[("key", "job")]).unwrap();
    assert_eq!(runs(&third, "job", "exhausted"), 2.0);
    assert_eq!(runs(&third, "job", "success"), 1.0);
    assert_eq!(v("retry_attempts_total"), 4.0);
    assert_eq!(v("retry_last_success_timestamp_seconds"), success_at, "carried over a failed run");
    assert!(v("retry_last_run_timestamp_seconds") > success_at);
    assert_eq!(v("retry_last_run_status"), 4.0);
    assert_eq!(v("retry_last_run_attempts"), 1.0);
    assert_eq!(v("retry_last_run_flaky"), 0.0);
    assert!(v("retry_last_run_duration_seconds") < 60.0);
}

#[test]
fn one_file_holds_several_keys_and_a_run_replaces_only_its_own() {
    let t = T::new();
    let m = t.path("m.prom");
    let m_arg = path_str(&m);
    t.retry().args(["--metrics", m_arg, "-n", "0", "false"]).assert().code(1);
    t.retry().args(["--metrics", m_arg, "/bin/true"]).assert().code(0);
    let before = read_metrics(&m);
    let of_false = |s: &[Series]| -> Vec<(String, String, f64)> {
        s.iter()
            .filter(|x| x.labels["key"] == "false")
            .map(|x| (x.name.clone(), format!("{:?}", x.labels), x.value))
            .collect()
    };
    // `key` is the command's base name.
    assert_eq!(runs(&before, "true", "success"), 1.0);
    assert_eq!(runs(&before, "false", "exhausted"), 1.0);
    for _ in 0..3 {
        t.retry().args(["--metrics", m_arg, "true"]).assert().code(0);
    }
    let after = read_metrics(&m);
    assert_eq!(runs(&after, "true", "success"), 4.0);
    assert_eq!(of_false(&after), of_false(&before), "another key's series are kept as they were");
    // Each family is written once, with every key's series in it.
    let text = std::fs::read_to_string(&m).unwrap();
    assert_eq!(text.matches("# TYPE retry_runs_total counter").count(), 1);
}

#[test]
fn label_values_escape_quotes_backslashes_and_newlines() {
    let t = T::new();
    let name = "we\"ird\\na\nme}, x=\"1\".sh";
    let script = t.path(name);
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = t.path("m.prom");
    t.retry().args(["--metrics", path_str(&m), path_str(&script)]).assert().code(0);
    let series = read_metrics(&m);
    assert_eq!(runs(&series, name, "success"), 1.0);
    assert!(series.iter().all(|s| s.labels["key"] == name), "{series:?}");
}

#[test]
fn the_file_is_replaced_atomically_with_mode_0644_whatever_the_umask() {
    let t = T::new();
    let m = t.path("m.prom");
    let run = || {
        let mut cmd = StdCommand::new("sh");
        t.env(&mut cmd);
        let status = cmd
            .args(["-c", "umask 077; exec \"$@\"", "sh"])
            .arg(bin())
            .args(["--metrics", path_str(&m), "true"])
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::metadata(&m).unwrap()
    };
    let first = run();
    assert_eq!(first.permissions().mode() & 0o7777, 0o644);
    let second = run();
    assert_eq!(second.permissions().mode() & 0o7777, 0o644);
    assert_ne!(first.ino(), second.ino(), "a new file renamed over the old one");
    let mut names: Vec<String> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["m.prom", "m.prom.lock", "tmp"], "no temp file left behind");
    read_metrics(&m);
}

#[test]
fn fifty_concurrent_runs_lose_no_increment() {
    let t = T::new();
    let m = t.path("m.prom");
    let children: Vec<_> = (0..50)
        .map(|_| {
            let mut cmd = StdCommand::new(bin());
            t.env(&mut cmd);
            cmd.args(["--metrics", path_str(&m), "true"]).stdin(Stdio::null()).spawn().unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let series = read_metrics(&m);
    assert_eq!(runs(&series, "true", "success"), 50.0);
    assert_eq!(value(&series, "retry_attempts_total", &[("key", "true")]), Some(50.0));
}

#[test]
fn an_unwritable_place_is_125_before_attempt_1_and_a_late_failure_keeps_the_status() {
    let t = T::new();
    std::fs::create_dir(t.path("adir")).unwrap();
    assert!(StdCommand::new("mkfifo").arg(t.path("fifo")).status().unwrap().success());
    for (target, words) in [
        ("nodir/m.prom", &["--metrics", "'nodir/m.prom'", "No such file"][..]),
        ("/sys/m.prom", &["--metrics", "not writable"]),
        ("adir", &["--metrics", "is a directory"]),
        ("fifo", &["--metrics", "not a regular file"]),
    ] {
        let out = t.retry().args(["--metrics", target, "touch", "ran"]).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{target}");
        let text = String::from_utf8_lossy(&out.stderr);
        for w in words {
            assert!(text.contains(w), "{target}: {text}");
        }
        assert!(!t.path("ran").exists(), "{target}: the command ran");
    }
    // The directory is gone by the end: reported (even with -q), the
    // status stays the command's.
    std::fs::create_dir(t.path("gone")).unwrap();
    let out = t
        .retry()
        .args(["-q", "-n", "0", "--metrics", "gone/m.prom", "sh", "-c", "rm -r gone; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.starts_with("retry: cannot write --metrics 'gone/m.prom'"), "{text}");
    // --dry-run writes none.
    t.retry().args(["--dry-run", "--metrics", "m.prom"]).assert().code(0);
    assert!(!t.path("m.prom").exists());
}

// ----- Drains -----

fn queue(t: &T, opts: &[&str], command: &[&str]) {
    t.retry().args(["-n", "0", "--wait", "0", "--queue", "q"]).args(opts).args(command).assert().code(75);
}

fn list(t: &T, q: &str) -> Vec<Value> {
    let out = t.retry().args(["--list", q]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn states(jobs: &[Value]) -> (f64, f64) {
    let n = |state: &str| jobs.iter().filter(|j| j["state"] == state).count() as f64;
    (n("queued"), n("dead"))
}

#[test]
fn a_drains_queue_gauges_match_list_and_its_counters_add_up() {
    let t = T::new();
    let queued_at = now();
    // Fails always: rescheduled.
    queue(&t, &[], &["false"]);
    // Exits 3 when queued, then 4: a stop rule buries it in the drain.
    queue(&t, &["--stop-on-exit", "4"], &["sh", "-c", "test -e seen && exit 4; touch seen; exit 3"]);
    // Succeeds in the drain; its own --metrics FILE follows it.
    queue(&t, &["--metrics", "job.prom"], &[path_str(&fixture("fail-times.sh")), "count", "1", "5"]);
    // The queueing run's outcome is `queued`.
    let job = read_metrics(&t.path("job.prom"));
    assert_eq!(runs(&job, "fail-times.sh", "queued"), 1.0);
    let m = t.path("q.prom");
    // From another directory: the job's relative --metrics is its own directory's.
    std::fs::create_dir(t.path("elsewhere")).unwrap();
    t.retry()
        .current_dir(t.path("elsewhere"))
        .args(["--drain", path_str(&t.path("q")), "--metrics", path_str(&m)])
        .assert()
        .code(1);
    assert!(!t.path("elsewhere/job.prom").exists());
    let series = read_metrics(&m);
    let listed = list(&t, "q");
    let (queued, dead) = states(&listed);
    assert_eq!((queued, dead), (1.0, 1.0));
    assert_eq!(value(&series, "retry_queue_jobs", &[("key", "q"), ("state", "queued")]), Some(queued));
    assert_eq!(value(&series, "retry_queue_jobs", &[("key", "q"), ("state", "dead")]), Some(dead));
    let age = value(&series, "retry_queue_oldest_job_age_seconds", &[("key", "q")]).unwrap();
    assert!(age > 0.0 && age <= now() - queued_at + 1.0, "{age}");
    let drained = |s: &[Series], result: &str| {
        value(s, "retry_drain_jobs_total", &[("key", "q"), ("result", result)]).unwrap()
    };
    assert_eq!(
        ["succeeded", "rescheduled", "dead", "skipped"].map(|r| drained(&series, r)),
        [1.0, 1.0, 1.0, 0.0]
    );
    // The job's own file: a run of its key, as the drain made it.
    let job = read_metrics(&t.path("job.prom"));
    let v = |name| value(&job, name, &[("key", "fail-times.sh")]).unwrap();
    assert_eq!(runs(&job, "fail-times.sh", "success"), 1.0);
    assert_eq!(runs(&job, "fail-times.sh", "queued"), 1.0);
    assert_eq!(
        (v("retry_last_run_attempts"), v("retry_last_run_flaky"), v("retry_attempts_total")),
        (2.0, 1.0, 2.0)
    );
    assert!(v("retry_last_success_timestamp_seconds") > queued_at);
    // A second drain: the gauges follow the queue, the counters add up.
    t.retry().args(["--drain", "q", "--metrics", path_str(&m)]).assert().code(75);
    let series = read_metrics(&m);
    assert_eq!(value(&series, "retry_queue_jobs", &[("key", "q"), ("state", "queued")]), Some(1.0));
    assert_eq!(drained(&series, "rescheduled"), 2.0);
    assert_eq!(drained(&series, "succeeded"), 1.0);
    // An empty queue's oldest age is 0.
    let t = T::new();
    std::fs::create_dir(t.path("empty")).unwrap();
    t.retry().args(["--drain", "empty", "--metrics", "e.prom"]).assert().code(0);
    let series = read_metrics(&t.path("e.prom"));
    assert_eq!(value(&series, "retry_queue_oldest_job_age_seconds", &[("key", "empty")]), Some(0.0));
    assert_eq!(value(&series, "retry_queue_jobs", &[("key", "empty"), ("state", "queued")]), Some(0.0));
}

#[test]
fn a_redis_drain_names_its_gauges_after_the_queue() {
    let t = T::new();
    let server = RedisServer::start();
    let q = format!("{}#nightly", server.url());
    for command in [&["false"][..], &["sh", "-c", "exit 2"]] {
        t.retry().args(["-n", "0", "--wait", "0", "--queue", &q]).args(command).assert().code(75);
    }
    t.retry().args(["--drain", &q, "--metrics", "r.prom"]).assert().code(75);
    let series = read_metrics(&t.path("r.prom"));
    let (queued, dead) = states(&list(&t, &q));
    assert_eq!(queued, 2.0);
    assert_eq!(value(&series, "retry_queue_jobs", &[("key", "nightly"), ("state", "queued")]), Some(queued));
    assert_eq!(value(&series, "retry_queue_jobs", &[("key", "nightly"), ("state", "dead")]), Some(dead));
    assert_eq!(
        value(&series, "retry_drain_jobs_total", &[("key", "nightly"), ("result", "rescheduled")]),
        Some(2.0)
    );
}

#[test]
fn a_drains_summary_lists_every_job_it_looked_at() {
    let t = T::new();
    queue(&t, &[], &["false"]);
    queue(&t, &["--stop-on-exit", "4"], &["sh", "-c", "test -e seen && exit 4; touch seen; exit 3"]);
    // A job's own --summary is not written by drains.
    let fail_once = fixture("fail-times.sh");
    queue(&t, &["--summary", "job.json"], &[path_str(&fail_once), "count", "1", "5", "--not-retrys"]);
    std::fs::remove_file(t.path("job.json")).unwrap();
    let out = t.retry().args(["--drain", "q", "--summary", "d.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!t.path("job.json").exists(), "a job's saved --summary is the queueing run's");
    let doc: Value = serde_json::from_slice(&std::fs::read(t.path("d.json")).unwrap()).unwrap();
    assert_eq!(doc["kind"], "drain");
    assert_eq!(doc["status"], 1);
    assert_eq!(doc["queue"], path_str(&t.path("q")));
    assert_eq!(doc["counts"], serde_json::json!({"succeeded": 1, "rescheduled": 1, "dead": 1, "skipped": 0}));
    assert!(doc["started_at"].as_str().unwrap() <= doc["ended_at"].as_str().unwrap());
    let jobs = doc["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    let by_argv = |first: &str| jobs.iter().find(|j| j["argv"][0] == first).unwrap();
    let f = by_argv("false");
    assert_eq!((&f["attempt"], &f["status"], &f["result"]), (&2.into(), &1.into(), &"rescheduled".into()));
    assert_eq!(f["reason"], "exit status 1");
    let sh = by_argv("sh");
    assert_eq!((&sh["status"], &sh["result"]), (&4.into(), &"dead".into()));
    assert!(sh["reason"].as_str().unwrap().starts_with("permanent failure on attempt 2"), "{sh}");
    let ok = by_argv(path_str(&fail_once));
    assert_eq!(ok["argv"], serde_json::json!([path_str(&fail_once), "count", "1", "5", "--not-retrys"]));
    assert_eq!((&ok["attempt"], &ok["status"], &ok["result"]), (&2.into(), &0.into(), &"succeeded".into()));
    let ids: Vec<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    let mut listed: Vec<String> =
        list(&t, "q").iter().map(|j| j["id"].as_str().unwrap().to_string()).collect();
    listed.sort();
    assert!(listed.iter().all(|id| ids.contains(&id.as_str())), "{listed:?} {ids:?}");
    // A drain that cannot start still writes its document.
    std::fs::write(t.path("notadir"), "").unwrap();
    let out = t.retry().args(["--drain", "notadir/q", "--summary", "e.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    let doc: Value = serde_json::from_slice(&std::fs::read(t.path("e.json")).unwrap()).unwrap();
    assert_eq!((doc["status"].as_u64(), doc["error"].is_string()), (Some(125), true), "{doc}");
}

/// The YAML block of README's "Monitoring cron jobs" that holds the alert rules.
fn readme_rules() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("# /etc/prometheus/rules/retry.yml").expect("README has the alert rules");
    let end = start + readme[start..].find("\n```").unwrap();
    readme[start..end].to_string()
}

#[test]
fn readmes_alert_rules_are_valid_and_fire_when_they_should() {
    let t = T::new();
    std::fs::write(t.path("rules.yml"), readme_rules()).unwrap();
    let check =
        StdCommand::new("promtool").args(["check", "rules"]).arg(t.path("rules.yml")).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // promtool's clock starts at the Unix epoch: a job that last succeeded
    // at 0 has not succeeded for 2 days after 48h. A sample a minute, as a
    // scrape gives (`for:` needs the series without gaps).
    let tests = r#"
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'retry_last_success_timestamp_seconds{instance="h",key="backup"}'
        values: '0x3000'
      - series: 'retry_last_run_timestamp_seconds{instance="h",key="backup"}'
        values: '0+60x3000'
      - series: 'retry_last_run_timestamp_seconds{instance="h",key="never"}'
        values: '0+60x3000'
      - series: 'retry_queue_jobs{instance="h",key="q",state="dead"}'
        values: '0 0 2x3000'
    alert_rule_test:
      - eval_time: 47h
        alertname: CronJobNoSuccess
        exp_alerts: []
      - eval_time: 49h
        alertname: CronJobNoSuccess
        exp_alerts:
          - exp_labels: {severity: warning, instance: h, key: backup}
            exp_annotations: {summary: "backup on h has not succeeded for 2 days"}
      - eval_time: 47h
        alertname: CronJobNeverSucceeded
        exp_alerts: []
      - eval_time: 49h
        alertname: CronJobNeverSucceeded
        exp_alerts:
          - exp_labels: {severity: warning, instance: h, key: never}
            exp_annotations: {summary: "never on h has run but never succeeded"}
      - eval_time: 1m
        alertname: RetryDeadLetters
        exp_alerts: []
      - eval_time: 3m
        alertname: RetryDeadLetters
        exp_alerts:
          - exp_labels: {severity: warning, instance: h, key: q, state: dead}
            exp_annotations: {summary: "2 dead job(s) in queue q on h: see retry --list"}
"#;
    std::fs::write(t.path("tests.yml"), tests).unwrap();
    let run = StdCommand::new("promtool")
        .args(["test", "rules", "tests.yml"])
        .current_dir(t.dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
