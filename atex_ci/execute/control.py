"""Sans-IO parser of the test-control stream (see docs/test-control.md).

This module owns the wire format a test speaks on its ``ATEX_TEST_CONTROL`` file
descriptor: bytes go in through :meth:`ControlParser.feed`, small immutable events
come out. It never awaits, never opens a file and never reads a clock, so the
executor owns the SSH stream and the artifact directory, and anyone building a
runner can reuse it. :func:`sanitize_name` and :func:`safe_join` are the two rules
that keep a test's file names inside its artifact directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from atex_ci import untrusted_json
from atex_ci.duration import parse_duration

# The protocol caps a control line at 4096 bytes including the newline, so a test
# that forgets a newline (or writes garbage) is caught after a bounded amount of
# buffering instead of making us hold an endless line in memory.
MAX_LINE = 4096

# Cap on one result's JSON text. A result is metadata (status, note, file list);
# anything big belongs in a file, whose data streams through without buffering.
# 1 MiB leaves room for huge notes and thousands of file entries while bounding
# the memory a misbehaving test can make us hold.
DEFAULT_MAX_RESULT = 1024 * 1024

# Linux file systems refuse a path component longer than 255 bytes (NAME_MAX)
# and a path longer than 4096 bytes (PATH_MAX); a name the test sends is
# refused before any file is created, with a note that says which limit.
MAX_NAME_COMPONENT = 255
MAX_NAME_BYTES = 1024

# How much of an offending line an error message quotes.
_QUOTE_LIMIT = 80

_UNSIGNED = re.compile(rb"[0-9]+")
_SIGNED = re.compile(rb"-?[0-9]+")

DurationOp = Literal["set", "add", "sub", "save", "restore"]


@dataclass(frozen=True)
class ResultEvent:
    """A ``result`` word with its JSON object.

    ``data["files"]`` is always present and normalised to a list of
    ``{"name": sanitised relative path, "length": int}``; the data of those files
    follows as :class:`FileChunk` / :class:`FileEnd` events, in that order.
    """

    data: dict[str, Any]
    #: Bytes of the JSON text on the stream (for callers that cap the total).
    size: int = field(default=0, compare=False)


@dataclass(frozen=True)
class FileChunk:
    """A piece of a file's data; append it to ``name`` (already sanitised)."""

    name: str
    data: bytes


@dataclass(frozen=True)
class FileEnd:
    """All announced bytes of ``name`` have been delivered (also for empty files)."""

    name: str


@dataclass(frozen=True)
class ExitCode:
    """The test's real exit code, as written by the wrapper."""

    code: int


@dataclass(frozen=True)
class Duration:
    """A change of the test's time limit.

    ``set``: ``seconds`` from now; ``add``/``sub``: move the deadline by
    ``seconds``; ``save``/``restore``: ``seconds`` is None.
    """

    op: DurationOp
    seconds: float | None


@dataclass(frozen=True)
class Disconnect:
    """The coming loss of connection is intended (the test reboots the machine)."""


Event = ResultEvent | FileChunk | FileEnd | ExitCode | Duration | Disconnect


class ControlError(Exception):
    """The test broke the protocol; ``str(error)`` is the note to show the user.

    ``events`` holds the events that the failing :meth:`ControlParser.feed`
    call completed before the violation; the caller must handle them like a
    normal return value, so that nothing the test reported before is lost.
    """

    def __init__(self, message: str, events: list[Event] | None = None) -> None:
        super().__init__(message)
        self.events: list[Event] = events or []


def _is_control(char: str) -> bool:
    code = ord(char)
    # C0 controls, DEL, C1 controls, and lone surrogates (from undecodable bytes or
    # JSON \\udXXX escapes), which no file system API can encode.
    return code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000


def sanitize_name(name: str) -> str:
    """Turn a test-supplied file name into a safe relative path.

    Control characters (including NUL and DEL) become ``_``; empty, ``.`` and
    ``..`` components are dropped, so the result is always relative and never
    climbs up. Raises :class:`ControlError` if nothing remains, if a component
    is longer than MAX_NAME_COMPONENT bytes or the name longer than
    MAX_NAME_BYTES bytes (UTF-8).
    """
    cleaned = "".join("_" if _is_control(char) else char for char in name)
    parts = [part for part in cleaned.split("/") if part not in ("", ".", "..")]
    if not parts:
        raise ControlError(f"test-control: file name {_quote(name)} is empty after sanitising")
    for part in parts:
        if len(part.encode()) > MAX_NAME_COMPONENT:
            raise ControlError(
                f"test-control: file name {_quote(name)} has a component longer than"
                f" {MAX_NAME_COMPONENT} bytes"
            )
    joined = "/".join(parts)
    if len(joined.encode()) > MAX_NAME_BYTES:
        raise ControlError(
            f"test-control: file name {_quote(name)} is longer than {MAX_NAME_BYTES} bytes"
        )
    return joined


