//! GitHub Actions (`--log-format github`): the escaping of workflow
//! commands, and what a run leaves for the workflow at its end — a
//! Markdown section appended to `$GITHUB_STEP_SUMMARY` and the step
//! outputs appended to `$GITHUB_OUTPUT` (SPEC "Messages and reports").
//! Text is made here, pure; [`append`] is the one write.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::summary::{EndRecord, Kept};
use crate::parse::human;

/// A reason longer than this is cut in the step summary's table.
pub const SUMMARY_REASON: usize = 300;

/// Attempts the step summary lists from the start and from the end of a
/// run (the ones between are counted): GitHub takes at most 1 MiB of step
/// summary per step, and a table of a `--forever` run must stay readable.
pub const SUMMARY_ATTEMPTS: (usize, usize) = (50, 50);

/// Where the workflow reads what a step leaves: `$GITHUB_STEP_SUMMARY`
/// and `$GITHUB_OUTPUT`, when they name files.
#[derive(Clone, Debug, Default)]
pub struct Files {
    pub step_summary: Option<PathBuf>,
    pub output: Option<PathBuf>,
}

impl Files {
    /// From the environment: set and non-empty.
    pub fn from_env() -> Files {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Files { step_summary: var("GITHUB_STEP_SUMMARY"), output: var("GITHUB_OUTPUT") }
    }
}

/// How a run ended, for the step summary and the outputs.
pub struct RunEnd<'a> {
    /// COMMAND and its arguments.
    pub command: &'a [String],
    pub end: &'a EndRecord,
    /// Attempts this run made.
    pub attempts: u32,
    /// `-n`'s total, `None` with `--forever`.
    pub total: Option<u32>,
    pub kept: &'a Kept,
    /// retry's own error that ended the run (outcome `error`).
    pub error: Option<&'a str>,
}

impl RunEnd<'_> {
    /// What a later step may want to show: retry's error, else the last
    /// attempt's reason (none after a success).
    fn reason(&self) -> String {
        match (self.error, self.end.outcome) {
            (Some(e), _) => e.to_string(),
            (None, "success") => String::new(),
            (None, _) => self.kept.records().last().and_then(|r| r.reason.clone()).unwrap_or_default(),
        }
    }

    /// retry's exit status.
    fn exit(&self) -> u8 {
        self.end.exit.unwrap_or(self.end.status)
    }
}

/// Workflow command data: `%`, CR and LF escaped (as the runner's
/// `ActionCommand` unescapes them). `::` needs no escape in data: the
/// runner splits a command line at its first `::` after the command name.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// One of retry's own plain lines: the runner also reads the old command
/// form `##[name]data` anywhere in a line that is not a `::` command, so
/// a `##[` quoted from COMMAND (by `-v`, or in a reason) is broken with an
/// invisible word joiner; a line never starts with `::` (it starts with
/// `retry: `).
pub fn plain(line: &str) -> String {
    line.replace("##[", "##\u{2060}[")
}

/// `GITHUB_OUTPUT` lines: `attempts`, `status`, `outcome`, `flaky`, then
/// `exit` when `--flaky-exit` changed the exit status, then `reason` in
/// the heredoc form (it may hold newlines), with a delimiter found in no
/// line of it.
pub fn outputs(r: &RunEnd<'_>, seed: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "attempts={}", r.attempts);
    let _ = writeln!(out, "status={}", r.end.status);
    let _ = writeln!(out, "outcome={}", r.end.outcome);
    let _ = writeln!(out, "flaky={}", r.end.flaky);
    if let Some(exit) = r.end.exit {
        let _ = writeln!(out, "exit={exit}");
    }
    let reason = r.reason();
    let mut n = seed;
    let delimiter = loop {
        let d = format!("ghadelimiter_{n:016x}");
        if !reason.lines().any(|l| l == d) {
            break d;
        }
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    };
    let _ = writeln!(out, "reason<<{delimiter}\n{reason}\n{delimiter}");
    out
}

