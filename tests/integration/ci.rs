//! CI logs: `--log-format github` (groups, annotations, step outputs and
//! step summary, read the way the Actions runner and GitHub's Markdown
//! read them) and `--log-format gitlab` (sections, read with GitLab's own
//! marker grammar), and flaky runs with `--flaky-exit`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command as StdCommand;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use serde_json::Value;

use crate::util::*;

/// A command whose attempt N prints `out N` on stdout, `err N` on stderr,
/// `more N` on stdout, and that fails until its third attempt.
fn third_time() -> Vec<String> {
    s(&[
        "sh",
        "-c",
        "n=$(( $(cat count 2>/dev/null || echo 0) + 1 )); echo $n > count; \
         echo \"out $n\"; echo \"err $n\" >&2; echo \"more $n\"; [ $n -ge 3 ]",
    ])
}

/// retry with its stdout and stderr on one pipe (as a CI runner that
/// merges them sees them), `env` added; its status and the merged text.
fn merged(t: &T, env: &[(&str, &str)], args: &[String]) -> (Option<i32>, String) {
    let mut cmd = StdCommand::new("sh");
    t.env(&mut cmd);
    cmd.envs(env.iter().copied());
    cmd.args(["-c", "exec \"$@\" 2>&1", "sh"]).arg(bin()).args(args);
    let out = cmd.output().unwrap();
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

// ----- GitHub: the runner's readers, ported from actions/runner -----

/// A workflow command as the runner reads a line of output.
#[derive(Debug, PartialEq)]
struct Command {
    name: String,
    properties: BTreeMap<String, String>,
    data: String,
}

const COMMANDS: [&str; 9] =
    ["group", "endgroup", "warning", "error", "notice", "debug", "set-output", "add-mask", "stop-commands"];

/// `ActionCommand.TryParseV2`, then the legacy `TryParse` (`##[name]data`
/// anywhere in the line), as `ActionCommandManager.TryProcessCommand`
/// tries them.
fn workflow_command(line: &str) -> Option<Command> {
    let unescape_data = |s: &str| s.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%");
    let unescape_property = |s: &str| {
        s.replace("%0D", "\r")
            .replace("%0A", "\n")
            .replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%25", "%")
    };
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix("::") {
        if let Some(end) = rest.find("::") {
            let info = &rest[..end];
            let (name, props) = info.split_once(' ').unwrap_or((info, ""));
            if COMMANDS.contains(&name) {
                let properties = props
                    .trim()
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.to_string(), unescape_property(v)))
                    .collect();
                return Some(Command {
                    name: name.to_string(),
                    properties,
                    data: unescape_data(&rest[end + 2..]),
                });
            }
        }
    }
    let start = line.find("##[")?;
    let end = start + line[start..].find(']')?;
    let info = &line[start + 3..end];
    let name = info.split(' ').next().unwrap_or("");
    COMMANDS.contains(&name).then(|| Command {
        name: name.to_string(),
        properties: BTreeMap::new(),
        data: line[end + 1..].to_string(),
    })
}

/// The `$GITHUB_OUTPUT` file as the runner reads it (`SetOutputFileCommand`:
/// `NAME=VALUE` lines and `NAME<<DELIMITER` heredocs; an error for
/// anything else, as the runner fails the step).
fn step_outputs(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.split('\n');
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let (name, value) = line.split_at(e);
                assert!(!name.is_empty(), "empty output name: {line:?}");
                out.insert(name.to_string(), value[1..].to_string());
            }
            (_, Some(h)) => {
                let (name, delimiter) = (&line[..h], &line[h + 2..]);
                assert!(!name.is_empty() && !delimiter.is_empty(), "bad heredoc: {line:?}");
                let mut value = Vec::new();
                loop {
                    let next =
                        lines.next().unwrap_or_else(|| panic!("no delimiter {delimiter:?} in {text:?}"));
                    if next == delimiter {
                        break;
                    }
                    value.push(next);
                }
                out.insert(name.to_string(), value.join("\n"));
            }
            _ => panic!("the runner refuses the output line {line:?}"),
        }
    }
    out
}

