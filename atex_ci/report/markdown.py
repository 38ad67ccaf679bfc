"""Markdown summary of a run, e.g. for a GitHub job summary or a pull-request comment.

This module owns the Markdown layout and Markdown escaping:

* a title; totals per platform (one row each, plus a total row); one line
  with the pass rate, the time spent in tests, the wall-clock time and the
  number of flaky tests;
* failures and errors first, one section per test (test failures before
  infrastructure errors): status, note, plan, exit code, duration, machine,
  attempt, its sub-results under it, and the tail of its output in a
  collapsed ``<details>`` block;
* flaky tests, the 10 slowest tests, machine utilisation (from events);
* an empty run says so instead of showing an empty table.

The whole summary is never larger than ``MAX_BYTES`` (GitHub drops a larger
job summary whole): the small sections are always there, failure sections
are added while they fit, and what did not fit is named in a visible note.

Names are spelled by ``text.display_name`` (control characters escaped,
never deleted) and then escaped for Markdown (HTML-special characters as
entities, Markdown punctuation with backslashes), so a name cannot inject
markup. Output goes into a fenced code block whose fence is longer than any
run of backticks in the output, so output containing ``` cannot close it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..model import Reason, Result, Status, TestId
from .summary import (
    TOTAL,
    counted,
    final_results,
    flaky_attempts,
    format_duration,
    machine_usage,
    pass_rate,
    read_output,
    report_duration,
    time_in_tests,
    totals,
    wall_clock,
)
from .text import cap_middle, display_name, display_text

DEFAULT_TITLE = "atex-ci results"

# GitHub refuses a job summary over 1 MiB; keep a margin for what a workflow
# appends after ours.
MAX_BYTES = 1024 * 1024 - 16 * 1024
# A failure section shows the end of the log: 50 lines, at most 8 KiB.
TAIL_LINES = 50
TAIL_BYTES = 8 * 1024
# Notes are short by nature; a long one is cut in the middle.
NOTE_MAX_CHARS = 1000
# Failing sub-results listed under one test; the rest are counted.
MAX_SUBRESULTS = 20
MAX_DETAILED = 100
MAX_LISTED = 200
SLOWEST = 10

# Punctuation that is markup anywhere in a line. Line-start markup (#, -, +,
# 1.) needs no escape: escaped text is always placed after a prefix such as
# "### " or "- **Note:** ", never at the start of a line.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]|~])")
_BACKTICK_RUN = re.compile("`+")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")

# GitHub turns "@user" and "@org/team" into mentions that notify them, and
# "#123", "GH-123" and "owner/repo#123" into references that put an event on
# that timeline, so a test's name or note could ping anyone. GitHub
# finds them in the text after Markdown is rendered (escapes and entities
# already decoded), so a backslash or "&#64;" does not help; a code span is
# not linked on the page, but the mention comes back in any plain-text copy
# (an e-mail reply quoting the comment). A zero-width space right after the
# "@", "#" or "GH-" keeps the text looking the same, and the characters that
# follow are no longer a name or a number to GitHub, wherever they are pasted.
# Every "@" before a letter or digit is broken, not only those GitHub would
# take today: an e-mail address in a summary loses its mailto link, nobody is
# pinged. Commit hashes are left alone: GitHub only links them (no
# notification, no timeline event), and a hash must stay searchable.
ZERO_WIDTH_SPACE = "\u200b"
_REFERENCE = re.compile(r"@(?=[A-Za-z0-9])|#(?=[0-9])|\bGH-(?=[0-9])", re.IGNORECASE)


def neutralise_references(text: str) -> str:
    """``text`` with every GitHub mention and issue reference broken (see ZERO_WIDTH_SPACE)."""
    return _REFERENCE.sub(lambda found: found.group() + ZERO_WIDTH_SPACE, text)


def escape_inline(text: str) -> str:
    """Already displayable ``text`` as literal inline Markdown: no markup, no HTML, no
    mention or issue reference, one line."""
    text = " ".join(neutralise_references(text).split())
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
    return html.escape(text, quote=False)


def md_name(name: str) -> str:
    """A test, plan, platform or machine name as the summary shows it."""
    return escape_inline(display_name(name))


def md_note(note: str) -> str:
    """A note as one line of inline Markdown, at most about ``NOTE_MAX_CHARS``."""
    return escape_inline(display_text(cap_middle(note, NOTE_MAX_CHARS)))


def code_block(text: str, info: str = "text") -> str:
    """``text`` in a fenced code block that nothing inside ``text`` can close.

    The fence is one backtick longer than the longest backtick run in the
    text (at least three), and a closing fence must be at least as long as
    the opening one.
    """
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = neutralise_references(text)
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    if text and not text.endswith("\n"):
        text += "\n"
    return f"{fence}{info}\n{text}{fence}\n"


def _status_text(result: Result) -> str:
    if result.reason:
        return f"{result.status} ({result.reason})"
    return str(result.status)


def _where(result: Result) -> str:
    return f"{md_name(result.full_name)} · {md_name(result.platform)}"


# -- sections ------------------------------------------------------------------------


def _platform_table(final: Sequence[Result]) -> list[str]:
    statuses = list(Status)
    by_platform: dict[str, list[Result]] = {}
    for result in final:
        by_platform.setdefault(result.platform, []).append(result)
    lines = [
        "| Platform | " + " | ".join(str(s) for s in statuses) + f" | {TOTAL} |",
        "| --- |" + " ---: |" * (len(statuses) + 1),
    ]
    rows = [(md_name(p), totals(rs)) for p, rs in by_platform.items()]
    if len(rows) > 1:
        rows.append((f"**{TOTAL}**", totals(final)))
    for label, counts in rows:
        cells = " | ".join(str(counts[s]) for s in statuses)
        lines.append(f"| {label} | {cells} | {counts[TOTAL]} |")
    return lines


def _stats_line(final: Sequence[Result], flaky: int) -> str:
    counts = totals(final)
    rate = pass_rate(counts)
    ran = counts[TOTAL] - counts[Status.SKIP]
    parts = [f"**Counted:** {counted(final)}"]
    if rate is None:
        parts.append("**Pass rate:** n/a (nothing ran)")
    else:
        passed = ran - counts[Status.FAIL] - counts[Status.ERROR]
        parts.append(f"**Pass rate:** {rate:.1%} ({passed} of {ran} results that ran)")
    parts.append(f"**Test time:** {format_duration(time_in_tests(final))}")
    wall = wall_clock(final)
    if wall is not None:
        parts.append(f"**Wall clock:** {format_duration(wall)}")
    if flaky:
        parts.append(f"**Flaky:** {flaky}")
    return " · ".join(parts)


class _Test:
    """One test's final results: its own result (if any) and its sub-results."""

    def __init__(self, key: TestId) -> None:
        self.key = key
        self.own: Result | None = None
        self.subs: list[Result] = []

    @property
    def main(self) -> Result:
        return self.own if self.own is not None else self.subs[0]

    @property
    def failed(self) -> bool:
        return any(r.status.is_failure for r in self.all)

    @property
    def all(self) -> list[Result]:
        return ([self.own] if self.own else []) + self.subs

    @property
    def infra(self) -> bool:
        main = self.main
        return main.status is Status.ERROR and main.reason in (Reason.INFRA, Reason.INTERRUPTED)


