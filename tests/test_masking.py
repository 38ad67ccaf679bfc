"""`run --secret-env NAME`: the test gets the value, nothing under the run directory or in a
report keeps it (plain, base64, URL-encoded), on local slots and on an sshd host."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from atex_ci import masking
from atex_ci.events import InternalError, TestRequeued, TestResults, to_record
from atex_ci.masking import MASK, Masker
from atex_ci.model import Machine, Result, Status, Test
from atex_ci.recorder import Recorder
from atex_ci.rundir import RunDir

from .treeutil import atex, make_tree, own_results, reserve_hosts, results

NAME = "ATEX_TEST_SECRET"

# What the test prints, each form on its own line and in a long stream whose
# chunk boundaries fall anywhere, and what it uploads, reports and leaves.
URLENCODE = r"""urlenc() { local LC_ALL=C s=$1 i c; for ((i = 0; i < ${#s}; i++)); do
  c=${s:i:1}; case $c in [a-zA-Z0-9.~_-]) printf %s "$c" ;; *) printf '%%%02X' "'$c" ;; esac
done; }"""
LEAKY = (
    URLENCODE
    + """
s=$ATEX_TEST_SECRET
printf 'sha:%s\\n' "$(printf %s "$s" | sha256sum | cut -d' ' -f1)"
printf 'plain:%s\\n' "$s"
printf 'err:%s\\n' "$s" >&2
printf 'b64:%s\\n' "$(printf %s "$s" | base64 -w0)"
printf 'b64nopad:%s\\n' "$(printf %s "$s" | base64 -w0 | tr -d =)"
printf 'b64url:%s\\n' "$(printf %s "$s" | base64 -w0 | tr '+/' '-_')"
printf 'b64in:%s\\n' "$(printf 'xy%sztail' "$s" | base64 -w0)"
printf 'url:%s\\n' "$(urlenc "$s")"
for i in $(seq 1 3000); do printf '%*s%s' $((i % 89)) '' "$s"; done; echo
printf '%s\\n%s\\n' "$s" "$(urlenc "$s")" > upload.txt
tmt-file-submit -l upload.txt
printf 'in data %s\\n' "$s" > "$TMT_TEST_DATA/data.txt"
for f in a b c; do echo "$f" > "$TMT_TEST_DATA/before-$f.txt"; done
mkdir -p "$TMT_TEST_DATA/n-$s" && echo named > "$TMT_TEST_DATA/n-$s/file.txt"
for f in a b c; do echo "$f" > "$TMT_TEST_DATA/after-$f.txt"; done
tmt-report-result "/sub-$s" FAIL
j="{\\"name\\":\\"/noted\\",\\"status\\":\\"pass\\",\\"note\\":\\"leak $s\\"}"
printf 'result %d\\n%s' ${#j} "$j" >&"$ATEX_TEST_CONTROL"
exit 1
"""
)


def secret_value() -> str:
    """A value with the characters that URL encoding and base64 change."""
    return f"s3cr3t/{secrets.token_hex(6)}+&x y=z"


def leaked_forms(value: str) -> list[bytes]:
    raw = value.encode()
    found = [raw, quote(value, safe="").encode(), quote_plus(value).encode()]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        found += [encode(raw), encode(raw).rstrip(b"=")]
    return found


def traces(root: Path, value: str) -> list[str]:
    """Every file under ``root`` (names included) that holds a form of ``value``."""
    found = []
    forms = leaked_forms(value)
    for path in [root, *root.rglob("*")]:
        if any(form in os.fsencode(path) for form in forms):
            found.append(f"name: {path}")
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {form!r}" for form in forms if form in data]
    return found


def check_no_trace(run: Path, tmp_path: Path, value: str, env: dict[str, str]) -> None:
    html = tmp_path / "report.html"
    proc = atex("report", "-d", str(run), "--html", str(html), env=env)
    assert proc.returncode == 0, proc.stderr
    assert traces(tmp_path, value) == []
    for text in (proc.stdout, proc.stderr):
        assert not any(form.decode() in text for form in leaked_forms(value))
    # The test did get the value, and every way it showed it is masked.
    own = own_results(run)["/tests/leaky"]
    output = (run / "artifacts" / own["files"][0]).read_text()
    digest = hashlib.sha256(value.encode()).hexdigest()
    assert f"sha:{digest}" in output
    for label in ("plain", "err", "b64", "b64nopad", "b64url", "url"):
        assert f"\n{label}:{MASK}\n" in output, label
    assert output.count(MASK) >= 3000 + 7
    assert "\nb64in:" in output and "b64in:eHl" in output  # only the value's part is masked
    uploaded = [f for f in own["files"] if f.endswith("upload.txt")]
    assert uploaded and (run / "artifacts" / uploaded[0]).read_text() == f"{MASK}\n{MASK}\n"
    data = [f for f in own["files"] if f.endswith("data.txt")]
    # TMT_TEST_DATA comes as a tar stream: masked with as many * as the value has.
    assert data and (run / "artifacts" / data[0]).read_text() == f"in data {'*' * len(value)}\n"
    # A secret in a name masks that name; no member of the archive is lost for it.
    kept = sorted(f.rsplit("/", 1)[-1] for f in own["files"] if "/data/" in f"/{f}")
    assert kept == sorted(
        ["data.txt", "file.txt"] + [f"{w}-{c}.txt" for w in ("before", "after") for c in "abc"]
    ), kept
    assert any("*" * 8 in f and f.endswith("/file.txt") for f in own["files"]), own["files"]
    names = {r["name"]: r for r in results(run) if r["test"] == "/tests/leaky"}
    assert f"/sub-{MASK}" in names and names["/noted"]["note"] == f"leak {MASK}"
    summary = (run / "summary.md").read_text()
    assert "sub-\\*\\*\\*" in summary  # Markdown escapes the stars


def run_leaky(run: Path, tmp_path: Path, value: str) -> tuple[dict[str, str], str]:
    tree = make_tree(tmp_path / "tree", {"leaky": {"test": LEAKY}, "plain": {"test": "true"}})
    env = {**os.environ, NAME: value}
    # -vv: the debug log shows every command sent over SSH, environment included.
    proc = atex(
        "run", "-vv", "-d", str(run), "--fmf-root", str(tree), "--secret-env", NAME,
        "--local", "1", env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert not any(form.decode() in proc.stderr for form in leaked_forms(value))
    assert own_results(run)["/tests/plain"]["status"] == "pass"
    return env, proc.stderr


def test_a_secret_leaves_no_trace_on_a_local_slot(tmp_path):
    value = secret_value()
    run = tmp_path / "run"
    env, _stderr = run_leaky(run, tmp_path, value)
    check_no_trace(run, tmp_path, value, env)
    assert NAME not in (run / "run.json").read_text()


def test_a_secret_leaves_no_trace_on_an_ssh_host(tmp_path, ssh_host):
    value = secret_value()
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    env, stderr = run_leaky(run, tmp_path, value)
    sent = [line for line in stderr.splitlines() if f"{NAME}=" in line]
    # The SSH library's log of the command, which exports the value (shell-quoted).
    assert sent and all(f"{NAME}='{MASK}'" in line for line in sent)
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {r["machine"] for r in own_results(run).values()} == {m["id"] for m in machines}
    check_no_trace(run, tmp_path, value, env)


def test_the_recorder_writes_no_secret_whatever_event_carries_it(tmp_path, monkeypatch):
    """The Recorder is the run directory's only writer: an event's text (a
    traceback, a requeue note, a result no executor masked, run.json fields)
    reaches events.jsonl, results.jsonl and run.json masked."""
    value = secret_value()
    monkeypatch.setattr(masking, "_active", Masker([value]))
    rec = Recorder(RunDir.create(tmp_path / "run"))
    test = Test(name="/t", plan="/plan", test="true", path="/", serial_number=1)
    machine = Machine(id="here", provisioner="local", platform="default", host=None, user="")
    error = InternalError(test, f"Traceback: ValueError: {value}")
    assert to_record(error)["traceback"] == f"Traceback: ValueError: {MASK}"  # a sink's copy
    rec(error)
    rec(TestRequeued(test, "default", machine, f"lost: {quote(value, safe='')}"))
    leaked = Result(test="/t", plan="/plan", platform="default", status=Status.FAIL, note=value)
    rec(TestResults([leaked]))
    rec.run_info(fmf={"ref": base64.b64encode(value.encode()).decode()})
    events = (tmp_path / "run" / "events.jsonl").read_text()
    assert "internal_error" in events and "test_requeued" in events
    assert results(tmp_path / "run")[0]["note"] == MASK
    assert traces(tmp_path, value) == []


def test_a_missing_secret_is_one_line_before_anything_is_reserved(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != NAME}
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--secret-env", NAME, "--local", "1", env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"atex-ci: --secret-env {NAME}: the environment variable {NAME} is not set"
    ]
    assert not run.exists()
    short = atex("run", "-d", str(run), "--secret-env", NAME, env={**env, NAME: "ab"})
    assert short.returncode == 2 and "ab" not in short.stderr and not run.exists()


def test_a_value_split_anywhere_between_chunks_is_masked():
    value = "s3cr3t/Valüe+&x y=z"
    masker = Masker([value])
    raw = value.encode()
    stream = (
        b"a" + raw + b"\n" + base64.b64encode(raw) + b"b" + base64.urlsafe_b64encode(raw)
        + quote(value, safe="").encode() + raw + raw + b"\n"
        + b"".join(base64.b64encode(b"xyz"[:k] + raw + b"!") for k in range(3))
    )  # fmt: skip
    whole = masker.bytes(stream)
    assert not any(form in whole for form in leaked_forms(value))
    for k in range(3):  # the value's part of a longer base64 stream, at each alignment
        assert base64.b64encode(b"xyz"[:k] + raw + b"!")[4:-4] not in whole
    for cut in range(len(stream) + 1):
        for second in (cut, min(cut + 3, len(stream))):
            pieces = [stream[:cut], stream[cut:second], stream[second:]]
            masked = masker.stream()
            out = b"".join(masked.feed(p) for p in pieces) + masked.flush()
            assert out == whole, (cut, second)
    same = masker.stream(same_length=True)
    assert len(same.feed(stream) + same.flush()) == len(stream)


@pytest.mark.parametrize("data", [{"k": "x"}, ["x", {"x": 1}], "x"])
def test_records_are_masked_keys_included(data):
    masker = Masker(["x" * 8])
    text = json.dumps(data).replace("x", "x" * 8)
    assert "x" * 8 not in json.dumps(masker.data(json.loads(text)))
