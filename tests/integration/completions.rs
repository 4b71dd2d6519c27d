//! The checked-in completions (`completions/`) in the real shells: bash
//! (readline on a pseudo-terminal from script(1), with and without
//! bash-completion), zsh (its completion system on a zpty) and fish
//! (`complete -C`). Before COMMAND they offer retry's options and their
//! values; from COMMAND on, COMMAND's own completion (a dummy `mycmd`
//! that completes `alpha`, `beta` and `--mine`), never retry's options.
//! A shell that is not installed is skipped, saying so (`scripts/test`
//! installs them all).

use std::fs::Permissions;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Long enough for a shell to start on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// bash-completion's main script (Debian's place, which CI uses).
const BASH_COMPLETION: &str = "/usr/share/bash-completion/bash_completion";

fn completions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("completions")
}

/// Copies `completions/NAME` to `to` in the sandbox's home, where README
/// says to install it.
fn install(t: &T, name: &str, to: &str) -> PathBuf {
    let to = t.dir.path().join(to);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(completions_dir().join(name), &to).unwrap();
    to
}

fn installed(program: &str) -> bool {
    let found = StdCommand::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null", "sh", program])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: {program} is not installed (scripts/test installs it)");
    }
    found
}

/// A sandbox whose PATH starts with `bin/`, holding `mycmd` and
/// `curlish` (for `cu<TAB>`), and a directory `sub-dir` to complete.
fn sandbox() -> T {
    let t = T::new();
    let bin = t.path("bin");
    std::fs::create_dir(&bin).unwrap();
    for name in ["mycmd", "curlish"] {
        let file = bin.join(name);
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir(t.path("sub-dir")).unwrap();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    t.with_env("PATH", &path)
}

/// What the driver scripts print: "== LINE", then the candidates.
fn parse(out: &str, lines: &[&str]) -> Vec<Vec<String>> {
    let mut offers: Vec<Vec<String>> = Vec::new();
    for row in out.lines() {
        if let Some(line) = row.strip_prefix("== ") {
            assert_eq!(Some(&line), lines.get(offers.len()), "driver output:\n{out}");
            offers.push(Vec::new());
        } else if let Some(current) = offers.last_mut() {
            let row = row.to_string();
            if !row.is_empty() && !current.contains(&row) {
                current.push(row);
            }
        }
    }
    assert_eq!(offers.len(), lines.len(), "driver output:\n{out}");
    offers
}

/// One completion to check: at the end of `line`, every word of `offers`
/// is offered (`exactly`: nothing else) and none of `never`.
struct Case {
    line: &'static str,
    offers: &'static [&'static str],
    exactly: bool,
    never: &'static [&'static str],
}

