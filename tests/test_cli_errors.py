"""Bad input through the real CLI: one clear line, exit 2, nothing lost."""

from __future__ import annotations

import json

import pytest

from .treeutil import DEMO, atex, make_tree


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(("atex-ci: ", "Error: ")), lines[0]
    return lines[0]


def test_missing_fmf_tree(tmp_path):
    line = _one_line_error(atex("run", "--dry-run", "--fmf-root", str(tmp_path / "nope")))
    assert "nope" in line


def test_directory_without_fmf_metadata(tmp_path):
    line = _one_line_error(atex("run", "--dry-run", "--fmf-root", str(tmp_path)))
    assert "fmf" in line


def test_malformed_yaml_names_the_file(tmp_path):
    tree = make_tree(tmp_path, {"a": {"test": "true"}})
    (tree / "tests" / "main.fmf").write_text("/a:\n  test: [unclosed\n")
    line = _one_line_error(atex("run", "--dry-run", "--fmf-root", str(tree)))
    assert "main.fmf" in line


def test_plan_regex_that_matches_nothing(tmp_path):
    line = _one_line_error(atex("run", "--dry-run", "--fmf-root", str(DEMO), "--plan", "/nothing"))
    assert "/nothing" in line and "/plans" in line


def test_test_key_yaml_boolean(tmp_path):
    tree = tmp_path / "t"
    make_tree(tree, {"a": {"test": "true"}})
    (tree / "tests" / "main.fmf").write_text("/a:\n  test: true\n")
    line = _one_line_error(atex("run", "--dry-run", "--fmf-root", str(tree)))
    assert "/tests/a" in line and "bool" in line.lower()


def test_unparsable_duration(tmp_path):
    tree = make_tree(tmp_path, {"a": {"test": "true", "duration": "soon"}})
    line = _one_line_error(atex("run", "--dry-run", "--fmf-root", str(tree)))
    assert "soon" in line and "/tests/a" in line


def test_run_dir_that_is_not_one(tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    line = _one_line_error(atex("report", "-d", str(tmp_path)))
    assert "not an atex-ci run directory" in line
    assert (tmp_path / "file.txt").read_text() == "mine"
    line = _one_line_error(atex("run", "-d", str(tmp_path), "--fmf-root", str(DEMO)))
    assert "not empty" in line


def test_run_dir_of_a_newer_format(tmp_path):
    run = tmp_path / "run"
    make = atex("reserve", "-d", str(run), "--local", "1")
    assert make.returncode == 0, make.stderr
    data = json.loads((run / "run.json").read_text())
    data["version"] = 2
    (run / "run.json").write_text(json.dumps(data))
    line = _one_line_error(atex("report", "-d", str(run)))
    assert "upgrade atex-ci" in line


def test_torn_results_line_is_reported_and_the_rest_kept(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}, "b": {"test": "exit 1"}})
    run = tmp_path / "run"
    atex("run", "-d", str(run), "--fmf-root", str(tree))
    with open(run / "results.jsonl", "ab") as f:
        f.write(b'{"test": "/tests/c", "stat')
    proc = atex("report", "-d", str(run))
    assert proc.returncode == 0
    assert "skipped 1 damaged line" in proc.stderr
    junit = (run / "junit.xml").read_text()
    assert "/tests/a" in junit and "/tests/b" in junit
    assert len(results_lines := (run / "results.jsonl").read_bytes().splitlines()) == 3
    assert results_lines[-1].startswith(b'{"test": "/tests/c"')


def test_invalid_context_and_size(tmp_path):
    line = _one_line_error(atex("run", "--dry-run", "--fmf-root", str(DEMO), "-c", "novalue"))
    assert "KEY=VALUE" in line
    line = _one_line_error(
        atex("run", "-d", str(tmp_path / "r"), "--fmf-root", str(DEMO), "--max-output", "lots")
    )
    assert "lots" in line


def test_run_needs_run_dir_unless_dry_run():
    line = _one_line_error(atex("run", "--fmf-root", str(DEMO)))
    assert "--run-dir" in line


@pytest.mark.parametrize("host", ["user@", "host:99999", "a b"])
def test_bad_host_spec(tmp_path, host):
    line = _one_line_error(atex("reserve", "-d", str(tmp_path / "r"), "--host", host))
    assert "host" in line


@pytest.mark.parametrize("size", ["0.1", "0.5b", "0.0001k"])
def test_size_under_one_byte_is_refused(tmp_path, size):
    # A cap of 0 bytes would make every test an error: surely not what was meant.
    run = tmp_path / "r"
    for option in ("--max-output", "--max-upload"):
        line = _one_line_error(atex("run", "-d", str(run), "--fmf-root", str(DEMO), option, size))
        assert size in line and "less than one byte" in line
    assert not run.exists()


def test_unknown_execute_method_is_refused(tmp_path):
    tree = make_tree(tmp_path / "t", {"a": {"test": "true"}}, plan={"execute": {"how": "bogus"}})
    line = _one_line_error(atex("run", "--dry-run", "--fmf-root", str(tree)))
    assert "how: bogus" in line and "/plan" in line
    tree = make_tree(tmp_path / "u", {"a": {"test": "true"}}, plan={"execute": [{"how": "tmt"}]})
    assert atex("run", "--dry-run", "--fmf-root", str(tree)).returncode == 0


def test_unknown_framework_is_refused(tmp_path):
    tree = make_tree(tmp_path / "t", {"a": {"test": "true", "framework": "pytest"}})
    line = _one_line_error(atex("run", "--dry-run", "--fmf-root", str(tree)))
    assert "'framework'" in line and "'pytest'" in line and "/tests/a" in line
