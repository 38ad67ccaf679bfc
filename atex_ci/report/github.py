"""GitHub Actions integration: job summary, step outputs and ``::error`` annotations.

This module owns what GitHub reads from a step:

* the Markdown summary appended to the file named by ``GITHUB_STEP_SUMMARY``;
* step outputs (``total``, ``passed``, ``failed``, ``errors``, ``skipped``,
  ``flaky``, ``junit``, ``html``) appended to ``GITHUB_OUTPUT``, each value
  in the multi-line form with a random delimiter when it holds a line break;
* at most ``MAX_ANNOTATIONS`` ``::error`` workflow commands on stdout, most
  important first (test failures, then test errors, infrastructure errors
  last), with ``file`` and ``line`` of the test's fmf source when the fmf
  tree is at hand, escaped as the workflow-command syntax requires (``%``,
  CR and LF in the message; also ``:`` and ``,`` in properties), with
  mentions and issue references broken like in the Markdown summary.

Counting and ordering come from ``summary.py`` and ``markdown.py``; names
are spelled by ``text.display_name`` like in every other report.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..gating import Judgement
from ..model import Result, Status
from .markdown import failure_order, group_tests, neutralise_references
from .summary import final_results, flaky_attempts, totals
from .text import cap_line, cap_middle, display_name, display_text

# GitHub shows at most 10 error annotations per step; more are dropped.
MAX_ANNOTATIONS = 10
# An annotation's message is shown in a small box on the job page.
ANNOTATION_MAX_CHARS = 1000


def escape_data(text: str) -> str:
    """The message part of a workflow command: ``%``, CR and LF escaped."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property value of a workflow command: as data, plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True)
class Annotation:
    title: str
    message: str
    file: str | None = None
    line: int | None = None

    def command(self) -> str:
        """The ``::error ...::message`` line."""
        props = []
        if self.file:
            props.append(f"file={escape_property(self.file)}")
            if self.line:
                props.append(f"line={self.line}")
        props.append(f"title={escape_property(self.title)}")
        return f"::error {','.join(props)}::{escape_data(self.message)}"


def outputs(
    results: Sequence[Result], junit: Path | None = None, html: Path | None = None
) -> dict[str, str]:
    """The step outputs for ``results`` (final attempts; every result counts, like JUnit)."""
    final = final_results(results)
    counts = totals(final)
    passed = counts[Status.PASS] + counts[Status.WARN] + counts[Status.INFO]
    return {
        "total": str(counts["total"]),
        "passed": str(passed),
        "failed": str(counts[Status.FAIL]),
        "errors": str(counts[Status.ERROR]),
        "skipped": str(counts[Status.SKIP]),
        "flaky": str(len(flaky_attempts(results))),
        "junit": str(junit) if junit else "",
        "html": str(html) if html else "",
    }


def write_outputs(path: Path, values: Mapping[str, str]) -> None:
    """Append ``values`` to the GITHUB_OUTPUT file ``path``."""
    lines = []
    for key, value in values.items():
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4()}"
            lines.append(f"{key}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            lines.append(f"{key}={value}\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(lines))


