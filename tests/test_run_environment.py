"""What a test on a local slot finds in its environment: a clean, documented set
(docs/test-limits.md), never atex-ci's own secrets."""

from __future__ import annotations

import os
import subprocess
import sys

from .treeutil import make_tree, own_results


def test_local_slot_environment_is_an_allow_list(tmp_path):
    tree = make_tree(tmp_path / "tree", {"env": {"test": "env -0 > $TMT_TEST_DATA/env"}})
    run = tmp_path / "run"
    env = {
        **os.environ,
        "GITHUB_TOKEN": "secret-token-value",
        "AWS_SECRET_ACCESS_KEY": "secret-key-value",
        "LC_MESSAGES": "C",
        "HOME": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "atex_ci", "run", "-d", str(run), "--fmf-root", str(tree)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert own_results(run)["/tests/env"]["status"] == "pass"
    data = run / "artifacts" / "default" / "plan" / "tests" / "env" / "1" / "data" / "env"
    seen = dict(item.split("=", 1) for item in data.read_text().split("\0") if item)
    assert "secret" not in data.read_text()
    assert "GITHUB_TOKEN" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen
    # What makes a shell work is passed on; tmt's variables are set.
    assert seen["HOME"] == str(tmp_path)
    assert seen["LC_MESSAGES"] == "C"
    assert seen["PATH"].endswith(os.environ["PATH"])
    assert seen["TMT_TEST_NAME"] == "/tests/env"
    assert seen["ATEX_TEST_CONTROL"] == "3"
    # Only the allow-list, the tmt/atex variables and what bash itself sets.
    own = {"PWD", "SHLVL", "_", "OLDPWD"}
    extra = {
        key
        for key in seen
        if not key.startswith(("TMT_", "ATEX_", "LC_", "BEAKERLIB", "RSTRNT_")) and key not in own
    }
    assert extra <= {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TERM",
        "LANG",
        "TZ",
        "TMPDIR",
        "REBOOTCOUNT",
    }, extra
