"""What goes onto a machine before tests run, and how files come back from it.

The fmf tree and the remote scripts (wrapper and shims) travel as tar
archives, unpacked by plain ``tar`` on the machine. A test's metadata travels
with the command that starts it, and the wrapper makes its scratch directory;
only metadata too large for a command line is staged in the remote archive
(see ``INLINE_METADATA_MAX``). Files a test leaves behind come back as a tar
stream and only regular files and directories are kept.
"""

from __future__ import annotations

import io
import json
import shlex
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..model import Test
from ..pathnames import bounded_label, flat_component
from ..rundir import LAYOUT, is_run_directory
from .control import ControlError, safe_join

REMOTE_DIR = Path(__file__).parent / "remote"


def build_tree_tar(root: Path, extras: Mapping[str, str | Path] | None = None) -> bytes:
    """The fmf tree as an uncompressed tar, uploaded once per machine.

    ``extras`` maps a path inside the uploaded tree to a directory on the
    controller shipped there too: remote trees and beakerlib libraries
    (``Plan.trees``), under ``.atex-ci/`` so they never mix with the tree's
    own files. Never uploaded: version control data, any atex-ci run
    directory (its keys, artifacts and results; wherever it is in the tree,
    whatever ``-d`` this run has) and virtual environments, which are large
    and useless on another machine.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(root, arcname=".", filter=_tree_filter(root, "."))
        for arcname, directory in sorted((extras or {}).items()):
            arc = f"./{arcname.strip('/')}"
            tar.add(directory, arcname=arc, filter=_tree_filter(Path(directory), arc))
    return buf.getvalue()


#: Never uploaded, by name: version control data and bytecode caches.
SKIPPED_NAMES = frozenset({".git", ".hg", ".svn", "__pycache__"})


def is_virtualenv(path: Path) -> bool:
    """Whether ``path`` is a Python virtual environment (PEP 405: pyvenv.cfg)."""
    return (path / "pyvenv.cfg").is_file()


def _tree_filter(
    source_root: Path, arc_root: str
) -> Callable[[tarfile.TarInfo], tarfile.TarInfo | None]:
    """The ``tarfile`` filter for a directory added as ``arc_root``."""
    root_is_run = is_run_directory(source_root)

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.name != arc_root:
            relative = info.name[len(arc_root) :].lstrip("/")
            name = relative.rsplit("/", 1)[-1]
            # A tree that is itself a run directory keeps its other files.
            if root_is_run and "/" not in relative and name in LAYOUT:
                return None
            if name in SKIPPED_NAMES:
                return None
            if info.isdir():
                source = source_root / relative
                if is_run_directory(source) or is_virtualenv(source):
                    return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    return keep


#: Bytes of a test's name kept in its scratch directory's name on the machine.
TEST_LABEL_MAX_BYTES = 100


def test_dir(test: Test) -> str:
    """The test's scratch directory on the machine, relative to the work dir."""
    # The serial number tells the tests of a plan apart; the name is only
    # there to be read, so it is cut short to keep the path well within
    # NAME_MAX (a 300-character name in short components is legal in fmf).
    name = bounded_label(test.name.strip("/").replace("/", "-"), TEST_LABEL_MAX_BYTES)
    return f"tests/{flat_component(test.plan)}/{test.serial_number}-{name}"


def test_metadata(test: Test) -> bytes:
    """TMT_TEST_METADATA: the test's fmf node (JSON, which is YAML too)."""
    data = dict(test.data)
    data.setdefault("name", test.name)
    return json.dumps(data, indent=2, default=str).encode() + b"\n"


#: TMT_TEST_METADATA of at most this many bytes travels with the command that
#: starts the test (the wrapper writes it with a shell builtin); larger metadata
#: is staged at setup by ``build_remote_tar``. A command line, and each
#: environment string, is at most 128 KiB on Linux (MAX_ARG_STRLEN), and the
#: rest of the test's environment must fit beside it. Staging every test on
#: every machine instead costs each machine an archive entry, two inodes and
#: their removal per test of the run, of which it runs only its share: at 64
#: machines and 2,000 tests that was 3 MB and 4,000 inodes per machine for
#: about 31 tests each, and most of the controller's CPU and memory
#: (benchmarks/scale.py).
INLINE_METADATA_MAX = 16 * 1024


def too_large_to_send(metadata: bytes) -> bool:
    """Whether TMT_TEST_METADATA ``metadata`` is too large to travel with the
    command that starts the test, counted as the command carries it (quoted
    for the shell: each ``'`` takes five bytes there)."""
    return len(shlex.quote(metadata.decode())) > INLINE_METADATA_MAX


