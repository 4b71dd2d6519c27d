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
        let path = format!("completions/{}", shell.file_name("retry"));
        complaints.extend(check(&path, &completion(shell)));
    }
    assert_fresh(complaints);
}

/// clap_complete's script for `shell`, made to hand over to COMMAND's own
/// completion from COMMAND on (as sudo's, timeout's and nice's do) in bash,
/// zsh and fish. elvish and PowerShell stay as clap makes them.
fn completion(shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "retry", &mut buf);
    let script = String::from_utf8(buf).expect("clap_complete writes UTF-8");
    match shell {
        Shell::Bash => bash_completion(&script),
        Shell::Zsh => zsh_completion(&script),
        Shell::Fish => fish_completion(&script),
        _ => script,
    }
    .into_bytes()
}

/// The options of retry whose value may be the next word (`-n 3`,
/// `--wait 1s`), so that word is not COMMAND, from the clap definition.
struct ValueOptions {
    /// `--retries`, `-n`, … (aliases included).
    words: Vec<String>,
    /// The short names, for clusters such as `-qn 3` or `-n3`.
    shorts: String,
}

fn value_options() -> ValueOptions {
    let mut cmd = Cli::command();
    cmd.build();
    let mut words = Vec::new();
    let mut shorts = String::new();
    for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
        if !arg.get_action().takes_values() || arg.is_require_equals_set() {
            continue;
        }
        // The shell functions skip exactly one word after such an option.
        let n = arg.get_num_args().expect("built");
        assert!(
            n.min_values() == 1 && n.max_values() == 1,
            "--{}: the completions expect an option to take one value; teach \
             tests/integration/generated.rs its {n:?}",
            arg.get_id()
        );
        let longs = arg.get_long().into_iter().chain(arg.get_all_aliases().unwrap_or_default());
        words.extend(longs.map(|l| format!("--{l}")));
        let short = arg.get_short().into_iter().chain(arg.get_all_short_aliases().unwrap_or_default());
        for c in short {
            words.push(format!("-{c}"));
            shorts.push(c);
        }
    }
    ValueOptions { words, shorts }
}

