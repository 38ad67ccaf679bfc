"""Run directories and history files from anywhere: deep or huge, never a crash.

``collect``, ``report``, ``estimate``, ``release`` and ``run --history`` read
files that may come from another job, a CI cache or anyone. Each case here
takes a real finished run (and its collected copy with history.json), damages
one file the way a hostile or broken producer would, runs the real command
and checks the outcome: a one-line error naming the file and line (exit 2)
for a document, a warning naming the line for a JSON Lines record (the rest
is kept), and memory bounded for a 2 GB file (peak RSS of the command,
measured by the kernel).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atex_ci import untrusted_json
from atex_ci.errors import ConfigError
from atex_ci.rundir import MAX_JSONL_LINE_BYTES, RunDir

from .treeutil import atex, make_tree

#: A nested line of about 200 KB: 100,000 levels, far past any recursion limit.
LEVELS = 100_000
DEPTH_ERROR = f"nested deeper than {untrusted_json.MAX_DOCUMENT_DEPTH} levels"

#: Size of the huge files: 2 GiB, sparse (nothing is written but a header).
HUGE = 2 * 1024**3

#: Peak RSS allowed to a command reading a 2 GiB file. Reading one whole
#: would cost more than 2 GiB; a results line is read up to its 64 MiB cap.
MAX_RSS_KB = 256 * 1024

#: Runs a command and prints its exit code, stderr and the peak RSS of the
#: process tree below it (RUSAGE_CHILDREN of this otherwise idle process).
_MEASURE = (
    "import json, resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps([p.returncode, p.stderr, peak]))\n"
)


def measured(*args: str) -> tuple[int, str, int]:
    """``atex-ci ARGS``: (exit code, stderr, peak RSS in KiB of that process)."""
    command = [sys.executable, "-c", _MEASURE, sys.executable, "-m", "atex_ci", *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    code, err, peak = json.loads(out.stdout)
    return code, err, peak


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A real finished run (one pass, one fail) and its collected copy (history.json)."""
    base = tmp_path_factory.mktemp("finished")
    tree = make_tree(base / "tree", {"a": {"test": "true"}, "b": {"test": "false"}})
    run = base / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 1, proc.stderr
    proc = atex("collect", "-d", str(base / "collected"), str(run))
    assert proc.returncode == 0, proc.stderr
    return run, base / "collected"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    shutil.copytree(finished[0], tmp_path / "run", symlinks=True)
    return tmp_path / "run"


@pytest.fixture
def collected(finished, tmp_path) -> Path:
    shutil.copytree(finished[1], tmp_path / "collected", symlinks=True)
    return tmp_path / "collected"


def deep(head: str = '{"format": "atex-ci-run", "version": 1, "deep": ') -> str:
    return head + "[" * LEVELS + "]" * LEVELS + "}"