def append_summary(path: Path, markdown: str) -> None:
    """Append the Markdown summary to the GITHUB_STEP_SUMMARY file ``path``."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(markdown)


def fmf_location(fmf_root: Path, test_name: str) -> tuple[Path, int] | None:
    """The file defining ``test_name`` in the fmf tree at ``fmf_root`` and its line.

    The line is that of the node's key (``/name:``) in the file, or 1 when the
    file is the node itself (``name.fmf``, ``name/main.fmf``). None when the
    tree or the node cannot be read: an annotation without a place is still
    an annotation.
    """
    try:
        import fmf

        node = fmf.Tree(str(fmf_root)).find(test_name)
        if node is None or not node.sources:
            return None
        source = Path(node.sources[-1])
        last = test_name.rstrip("/").rsplit("/", 1)[-1]
        if source.stem == last or (source.name == "main.fmf" and source.parent.name == last):
            return source, 1
        pattern = re.compile(rf"""^\s*["']?/?{re.escape(last)}["']?\s*:""")
        with open(source, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                if pattern.match(line):
                    return source, number
        return source, 1
    except Exception:  # any failure to read the tree only loses the place
        return None


def _relative(path: Path, bases: Sequence[Path]) -> str:
    for base in bases:
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except (ValueError, OSError):
            continue
    return str(path)


def make_annotations(
    results: Sequence[Result],
    fmf_root: Path | None = None,
    workspace: Path | None = None,
    judgement: Judgement | None = None,
) -> tuple[list[Annotation], int]:
    """Up to ``MAX_ANNOTATIONS`` annotations for failed tests, and how many were left out.

    Paths are relative to ``workspace`` (GITHUB_WORKSPACE) when the source is
    inside it, else to ``fmf_root``. With a ``judgement`` new failures come
    first and each message names its classification.
    """
    failed = failure_order(group_tests(final_results(results)), judgement)
    chosen, rest = failed[:MAX_ANNOTATIONS], len(failed) - MAX_ANNOTATIONS
    found: list[Annotation] = []
    bases = [b for b in (workspace, fmf_root) if b is not None]
    for test in chosen:
        main = test.main
        status = f"{main.status} ({main.reason})" if main.reason else str(main.status)
        parts = [f"{status} on {display_name(main.platform)}"]
        classification = judgement.classification(main) if judgement else None
        parts[0] += f" ({classification} failure)" if classification else ""
        if main.note:
            parts.append(display_text(cap_middle(main.note, ANNOTATION_MAX_CHARS)))
        failing = [s for s in test.subs if s.status.is_failure]
        for sub in failing[:5]:
            note = f": {cap_line(display_text(cap_middle(sub.note, 400)), 200)}" if sub.note else ""
            parts.append(f"sub-result {display_name(sub.name or '')} {sub.status}{note}")
        if len(failing) > 5:
            parts.append(f"and {len(failing) - 5} more failed sub-results")
        message = cap_middle("\n".join(parts), ANNOTATION_MAX_CHARS)
        where = fmf_location(fmf_root, main.test) if fmf_root is not None else None
        title = f"{display_name(main.test)} ({display_name(main.platform)})"
        found.append(
            Annotation(
                # Shown as plain text, but copied into comments and chat: no mentions.
                title=neutralise_references(title),
                message=neutralise_references(message),
                file=_relative(where[0], bases) if where else None,
                line=where[1] if where else None,
            )
        )
    return found, max(0, rest)


def github_report(
    results: Sequence[Result],
    markdown: str,
    *,
    junit: Path | None = None,
    html: Path | None = None,
    fmf_root: Path | None = None,
    environ: Mapping[str, str] = os.environ,
    judgement: Judgement | None = None,
) -> list[str]:
    """Do what a GitHub step reports: summary, outputs; return the annotation lines to print.

    The summary and outputs go to the files named by ``GITHUB_STEP_SUMMARY``
    and ``GITHUB_OUTPUT`` in ``environ`` (skipped when unset). Raises OSError
    when a file cannot be written.
    """
    found, left_out = make_annotations(
        results,
        fmf_root=fmf_root,
        workspace=Path(environ["GITHUB_WORKSPACE"]) if environ.get("GITHUB_WORKSPACE") else None,
        judgement=judgement,
    )
    if left_out:
        markdown += (
            f"\n_{left_out} more failed tests have no annotation "
            f"(GitHub shows {MAX_ANNOTATIONS}); they are listed above._\n"
        )
    if environ.get("GITHUB_STEP_SUMMARY"):
        append_summary(Path(environ["GITHUB_STEP_SUMMARY"]), markdown)
    if environ.get("GITHUB_OUTPUT"):
        values = outputs(results, junit, html)
        if judgement is not None:
            values.update(judgement.counts())
        write_outputs(Path(environ["GITHUB_OUTPUT"]), values)
    return [a.command() for a in found]
