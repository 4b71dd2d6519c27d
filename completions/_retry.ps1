
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'retry' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'retry'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'retry' {
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Retries after the first attempt (total = N+1; 0 = run once) [default: 3]')
            [CompletionResult]::new('--retries', '--retries', [CompletionResultType]::ParameterName, 'Retries after the first attempt (total = N+1; 0 = run once) [default: 3]')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Time limit of each attempt; an attempt over it is killed and counts as status 124')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Time limit of each attempt; an attempt over it is killed and counts as status 124')
            [CompletionResult]::new('--kill-after', '--kill-after', [CompletionResultType]::ParameterName, 'After the timeout signal, SIGKILL the process group if still alive [default: 10s]')
            [CompletionResult]::new('--kill-signal', '--kill-signal', [CompletionResultType]::ParameterName, 'Signal sent on timeout: a name (TERM, SIGINT) or a number [default: TERM]')
            [CompletionResult]::new('--max-time', '--max-time', [CompletionResultType]::ParameterName, 'Budget for the whole run, from retry''s start')
            [CompletionResult]::new('--algo', '--algo', [CompletionResultType]::ParameterName, 'Backoff algorithm: the delay before retry k [default: exponential]')
            [CompletionResult]::new('--delays', '--delays', [CompletionResultType]::ParameterName, 'A fixed list of delays: the k-th before retry k, the last one repeating')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Base delay w of the backoff; 0 = no delay [default: 1s]')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Base delay w of the backoff; 0 = no delay [default: 1s]')
            [CompletionResult]::new('--multiplier', '--multiplier', [CompletionResultType]::ParameterName, 'Growth factor m of exponential backoff, a decimal >= 1 [default: 2]')
            [CompletionResult]::new('--max-wait', '--max-wait', [CompletionResultType]::ParameterName, 'Cap on each delay, applied before jitter')
            [CompletionResult]::new('-j', '-j', [CompletionResultType]::ParameterName, 'Randomize each delay d: sleep uniform in [(1−F)·d, d]; F in [0,1], none, equal, full')
            [CompletionResult]::new('--jitter', '--jitter', [CompletionResultType]::ParameterName, 'Randomize each delay d: sleep uniform in [(1−F)·d, d]; F in [0,1], none, equal, full')
            [CompletionResult]::new('--reset-after', '--reset-after', [CompletionResultType]::ParameterName, 'An attempt that ran at least this long before failing resets the backoff')
            [CompletionResult]::new('--wait-from', '--wait-from', [CompletionResultType]::ParameterName, 'The server decides the wait: read it from the last output line matching REGEX')
            [CompletionResult]::new('--rotate', '--rotate', [CompletionResultType]::ParameterName, 'Try alternatives before waiting: attempt k gets NAME set to the k-th value, in turn')
            [CompletionResult]::new('--splay', '--splay', [CompletionResultType]::ParameterName, 'Sleep a random time in [0, DURATION] before the first attempt')
            [CompletionResult]::new('--seed', '--seed', [CompletionResultType]::ParameterName, 'Seed the random generators: the same seed and options give the same sleeps')
            [CompletionResult]::new('--on-retry', '--on-retry', [CompletionResultType]::ParameterName, 'Run `sh -c CMD` after each failed attempt that will be retried, before the sleep')
            [CompletionResult]::new('--on-give-up', '--on-give-up', [CompletionResultType]::ParameterName, 'Run `sh -c CMD` once when the run gives up (attempts exhausted, a stop rule, --max-time)')
            [CompletionResult]::new('--success-exit', '--success-exit', [CompletionResultType]::ParameterName, 'Treat these exit statuses as success too, e.g. 0,24 for rsync''s "some files vanished"')
            [CompletionResult]::new('--retry-on-exit', '--retry-on-exit', [CompletionResultType]::ParameterName, 'Retry only these statuses, e.g. 1,7,75-78,124')
            [CompletionResult]::new('--stop-on-exit', '--stop-on-exit', [CompletionResultType]::ParameterName, 'Never retry these statuses (wins over every retry rule)')
            [CompletionResult]::new('--retry-on-signal', '--retry-on-signal', [CompletionResultType]::ParameterName, 'Retry an attempt that died of one of these signals, e.g. KILL,TERM,SEGV')
            [CompletionResult]::new('--stop-on-signal', '--stop-on-signal', [CompletionResultType]::ParameterName, 'Never retry an attempt that died of one of these signals (wins over every retry rule)')
            [CompletionResult]::new('--retry-on-stderr', '--retry-on-stderr', [CompletionResultType]::ParameterName, 'Retry only if a line of the attempt''s stderr matched REGEX (repeatable)')
            [CompletionResult]::new('--retry-on-stdout', '--retry-on-stdout', [CompletionResultType]::ParameterName, 'Retry only if a line of the attempt''s stdout matched REGEX (repeatable)')
            [CompletionResult]::new('--stop-on-stderr', '--stop-on-stderr', [CompletionResultType]::ParameterName, 'A stderr line matching REGEX makes the failure permanent (repeatable)')
            [CompletionResult]::new('--stop-on-stdout', '--stop-on-stdout', [CompletionResultType]::ParameterName, 'A stdout line matching REGEX makes the failure permanent (repeatable)')
            [CompletionResult]::new('--retry-if', '--retry-if', [CompletionResultType]::ParameterName, 'Retry only if the jq EXPR is true on the attempt''s context object (repeatable)')
            [CompletionResult]::new('--until', '--until', [CompletionResultType]::ParameterName, 'Succeed only if the jq EXPR is true on the attempt''s stdout as JSON (repeatable)')
            [CompletionResult]::new('--until-match', '--until-match', [CompletionResultType]::ParameterName, 'Succeed only if a line of the attempt''s stdout matches REGEX (repeatable)')
            [CompletionResult]::new('--stdout', '--stdout', [CompletionResultType]::ParameterName, 'live: stream each attempt''s stdout; final: only the accepted attempt''s')
            [CompletionResult]::new('--stdin', '--stdin', [CompletionResultType]::ParameterName, 'pass: attempts inherit stdin; replay: every attempt gets the same stdin bytes')
            [CompletionResult]::new('--state-dir', '--state-dir', [CompletionResultType]::ParameterName, 'Give every attempt RETRY_STATE_DIR=DIR, a directory kept after the run')
            [CompletionResult]::new('--key', '--key', [CompletionResultType]::ParameterName, 'Name of this job''s state shared across runs (letters, digits, ''.'', ''_'', ''-'')')
            [CompletionResult]::new('--state-store', '--state-store', [CompletionResultType]::ParameterName, 'Where shared state lives: file:DIR (one machine) or redis://[user:pass@]host[:port][/db]')
            [CompletionResult]::new('--circuit-break', '--circuit-break', [CompletionResultType]::ParameterName, 'After N consecutive runs of the key that gave up, refuse runs for a cooldown (exit 75)')
            [CompletionResult]::new('--circuit-cooldown', '--circuit-cooldown', [CompletionResultType]::ParameterName, 'How long an open circuit refuses runs [default: 5m]')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'At most N attempt starts of the key per DURATION, across processes (e.g. 30/1m)')
            [CompletionResult]::new('--concurrency', '--concurrency', [CompletionResultType]::ParameterName, 'At most N attempts of the key run at once, across processes (N up to 1000)')
            [CompletionResult]::new('--store-lease', '--store-lease', [CompletionResultType]::ParameterName, 'How long a Redis --concurrency slot or circuit trial is held unrenewed [default: 10s]')
            [CompletionResult]::new('--tls-ca', '--tls-ca', [CompletionResultType]::ParameterName, 'Trust the CA certificates in FILE (PEM) for rediss://, besides the system''s')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Present the client certificate in FILE (PEM) to a rediss:// server (mutual TLS)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'The private key (PEM) of --tls-cert')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Format of retry''s messages on stderr [default: text]')
            [CompletionResult]::new('--summary', '--summary', [CompletionResultType]::ParameterName, 'At the end of the run, write a JSON report of it to FILE (atomically)')
            [CompletionResult]::new('--flaky-exit', '--flaky-exit', [CompletionResultType]::ParameterName, 'After a success that needed retries (a flaky run), exit N instead of 0 (1-123, not 75)')
            [CompletionResult]::new('--metrics', '--metrics', [CompletionResultType]::ParameterName, 'At the end, update Prometheus metrics of this run in FILE (node_exporter textfile format)')
            [CompletionResult]::new('--queue', '--queue', [CompletionResultType]::ParameterName, 'When the run gives up, keep the job in the queue DIR (or redis://…#NAME) and exit 75')
            [CompletionResult]::new('--queue-env', '--queue-env', [CompletionResultType]::ParameterName, 'The environment variables a job on a Redis queue keeps (comma list, repeatable)')
            [CompletionResult]::new('--drain', '--drain', [CompletionResultType]::ParameterName, 'Run every due job of the queue DIR (or redis://…#NAME) once, then exit 0, 1 or 75')
            [CompletionResult]::new('--lease', '--lease', [CompletionResultType]::ParameterName, 'How long a drain holds a job of a Redis queue without renewing it [default: 30s]')
            [CompletionResult]::new('--list', '--list', [CompletionResultType]::ParameterName, 'Print the jobs of the queue DIR (or redis://…#NAME) and its dead letters, as JSON lines')
            [CompletionResult]::new('--max-age', '--max-age', [CompletionResultType]::ParameterName, 'A queued job older than this (since its first attempt) goes to dead/ [default: 3days]')
            [CompletionResult]::new('--on-dead', '--on-dead', [CompletionResultType]::ParameterName, 'With --drain: run `sh -c CMD` for each job this drain moves to the dead letters')
            [CompletionResult]::new('--forever', '--forever', [CompletionResultType]::ParameterName, 'Retry without limit (until success, a stop rule, --max-time or a signal)')
            [CompletionResult]::new('--reset-on-progress', '--reset-on-progress', [CompletionResultType]::ParameterName, 'An attempt that changed its state dir does not use up the budget')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print the planned delays and exit without running anything')
            [CompletionResult]::new('--foreground', '--foreground', [CompletionResultType]::ParameterName, 'Run COMMAND in retry''s process group, for commands that need the terminal')
            [CompletionResult]::new('--temp-state', '--temp-state', [CompletionResultType]::ParameterName, 'Give every attempt RETRY_STATE_DIR, a fresh private directory removed after the run')
            [CompletionResult]::new('--store-optional', '--store-optional', [CompletionResultType]::ParameterName, 'When the state store cannot be used, warn and run without coordination')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print nothing but errors about retry itself')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print nothing but errors about retry itself')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Also print the command, each attempt''s start and the rule that decided (-vv: more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Also print the command, each attempt''s start and the rule that decided (-vv: more)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