/// Every table in `markdown`, as rows of cell texts (GFM, as GitHub renders
/// a step summary; `<br>` read as a newline).
fn tables(markdown: &str) -> Vec<Vec<Vec<String>>> {
    let mut tables = Vec::new();
    let mut cell: Option<String> = None;
    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Table(_)) => tables.push(Vec::new()),
            Event::Start(Tag::TableHead | Tag::TableRow) => tables.last_mut().unwrap().push(Vec::new()),
            Event::Start(Tag::TableCell) => cell = Some(String::new()),
            Event::End(TagEnd::TableCell) => {
                let text = cell.take().unwrap();
                tables.last_mut().unwrap().last_mut().unwrap().push(text);
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(c) = &mut cell {
                    c.push_str(&t);
                }
            }
            Event::InlineHtml(h) if h.as_ref() == "<br>" => {
                if let Some(c) = &mut cell {
                    c.push('\n');
                }
            }
            _ => {}
        }
    }
    tables
}

/// The plain text of a Markdown document's paragraphs and headings.
fn plain_text(markdown: &str) -> String {
    let mut out = String::new();
    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        match event {
            Event::Text(t) | Event::Code(t) => out.push_str(&t),
            Event::End(TagEnd::Paragraph | TagEnd::Heading(_)) => out.push('\n'),
            _ => {}
        }
    }
    out
}

fn github_env(t: &T) -> Vec<(&'static str, String)> {
    vec![
        ("GITHUB_STEP_SUMMARY", t.path("summary.md").to_string_lossy().into_owned()),
        ("GITHUB_OUTPUT", t.path("output.txt").to_string_lossy().into_owned()),
    ]
}

fn run_github(t: &T, args: &[&str], command: &[String]) -> (Option<i32>, String) {
    let env = github_env(t);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut all = s(&["--log-format", "github"]);
    all.extend(s(args));
    all.extend(command.iter().cloned());
    merged(t, &env, &all)
}

#[test]
fn github_groups_fold_each_attempt_with_its_output_in_order() {
    let t = T::new();
    let (code, log) = run_github(&t, &["-n", "3", "--wait", "10ms"], &third_time());
    assert_eq!(code, Some(0), "{log}");
    // Walk the log as the runner does: one open group at a time, every
    // line of the command's attempt N inside group N.
    let mut open: Option<String> = None;
    let mut groups = Vec::new();
    let mut annotations = Vec::new();
    for line in log.lines() {
        match workflow_command(line) {
            Some(c) if c.name == "group" => {
                assert!(open.is_none(), "a group opened inside {open:?}:\n{log}");
                open = Some(c.data.clone());
                groups.push((c.data, Vec::new()));
            }
            Some(c) if c.name == "endgroup" => {
                assert!(open.take().is_some(), "endgroup without a group:\n{log}");
            }
            Some(c) => {
                assert!(open.is_none(), "annotation inside a group:\n{log}");
                annotations.push((c.name, c.data));
            }
            None => {
                let (title, lines) = groups.last_mut().unwrap_or_else(|| panic!("{line:?} before a group"));
                assert!(open.is_some(), "{line:?} outside a group:\n{log}");
                lines.push((title.clone(), line.to_string()));
            }
        }
    }
    assert!(open.is_none(), "a group is left open:\n{log}");
    let titles: Vec<&str> = groups.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(titles, ["retry: attempt 1/4", "retry: attempt 2/4", "retry: attempt 3/4"]);
    for (n, (_, lines)) in groups.iter().enumerate() {
        let n = n + 1;
        let got: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(got, [format!("out {n}"), format!("err {n}"), format!("more {n}")], "{log}");
    }
    let kinds: Vec<&str> = annotations.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["warning", "warning", "notice"], "{log}");
    assert!(annotations[2].1.starts_with("attempt 3/4 succeeded after 2 failures in "), "{log}");
    assert!(annotations[2].1.ends_with(" (flaky)"), "{log}");
}

