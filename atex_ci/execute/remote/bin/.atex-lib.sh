# shellcheck shell=bash
# Shared code of the atex-ci tmt shims (tmt-report-result, tmt-file-submit,
# tmt-reboot, tmt-abort). Sourced, never run. It speaks the test-control
# stream described in docs/test-control.md on the file descriptor whose number
# is in $ATEX_TEST_CONTROL. Needs only bash and coreutils (stat, cat, head,
# mktemp, basename, sleep).
#
# The shims are not safe to run concurrently from one test: two results
# written at the same time would interleave on the stream.

# Byte semantics for ${#var} (JSON lengths) and for pattern replacement on
# names that are not valid UTF-8.
LC_ALL=C

atex_die() {
    echo "${0##*/}: $*" >&2
    exit 2
}

# Refuse to run outside a test, as tmt's own scripts do.
atex_require_control() {
    if [[ ! ${ATEX_TEST_CONTROL:-} =~ ^[0-9]+$ ]]; then
        echo "${0##*/} can be used only in the context of a running test (ATEX_TEST_CONTROL is not set)." >&2
        exit 1
    fi
}

# Control characters 1-31 and their JSON escapes (NUL cannot occur in bash strings).
_atex_ctrl=()
_atex_ctrl_escape=()
for _atex_i in {1..31}; do
    printf -v _atex_oct '%03o' "$_atex_i"  # no $(...): a fork per character adds up
    printf -v "_atex_ctrl[_atex_i]" "\\$_atex_oct"
    printf -v "_atex_ctrl_escape[_atex_i]" '\\u%04x' "$_atex_i"
done
unset _atex_i _atex_oct

# atex_json_quote STRING: sets REPLY to STRING as a JSON string literal.
# Bytes >= 0x80 pass through unchanged (the controller decodes UTF-8).
atex_json_quote() {
    local s=$1 i c backslash='\' quote='"'
    s=${s//"$backslash"/"$backslash$backslash"}
    s=${s//"$quote"/"$backslash$quote"}
    for i in {1..31}; do
        c=${_atex_ctrl[i]}
        if [[ $s == *"$c"* ]]; then
            s=${s//"$c"/"${_atex_ctrl_escape[i]}"}
        fi
    done
    REPLY="\"$s\""
}

# atex_write TEXT: write TEXT to the control stream.
atex_write() {
    printf '%s' "$1" >&"$ATEX_TEST_CONTROL"
}

_atex_tmpfiles=()
_atex_cleanup() {
    [[ ${#_atex_tmpfiles[@]} -gt 0 ]] && rm -f -- "${_atex_tmpfiles[@]}"
}
trap _atex_cleanup EXIT

# atex_send_result FIELDS [ARTIFACT_NAME LOCAL_PATH]...
# Write one `result` word: FIELDS is the inside of the JSON object without
# "files" (e.g. '"name":"/x","status":"pass"'), then the pairs name the files
# to attach. A file is measured first and exactly that many bytes are sent
# (cut if it grew, padded with NUL bytes if it shrank), so the stream never
# goes out of step. Unreadable files are skipped with a warning.
atex_send_result() {
    local fields=$1 files="" sep="" name path size tmp
    shift
    local -a paths=() sizes=()
    while [[ $# -ge 2 ]]; do
        name=$1 path=$2
        shift 2
        if [[ ! -r $path || -d $path ]]; then
            echo "${0##*/}: cannot read '$path', not attached" >&2
            continue
        fi
        size=$(stat -L -c %s -- "$path") || atex_die "cannot measure '$path'"
        if [[ ! -f $path || $size == 0 ]]; then
            # A pipe has no size, and /proc and /sys files claim 0 bytes:
            # take a copy and measure that.
            tmp=$(mktemp) || atex_die "cannot create a temporary file"
            _atex_tmpfiles+=("$tmp")
            cat -- "$path" > "$tmp" || echo "${0##*/}: reading '$path' failed" >&2
            path=$tmp
            size=$(stat -c %s -- "$path") || atex_die "cannot measure '$path'"
        fi
        atex_json_quote "$name"
        files+="$sep{\"name\":$REPLY,\"length\":$size}"
        sep=","
        paths+=("$path")
        sizes+=("$size")
    done
    local json="{${fields:+$fields,}\"files\":[$files]}" i
    {
        printf 'result %d\n%s' "${#json}" "$json"
        for i in "${!paths[@]}"; do
            cat -- "${paths[i]}" /dev/zero 2>/dev/null | head -c "${sizes[i]}"
        done
    } >&"$ATEX_TEST_CONTROL"
}
