#!/bin/bash
# atex-ci test wrapper: runs one test on the machine and speaks the test-control
# stream (docs/test-control.md) on its stdout.
#
# The controller starts it as `bash wrapper.sh` with the test's environment
# exported and these variables set:
#   ATEX_TEST_COMMAND  the fmf `test` key, run with bash -c
#   ATEX_TEST_CWD      directory to run it in
#   ATEX_TEST_DIR      per-test scratch dir on the machine (pid file, metadata)
#   ATEX_TEST_TTY      1 to give the test a terminal (needs `script`)
# The test's metadata arrives on stdin and is saved as $TMT_TEST_METADATA.
#
# File descriptors: our stdout is the control channel, handed to the test as
# fd 3 (ATEX_TEST_CONTROL); the test's stdout and stderr both go to our
# stderr, which the controller captures as the test's output. The wrapper
# always exits 0 and reports the test's real exit code with `exitcode`, so an
# SSH failure (255) is never mistaken for the test's own 255.

exec 3>&1 1>&2
export ATEX_TEST_CONTROL=3

report_exit() {
    printf 'exitcode %d\n' "$1" >&3
    exit 0
}

mkdir -p "$ATEX_TEST_DIR" "$TMT_TEST_DATA" || report_exit 2
cat > "$TMT_TEST_METADATA" || report_exit 2

if ! cd "$ATEX_TEST_CWD" 2>/dev/null; then
    echo "atex-ci: test directory $ATEX_TEST_CWD does not exist on the machine" >&2
    report_exit 2
fi

# Variables earlier tests of the plan wrote to TMT_PLAN_ENVIRONMENT_FILE, as tmt does.
if [ -s "${TMT_PLAN_ENVIRONMENT_FILE:-}" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            [A-Za-z_]*=*) export "${line%%=*}=${line#*=}" ;;
        esac
    done < "$TMT_PLAN_ENVIRONMENT_FILE"
fi

# Job control puts the test in its own process group (pgid = its pid), so the
# controller can kill everything it started with one `kill -- -PGID`; no
# util-linux setsid needed.
set -m
if [ "${ATEX_TEST_TTY:-0}" = 1 ]; then
    if ! command -v script >/dev/null; then
        echo "atex-ci: 'tty: true' needs the 'script' command (util-linux) on the machine" >&2
        report_exit 2
    fi
    script -q -e -c "bash -c \"\$ATEX_TEST_COMMAND\"" /dev/null </dev/null &
else
    bash -c "$ATEX_TEST_COMMAND" </dev/null &
fi
pid=$!
echo "$pid" > "$ATEX_TEST_DIR/pid"
wait "$pid"
rc=$?
# Anything the test left running in its group would keep our output pipes
# open and the controller waiting; end it, as a finished test's leftovers.
kill -KILL -- "-$pid" 2>/dev/null

# Send the regular files the test left in TMT_TEST_DATA as files of its own
# result (named data/...), in this same stream: no second round trip. Links
# and special files are not followed. The shims' library is loaded in a
# subshell only, so its settings never reach the test.
(
    source "${BASH_SOURCE[0]%/*}/bin/.atex-lib.sh"
    shopt -s globstar dotglob nullglob
    pairs=()
    for f in "$TMT_TEST_DATA"/**; do
        [[ -f $f && ! -L $f ]] || continue
        pairs+=("data/${f#"$TMT_TEST_DATA"/}" "$f")
        if [[ ${#pairs[@]} -ge 200 ]]; then
            atex_send_result '"partial":true' "${pairs[@]}"
            pairs=()
        fi
    done
    if [[ ${#pairs[@]} -gt 0 ]]; then
        atex_send_result '"partial":true' "${pairs[@]}"
    fi
)
report_exit "$rc"
