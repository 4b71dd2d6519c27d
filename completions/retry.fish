# Added to clap_complete's lines by tests/integration/generated.rs: retry's
# options only before COMMAND; from COMMAND on, COMMAND's own completion, as
# for sudo, timeout and nice.

# Prints the index of COMMAND among the tokens up to the cursor (retry is 1)
# when the cursor is on COMMAND or after it; fails while it is in retry's
# options or on an option's value.
function __fish_retry_command_index
    # The options whose value may be the next token (from the clap definition).
    set -l value_opts \
        --retries -n --timeout -t --kill-after --kill-signal --max-time --algo \
        --delays --wait -w --multiplier --max-wait --jitter -j --reset-after \
        --wait-from --rotate --splay --seed --on-retry --on-give-up \
        --success-exit --retry-on-exit --stop-on-exit --retry-on-signal \
        --stop-on-signal --retry-on-stderr --retry-on-stdout --stop-on-stderr \
        --stop-on-stdout --retry-if --until --until-match --stdout --stdin \
        --state-dir --key --state-store --circuit-break --circuit-cooldown \
        --rate --concurrency --store-lease --tls-ca --tls-cert --tls-key \
        --log-format --summary --flaky-exit --metrics --queue --queue-env \
        --drain --lease --list --max-age --on-dead
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

