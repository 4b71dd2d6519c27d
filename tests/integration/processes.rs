//! The process path on every kernel, and what happens to an attempt's
//! processes: which path is taken when pidfds are refused, nothing of an
//! attempt outlives a retry or a drain killed by SIGKILL (and no lock is
//! handed on while something of it runs), a stopped attempt still gets
//! forwarded signals, an attempt stopped for the terminal is ended with a
//! hint, and orphans are reaped while the attempt runs. Each behaviour is
//! checked on both process paths (`name::pidfd`, `name::portable`).

use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::server::{Backend, spawn_with};
use crate::util::*;

/// `state`, `ppid` and `pgrp` of a process, from `/proc/PID/stat`.
fn stat3(pid: u32) -> Option<(char, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = stat[stat.rfind(')')? + 2..].split(' ');
    let state = f.next()?.chars().next()?;
    Some((state, f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// Processes of group `pgid` that are not zombies.
fn running_in_group(pgid: u32) -> Vec<u32> {
    procs()
        .into_iter()
        .filter(|p| stat3(p.pid).is_some_and(|(st, _, pg)| pg == pgid && st != 'Z'))
        .map(|p| p.pid)
        .collect()
}

/// A shell pipeline that prints the `/proc/N/stat` line of each process
/// of group PGID (a shell word) that is not a zombie (no `ps` needed).
fn running_in_group_sh(pgid: &str) -> String {
    format!(
        "cat /proc/[0-9]*/stat 2>/dev/null | awk -v g=\"{pgid}\" '{{ sub(/.*\\) /, \"\"); if (g != \"\" && $3 == g && $1 != \"Z\") print }}'"
    )
}

/// Zombies whose parent is `parent`.
fn zombie_children(parent: u32) -> Vec<u32> {
    procs()
        .into_iter()
        .filter(|p| stat3(p.pid).is_some_and(|(st, pp, _)| st == 'Z' && pp == parent))
        .map(|p| p.pid)
        .collect()
}

/// Waits (up to 5 s) until nothing with this test's marker runs.
fn wait_nothing_left(t: &T) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.live_processes().is_empty() {
        let left: Vec<_> = t.live_processes().into_iter().map(proc_stat).collect();
        assert!(Instant::now() < deadline, "left running: {left:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pidfds among the open descriptors of process `pid`.
fn pidfds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy() == "anon_inode:[pidfd]")
                .count()
        })
        .unwrap_or(0)
}

/// Whether retry holds a pidfd while its second attempt runs.
fn holds_a_pidfd_during_an_attempt(t: &T) -> bool {
    let mut child = t.spawn(&[
        "-n",
        "1",
        "--wait",
        "0",
        "sh",
        "-c",
        "[ $RETRY_ATTEMPT = 1 ] && exit 1; touch started; exec sleep 30",
    ]);
    t.wait_for("started");
    let held = pidfds_of(child.id()) > 0;
    kill(child.id(), libc::SIGTERM);
    wait_exit(&mut child);
    std::fs::remove_file(t.path("started")).unwrap();
    held
}

#[test]
fn pidfds_are_used_where_the_kernel_has_them_and_the_pid_path_where_refused() {
    let t = T::new();
    // This machine's kernel has pidfds (5.4 or newer).
    assert!(holds_a_pidfd_during_an_attempt(&t), "pidfd path");
    // clone(CLONE_PIDFD) refused, as by a seccomp policy.
    assert!(!without_pidfds(&[], || holds_a_pidfd_during_an_attempt(&t)), "refused clone");
    // A pidfd from clone but no waitid(P_PIDFD), as on Linux 5.2 and 5.3:
    // learnt at the first spawn.
    assert!(!without_pidfds(&["--waitid-only"], || holds_a_pidfd_during_an_attempt(&t)), "refused waitid");
    // Both still time out, forward and end attempts like the pidfd path.
    for flags in [&[][..], &["--waitid-only"][..]] {
        without_pidfds(flags, || {
            t.retry()
                .args(["-n", "1", "--wait", "0", "-t", "100ms", "sleep", "30"])
                .assert()
                .code(124)
                .stderr(predicate::str::contains("attempt 2/2 failed: timed out after 100ms"));
        });
    }
}

#[test]
fn a_predicate_runs_without_memfd_before_linux_3_17() {
    let t = T::new();
    without_pidfds(&["--no-memfd"], || {
        t.retry().args(["-n", "0", "--until", ".ok", "echo", r#"{"ok":true}"#]).assert().success();
        t.retry()
            .args(["-n", "0", "--until", ".ok", "echo", r#"{"ok":false}"#])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("--until '.ok'"));
    });
    assert_eq!(std::fs::read_dir(t.path("tmp")).unwrap().count(), 0, "the fallback file is unlinked");
}

both_paths! {
    fn retry_killed_with_sigkill_takes_the_attempts_whole_group_along() {
        let t = T::new();
        // Grandchildren, which PR_SET_PDEATHSIG of the attempt does not reach.
        let tree = "sh -c 'sleep 30' & (while :; do sleep 0.02; done) & touch started; wait";
        let mut child = t.spawn(&["-n", "5", "sh", "-c", tree]);
        t.wait_for("started");
        kill(child.id(), libc::SIGKILL);
        wait_exit(&mut child);
        wait_nothing_left(&t);
    }
}

/// The first reproduction of issue 16: `--concurrency 1`, the holder is
/// SIGKILLed while its attempt's grandchild runs; the waiter must not start
/// before that grandchild is gone.
fn a_killed_holders_group_is_gone_before_its_slot_is_handed_on(t: &T, b: &Backend) {
    // A short Redis lease, so the test does not depend on 10 s passing.
    let lease: &[&str] = if b.is_redis() { &["--store-lease", "500ms"] } else { &[] };
    let holder = "echo $$ > a-pgid; sh -c 'while :; do date +%s%N >> a-beats; sleep 0.02; done' & \
                  touch a-started; wait";
    let mut args = b.args("slot");
    args.extend(s(lease));
    args.extend(s(&["--concurrency", "1", "-n", "0", "sh", "-c", holder]));
    let mut a = spawn_with(t, &args, &[]);
    t.wait_for("a-started");
    std::thread::sleep(Duration::from_millis(100));
    // The waiter's attempt first notes the time and what of A's group runs.
    let waiter = format!("date +%s%N > b-start; {} > b-saw", running_in_group_sh("$(cat a-pgid)"));
    let mut args = b.args("slot");
    args.extend(s(lease));
    args.extend(s(&["--concurrency", "1", "--max-time", "30s", "sh", "-c", &waiter]));
    let mut w = spawn_with(t, &args, &[]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!t.path("b-start").exists(), "the slot is held");
    kill(a.id(), libc::SIGKILL);
    wait_exit(&mut a);
    let status = wait_exit(&mut w);
    assert!(status.success(), "{status:?}: {}", stderr_of(w));
    let saw = std::fs::read_to_string(t.path("b-saw")).unwrap();
    assert_eq!(saw, "", "A's group still ran when B's attempt started");
    let start: u128 = std::fs::read_to_string(t.path("b-start")).unwrap().trim().parse().unwrap();
    let beats: Vec<u128> = t.lines("a-beats").iter().filter_map(|l| l.parse().ok()).collect();
    assert!(!beats.is_empty());
    assert!(beats.iter().all(|&beat| beat < start), "A beat after B started: {start} {beats:?}");
    let pgid: u32 = t.lines("a-pgid")[0].parse().unwrap();
    assert_eq!(running_in_group(pgid), Vec::<u32>::new());
    wait_nothing_left(t);
}

mod a_killed_holders_group_is_gone_before_its_slot_is_handed_on {
    use super::*;

    #[test]
    fn file() {
        let t = T::new();
        super::a_killed_holders_group_is_gone_before_its_slot_is_handed_on(&t, &Backend::file(&t));
    }

    #[test]
    fn redis() {
        let t = T::new();
        super::a_killed_holders_group_is_gone_before_its_slot_is_handed_on(&t, &Backend::redis());
    }

    #[test]
    fn file_portable() {
        let t = T::new();
        without_pidfds(&[], || {
            super::a_killed_holders_group_is_gone_before_its_slot_is_handed_on(&t, &Backend::file(&t))
        });
    }
}

both_paths! {
    /// The second reproduction of issue 16: a drain SIGKILLed mid-job; a
    /// next drain must not run the job while the old attempt's grandchild
    /// runs, and runs it once that is gone.
    fn a_drain_killed_mid_job_leaves_nothing_running_and_the_job_locked_until_then() {
        let t = T::new();
        let q = path_str(&t.path("q")).to_string();
        // The killed attempt runs again under the same number (the job
        // file is as it was): its first run is told by the `started` file.
        let job = format!(
            "n=$RETRY_ATTEMPT; echo $n >> runs; [ $n = 1 ] && exit 1; {} >> saw; \
             if [ ! -e started ]; then echo $$ > pgid; sh -c 'while :; do sleep 0.02; done' & \
             touch started; wait; fi",
            running_in_group_sh("$(cat pgid 2>/dev/null)")
        );
        t.retry().args(["--queue", &q, "-n", "0", "--wait", "0", "--", "sh", "-c", &job]).assert().code(75);
        let mut first = t.spawn(&["--drain", &q]);
        t.wait_for("started");
        kill(first.id(), libc::SIGKILL);
        wait_exit(&mut first);
        // Drains until the job ran again: each one skips it while it is held.
        let deadline = Instant::now() + Duration::from_secs(20);
        while t.lines("runs").len() < 3 {
            assert!(Instant::now() < deadline, "the job never ran again");
            t.retry().args(["--drain", &q]).assert().code(0);
        }
        assert_eq!(t.lines("runs"), ["1", "2", "2"]);
        let saw = std::fs::read_to_string(t.path("saw")).unwrap();
        assert_eq!(saw, "", "the old attempt's group still ran when the job ran again");
        let pgid: u32 = t.lines("pgid")[0].parse().unwrap();
        assert_eq!(running_in_group(pgid), Vec::<u32>::new());
        wait_nothing_left(&t);
    }
}

both_paths! {
    /// Issue 15's reproduction: a forwarded signal is followed by SIGCONT.
    fn a_forwarded_signal_reaches_a_stopped_attempt() {
        let t = T::new();
        let mut child = t.spawn(&["-n", "3", "--wait", "0", "sh", "-c", "echo run >> runs; kill -STOP $$"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !t.live_processes().iter().any(|p| proc_stat(*p).is_some_and(|s| s.comm == "sh" && s.state == 'T')) {
            assert!(Instant::now() < deadline, "the attempt never stopped");
            std::thread::sleep(Duration::from_millis(10));
        }
        kill(child.id(), libc::SIGTERM);
        let status = wait_exit(&mut child);
        // The attempt died of the forwarded SIGTERM: 143, re-raised.
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
        assert_eq!(t.runs("runs"), 1);
        wait_nothing_left(&t);
    }
}

/// `script` gives retry a terminal (a pty) whose foreground group is
/// retry's, so an attempt in its own group that reads it gets SIGTTIN.
fn in_a_terminal(t: &T, retry_args: &str) -> (Option<i32>, String) {
    let words: Vec<String> = retry_argv().iter().map(|w| w.to_string_lossy().into_owned()).collect();
    let line = format!("{} {retry_args}", words.join(" "));
    let mut cmd = std::process::Command::new("script");
    t.env(&mut cmd);
    let out = cmd
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) runs");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

both_paths! {
    fn an_attempt_stopped_for_the_terminal_is_ended_with_a_hint() {
        let t = T::new();
        let start = Instant::now();
        let (code, tty) = in_a_terminal(&t, "-n 3 --wait 0 -- sh -c 'echo run >> runs; read x'");
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        // 128 + SIGTTIN (21), a permanent failure: not retried.
        assert_eq!(code, Some(149), "{tty}");
        assert!(
            tty.contains("retry: attempt 1 stopped by SIGTTIN: it reads the terminal; run it with --foreground"),
            "{tty}"
        );
        assert_eq!(t.runs("runs"), 1);
        // With --foreground it reads the terminal (here: EOF at once).
        let (code, tty) = in_a_terminal(&t, "--foreground -n 0 -- sh -c 'read x; echo read $?'");
        assert_eq!(code, Some(0), "{tty}");
        wait_nothing_left(&t);
    }
}

both_paths! {
    /// The same for an orphan of the attempt's group re-parented to retry,
    /// stopped (here it stops itself: no terminal needed), and one that
    /// ignores SIGTERM ends by SIGKILL after --kill-after.
    fn an_orphan_of_the_attempt_stopped_by_sigttou_ends_the_attempt() {
        let t = T::new();
        // It stops once re-parented (its subshell is gone by then).
        let orphan = "(sh -c 'trap \"\" TERM; sleep 0.2; kill -TTOU $$; sleep 30' &); echo run >> runs; sleep 30";
        let start = Instant::now();
        t.retry()
            .args(["-n", "3", "--wait", "0", "--kill-after", "200ms", "sh", "-c", orphan])
            .assert()
            .code(150)
            .stderr(predicate::str::contains(
                "retry: attempt 1 stopped by SIGTTOU: it reads the terminal; run it with --foreground",
            ));
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        assert_eq!(t.runs("runs"), 1);
        wait_nothing_left(&t);
    }
}

both_paths! {
    /// Issue 15's reproduction: fifty orphans that exit at once are reaped
    /// while the attempt still runs, not when it ends.
    fn orphans_are_reaped_while_the_attempt_runs() {
        let t = T::new();
        let mut child = t.spawn(&[
            "-n",
            "0",
            "sh",
            "-c",
            "for i in $(seq 50); do (true &); done; touch looped; sleep 30",
        ]);
        t.wait_for("looped");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let zombies = zombie_children(child.id());
            if zombies.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{} zombies under retry: {zombies:?}", zombies.len());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(child.try_wait().unwrap().is_none(), "the attempt still runs");
        kill(child.id(), libc::SIGTERM);
        wait_exit(&mut child);
        wait_nothing_left(&t);
    }
}