/// `words` on lines of at most 80 columns, the second and later indented
/// by `indent`; `sep` ends all lines but the last.
fn wrap(words: &[String], indent: &str, sep: &str) -> String {
    let mut lines = vec![String::new()];
    for word in words {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() + sep.len() > 80 {
            lines.push(word.clone());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines.join(&format!("{sep}\n{indent}"))
}

/// clap's `_retry` becomes `_retry_options`, called for retry's own
/// options; the new `_retry` finds COMMAND and hands over from there.
fn bash_completion(clap: &str) -> String {
    let opts = value_options();
    let (functions, register) = clap
        .split_once("\nif [[ \"${BASH_VERSINFO[0]}\" -eq 4")
        .expect("clap_complete's bash script ends with its `complete` lines");
    let functions = functions.strip_prefix("_retry() {\n").expect("clap's bash function is _retry");
    let wrapper = BASH_WRAPPER
        .replace("@VALUE_OPTIONS@", &wrap(&opts.words, "        ", ""))
        .replace("@VALUE_SHORTS@", &opts.shorts);
    format!("_retry_options() {{\n{functions}\n{wrapper}\nif [[ \"${{BASH_VERSINFO[0]}}\" -eq 4{register}")
}

const BASH_WRAPPER: &str = r#"
# Added to clap_complete's script by tests/integration/generated.rs: from
# COMMAND on, the completion is COMMAND's own, as for sudo, timeout and nice
# (bash-completion's _command_offset; without bash-completion, command names
# and then file names). Before COMMAND, retry's options (_retry_options).

# Sets `index` (the caller's local) to the index in COMP_WORDS of COMMAND's
# first word when the cursor is on COMMAND or after it; fails while the
# cursor is in retry's options or on an option's value, with `word` (the
# caller's local) set to the word under the cursor.
_retry_command_index() {
    # The options whose value may be the next word (from the clap definition).
    local value_shorts="@VALUE_SHORTS@" value_opts="
        @VALUE_OPTIONS@
    "
    # Readline also splits words at COMP_WORDBREAKS (--wait=1s is three of
    # them): pieces with no blank between them in COMP_LINE are one word.
    local line=$COMP_LINE rest i current=0
    local -a words=() first=()
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        rest=${line#"${line%%[![:space:]]*}"}
        if ((i == 0)) || [[ $rest != "$line" ]]; then
            words+=("${COMP_WORDS[i]}")
            first+=("$i")
        else
            words[${#words[@]} - 1]+=${COMP_WORDS[i]}
        fi
        line=${rest#"${COMP_WORDS[i]}"}
        ((i == COMP_CWORD)) && current=$((${#words[@]} - 1))
    done
    local k=1 j
    while ((k < current)); do
        word=${words[k]}
        case $word in
            --)
                index=${first[k + 1]}
                return 0
                ;;
            --*=*) ;;
            --*) [[ $value_opts == *[[:space:]]"$word"[[:space:]]* ]] && ((k++)) ;;
            -?*)
                # A cluster: -qv, -n3, -qn 3.
                for ((j = 1; j < ${#word}; j++)); do
                    if [[ $value_shorts == *"${word:j:1}"* ]]; then
                        ((j == ${#word} - 1)) && ((k++))
                        break
                    fi
                done
                ;;
            *)
                index=${first[k]}
                return 0
                ;;
        esac
        ((k++))
    done
    # The word under the cursor is COMMAND unless it is an option's value
    # (k went past it) or an option.
    word=${words[current]}
    if ((k == current)) && [[ $word != -* ]]; then
        index=${first[k]}
        return 0
    fi
    return 1
}

_retry() {
    local index word
    if ! _retry_command_index; then
        if [[ $word == --*=* ]]; then
            # --algo=l: clap's function completes the value of the option
            # given as the previous word.
            _retry_options "$1" "$2" "${word%%=*}"
        else
            _retry_options "$@"
        fi
        return
    fi
    if declare -F _comp_command_offset >/dev/null; then
        # The command's completion brings its own compopt options.
        compopt +o default +o bashdefault +o nosort 2>/dev/null
        _comp_command_offset "$index"
    elif declare -F _command_offset >/dev/null; then
        compopt +o default +o bashdefault +o nosort 2>/dev/null
        _command_offset "$index"
    elif ((index == COMP_CWORD)); then
        compopt -o filenames +o nosort 2>/dev/null
        local IFS=$'
'
        COMPREPLY=($(compgen -d -c -- "${COMP_WORDS[COMP_CWORD]}"))
    else
        # No bash-completion: readline's file names (-o default).
        COMPREPLY=()
    fi
}
"#;

/// `_arguments -A '-*'`: no option of retry is offered once COMMAND has
/// started (`--` ends them too, `-S`). COMMAND's words go to
/// `_cmdambivalent` (the value hint of `command`), which completes command
/// names and then calls `_normal` for the command's own completion; with
/// `*:::` instead of clap's `*::` its `words` are COMMAND's alone (`*::`
/// keeps a `--` before COMMAND in them, so `retry -- cu` offered nothing).
fn zsh_completion(clap: &str) -> String {
    let command = "\n'*::command -- ";
    assert!(
        clap.contains("_arguments_options=(-s -S -C)")
            && clap.contains(command)
            && clap.contains(":_cmdambivalent' \\\n"),
        "clap_complete's zsh script changed; teach tests/integration/generated.rs:\n{clap}"
    );
    clap.replace("_arguments_options=(-s -S -C)", "_arguments_options=(-s -S -C -A '-*')")
        .replace("_arguments_options=(-s -C)", "_arguments_options=(-s -C -A '-*')")
        .replace(command, "\n'*:::command -- ")
}

/// Every line of clap's gets the condition `not __fish_retry_in_command`,
/// and one more line completes COMMAND and its arguments as a command line
/// of their own.
fn fish_completion(clap: &str) -> String {
    // clap_complete writes a value's help inside "…": a `"` in it would end
    // the string, and fish refuses the line.
    for arg in Cli::command().get_arguments() {
        for value in arg.get_possible_values() {
            let help = value.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(!help.contains('"'), "--{} {}: no \" in its help", arg.get_id(), value.get_name());
        }
    }
    let opts = value_options();
    let prefix = "complete -c retry ";
    let mut out = FISH_FUNCTIONS.replace("@VALUE_OPTIONS@", &wrap(&opts.words, "        ", " \\"));
    for line in clap.split_inclusive('\n') {
        match line.strip_prefix(prefix) {
            Some(rest) => {
                out.push_str(prefix);
                out.push_str("-n 'not __fish_retry_in_command' ");
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
    }
    out.push_str(FISH_DELEGATE);
    out
}

const FISH_FUNCTIONS: &str = r#"# Added to clap_complete's lines by tests/integration/generated.rs: retry's
# options only before COMMAND; from COMMAND on, COMMAND's own completion, as
# for sudo, timeout and nice.

# Prints the index of COMMAND among the tokens up to the cursor (retry is 1)
# when the cursor is on COMMAND or after it; fails while it is in retry's
# options or on an option's value.
function __fish_retry_command_index
    # The options whose value may be the next token (from the clap definition).
    set -l value_opts \
        @VALUE_OPTIONS@
    set -l tokens (commandline -opc) (commandline -ct)
    set -l current (count $tokens)
    set -l k 2
    while test $k -lt $current
        set -l token $tokens[$k]
        switch $token
            case --
                echo (math $k + 1)
                return 0
            case '--*=*'
            case '--*'
                contains -- $token $value_opts; and set k (math $k + 1)
            case '-?*'
                # A cluster: -qv, -n3, -qn 3.
                set -l chars (string split '' -- (string sub -s 2 -- $token))
                for j in (seq (count $chars))
                    if contains -- -$chars[$j] $value_opts
                        test $j -eq (count $chars); and set k (math $k + 1)
                        break
                    end
                end
            case '*'
                echo $k
                return 0
        end
        set k (math $k + 1)
    end
    if test $k -eq $current; and not string match -q -- '-*' $tokens[$k]
        echo $k
        return 0
    end
    return 1
end

function __fish_retry_in_command
    __fish_retry_command_index >/dev/null
end

# COMMAND and what follows, completed as a command line of its own. As
# __fish_complete_subcommand does, but with the index above, and with the
# tokens before the cursor quoted again (commandline -o unescapes them).
function __fish_retry_complete_command
    set -l index (__fish_retry_command_index); or return
    set -l tokens (string escape -- (commandline -opc)) (commandline -ct)
    complete -C (string join ' ' -- $tokens[$index..-1])
end

"#;

const FISH_DELEGATE: &str = "\n# From COMMAND on: COMMAND's own completion.\n\
complete -c retry -n __fish_retry_in_command -x -a '(__fish_retry_complete_command)'\n";

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
