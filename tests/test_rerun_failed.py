"""Re-running only what failed, through the real CLI on local slots: --rerun-failed
with collect (later attempt stands, flaky), the recorded shard split (split.json)
used again whatever the history says now, and history only from complete runs."""

from __future__ import annotations

import json
from pathlib import Path

from .test_scheduling_run import run_shards, started_order, write_history
from .treeutil import atex, make_tree, own_results


def fails_once(marker_dir: Path, name: str) -> dict[str, str]:
    """A test that fails on its first run and passes on every later one."""
    marker = marker_dir / name
    return {"test": f"[ -e {marker} ] || {{ touch {marker}; exit 1; }}"}


def test_rerun_failed_runs_failed_and_not_run_tests_and_collect_makes_them_flaky(tmp_path):
    (tmp_path / "marks").mkdir()
    tree = make_tree(
        tmp_path / "tree",
        {
            "a-pass": {"test": "true"},
            "b-flaky": fails_once(tmp_path / "marks", "b"),
            "c-fail": {"test": "exit 1"},
            "d-pass": {"test": "true"},
            "e-pass": {"test": "true"},
        },
    )
    prev, new, merged = tmp_path / "prev", tmp_path / "new", tmp_path / "all"
    # Stopped after two failures: d and e are "not run".
    proc = atex(
        "run", "-d", str(prev), "--fmf-root", str(tree), "--local", "1", "--max-failures", "2"
    )
    assert proc.returncode == 1, proc.stderr
    assert started_order(prev) == ["/tests/a-pass", "/tests/b-flaky", "/tests/c-fail"]

    proc = atex("run", "-d", str(new), "--fmf-root", str(tree), "--rerun-failed", str(prev))
    assert proc.returncode == 1, proc.stderr
    assert sorted(started_order(new)) == [
        "/tests/b-flaky", "/tests/c-fail", "/tests/d-pass", "/tests/e-pass",
    ]  # fmt: skip
    selection = json.loads((new / "selection.json").read_text())
    assert selection["rerun_of"] == str(prev) and len(selection["tests"]) == 4

    # --resume of the re-run keeps to what it selected: a-pass is not run there.
    proc = atex("run", "-d", str(new), "--fmf-root", str(tree), "--resume")
    assert proc.returncode == 1, proc.stderr
    assert len(started_order(new)) == 4

    proc = atex("collect", "-d", str(merged), str(prev), str(new))
    assert proc.returncode == 0, proc.stderr
    assert "conflict" not in proc.stderr  # a re-run's later attempt is expected to differ
    own = own_results(merged)
    assert {n: (r["status"], r["attempt"]) for n, r in own.items()} == {
        "/tests/a-pass": ("pass", 1),
        "/tests/b-flaky": ("pass", 2),
        "/tests/c-fail": ("fail", 2),
        "/tests/d-pass": ("pass", 2),
        "/tests/e-pass": ("pass", 2),
    }
    summary = json.loads((merged / "summary.json").read_text())
    assert [f["test"] for f in summary["flaky"]] == ["/tests/b-flaky"]
    assert summary["totals"]["pass"] == 4 and summary["totals"]["fail"] == 1
    # The stopped run taught the history nothing; the complete re-run did.
    assert "not a complete run" in proc.stderr and str(prev) in proc.stderr
    history = json.loads((merged / "history.json").read_text())
    assert sorted(t["test"] for t in history["tests"]) == [
        "/tests/b-flaky", "/tests/c-fail", "/tests/d-pass", "/tests/e-pass",
    ]  # fmt: skip

    # A re-run of the merged run runs what still fails there, and only that.
    third = tmp_path / "third"
    proc = atex("run", "-d", str(third), "--fmf-root", str(tree), "--rerun-failed", str(merged))
    assert proc.returncode == 1, proc.stderr
    assert started_order(third) == ["/tests/c-fail"]


