# Shell functions for the steps of action.yml (sourced by each step's bash).
#
# They exist once here rather than in every step: how a list input becomes
# arguments, how atex-ci is installed, and how it is run so that a cancelled
# job reaches it. collect/action.yml sources this file too.

# require_linux: fail the step with one clear line on a runner that is not
# Linux (atex-ci needs /proc, a POSIX venv layout and Linux process groups).
require_linux() {
    if [ "${RUNNER_OS:-}" != Linux ]; then
        echo "::error::atex-ci: the action runs on Linux runners only, this one is ${RUNNER_OS:-unknown} (use runs-on: ubuntu-24.04 or a Linux self-hosted runner)"
        exit 2
    fi
}

# install_atex_ci ROOT: install the atex-ci of ROOT (the action's checkout)
# into a fresh virtual environment under RUNNER_TEMP (non-editable), with
# $PYTHON (actions/setup-python's, when the step has one) or python3; set the
# step output atex-ci to its command.
# ATEX_CI_VENV (internal, for atex-ci's own tests): an existing virtual
# environment with atex-ci installed; the install is skipped.
install_atex_ci() {
    local venv python
    if [ -n "${ATEX_CI_VENV:-}" ]; then
        venv=$ATEX_CI_VENV
    else
        python=${PYTHON:-python3}
        if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "::error::atex-ci needs Python 3.11 or newer: set the action's python-version input"
            exit 2
        fi
        venv=$RUNNER_TEMP/atex-ci-venv
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$1"
    fi
    "$venv/bin/atex-ci" --version
    echo "atex-ci=$venv/bin/atex-ci" >> "$GITHUB_OUTPUT"
}

# lines TEXT: one value per non-empty line of TEXT, surrounding blanks dropped.
lines() {
    sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e '/^$/d' <<< "$1"
}

# option NAME VALUE: append NAME VALUE to the array args, unless VALUE is
# empty (then atex-ci's own default applies).
option() {
    if [ -n "$2" ]; then args+=("$1" "$2"); fi
}

# path_option NAME PATH: as option, and create PATH's directory first.
path_option() {
    if [ -n "$2" ]; then
        mkdir -p -- "$(dirname -- "$2")"
        args+=("$1" "$2")
    fi
}

# reservation_options EXTRA: append the machine inputs and the lines of EXTRA
# (the reserve-args input) to the array args, as reserve and run take them.
reservation_options() {
    option --platform "$PLATFORM"
    option --local "$LOCAL_SLOTS"
    while IFS= read -r host; do args+=(--host "$host"); done < <(lines "$HOSTS")
    option --hosts "$INVENTORY"
    option --key "$SSH_KEY"
    option --provisioner "$PROVISIONER"
    while IFS= read -r kv; do args+=(-o "$kv"); done < <(lines "$PROVISIONER_OPTIONS")
    while IFS= read -r image; do args+=(--image "$image"); done < <(lines "$IMAGE")
    option --compose "$COMPOSE"
    option --arch "$ARCH"
    option --count "$COUNT"
    option --pool "$POOL"
    while IFS= read -r arg; do args+=("$arg"); done < <(lines "$1")
}

# run_forwarding COMMAND...: run COMMAND, set $status to its exit code.
#
# On cancellation the runner sends SIGINT to the step's shell only (this one),
# SIGTERM 7.5 s later, then kills the process tree. COMMAND runs as its own
# job (job control on, so it does not inherit an ignored SIGINT, as a
# background command otherwise would) and gets SIGINT once, even for a signal
# that came before it started: atex-ci then stops what it is doing, cleans
# up and records what was cut short. A second signal would make atex-ci exit
# at once, so later ones are only noted; the release step frees the machines.
run_forwarding() {
    local child='' forwarded='' pending=''
    forward() {
        if [ -n "$forwarded" ]; then return; fi
        if [ -z "$child" ]; then
            pending=1
            return
        fi
        forwarded=1
        kill -INT "$child" 2>/dev/null || true
    }
    set -m
    trap forward INT TERM
    "$@" &
    child=$!
    if [ -n "$pending" ]; then forward; fi
    while :; do
        status=0
        wait "$child" || status=$?
        if [ "$status" -gt 128 ] && kill -0 "$child" 2>/dev/null; then continue; fi
        break
    done
    trap - INT TERM
    set +m
}

# Time kept back from the job's timeout-minutes for what follows the tests
# (report, comment, release, upload): at least TIME_MARGIN_MIN seconds, or
# TIME_MARGIN_PERCENT of the timeout when that is more (a long job has more
# machines to release and a larger run directory to upload).
TIME_MARGIN_MIN=300
TIME_MARGIN_PERCENT=10

# time_budget MINUTES START [NOW]: the seconds the run step may spend, for a
# job with timeout-minutes MINUTES whose action started at START (epoch
# seconds): the timeout less what has passed since START and the margin.
# Prints nothing (no budget) for an empty MINUTES; fails with one line for a
# value that is not a positive whole number of minutes, or when nothing is
# left. NOW (default: the clock) is for the tests.
time_budget() {
    local minutes=$1 start=$2 now=${3:-$(date +%s)} total margin left
    if [ -z "$minutes" ]; then return 0; fi
    if ! [[ "$minutes" =~ ^[1-9][0-9]{0,5}$ ]]; then
        echo "::error::atex-ci: the timeout-minutes input must be a whole number of minutes, got '$minutes'"
        exit 2
    fi
    total=$((minutes * 60))
    margin=$((total * TIME_MARGIN_PERCENT / 100))
    if [ "$margin" -lt "$TIME_MARGIN_MIN" ]; then margin=$TIME_MARGIN_MIN; fi
    left=$((total - margin - (now - start)))
    if [ "$left" -le 0 ]; then
        echo "::error::atex-ci: no time left for tests: timeout-minutes $minutes less $((margin / 60)) minutes for report and release"
        exit 2
    fi
    echo "${left}s"
}

