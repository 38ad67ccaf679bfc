"""`atex-ci report` for real: a two-platform run on local slots, bad run directories, GitHub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from atex_ci.report.github import escape_data, escape_property
from atex_ci.report.markdown import MAX_BYTES

from .reportutil import consumer_counts, validate
from .treeutil import make_tree


def atex_env(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``atex-ci ARGS`` with the GitHub variables of ``env`` (and none inherited)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    return subprocess.run(
        [sys.executable, "-m", "atex_ci", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**base, "PYTHONUNBUFFERED": "1", **(env or {})},
        check=False,
    )


def two_platform_run(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "flaky-runs"
    tree = make_tree(
        tmp_path / "tree",
        {
            "pass": {"test": "true"},
            "fail": {"test": "echo boom; exit 1"},
            "subs": {
                "test": "tmt-report-result /first PASS; tmt-report-result /second FAIL; true",
            },
            "a: b, 100% sure": {"test": "echo odd name; exit 1"},
            # Names that differ only in a control character stay two tests everywhere.
            "esc\x1b[31mred": {"test": "true"},
            "escred": {"test": "exit 1"},
            # Fails the first time it runs on each machine, passes on its rerun.
            "flaky": {
                "test": f'm={marker}-$(echo "$TMT_TREE" | md5sum | cut -c1-8); '
                '[ -e "$m" ] || { touch "$m"; exit 1; }'
            },
        },
    )
    run = tmp_path / "run"
    for platform in ("fedora-41", "centos-10"):
        proc = atex_env("reserve", "-d", str(run), "--local", "1", "--platform", platform)
        assert proc.returncode == 0, proc.stderr
    proc = atex_env("run", "-d", str(run), "--fmf-root", str(tree), "--max-reruns", "1")
    assert proc.returncode == 1, proc.stderr
    # Progress names the test with the escape; the terminal never gets the ESC.
    assert "\x1b" not in proc.stderr
    assert "/tests/esc\\x1b[31mred on local-" in proc.stderr
    assert atex_env("release", "-d", str(run)).returncode == 0
    return run, tree


def test_two_platform_run_report_html_and_github(tmp_path: Path) -> None:
    run, tree = two_platform_run(tmp_path)
    summary, outputs = tmp_path / "step-summary.md", tmp_path / "outputs.txt"
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_WORKSPACE": str(tree),
    }
    html = tmp_path / "report.html"
    proc = atex_env("report", "-d", str(run), "--html", str(html), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    # JUnit: valid, and a consumer counts what the results say, per platform.
    junit = run / "junit.xml"
    validate(junit.read_bytes())
    # 7 tests + 2 sub-results, on 2 platforms; /fail, the odd name, /escred, /subs (its
    # /second sub-result failed, so it fails, as in tmt) and /subs/second fail.
    assert consumer_counts(junit) == {"tests": 18, "failures": 10, "errors": 0, "skipped": 0}
    names = {case.get("name") for case in validate(junit.read_bytes()).iter("testcase")}
    assert {"/tests/esc\\x1b[31mred", "/tests/escred"} <= names

    # GitHub outputs.
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert values == {
        "total": "18",
        "passed": "8",
        "failed": "10",
        "errors": "0",
        "skipped": "0",
        "flaky": "2",
        "junit": str(junit),
        "html": str(html),
    }
    # Step summary: the Markdown, appended, under the cap.
    text = summary.read_text()
    assert text.startswith("# atex-ci results")
    assert len(text.encode()) <= MAX_BYTES
    assert "## Flaky tests (2)" in text
    assert "| fedora-41 |" in text and "| centos-10 |" in text
    # Annotations on stdout: one per failed test and platform, with file and line.
    errors = [line for line in proc.stdout.splitlines() if line.startswith("::error ")]
    assert len(errors) == 8
    odd = escape_property("/tests/a: b, 100% sure (fedora-41)")
    assert any(f"title={odd}::" in line for line in errors)
    assert all("file=tests/main.fmf,line=" in line for line in errors)
    lines = (tree / "tests" / "main.fmf").read_text().splitlines()
    fail_line = next(n for n, line in enumerate(lines, 1) if '"/fail"' in line)
    assert any(f"line={fail_line},title=/tests/fail (" in line for line in errors)
    assert html.read_text().count('<tr data-status="') == 18


def test_workflow_command_escaping() -> None:
    assert escape_data("100% a\r\nb:c,d") == "100%25 a%0D%0Ab:c,d"
    assert escape_property("100% a\r\nb:c,d") == "100%25 a%0D%0Ab%3Ac%2Cd"


def test_annotations_are_capped_at_ten_and_infra_errors_come_last(tmp_path: Path) -> None:
    from atex_ci.rundir import RunDir

    run = RunDir.create(tmp_path / "run")
    lines = [{"test": "/infra", "status": "error", "reason": "infra", "note": "machine lost"}]
    lines += [{"test": f"/t{n:02d}", "status": "fail", "note": f"n{n}"} for n in range(14)]
    (run.path / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    summary = tmp_path / "summary.md"
    proc = atex_env(
        "report", "-d", str(run.path), "--github", env={"GITHUB_STEP_SUMMARY": str(summary)}
    )
    assert proc.returncode == 0, proc.stderr
    errors = [line for line in proc.stdout.splitlines() if line.startswith("::error ")]
    assert len(errors) == 10
    assert "title=/t00 (default)::fail on default%0An0" in errors[0]
    assert not any("/infra" in line for line in errors)
    assert "5 more failed tests have no annotation" in summary.read_text()


def test_damaged_and_mistyped_results_give_warnings_not_a_traceback(tmp_path: Path) -> None:
    from atex_ci.rundir import RunDir

    run = RunDir.create(tmp_path / "run")
    lines = [
        b'{"test": "/ok", "status": "pass"}',
        b'{"test": "/bytes\xff", "status": "fail", "note": "bad \xfe byte"}',
        b'{"test": "/types", "status": "fail", "duration": "long"}',
        b'{"test": "/attempt", "status": "fail", "attempt": true}',
        b'{"test": "/extra", "status": "fail", "extra": []}',
        b"[1, 2, 3]",
        b'{"test": "/torn", "st',
    ]
    (run.path / "results.jsonl").write_bytes(b"\n".join(lines))
    proc = atex_env("report", "-d", str(run.path), "--html", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 6
    assert "skipped 5 damaged line(s) in " in warnings[0]
    assert all(len(line) < 400 for line in warnings)
    assert any("'duration' must be" in line for line in warnings)
    root = validate((run.path / "junit.xml").read_bytes())
    assert [c.get("name") for c in root.iter("testcase")] == ["/ok", "/bytes\\udcff"]
    md = (run.path / "summary.md").read_text()
    assert "5 damaged line(s) in results.jsonl were skipped" in md
    assert "bad \\\\udcfe byte" in md  # Markdown-escaped backslash of the visible escape


def test_many_damaged_lines_give_a_bounded_number_of_warnings(tmp_path: Path) -> None:
    from atex_ci.rundir import RunDir

    run = RunDir.create(tmp_path / "run")
    garbage = b"\n".join(b'{"test": %d, "junk": "%s"}' % (n, b"x" * 5000) for n in range(500))
    (run.path / "results.jsonl").write_bytes(garbage)
    proc = atex_env("report", "-d", str(run.path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) <= 15
    assert all(len(line) <= 400 for line in lines)
    assert "and 490 more" in proc.stderr


def test_empty_and_interrupted_runs_say_so(tmp_path: Path) -> None:
    from atex_ci.rundir import RunDir

    empty = RunDir.create(tmp_path / "empty")
    proc = atex_env("report", "-d", str(empty.path), "--html", str(tmp_path / "e.html"))
    assert proc.returncode == 0, proc.stderr
    validate((empty.path / "junit.xml").read_bytes())
    assert "No test results" in (empty.path / "summary.md").read_text()

    cut = RunDir.create(tmp_path / "cut")
    cut.update_run(state="interrupted")
    cut.append_result(
        __import__("atex_ci.model", fromlist=["Result"]).Result(
            test="/t", status=__import__("atex_ci.model", fromlist=["Status"]).Status.PASS
        )
    )
    proc = atex_env("report", "-d", str(cut.path))
    assert proc.returncode == 0, proc.stderr
    assert "the run was interrupted; the reports may be partial" in proc.stderr
    assert "these results may be partial" in (cut.path / "summary.md").read_text()


def test_report_on_something_that_is_not_a_run_directory(tmp_path: Path) -> None:
    proc = atex_env("report", "-d", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("atex-ci: ") and len(proc.stderr.splitlines()) == 1


def test_resume_and_progress_survive_hostile_results(tmp_path: Path) -> None:
    """A mistyped line does not crash --resume; a huge note is one short progress line."""
    tree = make_tree(
        tmp_path / "tree",
        {
            # A 900 KB note, sent on the control stream (under its 1 MiB result cap).
            "big-note": {
                "test": "python3 -c \"import json, os; fd = int(os.environ['ATEX_TEST_CONTROL']); "
                "body = json.dumps({'status': 'fail', 'note': 'x' * 900000}).encode(); "
                "os.write(fd, b'result %d\\n' % len(body) + body)\"",
            },
            "ok": {"test": "true"},
        },
    )
    run = tmp_path / "run"
    proc = atex_env("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 1, proc.stderr
    assert max(len(line) for line in proc.stderr.splitlines()) < 400
    own = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert max(len(r["note"] or "") for r in own) == 900_000  # the note itself is kept
    with open(run / "results.jsonl", "ab") as f:
        f.write(b'{"test": "/tests/ok", "status": "pass", "attempt": "9", "files": {}}\n')
    proc = atex_env("run", "-d", str(run), "--fmf-root", str(tree), "--resume")
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1, proc.stderr


def test_outputs_with_a_line_break_use_the_delimiter_form(tmp_path: Path) -> None:
    from atex_ci.report.github import write_outputs

    path = tmp_path / "out"
    write_outputs(path, {"junit": "a\nb", "total": "3"})
    lines = path.read_text().splitlines()
    assert lines[0].startswith("junit<<ghadelimiter_")
    assert lines[1:3] == ["a", "b"] and lines[3] == lines[0].split("<<", 1)[1]
    assert lines[4] == "total=3"