def test_rerun_failed_with_nothing_failed_runs_nothing_and_exits_0(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    prev, new = tmp_path / "prev", tmp_path / "new"
    assert atex("run", "-d", str(prev), "--fmf-root", str(tree)).returncode == 0
    proc = atex("run", "-d", str(new), "--fmf-root", str(tree), "--rerun-failed", str(prev))
    assert proc.returncode == 0, proc.stderr
    assert "no results" in proc.stderr
    assert not (new / "results.jsonl").exists() and not (new / "events.jsonl").exists()


def share_of(run: Path) -> set[str]:
    split = json.loads((run / "split.json").read_text())
    return {t["test"] for t in split["tests"] if t["share"] == split["share"]}


def test_a_shard_rerun_uses_the_recorded_split_whatever_the_history_says_now(tmp_path):
    names = [f"t{n}" for n in range(1, 7)]
    (tmp_path / "marks").mkdir()
    tree = make_tree(tmp_path / "tree", {n: fails_once(tmp_path / "marks", n) for n in names})
    # Longest first, each to the least loaded share: share 2 of 3 is {t5, t2}...
    before = write_history(
        tmp_path / "before.json", {f"/tests/t{n}": float(n) for n in range(1, 7)}
    )
    # ... while this history would make it {t2}.
    now = write_history(
        tmp_path / "now.json",
        {"/tests/t1": 10.0, "/tests/t2": 9.0, **{f"/tests/t{n}": 1.0 for n in range(3, 7)}},
    )
    shards = run_shards(tmp_path, tree, before, 1)  # every test fails on its first run
    split = json.loads((shards[1] / "split.json").read_text())
    assert split["format"] == "atex-ci-split" and (split["count"], split["share"]) == (3, 2)
    assert split["history"]["digest"].startswith("sha256:")
    assert split["history"]["tests"] == 6 and split["history"]["source"] == str(before)
    assert len(split["tests"]) == 6  # every share's tests, not only its own
    assert share_of(shards[1]) == {"/tests/t2", "/tests/t5"} == set(own_results(shards[1]))
    # --resume (no --shard needed) keeps to the share: nothing is left to run.
    proc = atex("run", "-d", str(shards[1]), "--fmf-root", str(tree), "--resume")
    assert proc.returncode == 1, proc.stderr
    assert sorted(started_order(shards[1])) == ["/tests/t2", "/tests/t5"]

    # Computed anew, the split follows the history of now...
    fresh = tmp_path / "fresh"
    proc = atex(
        "run", "-d", str(fresh), "--fmf-root", str(tree),
        "--shard", "2/3", "--history", str(now),
    )  # fmt: skip
    assert set(own_results(fresh)) == {"/tests/t2"}
    # ... a re-run of share 2 keeps the recorded one: from the shard itself,
    rerun = tmp_path / "rerun"
    proc = atex(
        "run", "-d", str(rerun), "--fmf-root", str(tree),
        "--rerun-failed", str(shards[1]), "--history", str(now),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # they pass on their second run
    assert set(own_results(rerun)) == {"/tests/t2", "/tests/t5"}
    assert json.loads((rerun / "split.json").read_text()) == split
    # from the merged run of every shard (its split kept by collect),
    merged = tmp_path / "all"
    assert atex("collect", "-d", str(merged), *map(str, shards)).returncode == 0
    kept = json.loads((merged / "split.json").read_text())
    assert kept["share"] is None and kept["tests"] == split["tests"]
    again = tmp_path / "again"
    proc = atex(
        "run", "-d", str(again), "--fmf-root", str(tree),
        "--rerun-failed", str(merged), "--shard", "2/3", "--history", str(now),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert set(own_results(again)) == {"/tests/t2", "/tests/t5"}
    # and explicitly with --split-from.
    explicit = tmp_path / "explicit"
    proc = atex(
        "run", "-d", str(explicit), "--fmf-root", str(tree),
        "--shard", "2/3", "--split-from", str(merged), "--history", str(now),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert set(own_results(explicit)) == {"/tests/t2", "/tests/t5"}


def test_rerun_and_split_errors_are_one_line(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "exit 1"}})
    prev = tmp_path / "prev"
    assert atex("run", "-d", str(prev), "--fmf-root", str(tree)).returncode == 1
    other = tmp_path / "other"
    assert atex("reserve", "-d", str(other), "--local", "1", "--platform", "f41").returncode == 0
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "run.json").write_text((prev / "run.json").read_text())
    (damaged / "split.json").write_text('{"format": "atex-ci-split", "count": "3"}')
    for args, message in [
        (["-d", str(prev), "--rerun-failed", str(prev)], "give another run directory"),
        (["-d", str(other), "--rerun-failed", str(prev)], "on platform(s) default, but this"),
        (["-d", str(tmp_path / "n1"), "--split-from", str(prev)], "--split-from needs --shard"),
        (
            ["-d", str(tmp_path / "n2"), "--shard", "1/2", "--split-from", str(prev)],
            "no split.json there",
        ),
        (
            ["-d", str(tmp_path / "n3"), "--shard", "1/2", "--split-from", str(damaged)],
            "split.json is damaged: 'count' must be",
        ),
    ]:
        proc = atex("run", "--fmf-root", str(tree), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("atex-ci: "), (args, proc.stderr)
        assert message in lines[0], (args, proc.stderr)
    assert not (tmp_path / "n2" / "results.jsonl").exists()


def test_a_failed_test_gone_from_the_tree_is_named_and_the_rest_rerun(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "exit 1"}, "b": {"test": "exit 1"}})
    prev, new = tmp_path / "prev", tmp_path / "new"
    assert atex("run", "-d", str(prev), "--fmf-root", str(tree)).returncode == 1
    make_tree(tree, {"a": {"test": "true"}})  # b is removed, a is fixed
    proc = atex("run", "-d", str(new), "--fmf-root", str(tree), "--rerun-failed", str(prev))
    assert proc.returncode == 0, proc.stderr
    assert started_order(new) == ["/tests/a"]
    assert "1 test(s) to run again are no longer selected" in proc.stderr
