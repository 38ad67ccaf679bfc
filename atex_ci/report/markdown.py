"""Markdown summary of a run, e.g. for a GitHub job summary or a pull-request comment.

This module owns the Markdown layout and Markdown escaping:

* a title, a totals table (status | count, with the total), one line with
  the pass rate, the time spent in tests and the wall-clock time;
* for each fail and error (final attempts only): a heading with the test's
  full name and platform, its status and reason, note, plan, duration,
  machine and attempt, and the tail of its output in a collapsed
  ``<details>`` block;
* an empty run says so instead of showing an empty table.

Names and notes are escaped (HTML-special characters as entities, Markdown
punctuation with backslashes, newlines folded), so a test name cannot inject
markup. Output goes into a fenced code block whose fence is longer than any
run of backticks in the output, so output containing ``` cannot close it.
Counting and output reading come from ``summary.py``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

from ..model import Result, Status
from .summary import (
    TOTAL,
    failures,
    final_results,
    format_duration,
    pass_rate,
    read_output,
    time_in_tests,
    totals,
    wall_clock,
)

DEFAULT_TITLE = "atex-ci results"

# GitHub caps a job summary at 1 MiB: 100 detailed failures with at most
# 8 KiB of output each stay below it; the rest are listed by name only.
TAIL_LINES = 50
TAIL_BYTES = 8 * 1024
MAX_DETAILED = 100

# C0 controls other than tab and newline (and DEL) only garble a rendered
# page; ANSI sequences are already gone (summary.read_output strips them).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
# Punctuation that is markup anywhere in a line. Line-start markup (#, -, +,
# 1.) needs no escape: escaped text is always placed after a prefix such as
# "### " or "- **Note:** ", never at the start of a line.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]|~])")
_SURROGATE = re.compile("[\ud800-\udfff]")
_BACKTICK_RUN = re.compile("`+")


def escape_inline(text: str) -> str:
    """``text`` as literal inline Markdown: no markup, no HTML, one line.

    The result is meant to follow other text on its line (see above).
    """
    text = _CONTROL.sub(" ", text)
    text = " ".join(text.split())
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
    return html.escape(text, quote=False)


def code_block(text: str, info: str = "text") -> str:
    """``text`` in a fenced code block that nothing inside ``text`` can close.

    The fence is one backtick longer than the longest backtick run in the
    text (at least three), and a closing fence must be at least as long as
    the opening one.
    """
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    if text and not text.endswith("\n"):
        text += "\n"
    return f"{fence}{info}\n{text}{fence}\n"


def _totals_table(counts: dict[str, int]) -> list[str]:
    lines = ["| Status | Count |", "| --- | ---: |"]
    for status in Status:
        if counts[status]:
            lines.append(f"| {status} | {counts[status]} |")
    lines.append(f"| **{TOTAL}** | **{counts[TOTAL]}** |")
    return lines


def _stats_line(final: Sequence[Result], counts: dict[str, int]) -> str:
    rate = pass_rate(counts)
    ran = counts[TOTAL] - counts[Status.SKIP]
    if rate is None:
        parts = ["**Pass rate:** n/a (nothing ran)"]
    else:
        passed = ran - counts[Status.FAIL] - counts[Status.ERROR]
        parts = [f"**Pass rate:** {rate:.1%} ({passed} of {ran} that ran)"]
    parts.append(f"**Test time:** {format_duration(time_in_tests(final))}")
    wall = wall_clock(final)
    if wall is not None:
        parts.append(f"**Wall clock:** {format_duration(wall)}")
    return " · ".join(parts)


def _status_text(result: Result) -> str:
    if result.reason:
        return f"{result.status} ({result.reason})"
    return str(result.status)


def _failure_section(result: Result, rundir_path: Path | None, tail_lines: int) -> list[str]:
    heading = f"### {escape_inline(result.full_name)} · {escape_inline(result.platform)}"
    lines = [heading, "", f"- **Status:** {escape_inline(_status_text(result))}"]
    if result.note:
        lines.append(f"- **Note:** {escape_inline(result.note)}")
    if result.plan:
        lines.append(f"- **Plan:** {escape_inline(result.plan)}")
    if result.exit_code is not None:
        lines.append(f"- **Exit code:** {result.exit_code}")
    lines.append(f"- **Duration:** {format_duration(result.duration)}")
    if result.machine:
        machine = escape_inline(result.machine)
        lines.append(f"- **Machine:** {machine} (attempt {result.attempt})")
    else:
        lines.append(f"- **Attempt:** {result.attempt}")
    lines.append("")
    if rundir_path is None:
        return lines

    tail = read_output(rundir_path, result, max_lines=tail_lines, max_bytes=TAIL_BYTES)
    if tail is None:
        lines += ["_No output was recorded._", ""]
        return lines
    label = "Last lines of output" if tail.truncated else "Output"
    summary = html.escape(f"{label} ({tail.path}, {tail.size} bytes)", quote=False)
    # The blank lines around the code block make GitHub render it as
    # Markdown inside the HTML <details> block.
    lines += [f"<details><summary>{summary}</summary>", ""]
    lines.append(code_block(tail.text if tail.text else "(empty)\n"))
    lines += ["</details>", ""]
    return lines


def markdown_summary(
    results: Sequence[Result],
    *,
    rundir_path: Path | None = None,
    title: str = DEFAULT_TITLE,
    tail_lines: int = TAIL_LINES,
    max_detailed: int = MAX_DETAILED,
) -> str:
    """The Markdown summary of ``results`` (final attempts only).

    With ``rundir_path``, each fail/error shows the last ``tail_lines`` lines
    of its ``output.txt``. At most ``max_detailed`` failures get a section;
    the others are listed by name.
    """
    final = final_results(results)
    lines = [f"# {escape_inline(title)}", ""]
    if not final:
        lines += ["**No test results.** No test ran, or the run stopped before any test finished."]
        return _finish(lines)

    counts = totals(final)
    lines += _totals_table(counts)
    lines += ["", _stats_line(final, counts), ""]

    failed = failures(final)
    if not failed:
        lines.append("No failures or errors.")
        return _finish(lines)

    lines += [f"## Failures and errors ({len(failed)})", ""]
    for result in failed[:max_detailed]:
        lines += _failure_section(result, rundir_path, tail_lines)
    rest = failed[max_detailed:]
    if rest:
        lines += [f"And {len(rest)} more, without details:", ""]
        for result in rest:
            lines.append(
                f"- {escape_inline(result.full_name)} · {escape_inline(result.platform)}: "
                f"{escape_inline(_status_text(result))}"
            )
        lines.append("")
    return _finish(lines)


def _finish(lines: list[str]) -> str:
    # Lone surrogates (from undecodable bytes in names or notes) cannot be
    # written as UTF-8; show them as U+FFFD like undecodable output bytes.
    return _SURROGATE.sub("\ufffd", "\n".join(lines).rstrip("\n") + "\n")


def write_markdown(
    results: Sequence[Result],
    path: Path,
    *,
    rundir_path: Path | None = None,
    title: str = DEFAULT_TITLE,
) -> None:
    """Write ``markdown_summary(results, ...)`` to ``path`` as UTF-8."""
    Path(path).write_text(
        markdown_summary(results, rundir_path=rundir_path, title=title), encoding="utf-8"
    )