# previous_run DIR ATTEMPT: the run directory of the newest attempt before
# ATTEMPT among the artifacts downloaded into DIR (one directory per
# artifact, named ...-attempt-N); nothing when there is none.
previous_run() {
    local dir=$1 attempt=$2 best='' best_n=0 path n
    if [ ! -d "$dir" ]; then return 0; fi
    for path in "$dir"/*-attempt-*; do
        [ -e "$path/run.json" ] || continue
        n=${path##*-attempt-}
        [[ "$n" =~ ^[0-9]+$ ]] || continue
        if [ "$n" -lt "$attempt" ] && [ "$n" -gt "$best_n" ]; then
            best=$path
            best_n=$n
        fi
    done
    if [ -n "$best" ]; then echo "$best"; fi
}

# one_of INPUT VALUE CHOICE...: fail the step with one line unless VALUE is
# one of the CHOICEs.
one_of() {
    local input=$1 value=$2 choice
    shift 2
    for choice in "$@"; do
        if [ "$value" = "$choice" ]; then return 0; fi
    done
    local choices=("$@") words
    words=$(printf '%s, ' "${choices[@]:0:$#-1}")
    echo "::error::atex-ci: the $input input must be ${words%, } or ${choices[-1]}, got '$value'"
    exit 2
}

# url_encode TEXT: TEXT percent-encoded (every byte but A-Z a-z 0-9 - . _ ~).
url_encode() {
    local LC_ALL=C text=$1 i c out=''
    for ((i = 0; i < ${#text}; i++)); do
        c=${text:i:1}
        case "$c" in
            [A-Za-z0-9._~-]) out+=$c ;;
            *) printf -v c '%%%02X' "'$c"; out+=$c ;;
        esac
    done
    printf '%s' "$out"
}

# mask_secret_env NAMES: add a mask for the value of each environment
# variable named on a line of NAMES (the secret-env input), for each of its
# lines, its base64 form and its URL-encoded forms, before anything prints.
mask_secret_env() {
    local name value line encoded
    while IFS= read -r name; do
        if ! [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
            echo "::error::atex-ci: the secret-env input names '$name', which is not an environment variable name"
            exit 2
        fi
        value=${!name-}
        if [ -z "$value" ]; then continue; fi
        while IFS= read -r line; do
            if [ -n "$line" ]; then echo "::add-mask::$line"; fi
        done <<< "$value"
        echo "::add-mask::$(printf '%s' "$value" | base64 -w0)"
        encoded=$(url_encode "$value")
        echo "::add-mask::$encoded"
        if [[ "$encoded" == *%20* ]]; then echo "::add-mask::${encoded//%20/+}"; fi
    done < <(lines "$1")
}

# run_artifacts NAME SHARD ATTEMPT RERUN: the step outputs for the run
# directory's artifact: `artifact`, its name for this attempt (NAME, the
# shard's index for SHARD I/N, -attempt-ATTEMPT), and `previous-pattern`,
# the names of this job's earlier attempts, when the job is re-run
# (ATTEMPT above 1) with RERUN true. Both are empty for an empty NAME.
run_artifacts() {
    local name=$1 shard=$2 attempt=$3 rerun=$4
    if [ -z "$name" ]; then return 0; fi
    if ! [[ "$attempt" =~ ^[1-9][0-9]*$ ]]; then attempt=1; fi
    if [ -n "$shard" ]; then name="$name-${shard%%/*}"; fi
    echo "artifact=$name-attempt-$attempt"
    if [ "$attempt" -gt 1 ] && [ "$rerun" = true ]; then
        echo "previous-pattern=$name-attempt-*"
    fi
}

# history_keys NAME BRANCH DEFAULT RUN_ID ATTEMPT: the actions/cache keys of
# the history NAME (the history-cache input) as step outputs: `history-key`,
# this run's own (a cache entry is never overwritten, so every run saves
# under a new key), and `history-restore-keys`, the prefixes that find the
# newest entry of BRANCH, else of the DEFAULT branch (which GitHub lets
# every branch read). Nothing for an empty NAME.
history_keys() {
    local name=$1 branch=$2 default=$3
    if [ -z "$name" ]; then return 0; fi
    # A key may not hold a comma.
    name=${name//,/_}
    branch=${branch//,/_}
    default=${default//,/_}
    echo "history-key=atex-ci-history-$name-branch-$branch-run-$4-$5"
    echo "history-restore-keys<<ATEX_CI_KEYS"
    echo "atex-ci-history-$name-branch-$branch-run-"
    if [ -n "$default" ] && [ "$default" != "$branch" ]; then
        echo "atex-ci-history-$name-branch-$default-run-"
    fi
    echo "ATEX_CI_KEYS"
}

# export_history ATEX_CI RUN_DIR: put the history of RUN_DIR (what
# `atex-ci collect` writes for a complete run) where the history cache is
# saved from, $RUNNER_TEMP/atex-ci-history/history.json; print the step
# output saved=true when there is one to save.
export_history() {
    local out="$RUNNER_TEMP/atex-ci-history-export" cache="$RUNNER_TEMP/atex-ci-history"
    rm -rf "$out"
    "$1" collect -d "$out" -- "$2" >/dev/null
    if [ ! -f "$out/history.json" ]; then
        echo "atex-ci: no history to keep from this run" >&2
        return 0
    fi
    mkdir -p "$cache"
    cp "$out/history.json" "$cache/history.json"
    rm -rf "$out"
    echo "saved=true"
}
