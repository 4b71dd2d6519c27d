//! Output inspection: stream rules, captured stdout, jq predicates,
//! --until-match, --retry-if and stdin replay.

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::util::*;

/// `sh -c SCRIPT` where the script sees $RETRY_ATTEMPT.
fn sh(script: &str) -> [String; 3] {
    ["sh".into(), "-c".into(), script.into()]
}

fn json_after(t: &T, n: u32) -> Vec<String> {
    s(&[path_str(&fixture("json-after.sh")), path_str(&t.path("count")), &n.to_string()])
}

#[test]
fn retry_on_stderr_matches_a_later_line_as_it_streams() {
    let t = T::new();
    t.retry()
        .args(["-n", "2", "--wait", "1ms", "--retry-on-stderr", "^curl: \\(6\\) Could not resolve"])
        .args(sh("printf 'first\\ncurl: (6) Could not resolve host\\n' >&2; [ $RETRY_ATTEMPT -ge 2 ]"))
        .assert()
        .success()
        // stderr still reaches the user, byte for byte.
        .stderr(predicate::str::contains("first\ncurl: (6) Could not resolve host\n"))
        .stderr(predicate::str::contains("(stderr matched '^curl: \\(6\\) Could not resolve'); retrying"));
}

#[test]
fn a_failure_that_matches_no_retry_rule_is_final() {
    let t = T::new();
    t.retry()
        .args(["-n", "3", "--wait", "1ms", "--retry-on-stderr", "timeout", "--retry-on-stdout", "busy"])
        .args(sh("echo run >> count; echo other >&2; echo fine; exit 5"))
        .assert()
        .code(5);
    assert_eq!(t.runs("count"), 1);
}

