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
