"""Test frameworks (tmt's ``framework`` key) as strategies: how a test's command
is run, what it finds in its environment, and where its own verdict comes from.

``shell`` (tmt's default) judges by the exit code; ``beakerlib`` by the
journal's TestResults file. A new framework is a subclass registered in
FRAMEWORKS; the executor only calls these four methods.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..model import Test

#: What tmt's shell framework runs before a test's command (checked against
#: tmt 1.78): a failing command or pipeline stage fails the test.
SHELL_FRAMEWORK_OPTIONS = "set -eo pipefail"

#: Bytes of beakerlib's TestResults file read for the verdict.
MAX_TEST_RESULTS_FILE = 1024 * 1024

#: What every beakerlib test sources (beakerlib's install path), and the
#: package that provides it: tmt requires that package for a beakerlib test.
BEAKERLIB_SH = "/usr/share/beakerlib/beakerlib.sh"
BEAKERLIB_PACKAGE = "beakerlib"


class Framework:
    """The shell framework; the base of the others."""

    name = "shell"

    def command(self, test: Test) -> str:
        """The command the wrapper runs with ``bash -c``."""
        return f"{SHELL_FRAMEWORK_OPTIONS}; {test.test}"

    def environment(self, test: Test, *, data_dir: str, bin_dir: str) -> dict[str, str]:
        """Variables the framework needs on top of tmt's (``data_dir`` is
        TMT_TEST_DATA, ``bin_dir`` holds the shims)."""
        return {}

    def requirement(self) -> tuple[str, str] | None:
        """``(file, package)``: a file the framework needs on the machine and
        the package to install when it is missing; None if it needs nothing."""
        return None

    def own_result(self, artdir: Path) -> dict[str, Any] | None:
        """The test's own result from what it left in its artifact directory
        (a result object as on the control stream), or None to judge by the
        results it reported and its exit code. Called once the test has ended
        normally."""
        return None


class BeakerlibFramework(Framework):
    """tmt's beakerlib framework: the journal's verdict is the test's own result."""

    name = "beakerlib"

    def command(self, test: Test) -> str:
        return test.test

    def environment(self, test: Test, *, data_dir: str, bin_dir: str) -> dict[str, str]:
        return {
            # In TMT_TEST_DATA, so the journal and TestResults are collected.
            "BEAKERLIB_DIR": data_dir,
            "BEAKERLIB_COMMAND_SUBMIT_LOG": f"{bin_dir}/tmt-file-submit",
            # Called by every rlPhaseEnd (only when TESTID is set).
            "BEAKERLIB_COMMAND_REPORT_RESULT": f"{bin_dir}/rhts-report-result",
            "TESTID": str(test.serial_number),
        }

    def requirement(self) -> tuple[str, str] | None:
        return BEAKERLIB_SH, BEAKERLIB_PACKAGE

    def own_result(self, artdir: Path) -> dict[str, Any] | None:
        """Judged as tmt does: TESTRESULT_RESULT_STRING once TESTRESULT_STATE is complete."""
        try:
            with open(artdir / "data" / "TestResults", "rb") as f:
                # A few hundred bytes in practice; the test wrote it, so read a bounded part.
                text = f.read(MAX_TEST_RESULTS_FILE).decode(errors="replace")
        except OSError:
            return {"status": "error", "note": "beakerlib: no TestResults file (no rlJournalEnd?)"}
        result = re.search(r"TESTRESULT_RESULT_STRING=(.*)", text)
        state = re.search(r'TESTRESULT_STATE="?(\w+)"?', text)
        if result is None or state is None:
            return {"status": "error", "note": "beakerlib: result or state missing in TestResults"}
        if state.group(1) != "complete":
            return {"status": "error", "note": f"beakerlib: state {state.group(1)!r}"}
        return {"status": result.group(1).strip().strip('"').lower()}


FRAMEWORKS: dict[str, Framework] = {"shell": Framework(), "beakerlib": BeakerlibFramework()}


def framework_for(test: Test) -> Framework:
    """The test's framework (discovery has already refused unknown names)."""
    return FRAMEWORKS.get(test.framework, FRAMEWORKS["shell"])


__all__ = [
    "BEAKERLIB_PACKAGE",
    "BEAKERLIB_SH",
    "FRAMEWORKS",
    "SHELL_FRAMEWORK_OPTIONS",
    "BeakerlibFramework",
    "Framework",
    "framework_for",
]