#[test]
fn github_step_outputs_read_as_the_runner_reads_them() {
    // A flaky success with --flaky-exit: status 0 and exit 3.
    let t = T::new();
    let (code, log) = run_github(&t, &["-n", "3", "--wait", "1ms", "--flaky-exit", "3"], &third_time());
    assert_eq!(code, Some(3), "{log}");
    let outputs = step_outputs(&std::fs::read_to_string(t.path("output.txt")).unwrap());
    let want: BTreeMap<String, String> = [
        ("attempts", "3"),
        ("status", "0"),
        ("outcome", "success"),
        ("flaky", "true"),
        ("exit", "3"),
        ("reason", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(outputs, want);
    let error = log.lines().filter_map(workflow_command).find(|c| c.name == "error").unwrap();
    assert!(error.data.ends_with("(flaky); exit status 3 (--flaky-exit)"), "{}", error.data);
    // Giving up, with a reason that holds a newline, `%` and `::`: the
    // heredoc keeps it whole.
    let t = T::new();
    let (code, _) = run_github(
        &t,
        &["-n", "1", "--wait", "1ms", "--retry-on-stderr", "(?x) 100% \n ::error::boom"],
        &s(&["sh", "-c", "echo '100%::error::boom' >&2; exit 7"]),
    );
    assert_eq!(code, Some(7));
    let text = std::fs::read_to_string(t.path("output.txt")).unwrap();
    let outputs = step_outputs(&text);
    assert_eq!(outputs["attempts"], "2");
    assert_eq!(outputs["status"], "7");
    assert_eq!(outputs["outcome"], "exhausted");
    assert_eq!(outputs["flaky"], "false");
    assert!(!outputs.contains_key("exit"), "{text}");
    assert_eq!(outputs["reason"], "exit status 7; stderr matched '(?x) 100% \n ::error::boom'");
    // Without --log-format github, the files are not touched.
    let t = T::new();
    let env = github_env(&t);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, _) = merged(&t, &env, &s(&["true"]));
    assert_eq!(code, Some(0));
    assert!(!t.path("output.txt").exists() && !t.path("summary.md").exists());
}

#[test]
fn github_step_summary_is_a_markdown_table_of_the_attempts() {
    let t = T::new();
    // The reason quotes this regex: `|`, `*`, `<`, a backtick and `\`.
    let reason_rule = "a\\|b \\*c\\* <x> `d` \\\\e";
    let (code, log) = run_github(
        &t,
        &["-n", "2", "--wait", "10ms", "--retry-on-stderr", reason_rule],
        &s(&["sh", "-c", "printf '%s\\n' 'a|b *c* <x> `d` \\e' >&2; exit 4"]),
    );
    assert_eq!(code, Some(4), "{log}");
    let md = std::fs::read_to_string(t.path("summary.md")).unwrap();
    let text = plain_text(&md);
    assert!(text.starts_with("retry: sh -c"), "{text}\n{md}");
    assert!(text.contains("exhausted after 3 attempts in "), "{text}");
    assert!(text.contains("Exit status 4."), "{text}");
    let found = tables(&md);
    assert_eq!(found.len(), 1, "{md}");
    let rows = &found[0];
    assert_eq!(rows[0], ["Attempt", "Duration", "Status", "Verdict", "Reason", "Sleep after"]);
    assert_eq!(rows.len(), 4, "{md}");
    let reason = format!("exit status 4; stderr matched '{reason_rule}'");
    for (n, row) in rows[1..].iter().enumerate() {
        assert_eq!(row.len(), 6, "{row:?}");
        assert_eq!(row[0], (n + 1).to_string());
        assert!(row[1].ends_with("ms") || row[1].ends_with('s'), "{row:?}");
        assert_eq!(row[2], "4");
        assert_eq!(row[3], "retry");
        assert_eq!(row[4], reason, "the reason renders as written");
    }
    assert_eq!((rows[1][5].as_str(), rows[2][5].as_str(), rows[3][5].as_str()), ("10ms", "20ms", ""));
    // A second run appends its own section.
    let (code, _) = run_github(&t, &["--wait", "1ms"], &s(&["true"]));
    assert_eq!(code, Some(0));
    let md = std::fs::read_to_string(t.path("summary.md")).unwrap();
    assert_eq!(tables(&md).len(), 2);
    assert!(plain_text(&md).contains("success on attempt 1/4 in "), "{md}");
}

#[test]
fn github_annotations_escape_percent_newlines_and_colons() {
    let t = T::new();
    let (code, log) = run_github(
        &t,
        &["-n", "1", "--wait", "1ms", "-v", "--retry-on-stderr", "(?x) 100% \n ::error::boom"],
        // `$0` is shown by -v, never printed by the command.
        &s(&["sh", "-c", "echo '100%::error::boom' >&2; exit 1", "##[error]no"]),
    );
    assert_eq!(code, Some(1), "{log}");
    let commands: Vec<Command> = log.lines().filter_map(workflow_command).collect();
    let names: Vec<&str> = commands.iter().map(|c| c.name.as_str()).collect();
    // Nothing quoted from the command became a command of its own: the
    // -v line that quotes `##[error]` stays plain text.
    assert_eq!(names, ["group", "endgroup", "warning", "group", "endgroup", "warning", "error"], "{log}");
    let reason = "(stderr matched '(?x) 100% \n ::error::boom')";
    assert_eq!(commands[2].data, format!("attempt 1/2 failed: exit status 1 {reason}; retrying in 1ms"));
    assert_eq!(commands[5].data, "attempt 2/2 failed: exit status 1");
    assert!(commands[6].data.starts_with("giving up after 2 attempts in "));
    let line = log.lines().find(|l| l.starts_with("::warning::")).unwrap();
    assert!(line.contains("100%25 %0A ::error::boom"), "{line}");
    let running = log.lines().find(|l| l.starts_with("retry: running ")).unwrap();
    assert!(workflow_command(running).is_none(), "{running:?}");
    assert!(running.contains("##\u{2060}[error]"), "{running:?}");
}

#[test]
fn github_spawn_failure_and_interrupt_close_their_group() {
    let t = T::new();
    let (code, log) = run_github(&t, &[], &s(&["retry-test-no-such-command"]));
    assert_eq!(code, Some(127));
    assert_eq!(
        log,
        "::group::retry: attempt 1/4\n::endgroup::\n\
         ::error::cannot run 'retry-test-no-such-command': command not found\n"
    );
    let outputs = step_outputs(&std::fs::read_to_string(t.path("output.txt")).unwrap());
    assert_eq!((outputs["outcome"].as_str(), outputs["status"].as_str()), ("stopped", "127"));
}

// ----- GitLab -----

/// One section marker, read with GitLab's grammar (`Gitlab::Regex`:
/// `section_(start|end):(\d+):([a-zA-Z0-9_.-]+)` and options
/// `[k=v, …]`, then `\r\e[0K`), after the `\e[0K` that opens it.
#[derive(Debug, Clone, PartialEq)]
struct Marker {
    start: bool,
    time: u64,
    name: String,
    options: String,
    /// The header that follows a start on the same line.
    header: String,
}

fn marker(line: &str) -> Option<Marker> {
    let re = regex::Regex::new(
        r"^\x1b\[0Ksection_((?:start)|(?:end)):(\d+):([a-zA-Z0-9_.-]+)(\[(?:\w+=\w+)(?:, ?(?:\w+=\w+))*\])?\r\x1b\[0K(.*)$",
    )
    .unwrap();
    let c = re.captures(line)?;
    Some(Marker {
        start: &c[1] == "start",
        time: c[2].parse().unwrap(),
        name: c[3].to_string(),
        options: c.get(4).map_or("", |m| m.as_str()).to_string(),
        header: c[5].to_string(),
    })
}

/// The sections of a log: (start, end, the lines between), checked to be
/// well-formed (no marker text left outside the grammar, each start
/// closed by an end of the same name before the next starts).
fn sections(log: &str) -> Vec<(Marker, Marker, Vec<String>)> {
    let mut out = Vec::new();
    let mut open: Option<(Marker, Vec<String>)> = None;
    for line in log.lines() {
        if line.contains("section_") {
            let m = marker(line).unwrap_or_else(|| panic!("malformed marker {line:?}"));
            match (m.start, open.take()) {
                (true, None) => open = Some((m, Vec::new())),
                (false, Some((start, lines))) => {
                    assert_eq!(start.name, m.name, "{log:?}");
                    assert!(m.header.is_empty());
                    assert!(start.time <= m.time);
                    out.push((start, m, lines));
                }
                (true, Some(_)) => panic!("nested section: {log:?}"),
                (false, None) => panic!("end without start: {log:?}"),
            }
        } else if let Some((_, lines)) = &mut open {
            lines.push(line.to_string());
        }
    }
    assert!(open.is_none(), "a section is left open: {log:?}");
    out
}

#[test]
fn gitlab_sections_wrap_each_attempt_and_a_line_says_how_it_ended() {
    let t = T::new();
    let mut args = s(&["--log-format", "gitlab", "-n", "3", "--wait", "10ms"]);
    args.extend(third_time());
    let (code, log) = merged(&t, &[], &args);
    assert_eq!(code, Some(0), "{log}");
    let secs = sections(&log);
    assert_eq!(secs.len(), 3, "{log:?}");
    for (n, (start, end, lines)) in secs.iter().enumerate() {
        let n = n + 1;
        assert_eq!(start.header, format!("retry: attempt {n}/4"));
        assert!(start.name.starts_with(&format!("retry_attempt_{n}_")), "{}", start.name);
        assert_eq!(start.options, "[collapsed=true]", "attempt 4 is the last possible, not 3");
        assert_eq!(lines, &[format!("out {n}"), format!("err {n}"), format!("more {n}")]);
        // retry's own line right after the section says how it ended.
        let after = log.lines().skip_while(|l| marker(l).as_ref() != Some(end)).nth(1).unwrap();
        let want = if n < 3 {
            format!("retry: attempt {n}/4 failed: exit status 1; retrying in ")
        } else {
            "retry: attempt 3/4 succeeded in ".to_string()
        };
        assert!(after.starts_with(&want), "{after:?}");
    }
    // Every line outside a section is retry's own.
    let mut inside = false;
    for line in log.lines() {
        match marker(line) {
            Some(m) => inside = m.start,
            None => assert!(inside || line.starts_with("retry: "), "{line:?} outside a section"),
        }
    }
    let last = log.lines().last().unwrap();
    assert!(last.starts_with("retry: attempt 3/4 succeeded after 2 failures in "), "{last:?}");
    assert!(last.ends_with(" (flaky)"), "{last:?}");
}

#[test]
fn gitlab_expands_only_the_last_possible_attempt_and_names_are_unique() {
    let t = T::new();
    // Two runs writing to one job log: every section name differs.
    let mut log = String::new();
    for _ in 0..2 {
        let (code, text) =
            merged(&t, &[], &s(&["--log-format", "gitlab", "-n", "2", "--wait", "1ms", "false"]));
        assert_eq!(code, Some(1));
        log.push_str(&text);
    }
    let secs = sections(&log);
    assert_eq!(secs.len(), 6);
    let names: BTreeSet<&str> = secs.iter().map(|(s, _, _)| s.name.as_str()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    let options: Vec<&str> = secs.iter().map(|(s, _, _)| s.options.as_str()).collect();
    let c = "[collapsed=true]";
    assert_eq!(options, [c, c, "", c, c, ""], "attempt 3 of -n 2 is the last possible");
    // With --forever none is known to be the last: all collapsed.
    let (code, text) = merged(
        &t,
        &[],
        // Sleeps of 100ms, 200ms: the second would end past --max-time.
        &s(&["--log-format", "gitlab", "--forever", "--max-time", "250ms", "--wait", "100ms", "false"]),
    );
    assert_eq!(code, Some(1));
    let secs = sections(&text);
    assert_eq!(secs.len(), 2, "{text:?}");
    assert!(secs.iter().all(|(s, _, _)| s.options == c), "{text:?}");
    // Nor with --reset-on-progress: an attempt that made progress does
    // not count, so the last possible one is not known.
    let (code, text) = merged(
        &t,
        &[],
        &s(&[
            "--log-format",
            "gitlab",
            "-n",
            "1",
            "--wait",
            "1ms",
            "--temp-state",
            "--reset-on-progress",
            "false",
        ]),
    );
    assert_eq!(code, Some(1), "{text}");
    let secs = sections(&text);
    assert_eq!(secs.len(), 2, "{text:?}");
    assert!(secs.iter().all(|(s, _, _)| s.options == c), "{text:?}");
    // A drained job's sections are collapsed too, and named per job.
    let t = T::new();
    for _ in 0..2 {
        t.retry().args(["-n", "0", "--wait", "0", "--queue", "q", "false"]).assert().code(75);
    }
    let (code, text) = merged(&t, &[], &s(&["--drain", "q", "--log-format", "gitlab"]));
    assert_eq!(code, Some(75), "{text}");
    let secs = sections(&text);
    assert_eq!(secs.len(), 2, "{text:?}");
    assert!(secs.iter().all(|(s, _, _)| s.options == c && s.header.starts_with("retry: job ")), "{text:?}");
    assert_ne!(secs[0].0.name, secs[1].0.name);
}

// ----- Flaky runs -----

fn fail_times(t: &T, n: u32, code: u32) -> Vec<String> {
    s(&[path_str(&fixture("fail-times.sh")), path_str(&t.path("count")), &n.to_string(), &code.to_string()])
}

fn json_done(stderr: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stderr);
    let last = text.lines().last().unwrap_or_else(|| panic!("no output"));
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(v["event"], "done", "{text}");
    v
}

#[test]
fn a_flaky_run_says_so_in_the_text_line_done_and_summary() {
    let t = T::new();
    let out = t.retry().args(["-n", "3", "--wait", "1ms"]).args(fail_times(&t, 2, 5)).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stderr);
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("retry: attempt 3/4 succeeded after 2 failures in "), "{last}");
    assert!(last.ends_with("s (flaky)"), "{last}");
    let t = T::new();
    let out = t.retry().args(["-n", "3", "--wait", "1ms"]).args(fail_times(&t, 1, 5)).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("succeeded after 1 failure in "), "{text}");

    for (args, flaky, status, exit, code) in [
        (&["-n", "3"][..], true, 0, None, 0),
        (&["-n", "3", "--flaky-exit", "9"], true, 0, Some(9), 9),
        (&["-n", "0"], false, 5, None, 5),
        (&["-n", "0", "--flaky-exit", "9"], false, 5, None, 5),
    ] {
        let t = T::new();
        let out = t
            .retry()
            .args(["--log-format", "json", "--wait", "1ms", "--summary", "s.json"])
            .args(args)
            .args(fail_times(&t, 1, 5))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let done = json_done(&out.stderr);
        assert_eq!(done["flaky"], flaky, "{done}");
        assert_eq!(done["status"], status, "{done}");
        assert_eq!(done.get("exit").cloned(), exit.map(Value::from), "{done}");
        let summary: Value = serde_json::from_slice(&std::fs::read(t.path("s.json")).unwrap()).unwrap();
        assert_eq!(summary["flaky"], flaky);
        assert_eq!(summary["status"], status);
        assert_eq!(summary["exit"], exit.map_or(Value::Null, Value::from));
        assert_eq!(
            summary["options"]["flaky_exit"],
            Value::from(args.contains(&"--flaky-exit").then_some(9))
        );
    }
    // A first-attempt success is not flaky.
    let t = T::new();
    let out = t.retry().args(["--log-format", "json", "--flaky-exit", "9", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_done(&out.stderr)["flaky"], false);
}

