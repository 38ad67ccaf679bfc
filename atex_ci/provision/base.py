"""The Provisioner interface: where machines come from and how they go away.

A provisioner is an object bound to one run directory. ``reserve(count)`` is
an async iterator that yields each machine (a ``Machine``) as soon as it is
ready to take tests, so a caller can start working on the first one while the
others are still coming. ``release(machine)`` gives one machine back; it is
idempotent and safe to call from any task, including clean-up after a
failure. ``release_all()`` releases every machine this instance reserved and
has not released yet. ``transport(machine)`` builds a (not yet connected)
Transport to a machine and ``work_dir`` names the run's directory on it.

Recording machines in machines.json is the caller's job (see
``atex_ci.provision.record_reservations``), so a provisioner of your own only
has to produce ``Machine`` objects. Implementations may only add arguments
that have defaults: the base signatures are the API.

A provisioner also owns how it is asked for and remembered: ``options()``
declares its command-line options (``reserve`` and ``run`` take them, see
``options.py``), ``recipe_from_options`` turns their values into a ``Recipe``
(keyword arguments, the secret ones kept apart), ``write_recipe`` says what
run.json keeps of it (never a secret), and ``from_recipe`` builds the
provisioner again from that record for ``run`` and ``release``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InfraError
from ..model import Machine, MachineState
from ..pathnames import COMPONENT_MAX_BYTES
from ..rundir import RunDir, now_iso
from ..transport.base import Transport
from ..workarea import remote_work_dir, safe_id

if TYPE_CHECKING:
    import click

log = logging.getLogger("atex_ci")

#: Seconds release_all() waits for all releases together before giving up on
#: the rest (each provisioner bounds its own calls well below this).
RELEASE_ALL_TIMEOUT = 120.0


@dataclass
class Recipe:
    """How to make a provisioner: its kind (as ``Machine.provisioner`` records
    it), platform and keyword arguments. ``options`` may be written to
    run.json; ``unrecorded`` (secrets, and what only makes sense with them)
    never is."""

    kind: str
    platform: str
    options: dict[str, Any]
    unrecorded: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """Every keyword argument of the provisioner's class, recorded or not."""
        return {**self.options, **self.unrecorded}


#: Reads the recipe run.json holds for a provisioner kind (None: none
#: recorded); called only when needed, as run.json may be damaged.
RecipeReader = Callable[[], dict[str, Any] | None]


