#!/bin/bash
# atex-ci test wrapper: runs one test on the machine and speaks the test-control
# stream (docs/test-control.md) on its stdout.
#
# The controller sources it in the bash that SSH starts (one process less per
# test than running it as a script), with the test's environment exported
# and these variables set:
#   ATEX_TEST_COMMAND  the fmf `test` key, run with bash -c
#   ATEX_TEST_CWD      directory to run it in
#   ATEX_TEST_DIR      per-test scratch dir on the machine (pid file, metadata)
#   ATEX_TEST_TTY      1 to give the test a terminal (needs `script`)
#   ATEX_TEST_FRESH    1 on the test's first boot: clear what an earlier
#                      attempt left in TMT_TEST_DATA
#   ATEX_TEST_METADATA_JSON  the metadata, unless it was staged at setup (large)
#
# File descriptors: our stdout is the control channel, handed to the test as
# fd 3 (ATEX_TEST_CONTROL); the test's stdout and stderr both go to our
# stderr, which the controller captures as the test's output. The wrapper
# always exits 0 and reports the test's real exit code with `exitcode`, so an
# SSH failure (255) is never mistaken for the test's own 255.
#
# Every external command costs a process start (milliseconds on a busy
# machine), so the common path uses only bash builtins, the test itself and,
# on the test's first start, the mkdir of its scratch directory (staging
# every test's directory on every machine beforehand costs more: see
# INLINE_METADATA_MAX in staging.py).

exec 3>&1 1>&2
export ATEX_TEST_CONTROL=3

report_exit() {
    printf 'exitcode %d\n' "$1" >&3
    exit 0
}

if [[ ! -d $TMT_TEST_DATA ]]; then
    mkdir -p "$TMT_TEST_DATA" || report_exit 2
elif [[ ${ATEX_TEST_FRESH:-1} == 1 && -s $ATEX_TEST_DIR/pid ]]; then
    # The directory was used by an earlier attempt of this test.
    rm -rf "$TMT_TEST_DATA" && mkdir -p "$TMT_TEST_DATA" || report_exit 2
fi
# An old pid must never be taken for this run's (the controller kills by it).
: > "$ATEX_TEST_DIR/pid"
if [[ -n ${ATEX_TEST_METADATA_JSON+set} ]]; then
    printf '%s\n' "$ATEX_TEST_METADATA_JSON" > "$TMT_TEST_METADATA" || report_exit 2
    # The file is the test's; every process it starts need not copy this too.
    unset ATEX_TEST_METADATA_JSON
fi

if ! cd "$ATEX_TEST_CWD" 2>/dev/null; then
    echo "atex-ci: test directory $ATEX_TEST_CWD does not exist on the machine" >&2
    report_exit 2
fi

# Variables earlier tests of the plan wrote to TMT_PLAN_ENVIRONMENT_FILE, as tmt does.
if [ -s "${TMT_PLAN_ENVIRONMENT_FILE:-}" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            # Never the variables that tell a test where it is and who it is.
            ATEX_* | TMT_TEST_* | TMT_PLAN_* | TMT_TREE=* | TMT_REBOOT_COUNT=*) ;;
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
# Job control stays off otherwise: bash would print "[1]+ Done ..." into
# the test's output when the job ends.
set +m
echo "$pid" > "$ATEX_TEST_DIR/pid"
wait "$pid"
rc=$?
# Anything the test left running would keep our output pipes open and the
# controller waiting; end it, as a finished test's leftovers: its process
# group, then whatever it started in other groups or sessions (setsid), found
# by the ATEX_CI_OWNER value it inherited (reap.sh), among the processes
# created since the test started.
kill -KILL -- "-$pid" 2>/dev/null
source "${BASH_SOURCE[0]%/*}/reap.sh" && atex_reap "$ATEX_CI_OWNER" "$pid"

# The test is over: say so first, so that sending its files is not charged to
# its duration. Then send what it left in TMT_TEST_DATA as one tar archive,
# attached under a name the controller unpacks (regular files only): one tar
# process whatever the number of files, and no second round trip. The shims'
# library is loaded in a subshell only, and only when there is something to
# send (most tests leave nothing).
printf 'exitcode %d\n' "$rc" >&3
shopt -s dotglob nullglob
data=("$TMT_TEST_DATA"/*)
if [[ ${#data[@]} -gt 0 ]] && tar -c -f "$ATEX_TEST_DIR/data.tar" -C "$TMT_TEST_DATA" . 2>/dev/null
then
    (
        source "${BASH_SOURCE[0]%/*}/bin/.atex-lib.sh"
        atex_send_result '"partial":true' .atex-test-data.tar "$ATEX_TEST_DIR/data.tar"
    )
fi
exit 0
