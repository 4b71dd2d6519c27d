complete -c retry -s n -l retries -d 'Retries after the first attempt (total = N+1; 0 = run once) [default: 3]' -r
complete -c retry -s t -l timeout -d 'Time limit of each attempt; an attempt over it is killed and counts as status 124' -r
complete -c retry -l kill-after -d 'After the timeout signal, SIGKILL the process group if still alive [default: 10s]' -r
complete -c retry -l kill-signal -d 'Signal sent on timeout: a name (TERM, SIGINT) or a number [default: TERM]' -r
complete -c retry -l max-time -d 'Budget for the whole run, from retry\'s start' -r
complete -c retry -l algo -d 'Backoff algorithm: the delay before retry k [default: exponential]' -r -f -a "exponential\t'w·m^(k−1): 1, 2, 4, 8 … × w'
linear\t'w·k: 1, 2, 3, 4 … × w'
fibonacci\t'w·F(k): 1, 1, 2, 3, 5, 8 … × w'
constant\t'w every time'
decorrelated\t'uniform(w, 3·previous), AWS "decorrelated jitter"'"
complete -c retry -l delays -d 'A fixed list of delays: the k-th before retry k, the last one repeating' -r
complete -c retry -s w -l wait -d 'Base delay w of the backoff; 0 = no delay [default: 1s]' -r
complete -c retry -l multiplier -d 'Growth factor m of exponential backoff, a decimal >= 1 [default: 2]' -r
complete -c retry -l max-wait -d 'Cap on each delay, applied before jitter' -r
complete -c retry -s j -l jitter -d 'Randomize each delay d: sleep uniform in [(1−F)·d, d]; F in [0,1], none, equal, full' -r
complete -c retry -l reset-after -d 'An attempt that ran at least this long before failing resets the backoff' -r
complete -c retry -l wait-from -d 'The server decides the wait: read it from the last output line matching REGEX' -r
complete -c retry -l rotate -d 'Try alternatives before waiting: attempt k gets NAME set to the k-th value, in turn' -r
complete -c retry -l splay -d 'Sleep a random time in [0, DURATION] before the first attempt' -r
complete -c retry -l seed -d 'Seed the random generators: the same seed and options give the same sleeps' -r
complete -c retry -l on-retry -d 'Run `sh -c CMD` after each failed attempt that will be retried, before the sleep' -r
complete -c retry -l on-give-up -d 'Run `sh -c CMD` once when the run gives up (attempts exhausted, a stop rule, --max-time)' -r
complete -c retry -l success-exit -d 'Treat these exit statuses as success too, e.g. 0,24 for rsync\'s "some files vanished"' -r
complete -c retry -l retry-on-exit -d 'Retry only these statuses, e.g. 1,7,75-78,124' -r
complete -c retry -l stop-on-exit -d 'Never retry these statuses (wins over every retry rule)' -r
complete -c retry -l retry-on-signal -d 'Retry an attempt that died of one of these signals, e.g. KILL,TERM,SEGV' -r
complete -c retry -l stop-on-signal -d 'Never retry an attempt that died of one of these signals (wins over every retry rule)' -r
complete -c retry -l retry-on-stderr -d 'Retry only if a line of the attempt\'s stderr matched REGEX (repeatable)' -r
complete -c retry -l retry-on-stdout -d 'Retry only if a line of the attempt\'s stdout matched REGEX (repeatable)' -r
complete -c retry -l stop-on-stderr -d 'A stderr line matching REGEX makes the failure permanent (repeatable)' -r
complete -c retry -l stop-on-stdout -d 'A stdout line matching REGEX makes the failure permanent (repeatable)' -r
complete -c retry -l retry-if -d 'Retry only if the jq EXPR is true on the attempt\'s context object (repeatable)' -r
complete -c retry -l until -d 'Succeed only if the jq EXPR is true on the attempt\'s stdout as JSON (repeatable)' -r
complete -c retry -l until-match -d 'Succeed only if a line of the attempt\'s stdout matches REGEX (repeatable)' -r
complete -c retry -l stdout -d 'live: stream each attempt\'s stdout; final: only the accepted attempt\'s' -r -f -a "live\t'stream each attempt\'s stdout as it arrives'
final\t'write only the accepted (or last) attempt\'s stdout, at the end'"
complete -c retry -l stdin -d 'pass: attempts inherit stdin; replay: every attempt gets the same stdin bytes' -r -f -a "pass\t'the attempts inherit retry\'s stdin'
replay\t'record stdin and give every attempt the same bytes'"
complete -c retry -l state-dir -d 'Give every attempt RETRY_STATE_DIR=DIR, a directory kept after the run' -r -F
complete -c retry -l key -d 'Name of this job\'s state shared across runs (letters, digits, \'.\', \'_\', \'-\')' -r
complete -c retry -l state-store -d 'Where shared state lives: file:DIR (one machine) or redis://[user:pass@]host[:port][/db]' -r
complete -c retry -l circuit-break -d 'After N consecutive runs of the key that gave up, refuse runs for a cooldown (exit 75)' -r
complete -c retry -l circuit-cooldown -d 'How long an open circuit refuses runs [default: 5m]' -r
complete -c retry -l rate -d 'At most N attempt starts of the key per DURATION, across processes (e.g. 30/1m)' -r
complete -c retry -l concurrency -d 'At most N attempts of the key run at once, across processes (N up to 1000)' -r
complete -c retry -l store-lease -d 'How long a Redis --concurrency slot or circuit trial is held unrenewed [default: 10s]' -r
complete -c retry -l tls-ca -d 'Trust the CA certificates in FILE (PEM) for rediss://, besides the system\'s' -r -F
complete -c retry -l tls-cert -d 'Present the client certificate in FILE (PEM) to a rediss:// server (mutual TLS)' -r -F
complete -c retry -l tls-key -d 'The private key (PEM) of --tls-cert' -r -F
complete -c retry -l log-format -d 'Format of retry\'s messages on stderr [default: text]' -r -f -a "text\t'`retry: ` lines for people'
json\t'one JSON object per line'
github\t'GitHub Actions: ::warning::/::error:: annotations, a ::group:: per attempt, step summary and step outputs'
gitlab\t'GitLab CI: the text lines, each attempt\'s output in a collapsible section'"
complete -c retry -l summary -d 'At the end of the run, write a JSON report of it to FILE (atomically)' -r -F
complete -c retry -l flaky-exit -d 'After a success that needed retries (a flaky run), exit N instead of 0 (1-123, not 75)' -r
complete -c retry -l metrics -d 'At the end, update Prometheus metrics of this run in FILE (node_exporter textfile format)' -r -F
complete -c retry -l queue -d 'When the run gives up, keep the job in the queue DIR (or redis://…#NAME) and exit 75' -r -F
complete -c retry -l queue-env -d 'The environment variables a job on a Redis queue keeps (comma list, repeatable)' -r
complete -c retry -l drain -d 'Run every due job of the queue DIR (or redis://…#NAME) once, then exit 0, 1 or 75' -r -F
complete -c retry -l lease -d 'How long a drain holds a job of a Redis queue without renewing it [default: 30s]' -r
complete -c retry -l list -d 'Print the jobs of the queue DIR (or redis://…#NAME) and its dead letters, as JSON lines' -r -F
complete -c retry -l max-age -d 'A queued job older than this (since its first attempt) goes to dead/ [default: 3days]' -r
complete -c retry -l on-dead -d 'With --drain: run `sh -c CMD` for each job this drain moves to the dead letters' -r
complete -c retry -l forever -d 'Retry without limit (until success, a stop rule, --max-time or a signal)'
complete -c retry -l reset-on-progress -d 'An attempt that changed its state dir does not use up the budget'
complete -c retry -l dry-run -d 'Print the planned delays and exit without running anything'
complete -c retry -l foreground -d 'Run COMMAND in retry\'s process group, for commands that need the terminal'
complete -c retry -l temp-state -d 'Give every attempt RETRY_STATE_DIR, a fresh private directory removed after the run'
complete -c retry -l store-optional -d 'When the state store cannot be used, warn and run without coordination'
complete -c retry -s q -l quiet -d 'Print nothing but errors about retry itself'
complete -c retry -s v -l verbose -d 'Also print the command, each attempt\'s start and the rule that decided (-vv: more)'
complete -c retry -s h -l help -d 'Print help (see more with \'--help\')'
complete -c retry -s V -l version -d 'Print version'
