"""What goes onto a machine before tests run, and how files come back from it.

The fmf tree and the remote scripts (wrapper and shims) travel as tar
archives, unpacked by plain ``tar`` on the machine; each test gets a scratch
directory with its metadata staged in the same archive, so starting a test
needs no extra process. Files a test leaves behind come back as a tar stream
and only regular files and directories are kept.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..model import Test
from ..rundir import safe_component
from .control import ControlError, safe_join

REMOTE_DIR = Path(__file__).parent / "remote"


def build_tree_tar(root: Path, extras: Mapping[str, str | Path] | None = None) -> bytes:
    """The fmf tree as an uncompressed tar (without .git), uploaded once per machine.

    ``extras`` maps a path inside the uploaded tree to a directory on the
    controller shipped there too: remote trees and beakerlib libraries
    (``Plan.trees``), under ``.atex-ci/`` so they never mix with the tree's
    own files.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(root, arcname=".", filter=_skip_vcs)
        for arcname, directory in sorted((extras or {}).items()):
            tar.add(directory, arcname=f"./{arcname.strip('/')}", filter=_skip_vcs)
    return buf.getvalue()


def test_dir(test: Test) -> str:
    """The test's scratch directory on the machine, relative to the work dir."""
    plan = safe_component(test.plan.strip("/").replace("/", "-"))
    name = safe_component(test.name.strip("/").replace("/", "-"))
    return f"tests/{plan}/{test.serial_number}-{name}"


def test_metadata(test: Test) -> bytes:
    """TMT_TEST_METADATA: the test's fmf node (JSON, which is YAML too)."""
    data = dict(test.data)
    data.setdefault("name", test.name)
    return json.dumps(data, indent=2, default=str).encode() + b"\n"


def build_remote_tar(tests: Iterable[Test] = ()) -> bytes:
    """The wrapper and the tmt shims, plus a scratch directory with its metadata
    for each of ``tests``, so that starting a test costs no extra process."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(REMOTE_DIR.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = _tar_info(f"remote/{path.relative_to(REMOTE_DIR)}", 0o755)
                info.size = path.stat().st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)
        for test in tests:
            info = _tar_info(f"{test_dir(test)}/data", 0o755, tarfile.DIRTYPE)
            tar.addfile(info)
            metadata = test_metadata(test)
            info = _tar_info(f"{test_dir(test)}/metadata.yaml", 0o644)
            info.size = len(metadata)
            tar.addfile(info, io.BytesIO(metadata))
    return buf.getvalue()


def _tar_info(name: str, mode: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = int(time.time())
    return info


def _skip_vcs(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if info.name.split("/")[-1] in (".git", ".hg", ".svn", "__pycache__"):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


#: The name under which the wrapper attaches the test's TMT_TEST_DATA as one
#: tar archive; the executor unpacks it into data/ and drops it.
TEST_DATA_ARCHIVE = ".atex-test-data.tar"


def extract_regular_files(archive: bytes | Path, dest: Path) -> list[str]:
    """Unpack regular files and directories only; returns the entries skipped.

    ``archive`` is the tar data or a tar file. Links, devices and any name
    that would land outside ``dest`` are skipped, so a symlink in
    TMT_TEST_DATA pointing at /etc never leaks anything. Raises OSError if
    ``dest`` cannot be written.
    """
    skipped: list[str] = []
    dest.mkdir(parents=True, exist_ok=True)
    try:
        stream = io.BytesIO(archive) if isinstance(archive, bytes) else None
        path = None if isinstance(archive, bytes) else archive
        with tarfile.open(path, mode="r:", fileobj=stream) as tar:
            for member in tar:
                name = member.name
                if name in (".", "./"):
                    continue
                if not (member.isfile() or member.isdir()):
                    skipped.append(name)
                    continue
                try:
                    target = safe_join(dest, name)
                except ControlError:
                    skipped.append(name)
                    continue
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    while block := source.read(1024 * 1024):
                        out.write(block)
    except tarfile.TarError as exc:
        skipped.append(f"(damaged archive: {exc})")
    return skipped