#[test]
fn flaky_exit_changes_only_a_flaky_success() {
    let t = T::new();
    let sh = |script: &str| s(&["sh", "-c", script]);
    // (options, command, the status without --flaky-exit)
    let cases: Vec<(Vec<String>, Vec<String>, i32)> = vec![
        (s(&[]), s(&["true"]), 0),
        (s(&["-n", "1", "--wait", "1ms"]), sh("exit 6"), 6),
        (s(&["--stop-on-exit", "6"]), sh("exit 6"), 6),
        (s(&["--max-time", "200ms", "--wait", "10s"]), sh("exit 6"), 6),
        (s(&["--max-time", "100ms"]), s(&["sleep", "5"]), 124),
        (s(&["-n", "0", "--queue", "q"]), sh("exit 6"), 75),
        (s(&[]), s(&["retry-test-no-such-command"]), 127),
        (s(&["--until-match", "ok", "-n", "1", "--wait", "1ms"]), sh("echo no"), 1),
    ];
    for (opts, command, plain) in &cases {
        for flaky_exit in [None, Some("9")] {
            let mut cmd = t.retry();
            cmd.args(opts);
            if let Some(n) = flaky_exit {
                cmd.args(["--flaky-exit", n]);
            }
            let out = cmd.args(command).output().unwrap();
            assert_eq!(out.status.code(), Some(*plain), "{opts:?} {command:?} {flaky_exit:?}");
        }
    }
    // A circuit that refuses the run (75), and a run interrupted by a
    // signal while it sleeps (143), keep their status too.
    let store = format!("file:{}", t.path("store").display());
    for code in [1, 75] {
        t.retry()
            .args(["--key", "k", "--state-store", &store, "--circuit-break", "1", "--flaky-exit", "9"])
            .args(["-n", "0", "false"])
            .assert()
            .code(code);
    }
    let mut child = t.spawn(&["--flaky-exit", "9", "--wait", "30s", "sh", "-c", "touch started; exit 1"]);
    t.wait_for("started");
    std::thread::sleep(std::time::Duration::from_millis(100));
    kill(child.id(), libc::SIGTERM);
    let status = wait_exit(&mut child);
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    // Only the flaky success takes N.
    let t = T::new();
    t.retry().args(["--wait", "1ms", "--flaky-exit", "9"]).args(fail_times(&t, 1, 5)).assert().code(9);
}

#[test]
fn flaky_exit_is_validated_and_refused_by_a_drain() {
    let t = T::new();
    for bad in ["0", "75", "124", "125", "200", "x"] {
        let out = t.retry().args(["--flaky-exit", bad, "touch", "ran"]).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{bad}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("--flaky-exit") && text.contains(&format!("'{bad}'")), "{text}");
        assert!(!t.path("ran").exists());
    }
    let out = t.retry().args(["--drain", "q", "--flaky-exit", "3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'--flaky-exit' cannot be used with --drain"));
    // A job's saved --flaky-exit belongs to its queueing run: the drain's
    // success of it is a plain success.
    t.retry()
        .args(["-n", "0", "--wait", "0", "--flaky-exit", "3", "--queue", "q"])
        .args(fail_times(&t, 1, 5))
        .assert()
        .code(75);
    t.retry().args(["--drain", "q"]).assert().code(0);
}
