"""The examples in the docs keep working."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

from .treeutil import DEMO, REPO


def test_custom_runner_example(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "custom_runner.py"),
            str(DEMO),
            str(tmp_path / "r"),
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # the demo has a failing test
    root = ET.fromstring((tmp_path / "r" / "junit.xml").read_bytes())
    assert root.get("tests") == "14"
    assert "fail /tests/broken/fails" in proc.stderr
    assert not (tmp_path / "r" / "work" / "local-1").exists()  # slots released
