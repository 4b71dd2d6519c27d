_retry_options() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="retry"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        retry)
            opts="-n -t -w -j -q -v -h -V --retries --forever --timeout --kill-after --kill-signal --max-time --algo --delays --wait --multiplier --max-wait --jitter --reset-after --wait-from --rotate --reset-on-progress --splay --seed --dry-run --on-retry --on-give-up --success-exit --retry-on-exit --stop-on-exit --retry-on-signal --stop-on-signal --retry-on-stderr --retry-on-stdout --stop-on-stderr --stop-on-stdout --retry-if --until --until-match --stdout --stdin --foreground --state-dir --temp-state --key --state-store --circuit-break --circuit-cooldown --rate --concurrency --store-optional --store-lease --tls-ca --tls-cert --tls-key --quiet --verbose --log-format --summary --flaky-exit --metrics --queue --queue-env --drain --lease --list --max-age --on-dead --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --retries)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -n)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -t)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --kill-after)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --kill-signal)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-time)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --algo)
                    COMPREPLY=($(compgen -W "exponential linear fibonacci constant decorrelated" -- "${cur}"))
                    return 0
                    ;;
                --delays)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --wait)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -w)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --multiplier)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-wait)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --jitter)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -j)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --reset-after)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --wait-from)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rotate)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --splay)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --seed)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --on-retry)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --on-give-up)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --success-exit)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --retry-on-exit)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --stop-on-exit)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --retry-on-signal)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --stop-on-signal)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --retry-on-stderr)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --retry-on-stdout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --stop-on-stderr)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --stop-on-stdout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --retry-if)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --until)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --until-match)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --stdout)
                    COMPREPLY=($(compgen -W "live final" -- "${cur}"))
                    return 0
                    ;;
                --stdin)
                    COMPREPLY=($(compgen -W "pass replay" -- "${cur}"))
                    return 0
                    ;;
                --state-dir)
                    COMPREPLY=()
                    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
                        compopt -o plusdirs
                    fi
                    return 0
                    ;;
                --key)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --state-store)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --circuit-break)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --circuit-cooldown)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rate)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --concurrency)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --store-lease)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --tls-ca)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --tls-cert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --tls-key)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --log-format)
                    COMPREPLY=($(compgen -W "text json github gitlab" -- "${cur}"))
                    return 0
                    ;;
                --summary)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --flaky-exit)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --metrics)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --queue)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --queue-env)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --drain)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --lease)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --list)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-age)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --on-dead)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}


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
    local value_shorts="ntwj" value_opts="
        --retries -n --timeout -t --kill-after --kill-signal --max-time --algo
        --delays --wait -w --multiplier --max-wait --jitter -j --reset-after
        --wait-from --rotate --splay --seed --on-retry --on-give-up
        --success-exit --retry-on-exit --stop-on-exit --retry-on-signal
        --stop-on-signal --retry-on-stderr --retry-on-stdout --stop-on-stderr
        --stop-on-stdout --retry-if --until --until-match --stdout --stdin
        --state-dir --key --state-store --circuit-break --circuit-cooldown
        --rate --concurrency --store-lease --tls-ca --tls-cert --tls-key
        --log-format --summary --flaky-exit --metrics --queue --queue-env
        --drain --lease --list --max-age --on-dead
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

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _retry -o nosort -o bashdefault -o default retry
else
    complete -F _retry -o bashdefault -o default retry
fi
