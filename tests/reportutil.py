"""Helpers shared by the report tests: output files, schema validation, consumer read-back."""

from __future__ import annotations

import xml.dom.minidom
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import junitparser
from lxml import etree

from atex_ci.model import Reason, Result, Status

XSD = Path(__file__).parent / "data" / "junit" / "junit-10.xsd"


def write_output(run: Path, platform: str, test: str, data: bytes, attempt: int = 1) -> str:
    """Create RUN/artifacts/<platform>/<test>/<attempt>/output.txt; return its relative path."""
    relative = f"{platform}/{test.strip('/')}/{attempt}/output.txt"
    path = run / "artifacts" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return relative


@cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


def validate(document: str | bytes) -> ET.Element:
    """Check ``document`` against junit-10.xsd and two strict parsers; return its root."""
    data = document.encode("utf-8") if isinstance(document, str) else document
    schema = _schema()
    tree = etree.fromstring(data, etree.XMLParser(huge_tree=False))
    if not schema.validate(tree):
        raise AssertionError(f"not valid against junit-10.xsd: {schema.error_log}")
    xml.dom.minidom.parseString(data)
    return ET.fromstring(data)


def consumer_counts(path: Path) -> dict[str, int]:
    """Counts as a consumer computes them: junitparser reads the file and walks its cases."""
    xml_file = junitparser.JUnitXml.fromfile(str(path))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    keys: set[tuple[str, str]] = set()
    for suite in xml_file:
        for case in suite:
            counts["tests"] += 1
            keys.add((case.classname, case.name))
            for outcome in case.result:
                if isinstance(outcome, junitparser.Failure):
                    counts["failures"] += 1
                elif isinstance(outcome, junitparser.Error):
                    counts["errors"] += 1
                elif isinstance(outcome, junitparser.Skipped):
                    counts["skipped"] += 1
    # A consumer keying by (classname, name) sees every testcase.
    assert len(keys) == counts["tests"], "(classname, name) is not unique"
    return counts


def cases(root: ET.Element) -> list[ET.Element]:
    return root.findall("./testsuite/testcase")


def hostile_two_platform_run() -> list[Result]:
    """Two platforms, sub-results, a flaky test and hostile names, as one results list."""
    results: list[Result] = []
    for platform in ("fedora-41", "centos-10"):
        common = {"platform": platform, "plan": "/plans/ci", "machine": f"{platform}-m1"}
        # Sub-results first: tmt-report-result reports them while the test
        # runs, and its own result comes when it ends (results.jsonl order).
        results += [
            Result(test="/tests/x", name="/first", status=Status.PASS, duration=1.5, **common),
            Result(test="/tests/x", name="/second", status=Status.FAIL, duration=1.5, **common),
            Result(test="/tests/x", status=Status.PASS, duration=1.5, **common),
            Result(test="/esc\x1b[31mred", status=Status.PASS, duration=0.1, **common),
            Result(test="/escred", status=Status.FAIL, note="real\nmulti-line", **common),
            Result(test="/tests/a: b, 100% sure", status=Status.SKIP, **common),
            Result(test="/tests/flaky", status=Status.FAIL, attempt=1, note="boom", **common),
            Result(test="/tests/flaky", status=Status.PASS, attempt=2, duration=2.0, **common),
            Result(
                test="/tests/slow",
                status=Status.ERROR,
                reason=Reason.TIMEOUT,
                duration=300.0,
                **common,
            ),
        ]
    # A failure on one platform only.
    results.append(
        Result(test="/tests/only-here", status=Status.FAIL, platform="fedora-41", plan="/plans/ci")
    )
    return results


@dataclass(frozen=True)
class MikepenzCase:
    """What mikepenz/action-junit-report (v6.4.2, the publisher in example.yml) shows."""

    title: str
    status: str  # success, failure or skipped
    retries: int


def mikepenz_cases(path: Path) -> list[MikepenzCase]:
    """Read ``path`` by mikepenz/action-junit-report v6.4.2's rules (src/testParser.ts).

    - Without a ``file`` attribute (on the testcase or its suite), the "file
      name" is the classname's text after its last ``.`` (the name when there
      is no classname), and the title is ``<file name>.<name>``, or the name
      alone when both are the same.
    - A testcase is a failure when it has a ``<failure>`` or ``<error>``,
      skipped with ``<skipped>``, else a success.
    - Its retries are its ``<flakyFailure>`` children; ``<flakyError>`` is not
      looked at.
    """
    cases: list[MikepenzCase] = []
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for case in suite.findall("testcase"):
            name = case.get("name", "")
            classname = case.get("classname") or name
            file_name = case.get("file") or suite.get("file") or classname.split(".")[-1]
            title = name if file_name == name else f"{file_name}.{name}"
            if case.find("failure") is not None or case.find("error") is not None:
                status = "failure"
            elif case.find("skipped") is not None:
                status = "skipped"
            else:
                status = "success"
            cases.append(MikepenzCase(title, status, len(case.findall("flakyFailure"))))
    return cases