def group_tests(final: Sequence[Result]) -> list[_Test]:
    tests: dict[TestId, _Test] = {}
    for result in final:
        test = tests.setdefault(TestId.of_result(result), _Test(TestId.of_result(result)))
        if result.name is None:
            test.own = result
        else:
            test.subs.append(result)
    return list(tests.values())


def failure_order(tests: Sequence[_Test]) -> list[_Test]:
    """Failed tests, most important first: test failures and errors, then infrastructure."""
    failed = [t for t in tests if t.failed]
    return [t for t in failed if not t.infra] + [t for t in failed if t.infra]


def _failure_section(test: _Test, rundir_path: Path | None, tail_lines: int) -> list[str]:
    main = test.main
    heading = f"### {md_name(main.test)} · {md_name(main.platform)}"
    lines = [heading, ""]
    if test.own is not None:
        lines.append(f"- **Status:** {escape_inline(_status_text(main))}")
        if main.note:
            lines.append(f"- **Note:** {md_note(main.note)}")
    if main.plan:
        lines.append(f"- **Plan:** {md_name(main.plan)}")
    if main.exit_code is not None:
        lines.append(f"- **Exit code:** {main.exit_code}")
    lines.append(f"- **Duration:** {format_duration(report_duration(main, test.own))}")
    if main.machine:
        lines.append(f"- **Machine:** {md_name(main.machine)} (attempt {main.attempt})")
    else:
        lines.append(f"- **Attempt:** {main.attempt}")
    if test.subs:
        failing = [s for s in test.subs if s.status.is_failure]
        passing = len(test.subs) - len(failing)
        lines.append(f"- **Sub-results:** {len(failing)} failed, {passing} passed or other")
        for sub in failing[:MAX_SUBRESULTS]:
            note = f": {md_note(sub.note)}" if sub.note else ""
            lines.append(
                f"  - {md_name(sub.name or '')} — {escape_inline(_status_text(sub))}{note}"
            )
        if len(failing) > MAX_SUBRESULTS:
            lines.append(f"  - and {len(failing) - MAX_SUBRESULTS} more failed sub-results")
    lines.append("")
    if rundir_path is None:
        return lines
    tail = None
    for result in test.all:
        tail = read_output(rundir_path, result, max_lines=tail_lines, max_bytes=TAIL_BYTES)
        if tail is not None:
            break
    if tail is None:
        lines += ["_No output was recorded._", ""]
        return lines
    label = "Last lines of output" if tail.truncated else "Output"
    summary = html.escape(
        neutralise_references(f"{label} (artifacts/{display_name(tail.path)}, {tail.size} bytes)"),
        quote=False,
    )
    # The blank lines around the code block make GitHub render it as
    # Markdown inside the HTML <details> block.
    lines += [f"<details><summary>{summary}</summary>", ""]
    lines.append(code_block(display_text(tail.text) if tail.text else "(empty)\n"))
    lines += ["</details>", ""]
    return lines


