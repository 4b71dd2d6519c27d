//! The command line, as clap derive types. Each flag is documented once
//! here: the first line of its doc comment is the short help (`-h`), the
//! whole comment the long help (`--help`), and the man page and shell
//! completions are generated from the same definition. Values are checked
//! by the `parse` functions so clap names the flag and the bad value; clap
//! types stop at `config.rs`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum, ValueHint};

use crate::parse;

const ABOUT: &str = "Run a command again until it works.";

const LONG_ABOUT: &str = "\
Run a command again until it works.

retry runs COMMAND (directly, no shell) and, when it fails, runs it again after a \
backoff delay, until it succeeds, the attempts run out, a stop rule says the failure \
is permanent, or --max-time is reached. Its exit status is the last attempt's.

Attempts run in their own process group; a timeout ends the whole group. Signals sent \
to retry reach the running attempt. Option parsing stops at COMMAND, so its options \
need no quoting: `retry -n 5 curl -fsS URL`.";

const USAGE: &str = "\
retry [OPTIONS] [--] COMMAND [ARGS...]
       retry --drain DIR|URL [OPTIONS]
       retry --list DIR|URL [OPTIONS]";

const EXAMPLES: &str = "\
Examples:
  Download with exponential backoff (1s, 2s, 4s... capped at 30s, full
  jitter), 5 retries:
    $ retry -n 5 --max-wait 30s --jitter full \\
        -- curl -fsS -o page.html https://example.org

  Retry only when curl cannot resolve the host (exit 6), connect (7) or
  times out (28):
    $ retry --retry-on-exit 6,7,28 -- curl -fsS https://example.org

  A CI step (GitHub Actions): each attempt's log in a group, a warning per
  failed attempt, the step's outputs and summary, a JSON report to upload:
    $ retry --log-format github -n 3 -t 10m --summary retry.json \\
        -- make integration-test

  A cron job run by a fleet every 5 minutes: start at a random second of the
  first minute, and never run into the next run:
    $ retry --splay 1m --max-time 4m --forever -w 10s --max-wait 1m \\
        -- ./sync.sh

  Wait until a service says it is ready (a jq expression on its JSON
  output), for 2 minutes:
    $ retry --forever --max-time 2m --until '.status == \"ok\"' \\
        -- curl -fsS localhost:8080/health

  Send the same request body on every attempt (stdin recorded, replayed):
    $ printf '{\"id\": 7}' | retry --stdin replay \\
        -- curl -fsS -d @- https://example.org/api

  Kill an attempt after 30s (its whole process group), SIGKILL it 5s later:
    $ retry -t 30s --kill-after 5s -- ./flaky-test.sh

  Wait as long as the server's Retry-After says:
    $ retry --wait-from '(?i)^retry-after:\\s*(.+)$' \\
        -- curl -fsS -D /dev/stderr https://example.org

  Try each mirror before backing off:
    $ retry -n 8 --rotate M=https://a.example,https://b.example \\
        -- sh -c 'curl -fsS \"$M/pkg.tar.gz\" -o pkg.tar.gz'

  See the delays a schedule would use, without running anything:
    $ retry --dry-run -n 6 --algo fibonacci --wait 2s

  Keep an upload that keeps failing for up to 3 days, retried by a cron
  drain (the second line is a crontab entry):
    $ retry -n 2 --queue ~/.local/state/retry/queue -- ./upload.sh
    */5 * * * * retry --drain ~/.local/state/retry/queue --max-time 4m

  The same for a fleet: one queue in Redis, drained from cron on every
  machine; the password in RETRY_REDIS_PASSWORD (e.g. from a systemd
  EnvironmentFile= of mode 0600), never in argv:
    $ retry -n 2 --queue-env API_TOKEN --queue rediss://cache:6380/0#up \\
        -- ./upload.sh
    */5 * * * * retry --drain rediss://cache:6380/0#up --max-time 4m

  A CI step that passes but is marked when it needed a retry (GitLab:
  allow_failure with exit_codes [3] shows it as a warning), each attempt's
  log in a collapsed section:
    $ retry --log-format gitlab --flaky-exit 3 -n 2 -- make integration-test

  A cron job watched by Prometheus (node_exporter's textfile collector):
    $ retry --key backup \\
        --metrics /var/lib/node_exporter/textfile/retry.prom -- ./backup.sh

  A cron job that stops calling a broken API for a while after 3 failed
  runs, and starts at most 10 attempts a minute however many copies run:
    $ retry --key nightly-sync --circuit-break 3 --rate 10/1m -- ./sync.sh

Environment:
  RETRY_ATTEMPT         Set for each attempt: its number, 1, 2, ... (a queued
                        job's count on from its first attempt)
  RETRY_MAX_ATTEMPTS    Set for each attempt: N+1 of -n N; empty with
                        --forever and in a drain
  RETRY_LAST_STATUS     Set for each attempt: the previous one's status;
                        empty on attempt 1
  RETRY_STATE_DIR       Set with --state-dir or --temp-state: a directory
                        that lasts for the whole run
  RETRY_OUTCOME         Set for --on-give-up: exhausted, stopped or deadline
  RETRY_JOB_ID          Set for --on-dead, with RETRY_JOB_REASON,
                        RETRY_JOB_ARGV, RETRY_JOB_ATTEMPTS and RETRY_QUEUE
  RETRY_STATE_STORE     The default --state-store
  RETRY_REDIS_PASSWORD  The password of a Redis URL that has none: kept out
                        of argv, never saved in a queued job
  TMPDIR                Where captured output spills and --temp-state dirs
                        go (nothing else touches it)
  XDG_STATE_HOME        The default file store is $XDG_STATE_HOME/retry,
                        else ~/.local/state/retry
  GITHUB_STEP_SUMMARY   With --log-format github: a Markdown section of the
                        run is appended to this file
  GITHUB_OUTPUT         With --log-format github: the step outputs attempts,
                        status, outcome, flaky are appended to this file

Exit status:
  0 on success (N of --flaky-exit N when it needed retries); otherwise the
  last attempt's status (124 if it timed out, 128+N if it died of signal N;
  1 if it exited 0 but failed --until/--until-match); 75 when --queue kept
  the job or the --circuit-break circuit is open; 125 for retry's own
  errors (bad options); 126/127 when COMMAND cannot be executed / is not
  found; 128+N when retry was ended by signal N between attempts. A --drain
  exits 1 when a job died, else 75 when one was rescheduled, else 0.";

const SHORT_EXAMPLES: &str = "\
Examples:
  retry -n 5 --max-wait 30s -- curl -fsS -o page.html https://example.org
  retry --until '.status == \"ok\"' -- curl -fsS https://example.org/health
  retry --log-format github -n 3 -- make integration-test

Run 'retry --help' for details and more examples.";

/// `--algo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Algo {
    /// w·m^(k−1): 1, 2, 4, 8 … × w
    Exponential,
    /// w·k: 1, 2, 3, 4 … × w
    Linear,
    /// w·F(k): 1, 1, 2, 3, 5, 8 … × w
    Fibonacci,
    /// w every time
    Constant,
    /// uniform(w, 3·previous): AWS's decorrelated jitter
    Decorrelated,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `retry: ` lines for people
    Text,
    /// one JSON object per line
    Json,
    /// GitHub Actions: ::warning::/::error:: annotations, a ::group:: per attempt,
    /// step summary and step outputs
    Github,
    /// GitLab CI: the text lines, each attempt's output in a collapsible section
    Gitlab,
}