const fn offers(line: &'static str, offers: &'static [&'static str]) -> Case {
    Case { line, offers, exactly: false, never: &[] }
}

const fn exactly(line: &'static str, offers: &'static [&'static str]) -> Case {
    Case { line, offers, exactly: true, never: &[] }
}

impl Case {
    const fn never(self, never: &'static [&'static str]) -> Case {
        Case { never, ..self }
    }
}

/// retry's options, none of which may be offered after COMMAND.
const RETRY_OPTIONS: &[&str] = &["--wait", "--retries", "-n", "--algo", "--help"];

/// What every shell must do (bash with bash-completion).
fn common_cases() -> Vec<Case> {
    vec![
        // COMMAND: a command name, after options and their values.
        offers("retry -n 3 cu", &["curlish"]).never(RETRY_OPTIONS),
        offers("retry cu", &["curlish"]),
        offers("retry -- cu", &["curlish"]),
        offers("retry -q -n3 --jitter full --wait=1s my", &["mycmd"]),
        // After COMMAND: COMMAND's completion.
        exactly("retry --wait 1s mycmd al", &["alpha"]),
        exactly("retry -- mycmd al", &["alpha"]),
        exactly("retry -qn 3 mycmd b", &["beta"]),
        exactly("retry --wait=1s mycmd al", &["alpha"]),
        exactly("retry --rotate M=https://a.example,https://b.example mycmd al", &["alpha"]),
        exactly("retry --until '.a == \"x y\"' mycmd al", &["alpha"]),
        exactly("retry -n 3 mycmd alpha --wait 1s b", &["beta"]),
        exactly("retry -n 3 -- mycmd al", &["alpha"]),
        exactly("retry -n 3 mycmd --", &["--mine"]).never(RETRY_OPTIONS),
        offers("retry -n 3 mycmd -", &["--mine"]).never(RETRY_OPTIONS),
        // retry under a command that hands over too, and under itself.
        exactly("nice retry -n 3 mycmd al", &["alpha"]),
        exactly("retry -n 1 retry -w 2s mycmd al", &["alpha"]),
        offers("retry -n 1 retry --al", &["--algo"]),
        // Before COMMAND: retry's options and the values clap knows.
        offers("retry --al", &["--algo"]),
        offers("retry -n 3 -q --w", &["--wait", "--wait-from"]).never(&["--mine"]),
        exactly("retry --algo l", &["linear"]),
        exactly("retry --log-format g", &["github", "gitlab"]),
        offers("retry -n 3 --summary sub", &["sub-dir"]),
    ]
}

/// Checks each case against what the shell offered; all failures at once.
fn check(shell: &str, cases: &[Case], offered: &[Vec<String>]) {
    let mut wrong = Vec::new();
    for (case, got) in cases.iter().zip(offered) {
        // A directory may come with its slash.
        let has = |want: &str| got.iter().any(|g| g == want || g.strip_suffix('/') == Some(want));
        let missing: Vec<_> = case.offers.iter().filter(|w| !has(w)).collect();
        let unwanted: Vec<_> = case.never.iter().filter(|w| has(w)).collect();
        let extra = case.exactly && got.len() != case.offers.len();
        if !missing.is_empty() || !unwanted.is_empty() || extra {
            let shown: Vec<_> = got.iter().take(20).collect();
            wrong.push(format!(
                "{shell}: `{}<TAB>` offered {shown:?}{}; wanted {:?}{}{}",
                case.line,
                if got.len() > 20 { " …" } else { "" },
                case.offers,
                if case.exactly { " only" } else { "" },
                if case.never.is_empty() { String::new() } else { format!(", never {:?}", case.never) },
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------
// bash

/// Types each line and a TAB into `bash -i` on a pseudo-terminal and
/// returns what retry's completion offered for each.
fn bash_offers(t: &T, bash_completion: Option<&str>, cases: &[Case]) -> Vec<Vec<String>> {
    let capture = t.path("capture");
    std::fs::create_dir(&capture).unwrap();
    let rc = fixture("complete-bash.rc");
    let mut cmd = StdCommand::new("script");
    t.env(&mut cmd);
    cmd.env("TERM", "dumb")
        .env("INPUTRC", "/dev/null")
        .env("BASH_COMPLETION_SCRIPT", bash_completion.unwrap_or(""))
        .env("XDG_DATA_HOME", t.path(".local/share"))
        .env("RETRY_COMPLETIONS", completions_dir())
        .env("CAPTURE", &capture)
        .args(["-qc", &format!("bash --rcfile '{}' -i", path_str(&rc)), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut session = Session(cmd.spawn().expect("script(1) from util-linux runs bash on a terminal"));
    let mut stdin = session.0.stdin.take().unwrap();
    let wait_for = |file: &Path, what: &str| {
        let start = Instant::now();
        while !file.exists() {
            assert!(
                start.elapsed() < PATIENCE,
                "bash: {what} (nothing in {} after {PATIENCE:?})",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(&capture.join("ready"), "the rc file did not run");
    let errors = std::fs::read_to_string(capture.join("errors")).unwrap();
    assert!(errors.is_empty(), "loading retry's completion: {errors}");
    let compspec = std::fs::read_to_string(capture.join("compspec")).unwrap();
    assert!(compspec.contains("-F _retry "), "retry's completion not loaded: {compspec}");
    let mut offered = Vec::new();
    for (i, line) in cases.iter().map(|c| c.line).enumerate() {
        // ^U afterwards empties the line for the next one.
        stdin.write_all(format!("{line}\t").as_bytes()).unwrap();
        stdin.flush().unwrap();
        let file = capture.join((i + 1).to_string());
        wait_for(&file, &format!("`{line}<TAB>` did not run retry's completion"));
        let text = std::fs::read_to_string(&file).unwrap();
        offered.push(text.lines().filter(|l| !l.is_empty()).map(String::from).collect());
        stdin.write_all(b"\x15").unwrap();
    }
    stdin.write_all(b"exit\n").unwrap();
    offered
}

/// script(1) and its bash, killed when the test is done with them (or
/// failed).
struct Session(Child);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bash_hands_over_to_the_commands_completion_with_bash_completion() {
    if !installed("bash") || !installed("script") {
        return;
    }
    assert!(
        Path::new(BASH_COMPLETION).exists(),
        "{BASH_COMPLETION} is missing: apt-get install bash-completion (scripts/test does)"
    );
    let t = sandbox();
    install(&t, "retry.bash", ".local/share/bash-completion/completions/retry");
    let mut cases = common_cases();
    cases.extend([
        // The value after = too (readline splits --algo=l in three words).
        exactly("retry --algo=l", &["linear"]),
        // A new word after COMMAND's arguments.
        offers("retry -n 3 mycmd alpha ", &["alpha", "beta"]),
    ]);
    check("bash", &cases, &bash_offers(&t, Some(BASH_COMPLETION), &cases));
}

#[test]
fn bash_without_bash_completion_completes_command_names_then_leaves_file_names_to_readline() {
    if !installed("bash") || !installed("script") {
        return;
    }
    let t = sandbox();
    let cases = [
        offers("retry -n 3 cu", &["curlish"]).never(RETRY_OPTIONS),
        offers("retry -- cu", &["curlish"]),
        // Empty: readline's default completion, file names.
        exactly("retry -n 3 mycmd al", &[]),
        exactly("retry -n 3 mycmd --", &[]),
        offers("retry --al", &["--algo"]),
        exactly("retry --algo l", &["linear"]),
    ];
    check("bash without bash-completion", &cases, &bash_offers(&t, None, &cases));
}

// ---------------------------------------------------------------------
// zsh

#[test]
fn zsh_hands_over_to_the_commands_completion() {
    if !installed("zsh") {
        return;
    }
    let t = sandbox();
    let mut cases = common_cases();
    cases.extend([
        exactly("retry --algo=l", &["linear"]),
        // Directories only (bash's are added by readline: -o plusdirs).
        exactly("retry --state-dir s", &["sub-dir"]),
        // A quoted command line is completed as one.
        offers("retry --on-retry 'ech", &["echo"]),
    ]);
    let fpath = install(&t, "_retry", ".zfunc/_retry");
    let args = [Path::new("-f"), &fixture("complete.zsh"), fpath.parent().unwrap()];
    check("zsh", &cases, &driver_offers(&t, "zsh", &args, &cases));
}

// ---------------------------------------------------------------------
// fish

#[test]
fn fish_hands_over_to_the_commands_completion() {
    if !installed("fish") {
        return;
    }
    let t = sandbox();
    let mut cases = common_cases();
    cases.extend([
        exactly("retry --algo=l", &["--algo=linear"]),
        exactly("retry --state-dir s", &["sub-dir"]),
        offers("retry --on-retry ech", &["echo"]),
        // COMMAND's arguments quoted again.
        exactly("retry mycmd 'x y' al", &["alpha"]),
    ]);
    install(&t, "retry.fish", ".config/fish/completions/retry.fish");
    check("fish", &cases, &driver_offers(&t, "fish", &[&fixture("complete.fish")], &cases));
}

/// Runs `program ARGS... LINE...`, a driver script that prints "== LINE"
/// and then the candidates, and returns them for each case. Its stderr
/// must be empty: the completion file loaded without an error.
fn driver_offers(t: &T, program: &str, args: &[&Path], cases: &[Case]) -> Vec<Vec<String>> {
    let lines: Vec<&str> = cases.iter().map(|c| c.line).collect();
    let mut cmd = StdCommand::new(program);
    t.env(&mut cmd);
    cmd.args(args).args(&lines);
    let out = assert_cmd::Command::from_std(cmd).timeout(PATIENCE).write_stdin("").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{program}: {}\n{stderr}", out.status);
    parse(&String::from_utf8_lossy(&out.stdout), &lines)
}
