//! Hostile conditions: random argv, a stress of timed-out process trees,
//! 10,000 attempts, hostile output, a hostile environment, and signals at
//! every phase of a run. Each test is bounded (seconds, not minutes).

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use predicates::prelude::*;
use proptest::prelude::*;

use crate::util::*;

fn sh(script: &str) -> [String; 3] {
    ["sh".to_string(), "-c".to_string(), script.to_string()]
}

/// Waits up to `limit` for `path` to exist.
fn wait_path(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// VmRSS (kB) and the number of open fds of a live process.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    (rss, fds)
}

/// Waits (up to 5 s) until nothing with this test's marker is alive and no
/// zombie of `comm` is left; panics with what is left otherwise.
fn assert_nothing_left(t: &T, comms: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live = t.live_processes();
        let zombies: Vec<Proc> = comms.iter().flat_map(|c| zombies_named(c)).collect();
        if live.is_empty() && zombies.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let live: Vec<Option<Proc>> = live.iter().map(|&p| proc_stat(p)).collect();
            panic!("left behind: live {live:?}, zombies {zombies:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Zombies named `comm` whose parent is neither a retry nor another member
/// of a tree still being ended: members of an attempt that outlived their
/// retry and were re-parented (to PID 1, ...).
fn leaked_zombies(comm: &str) -> Vec<u32> {
    let ppid = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
    };
    zombies_named(comm)
        .into_iter()
        .filter(|z| {
            ppid(z.pid).and_then(proc_stat).is_none_or(|parent| parent.comm != "retry" && parent.comm != comm)
        })
        .map(|z| z.pid)
        .collect()
}

// ------------------------------------------------------------ random argv

/// One argv word: an option, a value of some kind, garbage, or invalid
/// UTF-8. Garbage words contain `%`, so they never name a real program.
fn word() -> impl Strategy<Value = OsString> {
    let flags = prop::sample::select(vec![
        "-n",
        "--retries",
        "--forever",
        "-t",
        "--timeout",
        "--kill-after",
        "--kill-signal",
        "--max-time",
        "-w",
        "--wait",
        "--algo",
        "--multiplier",
        "--max-wait",
        "-j",
        "--jitter",
        "--reset-after",
        "--splay",
        "--seed",
        "--dry-run",
        "--until",
        "--until-match",
        "--retry-on-exit",
        "--stop-on-exit",
        "--retry-on-stderr",
        "--retry-on-stdout",
        "--stop-on-stderr",
        "--stop-on-stdout",
        "--retry-if",
        "--stdout",
        "--stdin",
        "--foreground",
        "--state-dir",
        "--on-retry",
        "--log-format",
        "-q",
        "-v",
        "-vv",
        "--help",
        "--version",
        "--",
        "-",
        "--nope",
        "-x",
        "--wait=",
        "--timeout=1",
        "-n5",
        "-qv",
    ]);
    let values = prop::sample::select(vec![
        "0",
        "1",
        "3",
        "-1",
        "1.5",
        "0.01",
        "1ms",
        "20ms",
        "1m30s",
        "2h",
        "3days",
        "1e309",
        "nan",
        "inf",
        "-0",
        "18446744073709551616",
        "99999999999999999999days",
        "4294967296",
        "",
        " ",
        "full",
        "equal",
        "none",
        "1.0000001",
        "0.5",
        "2",
        "TERM",
        "SIGKILL",
        "9",
        "64",
        "SIGRTMAX",
        "0-300",
        "1,7,75-78,124",
        "300-1",
        "exponential",
        "linear",
        "fibonacci",
        "constant",
        "decorrelated",
        "sideways",
        "final",
        "live",
        "replay",
        "pass",
        "json",
        "text",
        "github",
        ".ok",
        ".a[",
        "nope(",
        "$attempt > 1",
        "[z-a]",
        "(",
        "^ok$",
        "\\",
        "true",
        ".",
        "..",
        "/",
        "state",
        "x=y",
    ]);
    let garbage = "%[ -~]{0,12}".prop_map(String::from);
    let invalid =
        prop::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 1..8).prop_map(|mut v| {
            v.push(0xff);
            v
        });
    prop_oneof![
        4 => flags.prop_map(OsString::from),
        4 => values.prop_map(OsString::from),
        1 => garbage.prop_map(OsString::from),
        1 => invalid.prop_map(OsString::from_vec),
    ]
}

