"""collect: untrusted sources, final attempt wins, flaky, conflicts, summary.json, history.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from atex_ci.collect import HISTORY_JSON, SUMMARY_JSON, collect, read_history
from atex_ci.model import Plan, Reason, Result, Status, Test
from atex_ci.report.summary import final_results, flaky_attempts
from atex_ci.rundir import RunDir

from .reportutil import validate
from .test_report_cli import atex_env


def shard(path: Path, results: list[Result], outputs: dict[str, bytes] | None = None) -> RunDir:
    """A run directory with ``results`` and their output files (relative path -> bytes)."""
    run = RunDir.create(path, platforms=sorted({r.platform for r in results}))
    for relative, data in (outputs or {}).items():
        target = run.path / "artifacts" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for result in results:
        run.append_result(result)
    run.append_event("test_started", machine="m1", test=results[0].test if results else "")
    return run


def test_shards_merge_final_attempt_wins_flaky_and_conflicts(tmp_path: Path) -> None:
    a_out = "p/plan/tests/a/1/output.txt"
    first = shard(
        tmp_path / "s1",
        [
            Result(test="/tests/a", plan="/plan", platform="p", status=Status.FAIL,
                   duration=2.0, files=[a_out]),
            Result(test="/tests/b", plan="/plan", platform="p", status=Status.PASS, duration=1.0),
        ],
        {a_out: b"first attempt\n"},
    )  # fmt: skip
    second = shard(
        tmp_path / "s2",
        [
            Result(test="/tests/a", plan="/plan", platform="p", status=Status.PASS,
                   duration=3.0, files=[a_out]),
            Result(test="/tests/b", plan="/plan", platform="p", status=Status.FAIL, duration=1.5),
            Result(test="/tests/c", plan="/plan", platform="q", status=Status.PASS, duration=4.0),
        ],
        {a_out: b"second attempt\n"},
    )  # fmt: skip
    outcome = collect(tmp_path / "all", [first.path, second.path])
    assert outcome.merged == 5 and outcome.warnings == []
    # Both sources finished /tests/a and /tests/b: different statuses are conflicts.
    assert len(outcome.conflicts) == 2
    assert outcome.conflicts[0].startswith("/tests/a (/plan, p): fail in ")
    assert "the later one wins" in outcome.conflicts[0]

    merged = RunDir.open(tmp_path / "all")
    results = merged.read_results()
    final = {r.test: r for r in final_results(results)}
    assert final["/tests/a"].status is Status.PASS and final["/tests/a"].attempt == 2
    assert final["/tests/b"].status is Status.FAIL
    # Artifacts moved along with their attempt; nothing overwritten.
    a1, a2 = (r for r in results if r.test == "/tests/a")
    assert (merged.path / "artifacts" / a1.files[0]).read_bytes() == b"first attempt\n"
    assert (merged.path / "artifacts" / a2.files[0]).read_bytes() == b"second attempt\n"
    assert [k[2] for k in flaky_attempts(results)] == ["/tests/a"]

    summary = json.loads((merged.path / SUMMARY_JSON).read_text())
    assert summary["format"] == "atex-ci-summary" and summary["version"] == 1
    assert summary["totals"]["total"] == 3 and summary["totals"]["fail"] == 1
    assert summary["platforms"]["q"]["pass"] == 1
    assert summary["flaky"] == [
        {"platform": "p", "plan": "/plan", "test": "/tests/a", "failed_attempts": [1],
         "final_attempt": 2, "final_status": "pass"}
    ]  # fmt: skip
    assert len(summary["conflicts"]) == 2

    history = json.loads((merged.path / HISTORY_JSON).read_text())
    assert history["format"] == "atex-ci-history"
    by_test = {(t["platform"], t["test"]): t for t in history["tests"]}
    assert by_test[("p", "/tests/a")]["durations"] == [2.0, 3.0]
    assert by_test[("p", "/tests/a")]["last_status"] == "pass"
    assert read_history(merged.path / HISTORY_JSON)[("q", "/plan", "/tests/c")] == [4.0]
    assert sorted(merged.read_run()["platforms"]) == ["p", "q"]
    # The shards' timelines come along.
    assert sum(e["event"] == "test_started" for e in merged.read_events()) == 2


def test_escaping_files_and_symlinks_in_a_source_are_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy\n")
    src = shard(
        tmp_path / "src",
        [
            Result(
                test="/tests/evil",
                status=Status.FAIL,
                files=[
                    "../../../../../../" + str(secret).lstrip("/"),
                    str(secret),
                    "default/tests/evil/1/link.txt",
                    "default/linkdir/secret.txt",
                    "default/tests/evil/1/fifo",
                    "default/tests/evil/1/ok.txt",
                    "default/tests/evil/1/missing.txt",
                ],
            )
        ],
        {"default/tests/evil/1/ok.txt": b"fine\n"},
    )
    artifacts = src.path / "artifacts"
    (artifacts / "default/tests/evil/1/link.txt").symlink_to(secret)
    (artifacts / "default/linkdir").symlink_to(tmp_path)
    os.mkfifo(artifacts / "default/tests/evil/1/fifo")

    proc = atex_env("collect", "-d", str(tmp_path / "out"), str(src.path))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 5, proc.stderr
    out = tmp_path / "out"
    copied = sorted(str(p.relative_to(out / "artifacts")) for p in (out / "artifacts").rglob("*"))
    assert copied == [
        "default",
        "default/tests",
        "default/tests/evil",
        "default/tests/evil/1",
        "default/tests/evil/1/ok.txt",
    ]
    assert not any(p.is_symlink() for p in out.rglob("*"))
    (result,) = RunDir.open(out).read_results()
    assert result.files == ["default/tests/evil/1/ok.txt", "default/tests/evil/1/missing.txt"]
    # Nothing landed outside the destination.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "secret.txt", "src"]


def test_mistyped_source_lines_are_skipped_with_warnings(tmp_path: Path) -> None:
    src = RunDir.create(tmp_path / "src")
    lines = [
        b'{"test": "/ok", "status": "pass", "duration": 1}',
        b'{"test": "/bad", "status": "fail", "files": "../../etc/hostname"}',
        b'{"test": "/bad2", "status": "fail", "attempt": "1"}',
        b'{"test": "/bytes\xff", "status": "fail"}',
        b"garbage",
    ]
    (src.path / "results.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    outcome = collect(tmp_path / "out", [src.path])
    assert outcome.merged == 2
    assert len(outcome.warnings) == 3
    merged = RunDir.open(tmp_path / "out")
    assert [r.test for r in merged.read_results()] == ["/ok", "/bytes\udcff"]
    # The merged run reports (resume and report read the same, validated lines).
    proc = atex_env("report", "-d", str(merged.path))
    assert proc.returncode == 0, proc.stderr
    validate((merged.path / "junit.xml").read_bytes())


def test_collect_errors_are_one_line(tmp_path: Path) -> None:
    proc = atex_env("collect", "-d", str(tmp_path / "out"), str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("atex-ci: ") and len(proc.stderr.splitlines()) == 1
    run = RunDir.create(tmp_path / "run")
    proc = atex_env("collect", "-d", str(run.path), str(run.path))
    assert proc.returncode == 2 and "into itself" in proc.stderr


def test_history_takes_durations_only_from_complete_runs(tmp_path: Path) -> None:
    def result(test: str, duration: float, **fields: Any) -> Result:
        fields.setdefault("status", Status.PASS)
        return Result(test=test, plan="/plan", duration=duration, **fields)

    complete = shard(tmp_path / "complete", [result("/tests/a", 1.0, machine="m1")])
    complete.update_run(state="released")  # released after it finished: still complete
    crashed = shard(tmp_path / "crashed", [result("/tests/b", 2.0, machine="m1")])
    crashed.update_run(state="crashed")
    interrupted = shard(
        tmp_path / "interrupted",
        [
            result("/tests/c", 0.5, machine="m1", status=Status.ERROR, reason=Reason.INTERRUPTED),
        ],
    )
    budget = shard(
        tmp_path / "budget",
        [
            result("/tests/d", 3.0, machine="m1"),
            result("/tests/e", 0.0, status=Status.SKIP, note="not run: time budget"),
        ],
    )
    # It selected /tests/g too (tests.json), which has no result: it was cut short.
    missing = shard(tmp_path / "missing", [result("/tests/f", 4.0, machine="m1")])
    plan = Plan(name="/plan", tests=[Test(name=n, plan="/plan", test="true", path=".")
                                     for n in ("/tests/f", "/tests/g")])  # fmt: skip
    missing.write_tests({"default": [plan]})
    sources = [complete, crashed, interrupted, budget, missing]
    outcome = collect(tmp_path / "all", [s.path for s in sources])
    assert read_history(tmp_path / "all" / HISTORY_JSON) == {
        ("default", "/plan", "/tests/a"): [1.0]
    }
    assert len(outcome.warnings) == 4
    assert all("not a complete run" in w for w in outcome.warnings)
    assert "its state is 'crashed'" in outcome.warnings[0]
    assert "/tests/c was interrupted" in outcome.warnings[1]
    assert "/tests/e: not run: time budget" in outcome.warnings[2]
    assert "1 selected test(s) have no result" in outcome.warnings[3]
    # Collecting again keeps the earlier history and adds the new complete run's.
    again = shard(tmp_path / "again", [result("/tests/a", 5.0, machine="m1")])
    collect(tmp_path / "all", [again.path])
    assert read_history(tmp_path / "all" / HISTORY_JSON) == {
        ("default", "/plan", "/tests/a"): [1.0, 5.0]
    }