def insert_line(path: Path, number: int, line: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(number - 1, line + "\n")
    path.write_text("".join(lines))


def make_huge(path: Path, head: bytes) -> None:
    """``path`` becomes HUGE bytes: ``head`` then a hole (zeros), no newline."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(HUGE)


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("atex-ci: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err


# -- depth: a document is a one-line error naming the file and the line -----------------


def test_deep_run_json_is_a_one_line_error_for_every_reader(run, tmp_path):
    (run / "run.json").write_text('\n\n{"format": "atex-ci-run", "version": 1,\n "x": ' + deep(""))
    where = f"{run / 'run.json'}:4: {DEPTH_ERROR}"
    for args in (
        ["report", "-d", str(run)],
        ["collect", "-d", str(tmp_path / "out"), str(run)],
        ["estimate", "--history", str(run)],
    ):
        proc = atex(*args)
        if args[0] == "estimate":  # reads only results.jsonl, which is intact
            assert proc.returncode == 0, proc.stderr
            continue
        assert_one_line_error(proc.returncode, proc.stderr, where)


def test_deep_machines_json_is_a_one_line_error(run):
    (run / "machines.json").write_text(deep('{"version": 1, "machines": '))
    proc = atex("release", "-d", str(run))
    assert_one_line_error(proc.returncode, proc.stderr, f"{run / 'machines.json'}:1: {DEPTH_ERROR}")


def test_deep_tests_json_is_a_config_error(run):
    (run / "tests.json").write_text(deep('{"version": 1, "platforms": '))
    with pytest.raises(ConfigError, match=f"tests.json:1: {DEPTH_ERROR}"):
        RunDir.open(run).read_tests()


def test_deep_history_is_a_one_line_error_for_estimate_and_run(collected, tmp_path):
    history = collected / "history.json"
    history.write_text(deep('{"format": "atex-ci-history", "version": 1, "tests": '))
    where = f"{history}:1: {DEPTH_ERROR}"
    for source in (history, collected):  # the file, or the run directory holding it
        proc = atex("estimate", "--history", str(source))
        assert_one_line_error(proc.returncode, proc.stderr, where)
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    proc = atex(
        "run", "-d", str(tmp_path / "new"), "--fmf-root", str(tree), "--local", "1",
        "--history", str(history),
    )  # fmt: skip
    assert_one_line_error(proc.returncode, proc.stderr, where)
    assert not (tmp_path / "new" / "results.jsonl").exists()


def test_deep_jsonl_lines_are_skipped_and_named(run, tmp_path):
    """A 200 KB nested line in results.jsonl or events.jsonl: the line is named, the rest kept."""
    insert_line(run / "results.jsonl", 2, deep('{"test": "/tests/x", "extra": '))
    insert_line(run / "events.jsonl", 1, deep('{"event": "x", "deep": '))
    where = f"{run / 'results.jsonl'}:2: {DEPTH_ERROR}"
    proc = atex("report", "-d", str(run))
    assert proc.returncode == 0, proc.stderr
    assert where in proc.stderr and "Traceback" not in proc.stderr
    junit = (run / "junit.xml").read_text()
    assert "/tests/a" in junit and "/tests/b" in junit
    proc = atex("collect", "-d", str(tmp_path / "out"), str(run))
    assert proc.returncode == 0, proc.stderr
    assert where in proc.stderr
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 2
    proc = atex("estimate", "--history", str(run))
    assert proc.returncode == 0, proc.stderr


# -- size: nothing is read whole; memory stays bounded for a 2 GB file --------------------


def test_huge_documents_are_refused_before_reading(run, collected):
    cases = [
        (run / "run.json", b'{"format": "atex-ci-run", "version": 1, "x": "', ["report", "-d"]),
        (run / "machines.json", b'{"version": 1, "machines": ["', ["release", "-d"]),
        (collected / "history.json", b'{"format": "atex-ci-history", "', ["estimate", "--history"]),
    ]
    for path, head, command in cases:
        make_huge(path, head)
        code, err, peak = measured(*command, str(path.parent))
        assert_one_line_error(code, err, f"{path}: larger than", f"({HUGE} bytes)")
        assert peak < MAX_RSS_KB, f"{command[0]} peaked at {peak} KiB on a huge {path.name}"


def test_huge_jsonl_lines_are_skipped_with_bounded_memory(run):
    for name in ("results.jsonl", "events.jsonl"):
        with open(run / name, "ab") as f:
            f.write(b'{"test": "/tests/x", "note": "')
            f.truncate(HUGE)
    code, err, peak = measured("report", "-d", str(run))
    assert code == 0, err
    assert f"{run / 'results.jsonl'}:3: longer than {MAX_JSONL_LINE_BYTES} bytes" in err
    assert peak < MAX_RSS_KB, f"report peaked at {peak} KiB"
    assert "/tests/a" in (run / "junit.xml").read_text()


def test_special_files_are_refused_without_blocking(run):
    """A FIFO would block a reader forever, a device never end."""
    for name in ("results.jsonl", "events.jsonl", "machines.json"):
        (run / name).unlink()
        os.mkfifo(run / name)
    proc = atex("report", "-d", str(run), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"{run / 'results.jsonl'}:1: not a regular file" in proc.stderr
    proc = atex("release", "-d", str(run), timeout=60)
    assert_one_line_error(proc.returncode, proc.stderr, f"{run / 'machines.json'}: not a regular")
    (run / "machines.json").unlink()
    (run / "machines.json").symlink_to("/dev/zero")
    proc = atex("release", "-d", str(run), timeout=60)
    assert_one_line_error(proc.returncode, proc.stderr, f"{run / 'machines.json'}: not a regular")


# -- the loader itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[" * 65 + "]" * 65, 1),
        ('{"a": 1,\n "b": ' + '{"c": ' * 65 + "1" + "}" * 65 + "}", 2),
        ("[" * 200_000, 1),  # never closed
        ('["' + "]" * 10 + '",\n' + "[" * 65 + "]" * 65 + "]", 2),
    ],
)
def test_depth_is_refused_with_the_line(text, line):
    with pytest.raises(untrusted_json.UntrustedJSONError) as raised:
        untrusted_json.loads(text, max_bytes=10**6, max_depth=64)
    assert (raised.value.reason, raised.value.line) == ("nested deeper than 64 levels", line)
    assert raised.value.at("f.json") == f"f.json:{line}: nested deeper than 64 levels"


@pytest.mark.parametrize(
    "text",
    [
        "[" * 64 + "]" * 64,  # at the limit
        '["' + "[" * 10_000 + '"]',  # brackets in a string are text
        '["\\"[[[[", ' + "[" * 60 + "]" * 60 + "]",  # an escaped quote does not end the string
        "[" + ", ".join(["[]"] * 100_000) + "]",  # many, but shallow
    ],
)
def test_depth_within_the_limit_parses(text):
    assert untrusted_json.loads(text, max_bytes=10**6, max_depth=64) == json.loads(text)


def test_other_bad_input_is_one_reason():
    def reason(data: str | bytes, **kw: bool) -> str:
        with pytest.raises(untrusted_json.UntrustedJSONError) as raised:
            untrusted_json.loads(data, max_bytes=100, **kw)  # type: ignore[arg-type]
        return str(raised.value)

    assert reason("[1,\n2,]") == "line 2: invalid JSON: Expecting value (column 3)"
    assert reason("[" + "0" * 99 + "]") == "larger than 100 bytes"
    assert reason(b"[\xff]") == "line 1: not UTF-8 (invalid start byte)"
    assert reason("[NaN]", allow_constants=False) == "invalid JSON: NaN is not valid JSON"
    assert reason("[" + "]" * 5).startswith("line 1: invalid JSON: Extra data")


def test_read_file_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(untrusted_json.UntrustedJSONError, match="not a regular file"):
        untrusted_json.read_file(fifo, max_bytes=100)
    with pytest.raises(untrusted_json.UntrustedJSONError, match="not a regular file"):
        untrusted_json.read_file("/dev/zero", max_bytes=100)


# -- YAML files from outside get the same treatment --------------------------------------


def test_huge_deep_or_special_inventory_is_a_one_line_error(tmp_path):
    inventory = tmp_path / "hosts.yaml"
    make_huge(inventory, b"- host: ")
    code, err, peak = measured("reserve", "-d", str(tmp_path / "a"), "--hosts", str(inventory))
    assert_one_line_error(code, err, str(inventory), "larger than 1048576 bytes")
    assert peak < MAX_RSS_KB, f"reserve peaked at {peak} KiB on a huge inventory"
    inventory.write_text("- host: x\n  deep: " + "[" * 5000 + "]" * 5000 + "\n")
    proc = atex("reserve", "-d", str(tmp_path / "b"), "--hosts", str(inventory))
    assert_one_line_error(proc.returncode, proc.stderr, "nested deeper than 64 levels")
    inventory.unlink()
    os.mkfifo(inventory)  # would block a plain read forever
    proc = atex("reserve", "-d", str(tmp_path / "c"), "--hosts", str(inventory), timeout=60)
    assert_one_line_error(proc.returncode, proc.stderr, "not a regular file")