def safe_join(base: Path, name: str) -> Path:
    """The path of file ``name`` inside directory ``base``, refusing escapes.

    ``name`` is sanitised, then the joined path is resolved, following any
    symlinks already on disk; if the result is not strictly inside the resolved
    ``base``, :class:`ControlError` is raised. Callers must create files only
    through the returned path, and must not let anyone else create symlinks in
    ``base`` between this check and the write.
    """
    root = base.resolve()
    target = (root / sanitize_name(name)).resolve()
    if target == root or not target.is_relative_to(root):
        raise ControlError(f"test-control: file name {_quote(name)} points outside its directory")
    return target


def _quote(text: str | bytes) -> str:
    shown = text[:_QUOTE_LIMIT]
    suffix = "..." if len(text) > _QUOTE_LIMIT else ""
    if isinstance(shown, bytes):
        shown = shown.decode("ascii", "backslashreplace")
    return repr(shown) + suffix


def _normalise_files(value: object) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ControlError("test-control: result 'files' must be a list")
    files = []
    for entry in value:
        if not isinstance(entry, dict):
            raise ControlError("test-control: each entry of result 'files' must be an object")
        name, length = entry.get("name"), entry.get("length")
        if not isinstance(name, str):
            raise ControlError("test-control: a file entry needs a string 'name'")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise ControlError(
                f"test-control: file {_quote(name)} needs a non-negative integer 'length'"
            )
        files.append({"name": sanitize_name(name), "length": length})
    return files


