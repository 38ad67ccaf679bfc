"""The data atex-ci passes around: tests, plans, machines, results.

Plain dataclasses with ``to_dict``/``from_dict`` so that the run directory
(see ``rundir.py``) can store them as JSON. No I/O happens here.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Status(enum.StrEnum):
    """Result status; the vocabulary is tmt's."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    INFO = "info"
    SKIP = "skip"
    ERROR = "error"

    @classmethod
    def parse(cls, value: object) -> Status:
        """Map any reported value to a status; unknown values count as error."""
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        return cls.ERROR

    @property
    def is_failure(self) -> bool:
        """Whether this status makes the run unsuccessful."""
        return self in (Status.FAIL, Status.ERROR)

    @classmethod
    def worst(cls, statuses: Iterable[Status]) -> Status:
        """The worst of ``statuses`` in tmt's order (error, fail, warn, pass,
        info, skip); ValueError if there is none."""
        present = set(statuses)
        for status in _SEVERITY:
            if status in present:
                return status
        raise ValueError("no status to reduce")


# Worst first, as tmt's ResultOutcome.reduce orders outcomes.
_SEVERITY = (Status.ERROR, Status.FAIL, Status.WARN, Status.PASS, Status.INFO, Status.SKIP)


class Reason(enum.StrEnum):
    """Why a result is an error; tells a broken test from broken infrastructure."""

    # the test itself reported/exited with an error or broke the protocol, or
    # atex-ci failed on it (an internal error: running it again would too)
    TEST = "test"
    TIMEOUT = "timeout"  # the test ran past its duration
    INFRA = "infra"  # lost machine, lost connection, missing exit code, setup failure
    INTERRUPTED = "interrupted"  # the run was cancelled (Ctrl-C, SIGTERM)


class MachineState(enum.StrEnum):
    READY = "ready"
    BROKEN = "broken"
    RELEASED = "released"


class RunState(enum.StrEnum):
    """run.json's ``state``: what the last command did with the run directory."""

    #: Created; nothing reserved or run yet.
    NEW = "new"
    #: Machines were reserved (``atex-ci reserve``); nothing ran yet.
    RESERVED = "reserved"
    #: ``atex-ci reserve`` failed and left no machine: ``run`` refuses to fall
    #: back to local slots (a failed reservation is not "nothing reserved").
    RESERVE_FAILED = "reserve-failed"
    RUNNING = "running"
    FINISHED = "finished"
    #: Stopped by Ctrl-C or SIGTERM; ``run --resume`` finishes it.
    INTERRUPTED = "interrupted"
    #: Stopped by an error (the run directory says how far it got).
    CRASHED = "crashed"
    #: Results of other run directories were merged in (``atex-ci collect``).
    COLLECTED = "collected"
    #: Every machine was given back (``atex-ci release``).
    RELEASED = "released"