/// Runs retry on `args` with a 4 s limit; `None` if it was still running
/// (a real run: killed, which is fine here).
fn run_bounded(t: &T, args: &[OsString]) -> Option<(std::process::ExitStatus, String)> {
    let mut cmd = StdCommand::new(bin());
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("TMPDIR", t.path("tmp"))
        .env("RETRY_TEST_MARKER", &t.marker)
        .current_dir(t.dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((status, reader.join().unwrap()));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_argv_is_a_usage_error_help_or_a_run_never_a_panic(words in prop::collection::vec(word(), 0..8)) {
        let t = T::new();
        let mut args = words.clone();
        // A long splay would only make the case slow.
        for i in 0..args.len().saturating_sub(1) {
            if args[i] == "--splay" {
                args[i + 1] = OsString::from("1ms");
            }
        }
        args.extend([OsString::from("--"), OsString::from("true")]);
        if let Some((status, stderr)) = run_bounded(&t, &args) {
            prop_assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            prop_assert!(status.signal().is_none(), "{args:?}: {status:?} {stderr}");
            let code = status.code().unwrap();
            // 0: help, version, dry run or success; 1/124: a run of `true`
            // that failed validation or timed out; 125: usage error;
            // 126/127: a garbage word taken as COMMAND.
            prop_assert!(matches!(code, 0 | 1 | 124 | 125 | 126 | 127), "{args:?}: exit {code}: {stderr}");
            if code == 125 {
                prop_assert!(stderr.starts_with("retry: "), "{args:?}: {stderr}");
            }
        }
        for pid in t.live_processes() {
            kill(pid, libc::SIGKILL);
        }
    }
}

// ------------------------------------------------------------ process trees

both_paths! {
    fn two_hundred_timed_out_trees_leave_nothing_alive_and_no_zombie() {
        let t = T::new();
        // A copy under its own name: core.rs looks for zombies named after the
        // original while this test runs beside it.
        let fx = t.path("stress-tree.sh");
        std::fs::copy(fixture("heartbeat-tree.sh"), &fx).unwrap();
        // Two runs at a time: 200 sequential runs of ~50 ms each would be slow.
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let dir = t.path(&format!("w{w}"));
                std::fs::create_dir(&dir).unwrap();
                let (fx, marker, tmp) = (fx.clone(), t.marker.clone(), t.path("tmp"));
                let argv = retry_argv();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let out = StdCommand::new(&argv[0])
                            .args(&argv[1..])
                            .env_clear()
                            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                            .env("TMPDIR", &tmp)
                            .env("RETRY_TEST_MARKER", &marker)
                            .args(["-q", "-n", "0", "-t", "20ms", "--kill-after", "20ms"])
                            .arg(&fx)
                            .arg(&dir)
                            .stdin(Stdio::null())
                            .output()
                            .unwrap();
                        assert_eq!(out.status.code(), Some(124), "run {i}: {out:?}");
                        // Checked at once: retry waits for the killed group. A
                        // zombie of the other worker's tree may look orphaned for
                        // an instant (its parent just reaped): a leak persists.
                        let mut leaked = leaked_zombies("stress-tree.sh");
                        if !leaked.is_empty() {
                            std::thread::sleep(Duration::from_millis(100));
                            let again = leaked_zombies("stress-tree.sh");
                            leaked.retain(|z| again.contains(z));
                        }
                        assert!(leaked.is_empty(), "run {i}: zombies not reaped by retry: {leaked:?}");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_nothing_left(&t, &["stress-tree.sh"]);
        // Nothing beats any more.
        let beats = |w: u32| std::fs::read(t.path(&format!("w{w}/heartbeat"))).map(|b| b.len()).unwrap_or(0);
        let before = (beats(0), beats(1));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(before, (beats(0), beats(1)));
    }
}

// ------------------------------------------------------------ many attempts

both_paths! {
    fn ten_thousand_attempts_keep_fds_and_memory_flat() {
        let t = T::new();
        // Attempts 100 and 10000 stop until the test has sampled retry.
        let script = "n=$RETRY_ATTEMPT; if [ $n = 100 ] || [ $n = 10000 ]; then \
                      touch at-$n; while [ ! -e go-$n ]; do sleep 0.01; done; fi; [ $n -ge 10000 ]";
        let mut child = t.spawn(&["-q", "-n", "10000", "--wait", "0", "sh", "-c", script]);
        let pid = child.id();
        wait_path(&t.path("at-100"), Duration::from_secs(60));
        let (rss100, fds100) = rss_and_fds(pid);
        std::fs::write(t.path("go-100"), "").unwrap();
        wait_path(&t.path("at-10000"), Duration::from_secs(240));
        let (rss10k, fds10k) = rss_and_fds(pid);
        std::fs::write(t.path("go-10000"), "").unwrap();
        let status = wait_exit(&mut child);
        assert!(status.success(), "{status:?}");
        assert_eq!(fds10k, fds100, "open fds after 100 and 10,000 attempts");
        assert!(rss10k <= rss100 + 256, "RSS {rss100} kB after 100 attempts, {rss10k} kB after 10,000");
        // benches/run.sh holds the release build to 8 MiB; a debug build is larger.
        assert!(rss10k <= 32 * 1024, "RSS {rss10k} kB");
    }
}

// ------------------------------------------------------------ hostile output

#[test]
fn a_100_mb_line_without_newline_is_scanned_and_passed_whole() {
    let t = T::new();
    let size = 100_000_000usize;
    let out = t
        .retry()
        .args(["-n", "1", "--wait", "1ms", "--retry-on-stdout", "needle"])
        .args(sh(&format!("echo run >> count; head -c {size} /dev/zero | tr '\\0' a; printf needle; exit 3")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(t.runs("count"), 2, "the match at the end of the line made it retryable");
    assert_eq!(out.stdout.len(), size + 6);
    assert!(out.stdout.ends_with(b"aaaneedle"));
    // The same on stderr, which streams live while it is scanned.
    let out = t
        .retry()
        .args(["-n", "1", "--wait", "1ms", "--stop-on-stderr", "needle"])
        .args(sh(&format!("head -c {size} /dev/zero >&2; printf needle >&2; exit 3")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let msgs = String::from_utf8_lossy(&out.stderr[size..]).into_owned();
    assert!(out.stderr[..size].iter().all(|b| *b == 0));
    assert!(msgs.starts_with("needle"), "{msgs:.200}");
    assert!(msgs.contains("not retrying: stderr matched --stop-on-stderr 'needle'"), "{msgs}");
}

#[test]
fn invalid_utf8_and_nul_bytes_pass_byte_for_byte_in_every_mode() {
    let t = T::new();
    let bytes: &[u8] = b"\xff\xfe\x00ok\n\xc3\x28\x00\n\x80";
    let script = "printf '\\377\\376\\000ok\\n\\303\\050\\000\\n\\200'; printf '\\377\\000' >&2";
    for mode in [
        &["--stdout", "live"][..],
        &["--stdout", "final"],
        &["--retry-on-stderr", "\\x00", "--stdout", "final"],
    ] {
        let out = t.retry().args(["-n", "0"]).args(mode).args(sh(script)).output().unwrap();
        assert!(out.status.success(), "{mode:?}");
        assert_eq!(out.stdout, bytes, "{mode:?}");
        assert_eq!(&out.stderr[..], b"\xff\x00", "{mode:?}");
    }
    // retry's own JSON messages stay valid JSON.
    let out = t
        .retry()
        .args(["-n", "1", "--wait", "1ms", "--log-format", "json", "--retry-on-stdout", "ok"])
        .args(sh("printf '\\377ok\\n'; exit 2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    for line in String::from_utf8(out.stderr).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

both_paths! {
    fn a_grandchild_holding_the_pipe_delays_retry_by_at_most_the_grace() {
        let t = T::new();
        // Output within the grace after the exit is kept.
        t.retry()
            .args(["-n", "0", "--stdout", "final"])
            .args(sh("(sleep 0.1; echo late) & echo early"))
            .assert()
            .success()
            .stdout("early\nlate\n");
        // A grandchild that keeps the pipe open for 30 s does not hang retry:
        // the pipe is read until EOF or 1 s after the attempt's exit.
        let start = Instant::now();
        t.retry()
            .args(["-n", "1", "--wait", "1ms", "--stdout", "final", "--retry-on-stderr", "x"])
            .args(sh("sleep 30 & echo out; echo x >&2; exit 1"))
            .assert()
            .code(1)
            .stdout("out\n");
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        for pid in t.live_processes() {
            kill(pid, libc::SIGKILL);
        }
    }
}

#[test]
fn a_reader_that_leaves_ends_a_live_run_with_141() {
    let t = T::new();
    let mut child = t.spawn(&[
        "-n",
        "5",
        "--wait",
        "1ms",
        "sh",
        "-c",
        "echo run >> count; yes | head -c 50000000; exit 1",
    ]);
    // t.spawn pipes stdout: read a little, then close it.
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 10];
    out.read_exact(&mut buf).unwrap();
    drop(out);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(141), "{status:?}");
    assert_eq!(t.runs("count"), 1, "no new attempt once stdout is gone");
    let stderr = stderr_of(child);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// ------------------------------------------------------------ hostile environment

#[test]
fn an_unusable_tmpdir_is_125_before_the_first_attempt() {
    let t = T::new();
    std::fs::write(t.path("file"), "").unwrap();
    for tmpdir in [t.path("missing"), t.path("file")] {
        // The three things that need TMPDIR (a run without them needs none).
        for capture in [&["--stdout", "final"][..], &["--stdin", "replay"], &["--temp-state"]] {
            t.retry()
                .env("TMPDIR", &tmpdir)
                .args(["-n", "3"])
                .args(capture)
                .args(["touch", "ran"])
                .assert()
                .code(125)
                .stderr(predicates::str::contains(format!("in TMPDIR ({})", tmpdir.display())))
                // No random file name that was never created.
                .stderr(predicates::str::contains("at path").not());
            assert!(!t.path("ran").exists(), "{tmpdir:?} {capture:?}");
        }
    }
}

#[test]
fn the_state_dir_is_private_whatever_the_umask() {
    let t = T::new();
    let out = StdCommand::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {} -n 0 --temp-state -- sh -c 'stat -c %a \"$RETRY_STATE_DIR\"'",
            path_str(&bin())
        ))
        .env("TMPDIR", t.path("tmp"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "700");
}

#[test]
fn a_nested_retry_sets_its_own_variables() {
    let t = T::new();
    let inner =
        "echo \"$RETRY_ATTEMPT/$RETRY_MAX_ATTEMPTS/$RETRY_LAST_STATUS/$RETRY_STATE_DIR\" >> log; exit 3";
    t.retry()
        .env("RETRY_ATTEMPT", "99")
        .env("RETRY_LAST_STATUS", "42")
        .env("RETRY_MAX_ATTEMPTS", "7")
        .env("RETRY_STATE_DIR", "/nonexistent")
        .args([
            "-q",
            "-n",
            "1",
            "--wait",
            "1ms",
            "--",
            path_str(&bin()),
            "-q",
            "-n",
            "2",
            "--wait",
            "1ms",
            "--temp-state",
        ])
        .args(sh(inner))
        .assert()
        .code(3);
    let lines = t.lines("log");
    assert_eq!(lines.len(), 6, "{lines:?}");
    let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.split('/').collect()).collect();
    let statuses: Vec<String> = fields.iter().map(|f| format!("{}/{}/{}", f[0], f[1], f[2])).collect();
    assert_eq!(statuses, ["1/3/", "2/3/3", "3/3/3", "1/3/", "2/3/3", "3/3/3"]);
    // Each inner run has its own fresh state dir, not the outer one's.
    let dirs: Vec<String> = lines.iter().map(|l| l.splitn(4, '/').nth(3).unwrap().to_string()).collect();
    assert!(dirs.iter().all(|d| d.contains("/retry-") && d != "/nonexistent"), "{dirs:?}");
    assert_ne!(dirs[0], dirs[3]);
}

both_paths! {
    fn a_directory_as_command_is_126_and_a_missing_one_127_without_retrying() {
        let t = T::new();
        std::fs::create_dir(t.path("adir")).unwrap();
        let start = Instant::now();
        t.retry()
            .args(["-n", "3", "--wait", "5s", path_str(&t.path("adir"))])
            .assert()
            .code(126)
            .stderr(predicates::str::contains("cannot execute"));
        t.retry()
            .env("PATH", format!("{}:/usr/bin:/bin", t.dir.path().display()))
            .args(["-n", "3", "--wait", "5s", "adir"])
            .assert()
            .code(126);
        t.retry()
            .args(["-n", "3", "--wait", "5s", "no-such-command-for-retry"])
            .assert()
            .code(127)
            .stderr(predicates::str::contains("command not found"));
        assert!(start.elapsed() < Duration::from_secs(5), "not retried: {:?}", start.elapsed());
    }
}

both_paths! {
    fn closed_standard_fds_at_start_still_run_the_command() {
        let t = T::new();
        let r = retry_argv().iter().map(|w| w.to_str().unwrap()).collect::<Vec<_>>().join(" ");
        for opts in ["", "--stdout final", "--stdin replay --retry-on-stderr err", "--until .ok"] {
            let _ = std::fs::remove_file(t.path("out"));
            let script = format!(
                "{r} {opts} -n 1 --wait 1ms -- sh -c 'echo $RETRY_ATTEMPT >> out; echo \"{{\\\"ok\\\":true}}\"; \
                 echo err >&2; [ $RETRY_ATTEMPT = 2 ]' <&- >&- 2>&-; echo $? > status"
            );
            StdCommand::new("sh")
                .arg("-c")
                .arg(&script)
                .current_dir(t.dir.path())
                .env("TMPDIR", t.path("tmp"))
                .status()
                .unwrap();
            // Attempt 1 fails, attempt 2 succeeds (with good JSON for --until).
            let status = std::fs::read_to_string(t.path("status")).unwrap();
            assert_eq!(status.trim(), "0", "{opts}");
            assert_eq!(t.lines("out"), ["1", "2"], "{opts}");
        }
    }
}

// ------------------------------------------------------------ signals at every phase

both_paths! {
    fn a_signal_during_the_splay_ends_retry_before_any_attempt() {
        let t = T::new();
        for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT")] {
            let mut child = t.spawn(&["--splay", "30s", "--seed", "1", "touch", "ran"]);
            std::thread::sleep(Duration::from_millis(200));
            let start = Instant::now();
            kill(child.id(), sig);
            let status = wait_exit(&mut child);
            assert!(start.elapsed() < Duration::from_secs(5), "{name}");
            assert_eq!(status.signal(), Some(sig), "{name}: {status:?}");
            assert!(!t.path("ran").exists(), "{name}");
        }
        assert_eq!(std::fs::read_dir(t.path("tmp")).unwrap().count(), 0, "state dir removed");
    }
}

both_paths! {
    fn a_signal_during_an_attempt_ends_its_whole_tree() {
        let t = T::new();
        let tree = "(while :; do sleep 0.02; done) & (sleep 30) & touch started; wait";
        for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGHUP, "HUP")] {
            let _ = std::fs::remove_file(t.path("started"));
            let mut child = t.spawn(&["-n", "5", "--wait", "10ms", "sh", "-c", tree]);
            t.wait_for("started");
            kill(child.id(), sig);
            let status = wait_exit(&mut child);
            assert_eq!(status.signal(), Some(sig), "{name}: {status:?}");
            assert_nothing_left(&t, &[]);
        }
    }
}

both_paths! {
    fn a_signal_during_the_sleep_ends_retry_with_128_plus_n() {
        let t = T::new();
        for (sig, name) in [(libc::SIGQUIT, "QUIT"), (libc::SIGHUP, "HUP")] {
            let _ = std::fs::remove_file(t.path("started"));
            let mut child = t.spawn(&["-n", "5", "--wait", "30s", "sh", "-c", "touch started; exit 1"]);
            t.wait_for("started");
            std::thread::sleep(Duration::from_millis(100));
            let start = Instant::now();
            kill(child.id(), sig);
            let status = wait_exit(&mut child);
            assert!(start.elapsed() < Duration::from_secs(5), "{name}");
            assert_eq!(status.signal(), Some(sig), "{name}: {status:?}");
        }
        assert_eq!(std::fs::read_dir(t.path("tmp")).unwrap().count(), 0, "state dir removed");
    }
}

both_paths! {
    fn a_signal_while_final_stdout_is_flushed_to_a_stalled_reader_ends_retry() {
        let t = T::new();
        // The reader (this test) never reads: retry blocks writing 50 MB of
        // captured stdout.
        let mut child = retry_std()
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TMPDIR", t.path("tmp"))
            .env("RETRY_TEST_MARKER", &t.marker)
            .current_dir(t.dir.path())
            .args(["-n", "0", "--stdout", "final", "sh", "-c", "head -c 50000000 /dev/zero; touch done"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        t.wait_for("done");
        std::thread::sleep(Duration::from_millis(300));
        assert!(child.try_wait().unwrap().is_none(), "retry is blocked on its stdout");
        let start = Instant::now();
        kill(child.id(), libc::SIGTERM);
        let status = wait_exit(&mut child);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
        drop(child.stdout.take());
        assert_nothing_left(&t, &[]);
        assert_eq!(std::fs::read_dir(t.path("tmp")).unwrap().count(), 0, "state dir removed");
    }
}
