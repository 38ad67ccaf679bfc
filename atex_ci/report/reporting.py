"""``atex-ci report`` as an API: read a run directory once, write every report from it.

This module owns what the report command does with a run directory: which
results and events it reads (damaged lines skipped and counted), what it
says about the run's state (an interrupted run is partial), where each
report goes by default, and the warnings it hands back for stderr (a few
lines, each capped, whatever the run directory holds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..gating import FailOn, Judgement, judge, load_baseline, load_known_failures
from ..rundir import RESULTS_JSONL, RunDir
from .github import github_report
from .html import write_html
from .junit import write_junit
from .markdown import write_markdown
from .text import cap_line, display_text

# stderr is for people: a few lines, each one line.
MAX_WARNINGS = 10
WARNING_MAX_CHARS = 300

# run.json states after which the results are not the whole run.
PARTIAL_STATES = {"running": "is still running or crashed", "interrupted": "was interrupted",
                  "crashed": "crashed"}  # fmt: skip


@dataclass
class ReportOutcome:
    """What ``report_run`` did: files written, warnings and annotation lines to print."""

    written: list[tuple[str, Path]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    annotations: list[str] = field(default_factory=list)
    # 1 when a failure counts under ``fail_on``; 0 when not gating (the reports were written).
    exit_code: int = 0


def capped_lines(lines: list[str]) -> list[str]:
    """At most ``MAX_WARNINGS`` lines for stderr, each one line of at most ``WARNING_MAX_CHARS``."""
    shown = [cap_line(display_text(line), WARNING_MAX_CHARS) for line in lines[:MAX_WARNINGS]]
    if len(lines) > MAX_WARNINGS:
        shown.append(f"and {len(lines) - MAX_WARNINGS} more")
    return shown


def report_run(
    run_dir: Path,
    *,
    junit: Path | None = None,
    markdown: Path | None = None,
    html: Path | None = None,
    github: bool = False,
    subresults: str = "testcases",
    title: str | None = None,
    environ: dict[str, str] | None = None,
    baseline: Path | None = None,
    known_failures: Path | None = None,
    fail_on: FailOn | None = None,
) -> ReportOutcome:
    """Write the reports of the run directory ``run_dir``.

    JUnit goes to ``junit`` (default RUN/junit.xml), Markdown to ``markdown``
    (default RUN/summary.md), HTML to ``html`` when given. With ``github``,
    the GitHub step summary and outputs are written and the annotation lines
    are returned for stdout. With ``baseline`` (an earlier run directory) or
    ``known_failures`` (a YAML file, see ``gating``), each failure is judged
    and the reports show it; ``fail_on`` (default ``new`` with either of
    them) sets ``exit_code``. Raises
    ConfigError when ``run_dir`` or ``baseline`` is not a run directory, the
    known-failures file is bad, or a report cannot be written.
    """
    rundir = RunDir.open(run_dir)
    results, problems = rundir.read_results_checked()
    judgement: Judgement | None = None
    if baseline is not None or known_failures is not None:
        fail_on = fail_on or FailOn.NEW  # a baseline or a waiver list is given to gate on
    if fail_on is not None:
        judgement = judge(
            results,
            baseline=load_baseline(baseline) if baseline is not None else None,
            known=load_known_failures(known_failures) if known_failures is not None else (),
        )
    events = rundir.read_events()
    outcome = ReportOutcome()
    notes: list[str] = []
    if problems:
        notes.append(
            f"{len(problems)} damaged line(s) in {RESULTS_JSONL} were skipped; first: {problems[0]}"
        )
        outcome.warnings.append(
            f"skipped {len(problems)} damaged line(s) in {rundir.path / RESULTS_JSONL}"
        )
        outcome.warnings += capped_lines(problems)
    try:
        state = rundir.read_run().get("state")
    except (OSError, ValueError):
        state = None
    if isinstance(state, str) and state in PARTIAL_STATES:
        notes.append(
            f"The run {PARTIAL_STATES[state]} (state {state!r}): these results may be partial."
        )
        outcome.warnings.append(f"the run {PARTIAL_STATES[state]}; the reports may be partial")
    junit = junit or rundir.path / "junit.xml"
    markdown = markdown or rundir.path / "summary.md"
    title_text = title or "atex-ci results"
    try:
        write_junit(
            results, junit, rundir_path=rundir.path, subresults=subresults, judgement=judgement
        )
        outcome.written.append(("JUnit XML", junit))
        text = write_markdown(
            results, markdown, rundir_path=rundir.path, title=title_text, events=events,
            notes=notes, judgement=judgement,
        )  # fmt: skip
        outcome.written.append(("Markdown summary", markdown))
        if html is not None:
            write_html(
                results, html, rundir_path=rundir.path, events=events, title=title_text,
                notes=notes, judgement=judgement,
            )  # fmt: skip
            outcome.written.append(("HTML report", html))
        if github:
            env = dict(os.environ) if environ is None else environ
            fmf = rundir.read_run().get("fmf")
            root = fmf.get("root") if isinstance(fmf, dict) else None
            outcome.annotations = github_report(
                results,
                text,
                junit=junit,
                html=html,
                fmf_root=Path(root) if isinstance(root, str) else None,
                environ=env,
                judgement=judgement,
            )
            for what, key in (("GitHub step summary", "GITHUB_STEP_SUMMARY"),
                              ("GitHub step outputs", "GITHUB_OUTPUT")):  # fmt: skip
                if env.get(key):
                    outcome.written.append((what, Path(env[key])))
    except OSError as exc:
        where = exc.filename or junit
        raise ConfigError(f"cannot write the report {where}: {exc.strerror or exc}") from None
    if judgement is not None and fail_on is not None:
        outcome.exit_code = judgement.exit_code(fail_on)
    return outcome