class Provisioner(abc.ABC):
    """Reserves and releases machines for one run directory.

    Subclasses set ``kind`` (stored in ``Machine.provisioner``; a provisioner
    of your own is recorded as ``module:Class``) and implement ``reserve``
    and ``release``; ``transport`` and ``work_dir`` default to SSH with the
    machine's recorded host, user, key and pinned host key.
    """

    #: The value stored in Machine.provisioner.
    kind: ClassVar[str] = ""

    def __init__(self, rundir: RunDir, platform: str = "default") -> None:
        self.rundir = rundir
        self.platform = platform
        #: Machines this instance yielded and has not released yet.
        self.reserved: dict[str, Machine] = {}

    @abc.abstractmethod
    def reserve(self, count: int) -> AsyncGenerator[Machine, None]:
        """Yield up to ``count`` machines, each as soon as it is ready.

        Write it as an ``async def`` generator. Call ``self._reserved(machine)``
        on each machine before yielding it, so ``release_all`` knows it. When
        fewer than ``count`` can be had, yield the ones that can and then raise
        InfraError saying why. If the caller stops iterating or is cancelled,
        everything requested but not yet yielded must be given back before the
        generator finishes (``finally``, shielded, bounded in time).
        """

    @abc.abstractmethod
    async def release(self, machine: Machine) -> None:
        """Give the machine back and mark it released (state, released_at).

        Idempotent: a machine already released or already gone is not an
        error. Raise InfraError (one line) only when the machine may still be
        held, so that a later release can try again.
        """

    async def release_all(self) -> list[Machine]:
        """Release every machine this instance reserved; never raises InfraError.

        Returns the machines that could not be released (each logged).
        """
        machines = list(self.reserved.values())
        failed: list[Machine] = []

        async def one(machine: Machine) -> None:
            try:
                await self.release(machine)
            except Exception as exc:  # every failure is reported, none stops the others
                log.warning("releasing %s: %s", machine.id, exc)
                failed.append(machine)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RELEASE_ALL_TIMEOUT):
                await asyncio.gather(*(one(m) for m in machines))
        return failed

    # -- how it is asked for and remembered (the command line, run.json) ----------

    @classmethod
    def options(cls) -> list[click.Option]:
        """The command-line options this provisioner adds to ``reserve`` and
        ``run``, as ``click.Option`` objects (create new ones on each call).
        Each option's parameter name is a keyword argument of ``__init__``.
        Default: none (``-o KEY=VALUE`` still passes keyword arguments)."""
        return []

    @classmethod
    def recipe_from_options(
        cls, kind: str, platform: str, values: dict[str, Any], extra: dict[str, str]
    ) -> Recipe:
        """The recipe for ``values`` (this class's declared options, by
        parameter name, as click parsed them) and ``extra`` (``-o KEY=VALUE``).
        Only parses: a bad value is a ConfigError, raised before anything is
        created. Default: every option given is a recorded keyword argument;
        keep a secret in ``Recipe.unrecorded`` (better: read it from the
        environment)."""
        given = {k: v for k, v in values.items() if v not in (None, ())}
        return Recipe(kind, platform, {**given, **extra})

    @classmethod
    def write_recipe(cls, recipe: Recipe) -> dict[str, Any]:
        """What run.json records of ``recipe`` (never ``unrecorded``)."""
        return {"kind": recipe.kind, "options": recipe.options, "platform": recipe.platform}

    @classmethod
    def from_recipe(
        cls, rundir: RunDir, recorded: RecipeReader, platform: str | None = None
    ) -> Provisioner:
        """The provisioner that manages this kind's machines in ``rundir``,
        built from its recorded options; with ``platform``, one that reserves
        for that platform (a replacement). TypeError if the options do not
        fit the class."""
        found = recorded()
        provisioner = cls(rundir, **dict((found or {}).get("options") or {}))
        if platform is not None:
            provisioner.platform = platform
        return provisioner

    def platforms(self) -> set[str]:
        """The platforms of the machines ``reserve`` yields (known before it
        runs, so that a run discovers their tests up front). Default: this
        instance's ``platform``."""
        return {self.platform}

    def can_replace(self) -> bool:
        """Whether ``reserve(1)`` on this instance gives another machine like the
        ones it made, to replace one that was lost or discarded mid-run.

        Default: yes. Say no when a new machine cannot be had (existing hosts)
        or would differ (options that were not recorded).
        """
        return True

    def transport(self, machine: Machine) -> Transport:
        """A (not yet connected) transport to the machine; SSH by default."""
        return ssh_transport(machine, self.rundir)

    def work_dir(self, machine: Machine, run_id: str) -> str:
        """The per-run work directory on the machine (tree, wrapper, test dirs):
        in the user's own work area (``workarea.py``). ConfigError for an
        id that is not a plain path component."""
        # The machine id too: one host may be reserved twice (two workers on it).
        return remote_work_dir(machine.user, run_id, machine.id)

    # -- helpers for implementations ----------------------------------------------

    def _reserved(self, machine: Machine) -> Machine:
        """Remember a machine about to be yielded (for release_all)."""
        self.reserved[machine.id] = machine
        return machine

    def _released(self, machine: Machine) -> None:
        """Mark a machine released and forget it."""
        machine.state = MachineState.RELEASED
        machine.released_at = machine.released_at or now_iso()
        self.reserved.pop(machine.id, None)

    def _unique_id(self, base: str, taken: set[str] | None = None) -> str:
        """``base`` (as a valid id), or ``base-2``, ``base-3``... if the run already
        has that machine id."""
        taken = set(taken or ()) | {m.id for m in self.rundir.read_machines()}
        taken |= set(self.reserved)
        # An id names the machine's work directory: never a path of its own
        # (a platform or a Testing Farm request id may hold anything).
        base = safe_id(base)
        machine_id, n = base, 1
        while machine_id in taken:
            n += 1
            suffix = f"-{n}"
            # A valid id is ASCII: cut the base so that the id stays one.
            machine_id = f"{base[: COMPONENT_MAX_BYTES - len(suffix)]}{suffix}"
        return machine_id


def generate_run_key(rundir: RunDir, prefix: str) -> tuple[str, str]:
    """A fresh ed25519 key pair in RUN/keys (private key 0600), named
    ``PREFIX-N``: (its path relative to RUN, its public line without comment).
    ``release`` deletes RUN/keys."""
    from ..transport.asyncssh_import import load_asyncssh

    asyncssh = load_asyncssh()  # often the run's first use of it: no compiler probe

    keys = rundir.keys_dir
    n = 1
    while (keys / f"{prefix}-{n}").exists():
        n += 1
    path = keys / f"{prefix}-{n}"
    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    kind, blob, *_comment = key.export_public_key("openssh").decode().split()
    public = f"{kind} {blob}"
    path.with_name(path.name + ".pub").write_text(public + "\n")
    return f"keys/{path.name}", public


def ssh_transport(machine: Machine, rundir: RunDir) -> Transport:
    """An SSHTransport to a recorded machine, verifying its pinned host key.

    A relative ``machine.key`` is relative to the run directory (keys/...).
    """
    from ..transport.ssh import SSHTransport

    if machine.host is None:
        raise ValueError(f"machine {machine.id} has no host to connect to")
    key = machine.key
    if key and not Path(key).is_absolute():
        key = str(rundir.path / key)
    return SSHTransport(
        machine.host, machine.port, machine.user, key, known_host_key=machine.host_key
    )


async def try_ssh_login(machine: Machine, rundir: RunDir, connect_timeout: float) -> str | None:
    """One attempt to log in to a new machine with its run key and run ``true``:
    None once it works (its host key then pinned in ``machine.host_key``), else
    why not, for the caller that waits for the machine to let us in."""
    from ..transport.ssh import SSHTransport

    assert machine.host is not None
    transport = SSHTransport(
        machine.host,
        machine.port,
        machine.user,
        str(rundir.path / str(machine.key)),
        retries=0,
        connect_timeout=connect_timeout,
    )
    try:
        await transport.connect()
        rc, _out, _err = await transport.output("true")
        if rc == 0:
            machine.host_key = transport.host_key
            return None
        return f"'true' exited {rc}"
    except InfraError as exc:
        return str(exc)
    finally:
        await transport.close()
