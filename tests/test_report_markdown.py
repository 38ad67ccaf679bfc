"""Markdown summary, and the shared report helpers in report/summary.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

from atex_ci.model import Reason, Result, Status
from atex_ci.report.markdown import code_block, markdown_summary, write_markdown
from atex_ci.report.summary import (
    TOTAL,
    final_results,
    format_duration,
    pass_rate,
    read_output,
    read_output_tail,
    time_in_tests,
    totals,
    wall_clock,
)


def write_output(run: Path, test: str, data: bytes, platform: str = "default") -> str:
    """Create RUN/artifacts/<platform>/<test>/1/output.txt; return its relative path."""
    relative = f"{platform}/{test.strip('/')}/1/output.txt"
    path = run / "artifacts" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return relative


def fenced_blocks(markdown: str) -> list[str]:
    """Contents of backtick-fenced code blocks, closed by CommonMark's rule.

    An opening fence is 3+ backticks (up to 3 spaces indent); the block ends
    at the first line of only backticks at least as long (same indent limit).
    """
    blocks: list[str] = []
    lines = markdown.split("\n")
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r" {0,3}(`{3,})[^`]*", lines[i])
        if not opening:
            i += 1
            continue
        fence_len = len(opening.group(1))
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = re.fullmatch(r" {0,3}(`+)\s*", lines[i])
            if closing and len(closing.group(1)) >= fence_len:
                break
            body.append(lines[i])
            i += 1
        blocks.append("\n".join(body))
        i += 1
    return blocks


# -- summary.py helpers --------------------------------------------------------------


def test_final_results_keeps_latest_attempt_in_first_appearance_order() -> None:
    results = [
        Result(test="/a", status=Status.FAIL, attempt=1),
        Result(test="/a", name="old-sub", status=Status.FAIL, attempt=1),
        Result(test="/b", status=Status.PASS),
        Result(test="/a", status=Status.PASS, attempt=2),
        Result(test="/a", status=Status.PASS, attempt=1, platform="other"),
        Result(test="/b", status=Status.ERROR),  # same attempt written again: last wins
    ]
    final = final_results(results)
    assert [(r.test, r.name, r.platform, r.attempt, r.status) for r in final] == [
        ("/a", None, "default", 2, Status.PASS),
        ("/b", None, "default", 1, Status.ERROR),
        ("/a", None, "other", 1, Status.PASS),
    ]


def test_totals_and_pass_rate() -> None:
    results = [
        Result(test="/p1", status=Status.PASS),
        Result(test="/p2", status=Status.PASS),
        Result(test="/w", status=Status.WARN),
        Result(test="/f", status=Status.FAIL),
        Result(test="/s", status=Status.SKIP),
    ]
    counts = totals(results)
    assert counts == {
        "pass": 2,
        "fail": 1,
        "warn": 1,
        "info": 0,
        "skip": 1,
        "error": 0,
        TOTAL: 5,
    }
    assert counts[Status.PASS] == 2
    assert pass_rate(counts) == 0.75  # 3 of the 4 that ran (skip excluded)
    assert pass_rate(totals([Result(test="/s", status=Status.SKIP)])) is None


def test_time_in_tests_counts_sub_results_only_without_own_result() -> None:
    results = [
        Result(test="/a", status=Status.PASS, duration=10.0),
        Result(test="/a", name="x", status=Status.PASS, duration=4.0),  # part of /a's 10 s
        Result(test="/b", name="x", status=Status.PASS, duration=2.0),
        Result(test="/b", name="y", status=Status.PASS, duration=3.0),
    ]
    assert time_in_tests(results) == 15.0


def test_wall_clock_spans_earliest_start_to_latest_end() -> None:
    results = [
        Result(
            test="/a",
            status=Status.PASS,
            start="2024-05-01T10:00:00+00:00",
            end="2024-05-01T10:00:30+00:00",
        ),
        Result(
            test="/b",
            status=Status.PASS,
            start="2024-05-01T10:00:10+00:00",
            end="2024-05-01T10:01:15.500+00:00",
        ),
    ]
    assert wall_clock(results) == 75.5
    assert wall_clock([Result(test="/c", status=Status.PASS)]) is None


def test_format_duration() -> None:
    assert format_duration(None) == "-"
    assert format_duration(0.25) == "250ms"
    assert format_duration(12.34) == "12.3s"
    assert format_duration(245) == "4m 05s"
    assert format_duration(3723) == "1h 02m 03s"


def test_read_output_tail_strips_ansi_and_limits_lines(tmp_path: Path) -> None:
    data = b"".join(b"\x1b[32mline %d\x1b[0m\r\n" % i for i in range(10)) + b"bad \xff\n"
    rel = write_output(tmp_path, "/t", data)
    result = Result(test="/t", status=Status.FAIL, files=["other/file.log", rel])
    assert read_output_tail(tmp_path, result, max_lines=3) == "line 8\nline 9\nbad \ufffd\n"
    tail = read_output(tmp_path, result, max_lines=100)
    assert tail is not None and not tail.truncated and tail.size == len(data)
    assert tail.text.startswith("line 0\n")
    truncated = read_output(tmp_path, result, max_lines=3)
    assert truncated is not None and truncated.truncated


def test_read_output_tail_reads_only_the_last_bytes(tmp_path: Path) -> None:
    data = b"first\n" + b"a" * 1000 + b"\nsecond to last\nlast\n"
    rel = write_output(tmp_path, "/t", data)
    result = Result(test="/t", status=Status.FAIL, files=[rel])
    tail = read_output(tmp_path, result, max_lines=None, max_bytes=30)
    assert tail is not None and tail.truncated
    assert tail.text == "second to last\nlast\n"  # the cut partial line is dropped


def test_read_output_tail_missing_or_outside_artifacts(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("do not read\n")
    (tmp_path / "artifacts").mkdir()
    escape = Result(test="/t", status=Status.FAIL, files=["../secret.txt/../output.txt"])
    (tmp_path / "output.txt").write_text("outside artifacts\n")
    outside = Result(test="/t", status=Status.FAIL, files=["../output.txt"])
    missing = Result(test="/t", status=Status.FAIL, files=["default/t/1/output.txt"])
    none = Result(test="/t", status=Status.FAIL)
    for result in (escape, outside, missing, none):
        assert read_output(tmp_path, result) is None
        assert read_output_tail(tmp_path, result) == ""


# -- markdown ------------------------------------------------------------------------


def test_summary_has_title_totals_rate_and_times() -> None:
    results = [
        Result(
            test="/p",
            status=Status.PASS,
            duration=60.0,
            start="2024-05-01T10:00:00+00:00",
            end="2024-05-01T10:01:00+00:00",
        ),
        Result(
            test="/f",
            status=Status.FAIL,
            duration=30.0,
            start="2024-05-01T10:00:00+00:00",
            end="2024-05-01T10:00:30+00:00",
        ),
        Result(test="/s", status=Status.SKIP),
    ]
    text = markdown_summary(results, title="Nightly run")
    assert text.startswith("# Nightly run\n")
    assert "| Platform | pass | fail | warn | info | skip | error | total |" in text
    assert "| default | 1 | 1 | 0 | 0 | 1 | 0 | 3 |" in text
    assert "| **total** |" not in text  # one platform: no total row
    assert "**Counted:** 3 results of 3 tests (0 of them sub-results)" in text
    assert "**Pass rate:** 50.0% (1 of 2 results that ran)" in text
    assert "**Test time:** 1m 30s" in text
    assert "**Wall clock:** 1m 00s" in text
    assert "## Failures and errors (1 test)" in text


def test_failure_section_shows_details_and_output_tail(tmp_path: Path) -> None:
    data = b"".join(b"output line %d\n" % i for i in range(200)) + b"\x1b[31mFAILED\x1b[0m\n"
    rel = write_output(tmp_path, "/tests/broken", data, platform="fedora-40")
    result = Result(
        test="/tests/broken",
        status=Status.ERROR,
        reason=Reason.TIMEOUT,
        platform="fedora-40",
        plan="/plans/ci",
        note="ran past 5m",
        duration=300.2,
        machine="tf-1",
        attempt=2,
        exit_code=124,
        files=[rel],
    )
    text = markdown_summary([result], rundir_path=tmp_path)
    assert "### /tests/broken · fedora-40\n" in text
    assert "- **Status:** error (timeout)" in text
    assert "- **Note:** ran past 5m" in text
    assert "- **Plan:** /plans/ci" in text
    assert "- **Exit code:** 124" in text
    assert "- **Duration:** 5m 00s" in text
    assert "- **Machine:** tf-1 (attempt 2)" in text
    assert "<details><summary>Last lines of output" in text
    (block,) = fenced_blocks(text)
    shown = block.split("\n")
    assert len(shown) == 50
    assert shown[0] == "output line 151" and shown[-1] == "FAILED"
    assert "output line 150\n" not in text
    assert "\x1b" not in text


def test_output_with_backticks_cannot_break_out_of_the_fence(tmp_path: Path) -> None:
    output = "before\n```\n# not a heading\n````\n<b>not bold</b>\n`````python\nafter\n"
    rel = write_output(tmp_path, "/t", output.encode())
    result = Result(test="/t", status=Status.FAIL, files=[rel])
    text = markdown_summary([result], rundir_path=tmp_path)
    blocks = fenced_blocks(text)
    assert blocks == [output.rstrip("\n")]
    fence = re.search(r"^(`+)text$", text, re.MULTILINE)
    assert fence is not None and len(fence.group(1)) == 6
    # Nothing after the block looks like it was swallowed or leaked.
    assert text.rstrip().endswith("</details>")


def test_code_block_fence_length() -> None:
    assert code_block("plain") == "```text\nplain\n```\n"
    assert code_block("a ``` b").startswith("````text\n")
    assert fenced_blocks(code_block("x\n```` y\n````\n")) == ["x\n```` y\n````"]


def test_names_and_notes_are_escaped() -> None:
    result = Result(
        test="/tests/<script>alert(1)</script>",
        name="*bold*_x_|pipe|",
        status=Status.FAIL,
        note="see [link](http://evil) & `code`\n# heading",
    )
    text = markdown_summary([result])
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert r"\*bold\*\_x\_\|pipe\|" in text
    assert r"\[link\](http://evil) &amp; \`code\` # heading" in text
    assert "\n# heading" not in text


def test_failure_without_output_file_says_so(tmp_path: Path) -> None:
    result = Result(test="/t", status=Status.FAIL)
    text = markdown_summary([result], rundir_path=tmp_path)
    assert "_No output was recorded._" in text
    assert "<details>" not in text
    assert "<details>" not in markdown_summary([result])  # no run dir: no output at all


def test_only_final_attempt_counts() -> None:
    results = [
        Result(test="/flaky", status=Status.FAIL, attempt=1),
        Result(test="/flaky", status=Status.PASS, attempt=2),
    ]
    text = markdown_summary(results)
    assert "| default | 1 | 0 | 0 | 0 | 0 | 0 | 1 |" in text
    assert "No failures or errors." in text
    assert "## Flaky tests (1)" in text
    assert "- /flaky · default: attempt 1 fail; attempt 2 pass" in text
    assert "**Flaky:** 1" in text


def test_many_failures_are_listed_without_details() -> None:
    results = [Result(test=f"/t{i}", status=Status.FAIL) for i in range(5)]
    text = markdown_summary(results, max_detailed=2)
    assert text.count("\n### ") == 2
    assert "And 3 more failed tests, without details:" in text
    assert "- /t4 · default: fail" in text


def test_empty_run_is_reported_clearly() -> None:
    text = markdown_summary([])
    assert text.startswith("# atex-ci results\n")
    assert "No test results" in text
    assert "| Status |" not in text


def test_write_markdown_survives_lone_surrogates(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    result = Result(test="/t\udc80", status=Status.FAIL, note="bad \ud800 note")
    write_markdown([result], path)
    text = path.read_text(encoding="utf-8")
    assert "### /t\\\\udc80 · default" in text  # the escape's backslash is escaped too
    assert "bad \\\\ud800 note" in text


# -- issue 11: structure and caps ------------------------------------------------------


def test_sub_results_are_listed_under_their_parent_and_output_is_the_parents(
    tmp_path: Path,
) -> None:
    rel = write_output(tmp_path, "/tests/x", b"parent output\n")
    results = [
        Result(test="/tests/x", name="/a", status=Status.FAIL, note="a broke", duration=9.0),
        Result(test="/tests/x", name="/b", status=Status.PASS, duration=9.0),
        Result(test="/tests/x", status=Status.FAIL, duration=9.0, files=[rel]),
    ]
    text = markdown_summary(results, rundir_path=tmp_path)
    assert "## Failures and errors (1 test)" in text
    assert text.count("\n### ") == 1
    section = text[text.index("### /tests/x") :]
    assert "- **Sub-results:** 1 failed, 1 passed or other" in section
    assert "  - /a — fail: a broke" in section
    assert "parent output" in section
    assert "No output was recorded" not in text


def test_infrastructure_errors_come_after_test_failures() -> None:
    results = [
        Result(test="/lost", status=Status.ERROR, reason=Reason.INFRA),
        Result(test="/broken", status=Status.FAIL),
        Result(test="/timeout", status=Status.ERROR, reason=Reason.TIMEOUT),
    ]
    text = markdown_summary(results)
    order = [text.index(f"### /{name} ") for name in ("broken", "timeout", "lost")]
    assert order == sorted(order)


def test_two_platforms_get_a_row_each_and_a_total() -> None:
    results = [
        Result(test="/t", status=Status.PASS, platform="fedora"),
        Result(test="/t", status=Status.FAIL, platform="centos"),
    ]
    text = markdown_summary(results)
    assert "| fedora | 1 | 0 | 0 | 0 | 0 | 0 | 1 |" in text
    assert "| centos | 0 | 1 | 0 | 0 | 0 | 0 | 1 |" in text
    assert "| **total** | 1 | 1 | 0 | 0 | 0 | 0 | 2 |" in text


def test_slowest_tests_and_machine_utilisation() -> None:
    results = [Result(test=f"/t{n}", status=Status.PASS, duration=float(n)) for n in range(15)]
    events = [
        {"time": "2026-01-01T00:00:00+00:00", "event": "machine_ready", "machine": "m1"},
        {
            "time": "2026-01-01T00:00:10+00:00",
            "event": "test_started",
            "machine": "m1",
            "test": "/t1",
        },
        {
            "time": "2026-01-01T00:00:40+00:00",
            "event": "test_finished",
            "machine": "m1",
            "test": "/t1",
            "status": "pass",
        },
        {"time": "2026-01-01T00:01:40+00:00", "event": "machine_released", "machine": "m1"},
        {"time": 5, "event": "test_started", "machine": ["bad"]},  # damaged: ignored
    ]
    text = markdown_summary(results, events=events)
    slow = text[text.index("## Slowest tests (10)") :]
    rows = [line for line in slow.splitlines() if line.startswith("| /t")]
    assert [row.split(" | ")[0] for row in rows] == [f"| /t{n}" for n in range(14, 4, -1)]
    assert "| m1 | 1 | 30.0s | 1m 10s | 30% |" in text


def test_summary_stays_under_1_mib_with_huge_notes_and_outputs(tmp_path: Path) -> None:
    big = b"".join(b"%06d %s\n" % (i, b"z" * 200) for i in range(20_000))
    results = []
    first = write_output(tmp_path, "/tests/t0", big)
    for n in range(300):
        rel = f"default/tests/t{n}/1/output.txt"
        if n:  # the same 4 MB log, linked: the reader cannot tell
            (tmp_path / "artifacts" / rel).parent.mkdir(parents=True)
            os.link(tmp_path / "artifacts" / first, tmp_path / "artifacts" / rel)
        results.append(
            Result(test=f"/tests/t{n}", status=Status.FAIL, files=[rel], note="n" * 200_000)
        )
    results.append(Result(test="/tests/huge", status=Status.FAIL, note="N" * (50 * 1024 * 1024)))
    text = markdown_summary(results, rundir_path=tmp_path)
    assert len(text.encode()) <= 1024 * 1024
    assert "## Failures and errors (301 tests)" in text
    assert "more failed tests, without details" in text
    # A note is cut in the middle, visibly.
    assert "characters left out" in text


def test_summary_cap_is_visible_when_even_the_list_does_not_fit() -> None:
    results = [Result(test=f"/t/{'x' * 200}/{n}", status=Status.FAIL) for n in range(5000)]
    text = markdown_summary(results, max_bytes=64 * 1024)
    assert len(text.encode()) <= 64 * 1024
    assert "more not shown: the summary is capped at 64 KiB" in text


def test_a_final_attempt_without_its_own_result_is_not_flaky(tmp_path: Path) -> None:
    from atex_ci.report.html import write_html
    from atex_ci.report.junit import junit_xml
    from atex_ci.report.summary import flaky_attempts

    results = [
        Result(test="/t", status=Status.FAIL, attempt=1),
        Result(test="/t", status=Status.PASS, attempt=2, name="/sub"),  # own line lost
        Result(test="/u", status=Status.FAIL, attempt=1),
        Result(test="/u", status=Status.PASS, attempt=2),
    ]
    assert [key[2] for key in flaky_attempts(results)] == ["/u"]
    assert "## Flaky tests (1)" in markdown_summary(results)
    assert "flakyFailure" in junit_xml(results)
    write_html(results, tmp_path / "r.html")


# -- mentions and issue references ------------------------------------------------------

#: How GitHub finds mentions and issue references in the text of rendered
#: Markdown (after escapes and entities are decoded; ASCII word characters):
#: "@user", "@org/team", "#123", "owner/repo#123", "GH-123".
_GITHUB_REFERENCE = re.compile(
    r"(?:^|[^A-Za-z0-9_])@[A-Za-z0-9]|#[0-9]|(?:^|[^A-Za-z0-9_])GH-[0-9]", re.IGNORECASE
)
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")

HOSTILE_TEXT = "ping @octocat @my-org/all-staff (a@b) x@y.z fixes #1 and org/repo#22 gh-3"


def rendered_text(markdown: str) -> str:
    """The text GitHub scans: tags dropped, backslash escapes and entities decoded."""
    import html as html_module

    text = re.sub(r"<[^>]*>", " ", markdown)
    return html_module.unescape(_ESCAPED.sub(r"\1", text))


def assert_no_github_reference(markdown: str) -> None:
    found = _GITHUB_REFERENCE.findall(rendered_text(markdown))
    assert found == [], markdown


def test_mentions_and_issue_references_are_broken_everywhere(tmp_path: Path) -> None:
    """A test controls its name, sub-result names, notes, output and file names;
    the user controls the title. None of them can ping anyone on GitHub."""
    from atex_ci.report.github import github_report

    output = write_output(tmp_path, "/t/@octocat", f"{HOSTILE_TEXT}\n".encode())
    results = [
        Result(test="/t/@octocat", status=Status.FAIL, note=HOSTILE_TEXT, files=[output]),
        Result(test="/t/@octocat", name="/#7 @team", status=Status.FAIL, note=HOSTILE_TEXT),
        Result(test="/t/#9", status=Status.PASS, duration=1.0, platform="@plat"),
    ]
    events = [
        {"time": "2026-01-01T00:00:00+00:00", "event": "machine_ready", "machine": "@m"},
        {"time": "2026-01-01T00:00:01+00:00", "event": "test_started", "machine": "@m",
         "test": "/t/#9"},
        {"time": "2026-01-01T00:00:02+00:00", "event": "test_finished", "machine": "@m",
         "test": "/t/#9", "status": "pass"},
    ]  # fmt: skip
    markdown = markdown_summary(
        results, rundir_path=tmp_path, title="by @boss #4", events=events, notes=[HOSTILE_TEXT]
    )
    # Every place a name or text lands is present, and none of them pings.
    for seen in ("## Machines", "<details>", "by @\u200bboss #\u200b4", "org/repo#\u200b22"):
        assert seen in markdown
    assert "gh-\u200b3" in markdown and "@\u200bmy-org/all-staff" in markdown
    assert_no_github_reference(markdown)
    # It still reads the same once the zero-width spaces are gone.
    assert HOSTILE_TEXT in rendered_text(markdown).replace("\u200b", "")

    summary = tmp_path / "step-summary.md"
    annotations = github_report(results, markdown, environ={"GITHUB_STEP_SUMMARY": str(summary)})
    assert_no_github_reference(summary.read_text())
    assert annotations and all("@" in line for line in annotations)
    for line in annotations:
        assert _GITHUB_REFERENCE.findall(line.replace("%0A", "\n")) == [], line