/// The step summary's section: a heading with the command, how the run
/// ended, and a table of the attempts.
pub fn step_summary(r: &RunEnd<'_>) -> String {
    let mut out = String::new();
    let command = super::shell_words(r.command);
    let _ = writeln!(out, "### retry: {}\n", code_span(&command));
    let e = r.end;
    let took = human(e.elapsed);
    let n = r.attempts;
    let attempts = crate::parse::count(u64::from(n), "attempt");
    let mut line = match (r.error, e.outcome) {
        (Some(message), _) => format!("**error**: {}", markdown(message)),
        (None, "success") => {
            let of = super::of(n, r.total);
            let mut s = format!("**success** on attempt {of} in {}", markdown(&took));
            if e.flaky {
                let failures = crate::parse::count(u64::from(n - 1), "failed attempt");
                s.push_str(&format!(": **flaky** ({failures} before it)"));
            }
            s
        }
        (None, outcome) => {
            let mut s = format!("**{outcome}** after {attempts} in {}", markdown(&took));
            let reason = r.reason();
            if !reason.is_empty() {
                s.push_str(&format!("; last: {}", markdown(&cut(&reason, SUMMARY_REASON))));
            }
            s
        }
    };
    match e.exit {
        Some(exit) => line.push_str(&format!(". Exit status {exit} ({})", markdown("--flaky-exit"))),
        None => line.push_str(&format!(". Exit status {}", r.exit())),
    }
    let _ = writeln!(out, "{line}.\n");
    if r.kept.count() == 0 {
        return out;
    }
    out.push_str("| Attempt | Duration | Status | Verdict | Reason | Sleep after |\n");
    out.push_str("| ---: | ---: | ---: | :--- | :--- | ---: |\n");
    for (i, a) in r.kept.records().enumerate() {
        if i == r.kept.before_gap() && r.kept.omitted() > 0 {
            let _ = writeln!(out, "| … | | | | {} attempts not shown | |", r.kept.omitted());
        }
        let reason = a.reason.as_deref().map(|s| markdown(&cut(s, SUMMARY_REASON))).unwrap_or_default();
        let sleep = a.delay.map(|d| markdown(&human(d))).unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {reason} | {sleep} |",
            a.attempt,
            markdown(&human(a.duration)),
            a.status,
            a.verdict.word(),
        );
    }
    out.push('\n');
    out
}

/// Text for a Markdown paragraph or table cell, shown as it is: every
/// ASCII punctuation character backslash-escaped (CommonMark allows it
/// for any, and GFM tables read `\|` as a pipe in the cell), a newline as
/// `<br>`, other control characters as spaces.
pub fn markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A code span holding `s` literally: a fence longer than any run of
/// backticks in it, a space inside each end (which CommonMark strips),
/// control characters shown as `\n`-style escapes (a span is one line).
pub fn code_span(s: &str) -> String {
    let text: String = s
        .chars()
        .flat_map(|c| match c {
            '\n' => "\\n".chars().collect::<Vec<_>>(),
            '\r' => "\\r".chars().collect(),
            '\t' => "\\t".chars().collect(),
            c if c.is_control() => c.escape_unicode().collect(),
            c => vec![c],
        })
        .collect();
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    format!("{fence} {text} {fence}")
}

/// `s` cut to at most `limit` characters, marking the cut.
fn cut(s: &str, limit: usize) -> String {
    match s.char_indices().nth(limit) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Appends `text` to the file `path` (created if missing), in one write.
pub fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_data_escapes_percent_cr_and_lf() {
        assert_eq!(escape_data("50% done\r\nnext::error::x"), "50%25 done%0D%0Anext::error::x");
    }

    #[test]
    fn code_spans_hold_backticks() {
        assert_eq!(code_span("make test"), "` make test `");
        assert_eq!(code_span("echo `x` ``y``"), "``` echo `x` ``y`` ```");
        assert_eq!(code_span("a\nb"), "` a\\nb `");
    }

    #[test]
    fn markdown_text_is_escaped() {
        assert_eq!(markdown("a|b *c* <x>\nd"), "a\\|b \\*c\\* \\<x\\><br>d");
        assert_eq!(cut("ééé", 2), "éé…");
    }
}
