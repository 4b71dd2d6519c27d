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
    assert_fresh(check("man/retry.1", &page).into_iter().collect());
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
    out
}

const SEE_ALSO: &str = ".SH \"SEE ALSO\"\n\\fBtimeout\\fR(1), \\fBjq\\fR(1), \\fBcurl\\fR(1)\n";

/// The footer of the long help in roff: `Heading:` lines become sections,
/// `$ command` lines unfilled example blocks, the rest filled paragraphs.
fn footer_roff(footer: &str) -> String {
    let mut out = String::new();
    for line in footer.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            out.push_str(".PP\n");
        } else if !line.starts_with(' ') && trimmed.ends_with(':') {
            let heading = trimmed.trim_end_matches(':').to_uppercase();
            if heading.contains(' ') {
                out.push_str(&format!(".SH \"{heading}\"\n"));
            } else {
                out.push_str(&format!(".SH {heading}\n"));
            }
        } else if let Some(command) = trimmed.strip_prefix("$ ") {
            out.push_str(&format!(".RS 4\n.nf\n\\fB{}\\fR\n.fi\n.RE\n", escape(command)));
        } else {
            out.push_str(&escape(trimmed));
            out.push('\n');
        }
    }
    out
}

/// Roff text: backslashes and hyphens escaped, no line starting a request.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with('.') || text.starts_with('\'') { format!("\\&{text}") } else { text }
}
