"""HTML report: one self-contained file to investigate a run in a browser.

This module owns the HTML page: totals per platform, a result table that
sorts (click a column header) and filters (free text and status; also from
the address, ``report.html#status=fail&q=network&sort=duration``), a
per-machine timeline drawn from events.jsonl (one bar per test, gaps are idle
time) and links to each result's artifacts, relative to the report's own
location so the run directory can be moved or downloaded as a whole.

Everything (styles, script, timeline) is inline: the page needs no network.
Every name and note is spelled by ``text.display_name``/``display_text`` and
then HTML-escaped; no test-provided string reaches the page as markup or
script. The file is streamed row by row, and notes and file lists are
capped, so its size grows with the number of results, not with their output.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from ..model import Result, Status, TestId
from ..rundir import ARTIFACTS, replacing
from .summary import (
    counted,
    final_results,
    flaky_attempts,
    format_duration,
    machine_usage,
    report_duration,
    totals,
)
from .text import cap_line, cap_middle, display_name, display_text

DEFAULT_TITLE = "atex-ci results"
# A note in a table cell: enough to recognise it; the full note is in results.jsonl.
NOTE_MAX_CHARS = 500
# Files linked from one row (a test may upload thousands).
MAX_LINKS = 20
# Timeline bars drawn (each is a few hundred bytes of SVG).
MAX_BARS = 50_000
TIMELINE_WIDTH = 1000
ROW_HEIGHT = 22
LABEL_WIDTH = 160

_STATUS_COLOURS = {
    "pass": "#2e7d32",
    "fail": "#c62828",
    "error": "#6a1b9a",
    "warn": "#ef6c00",
    "info": "#1565c0",
    "skip": "#757575",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}
table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.num{text-align:right}
.st{font-weight:bold;color:#fff;padding:0 .4em;border-radius:3px}
.pass{background:#2e7d32}.fail{background:#c62828}.error{background:#6a1b9a}
.warn{background:#ef6c00}.info{background:#1565c0}.skip{background:#757575}
.note{max-width:40em;white-space:pre-wrap;word-break:break-word}
.name{font-family:monospace;word-break:break-all}
#controls{margin:.5em 0}
#timeline{overflow-x:auto;border:1px solid #ccc}
.flaky{color:#ef6c00;font-weight:bold}
"""

_SCRIPT = """
(function () {
  var table = document.getElementById("results");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var text = document.getElementById("filter-text");
  var status = document.getElementById("filter-status");
  var shown = document.getElementById("shown");
  var sortState = {col: -1, dir: 1};
  function apply() {
    var q = text.value.toLowerCase(), s = status.value, n = 0;
    rows.forEach(function (row) {
      var ok = (!s || row.dataset.status === s) &&
               (!q || row.textContent.toLowerCase().indexOf(q) >= 0);
      row.hidden = !ok;
      if (ok) n++;
    });
    shown.textContent = n + " of " + rows.length + " results shown";
  }
  function sortBy(col, dir) {
    var th = table.tHead.rows[0].cells;
    var numeric = th[col].dataset.type === "num";
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.sort || a.cells[col].textContent;
      var y = b.cells[col].dataset.sort || b.cells[col].textContent;
      if (numeric) { x = parseFloat(x) || 0; y = parseFloat(y) || 0; }
      return x < y ? -dir : x > y ? dir : 0;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (var i = 0; i < th.length; i++) th[i].className = "";
    th[col].className = dir > 0 ? "sorted-asc" : "sorted-desc";
    sortState = {col: col, dir: dir};
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell, col) {
    cell.addEventListener("click", function () {
      sortBy(col, sortState.col === col ? -sortState.dir : 1);
    });
  });
  text.addEventListener("input", apply);
  status.addEventListener("change", apply);
  var params = new URLSearchParams(location.hash.slice(1));
  if (params.get("q")) text.value = params.get("q");
  if (params.get("status")) status.value = params.get("status");
  var key = params.get("sort");
  if (key) {
    var cells = table.tHead.rows[0].cells;
    for (var i = 0; i < cells.length; i++) {
      if (cells[i].dataset.key === key.replace(/^-/, "")) sortBy(i, key[0] === "-" ? -1 : 1);
    }
  }
  apply();
})();
"""