class ControlParser:
    """Incremental parser: feed it the stream's bytes, act on the events it returns.

    The caller reads the stream (in chunks of any size), calls :meth:`feed` with
    each chunk and :meth:`feed_eof` when the stream ends. Events come in stream
    order. A :class:`ControlError` means the test broke the protocol: everything
    returned before (and the error's ``events``) stays valid, and the parser stays
    broken (every further call raises an error with the same message).
    """

    def __init__(self, max_result_bytes: int = DEFAULT_MAX_RESULT) -> None:
        self.max_result_bytes = max_result_bytes
        self._buf = bytearray()
        self._scanned = 0  # bytes of an incomplete line already searched for b"\n"
        self._line_number = 0
        self._json_length: int | None = None  # set while waiting for result JSON
        self._files: list[tuple[str, int]] = []  # files whose data is still to come
        self._file_left = 0  # bytes left of self._files[0]
        self._error: ControlError | None = None
        self._closed = False
        self._exit_seen = False

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``; returns the events it completes.

        Raises ControlError on a violation, carrying in ``error.events`` the
        events completed before it in this call.
        """
        self._check_usable()
        self._buf += data
        events: list[Event] = []
        try:
            self._process(events)
        except ControlError as error:
            error.events = events
            # Later calls raise a copy without events: those were delivered once.
            self._error = ControlError(str(error))
            raise
        return events

    def feed_eof(self) -> list[Event]:
        """Signal the end of the stream. Raises ControlError if it ends mid-line or mid-data."""
        self._check_usable()
        self._closed = True
        error: ControlError | None = None
        if self._json_length is not None:
            missing = self._json_length - len(self._buf)
            error = ControlError(
                f"test-control: stream ended {missing} bytes short of a result's JSON"
            )
        elif self._files:
            name, _ = self._files[0]
            error = ControlError(
                f"test-control: stream ended {self._file_left} bytes short of file {_quote(name)}"
            )
        elif self._buf:
            error = ControlError(
                f"test-control: stream ended in the middle of line {self._line_number + 1}"
                f" {_quote(bytes(self._buf))} (no newline)"
            )
        if error is not None:
            self._error = error
            raise error
        return []

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ControlError("test-control: data fed after the end of the stream")

    def _process(self, events: list[Event]) -> None:
        pos = 0
        buf = self._buf
        try:
            while pos < len(buf) or (self._files and self._file_left == 0):
                if self._files:
                    pos = self._take_file_data(pos, events)
                elif self._json_length is not None:
                    if len(buf) - pos < self._json_length:
                        break
                    end = pos + self._json_length
                    self._json_length = None
                    events.append(self._parse_result(bytes(buf[pos:end])))
                    pos = end
                else:
                    newline = buf.find(b"\n", pos + self._scanned, pos + MAX_LINE)
                    if newline < 0:
                        self._scanned = len(buf) - pos
                        if self._scanned >= MAX_LINE:
                            raise ControlError(
                                f"test-control: line {self._line_number + 1} is longer than"
                                f" {MAX_LINE} bytes: {_quote(bytes(buf[pos:]))}"
                            )
                        break
                    self._scanned = 0
                    self._line_number += 1
                    line = bytes(buf[pos:newline])
                    pos = newline + 1
                    event = self._parse_line(line)
                    if event is not None:
                        events.append(event)
        finally:
            del buf[:pos]

    def _take_file_data(self, pos: int, events: list[Event]) -> int:
        name, _ = self._files[0]
        take = min(self._file_left, len(self._buf) - pos)
        if take:
            events.append(FileChunk(name, bytes(self._buf[pos : pos + take])))
            self._file_left -= take
            pos += take
        if self._file_left == 0:
            events.append(FileEnd(name))
            self._files.pop(0)
            if self._files:
                self._file_left = self._files[0][1]
        return pos

    def _parse_line(self, line: bytes) -> Event | None:
        where = f"line {self._line_number}"
        if not line:
            raise ControlError(f"test-control: empty {where}")
        if not line.isascii():
            raise ControlError(f"test-control: {where} is not ASCII: {_quote(line)}")
        word, _, arg = line.partition(b" ")
        has_arg = b" " in line
        if word in (b"disconnect", b"noop"):
            if has_arg:
                raise ControlError(f"test-control: '{word.decode()}' takes no argument ({where})")
            return Disconnect() if word == b"disconnect" else None
        if word == b"result":
            if not _UNSIGNED.fullmatch(arg):
                raise ControlError(f"test-control: bad result length {_quote(arg)} ({where})")
            length = int(arg)
            if length > self.max_result_bytes:
                raise ControlError(
                    f"test-control: result of {length} bytes is over the limit of"
                    f" {self.max_result_bytes} bytes ({where})"
                )
            self._json_length = length
            return None
        if word == b"exitcode":
            if not _SIGNED.fullmatch(arg):
                raise ControlError(f"test-control: bad exit code {_quote(arg)} ({where})")
            if self._exit_seen:
                # Only the wrapper writes it, once, when the test has ended; a
                # test that writes it too must not pass for finished.
                raise ControlError(
                    f"test-control: a second 'exitcode' ({where}); only the wrapper reports"
                    " the exit code"
                )
            self._exit_seen = True
            return ExitCode(int(arg))
        if word == b"duration":
            return self._parse_duration(arg.decode("ascii"), where)
        raise ControlError(f"test-control: unknown word {_quote(word)} ({where})")

    @staticmethod
    def _parse_duration(arg: str, where: str) -> Duration:
        if arg == "save":
            return Duration("save", None)
        if arg == "restore":
            return Duration("restore", None)
        op: DurationOp = "set"
        spec = arg
        if arg[:1] == "+":
            op, spec = "add", arg[1:]
        elif arg[:1] == "-":
            op, spec = "sub", arg[1:]
        try:
            seconds = parse_duration(spec)
        except ValueError as error:
            raise ControlError(
                f"test-control: bad duration {_quote(arg)} ({where}): {error}"
            ) from None
        return Duration(op, seconds)

    def _parse_result(self, raw: bytes) -> ResultEvent:
        where = f"result after line {self._line_number}"
        # Undecodable bytes (e.g. a test name in Latin-1 passed through by a shim)
        # become U+FFFD rather than failing the whole test.
        try:
            data = untrusted_json.loads(
                raw,
                errors="replace",
                max_bytes=self.max_result_bytes,
                max_depth=untrusted_json.MAX_DEPTH,
                allow_constants=False,
            )
        except untrusted_json.UntrustedJSONError as error:
            # The reason says "invalid JSON: ..." or "nested deeper than N levels".
            raise ControlError(f"test-control: {where}: {error.reason}") from None
        if not isinstance(data, dict):
            raise ControlError(f"test-control: {where} is not a JSON object")
        data["files"] = _normalise_files(data.get("files"))
        self._files = [(entry["name"], entry["length"]) for entry in data["files"]]
        self._file_left = self._files[0][1] if self._files else 0
        return ResultEvent(data, len(raw))


__all__ = [
    "DEFAULT_MAX_RESULT",
    "MAX_LINE",
    "ControlError",
    "ControlParser",
    "Disconnect",
    "Duration",
    "Event",
    "ExitCode",
    "FileChunk",
    "FileEnd",
    "ResultEvent",
    "safe_join",
    "sanitize_name",
]
