"""The run directory: the on-disk contract between atex-ci commands.

This module and docs/run-directory.md are the one source of truth for the
layout. Everything here is synchronous, small and crash-safe:

* JSON documents (run.json, machines.json, tests.json) are written to a
  temporary file in the same directory and renamed over the old one, so a
  reader sees either the old or the new document, never half of one.
* JSON Lines files (results.jsonl, events.jsonl) are appended one line at a
  time, flushed and fsynced, so a crash loses at most the line being written.
  The reader skips a torn (unterminated or unparsable) last line and keeps
  every earlier one.
* A lock file (``.lock``, ``flock``) makes a second command on the same run
  directory fail at once with a clear message instead of interleaving.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from . import untrusted_json
from .errors import ConfigError, StorageError
from .model import Machine, Plan, Result, RunState
from .pathnames import component, flat_component, name_components
from .workarea import check_id, check_machine, local_work_dir

FORMAT = "atex-ci-run"
VERSION = 1

RUN_JSON = "run.json"
MACHINES_JSON = "machines.json"
TESTS_JSON = "tests.json"
RESULTS_JSONL = "results.jsonl"
EVENTS_JSONL = "events.jsonl"
ARTIFACTS = "artifacts"
KEYS = "keys"
LOCK = ".lock"
WORK = "work"  # local slots' scratch directories; not part of the shareable output
#: Earlier runs set aside by ``run --restart``: previous/1/, previous/2/...
PREVIOUS = "previous"
#: What stays in place when a run is set aside: the reservation (run.json,
#: machines, keys), the lock, the slots' scratch and earlier runs set aside.
_RESERVATION_FILES = frozenset({RUN_JSON, MACHINES_JSON, KEYS, LOCK, WORK, PREVIOUS})

# What a reader takes in from the run directory's own JSON documents, checked
# before a byte is read: a run directory may come from anywhere (collect and
# report read other people's), and parsed JSON costs several times its size in
# memory. Each cap is far above what a real run writes.
# run.json is a few KB (ids, options, context, platforms).
MAX_RUN_JSON_BYTES = 16 * 1024 * 1024
# machines.json is about 1 KB per machine ever reserved.
MAX_MACHINES_JSON_BYTES = 64 * 1024 * 1024
# tests.json is about 1 KB per test with its fmf data: 20,000 tests are 20 MB.
MAX_TESTS_JSON_BYTES = 256 * 1024 * 1024
#: Every entry of the layout above (what a run directory may hold of its own).
LAYOUT = frozenset(
    {
        RUN_JSON,
        MACHINES_JSON,
        TESTS_JSON,
        RESULTS_JSONL,
        EVENTS_JSONL,
        ARTIFACTS,
        KEYS,
        LOCK,
        WORK,
        PREVIOUS,
    }
)
#: Bytes of a run.json read to recognise a run directory (its format marker
#: is the first key; a run.json of gigabytes is never read whole).
RUN_MARKER_BYTES = 4096


def now_iso() -> str:
    """Current UTC time, ISO 8601 with millisecond precision."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def is_run_directory(path: Path) -> bool:
    """Whether ``path`` holds an atex-ci run directory (its run.json says so,
    valid or not beyond its first bytes). Never raises."""
    try:
        # Non-blocking, and only a regular file is read: a tree may hold a
        # FIFO or a device named run.json, which must not stall the upload.
        fd = os.open(path / RUN_JSON, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, RUN_MARKER_BYTES)
    except OSError:
        return False
    finally:
        os.close(fd)
    return f'"{FORMAT}"'.encode() in head


def storage_error(exc: OSError, path: Path) -> StorageError:
    """The one-line error for a run-directory write that failed (disk full, read-only...)."""
    why = exc.strerror or str(exc)
    return StorageError(
        f"cannot write {path}: {why}; what was recorded before is kept (make room, then "
        "'atex-ci run --resume' runs the rest)"
    )


