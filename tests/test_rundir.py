"""The run directory contract: atomic documents, durable lines, lock, versions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from atex_ci.errors import ConfigError
from atex_ci.model import Machine, Reason, Result, Status
from atex_ci.rundir import RunDir, read_jsonl


def test_create_writes_versioned_run_json(tmp_path):
    rundir = RunDir.create(tmp_path / "run")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["format"] == "atex-ci-run"
    assert run["version"] == 1
    assert run["state"] == "new"
    assert RunDir.open(tmp_path / "run").read_run()["id"] == rundir.read_run()["id"]


def test_open_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="not an atex-ci run directory"):
        RunDir.open(tmp_path)


def test_open_refuses_newer_format(tmp_path):
    RunDir.create(tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())
    run["version"] = 99
    (tmp_path / "run.json").write_text(json.dumps(run))
    with pytest.raises(ConfigError, match=r"version 99.*upgrade atex-ci"):
        RunDir.open(tmp_path)


def test_open_refuses_malformed_run_json(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        RunDir.open(tmp_path)


def test_open_or_create_refuses_non_empty_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        RunDir.open_or_create(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def _result(test: str, status: Status = Status.PASS, **kw) -> Result:
    return Result(test=test, status=status, plan="/plan", **kw)


def test_results_round_trip(tmp_path):
    rundir = RunDir.create(tmp_path)
    rundir.append_result(_result("/a", files=["x/output.txt"], exit_code=0))
    rundir.append_result(_result("/b", Status.ERROR, reason=Reason.TIMEOUT, extra={"k": [1]}))
    results = rundir.read_results()
    assert [r.test for r in results] == ["/a", "/b"]
    assert results[0].files == ["x/output.txt"]
    assert results[1].reason is Reason.TIMEOUT
    assert results[1].extra == {"k": [1]}


def test_torn_last_line_is_skipped_and_earlier_lines_kept(tmp_path):
    rundir = RunDir.create(tmp_path)
    rundir.append_result(_result("/a"))
    rundir.append_result(_result("/b"))
    with open(tmp_path / "results.jsonl", "ab") as f:
        f.write(b'{"test": "/c", "status": "pa')  # crash mid-write
    assert [r.test for r in rundir.read_results()] == ["/a", "/b"]
    assert rundir.damaged_result_lines() == 1
    # The next append starts on a fresh line: the torn fragment swallows nothing.
    rundir.append_result(_result("/d"))
    assert [r.test for r in rundir.read_results()] == ["/a", "/b", "/d"]


def test_garbage_line_in_the_middle_is_skipped(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\xfe garbage\n[1, 2]\n{"a": 2}\n')
    records, skipped = read_jsonl(path)
    assert records == [{"a": 1}, {"a": 2}]
    assert skipped == 2


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    rundir = RunDir.create(tmp_path)
    for n in range(5):
        rundir.write_machines([Machine(id=f"m{n}", provisioner="local")])
    assert [m.id for m in rundir.read_machines()] == ["m4"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_update_machine_replaces_by_id(tmp_path):
    rundir = RunDir.create(tmp_path)
    rundir.write_machines(
        [Machine(id="a", provisioner="local"), Machine(id="b", provisioner="local")]
    )
    b = rundir.read_machines()[1]
    b.host_key = "ssh-ed25519 AAAA"
    rundir.update_machine(b)
    assert [(m.id, m.host_key) for m in rundir.read_machines()] == [
        ("a", None),
        ("b", "ssh-ed25519 AAAA"),
    ]


def test_second_lock_fails_with_clear_message(tmp_path):
    rundir = RunDir.create(tmp_path)
    second = RunDir.open(tmp_path)
    with rundir.locked(), pytest.raises(ConfigError, match="another atex-ci command is using"):
        second.locked().__enter__()
    with RunDir.open(tmp_path).locked():  # released after the first holder is done
        pass


def test_lock_conflict_between_processes(tmp_path):
    rundir = RunDir.create(tmp_path)
    with rundir.locked():
        proc = subprocess.run(
            [sys.executable, "-m", "atex_ci", "release", "-d", str(tmp_path)],
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 2
    assert "another atex-ci command is using" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_artifact_dir_cannot_escape(tmp_path):
    rundir = RunDir.create(tmp_path)
    path = rundir.artifact_dir("../..", "/../../etc/passwd", 1, "/plans/../x")
    assert path.resolve().is_relative_to((tmp_path / "artifacts").resolve())


def test_tests_and_events_round_trip(tmp_path):
    from atex_ci.model import Phase, Plan, Test

    rundir = RunDir.create(tmp_path)
    plan = Plan(
        name="/p",
        environment={"A": "1"},
        prepare=[Phase(how="shell", script=["true"])],
        tests=[Test(name="/t", plan="/p", test="true", path="t", duration=60.0)],
    )
    rundir.write_tests({"default": [plan]})
    assert rundir.read_tests() == {"default": [plan]}
    rundir.append_event("machine_ready", machine="m1")
    events = rundir.read_events()
    assert [(e["event"], e["machine"]) for e in events] == [("machine_ready", "m1")]
    assert events[0]["time"].endswith("+00:00")
