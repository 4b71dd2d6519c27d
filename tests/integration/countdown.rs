//! The live countdown: one updating line during a sleep over a second, on
//! a real pseudo-terminal (`script(1)` from util-linux gives the command a
//! pty), erased before the next attempt starts and when a signal ends the
//! sleep; nothing of it in a pipe, in JSON, or with -q.

use std::process::{Command, Output, Stdio};

use crate::util::*;

const ERASE: &str = "\r\x1b[K";

/// `retry ARGS` with stdin, stdout and stderr on a pseudo-terminal; the
/// terminal's output comes back on script's stdout.
fn script(t: &T, args: &[&str]) -> Command {
    let mut line = shell_quote(path_str(&bin()));
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    let mut cmd = Command::new("script");
    t.env(&mut cmd);
    cmd.args(["-qec", &line, "/dev/null"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn countdown_counts_down_on_one_line_and_is_erased_before_the_next_attempt() {
    let t = T::new();
    let out = script(&t, &["-n", "1", "--wait", "1500ms", "sh", "-c", "echo start $RETRY_ATTEMPT; exit 1"])
        .output()
        .unwrap();
    let tty = text(&out);
    assert_eq!(out.status.code(), Some(1), "{tty:?}");
    let first = tty.find("retry: attempt 2/2 in 2s…").unwrap_or_else(|| panic!("no countdown: {tty:?}"));
    let second =
        tty.find("\r\x1b[Kretry: attempt 2/2 in 1s…").unwrap_or_else(|| panic!("no update: {tty:?}"));
    let next = tty.find("start 2").unwrap();
    assert!(first < second && second < next, "{tty:?}");
    // The countdown redraws in place (no newline) and is erased right
    // before the next attempt's output.
    let during = &tty[first..next];
    assert!(!during.contains('\n'), "{during:?}");
    assert!(during.ends_with(ERASE), "{during:?}");
    assert!(!tty[next..].contains('…'), "{tty:?}");
    // Every countdown line is on the line the failure message ended.
    assert!(tty.contains("retrying in 1.5s\r\n\r\x1b[Kretry: attempt 2/2 in 2s…"), "{tty:?}");
}

#[test]
fn countdown_is_erased_when_a_signal_ends_the_sleep() {
    let t = T::new();
    let mut child =
        script(&t, &["-n", "3", "--wait", "30s", "sh", "-c", "touch started; exit 1"]).spawn().unwrap();
    t.wait_for("started");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let retry: Vec<u32> = t
        .live_processes()
        .into_iter()
        .filter(|pid| proc_stat(*pid).is_some_and(|p| p.comm == "retry"))
        .collect();
    assert_eq!(retry.len(), 1, "{retry:?}");
    kill(retry[0], libc::SIGTERM);
    let status = wait_exit(&mut child);
    let out = child.wait_with_output().unwrap();
    let tty = text(&out);
    assert_eq!(status.code(), Some(143), "{tty:?}");
    assert!(tty.contains("retry: attempt 2/4 in 30s…"), "{tty:?}");
    assert!(tty.contains(&format!("…{ERASE}retry: interrupted by SIGTERM after 1 attempt")), "{tty:?}");
}

#[test]
fn no_countdown_for_short_sleeps_in_json_or_with_quiet() {
    let t = T::new();
    let out = script(&t, &["-n", "1", "--wait", "900ms", "false"]).output().unwrap();
    assert!(!text(&out).contains('…'), "{:?}", text(&out));
    let out = script(&t, &["-n", "1", "--wait", "1200ms", "--log-format", "json", "false"]).output().unwrap();
    let tty = text(&out);
    assert!(!tty.contains('…') && !tty.contains('\x1b'), "{tty:?}");
    for line in tty.lines() {
        serde_json::from_str::<serde_json::Value>(line.trim_end_matches('\r')).unwrap();
    }
    let out = script(&t, &["-q", "-n", "1", "--wait", "1200ms", "false"]).output().unwrap();
    assert_eq!(text(&out), "");
}

#[test]
fn no_countdown_when_stderr_is_a_pipe() {
    let t = T::new();
    let out = t.retry().args(["-n", "1", "--wait", "1200ms", "false"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(!err.contains('…') && !err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    assert_eq!(err.lines().count(), 3, "{err:?}");
}
