"""A test's artifact directory: everything a test sends lands here, within its caps.

The sink owns the files under ``artifacts/<platform>/<plan>/<test>/<attempt>/``
(the path is ``rundir.ArtifactTree.path``, its names mapped by ``pathnames``):
the captured output, the files the test uploads on the control stream, the
TMT_TEST_DATA archive and its unpacked ``data/``, and the names results refer
to. Every byte is counted against the test's Limits and streamed to disk as it
arrives; names go through ``control.safe_join`` so nothing lands outside.

Errors tell the test's fault from the controller's: ``TestError`` (a cap, a
name or path the file system refuses) ends the test; ``StorageError`` (disk full,
read-only) stops the run.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import IO, Any

from .. import untrusted_yaml
from ..errors import StorageError
from ..rundir import ArtifactTree, storage_error
from .control import FileChunk, safe_join
from .limits import Limits
from .results import parse_custom_results
from .staging import TEST_DATA_ARCHIVE, ArchiveLimitError, extract_regular_files

#: Errors writing to the run directory that are the controller's problem (the
#: disk, not the test): they stop the run instead of failing one test.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
#: Errors creating a test's artifact directory that come from its path (its
#: name, under this run directory's path), not from the disk: the test's.
NAME_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL})
#: Tar headers and padding on top of the test's own bytes when TMT_TEST_DATA
#: is fetched as an archive.
TAR_OVERHEAD = 1024 * 1024
#: The captured output's name in the artifact directory.
OUTPUT = "output.txt"
#: Where TMT_TEST_DATA is unpacked.
DATA = "data"


class TestError(Exception):
    """The test did something that ends it as error (the message says what)."""


class LimitExceeded(TestError):
    """A test went over one of its Limits."""


def _stored(exc: OSError, path: Path) -> Exception:
    """The exception for a failed write: the disk's fault or the test's."""
    if exc.errno in STORAGE_ERRNOS:
        return storage_error(exc, path)
    return exc


class ArtifactSink:
    """The artifact directory of one test run (across its reboots).

    Call ``open`` (blocking: off the event loop) before the test starts and
    ``close`` when it has ended; the write methods are called from the
    transport's callbacks as data arrives.
    """

    def __init__(self, tree: ArtifactTree, path: Path, limits: Limits) -> None:
        self.tree = tree
        self.path = path
        self.limits = limits
        self.output: IO[bytes] | None = None
        self.output_bytes = 0
        #: Bytes of files uploaded, the TMT_TEST_DATA archive included.
        self.upload_bytes = 0
        #: Bytes of the TMT_TEST_DATA archive received through the control stream.
        self.archive_bytes = 0
        #: Names of the files the test created through the control stream.
        self.created: set[str] = set()
        #: Archive entries that were not unpacked (links, devices, escaping names).
        self.skipped: list[str] = []
        self._file: IO[bytes] | None = None
        self._file_name: str | None = None

    @property
    def archive(self) -> Path:
        """Where the TMT_TEST_DATA archive is stored until it is unpacked."""
        return self.path / TEST_DATA_ARCHIVE

    # -- output ----------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory and open output.txt.

        TestError when the file system refuses the path itself (too long
        under a deep run directory, a name it cannot hold): that is this
        test's error, every other test still runs. StorageError for the disk.
        """
        path = self.path / OUTPUT
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # Unbuffered: every chunk is on disk (in the page cache) as soon as
            # it arrives, so killing atex-ci loses none of a test's output. A
            # chunk is one write(2) however many lines it holds.
            self.output = open(path, "ab", buffering=0)  # noqa: SIM115 (closed in close())
        except OSError as exc:
            if exc.errno in NAME_ERRNOS:
                raise TestError(
                    f"cannot store the test's files under {self.path}: {exc.strerror or exc}"
                ) from None
            raise storage_error(exc, path) from None

    @property
    def opened(self) -> bool:
        """Whether ``open`` succeeded (output.txt exists)."""
        return self.output is not None

    def write_output(self, chunk: bytes) -> None:
        """Append captured output; LimitExceeded past max_output (what fits is kept)."""
        room = self.limits.max_output - self.output_bytes
        if len(chunk) > room:
            self._write_output(chunk[: max(room, 0)])
            self.output_bytes = self.limits.max_output
            raise LimitExceeded(
                f"the test's output exceeded the limit of {self.limits.max_output} bytes"
            )
        self._write_output(chunk)
        self.output_bytes += len(chunk)

    def _write_output(self, data: bytes) -> None:
        assert self.output is not None
        try:
            self.output.write(data)
        except OSError as exc:
            raise storage_error(exc, self.path / OUTPUT) from None

    # -- uploaded files ----------------------------------------------------------------

    def write_file(self, event: FileChunk) -> None:
        """Append a chunk of an uploaded file (its name already sanitised).

        LimitExceeded past max_upload or max_files; TestError for a name the
        file system refuses; StorageError if the disk does.
        """
        self.upload_bytes += len(event.data)
        if event.name == TEST_DATA_ARCHIVE:
            self.archive_bytes += len(event.data)
        if self.upload_bytes > self.limits.max_upload:
            raise LimitExceeded(
                f"the test uploaded more than the limit of {self.limits.max_upload} bytes"
            )
        if event.name not in self.created:
            if len(self.created) >= self.limits.max_files:
                raise LimitExceeded(
                    f"the test uploaded more than the limit of {self.limits.max_files} files"
                )
            self.created.add(event.name)
        try:
            if self._file_name != event.name:
                self.close_file()
                path = safe_join(self.path, event.name)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (closed on FileEnd)
                self._file_name = event.name
            assert self._file is not None
            self._file.write(event.data)
        except OSError as exc:
            if exc.errno in STORAGE_ERRNOS:
                raise storage_error(exc, self.path) from None
            # E.g. a name that is a file in one result and a directory in
            # another, or one too long for the filesystem: the test's fault.
            raise TestError(
                f"cannot store the file {event.name!r}: {exc.strerror or exc}"
            ) from None

    def end_file(self, name: str) -> None:
        """All of ``name`` has arrived (it exists even when empty)."""
        if self._file_name != name:
            self.write_file(FileChunk(name, b""))
        self.close_file()

    def close_file(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._file_name = None

    def close(self) -> None:
        """Close every open file (never raises)."""
        self.close_file()
        if self.output is not None:
            with contextlib.suppress(OSError):
                self.output.close()

    # -- TMT_TEST_DATA -------------------------------------------------------------------

    def archive_writer(self) -> _ArchiveWriter:
        """A writer for TMT_TEST_DATA fetched as a tar stream (after a test
        was cut short), within what is left of the upload cap."""
        room = self.limits.max_upload - self.upload_bytes + TAR_OVERHEAD
        return _ArchiveWriter(self.archive, room, self.limits.max_upload)

    def unpack_archive(self) -> str | None:
        """Unpack the TMT_TEST_DATA archive into data/ (regular files only),
        within what is left of the caps, then remove it. Returns the test's
        failure note, or None. Blocking: call it off the event loop."""
        room = self.limits.max_upload - (self.upload_bytes - self.archive_bytes)
        try:
            skipped = extract_regular_files(
                self.archive,
                self.path / DATA,
                max_bytes=max(room, 0),
                max_files=max(self.limits.max_files - len(self.created), 0),
            )
        except ArchiveLimitError as exc:
            if exc.kind == "files":
                limit = f"{self.limits.max_files} files"
            else:
                limit = f"{self.limits.max_upload} bytes once unpacked"
            return f"TMT_TEST_DATA: more than the limit of {limit} (at {exc.entry!r})"
        except OSError as exc:
            if exc.errno in STORAGE_ERRNOS:
                raise storage_error(exc, self.path / DATA) from None
            return f"cannot store TMT_TEST_DATA: {exc}"
        finally:
            self.archive.unlink(missing_ok=True)
        self.skipped = skipped
        return None

    # -- names results refer to ------------------------------------------------------------

    def relative(self, name: str) -> str:
        """A stored file's path as results record it (relative to RUN/artifacts).
        ControlError for a name that points outside."""
        return self.tree.relative(safe_join(self.path, name))

    def output_file(self) -> str:
        return self.tree.relative(self.path / OUTPUT)

    def attach_output(self, name: str) -> str:
        """Attach the captured output under ``name`` too (a hard link); returns
        its recorded path. ControlError, or OSError (StorageError for the disk)."""
        target = safe_join(self.path, name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target != self.path / OUTPUT:
                with contextlib.suppress(FileExistsError):
                    os.link(self.path / OUTPUT, target)
        except OSError as exc:
            raise _stored(exc, self.path) from None
        return self.tree.relative(target)

    def data_files(self) -> list[str]:
        """Every regular file unpacked from TMT_TEST_DATA, as results record them."""
        data = self.path / DATA
        if not self.opened or not data.is_dir():  # a path the filesystem refused: none
            return []
        return sorted(
            self.tree.relative(p) for p in data.rglob("*") if p.is_file() and not p.is_symlink()
        )

    def read_custom_results(self) -> tuple[list[dict[str, Any]] | None, str | None]:
        """tmt's custom results (``result: custom``) from data/results.yaml or
        results.json: (results, None), or (None, the test's failure note)."""
        for name in ("results.yaml", "results.json"):
            path = self.path / DATA / name
            if path.is_file():
                try:
                    with open(path, "rb") as f:
                        # Never more than the parser accepts: a results file
                        # of gigabytes is refused after reading a little more.
                        raw = f.read(untrusted_yaml.MAX_BYTES + 1)
                    if len(raw) > untrusted_yaml.MAX_BYTES:
                        raise ValueError(f"{name}: larger than {untrusted_yaml.MAX_BYTES} bytes")
                    return parse_custom_results(raw.decode(errors="replace"), name), None
                except (ValueError, OSError) as exc:
                    return None, f"result: custom: {exc}"
        return None, "result: custom, but the test wrote no results.yaml or results.json"


class _ArchiveWriter:
    """Streams a tar archive to disk, refusing more than ``room`` bytes."""

    def __init__(self, path: Path, room: int, cap: int) -> None:
        self.path = path
        self.room = room
        self.cap = cap
        self.size = 0
        try:
            self._file = open(path, "wb", buffering=0)  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise storage_error(exc, path) from None

    def write(self, chunk: bytes) -> None:
        """LimitExceeded past the cap, StorageError if the disk refuses."""
        self.size += len(chunk)
        if self.size > self.room:
            raise LimitExceeded(f"the test uploaded more than the limit of {self.cap} bytes")
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise storage_error(exc, self.path) from None

    def close(self) -> None:
        self._file.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


__all__ = ["ArtifactSink", "LimitExceeded", "StorageError", "TestError"]
