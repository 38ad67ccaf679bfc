"""`report --baseline/--known-failures/--fail-on` on real runs on local slots."""

from __future__ import annotations

import datetime
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from atex_ci.errors import ConfigError
from atex_ci.gating import parse_known_failures

from .reportutil import validate
from .treeutil import atex, make_tree

TESTS = {
    "ok": {"test": "true"},
    "waived": {"test": "true"},
    "old": {"test": "echo old breakage; exit 1"},
    "known/one": {"test": "echo known breakage; exit 1"},
    "gone": {"test": "echo fixed next time; exit 1"},
}


def run(tmp_path: Path, name: str, tests: dict[str, dict[str, str]]) -> Path:
    tree = make_tree(tmp_path / f"tree-{name}", tests)
    run_dir = tmp_path / name
    proc = atex("run", "-d", str(run_dir), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 1, proc.stderr
    return run_dir


def known_file(tmp_path: Path) -> Path:
    yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    path = tmp_path / "known.yaml"
    path.write_text(
        f"""
- name: /tests/known/*
  platform: def*
  reason: upstream bug 1234
  link: https://bugs.example.org/1234
- name: /tests/waived
  reason: flaked last month
- name: /tests/old
  reason: was waived once
  expires: {yesterday}
"""
    )
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp_path = tmp_path_factory.mktemp("gating")
    baseline = run(tmp_path, "baseline", TESTS)
    fixed = {**TESTS, "gone": {"test": "true"}}
    same = run(tmp_path, "same", fixed)
    worse = run(tmp_path, "worse", {**fixed, "ok": {"test": "echo brand new; exit 1"}})
    return baseline, same, worse


def test_only_old_and_known_failures_pass_the_gate(runs, tmp_path):
    baseline, same, _worse = runs
    known = known_file(tmp_path)
    args = ["report", "-d", str(same), "--baseline", str(baseline), "--known-failures", str(known)]
    proc = atex(*args, "--html", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    summary = (same / "summary.md").read_text()
    assert "## New failures (0)" in summary
    known_list = summary.split("## Known failures (1)")[1].split("##")[0]
    assert "/tests/known/one" in known_list and "upstream bug 1234" in known_list
    assert "/tests/old · default" in summary.split("## Still failing")[1].split("##")[0]
    fixed = summary.split("## Fixed (2)")[1].split("##")[0]
    assert "/tests/gone · default: fixed since the baseline" in fixed
    assert "/tests/waived: flaked last month: fixed: remove the entry" in fixed
    # The expired entry no longer matches: /tests/old is still failing, not known.
    assert "/tests/old: was waived once" in summary.split("## Expired")[1]
    # JUnit tells no lie: both failures stay failures, their message says the class.
    xml = (same / "junit.xml").read_bytes()
    validate(xml)
    root = ET.fromstring(xml)
    assert root.get("failures") == "2"
    messages = {c.get("name"): c.find("failure").get("message") for c in root.iter("testcase")
                if c.find("failure") is not None}  # fmt: skip
    assert messages["/tests/known/one"].startswith("[known: upstream bug 1234]")
    assert messages["/tests/old"].startswith("[still failing]")
    # The same run gated on every failure fails.
    assert atex(*args, "--fail-on", "any").returncode == 1
    # A collected run directory is a baseline too.
    collected = tmp_path / "collected"
    assert atex("collect", "-d", str(collected), str(baseline)).returncode == 0
    proc = atex("report", "-d", str(same), "--baseline", str(collected))
    assert proc.returncode == 0, proc.stderr
    summary = (same / "summary.md").read_text()
    # Without the list, the waived failure is judged by the baseline alone.
    assert "/tests/known/one" in summary.split("## Still failing")[1].split("##")[0]


def test_one_new_failure_fails_the_gate_and_comes_first(runs, tmp_path):
    baseline, _same, worse = runs
    known = known_file(tmp_path)
    html = tmp_path / "r.html"
    proc = atex(
        "report", "-d", str(worse), "--baseline", str(baseline),
        "--known-failures", str(known), "--html", str(html),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    summary = (worse / "summary.md").read_text()
    assert "- /tests/ok · default" in summary.split("## New failures (1)")[1].split("##")[0]
    sections = re.findall(r"^### (\S+) · \S+ · (.+)$", summary, re.M)
    assert sections[0] == ("/tests/ok", "new"), sections
    assert {s[1] for s in sections[1:]} == {"still failing", "known"}
    page = html.read_text()
    rows = re.findall(r'<td class="name">([^<]+)</td>', page)
    assert rows[0] == "/tests/ok", rows
    assert '<span class="gate">new</span>' in page
    # In a GitHub step: the new failure's annotation comes first and says so; outputs count.
    outputs, summary_file = tmp_path / "outputs", tmp_path / "step-summary.md"
    github = atex(
        "report", "-d", str(worse), "--baseline", str(baseline), "--known-failures",
        str(known), "--github",
        env={**os.environ, "GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary_file)},
    )  # fmt: skip
    assert github.returncode == 1, github.stderr
    annotations = [line for line in github.stdout.splitlines() if line.startswith("::error")]
    assert "title=/tests/ok" in annotations[0] and "(new failure)" in annotations[0]
    assert "new-failures=1\n" in outputs.read_text() and "known-failures=1\n" in outputs.read_text()
    assert "## New failures (1)" in summary_file.read_text()
    # Without a baseline and without a list, the same run's failures are all new.
    assert atex("report", "-d", str(worse), "--fail-on", "new").returncode == 1
    # Without gating options the reports are written and report exits 0, as before.
    assert atex("report", "-d", str(worse)).returncode == 0


def test_a_bad_known_failures_file_is_one_line(runs, tmp_path):
    _baseline, same, _worse = runs
    cases = {
        "list.yaml": "name: /x\n",
        "keys.yaml": "- name: /x\n  reason: r\n  owner: me\n",
        "date.yaml": "- name: /x\n  reason: r\n  expires: soon\n",
        "yaml.yaml": "- [unclosed\n",
        "alias.yaml": "- &a {name: /x, reason: r}\n" + "".join("- *a\n" for _ in range(3)),
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        proc = atex("report", "-d", str(same), "--known-failures", str(path))
        if name == "alias.yaml":  # aliases are fine within the limits
            assert proc.returncode == 1, proc.stderr
            continue
        assert proc.returncode == 2, (name, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("atex-ci: known failures"), lines
    missing = atex("report", "-d", str(same), "--baseline", str(tmp_path / "nope"))
    assert missing.returncode == 2
    not_a_run = atex("report", "-d", str(same), "--baseline", str(tmp_path))
    assert not_a_run.returncode == 2 and len(not_a_run.stderr.splitlines()) == 1


def test_known_failures_entries_are_checked():
    with pytest.raises(ConfigError, match="'reason' is required"):
        parse_known_failures([{"name": "/a"}], "f")
    with pytest.raises(ConfigError, match="more than"):
        parse_known_failures([{"name": "/a", "reason": "r"}] * 10_001, "f")
    entries = parse_known_failures({"known-failures": [{"name": "/a*", "reason": "r"}]}, "f")
    assert entries[0].matches("any", "/a/b") and not entries[0].matches("any", "/b")