@dataclass
class Test:
    """One discovered test, ready to be executed on any machine.

    ``name`` is the fmf node name (``/tests/foo``). ``path`` is the directory,
    relative to the fmf root, that the test runs in (its node's directory, or
    the ``path`` key). ``data`` keeps the whole fmf node for reporters and for
    custom schedulers.
    """

    __test__ = False  # not a pytest test class

    name: str
    plan: str
    test: str
    path: str
    duration: float = 300.0
    environment: dict[str, str] = field(default_factory=dict)
    framework: str = "shell"
    require: list[str] = field(default_factory=list)
    recommend: list[str] = field(default_factory=list)
    result: str = "respect"
    tty: bool = False
    serial_number: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    #: beakerlib libraries the test (or its ``recommend``) asks for, as
    #: ``atex_ci.libraries.Library.to_dict()``; fetched before the run starts.
    libraries: list[dict[str, Any]] = field(default_factory=list)
    #: Directories, relative to the uploaded tree, that hold its fetched
    #: libraries (BEAKERLIB_LIBRARY_PATH on the machine).
    library_dirs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Test:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Phase:
    """A plan's prepare or finish step: ``how`` is install or shell."""

    how: str
    name: str = ""
    script: list[str] = field(default_factory=list)
    package: list[str] = field(default_factory=list)
    missing: str = "fail"  # install: "fail" or "skip"
    order: int = 50
    #: install: Copr repositories to enable first (``owner/project``, ``@group/project``).
    copr: list[str] = field(default_factory=list)
    #: ansible: playbooks (paths on the controller) and ansible-playbook's extra arguments.
    playbook: list[str] = field(default_factory=list)
    extra_args: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Phase:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Plan:
    name: str
    environment: dict[str, str] = field(default_factory=dict)
    prepare: list[Phase] = field(default_factory=list)
    finish: list[Phase] = field(default_factory=list)
    tests: list[Test] = field(default_factory=list)
    #: The plan's fmf context (its own ``context`` under the caller's).
    context: dict[str, list[str]] = field(default_factory=dict)
    #: Extra directories uploaded with the tree: path in the uploaded tree ->
    #: directory on the controller (remote trees, beakerlib libraries).
    trees: dict[str, str] = field(default_factory=dict)
    #: Where the plan's own tree is in the uploaded tree ("" for its root; an
    #: imported plan's repository otherwise): TMT_TREE and prepare's directory.
    tree_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "environment": self.environment,
            "prepare": [p.to_dict() for p in self.prepare],
            "finish": [p.to_dict() for p in self.finish],
            "tests": [t.to_dict() for t in self.tests],
            "context": self.context,
            "trees": self.trees,
            "tree_path": self.tree_path,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(
            name=data["name"],
            environment=dict(data.get("environment") or {}),
            prepare=[Phase.from_dict(p) for p in data.get("prepare") or []],
            finish=[Phase.from_dict(p) for p in data.get("finish") or []],
            tests=[Test.from_dict(t) for t in data.get("tests") or []],
            context=dict(data.get("context") or {}),
            trees=dict(data.get("trees") or {}),
            tree_path=str(data.get("tree_path") or ""),
        )


@dataclass
class Machine:
    """A machine reserved for a run, as recorded in machines.json.

    For local slots ``host`` is None and ``workdir`` is the slot's private
    scratch directory. ``key`` is a path relative to the run directory (or
    absolute, for a user's own key); never the key material itself.
    """

    id: str
    provisioner: str
    platform: str = "default"
    host: str | None = None
    port: int = 22
    user: str = "root"
    key: str | None = None
    host_key: str | None = None
    state: MachineState = MachineState.READY
    handle: Any = None
    workdir: str | None = None
    reserved_at: str | None = None
    released_at: str | None = None

    @property
    def is_local(self) -> bool:
        """A local slot: a scratch directory on this host, no address to connect to."""
        return self.host is None

    @property
    def address(self) -> str:
        """``user@host:port``, as messages name a machine; a local slot's is its work directory."""
        if self.host is None:
            return str(self.workdir)
        return f"{self.user}@{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Machine:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["state"] = MachineState(kwargs.get("state", "ready"))
        return cls(**kwargs)