@contextlib.contextmanager
def replacing(path: Path, *, errors: str = "strict") -> Iterator[TextIO]:
    """A text file (UTF-8) that replaces ``path`` whole when the block ends without error.

    It is written beside ``path`` and renamed over it, so a reader sees the old
    file or the whole new one, never a part; on an error the temporary file is
    removed and ``path`` is left as it was. Raises OSError (the caller's to
    turn into a user error).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors=errors) as out:
            yield out
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so readers never see a partial file.

    Raises StorageError if the directory cannot be written.
    """
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise storage_error(exc, path) from None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


class JsonlAppender:
    """Appends JSON objects to one JSON Lines file, one line per write() call.

    The file stays open between appends (opening it per line costs more than
    the write). Each line is flushed, and with ``durable`` fsynced, before
    ``append`` returns, so a crash loses at most the line being written. If an
    earlier writer crashed mid-line, the first append starts on a fresh line so
    the torn fragment never swallows a record. Thread-safe.
    """

    def __init__(self, path: Path, *, durable: bool) -> None:
        self.path = path
        self.durable = durable
        self._file: BinaryIO | None = None
        self._end = -1  # file size after our last append
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Append one record; StorageError if the file cannot be written."""
        line = _json_line(record)
        try:
            self._append(line)
        except OSError as exc:
            raise storage_error(exc, self.path) from None

    def _append(self, line: bytes) -> None:
        with self._lock:
            f = self._file
            if f is None or f.closed:
                f = self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
                self._end = -1
            size = os.fstat(f.fileno()).st_size
            if size != self._end and size > 0:
                # Someone else wrote since our last line (or this is our first):
                # check for a torn line.
                with open(self.path, "rb") as r:
                    r.seek(size - 1)
                    if r.read(1) != b"\n":
                        line = b"\n" + line
            f.write(line)  # unbuffered: one write(2) per line, O_APPEND
            self._end = size + len(line)
            if self.durable:
                os.fsync(f.fileno())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# A results or events line is a few hundred bytes; a test's 50 MB note still
# fits. Reading a line costs about three times its size (bytes, text, parsed),
# so a larger one (a damaged file, or a hostile source given to collect) is
# skipped as damaged instead of being read.
MAX_JSONL_LINE_BYTES = 64 * 1024 * 1024


def _json_line(record: dict[str, Any]) -> bytes:
    """One JSON Lines record as UTF-8 bytes.

    Text stays readable (ensure_ascii off) unless it holds a lone surrogate
    (undecodable bytes of a test's name or note), which UTF-8 cannot encode:
    then the line is written with \\u escapes, which every JSON reader reads back.
    """
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    try:
        return (text + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(record, separators=(",", ":")) + "\n").encode()


class ArtifactTree:
    """A tree of test runs' files (RUN/artifacts/ in a run directory, or any
    directory of a runner's own): where each run's files go, and how results
    name them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(
        self, platform: str, test: str, attempt: int, plan: str = "", serial: int | None = None
    ) -> Path:
        """<root>/<platform>/<plan>/<test>/<attempt>/ (not created); test names
        keep their slashes. Components come from ``pathnames``: injective and
        bounded, so two tests never share a directory and a name can never
        point outside the tree. ``serial`` (given only for a test its plan
        selects more than once) adds ``instance-<serial>/`` before the
        attempt, so each instance keeps its own files."""
        parts = [component(platform), flat_component(plan), *name_components(test)]
        if serial is not None:
            parts.append(f"instance-{serial}")
        parts.append(str(attempt))
        return self.root.joinpath(*parts)

    def relative(self, path: Path) -> str:
        """A path inside the tree as results record it (relative to the root)."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:  # one of them is relative, or went through a symlink
            return str(path.resolve().relative_to(self.root.resolve()))


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield ``(line number, record, problem)`` for every non-blank line of a JSON Lines file.

    The file is read one line at a time, each within MAX_JSONL_LINE_BYTES and
    untrusted_json's depth limit. ``record`` is None for a damaged line (a
    torn last line after a crash, garbage, JSON that is not an object, a line
    over a limit) and ``problem`` then says why in a few words. Bytes that
    are not UTF-8 are kept as lone surrogates (``surrogateescape``), so a
    line with one bad byte is still read. A missing file yields nothing; one
    that is not a regular file (a FIFO would block, a device never end) yields
    one problem, as line 1, and nothing else.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            yield 1, None, "not a regular file"
            return
        number = 0
        while True:
            line = f.readline(MAX_JSONL_LINE_BYTES + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_JSONL_LINE_BYTES:
                while line and not line.endswith(b"\n"):  # skip the rest, chunk by chunk
                    line = f.readline(1024 * 1024)
                yield number, None, f"longer than {MAX_JSONL_LINE_BYTES} bytes"
                continue
            if not line.strip():
                continue
            try:
                obj = untrusted_json.loads(
                    line, max_bytes=MAX_JSONL_LINE_BYTES, errors="surrogateescape"
                )
            except untrusted_json.UntrustedJSONError as exc:
                yield number, None, exc.reason
                continue
            if isinstance(obj, dict):
                yield number, obj, None
            else:
                yield number, None, "not a JSON object"


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Read every intact line of a JSON Lines file.

    Returns the records and the number of damaged lines skipped (a torn last
    line after a crash, or garbage). A missing file reads as empty.
    """
    records: list[dict[str, Any]] = []
    skipped = 0
    for _number, record, _problem in iter_jsonl(path):
        if record is None:
            skipped += 1
        else:
            records.append(record)
    return records, skipped


def _read_document(path: Path, max_bytes: int) -> Any:
    """One of the run directory's JSON documents; ConfigError naming the file
    (and the line) if it cannot be read, is not JSON or is over its caps."""
    try:
        return untrusted_json.read_file(path, max_bytes=max_bytes)
    except untrusted_json.UntrustedJSONError as exc:
        raise ConfigError(f"{exc.at(path)} ({path.name} is damaged)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


class RunDir:
    """A run directory. ``RunDir.create`` makes one, ``RunDir.open`` checks one.

    Use ``with rundir.locked():`` around any command that writes to it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._results = JsonlAppender(self.path / RESULTS_JSONL, durable=True)
        # The timeline is for humans and the HTML report: flushed, not fsynced.
        self._events = JsonlAppender(self.path / EVENTS_JSONL, durable=False)

    # -- creation and validation -------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], **run_fields: Any) -> RunDir:
        """Create a new run directory, or open it if it already is one."""
        rundir = cls(path)
        if (rundir.path / RUN_JSON).exists():
            return cls.open(path)
        if rundir.path.exists() and not rundir.path.is_dir():
            raise ConfigError(f"{rundir.path} exists and is not a directory")
        rundir.path.mkdir(parents=True, exist_ok=True)
        stamp = now_iso()
        run = {
            "format": FORMAT,
            "version": VERSION,
            "id": uuid.uuid4().hex[:12],
            "created": stamp,
            "updated": stamp,
            "state": str(RunState.NEW),
            "fmf": None,
            "platforms": [],
            "provisioner": None,
        }
        run.update(run_fields)
        atomic_write_json(rundir.path / RUN_JSON, run)
        return rundir

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """Open an existing run directory; a clear ConfigError if it is not one."""
        rundir = cls(path)
        run_json = rundir.path / RUN_JSON
        if not run_json.is_file():
            raise ConfigError(
                f"{rundir.path} is not an atex-ci run directory (no {RUN_JSON}); "
                "create it with 'atex-ci reserve' or 'atex-ci run'"
            )
        try:
            run = rundir.read_run()
        except untrusted_json.UntrustedJSONError as exc:
            raise ConfigError(exc.at(run_json)) from None
        except OSError as exc:
            raise ConfigError(f"cannot read {run_json}: {exc.strerror or exc}") from None
        if not isinstance(run, dict) or run.get("format") != FORMAT:
            raise ConfigError(f"{run_json} is not an atex-ci run file (format is not {FORMAT!r})")
        version = run.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise ConfigError(
                f"{rundir.path} has run-directory format version {version!r}; this atex-ci "
                f"reads version {VERSION} or older, upgrade atex-ci"
            )
        # The id names the run's work directory on every machine.
        check_id(f"{run_json}: run id", run.get("id"))
        return rundir

    @classmethod
    def open_for_release(cls, path: str | os.PathLike[str]) -> RunDir:
        """Open a run directory to release its machines: like ``open``, but a
        damaged or missing run.json is enough when machines.json is there
        (releasing must never be blocked by the file that says what state the
        run is in)."""
        try:
            return cls.open(path)
        except ConfigError:
            if not (Path(path) / MACHINES_JSON).is_file():
                raise
            return cls(path)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str]) -> RunDir:
        if (Path(path) / RUN_JSON).exists():
            return cls.open(path)
        if Path(path).exists() and any(Path(path).iterdir()):
            raise ConfigError(
                f"{path} is not empty and is not an atex-ci run directory; use a new directory"
            )
        return cls.create(path)

    # -- locking ------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunDir]:
        """Hold the run directory's lock; fail at once if another command holds it."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise storage_error(exc, self.path / LOCK) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"another atex-ci command is using {self.path}; wait for it to finish "
                    "or use another run directory"
                ) from None
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError as exc:
                raise storage_error(exc, self.path / LOCK) from None
            yield self
        finally:
            self._results.close()
            self._events.close()
            os.close(fd)  # closing releases the flock

    # -- run.json -----------------------------------------------------------------

    def read_run(self) -> dict[str, Any]:
        """run.json as read (a dict once ``open`` has checked it); OSError if it
        cannot be read, UntrustedJSONError (a ValueError) if it is not JSON or is
        over its caps."""
        data: dict[str, Any] = untrusted_json.read_file(
            self.path / RUN_JSON, max_bytes=MAX_RUN_JSON_BYTES
        )
        return data

    def update_run(self, **fields: Any) -> dict[str, Any]:
        """Change fields of run.json. StorageError if it vanished, is damaged or
        cannot be written (someone or something removed it mid-run)."""
        try:
            run = self.read_run()
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not valid JSON"
            raise StorageError(
                f"cannot update {self.path / RUN_JSON}: {why} (removed or damaged while "
                "atex-ci was using it); results.jsonl is kept"
            ) from None
        run.update(fields)
        run["updated"] = now_iso()
        atomic_write_json(self.path / RUN_JSON, run)
        return run

    # -- machines.json ------------------------------------------------------------

    def read_machines(self, *, refused: list[str] | None = None) -> list[Machine]:
        """Every machine record, each checked (``workarea.check_machine``).

        A record atex-ci would not have written raises a one-line ConfigError;
        with ``refused`` given, it is left out and its error appended there
        instead (``release`` gives back every other machine all the same).
        """
        path = self.path / MACHINES_JSON
        machines = []
        for record in self._machine_records():
            try:
                machine = Machine.from_dict(record)
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path} is damaged: {exc}") from None
            try:
                # Ids and work directories name paths on machines (and release
                # deletes them): never used unless atex-ci would have written them.
                check_machine(machine, str(path))
            except ConfigError as exc:
                if refused is None:
                    raise
                refused.append(str(exc))
                continue
            machines.append(machine)
        return machines

    def _machine_records(self) -> list[Any]:
        """machines.json's records as stored (not yet checked)."""
        path = self.path / MACHINES_JSON
        if not path.exists():
            return []
        data = _read_document(path, MAX_MACHINES_JSON_BYTES)
        records = data.get("machines") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise ConfigError(f"{path} is damaged: it holds no list of machines")
        return records

    def write_machines(self, machines: list[Machine]) -> None:
        self._write_machine_records([m.to_dict() for m in machines])

    def _write_machine_records(self, records: list[Any]) -> None:
        atomic_write_json(self.path / MACHINES_JSON, {"version": VERSION, "machines": records})

    def update_machine(self, machine: Machine) -> None:
        """Replace the record with the same id (or add it); other records,
        refused ones included, are kept as they are."""
        records = self._machine_records()
        for i, record in enumerate(records):
            if isinstance(record, dict) and record.get("id") == machine.id:
                records[i] = machine.to_dict()
                break
        else:
            records.append(machine.to_dict())
        self._write_machine_records(records)

    # -- tests.json ---------------------------------------------------------------

    def write_tests(self, plans_by_platform: dict[str, list[Plan]]) -> None:
        atomic_write_json(
            self.path / TESTS_JSON,
            {
                "version": VERSION,
                "platforms": {
                    platform: [p.to_dict() for p in plans]
                    for platform, plans in plans_by_platform.items()
                },
            },
        )

    def read_tests(self) -> dict[str, list[Plan]]:
        path = self.path / TESTS_JSON
        if not path.exists():
            return {}
        data = _read_document(path, MAX_TESTS_JSON_BYTES)
        try:
            return {
                platform: [Plan.from_dict(p) for p in plans]
                for platform, plans in data["platforms"].items()
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is damaged: {exc}") from None

    # -- one run per directory ------------------------------------------------------

    def holds_results(self) -> bool:
        """Whether a run already recorded a result here (its attempts must
        never mix with another run's)."""
        try:
            return (self.path / RESULTS_JSONL).stat().st_size > 0
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise storage_error(exc, self.path / RESULTS_JSONL) from None

    def set_aside_run(self) -> Path:
        """Move the run's own files (results, events, tests, artifacts,
        reports: everything but the reservation) to a new ``previous/N/``,
        and return it. Nothing is deleted; the machines stay reserved."""
        previous = self.path / PREVIOUS
        self._results.close()
        self._events.close()
        try:
            previous.mkdir(exist_ok=True)
            taken = [int(p.name) for p in previous.iterdir() if p.name.isdigit()]
            target = previous / str(max(taken, default=0) + 1)
            target.mkdir()
            for entry in sorted(self.path.iterdir()):
                if entry.name not in _RESERVATION_FILES:
                    entry.rename(target / entry.name)
        except OSError as exc:
            raise storage_error(exc, previous) from None
        return target

    # -- results.jsonl / events.jsonl ---------------------------------------------

    def append_result(self, result: Result) -> None:
        """Append one result, fsynced; safe to call from several threads."""
        self._results.append(result.to_dict())

    def read_results(self) -> list[Result]:
        """Every valid result; damaged lines are skipped (see ``read_results_checked``)."""
        return self.read_results_checked()[0]

    def read_results_checked(self) -> tuple[list[Result], list[str]]:
        """Every valid result, and one line of text per line that was skipped.

        A line is skipped when it does not parse (a torn last line after a
        crash, garbage) or does not match the result schema (a key of the
        wrong type, no test name): a run directory may come from anywhere
        (``collect`` merges other people's), so no reader trusts it. Callers
        should warn with the problems; they name the file and line.
        """
        path = self.path / RESULTS_JSONL
        results: list[Result] = []
        problems: list[str] = []
        for number, record, problem in iter_jsonl(path):
            if record is None:
                problems.append(f"{path}:{number}: {problem}")
                continue
            try:
                results.append(Result.from_dict(record))
            except ValueError as exc:
                problems.append(f"{path}:{number}: {exc}")
        return results, problems

    def damaged_result_lines(self) -> int:
        return len(self.read_results_checked()[1])

    def append_event(self, event: str, **fields: Any) -> None:
        """Append to the timeline: flushed, not fsynced (it is for humans and
        the HTML report; results.jsonl is the record that must survive)."""
        self._events.append({"time": now_iso(), "event": event, **fields})

    def append_event_record(self, record: dict[str, Any]) -> None:
        """Append an event as given, time included (``collect`` copies other runs' events)."""
        self._events.append(record)

    def read_events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / EVENTS_JSONL)[0]

    # -- directories --------------------------------------------------------------

    @property
    def artifacts(self) -> ArtifactTree:
        """RUN/artifacts/, where tests' files go."""
        return ArtifactTree(self.path / ARTIFACTS)

    def artifact_path(
        self, platform: str, test: str, attempt: int, plan: str = "", serial: int | None = None
    ) -> Path:
        """See ``ArtifactTree.path``."""
        return self.artifacts.path(platform, test, attempt, plan, serial)

    def artifact_dir(
        self, platform: str, test: str, attempt: int, plan: str = "", serial: int | None = None
    ) -> Path:
        """Like artifact_path, and created."""
        path = self.artifact_path(platform, test, attempt, plan, serial)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        """See ``ArtifactTree.relative``."""
        return self.artifacts.relative(path)

    @property
    def keys_dir(self) -> Path:
        path = self.path / KEYS
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def slot_dir(self, machine_id: str) -> Path:
        """A local slot's work directory (not created): RUN/work/<valid id>."""
        return local_work_dir(self.path, machine_id)