def _flaky_section(results: Sequence[Result], final: Sequence[Result]) -> list[str]:
    flaky = flaky_attempts(results)
    if not flaky:
        return []
    own = {TestId.of_result(r): r for r in final if r.name is None}
    lines = [f"## Flaky tests ({len(flaky)})", ""]
    for key, earlier in list(flaky.items())[:MAX_LISTED]:
        last = own[key]
        attempts = ", ".join(f"attempt {r.attempt} {_status_text(r)}" for r in earlier[:5])
        lines.append(
            f"- {_where(last)}: {escape_inline(attempts)}; attempt {last.attempt} {last.status}"
        )
    if len(flaky) > MAX_LISTED:
        lines.append(f"- and {len(flaky) - MAX_LISTED} more")
    return [*lines, ""]


def _slowest_section(final: Sequence[Result]) -> list[str]:
    timed = [r for r in final if r.name is None and r.duration]
    if not timed:
        return []
    timed.sort(key=lambda r: r.duration or 0.0, reverse=True)
    lines = [
        f"## Slowest tests ({min(SLOWEST, len(timed))})",
        "",
        "| Test | Platform | Duration | Status |",
        "| --- | --- | ---: | --- |",
    ]
    for result in timed[:SLOWEST]:
        lines.append(
            f"| {md_name(result.test)} | {md_name(result.platform)} | "
            f"{format_duration(result.duration)} | {escape_inline(_status_text(result))} |"
        )
    return [*lines, ""]