_COLUMNS = [
    ("status", "Status", "text"),
    ("test", "Test", "text"),
    ("platform", "Platform", "text"),
    ("plan", "Plan", "text"),
    ("duration", "Duration", "num"),
    ("machine", "Machine", "text"),
    ("attempt", "Attempt", "num"),
    ("note", "Note", "text"),
    ("artifacts", "Artifacts", "text"),
]


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _link(rundir_path: Path | None, out_dir: Path, relative: str) -> str | None:
    """A relative URL from the report to RUN/artifacts/``relative``, or None if it escapes."""
    if rundir_path is None or relative.startswith("/") or ".." in Path(relative).parts:
        return None
    target = Path(rundir_path).resolve() / ARTIFACTS / relative
    try:  # a name from undecodable bytes links to those bytes
        return quote(os.path.relpath(target, out_dir.resolve()), errors="surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no file name can hold
        return None


def _row(result: Result, own: Result | None, flaky: bool, rundir: Path | None, out: Path) -> str:
    status = str(result.status)
    duration = report_duration(result, own)
    note = display_text(cap_middle(result.note or "", NOTE_MAX_CHARS))
    links = []
    for relative in result.files[:MAX_LINKS]:
        url = _link(rundir, out, relative)
        label = _e(display_name(Path(relative).name))
        links.append(f'<a href="{_e(url)}">{label}</a>' if url else label)
    if len(result.files) > MAX_LINKS:
        links.append(f"and {len(result.files) - MAX_LINKS} more")
    reason = f" ({result.reason})" if result.reason else ""
    flaky_mark = ' <span class="flaky" title="failed on an earlier attempt">flaky</span>'
    cells = [
        f'<td data-sort="{_e(status)}"><span class="st {_e(status)}">{_e(status)}</span>'
        f"{_e(reason)}{flaky_mark if flaky else ''}</td>",
        f'<td class="name">{_e(display_name(result.full_name))}</td>',
        f"<td>{_e(display_name(result.platform))}</td>",
        f'<td class="name">{_e(display_name(result.plan))}</td>',
        f'<td class="num" data-sort="{duration if duration is not None else -1}">'
        f"{_e(format_duration(duration))}</td>",
        f"<td>{_e(display_name(result.machine or ''))}</td>",
        f'<td class="num">{result.attempt}</td>',
        f'<td class="note">{_e(note)}</td>',
        f"<td>{' '.join(links)}</td>",
    ]
    return f'<tr data-status="{_e(status)}">{"".join(cells)}</tr>\n'


def _totals(final: Sequence[Result]) -> str:
    platforms: dict[str, list[Result]] = {}
    for result in final:
        platforms.setdefault(result.platform, []).append(result)
    head = "".join(f"<th>{s}</th>" for s in Status)
    rows = []
    for platform, group in platforms.items():
        counts = totals(group)
        cells = "".join(f'<td class="num">{counts[s]}</td>' for s in Status)
        rows.append(
            f"<tr><td>{_e(display_name(platform))}</td>{cells}"
            f'<td class="num">{counts["total"]}</td></tr>'
        )
    return (
        f'<table id="totals"><caption>{_e(counted(final))}</caption>'
        f"<thead><tr><th>Platform</th>{head}<th>total</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _timeline(events: Sequence[dict[str, Any]]) -> str:
    usage, _origin = machine_usage(events)
    usage = [u for u in usage if u.tests or u.span > 0]
    if not usage:
        return "<p>No timeline: the run directory has no machine events.</p>"
    end = max(max(u.end for u in usage), 1e-9)
    scale = (TIMELINE_WIDTH - LABEL_WIDTH) / end
    height = ROW_HEIGHT * len(usage) + 20
    parts = [
        f'<svg id="timeline-svg" xmlns="http://www.w3.org/2000/svg" '
        f'width="{TIMELINE_WIDTH}" height="{height}">'
    ]
    bars = 0
    for row, entry in enumerate(usage):
        y = row * ROW_HEIGHT
        rate = entry.utilisation
        label = display_name(entry.machine)
        busy = f"{rate:.0%} busy" if rate is not None else ""
        parts.append(
            f'<g class="machine" data-machine="{_e(label)}">'
            f'<text x="2" y="{y + 15}" font-size="12">{_e(cap_line(label, 18))}</text>'
            f'<rect class="span" x="{LABEL_WIDTH + entry.begin * scale:.1f}" y="{y + 9}" '
            f'width="{max(entry.span * scale, 1):.1f}" height="2" fill="#bbb">'
            f"<title>{_e(label)}: {_e(busy)}, idle {_e(format_duration(entry.span - entry.busy))}"
            f"{_e('; ' + entry.note if entry.note else '')}</title></rect>"
        )
        for start, finish, test, status in entry.tests:
            if bars >= MAX_BARS:
                break
            bars += 1
            colour = _STATUS_COLOURS.get(status or "", "#999")
            parts.append(
                f'<rect class="bar" data-test="{_e(display_name(test))}" '
                f'data-status="{_e(status or "")}" x="{LABEL_WIDTH + start * scale:.1f}" '
                f'y="{y + 3}" width="{max((finish - start) * scale, 1):.1f}" '
                f'height="{ROW_HEIGHT - 6}" fill="{colour}">'
                f"<title>{_e(display_name(test))}: {_e(status or 'unfinished')}, "
                f"{_e(format_duration(finish - start))}</title></rect>"
            )
        parts.append("</g>")
    parts.append(
        f'<text x="{LABEL_WIDTH}" y="{height - 4}" font-size="11">0</text>'
        f'<text x="{TIMELINE_WIDTH - 60}" y="{height - 4}" font-size="11">'
        f"{_e(format_duration(end))}</text></svg>"
    )
    return "".join(parts)


def _write(
    out: IO[str],
    results: Sequence[Result],
    out_dir: Path,
    rundir_path: Path | None,
    events: Sequence[dict[str, Any]],
    title: str,
    notes: Sequence[str],
) -> None:
    final = final_results(results)
    flaky = flaky_attempts(results)
    own = {TestId.of_result(r): r for r in final if r.name is None}
    out.write(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{_e(display_name(title))}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{_e(display_name(title))}</h1>\n"
    )
    for note in notes[:10]:
        out.write(f'<p class="problem">{_e(display_text(cap_middle(note, 500)))}</p>\n')
    if not final:
        out.write(
            "<p><strong>No test results.</strong> No test ran, or the run stopped "
            "before any test finished.</p>\n"
        )
    out.write(_totals(final) + "\n")
    if flaky:
        out.write(f'<p class="flaky">Flaky tests: {len(flaky)}</p>\n')
    out.write('<h2>Machines</h2>\n<div id="timeline">' + _timeline(events) + "</div>\n")
    options = "".join(f'<option value="{s}">{s}</option>' for s in Status)
    out.write(
        '<h2>Results</h2>\n<div id="controls">'
        '<input id="filter-text" type="search" placeholder="Filter by any text" size="40"> '
        f'<select id="filter-status"><option value="">any status</option>{options}</select> '
        '<span id="shown"></span></div>\n<table id="results"><thead><tr>'
    )
    for key, label, kind in _COLUMNS:
        out.write(f'<th data-key="{key}" data-type="{kind}">{label}</th>')
    out.write("</tr></thead><tbody>\n")
    for result in final:
        identity = TestId.of_result(result)
        is_flaky = result.name is None and identity in flaky
        out.write(_row(result, own.get(identity), is_flaky, rundir_path, out_dir))
    out.write(f"</tbody></table>\n<script>{_SCRIPT}</script>\n</body></html>\n")


def write_html(
    results: Sequence[Result],
    path: Path,
    *,
    rundir_path: Path | None = None,
    events: Sequence[dict[str, Any]] = (),
    title: str = DEFAULT_TITLE,
    notes: Sequence[str] = (),
) -> None:
    """Write the HTML report of ``results`` to ``path`` (through a temporary file).

    ``events`` (``RunDir.read_events()``) feed the machine timeline; with
    ``rundir_path`` each result links to its files under RUN/artifacts.
    Raises OSError if the file cannot be written.
    """
    path = Path(path)
    with replacing(path, errors="replace") as out:
        _write(out, results, path.parent, rundir_path, events, title, notes)