#[test]
fn stream_rules_or_together_and_stop_rules_win() {
    let t = T::new();
    t.retry()
        .args(["-n", "3", "--wait", "1ms", "--retry-on-stderr", "timeout", "--retry-on-stdout", "busy"])
        .args(sh("echo run >> count; echo busy; [ $RETRY_ATTEMPT -ge 3 ]"))
        .assert()
        .success()
        .stdout("busy\n");
    assert_eq!(t.runs("count"), 3);
    let t = T::new();
    t.retry()
        .args(["-n", "3", "--wait", "1ms", "--retry-on-stderr", "timeout", "--stop-on-stderr", "denied"])
        .args(sh("echo run >> count; echo 'timeout; access denied' >&2; exit 1"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not retrying: stderr matched --stop-on-stderr 'denied'"));
    assert_eq!(t.runs("count"), 1);
}

#[test]
fn stop_on_stdout_also_stops_a_validation_failure() {
    let t = T::new();
    t.retry()
        .args(["-n", "3", "--wait", "1ms", "--until-match", "ready", "--stop-on-stdout", "gone forever"])
        .args(sh("echo run >> count; echo 'gone forever'"))
        .assert()
        .code(1);
    assert_eq!(t.runs("count"), 1);
}

#[test]
fn rules_match_invalid_utf8_and_nul_bytes() {
    let t = T::new();
    t.retry()
        .args(["-n", "2", "--wait", "1ms", "--retry-on-stderr", "(?-u)\\xff\\x00err"])
        .args(sh("printf '\\377\\000err\\n' >&2; [ $RETRY_ATTEMPT -ge 2 ]"))
        .assert()
        .success()
        .stderr(predicate::function(|e: &[u8]| e.windows(5).any(|w| w == b"\xff\x00err")));
}

#[test]
fn a_failed_attempts_stdout_never_reaches_the_pipe() {
    let t = T::new();
    t.retry()
        .args(["-n", "5", "--wait", "1ms", "--stdout", "final"])
        .args(sh("echo \"attempt $RETRY_ATTEMPT\"; [ $RETRY_ATTEMPT -ge 3 ]"))
        .assert()
        .success()
        .stdout("attempt 3\n");
    // Giving up: the last attempt's stdout.
    t.retry()
        .args(["-n", "2", "--wait", "1ms", "--stdout", "final"])
        .args(sh("echo \"attempt $RETRY_ATTEMPT\"; exit 4"))
        .assert()
        .code(4)
        .stdout("attempt 3\n");
}

#[test]
fn stdout_live_streams_every_attempt_and_still_inspects() {
    let t = T::new();
    t.retry()
        .args(["-n", "5", "--wait", "1ms", "--stdout", "live", "--until-match", "^ready$"])
        .args(sh("echo \"attempt $RETRY_ATTEMPT\"; [ $RETRY_ATTEMPT -ge 2 ] && echo ready; exit 0"))
        .assert()
        .success()
        .stdout("attempt 1\nattempt 2\nready\n");
}

#[test]
fn until_accepts_the_attempt_whose_json_holds() {
    let t = T::new();
    t.retry()
        .args(["-n", "5", "--wait", "1ms", "--until", ".status == \"ok\""])
        .args(json_after(&t, 2))
        .assert()
        .success()
        .stdout("{\"status\":\"ok\",\"run\":3}\n")
        .stderr(predicate::str::contains("--until '.status == \"ok\"': last output was false; retrying"));
    assert_eq!(t.runs("count"), 3);
}

#[test]
fn until_failing_on_the_last_attempt_exits_1() {
    let t = T::new();
    t.retry()
        .args(["-n", "1", "--wait", "1ms", "--until", ".status == \"ok\""])
        .args(json_after(&t, 9))
        .assert()
        .code(1)
        .stdout("{\"status\":\"pending\"}\n");
}

#[test]
fn until_reads_ndjson_and_the_last_output_decides() {
    let t = T::new();
    t.retry()
        .args(["-n", "0", "--until", ".ok"])
        .args(sh("echo '{\"ok\":false}'; echo '{\"ok\":true} {\"ok\":1}'"))
        .assert()
        .success();
    t.retry()
        .args(["-n", "0", "--until", ".ok"])
        .args(sh("echo '{\"ok\":true}'; echo '{\"ok\":null}'"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("last output was null"));
}

#[test]
fn until_on_stdout_that_is_not_json_fails_with_the_reason() {
    let t = T::new();
    t.retry()
        .args(["-n", "0", "--until", ".ok"])
        .args(sh("echo '<html>'"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("stdout is not JSON"));
    t.retry()
        .args(["-n", "0", "--until", ".ok"])
        .arg("true")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("stdout is empty"));
    t.retry()
        .args(["-n", "0", "--until", ".a.b"])
        .args(sh("echo '{\"a\":5}'"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error: cannot index"));
}

#[test]
fn several_untils_must_all_hold() {
    let t = T::new();
    t.retry()
        .args(["-n", "0", "--until", ".a == 1", "--until", ".b == 2"])
        .args(sh("echo '{\"a\":1,\"b\":3}'"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--until '.b == 2'"))
        .stderr(predicate::str::contains("--until '.a == 1'").not());
}

#[test]
fn attempt_variable_can_relax_a_predicate() {
    let t = T::new();
    t.retry()
        .args([
            "-n",
            "5",
            "--wait",
            "1ms",
            "--until",
            ".n >= 10 or $attempt >= 3",
            "--until",
            "$elapsed >= 0",
        ])
        .args(sh("echo run >> count; echo '{\"n\":1}'"))
        .assert()
        .success();
    assert_eq!(t.runs("count"), 3);
}

#[test]
fn runaway_predicates_neither_crash_nor_hang_retry() {
    let t = T::new();
    t.retry()
        .args(["-n", "0", "--until", "def f: 1 + f; f"])
        .args(sh("echo '{}'"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("evaluation crashed"))
        .stderr(predicate::str::contains("overflowed").not());
    let start = Instant::now();
    t.retry()
        .args(["-n", "0", "-t", "300ms", "--until", "def f: f; f"])
        .args(sh("echo '{}'"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("evaluation did not finish within 300ms"));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn until_match_needs_every_regex_on_some_line() {
    let t = T::new();
    t.retry()
        .args(["-n", "4", "--wait", "1ms", "--until-match", "^done$", "--until-match", "rows: [0-9]+"])
        .args(sh(
            "echo run >> count; echo start; echo 'rows: 12'; [ $RETRY_ATTEMPT -ge 2 ] && echo done; exit 0",
        ))
        .assert()
        .success()
        .stdout("start\nrows: 12\ndone\n");
    assert_eq!(t.runs("count"), 2);
}

#[test]
fn until_match_finds_a_match_that_crosses_the_1_mib_line_window() {
    // SPEC: "with no size cap". One line of 1 MiB - 3 bytes, then NEEDLE:
    // the match straddles the first MiB.
    let t = T::new();
    let mut line = vec![b'a'; (1 << 20) - 3];
    line.extend_from_slice(b"NEEDLE\n");
    std::fs::write(t.path("l"), &line).unwrap();
    for rule in ["NEEDLE", "^a+NEEDLE$"] {
        t.retry()
            .args(["-n", "0", "--until-match", rule, "cat", "l"])
            .assert()
            .success()
            .stdout(line.clone());
    }
    t.retry()
        .args(["-n", "0", "--until-match", "^NEEDLE"])
        .args(["cat", "l"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--until-match '^NEEDLE' matched no line"));
}

#[test]
fn stream_rules_see_a_match_at_the_end_of_a_3_mib_line_streamed_live() {
    // A 3 MiB line of minified JSON-like text whose only "error" is at its
    // end, with --stdout live: stdout passes byte for byte, the rule sees it.
    let t = T::new();
    let mut line = b"{\"items\":[".to_vec();
    while line.len() < 3 << 20 {
        line.extend_from_slice(b"{\"id\":1,\"ok\":true},");
    }
    line.extend_from_slice(b"{\"status\":\"error\"}]}");
    std::fs::write(t.path("big.json"), &line).unwrap();
    t.retry()
        .args([
            "-n",
            "2",
            "--wait",
            "1ms",
            "--stdout",
            "live",
            "--stop-on-stdout",
            r#""status":"error"\}\]\}$"#,
        ])
        .args(sh("echo run >> count; cat big.json; exit 3"))
        .assert()
        .code(3)
        .stdout(line.clone())
        .stderr(predicate::str::contains("matched"));
    assert_eq!(t.runs("count"), 1, "the stop rule matched the end of the long line");
}

#[test]
fn streamed_stdout_with_a_rule_needs_no_spill_file() {
    // --stdout live with a stdout rule scans the output as it passes: no
    // copy of it in TMPDIR (only --until, which parses all of it, keeps one).
    let t = T::new();
    t.retry()
        .env("TMPDIR", t.path("missing"))
        .args(["-n", "1", "--wait", "1ms", "--stdout", "live", "--retry-on-stdout", "^busy$"])
        .args(sh("echo busy; [ $RETRY_ATTEMPT -ge 2 ]"))
        .assert()
        .success()
        .stdout("busy\nbusy\n");
    t.retry()
        .env("TMPDIR", t.path("missing"))
        .args(["-n", "0", "--stdout", "live", "--until", ".ok"])
        .args(sh("echo '{\"ok\": true}'"))
        .assert()
        .code(125)
        .stderr(predicate::str::contains("TMPDIR"));
}

#[test]
fn a_line_written_in_pieces_is_matched_whole() {
    // The pieces arrive in separate reads: the rule sees the whole line,
    // and a rule that would need two lines at once sees nothing.
    let t = T::new();
    t.retry()
        .args(["-n", "0", "--until-match", "^abc def$", "--until-match", "^ghi$"])
        .args(sh(
            "printf 'ab'; sleep 0.05; printf 'c de'; sleep 0.05; printf 'f\ngh'; sleep 0.05; printf 'i'",
        ))
        .assert()
        .success()
        .stdout("abc def\nghi");
    t.retry()
        .args(["-n", "0", "--until-match", "def\\sghi"])
        .args(sh("printf 'abc def'; sleep 0.05; printf '\nghi\n'"))
        .assert()
        .code(1);
}

#[test]
fn a_big_captured_stdout_comes_out_byte_for_byte_to_a_pipe_and_to_a_file() {
    // 12 MiB: past the 4 MiB kept in memory, so the rest is spliced into
    // the spill file and written out by the kernel (sendfile to a pipe,
    // copy_file_range to a file).
    let t = T::new();
    captured_comes_out_to_a_pipe_and_to_a_file(&t, 12 << 20);
}

/// Writes `len` bytes to `data`, and checks that the second attempt's
/// `cat data`, captured, reaches a pipe and a file byte for byte, once.
fn captured_comes_out_to_a_pipe_and_to_a_file(t: &T, len: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(t.path("data"), &data).unwrap();
    let args = ["-n", "1", "--wait", "1ms", "--stdout", "final"];
    t.retry()
        .args(args)
        .args(sh("cat data; [ $RETRY_ATTEMPT -ge 2 ]"))
        .assert()
        .success()
        .stdout(data.clone());
    let out = std::fs::File::create(t.path("out")).unwrap();
    let mut cmd = retry_std();
    t.env(&mut cmd);
    let status = cmd
        .args(args)
        .args(sh("cat data; [ $RETRY_ATTEMPT -ge 2 ]"))
        .stdin(Stdio::null())
        .stdout(out)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(std::fs::read(t.path("out")).unwrap() == data, "the file holds the last attempt's stdout once");
    data
}

#[test]
fn without_splice_tee_and_sendfile_output_is_moved_by_read_and_write() {
    // A seccomp policy that refuses them (no-pidfd --no-splice): captured
    // and streamed output arrive all the same, byte for byte.
    without_pidfds(&["--no-splice"], || {
        let t = T::new();
        let data = captured_comes_out_to_a_pipe_and_to_a_file(&t, 6 << 20);
        t.retry()
            .args(["-n", "0", "--stdout", "live", "--until-match", "^end$"])
            .args(sh("cat data; echo; echo end"))
            .assert()
            .success()
            .stdout([&data[..], b"\nend\n"].concat());
    });
}

#[test]
fn retry_if_sees_the_context_object() {
    let t = T::new();
    t.retry()
        .args(["-n", "3", "--wait", "1ms"])
        .args(["--retry-if", ".status == 7 and .exit_code == 7 and .signal == null and (.stderr | test(\"try again\")) and .attempt <= 2 and .stdout == null"])
        .args(sh("echo run >> count; echo 'please try again' >&2; exit 7"))
        .assert()
        .code(7)
        .stderr(predicate::str::contains("please try again"))
        .stderr(predicate::str::contains("--retry-if did not hold"));
    assert_eq!(t.runs("count"), 3);
}

#[test]
fn retry_if_is_ored_with_other_retry_rules() {
    let t = T::new();
    t.retry()
        .args(["-n", "3", "--wait", "1ms", "--retry-on-exit", "9", "--retry-if", ".status == 4"])
        .args(sh("echo run >> count; [ $RETRY_ATTEMPT -eq 1 ] && exit 9; [ $RETRY_ATTEMPT -eq 2 ] && exit 4; exit 5"))
        .assert()
        .code(5);
    assert_eq!(t.runs("count"), 3);
}

#[test]
fn retry_if_judges_validation_failures() {
    let t = T::new();
    t.retry()
        .args([
            "-n",
            "3",
            "--wait",
            "1ms",
            "--until",
            ".ok",
            "--retry-if",
            "(.validation | length > 0) and .stdout != null",
        ])
        .args(sh("echo run >> count; echo '{\"ok\":false}'"))
        .assert()
        .code(1);
    assert_eq!(t.runs("count"), 4);
}

#[test]
fn a_big_captured_attempt_keeps_retry_small_and_leaves_no_spill_file() {
    let t = T::new();
    let mut child = t.spawn(&[
        "-n",
        "0",
        "--stdout",
        "final",
        "sh",
        "-c",
        "head -c 52428800 /dev/zero; touch wrote; sleep 1",
    ]);
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match std::io::Read::read(&mut out, &mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k as u64,
            }
        }
    });
    t.wait_for("wrote");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let kb = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    // The peak of everything, and the memory that would grow with the
    // output (heap, stack, anonymous maps: not the binary's own code
    // pages, which grow with the debug binary, ~10 MiB of the peak).
    let (hwm_kb, anon_kb) = (kb("VmHWM:"), kb("RssAnon:"));
    // Nothing in TMPDIR by name: the spill file is unlinked from the start
    // (and the run has no state dir).
    let names: Vec<String> = std::fs::read_dir(t.path("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert!(wait_exit(&mut child).success());
    assert_eq!(reader.join().unwrap(), 50 << 20);
    assert!(anon_kb < 8 * 1024, "anonymous RSS {anon_kb} kB after 50 MiB of output");
    assert!(hwm_kb < 20 * 1024, "peak RSS {hwm_kb} kB");
    assert_eq!(std::fs::read_dir(t.path("tmp")).unwrap().count(), 0);
}

#[test]
fn stdin_is_replayed_to_every_attempt_byte_for_byte() {
    let t = T::new();
    let input: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    t.retry()
        .args(["-n", "2", "--wait", "1ms", "--stdin", "replay"])
        .args(sh("cat > got.$RETRY_ATTEMPT; exit 1"))
        .write_stdin(input.clone())
        .assert()
        .code(1);
    for k in 1..=3 {
        assert_eq!(std::fs::read(t.path(&format!("got.{k}"))).unwrap(), input, "attempt {k}");
    }
}

#[test]
fn an_attempt_that_reads_part_of_stdin_leaves_the_rest_for_the_next() {
    let t = T::new();
    let input: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    t.retry()
        .args(["-n", "2", "--wait", "1ms", "--stdin", "replay"])
        .args(sh("if [ $RETRY_ATTEMPT -eq 1 ]; then head -c 10 > got.1; exit 1; fi; cat > got.$RETRY_ATTEMPT; [ $RETRY_ATTEMPT -ge 3 ]"))
        .write_stdin(input.clone())
        .assert()
        .success();
    assert_eq!(std::fs::read(t.path("got.1")).unwrap(), &input[..10]);
    assert_eq!(std::fs::read(t.path("got.2")).unwrap(), input);
    assert_eq!(std::fs::read(t.path("got.3")).unwrap(), input);
}

#[test]
fn without_replay_the_attempts_inherit_stdin() {
    let t = T::new();
    t.retry()
        .args(["-n", "1", "--wait", "1ms"])
        .args(sh("cat > got.$RETRY_ATTEMPT; exit 1"))
        .write_stdin("once")
        .assert()
        .code(1);
    assert_eq!(std::fs::read_to_string(t.path("got.1")).unwrap(), "once");
    assert_eq!(std::fs::read_to_string(t.path("got.2")).unwrap(), "");
}

#[test]
fn a_closed_stdout_downstream_ends_retry_cleanly() {
    let t = T::new();
    let mut child = std::process::Command::new(bin())
        .args(["-n", "3", "--wait", "1ms", "--stdout", "final", "sh", "-c", "head -c 10000000 /dev/zero"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    drop(out);
    let status = wait_exit(&mut child);
    assert!(status.code().is_some(), "no death by signal: {status:?}");
    let stderr = stderr_of(child);
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(t);
}

#[test]
fn bad_regexes_and_expressions_are_125_with_a_position() {
    let t = T::new();
    t.retry().args(["--retry-on-stderr", "ab(c", "touch", "ran"]).assert().code(125).stderr(
        predicate::str::starts_with(
            "retry: invalid value 'ab(c' for '--retry-on-stderr': unclosed group at column 3\n",
        ),
    );
    t.retry()
        .args(["--until", ".a[", "touch", "ran"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("invalid value '.a[' for '--until': "))
        .stderr(predicate::str::contains("line 1, column 4"));
    t.retry().args(["--retry-if", "nope(", "touch", "ran"]).assert().code(125);
    t.retry().args(["--until-match", "[z-a]", "touch", "ran"]).assert().code(125);
    t.retry()
        .args(["--stdout", "sideways", "touch", "ran"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("invalid value 'sideways' for '--stdout <MODE>'"));
    t.retry().args(["--stdin", "twice", "touch", "ran"]).assert().code(125);
    assert!(!t.path("ran").exists());
}

#[test]
fn binary_stdout_is_passed_byte_for_byte_when_captured() {
    let t = T::new();
    let mut child = std::process::Command::new(bin())
        .args(["-n", "0", "--stdout", "final", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(5 << 20).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || stdin.write_all(&data))
    };
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, data);
    drop(t);
}

#[test]
fn captured_stdout_that_cannot_be_written_is_an_error_not_a_silent_success() {
    let t = T::new();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = std::process::Command::new(bin())
        .args(["--stdout", "final", "echo", "hi"])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write the captured stdout"));
    drop(t);
}
