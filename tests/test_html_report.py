"""HTML report, loaded in a real headless Chromium: rows, filtering, sorting, timeline, links."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import html as lxml_html

from atex_ci.model import Result, Status
from atex_ci.report.html import write_html
from atex_ci.report.summary import final_results
from atex_ci.rundir import RunDir

from .reportutil import hostile_two_platform_run, write_output

# Flags that keep Chromium off the network and quick to start in a container.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
]


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium with ``args``; return its stdout."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("Debian's chromium is needed for the HTML tests: apt-get install -y chromium")
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


EVENTS = [
    {"time": "2026-01-01T00:00:00+00:00", "event": "machine_ready", "machine": "fedora-41-m1"},
    {"time": "2026-01-01T00:00:01+00:00", "event": "test_started", "machine": "fedora-41-m1",
     "test": "/tests/x"},
    {"time": "2026-01-01T00:00:03+00:00", "event": "test_finished", "machine": "fedora-41-m1",
     "test": "/tests/x", "status": "pass"},
    {"time": "2026-01-01T00:00:05+00:00", "event": "test_started", "machine": "fedora-41-m1",
     "test": "/escred"},
    {"time": "2026-01-01T00:00:09+00:00", "event": "test_finished", "machine": "fedora-41-m1",
     "test": "/escred", "status": "fail"},
    {"time": "2026-01-01T00:00:00.500+00:00", "event": "machine_ready",
     "machine": "centos-10-m1"},
    {"time": "2026-01-01T00:00:02+00:00", "event": "test_started", "machine": "centos-10-m1",
     "test": "/tests/slow"},
    {"time": "2026-01-01T00:00:08+00:00", "event": "test_finished", "machine": "centos-10-m1",
     "test": "/tests/slow", "status": "error"},
    {"time": "2026-01-01T00:00:10+00:00", "event": "machine_released",
     "machine": "centos-10-m1"},
]  # fmt: skip


def build(tmp_path: Path) -> tuple[Path, list[Result]]:
    run = RunDir.create(tmp_path / "run")
    results = hostile_two_platform_run()
    results.append(
        Result(
            test="/tests/<script>alert(1)</script>",
            status=Status.FAIL,
            platform="fedora-41",
            note="<img src=x onerror=alert(2)>",
        )
    )
    rel = write_output(run.path, "fedora-41", "/tests/x", b"hello\n")
    results[0].files = [rel]
    report = tmp_path / "out" / "report.html"
    report.parent.mkdir()
    write_html(results, report, rundir_path=run.path, events=EVENTS, title="CI <run>")
    return report, results


def visible_rows(dom: str) -> list[lxml_html.HtmlElement]:
    tree = lxml_html.fromstring(dom)
    return [
        row for row in tree.xpath('//table[@id="results"]/tbody/tr') if "hidden" not in row.attrib
    ]


def test_rendered_table_timeline_and_links(tmp_path: Path) -> None:
    report, results = build(tmp_path)
    source = report.read_text()
    # Self-contained: nothing to fetch (the SVG namespace is a name, not a request).
    assert "src=" not in source.replace("&lt;img src=x", "")  # the escaped note is text
    assert "http://" not in source.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in source

    dom = chromium(tmp_path, "--dump-dom", report.as_uri())
    tree = lxml_html.fromstring(dom)
    rows = visible_rows(dom)
    assert len(rows) == len(final_results(results))
    # The script ran: it counted the rows.
    assert (
        tree.get_element_by_id("shown").text_content()
        == f"{len(rows)} of {len(rows)} results shown"
    )
    # Hostile names are text, never markup: the page has its one script and no img.
    assert len(tree.xpath("//script")) == 1
    assert not tree.xpath("//img")
    names = [row.xpath("./td")[1].text_content() for row in rows]
    assert "/tests/<script>alert(1)</script>" in names
    assert "/esc\\x1b[31mred" in names and "/escred" in names
    # One bar per finished test on each machine; idle gaps between them.
    bars = tree.xpath('//svg[@id="timeline-svg"]//*[local-name()="rect"][@class="bar"]')
    assert [(b.get("data-test"), b.get("data-status")) for b in bars] == [
        ("/tests/x", "pass"),
        ("/escred", "fail"),
        ("/tests/slow", "error"),
    ]
    first_end = float(bars[0].get("x")) + float(bars[0].get("width"))
    assert first_end < float(bars[1].get("x"))  # the machine sat idle from 3 s to 5 s
    # The artifact link is relative to the report and points at the file.
    link = rows[0].xpath(".//a")[0]
    assert (report.parent / link.get("href")).resolve() == (
        tmp_path / "run" / "artifacts" / "fedora-41/tests/x/1/output.txt"
    )


def test_filter_and_sort_from_the_address_and_screenshot(tmp_path: Path) -> None:
    report, results = build(tmp_path)
    url = report.as_uri() + "#status=fail&sort=-duration"
    dom = chromium(tmp_path, "--dump-dom", url)
    rows = visible_rows(dom)
    expected = [r for r in final_results(results) if r.status is Status.FAIL]
    assert len(rows) == len(expected)
    assert all(row.get("data-status") == "fail" for row in rows)
    # Sorted by duration, longest first: /tests/x/second has none of its own (-1) and
    # sorts after every failure with a duration.
    durations = [float(row.xpath("./td")[4].get("data-sort")) for row in rows]
    assert durations == sorted(durations, reverse=True)

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", url)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_empty_run_is_a_valid_page(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    write_html([], report)
    tree = lxml_html.fromstring(report.read_text())
    assert "No test results" in tree.text_content()
    assert "No timeline" in tree.text_content()


def test_huge_note_and_many_files_stay_capped(tmp_path: Path) -> None:
    result = Result(
        test="/tests/huge",
        status=Status.FAIL,
        note="N" * (50 * 1024 * 1024),
        files=[f"default/tests/huge/1/f{n}" for n in range(5000)],
    )
    report = tmp_path / "report.html"
    write_html([result], report, rundir_path=tmp_path)
    assert report.stat().st_size < 64 * 1024
    text = lxml_html.fromstring(report.read_text()).text_content()
    assert "characters left out" in text and "and 4980 more" in text
