"""atex-ci against tmt 1.78.0 on tmt's own data trees: per test, the same outcome.

Each line of tests/data/tmt-outcomes.jsonl is one comparison: ``tree`` (a
directory under ``tests/`` of tmt's source) and ``plan`` (the plan regex both
tools get), or instead of ``plan`` the fmf discover keys ``test`` and/or
``exclude``, which select tests through a plan ``/atex-compare`` added to the
copy of the tree (to leave out tests that need beakerlib, which neither tool
can install here, or to run alone a test after which tmt stops its plan);
optionally ``context`` (fmf context), ``tmt_from`` (the line was taken
from the assertions of that test of tmt's own, not from a live run: tests that
reboot, since tmt sees a reboot by a change of the kernel's boot time, which
the namespace test hosts keep) and ``differs`` (test name -> why
atex-ci gives another outcome on purpose; docs/migrating.md names the tree
and says why); and ``tmt``: what tmt 1.78.0 recorded, one line per test in
the order tmt ran them, ``PLAN TEST: STATUS`` with the sub-results after it
(``[/name: status, ...]``). A new tree is one line.

The trees are not copied into this repository: they come from tmt 1.78.0's
source distribution on the package index (``pip download``, cached under
``$ATEX_CI_TEST_CACHE`` or ``~/.cache/atex-ci-tests``); without the index the
module is skipped and says why. atex-ci runs each tree on one sshd test host,
so the order of the results is the order the tests ran in.

Where tmt 1.78.0 is installed (``pip install -e '.[test,tmt]'``, a ``tmt``
command in the venv), each comparison also runs tmt (``provision -h local``,
as tmt's own tests do) and checks that the recorded line still says what tmt
does. ``python -m tests.test_tmt_compare`` rewrites the recorded lines from
live tmt runs.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from atex_ci.remote_tree import unpack_tree

from .hosts import HostPool, SSHHost, missing_requirements
from .treeutil import atex, reserve_hosts, results

TMT_VERSION = "1.78.0"
OUTCOMES = Path(__file__).parent / "data" / "tmt-outcomes.jsonl"
#: tmt's result of a test it did not run (after tmt-abort, exit-first); atex-ci
#: records such a test as ``skip`` with a note that starts "not run".
PENDING = "pending"
#: The plan added to a tree whose entry excludes some tests.
COMPARE_PLAN = "/atex-compare"
#: Keys of an entry that select tests through that plan (fmf discover's own).
SELECTION = ("test", "exclude")
MIGRATING = Path(__file__).parent.parent / "docs" / "migrating.md"
#: A tmt run of one of these trees takes seconds; a minute means it hangs.
TMT_TIMEOUT = 300
#: pip needs the index and a 1.4 MB download.
DOWNLOAD_TIMEOUT = 300


def load_comparisons() -> list[dict[str, Any]]:
    lines = OUTCOMES.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip() and not line.startswith("#")]


def comparison_id(entry: dict[str, Any]) -> str:
    selection = [f"{key}={','.join(entry[key])}" for key in SELECTION if key in entry]
    return ":".join([entry["tree"], entry.get("plan", ""), *selection])


# -- tmt's source: its sdist from the package index ------------------------------------


def cache_dir() -> Path:
    if os.environ.get("ATEX_CI_TEST_CACHE"):
        return Path(os.environ["ATEX_CI_TEST_CACHE"])
    return Path.home() / ".cache" / "atex-ci-tests"


@functools.cache
def tmt_source() -> Path | str:
    """tmt's unpacked sdist (its ``tests/`` holds the data trees), or why not."""
    cache = cache_dir()
    source = cache / f"tmt-{TMT_VERSION}"
    if (source / "tests").is_dir():
        return source
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        download += ["--no-binary", "tmt", "-d", scratch, f"tmt=={TMT_VERSION}"]
        try:
            proc = subprocess.run(
                download, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            return f"pip download tmt=={TMT_VERSION} did not end in {DOWNLOAD_TIMEOUT}s"
        sdist = Path(scratch) / f"tmt-{TMT_VERSION}.tar.gz"
        if proc.returncode != 0 or not sdist.is_file():
            tail = " ".join(proc.stderr.split())[-300:]
            return f"cannot download tmt {TMT_VERSION}'s sdist from the package index: {tail}"
        unpacked = Path(scratch) / "unpacked"
        unpack_tree(sdist, unpacked, f"tmt {TMT_VERSION} sdist")
        try:
            (unpacked / f"tmt-{TMT_VERSION}").rename(source)
        except OSError:
            if not (source / "tests").is_dir():  # not another process's copy
                raise
    return source


def copy_tree(entry: dict[str, Any], where: Path) -> Path:
    source = tmt_source()
    if isinstance(source, str):
        pytest.skip(source)
    return prepare_tree(source, entry, where)


def prepare_tree(source: Path, entry: dict[str, Any], where: Path) -> Path:
    """A copy of the entry's tree under ``where``; with ``exclude``, a plan
    ``/atex-compare`` is added that runs the tree's tests but those (tests
    that need beakerlib, which neither tool can install here)."""
    tree = where / "tree"
    shutil.copytree(source / "tests" / entry["tree"], tree, symlinks=True)
    selection = {key: entry[key] for key in SELECTION if key in entry}
    if selection:
        plan = {"discover": {"how": "fmf", **selection}, "execute": {"how": "tmt"}}
        (tree / f"{COMPARE_PLAN[1:]}.fmf").write_text(json.dumps(plan))
    return tree


def plan_regex(entry: dict[str, Any]) -> str:
    return f"^{COMPARE_PLAN}$" if any(key in entry for key in SELECTION) else entry["plan"]


# -- the two tools -----------------------------------------------------------------------


def outcome_line(plan: str, test: str, status: str, subs: list[tuple[str, str]]) -> str:
    line = f"{plan} {test}: {status}"
    if subs:
        line += " [" + ", ".join(f"{name}: {result}" for name, result in subs) + "]"
    return line


def atex_outcomes(tree: Path, run: Path, entry: dict[str, Any], host: SSHHost) -> list[str]:
    """atex-ci's final result of each test, in the order the tests ended."""
    reserve_hosts(run, [host])
    args = ["run", "-d", str(run), "--fmf-root", str(tree), "--plan", plan_regex(entry)]
    for item in entry.get("context", []):
        args += ["-c", item]
    proc = atex(*args)
    # 3: a test ran past its duration and left the one machine out of use.
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert "Traceback" not in proc.stderr
    records = results(run)
    final: dict[tuple[str, str, int], int] = {}
    for record in records:
        key = (record["plan"], record["test"], record.get("serial_number") or 0)
        final[key] = max(final.get(key, 0), record["attempt"])
    lines = []
    for record in records:
        key = (record["plan"], record["test"], record.get("serial_number") or 0)
        if record["name"] is not None or record["attempt"] != final[key]:
            continue
        subs = [
            (r["name"], r["status"])
            for r in records
            if (r["plan"], r["test"], r.get("serial_number") or 0) == key
            and r["attempt"] == final[key]
            and r["name"] is not None
        ]
        status = record["status"]
        if status == "skip" and (record["note"] or "").startswith("not run"):
            status = PENDING
        lines.append(outcome_line(record["plan"], record["test"], status, subs))
    return lines


def tmt_command() -> str | None:
    """The tmt of this venv (or ``$ATEX_CI_TEST_TMT``) when it is 1.78.0, the
    version the data was recorded with."""
    tmt = Path(os.environ.get("ATEX_CI_TEST_TMT") or Path(sys.executable).parent / "tmt")
    if not tmt.exists():
        return None
    proc = subprocess.run([str(tmt), "--version"], capture_output=True, text=True)
    return str(tmt) if TMT_VERSION in proc.stdout else None


def tmt_outcomes(tmt: str, tree: Path, workdir: Path, entry: dict[str, Any]) -> list[str]:
    """tmt's result of each test, in the order tmt ran them (``provision -h
    local``, as tmt's own tests do)."""
    command = [tmt]
    for item in entry.get("context", []):
        command += ["-c", item]
    command += ["run", "-i", str(workdir), "--scratch", "-a", "provision", "-h", "local"]
    command += ["plan", "--name", plan_regex(entry), "report", "-h", "display"]
    env = {**os.environ, "TMT_FEELING_SAFE": "1", "NO_COLOR": "1"}
    subprocess.run(
        command, cwd=tree, env=env, capture_output=True, timeout=TMT_TIMEOUT, check=False
    )
    safe = YAML(typ="safe")
    # run.yaml names the plans in the order tmt ran them; each plan's
    # directory is its name with some characters replaced.
    plans = (safe.load((workdir / "run.yaml").read_text()) or {}).get("plans") or []
    found = {
        _plain(str(path.parent.parent.relative_to(workdir))): path
        for path in workdir.glob("**/execute/results.yaml")
    }
    lines = []
    for plan in plans:
        path = found.get(_plain(plan))
        if path is None:
            continue
        for result in safe.load(path.read_text()) or []:
            subs = [(sub["name"], sub["result"]) for sub in result.get("subresult") or []]
            lines.append(outcome_line(plan, result["name"], result["result"], subs))
    return lines


def _plain(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9/]", "", name).strip("/")


# -- the comparison ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compare_host() -> Iterator[SSHHost]:
    """One sshd test host for every tree (each run reserves and releases it)."""
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    pool = HostPool()
    try:
        yield pool.start(1)[0]
    finally:
        pool.stop_all()


def differing(entry: dict[str, Any], lines: list[str]) -> list[str]:
    """``lines`` without the tests listed as differing on purpose."""
    skip = entry.get("differs", {})
    return [line for line in lines if not any(names_test(line, test) for test in skip)]


def names_test(line: str, test: str) -> bool:
    """Whether an outcome line is about ``test`` (or a result named under it)."""
    return re.search(" " + re.escape(test) + "[:/]", line) is not None


@pytest.mark.parametrize("entry", load_comparisons(), ids=comparison_id)
def test_atex_ci_gives_tmts_outcome(
    tmp_path: Path, compare_host: SSHHost, entry: dict[str, Any]
) -> None:
    tree = copy_tree(entry, tmp_path)
    tmt = tmt_command()
    if tmt is not None and "tmt_from" not in entry:
        assert tmt_outcomes(tmt, tree, tmp_path / "tmt-run", entry) == entry["tmt"]
    got = atex_outcomes(tree, tmp_path / "run", entry, compare_host)
    assert differing(entry, got) == differing(entry, entry["tmt"])
    for test in entry.get("differs", {}):
        # Listed on purpose, so it must still differ (or the line is stale).
        tmt_line = [line for line in entry["tmt"] if names_test(line, test)]
        got_line = [line for line in got if names_test(line, test)]
        assert tmt_line != got_line, f"{test} no longer differs: drop it from 'differs'"


def test_every_difference_is_documented() -> None:
    text = MIGRATING.read_text()
    for entry in load_comparisons():
        for test, anchor in entry.get("differs", {}).items():
            assert f"`{entry['tree']}`" in text or anchor in text, (entry["tree"], test)


def test_enough_of_tmts_trees_are_compared() -> None:
    assert len({entry["tree"] for entry in load_comparisons()}) >= 25


# -- recording ---------------------------------------------------------------------------


def record() -> None:
    """Run tmt on every comparison and write what it did into OUTCOMES."""
    tmt = tmt_command()
    if tmt is None:
        sys.exit(f"tmt {TMT_VERSION} is not installed in this venv (pip install -e '.[tmt]')")
    source = tmt_source()
    if isinstance(source, str):
        sys.exit(source)
    only = set(sys.argv[1:])
    lines = []
    for line in OUTCOMES.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            lines.append(line)
            continue
        entry = json.loads(line)
        if (not only or entry["tree"] in only) and "tmt_from" not in entry:
            with tempfile.TemporaryDirectory() as scratch:
                tree = prepare_tree(source, entry, Path(scratch))
                entry["tmt"] = tmt_outcomes(tmt, tree, Path(scratch) / "run", entry)
            print(comparison_id(entry), *entry["tmt"], sep="\n    ", flush=True)
        lines.append(json.dumps(entry, ensure_ascii=False))
    OUTCOMES.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    record()