/// `--stdout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StdoutMode {
    /// stream each attempt's stdout as it arrives
    Live,
    /// write only the accepted (or last) attempt's stdout, at the end
    Final,
}

/// `--stdin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StdinMode {
    /// the attempts inherit retry's stdin
    Pass,
    /// record stdin and give every attempt the same bytes
    Replay,
}

/// Defines [`Cli`] as written inside it, and [`LeanCli`]: the same
/// struct and arguments without their doc comments, so without help texts.
/// retry parses with `LeanCli`'s command: clap copies every help text into
/// the command it builds (~20 KiB: ~40,000 instructions and five pages of
/// heap at every start) though only `--help` and `-h` read them. The values
/// are read into a [`Cli`] (the ids are the same); help, `--version` and
/// every parse error come from `Cli`'s full command (`config::mode`).
macro_rules! with_lean_twin {
    (
        $(#[$sattr:meta])*
        pub struct Cli {
            $(
                $(#[doc = $doc:literal])*
                #[arg($($arg:tt)*)]
                pub $field:ident: $ty:ty,
            )*
        }
    ) => {
        $(#[$sattr])*
        pub struct Cli {
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                pub $field: $ty,
            )*
        }

        $(#[$sattr])*
        #[allow(dead_code)]
        pub struct LeanCli {
            $(
                #[arg($($arg)*)]
                $field: $ty,
            )*
        }
    };
}

with_lean_twin! {
#[derive(Debug, Parser)]
#[command(
    name = "retry",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = EXAMPLES,
    after_help = SHORT_EXAMPLES,
    max_term_width = 80,
    disable_help_subcommand = true,
    override_usage = USAGE,
)]
pub struct Cli {
    // ----- Attempts and time -----
    /// Retries after the first attempt (total = N+1; 0 = run once) [default: 3]
    ///
    /// Default 3, i.e. up to 4 attempts.
    #[arg(
        allow_hyphen_values = true,
        short = 'n',
        long,
        value_name = "N",
        help_heading = "Attempts and time"
    )]
    pub retries: Option<u32>,

    /// Retry without limit (until success, a stop rule, --max-time or a signal)
    #[arg(long, conflicts_with = "retries", help_heading = "Attempts and time")]
    pub forever: bool,

    /// Time limit of each attempt; an attempt over it is killed and counts as status 124
    ///
    /// On expiry the attempt's whole process group gets --kill-signal (and SIGCONT), then
    /// SIGKILL after --kill-after.
    #[arg(allow_hyphen_values = true, short = 't', long, value_name = "DURATION", value_parser = parse::duration,
          help_heading = "Attempts and time")]
    pub timeout: Option<Duration>,

    /// After the timeout signal, SIGKILL the process group if still alive [default: 10s]
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", value_parser = parse::duration,
          help_heading = "Attempts and time")]
    pub kill_after: Option<Duration>,

    /// Signal sent on timeout: a name (TERM, SIGINT) or a number [default: TERM]
    #[arg(allow_hyphen_values = true, long, value_name = "SIG", value_parser = parse::signal, help_heading = "Attempts and time")]
    pub kill_signal: Option<i32>,

    /// Budget for the whole run, from retry's start
    ///
    /// No attempt starts after it, a sleep that would end after it is not taken, and an
    /// attempt still running at it is killed like a timeout. When the budget ends between
    /// attempts, retry exits with the last attempt's status.
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", value_parser = parse::duration,
          help_heading = "Attempts and time")]
    pub max_time: Option<Duration>,

    // ----- Backoff -----
    /// Backoff algorithm: the delay before retry k [default: exponential]
    #[arg(allow_hyphen_values = true, long, value_enum, value_name = "ALGO", help_heading = "Backoff")]
    pub algo: Option<Algo>,

    /// A fixed list of delays: the k-th before retry k, the last one repeating
    ///
    /// Replaces --algo, --wait and --multiplier (not given together); --max-wait and --jitter
    /// still apply. Example: --delays 1s,5s,30s,2m
    #[arg(allow_hyphen_values = true, long, value_name = "LIST", value_parser = parse::delays,
          conflicts_with_all = ["algo", "wait", "multiplier"], help_heading = "Backoff")]
    pub delays: Option<parse::Delays>,

    /// Base delay w of the backoff; 0 = no delay [default: 1s]
    #[arg(allow_hyphen_values = true, short = 'w', long, value_name = "DURATION", value_parser = parse::duration,
          help_heading = "Backoff")]
    pub wait: Option<Duration>,

    /// Growth factor m of exponential backoff, a decimal >= 1 [default: 2]
    #[arg(allow_hyphen_values = true, long, value_name = "M", value_parser = parse::multiplier, help_heading = "Backoff")]
    pub multiplier: Option<f64>,

    /// Cap on each delay, applied before jitter
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", value_parser = parse::duration, help_heading = "Backoff")]
    pub max_wait: Option<Duration>,

    /// Randomize each delay d: sleep uniform in [(1−F)·d, d]; F in [0,1], none, equal, full
    ///
    /// 0 (none) = no jitter, 0.5 (equal) = AWS "equal jitter", 1 (full) = AWS "full jitter".
    /// With --algo decorrelated, which is randomized already, --jitter has no effect.
    #[arg(allow_hyphen_values = true, short = 'j', long, value_name = "F", value_parser = parse::jitter, help_heading = "Backoff")]
    pub jitter: Option<f64>,

    /// An attempt that ran at least this long before failing resets the backoff
    ///
    /// The next delay is the first one again: for supervising with --forever a daemon that
    /// crashes now and then, but not in a loop.
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", value_parser = parse::duration, help_heading = "Backoff")]
    pub reset_after: Option<Duration>,

    /// The server decides the wait: read it from the last output line matching REGEX
    ///
    /// The failed attempt's stderr (and stdout, when it is captured anyway) is scanned line
    /// by line; the last line that matched gives the hint, from its first capture group (the
    /// whole match without one): seconds (Retry-After: 120), a DURATION, an HTTP-date, an RFC
    /// 3339 time, or a Unix time (X-RateLimit-Reset). The sleep is then exactly until that
    /// moment: no jitter, not capped by --max-wait; a hint past --max-time ends the run at once
    /// (deadline); with --queue the job is due at that moment. A line that cannot be read as a
    /// hint is logged and the schedule's delay is used. It does not make a failure retryable.
    /// Repeatable. Example: retry --wait-from '(?i)^retry-after:\s*(.+)$' -- curl -fsS -D
    /// /dev/stderr https://api.example/x
    #[arg(allow_hyphen_values = true, long, value_name = "REGEX", action = ArgAction::Append,
          help_heading = "Backoff")]
    pub wait_from: Vec<OsString>,

    /// Try alternatives before waiting: attempt k gets NAME set to the k-th value, in turn
    ///
    /// The attempts of one cycle through the values run back to back; the backoff schedule
    /// advances once per cycle. Several --rotate options advance together and need the same
    /// number of values. -n still counts attempts; --dry-run shows each attempt's value.
    /// Example: retry -n 8 --rotate MIRROR=https://a.example,https://b.example -- sh -c 'curl
    /// -fsS "$MIRROR/pkg.tar.gz" -o pkg.tar.gz'
    #[arg(allow_hyphen_values = true, long, value_name = "NAME=V1,V2,...", value_parser = parse::rotation,
          action = ArgAction::Append, help_heading = "Backoff")]
    pub rotate: Vec<parse::Rotation>,

    /// An attempt that changed its state dir does not use up the budget
    ///
    /// Progress: a file or directory under RETRY_STATE_DIR was created, removed, or changed in
    /// size or modification time (up to 10,000 entries are compared). After such an attempt
    /// the schedule starts over (the next sleep is the first delay) and the attempt does not
    /// count against -n; --max-time still bounds the run. Needs --state-dir or --temp-state.
    /// Example: retry -n 3 --temp-state --reset-on-progress -- ./resumable-download.sh
    #[arg(long, help_heading = "Backoff")]
    pub reset_on_progress: bool,
    /// Sleep a random time in [0, DURATION] before the first attempt
    ///
    /// Spreads cron jobs of a fleet that all start on the same second.
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", value_parser = parse::duration, help_heading = "Backoff")]
    pub splay: Option<Duration>,

    /// Seed the random generators: the same seed and options give the same sleeps
    ///
    /// In --dry-run and in a real run alike. The splay draws from its own stream.
    #[arg(allow_hyphen_values = true, long, value_name = "N", help_heading = "Backoff")]
    pub seed: Option<u64>,

    /// Print the planned delays and exit without running anything
    ///
    /// One line per retry: its attempt number, the sleep before it and the total of sleeps
    /// so far (a JSON object per line with --log-format json). With --splay, a first line
    /// for the sleep before attempt 1. With --forever, the first 20 retries; with
    /// --max-time, the retries whose sleep would end within it (attempts taken as instant).
    #[arg(long, help_heading = "Backoff")]
    pub dry_run: bool,

    /// Run `sh -c CMD` after each failed attempt that will be retried, before the sleep
    ///
    /// It gets the same RETRY_* variables as the attempts, its stdin is /dev/null and its
    /// output goes to retry's stderr. Its failure is logged, not fatal; it is bounded by
    /// --timeout when one is given.
    #[arg(allow_hyphen_values = true, long, value_name = "CMD", value_hint = ValueHint::CommandString,
          help_heading = "Backoff")]
    pub on_retry: Option<OsString>,

    /// Run `sh -c CMD` once when the run gives up (attempts exhausted, a stop rule, --max-time)
    ///
    /// After the last attempt, before retry exits, with the RETRY_* variables of the last
    /// attempt plus RETRY_OUTCOME (exhausted, stopped or deadline); not on success, on a
    /// signal, when the circuit is open or when the job is queued. Bounded by --timeout, else
    /// 60s; its failure is logged and never changes retry's exit status. Example:
    /// --on-give-up 'notify-send "backup failed after $RETRY_ATTEMPT attempts"'
    #[arg(allow_hyphen_values = true, long, value_name = "CMD", value_hint = ValueHint::CommandString,
          help_heading = "Backoff")]
    pub on_give_up: Option<OsString>,
    /// Treat these exit statuses as success too, e.g. 0,24 for rsync's "some files vanished"
    ///
    /// A comma list of statuses and ranges (0 is always a success). Such a status is a success
    /// everywhere (--until still applies to it); 124-127 and statuses above 128 cannot be
    /// listed. Example: retry --success-exit 0,24 -- rsync -a src/ dst/
    #[arg(allow_hyphen_values = true, long, value_name = "CODES", value_parser = parse::codes, action = ArgAction::Append,
          help_heading = "When an attempt succeeds")]
    pub success_exit: Vec<parse::CodeSet>,

    // ----- Which failures are retried -----
    /// Retry only these statuses, e.g. 1,7,75-78,124
    ///
    /// A comma list of statuses and ranges. Applies to non-zero statuses; a status of
    /// 124 means a timed-out attempt, 128+N death by signal N.
    #[arg(allow_hyphen_values = true, long, value_name = "CODES", value_parser = parse::codes, action = ArgAction::Append,
          help_heading = "Which failures are retried")]
    pub retry_on_exit: Vec<parse::CodeSet>,

    /// Never retry these statuses (wins over every retry rule)
    #[arg(allow_hyphen_values = true, long, value_name = "CODES", value_parser = parse::codes, action = ArgAction::Append,
          help_heading = "Which failures are retried")]
    pub stop_on_exit: Vec<parse::CodeSet>,

    /// Retry an attempt that died of one of these signals, e.g. KILL,TERM,SEGV
    ///
    /// Only a real death by signal: not an exit status of 128+N, and not an attempt that retry
    /// itself killed for --timeout or --max-time (status 124). Combines with the other
    /// --retry-on-* rules (any one that matches makes the failure retryable).
    /// Example: --retry-on-signal KILL (the OOM killer)
    #[arg(allow_hyphen_values = true, long, value_name = "SIGS", value_parser = parse::signals,
          action = ArgAction::Append, help_heading = "Which failures are retried")]
    pub retry_on_signal: Vec<parse::SignalSet>,

    /// Never retry an attempt that died of one of these signals (wins over every retry rule)
    #[arg(allow_hyphen_values = true, long, value_name = "SIGS", value_parser = parse::signals,
          action = ArgAction::Append, help_heading = "Which failures are retried")]
    pub stop_on_signal: Vec<parse::SignalSet>,
    /// Retry only if a line of the attempt's stderr matched REGEX (repeatable)
    #[arg(allow_hyphen_values = true, long, value_name = "REGEX", action = ArgAction::Append,
          help_heading = "Which failures are retried")]
    pub retry_on_stderr: Vec<OsString>,

    /// Retry only if a line of the attempt's stdout matched REGEX (repeatable)
    #[arg(allow_hyphen_values = true, long, value_name = "REGEX", action = ArgAction::Append,
          help_heading = "Which failures are retried")]
    pub retry_on_stdout: Vec<OsString>,

    /// A stderr line matching REGEX makes the failure permanent (repeatable)
    #[arg(allow_hyphen_values = true, long, value_name = "REGEX", action = ArgAction::Append,
          help_heading = "Which failures are retried")]
    pub stop_on_stderr: Vec<OsString>,

    /// A stdout line matching REGEX makes the failure permanent (repeatable)
    #[arg(allow_hyphen_values = true, long, value_name = "REGEX", action = ArgAction::Append,
          help_heading = "Which failures are retried")]
    pub stop_on_stdout: Vec<OsString>,

    /// Retry only if the jq EXPR is true on the attempt's context object (repeatable)
    ///
    /// The context: {"attempt", "status", "exit_code", "signal", "timed_out", "elapsed",
    /// "duration", "stdout" (last 64 KiB, null unless stdout is captured), "stderr" (last
    /// 64 KiB), "validation" (why --until failed)}. Example:
    /// --retry-if '.status == 7 or (.stderr | test("timed out"))'
    #[arg(allow_hyphen_values = true, long, value_name = "EXPR", action = ArgAction::Append,
          help_heading = "Which failures are retried")]
    pub retry_if: Vec<OsString>,

    // ----- When an attempt succeeds -----
    /// Succeed only if the jq EXPR is true on the attempt's stdout as JSON (repeatable)
    ///
    /// Like `jq -e`: the expression runs on each JSON value of stdout (one document,
    /// NDJSON, or a stream) and the last output decides; false, null, no output, stdout
    /// that is not JSON or larger than 64 MiB, or a run-time error fail the attempt.
    /// $attempt (1-based) and $elapsed (seconds) are bound. Example: --until '.status == "ok"'
    #[arg(allow_hyphen_values = true, long, value_name = "EXPR", action = ArgAction::Append,
          help_heading = "When an attempt succeeds")]
    pub until: Vec<OsString>,

    /// Succeed only if a line of the attempt's stdout matches REGEX (repeatable)
    #[arg(allow_hyphen_values = true, long, value_name = "REGEX", action = ArgAction::Append,
          help_heading = "When an attempt succeeds")]
    pub until_match: Vec<OsString>,

    // ----- Input and output -----
    /// live: stream each attempt's stdout; final: only the accepted attempt's
    ///
    /// By default stdout streams, unless it must be inspected (--until, --until-match,
    /// --*-on-stdout): then each attempt's stdout is captured and only the accepted
    /// attempt's (or, when retry gives up, the last one's) is written, at the end.
    /// `live` streams it anyway, while still capturing and inspecting it.
    #[arg(
        allow_hyphen_values = true,
        long,
        value_enum,
        value_name = "MODE",
        help_heading = "Input and output"
    )]
    pub stdout: Option<StdoutMode>,

    /// pass: attempts inherit stdin; replay: every attempt gets the same stdin bytes
    #[arg(
        allow_hyphen_values = true,
        long,
        value_enum,
        value_name = "MODE",
        default_value = "pass",
        help_heading = "Input and output"
    )]
    pub stdin: StdinMode,

    /// Run COMMAND in retry's process group, for commands that need the terminal
    ///
    /// Then a timeout and forwarded signals reach COMMAND itself only, not its children.
    /// Without it, an attempt that reads the terminal (a password prompt) is stopped by
    /// SIGTTIN: retry ends it, does not retry it (status 149) and says to use this.
    ///
    /// Example: retry --foreground -n 2 -- ssh host uptime
    #[arg(long, help_heading = "Input and output")]
    pub foreground: bool,

    /// Give every attempt RETRY_STATE_DIR=DIR, a directory kept after the run
    ///
    /// For recovery points that a resumable command keeps between attempts. DIR is created
    /// with mode 0700 if missing; an existing one must be a directory (not a symlink) owned by
    /// you and not group- or world-writable, else retry exits 125. Without --state-dir or
    /// --temp-state, RETRY_STATE_DIR is not set and a run writes nothing to disk.
    /// Example: retry --state-dir ~/.cache/sync-state -- ./sync.sh
    #[arg(
        allow_hyphen_values = true,
        long,
        value_name = "DIR",
        value_hint = ValueHint::DirPath,
        conflicts_with = "temp_state",
        help_heading = "Input and output"
    )]
    pub state_dir: Option<PathBuf>,

    /// Give every attempt RETRY_STATE_DIR, a fresh private directory removed after the run
    ///
    /// A directory retry-* in TMPDIR (mode 0700), created before attempt 1 and removed at
    /// the end (left behind only if retry is killed with SIGKILL). A job queued by a run
    /// with --temp-state keeps it until the job succeeds or dies (DIR/state/<id> of a
    /// directory queue; a Redis job gets a fresh one on each drained attempt).
    /// Example: retry --temp-state -- sh -c 'download --resume-from "$RETRY_STATE_DIR/part"'
    #[arg(long, help_heading = "Input and output")]
    pub temp_state: bool,

    // ----- Across runs: shared state -----
    /// Name of this job's state shared across runs (letters, digits, '.', '_', '-')
    ///
    /// Needed by --circuit-break, --rate and --concurrency: every run with the same key
    /// and the same --state-store shares one circuit, one rate and one set of slots.
    /// Example: --key nightly-sync
    #[arg(allow_hyphen_values = true, long, value_name = "NAME", value_parser = parse::parse_key,
          help_heading = "Across runs: shared state")]
    pub key: Option<parse::Key>,

    /// Where shared state lives: file:DIR (one machine) or redis://[user:pass@]host[:port][/db]
    ///
    /// Also taken from the environment variable RETRY_STATE_STORE. Default:
    /// file:$XDG_STATE_HOME/retry, else file:~/.local/state/retry. A file store's DIR is
    /// created with mode 0700; one that is group- or world-writable or owned by another
    /// user is refused (exit 125). A Redis store serves a fleet of machines: every update is
    /// atomic on the server and timed by its clock; keys retry:{key:NAME}:* expire after 30
    /// days unused (or the cooldown, when longer). rediss:// speaks TLS (verified; see
    /// --tls-ca). A Redis Cluster: redis://h1:7000,h2:7001 (any of its nodes; retry routes
    /// by slot). Sentinel: redis+sentinel://s1:26379,s2:26379/MASTER[/db]. Give the password
    /// in the environment variable RETRY_REDIS_PASSWORD (kept out of argv and ps), or as
    /// redis://:pass@host or redis://user:pass@host (a % in it written %25); it is masked in
    /// every output. An unreachable server, a refused password or certificate exits 125
    /// before the first attempt; every later operation has 2s, reconnecting included.
    /// Example: RETRY_REDIS_PASSWORD=s3cret RETRY_STATE_STORE=rediss://cache.internal:6380/2
    #[arg(allow_hyphen_values = true, long, value_name = "URL", help_heading = "Across runs: shared state")]
    pub state_store: Option<String>,

    /// After N consecutive runs of the key that gave up, refuse runs for a cooldown (exit 75)
    ///
    /// A run gives up when its attempts run out, a stop rule matches or --max-time ends
    /// it, after at least one attempt; a run ended by a signal counts neither way. While
    /// the circuit is open a run exits 75 at once without running COMMAND. After
    /// --circuit-cooldown one run is let through as a trial (others are still refused
    /// while it runs): its success closes the circuit, its failure opens it again. A trial
    /// that is killed leaves the circuit half-open: the next run is the trial.
    #[arg(allow_hyphen_values = true, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          help_heading = "Across runs: shared state")]
    pub circuit_break: Option<u32>,

    /// How long an open circuit refuses runs [default: 5m]
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", value_parser = parse::duration,
          help_heading = "Across runs: shared state")]
    pub circuit_cooldown: Option<Duration>,

    /// At most N attempt starts of the key per DURATION, across processes (e.g. 30/1m)
    ///
    /// A sliding window: no interval of length DURATION holds more than N starts (N up to
    /// 10000; `100/s` means 100/1s). An attempt waits for its turn; the wait can be
    /// interrupted by a signal and counts towards --max-time (a wait that would end past
    /// it is not taken).
    #[arg(allow_hyphen_values = true, long, value_name = "N/DURATION", value_parser = parse::parse_rate,
          help_heading = "Across runs: shared state")]
    pub rate: Option<parse::Rate>,

    /// At most N attempts of the key run at once, across processes (N up to 1000)
    ///
    /// A slot is held only while an attempt runs, not during the backoff sleep; an attempt
    /// waits for a free slot (re-checking every 50ms; the wait counts towards --max-time).
    /// A slot of a process that died, even by SIGKILL, is free at once (file store) or
    /// within 10s (Redis: a lease the holder renews every 3s; see --store-lease).
    #[arg(allow_hyphen_values = true, long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(parse::CONCURRENCY_MAX)),
          help_heading = "Across runs: shared state")]
    pub concurrency: Option<u32>,

    /// When the state store cannot be used, warn and run without coordination
    ///
    /// Instead of exiting 125: at the start (an unreachable server, a refused password), or
    /// when the store is lost during the run (after 2s of reconnecting), the run goes on
    /// uncoordinated. It never overrides a refused (insecure) store directory.
    #[arg(long, help_heading = "Across runs: shared state")]
    pub store_optional: bool,

    /// How long a Redis --concurrency slot or circuit trial is held unrenewed [default: 10s]
    ///
    /// The holder renews its lease every 3/10 of it while its attempt runs; a holder that
    /// dies (SIGKILL, a lost machine, a network cut longer than the lease) frees the slot or
    /// the trial when the lease ends. A holder that cannot renew its slot before the lease
    /// ends (or finds it lost after a failover) kills its attempt, since another process
    /// may hold the slot by then. Shorter: a dead holder's slot comes back sooner; each
    /// renewal is a round trip. At least 100ms. A file store's slot is a lock that ends with
    /// its holder and takes no lease.
    /// Example: --key api --concurrency 4 --state-store redis://cache:6379 --store-lease 30s
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", value_parser = parse::duration,
          help_heading = "Across runs: shared state")]
    pub store_lease: Option<Duration>,

    /// Trust the CA certificates in FILE (PEM) for rediss://, besides the system's
    ///
    /// A rediss:// server (the state store's or a queue's) is verified against the system's
    /// trust store and these certificates, and its certificate must name the host of the
    /// URL. There is no way to turn verification off. A private CA (e.g. of a self-managed
    /// Redis) goes here.
    /// Example: --tls-ca /etc/ssl/redis-ca.pem --state-store rediss://cache.internal:6380
    #[arg(allow_hyphen_values = true, long, value_name = "FILE", help_heading = "Across runs: shared state")]
    pub tls_ca: Option<PathBuf>,

    /// Present the client certificate in FILE (PEM) to a rediss:// server (mutual TLS)
    ///
    /// For a server started with tls-auth-clients yes; needs --tls-key with its private key.
    /// Example: --tls-cert /etc/retry/client.pem --tls-key /etc/retry/client.key
    #[arg(allow_hyphen_values = true, long, value_name = "FILE", help_heading = "Across runs: shared state")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert
    ///
    /// Keep it readable by the user that runs retry only (mode 0600).
    #[arg(allow_hyphen_values = true, long, value_name = "FILE", help_heading = "Across runs: shared state")]
    pub tls_key: Option<PathBuf>,

    // ----- Messages -----
    /// Print nothing but errors about retry itself
    #[arg(short = 'q', long, conflicts_with = "verbose", help_heading = "Messages")]
    pub quiet: bool,

    /// Also print the command, each attempt's start and the rule that decided (-vv: more)
    ///
    /// -vv also prints why each sleep is as long as it is (the backoff step, a --wait-from
    /// hint, a --rotate cycle, a reset) and every decision of the shared-state store (circuit
    /// admitted, rate turn, slot taken and given back, the run recorded).
    #[arg(short = 'v', long, action = ArgAction::Count, help_heading = "Messages")]
    pub verbose: u8,

    /// Format of retry's messages on stderr [default: text]
    ///
    /// text: `retry: ` lines for people, and a live countdown during a sleep over a second
    /// when stderr is a terminal. json: one JSON object per line, with an "event" field
    /// (attempt, done, ...; see the README for every event and field). github: GitHub
    /// Actions workflow commands, a ::warning:: per failed attempt and an ::error:: when
    /// retry gives up, shown as annotations of the step; each attempt's output folded in a
    /// ::group:: (on stderr, in order with the command's output when both go to one log);
    /// at the end a Markdown section appended to $GITHUB_STEP_SUMMARY (the attempts as a
    /// table) and the step outputs attempts, status, outcome, flaky (and exit, reason)
    /// appended to $GITHUB_OUTPUT, when those variables name files. gitlab: the text lines,
    /// each attempt's output in a collapsible GitLab CI section (collapsed, except the last
    /// possible attempt's), followed by a line saying how the attempt ended.
    /// Example: retry --log-format github -n 3 -- make integration-test
    #[arg(allow_hyphen_values = true, long, value_enum, value_name = "FORMAT", help_heading = "Messages")]
    pub log_format: Option<LogFormat>,

    /// At the end of the run, write a JSON report of it to FILE (atomically)
    ///
    /// Written on success, when retry gives up, on a stop rule, at --max-time, when COMMAND
    /// cannot run, and when a signal ends retry: the command, the options in force, each
    /// attempt (start time, duration, status, verdict, reason, the sleep after it) and the
    /// outcome. A regular FILE is replaced through a temp file in its directory, which must
    /// exist and be writable (checked before attempt 1); a FIFO, a device or /dev/stderr is
    /// written in place. With --forever only the first and last 100 attempts are listed,
    /// plus a count of those left out. With --drain, a document of the drain instead: its
    /// start, end and exit status, and each job it looked at (id, argv, attempt, status,
    /// result, reason); a queued job's own --summary is not written by drains.
    ///
    /// Example: retry --summary >(jq -c .attempts) -- make test
    #[arg(allow_hyphen_values = true, long, value_name = "FILE", help_heading = "Messages")]
    pub summary: Option<PathBuf>,

    /// After a success that needed retries (a flaky run), exit N instead of 0 (1-123, not 75)
    ///
    /// The run is still reported as a success: the `done` event, --summary and the GitHub
    /// step outputs keep status 0, say "flaky": true and add "exit": N. Only a flaky success
    /// changes the exit status; every other outcome exits as without it. For a CI job that
    /// should show flakiness: GitLab's `allow_failure: exit_codes: [N]` shows it as passed
    /// with warnings; `--flaky-exit 1` fails a build that only passed on a retry. A queued
    /// job's --flaky-exit belongs to its queueing run; a drain refuses it.
    /// Example: retry --flaky-exit 3 -n 2 -- make test
    #[arg(allow_hyphen_values = true, long, value_name = "N", value_parser = parse::flaky_exit,
          help_heading = "Messages")]
    pub flaky_exit: Option<u8>,

    /// At the end, update Prometheus metrics of this run in FILE (node_exporter textfile format)
    ///
    /// Series labelled key="<--key, else the command's base name>": when the last run ended
    /// and the last success (Unix time), the last run's duration, attempts, status and
    /// flakiness, and the counters retry_runs_total{outcome} and retry_attempts_total,
    /// carried over from FILE and incremented. FILE is replaced atomically (mode 0644)
    /// under an flock of FILE.lock, so concurrent runs lose no count, and it may hold the
    /// series of several keys (a run replaces only its own). Its directory must exist and
    /// be writable (else 125 before anything runs); a failure to write at the end is
    /// reported and keeps the run's status. With --drain: the queue's gauges (jobs queued
    /// and dead, the oldest job's age) and the drain's counters, key="<queue name>"; a
    /// queued job's own --metrics FILE is updated by the drain after each of its attempts.
    /// Example: retry --metrics /var/lib/node_exporter/textfile/backup.prom -- ./backup.sh
    #[arg(allow_hyphen_values = true, long, value_name = "FILE", help_heading = "Messages")]
    pub metrics: Option<PathBuf>,

    // ----- Durable queue -----
    /// When the run gives up, keep the job in the queue DIR (or redis://…#NAME) and exit 75
    ///
    /// When the attempts run out or --max-time is reached, the job is written to DIR
    /// (created 0700; refused when group- or world-writable or owned by another user):
    /// COMMAND, the working directory, these options, the environment, the stdin recorded
    /// by --stdin replay, the attempts so far and when the next attempt is due by the
    /// backoff schedule. A `retry --drain DIR` (from cron) then retries it for up to
    /// --max-age. A permanent failure (a stop rule, 126/127) is not queued: retry exits with
    /// its status as without --queue. Job files are mode 0600: they hold the environment.
    /// A fleet queue: redis://[user:pass@]host[:port][/db]#NAME keeps the job in Redis (keys
    /// retry:{queue:NAME}:*; rediss://, a Cluster's nodes and redis+sentinel:// as for
    /// --state-store), where a drain on any machine runs it; such a job keeps only the
    /// variables named by --queue-env and at most 16 MiB of recorded stdin (e.g. --queue-env
    /// API_TOKEN --queue redis://cache:6379/0#jobs). A job never keeps a password (the
    /// drain uses its own). The server is checked before the first attempt: unreachable, or
    /// a refused password, exits 125; one that keeps data only in memory is warned about.
    /// Example: retry -n 2 --wait 1m --queue ~/.local/state/retry/queue -- ./upload.sh
    #[arg(allow_hyphen_values = true, long, value_name = "DIR", conflicts_with_all = ["drain", "list"],
          help_heading = "Durable queue")]
    pub queue: Option<PathBuf>,

    /// The environment variables a job on a Redis queue keeps (comma list, repeatable)
    ///
    /// A job on redis://…#NAME keeps only these variables of the queueing run (names that
    /// are not set are left out); a drain runs it with its own environment and these over
    /// it, since the draining machine may be another one. Without --queue-env a Redis job
    /// keeps no variable. A directory queue keeps the whole environment and refuses this
    /// option. Values are never printed (not by --list, -v or --summary either).
    /// Example: --queue-env API_TOKEN,HTTPS_PROXY
    #[arg(
        allow_hyphen_values = true,
        long,
        value_name = "NAME[,NAME...]",
        value_delimiter = ',',
        requires = "queue",
        help_heading = "Durable queue"
    )]
    pub queue_env: Vec<String>,

    /// Run every due job of the queue DIR (or redis://…#NAME) once, then exit 0, 1 or 75
    ///
    /// Each due job gets one attempt with its saved options, continuing its backoff: a
    /// success removes it; a failure reschedules it; a permanent failure (a stop rule,
    /// 126/127) or a job older than its --max-age moves to DIR/dead/ with the reason.
    /// Overlapping drains are safe (a job runs in one drain at a time) and a drain killed
    /// at any point loses no job (one killed mid-run runs again). A drain accepts only
    /// --max-age (applied to every job), --max-time (its own budget: no job starts after
    /// it, a job still running at it is killed and rescheduled), --lease (Redis), --summary,
    /// --metrics, --stdout, -q, -v, --log-format and the store options. Exit 1 when a job died in this drain,
    /// else 75 when one was rescheduled, else 0 (also when nothing was due). Drains on many
    /// machines may share one Redis queue: each job is leased to one drain at a time.
    /// Example (crontab): */5 * * * * retry --drain ~/.local/state/retry/queue --max-time 4m
    #[arg(
        allow_hyphen_values = true,
        long,
        value_name = "DIR",
        conflicts_with = "list",
        help_heading = "Durable queue"
    )]
    pub drain: Option<PathBuf>,

    /// How long a drain holds a job of a Redis queue without renewing it [default: 30s]
    ///
    /// A drain claims each job of a redis://…#NAME queue with a lease of this length, renewed
    /// every third of it while the job runs. A drain that dies (SIGKILL, a lost machine, a
    /// network cut longer than the lease) gives its job back to the queue when its lease
    /// runs out, so another drain runs it again (at least once, never lost). At least 100ms.
    /// Only with --drain on a Redis queue (a directory queue's lock ends with its drain).
    /// Example: retry --drain redis://cache:6379/0#jobs --lease 2m
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", value_parser = parse::duration,
          requires = "drain", help_heading = "Durable queue")]
    pub lease: Option<Duration>,

    /// Print the jobs of the queue DIR (or redis://…#NAME) and its dead letters, as JSON lines
    ///
    /// Fields: id (sorts by creation time), state (queued or dead), argv, attempts,
    /// next_due (RFC 3339; null when dead), last_status and reason (the last failure of a
    /// queued job, why a dead one died). Environment values are never printed. Takes only
    /// -q, -v, --log-format and, for rediss://, --tls-ca, --tls-cert and --tls-key.
    #[arg(allow_hyphen_values = true, long, value_name = "DIR", help_heading = "Durable queue")]
    pub list: Option<PathBuf>,

    /// A queued job older than this (since its first attempt) goes to dead/ [default: 3days]
    ///
    /// Given with --queue it is saved in the job; given with --drain it applies to every
    /// job of that drain. A drain buries a job past its max-age without running it.
    #[arg(allow_hyphen_values = true, long, value_name = "DURATION", value_parser = parse::duration,
          help_heading = "Durable queue")]
    pub max_age: Option<Duration>,

    /// With --drain: run `sh -c CMD` for each job this drain moves to the dead letters
    ///
    /// Its environment has RETRY_JOB_ID, RETRY_JOB_REASON, RETRY_JOB_ARGV (a JSON array),
    /// RETRY_JOB_ATTEMPTS and RETRY_QUEUE (the queue, password masked). Bounded by 60s; its
    /// failure is logged and never changes the drain's exit status; it runs at most once per
    /// dead job. Example: retry --drain q --on-dead 'mail -s "job $RETRY_JOB_ID died:
    /// $RETRY_JOB_REASON" ops@example.org < /dev/null'
    #[arg(
        allow_hyphen_values = true,
        long,
        value_name = "CMD",
        value_hint = ValueHint::CommandString,
        requires = "drain",
        help_heading = "Durable queue"
    )]
    pub on_dead: Option<OsString>,
    /// The command to run, then its arguments (no shell; use `sh -c '...'` for one)
    #[arg(value_names = ["COMMAND", "ARGS"], trailing_var_arg = true,
          value_hint = ValueHint::CommandWithArguments,
          required_unless_present_any = ["dry_run", "drain", "list"])]
    pub command: Vec<OsString>,
}
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_lean_twin_has_the_same_arguments_without_help() {
        use clap::FromArgMatches as _;
        let (mut full, mut lean) = (Cli::command(), LeanCli::command());
        LeanCli::command().debug_assert();
        full.build();
        lean.build();
        let shape = |a: &clap::Arg| {
            format!(
                "{} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {}",
                a.get_id(),
                a.get_long(),
                a.get_short(),
                a.get_action(),
                a.get_num_args(),
                a.get_value_names(),
                a.get_default_values(),
                a.get_value_parser().type_id(),
                a.is_positional(),
                a.is_allow_hyphen_values_set(),
            )
        };
        let shapes = |c: &clap::Command| c.get_arguments().map(shape).collect::<Vec<_>>();
        assert_eq!(shapes(&full), shapes(&lean));
        for arg in lean.get_arguments().filter(|a| !["help", "version"].contains(&a.get_id().as_str())) {
            assert!(arg.get_help().is_none() && arg.get_long_help().is_none(), "{}", arg.get_id());
        }
        // The same values, read into a `Cli` from either command's matches.
        for argv in [
            &["retry", "--", "true"][..],
            &["retry", "-n", "2", "-w", "0", "--stdout", "final", "curl", "-n", "x"],
            &["retry", "--until-match", "a", "--until-match", "b", "-vv", "--forever", "sh", "-c", "x"],
            &["retry", "--dry-run", "--algo", "linear", "--jitter", "full"],
            &["retry", "--drain", "q", "--max-time", "4m", "-q"],
        ] {
            let mut m = LeanCli::command().try_get_matches_from(argv).unwrap();
            let lean = Cli::from_arg_matches_mut(&mut m).unwrap();
            let full = Cli::try_parse_from(argv).unwrap();
            assert_eq!(format!("{lean:?}"), format!("{full:?}"), "{argv:?}");
        }
    }

    #[test]
    fn the_first_line_of_each_flag_fits_a_line_of_short_help() {
        for arg in Cli::command().get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(!help.is_empty(), "{} has no help", arg.get_id());
            assert!(!help.contains('\n'), "{}: {help}", arg.get_id());
            assert!(help.chars().count() <= 100, "{} help is long: {help}", arg.get_id());
        }
    }
}
