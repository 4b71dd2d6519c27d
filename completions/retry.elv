
use builtin;
use str;

set edit:completion:arg-completer[retry] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'retry'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'retry'= {
            cand -n 'Retries after the first attempt (total = N+1; 0 = run once) [default: 3]'
            cand --retries 'Retries after the first attempt (total = N+1; 0 = run once) [default: 3]'
            cand -t 'Time limit of each attempt; an attempt over it is killed and counts as status 124'
            cand --timeout 'Time limit of each attempt; an attempt over it is killed and counts as status 124'
            cand --kill-after 'After the timeout signal, SIGKILL the process group if still alive [default: 10s]'
            cand --kill-signal 'Signal sent on timeout: a name (TERM, SIGINT) or a number [default: TERM]'
            cand --max-time 'Budget for the whole run, from retry''s start'
            cand --algo 'Backoff algorithm: the delay before retry k [default: exponential]'
            cand --delays 'A fixed list of delays: the k-th before retry k, the last one repeating'
            cand -w 'Base delay w of the backoff; 0 = no delay [default: 1s]'
            cand --wait 'Base delay w of the backoff; 0 = no delay [default: 1s]'
            cand --multiplier 'Growth factor m of exponential backoff, a decimal >= 1 [default: 2]'
            cand --max-wait 'Cap on each delay, applied before jitter'
            cand -j 'Randomize each delay d: sleep uniform in [(1−F)·d, d]; F in [0,1], none, equal, full'
            cand --jitter 'Randomize each delay d: sleep uniform in [(1−F)·d, d]; F in [0,1], none, equal, full'
            cand --reset-after 'An attempt that ran at least this long before failing resets the backoff'
            cand --wait-from 'The server decides the wait: read it from the last output line matching REGEX'
            cand --rotate 'Try alternatives before waiting: attempt k gets NAME set to the k-th value, in turn'
            cand --splay 'Sleep a random time in [0, DURATION] before the first attempt'
            cand --seed 'Seed the random generators: the same seed and options give the same sleeps'
            cand --on-retry 'Run `sh -c CMD` after each failed attempt that will be retried, before the sleep'
            cand --on-give-up 'Run `sh -c CMD` once when the run gives up (attempts exhausted, a stop rule, --max-time)'
            cand --success-exit 'Treat these exit statuses as success too, e.g. 0,24 for rsync''s "some files vanished"'
            cand --retry-on-exit 'Retry only these statuses, e.g. 1,7,75-78,124'
            cand --stop-on-exit 'Never retry these statuses (wins over every retry rule)'
            cand --retry-on-signal 'Retry an attempt that died of one of these signals, e.g. KILL,TERM,SEGV'
            cand --stop-on-signal 'Never retry an attempt that died of one of these signals (wins over every retry rule)'
            cand --retry-on-stderr 'Retry only if a line of the attempt''s stderr matched REGEX (repeatable)'
            cand --retry-on-stdout 'Retry only if a line of the attempt''s stdout matched REGEX (repeatable)'
            cand --stop-on-stderr 'A stderr line matching REGEX makes the failure permanent (repeatable)'
            cand --stop-on-stdout 'A stdout line matching REGEX makes the failure permanent (repeatable)'
            cand --retry-if 'Retry only if the jq EXPR is true on the attempt''s context object (repeatable)'
            cand --until 'Succeed only if the jq EXPR is true on the attempt''s stdout as JSON (repeatable)'
            cand --until-match 'Succeed only if a line of the attempt''s stdout matches REGEX (repeatable)'
            cand --stdout 'live: stream each attempt''s stdout; final: only the accepted attempt''s'
            cand --stdin 'pass: attempts inherit stdin; replay: every attempt gets the same stdin bytes'
            cand --state-dir 'Give every attempt RETRY_STATE_DIR=DIR, a directory kept after the run'
            cand --key 'Name of this job''s state shared across runs (letters, digits, ''.'', ''_'', ''-'')'
            cand --state-store 'Where shared state lives: file:DIR (one machine) or redis://[user:pass@]host[:port][/db]'
            cand --circuit-break 'After N consecutive runs of the key that gave up, refuse runs for a cooldown (exit 75)'
            cand --circuit-cooldown 'How long an open circuit refuses runs [default: 5m]'
            cand --rate 'At most N attempt starts of the key per DURATION, across processes (e.g. 30/1m)'
            cand --concurrency 'At most N attempts of the key run at once, across processes (N up to 1000)'
            cand --store-lease 'How long a Redis --concurrency slot or circuit trial is held unrenewed [default: 10s]'
            cand --tls-ca 'Trust the CA certificates in FILE (PEM) for rediss://, besides the system''s'
            cand --tls-cert 'Present the client certificate in FILE (PEM) to a rediss:// server (mutual TLS)'
            cand --tls-key 'The private key (PEM) of --tls-cert'
            cand --log-format 'Format of retry''s messages on stderr [default: text]'
            cand --summary 'At the end of the run, write a JSON report of it to FILE (atomically)'
            cand --flaky-exit 'After a success that needed retries (a flaky run), exit N instead of 0 (1-123, not 75)'
            cand --metrics 'At the end, update Prometheus metrics of this run in FILE (node_exporter textfile format)'
            cand --queue 'When the run gives up, keep the job in the queue DIR (or redis://…#NAME) and exit 75'
            cand --queue-env 'The environment variables a job on a Redis queue keeps (comma list, repeatable)'
            cand --drain 'Run every due job of the queue DIR (or redis://…#NAME) once, then exit 0, 1 or 75'
            cand --lease 'How long a drain holds a job of a Redis queue without renewing it [default: 30s]'
            cand --list 'Print the jobs of the queue DIR (or redis://…#NAME) and its dead letters, as JSON lines'
            cand --max-age 'A queued job older than this (since its first attempt) goes to dead/ [default: 3days]'
            cand --on-dead 'With --drain: run `sh -c CMD` for each job this drain moves to the dead letters'
            cand --forever 'Retry without limit (until success, a stop rule, --max-time or a signal)'
            cand --reset-on-progress 'An attempt that changed its state dir does not use up the budget'
            cand --dry-run 'Print the planned delays and exit without running anything'
            cand --foreground 'Run COMMAND in retry''s process group, for commands that need the terminal'
            cand --temp-state 'Give every attempt RETRY_STATE_DIR, a fresh private directory removed after the run'
            cand --store-optional 'When the state store cannot be used, warn and run without coordination'
            cand -q 'Print nothing but errors about retry itself'
            cand --quiet 'Print nothing but errors about retry itself'
            cand -v 'Also print the command, each attempt''s start and the rule that decided (-vv: more)'
            cand --verbose 'Also print the command, each attempt''s start and the rule that decided (-vv: more)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
    ]
    $completions[$command]
}