@dataclass
class Result:
    """One line of results.jsonl: the test's own result (``name`` None) or a sub-result."""

    test: str
    status: Status
    plan: str = ""
    name: str | None = None
    platform: str = "default"
    attempt: int = 1
    machine: str | None = None
    start: str | None = None
    end: str | None = None
    duration: float | None = None
    note: str | None = None
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None
    reason: Reason | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Which selected instance of ``test`` in ``plan`` this is (tmt's serial
    #: number); None in results written before instances were told apart.
    serial_number: int | None = None

    @property
    def full_name(self) -> str:
        """The test name with the sub-result name appended, as tmt shows it."""
        if not self.name:
            return self.test
        return self.test.rstrip("/") + "/" + self.name.lstrip("/")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = str(self.status)
        data["reason"] = str(self.reason) if self.reason else None
        if not self.extra:
            del data["extra"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """A Result from one results.jsonl record, which may come from anywhere.

        Raises ValueError (one line, naming the key) when a key has the wrong
        type, so every reader can skip the record instead of failing later on
        it. Unknown status values count as error and unknown reasons are
        dropped, as the results format allows.
        """
        if not isinstance(data, dict):
            raise ValueError("a result must be a JSON object")
        for key, kinds in _RESULT_TYPES.items():
            if key in data and not _has_type(data[key], kinds):
                expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise ValueError(f"result key {key!r} must be {expected}")
        if not data.get("test"):
            raise ValueError("result key 'test' is missing or empty")
        files = data.get("files") or []
        if not all(isinstance(f, str) for f in files):
            raise ValueError("result key 'files' must be a list of strings")
        attempt = data.get("attempt", 1)
        if attempt < 1:
            raise ValueError("result key 'attempt' must be 1 or more")
        duration = data.get("duration")
        if duration is not None and not (0 <= duration < float("inf")):
            raise ValueError("result key 'duration' must be a finite number of seconds >= 0")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["status"] = Status.parse(kwargs.get("status"))
        reason = kwargs.get("reason")
        kwargs["reason"] = (
            Reason(reason) if isinstance(reason, str) and reason in set(Reason) else None
        )
        kwargs["files"] = list(files)
        if kwargs.get("extra") is None:
            kwargs["extra"] = {}
        return cls(**kwargs)


_SURROGATE = re.compile("[\ud800-\udfff]")


def as_read_back(text: str) -> str:
    """``text`` as the run directory's JSON gives it back.

    A name may hold surrogates (a YAML escape such as ``"\\ud83d\\ude00"``
    leaves two); JSON writes them as ``\\u`` escapes, and every JSON reader
    reads a valid pair of them back as the one character it encodes. Keys
    that compare a name in memory with one read back go through this. Text
    without surrogates (nearly all) is returned as it is.
    """
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")


class TestId(NamedTuple):
    """The identity of one test instance on one platform: its one spelling.

    A test may be selected by several plans, and several times by one plan
    (two phases, two names matching it): tmt's serial number (``instance``)
    tells those apart. Names are as the run directory reads them back
    (``as_read_back``), so an id made in memory equals one made from a
    result read from results.jsonl. Jobs (``schedule.Job.id``), results
    (``TestId.of_result``), attempt numbers, ``--resume``, the history and
    every report key tests by it.
    """

    platform: str
    plan: str
    test: str
    #: tmt's serial number; None in results written before instances were told apart.
    instance: int | None

    @classmethod
    def of(cls, platform: str, test: Test) -> TestId:
        """The id of ``test`` run on ``platform``."""
        return cls._read_back(platform, test.plan, test.name, test.serial_number)

    @classmethod
    def of_result(cls, result: Result) -> TestId:
        """The id of the test instance ``result`` belongs to."""
        return cls._read_back(result.platform, result.plan, result.test, result.serial_number)

    @classmethod
    def _read_back(cls, platform: str, plan: str, test: str, instance: int | None) -> TestId:
        return cls(as_read_back(platform), as_read_back(plan), as_read_back(test), instance)

    @property
    def any_instance(self) -> TestId:
        """The id standing for every instance of the test (``instance`` None):
        what a result written before instances were told apart identifies."""
        return self._replace(instance=None)


# Not a pytest test class (a NamedTuple takes no such attribute in its body).
setattr(TestId, "__test__", False)  # noqa: B010


# The JSON types each results.jsonl key may have (bool is excluded from the
# numbers: JSON true is not an attempt number).
_RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "test": (str,),
    "status": (str,),
    "plan": (str,),
    "name": (str, type(None)),
    "platform": (str,),
    "attempt": (int,),
    "machine": (str, type(None)),
    "start": (str, type(None)),
    "end": (str, type(None)),
    "duration": (int, float, type(None)),
    "note": (str, type(None)),
    "files": (list, type(None)),
    "exit_code": (int, type(None)),
    "reason": (str, type(None)),
    "extra": (dict, type(None)),
    "serial_number": (int, type(None)),
}


def _has_type(value: object, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


__all__ = [
    "Machine",
    "MachineState",
    "Phase",
    "Plan",
    "Reason",
    "Result",
    "Status",
    "Test",
    "TestId",
    "as_read_back",
]