complete -c retry -n 'not __fish_retry_in_command' -s n -l retries -d 'Retries after the first attempt (total = N+1; 0 = run once) [default: 3]' -r
complete -c retry -n 'not __fish_retry_in_command' -s t -l timeout -d 'Time limit of each attempt; an attempt over it is killed and counts as status 124' -r
complete -c retry -n 'not __fish_retry_in_command' -l kill-after -d 'After the timeout signal, SIGKILL the process group if still alive [default: 10s]' -r
complete -c retry -n 'not __fish_retry_in_command' -l kill-signal -d 'Signal sent on timeout: a name (TERM, SIGINT) or a number [default: TERM]' -r
complete -c retry -n 'not __fish_retry_in_command' -l max-time -d 'Budget for the whole run, from retry\'s start' -r
complete -c retry -n 'not __fish_retry_in_command' -l algo -d 'Backoff algorithm: the delay before retry k [default: exponential]' -r -f -a "exponential\t'w·m^(k−1): 1, 2, 4, 8 … × w'
linear\t'w·k: 1, 2, 3, 4 … × w'
fibonacci\t'w·F(k): 1, 1, 2, 3, 5, 8 … × w'
constant\t'w every time'
decorrelated\t'uniform(w, 3·previous): AWS\'s decorrelated jitter'"
complete -c retry -n 'not __fish_retry_in_command' -l delays -d 'A fixed list of delays: the k-th before retry k, the last one repeating' -r
complete -c retry -n 'not __fish_retry_in_command' -s w -l wait -d 'Base delay w of the backoff; 0 = no delay [default: 1s]' -r
complete -c retry -n 'not __fish_retry_in_command' -l multiplier -d 'Growth factor m of exponential backoff, a decimal >= 1 [default: 2]' -r
complete -c retry -n 'not __fish_retry_in_command' -l max-wait -d 'Cap on each delay, applied before jitter' -r
complete -c retry -n 'not __fish_retry_in_command' -s j -l jitter -d 'Randomize each delay d: sleep uniform in [(1−F)·d, d]; F in [0,1], none, equal, full' -r
complete -c retry -n 'not __fish_retry_in_command' -l reset-after -d 'An attempt that ran at least this long before failing resets the backoff' -r
complete -c retry -n 'not __fish_retry_in_command' -l wait-from -d 'The server decides the wait: read it from the last output line matching REGEX' -r
complete -c retry -n 'not __fish_retry_in_command' -l rotate -d 'Try alternatives before waiting: attempt k gets NAME set to the k-th value, in turn' -r
complete -c retry -n 'not __fish_retry_in_command' -l splay -d 'Sleep a random time in [0, DURATION] before the first attempt' -r
complete -c retry -n 'not __fish_retry_in_command' -l seed -d 'Seed the random generators: the same seed and options give the same sleeps' -r
complete -c retry -n 'not __fish_retry_in_command' -l on-retry -d 'Run `sh -c CMD` after each failed attempt that will be retried, before the sleep' -r -f -a "(__fish_complete_command)"
complete -c retry -n 'not __fish_retry_in_command' -l on-give-up -d 'Run `sh -c CMD` once when the run gives up (attempts exhausted, a stop rule, --max-time)' -r -f -a "(__fish_complete_command)"
complete -c retry -n 'not __fish_retry_in_command' -l success-exit -d 'Treat these exit statuses as success too, e.g. 0,24 for rsync\'s "some files vanished"' -r
complete -c retry -n 'not __fish_retry_in_command' -l retry-on-exit -d 'Retry only these statuses, e.g. 1,7,75-78,124' -r
complete -c retry -n 'not __fish_retry_in_command' -l stop-on-exit -d 'Never retry these statuses (wins over every retry rule)' -r
complete -c retry -n 'not __fish_retry_in_command' -l retry-on-signal -d 'Retry an attempt that died of one of these signals, e.g. KILL,TERM,SEGV' -r
complete -c retry -n 'not __fish_retry_in_command' -l stop-on-signal -d 'Never retry an attempt that died of one of these signals (wins over every retry rule)' -r
complete -c retry -n 'not __fish_retry_in_command' -l retry-on-stderr -d 'Retry only if a line of the attempt\'s stderr matched REGEX (repeatable)' -r
complete -c retry -n 'not __fish_retry_in_command' -l retry-on-stdout -d 'Retry only if a line of the attempt\'s stdout matched REGEX (repeatable)' -r
complete -c retry -n 'not __fish_retry_in_command' -l stop-on-stderr -d 'A stderr line matching REGEX makes the failure permanent (repeatable)' -r
complete -c retry -n 'not __fish_retry_in_command' -l stop-on-stdout -d 'A stdout line matching REGEX makes the failure permanent (repeatable)' -r
complete -c retry -n 'not __fish_retry_in_command' -l retry-if -d 'Retry only if the jq EXPR is true on the attempt\'s context object (repeatable)' -r
complete -c retry -n 'not __fish_retry_in_command' -l until -d 'Succeed only if the jq EXPR is true on the attempt\'s stdout as JSON (repeatable)' -r
complete -c retry -n 'not __fish_retry_in_command' -l until-match -d 'Succeed only if a line of the attempt\'s stdout matches REGEX (repeatable)' -r
complete -c retry -n 'not __fish_retry_in_command' -l stdout -d 'live: stream each attempt\'s stdout; final: only the accepted attempt\'s' -r -f -a "live\t'stream each attempt\'s stdout as it arrives'
final\t'write only the accepted (or last) attempt\'s stdout, at the end'"
complete -c retry -n 'not __fish_retry_in_command' -l stdin -d 'pass: attempts inherit stdin; replay: every attempt gets the same stdin bytes' -r -f -a "pass\t'the attempts inherit retry\'s stdin'
replay\t'record stdin and give every attempt the same bytes'"
complete -c retry -n 'not __fish_retry_in_command' -l state-dir -d 'Give every attempt RETRY_STATE_DIR=DIR, a directory kept after the run' -r -f -a "(__fish_complete_directories)"
complete -c retry -n 'not __fish_retry_in_command' -l key -d 'Name of this job\'s state shared across runs (letters, digits, \'.\', \'_\', \'-\')' -r
complete -c retry -n 'not __fish_retry_in_command' -l state-store -d 'Where shared state lives: file:DIR (one machine) or redis://[user:pass@]host[:port][/db]' -r
complete -c retry -n 'not __fish_retry_in_command' -l circuit-break -d 'After N consecutive runs of the key that gave up, refuse runs for a cooldown (exit 75)' -r
complete -c retry -n 'not __fish_retry_in_command' -l circuit-cooldown -d 'How long an open circuit refuses runs [default: 5m]' -r
complete -c retry -n 'not __fish_retry_in_command' -l rate -d 'At most N attempt starts of the key per DURATION, across processes (e.g. 30/1m)' -r
complete -c retry -n 'not __fish_retry_in_command' -l concurrency -d 'At most N attempts of the key run at once, across processes (N up to 1000)' -r
complete -c retry -n 'not __fish_retry_in_command' -l store-lease -d 'How long a Redis --concurrency slot or circuit trial is held unrenewed [default: 10s]' -r
complete -c retry -n 'not __fish_retry_in_command' -l tls-ca -d 'Trust the CA certificates in FILE (PEM) for rediss://, besides the system\'s' -r -F
complete -c retry -n 'not __fish_retry_in_command' -l tls-cert -d 'Present the client certificate in FILE (PEM) to a rediss:// server (mutual TLS)' -r -F
complete -c retry -n 'not __fish_retry_in_command' -l tls-key -d 'The private key (PEM) of --tls-cert' -r -F
complete -c retry -n 'not __fish_retry_in_command' -l log-format -d 'Format of retry\'s messages on stderr [default: text]' -r -f -a "text\t'`retry: ` lines for people'
json\t'one JSON object per line'
github\t'GitHub Actions: ::warning::/::error:: annotations, a ::group:: per attempt, step summary and step outputs'
gitlab\t'GitLab CI: the text lines, each attempt\'s output in a collapsible section'"
complete -c retry -n 'not __fish_retry_in_command' -l summary -d 'At the end of the run, write a JSON report of it to FILE (atomically)' -r -F
complete -c retry -n 'not __fish_retry_in_command' -l flaky-exit -d 'After a success that needed retries (a flaky run), exit N instead of 0 (1-123, not 75)' -r
complete -c retry -n 'not __fish_retry_in_command' -l metrics -d 'At the end, update Prometheus metrics of this run in FILE (node_exporter textfile format)' -r -F
complete -c retry -n 'not __fish_retry_in_command' -l queue -d 'When the run gives up, keep the job in the queue DIR (or redis://…#NAME) and exit 75' -r -F
complete -c retry -n 'not __fish_retry_in_command' -l queue-env -d 'The environment variables a job on a Redis queue keeps (comma list, repeatable)' -r
complete -c retry -n 'not __fish_retry_in_command' -l drain -d 'Run every due job of the queue DIR (or redis://…#NAME) once, then exit 0, 1 or 75' -r -F
complete -c retry -n 'not __fish_retry_in_command' -l lease -d 'How long a drain holds a job of a Redis queue without renewing it [default: 30s]' -r
complete -c retry -n 'not __fish_retry_in_command' -l list -d 'Print the jobs of the queue DIR (or redis://…#NAME) and its dead letters, as JSON lines' -r -F
complete -c retry -n 'not __fish_retry_in_command' -l max-age -d 'A queued job older than this (since its first attempt) goes to dead/ [default: 3days]' -r
complete -c retry -n 'not __fish_retry_in_command' -l on-dead -d 'With --drain: run `sh -c CMD` for each job this drain moves to the dead letters' -r -f -a "(__fish_complete_command)"
complete -c retry -n 'not __fish_retry_in_command' -l forever -d 'Retry without limit (until success, a stop rule, --max-time or a signal)'
complete -c retry -n 'not __fish_retry_in_command' -l reset-on-progress -d 'An attempt that changed its state dir does not use up the budget'
complete -c retry -n 'not __fish_retry_in_command' -l dry-run -d 'Print the planned delays and exit without running anything'
complete -c retry -n 'not __fish_retry_in_command' -l foreground -d 'Run COMMAND in retry\'s process group, for commands that need the terminal'
complete -c retry -n 'not __fish_retry_in_command' -l temp-state -d 'Give every attempt RETRY_STATE_DIR, a fresh private directory removed after the run'
complete -c retry -n 'not __fish_retry_in_command' -l store-optional -d 'When the state store cannot be used, warn and run without coordination'
complete -c retry -n 'not __fish_retry_in_command' -s q -l quiet -d 'Print nothing but errors about retry itself'
complete -c retry -n 'not __fish_retry_in_command' -s v -l verbose -d 'Also print the command, each attempt\'s start and the rule that decided (-vv: more)'
complete -c retry -n 'not __fish_retry_in_command' -s h -l help -d 'Print help (see more with \'--help\')'
complete -c retry -n 'not __fish_retry_in_command' -s V -l version -d 'Print version'

# From COMMAND on: COMMAND's own completion.
complete -c retry -n __fish_retry_in_command -x -a '(__fish_retry_complete_command)'
