# shellcheck shell=bash
# atex-ci process reaper: ends every process a run started on this machine.
#
# Every process atex-ci starts on a machine (a test, a prepare or finish
# script, and everything they start in turn, in any process group or session,
# also daemons started with setsid) inherits the environment variable
# ATEX_CI_OWNER="<work dir>#<who>;". The reaper finds processes by that
# variable in /proc/PID/environ, so it needs no record that a crashed
# controller could have lost: the work dir names the run and the machine, and
# "<who>;" one test. A process that deliberately drops the variable from its
# environment escapes it (see docs/test-limits.md).
#
# Sourced by the wrapper (a test's leftovers when it ends) and sent inline by
# the controller (a timed-out test, the end of a run, `atex-ci release`, the
# start of a later run on the same machine). Only bash builtins, so it runs
# on any machine and costs no process per /proc entry.

# atex_reap PREFIX [FIRST_PID]: SIGKILL every process (but this shell) whose
# ATEX_CI_OWNER starts with PREFIX; scan again while it finds some (a process
# may fork while we scan), at most ten times. With FIRST_PID (the pid of a
# test that just ended), only the pids allocated since are looked at, as long
# as the kernel's pid counter has not wrapped in between (else every process
# is): reading every process's environment costs milliseconds on a busy
# machine, and this runs after every test. What that misses, the end of the
# run finds.
atex_reap() {
    local prefix=$1 first=${2:-0} sep=$'\n' round pid found entries joined last
    local -a pids
    local IFS=$sep
    for round in 1 2 3 4 5 6 7 8 9 10; do
        pids=()
        if ((first > 0)) && read -r last 2>/dev/null </proc/sys/kernel/ns_last_pid &&
            ((last >= first && last - first < 10000)); then
            for ((pid = first; pid <= last; pid++)); do
                [[ -d /proc/$pid ]] && pids+=("$pid")
            done
        else
            pids=(/proc/[0-9]*)
            pids=("${pids[@]#/proc/}")
        fi
        found=0
        for pid in "${pids[@]}"; do
            [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
            mapfile -d '' entries 2>/dev/null <"/proc/$pid/environ" || continue
            joined="$sep${entries[*]}"
            if [[ $joined == *"${sep}ATEX_CI_OWNER=$prefix"* ]]; then
                kill -KILL "$pid" 2>/dev/null && found=1
            fi
        done
        [[ $found == 0 ]] && return 0
    done
    return 0
}
