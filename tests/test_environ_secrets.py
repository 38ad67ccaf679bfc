"""environ_secrets: a secret leaves the environment block the kernel shows, nothing else does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Takes the secret, reports what it and a child see, then waits (stdin) so
#: that its /proc files can be looked at from outside while it lives.
_PROBE = """
import json, os, subprocess, sys
from atex_ci import environ_secrets
environ_secrets.take(["PROBE_SECRET", "PROBE_UNSET"])
child = subprocess.run(["env"], capture_output=True).stdout
print(json.dumps({
    "child": child.decode(errors="replace"),
    "get": environ_secrets.get("PROBE_SECRET"),
    "unset": environ_secrets.get("PROBE_UNSET"),
    "in_os_environ": "PROBE_SECRET" in os.environ,
}), flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_take_clears_the_secret_and_only_it():
    secret = "s3cr3t-value-42"
    env = {
        **os.environ,
        "PROBE_SECRET": secret,
        # The same text as the tail of another value, and as a name prefix: kept.
        "PROBE_OTHER": f"x{secret}",
        "PROBE_SECRET_NOT": "kept",
    }
    command = [sys.executable, "-c", _PROBE]
    if os.geteuid() == 0:  # as another user, so that "owned by root" says something
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd="/"
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        seen = json.loads(proc.stdout.readline())
        environ = Path(f"/proc/{proc.pid}/environ")  # setpriv execs: the same process
        # Not dumpable: its /proc files belong to root, whoever runs it.
        assert environ.stat().st_uid == 0
        if os.geteuid() == 0:
            block = environ.read_bytes().split(b"\0")
            assert f"PROBE_SECRET={secret}".encode() not in block
            assert f"PROBE_OTHER=x{secret}".encode() in block
            assert b"PROBE_SECRET_NOT=kept" in block
        else:
            with pytest.raises(PermissionError):
                environ.read_bytes()
        proc.stdin.close()
    assert proc.returncode == 0
    assert f"PROBE_SECRET={secret}" not in seen["child"]
    assert f"PROBE_OTHER=x{secret}" in seen["child"] and "PROBE_SECRET_NOT=kept" in seen["child"]
    assert (seen["get"], seen["unset"], seen["in_os_environ"]) == (secret, None, False)