def _machines_section(events: Sequence[dict[str, Any]] | None) -> list[str]:
    if not events:
        return []
    usage, _origin = machine_usage(events)
    usage = [u for u in usage if u.tests or u.note]
    if not usage:
        return []
    lines = [
        "## Machines",
        "",
        "| Machine | Tests | Busy | Idle | Utilisation | Note |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for entry in usage[:MAX_LISTED]:
        rate = entry.utilisation
        note = md_note(entry.note) if entry.note else ""
        lines.append(
            f"| {md_name(entry.machine)} | {len(entry.tests)} | {format_duration(entry.busy)} | "
            f"{format_duration(max(0.0, entry.span - entry.busy))} | "
            f"{'-' if rate is None else f'{rate:.0%}'} | {note} |"
        )
    if len(usage) > MAX_LISTED:
        lines.append(f"| and {len(usage) - MAX_LISTED} more | | | | | |")
    return [*lines, ""]


def _size(lines: Sequence[str]) -> int:
    return sum(len(line.encode("utf-8", "replace")) + 1 for line in lines)


def markdown_summary(
    results: Sequence[Result],
    *,
    rundir_path: Path | None = None,
    title: str = DEFAULT_TITLE,
    tail_lines: int = TAIL_LINES,
    max_detailed: int = MAX_DETAILED,
    events: Sequence[dict[str, Any]] | None = None,
    notes: Sequence[str] = (),
    max_bytes: int = MAX_BYTES,
) -> str:
    """The Markdown summary of ``results`` (final attempts only), at most ``max_bytes``.

    With ``rundir_path``, each failed test shows the last ``tail_lines``
    lines of its ``output.txt``; with ``events`` (``RunDir.read_events()``)
    a machine utilisation table is added. ``notes`` are lines said at the
    top (e.g. how many damaged result lines were skipped). At most
    ``max_detailed`` failed tests get a section, the others are listed by
    name, and whatever does not fit in ``max_bytes`` is left out with a
    visible note.
    """
    final = final_results(results)
    head = [f"# {md_name(title)}", ""]
    for note in notes[:10]:
        head += [f"> {md_note(note)}", ""]
    if len(notes) > 10:
        head += [f"> and {len(notes) - 10} more problems", ""]
    if not final:
        head.append(
            "**No test results.** No test ran, or the run stopped before any test finished."
        )
        return _finish(head)

    flaky_count = len(flaky_attempts(results))
    head += [*_platform_table(final), "", _stats_line(final, flaky_count), ""]
    tail = _flaky_section(results, final) + _slowest_section(final) + _machines_section(events)

    failed = failure_order(group_tests(final))
    body: list[str] = []
    if not failed:
        body.append("No failures or errors.")
        body.append("")
    else:
        plural = "s" if len(failed) != 1 else ""
        body += [f"## Failures and errors ({len(failed)} test{plural})", ""]
    # Room for the sections after the failures and a truncation note.
    budget = max_bytes - _size(head) - _size(tail) - 1024
    used = _size(body)
    shown = 0
    for test in failed[:max_detailed]:
        section = _failure_section(test, rundir_path, tail_lines)
        if used + _size(section) > budget:
            break
        body += section
        used += _size(section)
        shown += 1
    rest = failed[shown:]
    if rest:
        listed: list[str] = []
        for test in rest[:MAX_LISTED]:
            line = f"- {_where(test.main)}: {escape_inline(_status_text(test.main))}"
            if used + _size(listed) + len(line) + 200 > budget:
                break
            listed.append(line)
        unlisted = len(rest) - len(listed)
        body += [f"And {len(rest)} more failed tests, without details:", "", *listed]
        if unlisted:
            body.append(
                f"- **and {unlisted} more not shown: the summary is capped at "
                f"{max_bytes // 1024} KiB; see the JUnit or HTML report**"
            )
        body.append("")
    text = _finish(head + body + tail)
    if len(text.encode()) > max_bytes:  # only if the fixed sections alone are too big
        cut = text.encode()[: max_bytes - 200].decode("utf-8", "ignore")
        text = cut.rsplit("\n", 1)[0] + (
            f"\n\n**Summary truncated at {max_bytes // 1024} KiB; see the JUnit or HTML report.**\n"
        )
    return text


def _finish(lines: list[str]) -> str:
    # Every name and note went through display_name/display_text, which
    # escape lone surrogates; anything else is replaced rather than crash.
    text = "\n".join(lines).rstrip("\n") + "\n"
    return text.encode("utf-8", "replace").decode("utf-8")


def write_markdown(
    results: Sequence[Result],
    path: Path,
    *,
    rundir_path: Path | None = None,
    title: str = DEFAULT_TITLE,
    events: Sequence[dict[str, Any]] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Write ``markdown_summary(results, ...)`` to ``path`` as UTF-8; return the text."""
    text = markdown_summary(
        results, rundir_path=rundir_path, title=title, events=events, notes=notes
    )
    Path(path).write_text(text, encoding="utf-8")
    return text
