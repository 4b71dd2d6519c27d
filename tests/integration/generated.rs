//! Shell completions (`completions/`) and the man page (`man/retry.1`) are
//! generated from `Cli::command()` and checked in; this test fails when
//! they are stale. `RETRY_BLESS=1 cargo test` rewrites them.

use std::path::PathBuf;

use clap::CommandFactory as _;
use clap_complete::Generator as _;
use clap_complete::Shell;
use retry::cli::Cli;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compares `path` (relative to the crate) with `want`, or writes it when
/// blessing. Returns a complaint when stale.
fn check(path: &str, want: &[u8]) -> Option<String> {
    let file = root().join(path);
    if std::env::var_os("RETRY_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, want).unwrap();
        return None;
    }
    match std::fs::read(&file) {
        Ok(have) if have == want => None,
        Ok(_) => Some(format!("{path} is stale")),
        Err(e) => Some(format!("{path}: {e}")),
    }
}

fn assert_fresh(complaints: Vec<String>) {
    assert!(
        complaints.is_empty(),
        "{}\nregenerate with: RETRY_BLESS=1 cargo test generated",
        complaints.join("\n")
    );
}

#[test]
fn completions_are_fresh() {
    let mut complaints = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::Elvish, Shell::PowerShell] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "retry", &mut buf);
        let path = format!("completions/{}", shell.file_name("retry"));
        complaints.extend(check(&path, &buf));
    }
    assert_fresh(complaints);
}

#[test]
fn man_page_is_fresh() {
    let page = man_page();
    let text = String::from_utf8_lossy(&page);
    // No date: the page must not change when nothing else did.
    let th = text.lines().find(|l| l.starts_with(".TH")).unwrap();
    assert!(th.starts_with(".TH retry 1 \"\" "), "{th}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH EXAMPLES", ".SH \"EXIT STATUS\""] {
        assert!(text.contains(section), "{section} missing");
    }
    assert!(page.is_ascii(), "non-ASCII left in the page");
    for var in ["RETRY_STATE_STORE", "RETRY_REDIS_PASSWORD", "TMPDIR", "XDG_STATE_HOME", "GITHUB_OUTPUT"] {
        assert!(text.contains(&format!("\\fB{var}\\fR")), "ENVIRONMENT misses {var}");
    }
    assert_fresh(check("man/retry.1", &page).into_iter().collect());
}

/// The page as groff reads it: no warning at all (`groff -ww`), as `man
/// -l --warnings` would show one.
#[test]
fn man_page_has_no_groff_warnings() {
    let Ok(out) = std::process::Command::new("groff")
        .args(["-ww", "-z", "-man", "-Tutf8"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(&man_page())?;
            child.wait_with_output()
        })
    else {
        eprintln!("skipped: groff is not installed");
        return;
    };
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warns");
}

/// clap_mangen's sections, then the long help's trailing text (Examples,
/// Environment, Exit status) as real man sections instead of clap_mangen's
/// EXTRA section, which would fill the examples into one paragraph.
fn man_page() -> Vec<u8> {
    let cmd = Cli::command();
    let footer = cmd.get_after_long_help().map(|h| h.to_string()).unwrap_or_default();
    let cmd = cmd.after_help(None::<&str>).after_long_help(None::<&str>);
    let version = cmd.get_version().unwrap_or_default().to_string();
    let man = clap_mangen::Man::new(cmd);
    // Written by hand: clap_mangen drops an empty date argument, which
    // shifts the source and manual into the date's place.
    let mut out = format!(".TH retry 1 \"\" \"retry {version}\" \"User Commands\"\n").into_bytes();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    out.extend_from_slice(footer_roff(&footer).as_bytes());
    out.extend_from_slice(SEE_ALSO.as_bytes());
    ascii_roff(&String::from_utf8_lossy(&out)).into_bytes()
}

const SEE_ALSO: &str = ".SH \"SEE ALSO\"\n\\fBtimeout\\fR(1), \\fBjq\\fR(1), \\fBcurl\\fR(1)\n";

/// The footer of the long help in roff: `Heading:` lines become sections;
/// a `$ command` line, the lines continuing it (after a trailing `\`) and
/// the lines after it in the same block (a crontab entry) an unfilled,
/// indented example block; `NAME  text` lines of ENVIRONMENT tagged
/// paragraphs; the rest filled paragraphs.
fn footer_roff(footer: &str) -> String {
    let mut out = String::new();
    let mut section = String::new();
    let mut in_example = false;
    for line in footer.lines() {
        let trimmed = line.trim();
        let end_example = |out: &mut String, in_example: &mut bool| {
            if std::mem::take(in_example) {
                out.push_str(".fi\n.RE\n");
            }
        };
        if trimmed.is_empty() {
            end_example(&mut out, &mut in_example);
            out.push_str(".PP\n");
        } else if !line.starts_with(' ') && trimmed.ends_with(':') {
            end_example(&mut out, &mut in_example);
            section = trimmed.trim_end_matches(':').to_uppercase();
            if section.contains(' ') {
                out.push_str(&format!(".SH \"{section}\"\n"));
            } else {
                out.push_str(&format!(".SH {section}\n"));
            }
        } else if let Some(command) = trimmed.strip_prefix("$ ") {
            if !in_example {
                out.push_str(".RS 4\n.nf\n");
                in_example = true;
            }
            out.push_str(&format!("\\fB{}\\fR\n", escape(command)));
        } else if in_example {
            // A command's continuation (indented further), or another line
            // of the example (a crontab entry).
            if line.starts_with("        ") {
                out.push_str(&format!("    \\fB{}\\fR\n", escape(trimmed)));
            } else {
                out.push_str(&format!("{}\n", escape(trimmed)));
            }
        } else if section == "ENVIRONMENT" && line.starts_with("  ") && !line.starts_with("   ") {
            // `  NAME   text`: a tagged paragraph.
            let (name, text) = trimmed.split_once("  ").unwrap_or((trimmed, ""));
            out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", escape(name), escape(text.trim())));
        } else {
            out.push_str(&escape(trimmed));
            out.push('\n');
        }
    }
    if in_example {
        out.push_str(".fi\n.RE\n");
    }
    out
}

/// Roff text: backslashes and hyphens escaped, no line starting a request.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with('.') || text.starts_with('\'') { format!("\\&{text}") } else { text }
}

/// Every character beyond ASCII as a roff escape (`\[u2212]`): groff reads
/// its input as Latin-1 and warns about raw UTF-8.
fn ascii_roff(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    for c in page.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}