def is_staged(test: Test) -> bool:
    """Whether ``build_remote_tar`` stages the test's metadata."""
    return too_large_to_send(test_metadata(test))


def build_remote_tar(tests: Iterable[Test] = ()) -> bytes:
    """The wrapper and the tmt shims, plus a scratch directory with its
    metadata for each of ``tests`` whose metadata is too large to be sent with
    the command that starts it (``is_staged``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(REMOTE_DIR.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = _tar_info(f"remote/{path.relative_to(REMOTE_DIR)}", 0o755)
                info.size = path.stat().st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)
        for test in tests:
            metadata = test_metadata(test)
            if not too_large_to_send(metadata):
                continue
            info = _tar_info(f"{test_dir(test)}/data", 0o755, tarfile.DIRTYPE)
            tar.addfile(info)
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


#: The name under which the wrapper attaches the test's TMT_TEST_DATA as one
#: tar archive; the executor unpacks it into data/ and drops it.
TEST_DATA_ARCHIVE = ".atex-test-data.tar"


class ArchiveLimitError(Exception):
    """Unpacking an archive would go over a cap: ``kind`` is "bytes" or "files",
    ``entry`` the archive member where it happened."""

    def __init__(self, kind: str, entry: str) -> None:
        super().__init__(f"too many {kind} at {entry!r}")
        self.kind = kind
        self.entry = entry


#: Bytes read and written per step while unpacking.
_BLOCK = 1024 * 1024


def repair_header_checksums(archive: Path) -> None:
    """Recompute the checksum of every ustar header whose stored one no longer
    matches. Masking a secret in the archive (masking.py, same length) keeps
    its layout but changes the bytes of a header that holds it in a name, and
    tarfile ends an archive at the first header with a wrong checksum: the
    member and every one after it would be lost without a word. Stops at the
    first block that is not a ustar header (tarfile then judges the rest)."""
    with open(archive, "r+b") as f:
        offset = 0
        while True:
            f.seek(offset)
            block = f.read(tarfile.BLOCKSIZE)
            if len(block) < tarfile.BLOCKSIZE or block[257:262] != b"ustar":
                return
            unsigned = 256 + sum(block[:148]) + sum(block[156:])
            signed = 256 + sum(b - 256 if b > 127 else b for b in block[:148] + block[156:])
            try:
                stored = int(block[148:156].strip(b"\0 ") or b"-1", 8)
            except ValueError:
                stored = -1
            if stored not in (unsigned, signed):
                f.seek(offset + 148)
                f.write(b"%06o\0 " % unsigned)
            field = block[124:136]
            try:
                if field[0] & 0x80:  # GNU base-256 size of a large member
                    size = int.from_bytes(field[1:], "big")
                else:
                    size = int(field.strip(b"\0 ") or b"0", 8)
            except ValueError:
                return
            offset += tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def extract_regular_files(
    archive: Path, dest: Path, *, max_bytes: int | None = None, max_files: int | None = None
) -> list[str]:
    """Unpack regular files and directories only; returns the entries skipped.

    Links, devices and any name that would land outside ``dest`` are skipped,
    so a symlink in TMT_TEST_DATA pointing at /etc never leaks anything.
    ``max_bytes`` caps the bytes written (counted as they are written, so a
    sparse member counts its full size, not what the archive claims) and
    ``max_files`` the files and directories created; going over either stops
    with ArchiveLimitError, keeping what was unpacked before. Blocking: call it
    off the event loop. Raises OSError if ``dest`` cannot be written.
    """
    skipped: list[str] = []
    written = 0
    created = 0
    dest.mkdir(parents=True, exist_ok=True)

    def count_entry(name: str) -> None:
        nonlocal created
        created += 1
        if max_files is not None and created > max_files:
            raise ArchiveLimitError("files", name)

    try:
        repair_header_checksums(archive)
        with tarfile.open(archive, mode="r:") as tar:
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
                    if not target.is_dir():
                        count_entry(name)
                        target.mkdir(parents=True, exist_ok=True)
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                count_entry(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    while block := source.read(_BLOCK):
                        written += len(block)
                        if max_bytes is not None and written > max_bytes:
                            raise ArchiveLimitError("bytes", name)
                        out.write(block)
    except tarfile.TarError as exc:
        skipped.append(f"(damaged archive: {exc})")
    return skipped
