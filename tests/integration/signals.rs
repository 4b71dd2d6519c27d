//! Signals sent to retry: forwarded to the attempt's group, no new attempt
//! afterwards, a signal during a sleep ends retry at once, a second SIGINT
//! kills, and a 128+N status is a real death by signal N.

use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use crate::util::*;

both_paths! {
    fn sigterm_is_forwarded_and_retry_exits_with_the_attempts_status() {
        let t = T::new();
        let dir = t.path("");
        let d = path_str(&dir);
        let fx = fixture("trap-signal.sh");
        let mut child = t.spawn(&["-n", "5", "--wait", "10ms", path_str(&fx), d, "TERM", "9"]);
        t.wait_for("started");
        kill(child.id(), libc::SIGTERM);
        let status = wait_exit(&mut child);
        assert_eq!(status.code(), Some(9), "{status:?}");
        assert!(t.path("got-TERM").exists(), "the attempt saw SIGTERM");
        assert_eq!(t.runs("runs"), 1, "no new attempt after a signal");
        let stderr = stderr_of(child);
        assert!(stderr.contains("interrupted by SIGTERM after 1 attempt"), "{stderr}");
    }
}

both_paths! {
    fn every_forwarded_signal_reaches_the_group() {
        for (sig, name) in [(libc::SIGINT, "INT"), (libc::SIGHUP, "HUP"), (libc::SIGQUIT, "QUIT")] {
            let t = T::new();
            let dir = t.path("");
            let fx = fixture("trap-signal.sh");
            let mut child = t.spawn(&["-n", "5", "--wait", "10ms", path_str(&fx), path_str(&dir), name, "3"]);
            t.wait_for("started");
            kill(child.id(), sig);
            let status = wait_exit(&mut child);
            assert_eq!(status.code(), Some(3), "{name}: {status:?}");
            assert!(t.path(&format!("got-{name}")).exists(), "{name}");
        }
    }
}

both_paths! {
    fn a_signal_during_the_sleep_ends_retry_at_once_with_128_plus_n() {
        let t = T::new();
        let mut child = t.spawn(&["-n", "5", "--wait", "30s", "sh", "-c", "touch started; exit 1"]);
        t.wait_for("started");
        // The attempt is over when retry (and its guardian) are the test's
        // only live processes.
        let deadline = Instant::now() + Duration::from_secs(20);
        while t.live_processes_but_guardians() != [child.id()] {
            assert!(Instant::now() < deadline, "the attempt did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
        let start = Instant::now();
        kill(child.id(), libc::SIGTERM);
        let status = wait_exit(&mut child);
        assert!(start.elapsed() < Duration::from_secs(5));
        // Re-raised: the parent sees a death by SIGTERM, a shell 143.
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    }
}

both_paths! {
    fn an_attempt_killed_by_sigint_makes_retry_die_by_sigint() {
        let t = T::new();
        let mut child = t.spawn(&["-n", "5", "--wait", "10ms", "sh", "-c", "exec sleep 30"]);
        t.wait_for_process("sleep");
        kill(child.id(), libc::SIGINT);
        let status = wait_exit(&mut child);
        assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    }
}

both_paths! {
    fn a_second_sigint_sends_sigkill() {
        let t = T::new();
        let dir = t.path("");
        let fx = fixture("ignore-signal.sh");
        let mut child = t.spawn(&["-n", "5", "--wait", "10ms", path_str(&fx), path_str(&dir), "INT"]);
        t.wait_for("started");
        kill(child.id(), libc::SIGINT);
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "the attempt ignores the first SIGINT");
        kill(child.id(), libc::SIGINT);
        let status = wait_exit(&mut child);
        // The attempt died of SIGKILL: 137, re-raised.
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert_eq!(t.runs("runs"), 1);
        assert!(t.live_processes().is_empty());
    }
}

both_paths! {
    fn foreground_signals_only_the_child_not_retrys_group() {
        let t = T::new();
        let dir = t.path("");
        let fx = fixture("trap-signal.sh");
        let mut child =
            t.spawn(&["--foreground", "-n", "5", "--wait", "10ms", path_str(&fx), path_str(&dir), "TERM", "4"]);
        t.wait_for("started");
        kill(child.id(), libc::SIGTERM);
        let status = wait_exit(&mut child);
        assert_eq!(status.code(), Some(4), "{status:?}");
    }
}

both_paths! {
    fn a_signal_before_the_first_attempt_ends_retry() {
        let t = T::new();
        let mut child = t.spawn(&["--splay", "30s", "--seed", "3", "sh", "-c", "touch ran"]);
        std::thread::sleep(Duration::from_millis(200));
        kill(child.id(), libc::SIGHUP);
        let status = wait_exit(&mut child);
        assert_eq!(status.signal(), Some(libc::SIGHUP), "{status:?}");
        assert!(!t.path("ran").exists());
    }
}

both_paths! {
    fn retry_killed_with_sigkill_takes_its_attempt_along() {
        let t = T::new();
        let mut child = t.spawn(&["-n", "5", "sh", "-c", "touch started; exec sleep 30"]);
        t.wait_for("started");
        std::thread::sleep(Duration::from_millis(50));
        kill(child.id(), libc::SIGKILL);
        wait_exit(&mut child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.live_processes().is_empty() {
            assert!(Instant::now() < deadline, "the attempt outlived retry (PR_SET_PDEATHSIG)");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

both_paths! {
    fn a_signal_while_a_predicate_runs_ends_the_run() {
        let t = T::new();
        let mut child = t.spawn(&[
            "-n",
            "5",
            "--wait",
            "10ms",
            "-t",
            "20s",
            "--until",
            "def f: f; f",
            "sh",
            "-c",
            "echo run >> runs; touch started; echo '{}'",
        ]);
        t.wait_for("started");
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        kill(child.id(), libc::SIGTERM);
        let status = wait_exit(&mut child);
        assert!(start.elapsed() < Duration::from_secs(10));
        // The attempt exited 0 but did not pass validation: 1, and no new attempt.
        assert_eq!(status.code(), Some(1), "{status:?}");
        assert_eq!(t.runs("runs"), 1);
    }
}
