"""Each command imports what it needs: a cycle of reserve, run and release pays
the interpreter start three times, so the cheap commands stay cheap
(benchmarks/cycle.py measures it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("asyncssh", "fmf", "jsonschema", "requests", "ruamel.yaml", "importlib.metadata")


def imported_by(*args: str, cwd: Path) -> set[str]:
    """Top-level modules among HEAVY that ``atex-ci ARGS`` imported (``-X importtime``)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "atex_ci", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "atex_ci.cli" in names  # the probe itself works
    return {name for name in HEAVY if name in names}


def test_reserve_and_release_of_local_slots_import_neither_ssh_nor_fmf(tmp_path: Path):
    run = tmp_path / "run"
    assert imported_by("reserve", "-d", str(run), "--local", "2", cwd=tmp_path) == set()
    assert json.loads((run / "machines.json").read_text())  # it did reserve
    assert imported_by("release", "-d", str(run), cwd=tmp_path) == set()
    states = {m["state"] for m in json.loads((run / "machines.json").read_text())["machines"]}
    assert states == {"released"}


LOOKUPS = """
import ctypes.util, json, sys
calls = []
for name in ("_findLib_gcc", "_findSoname_ldconfig", "find_library"):
    original = getattr(ctypes.util, name)
    def spy(lib, _name=name, _original=original):
        calls.append([_name, lib])
        return _original(lib)
    setattr(ctypes.util, name, spy)
if sys.argv[1] == "plain":
    import asyncssh
else:
    from atex_ci.transport.asyncssh_import import load_asyncssh
    load_asyncssh()
from asyncssh.crypto import pq
print(json.dumps({
    "calls": calls,
    "oqs": pq._oqs_lib,
    "sntrup": pq.sntrup_available,
    "mlkem": pq.mlkem_available,
    "find_library": ctypes.util.find_library.__name__,
}))
"""


def asyncssh_import(how: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", LOOKUPS, how], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_asyncssh_is_imported_without_the_gcc_probe_and_finds_the_same_libraries():
    plain, ours = asyncssh_import("plain"), asyncssh_import("ours")
    # Same post-quantum key exchanges on offer as with a plain import.
    assert (ours["oqs"], ours["sntrup"], ours["mlkem"]) == (
        plain["oqs"],
        plain["sntrup"],
        plain["mlkem"],
    )
    calls = ours["calls"]
    assert isinstance(calls, list)
    # liboqs was looked for in the dynamic loader's cache, and never with gcc.
    assert ["_findSoname_ldconfig", "oqs"] in calls
    assert not [call for call in calls if call[0] == "_findLib_gcc" and "oqs" in call[1]]
    # ctypes is as it was once asyncssh is imported.
    assert ours["find_library"] == "spy"
