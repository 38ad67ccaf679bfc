"""Provisioners: local slots, static SSH hosts, Testing Farm, and your own.

``get_provisioner(kind, rundir)`` gives the provisioner that manages machines
recorded with ``provisioner: kind`` (a built-in name or ``module:Class``),
which its class builds from the recipe in run.json;
``record_reservations`` drives a provisioner's ``reserve`` and records each
machine in machines.json the moment it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, first_atex_error
from ..model import Machine, MachineState, RunState
from ..plugins import load_class
from ..recorder import Recorder
from ..rundir import RunDir
from .base import Provisioner

if TYPE_CHECKING:
    from .options import Reservation

log = logging.getLogger("atex_ci")

#: Built-in provisioners: kind -> "module:Class" inside this package.
BUILTIN = {
    "local": "atex_ci.provision.local:LocalProvisioner",
    "static": "atex_ci.provision.static:StaticProvisioner",
    "testing-farm": "atex_ci.provision.testingfarm:TestingFarmProvisioner",
}


def provisioner_class(kind: str) -> type[Provisioner]:
    """The class for a built-in kind or a ``module:Class`` spec; ConfigError if none."""
    spec = BUILTIN.get(kind, kind)
    if ":" not in spec:
        raise ConfigError(
            f"unknown provisioner {kind!r}: use one of {', '.join(BUILTIN)} or module:Class"
        )
    return load_class(spec, Provisioner, "provisioner")  # type: ignore[type-abstract]


def provisioner_kind(provisioner: Provisioner) -> str:
    """What to record as Machine.provisioner so a later command finds the same class."""
    cls = type(provisioner)
    if BUILTIN.get(cls.kind) == f"{cls.__module__}:{cls.__qualname__}":
        return cls.kind
    return f"{cls.__module__}:{cls.__qualname__}"


def get_provisioner(kind: str, rundir: RunDir, platform: str | None = None) -> Provisioner:
    """The provisioner that manages machines recorded with ``provisioner: kind``,
    built by its class from the recipe run.json holds (``from_recipe``); with
    ``platform``, one that can reserve another machine of that platform if
    its recipe allows (``can_replace``).
    """
    cls = provisioner_class(kind)

    def recorded() -> dict[str, Any] | None:
        found = rundir.read_run().get("provisioner")
        return found if isinstance(found, dict) and found.get("kind") == kind else None

    try:
        return cls.from_recipe(rundir, recorded, platform)
    except TypeError as exc:
        raise ConfigError(f"cannot create provisioner {kind}: {exc}") from None


async def record_reservations(
    rundir: RunDir,
    provisioner: Provisioner,
    count: int,
    on_ready: Callable[[Machine], None] | None = None,
    *,
    give_back_ready: bool = True,
    record: Callable[[Machine], None] | None = None,
) -> list[Machine]:
    """Reserve ``count`` machines, recording each in machines.json once it is ready
    (through ``record``: a run's event stream; by default a Recorder).

    machines.json is rewritten atomically for every machine, so a ``run``
    started meanwhile sees every ready machine. If this call is cancelled
    (Ctrl-C, SIGTERM), the provisioner gives back what it had requested and
    not yet yielded, and (with ``give_back_ready``) the machines already
    recorded by this call are released too; then the CancelledError goes on.
    Without ``give_back_ready`` those stay the caller's (a run releases them
    when it is done with them). Errors (InfraError when fewer machines could
    be had) come after every machine that was ready has been recorded.
    """
    kind = provisioner_kind(provisioner)
    record = record or Recorder(rundir).machine_reserved
    machines: list[Machine] = []
    try:
        async with contextlib.aclosing(provisioner.reserve(count)) as stream:
            async for machine in stream:
                machine.provisioner = kind
                record(machine)
                machines.append(machine)
                if on_ready is not None:
                    on_ready(machine)
    except asyncio.CancelledError:
        if give_back_ready:
            await asyncio.shield(_give_back(rundir, provisioner, machines))
        raise
    return machines


async def reserve_recorded(
    rundir: RunDir,
    wanted: Reservation,
    jobs: list[tuple[Provisioner, int]],
    on_ready: Callable[[Machine], None] | None = None,
) -> list[Machine]:
    """``atex-ci reserve``: record what is wanted, then reserve ``jobs`` one
    provisioner after the other (``record_reservations``), and say in run.json
    how it went: RESERVED while any machine is held; a failure with none held
    is recorded, so that a later ``run`` there does not take "no machines"
    for "run on local slots". Called with the run directory locked."""
    wanted.record(rundir)
    machines: list[Machine] = []
    failure: BaseException | None = None
    try:
        for provisioner, n in jobs:
            machines += await record_reservations(rundir, provisioner, n, on_ready=on_ready)
    except Exception as exc:
        failure = exc
        raise
    finally:
        recorder = Recorder(rundir)
        if _holds_machines(rundir):
            recorder.state(RunState.RESERVED)
        elif failure is not None:
            leaf = first_atex_error(failure) if isinstance(failure, BaseExceptionGroup) else failure
            recorder.reservation_failed(wanted.platform, str(leaf or failure), None)
            recorder.state(RunState.RESERVE_FAILED)
    return machines


def _holds_machines(rundir: RunDir) -> bool:
    return any(m.state != MachineState.RELEASED for m in rundir.read_machines())


async def _give_back(rundir: RunDir, provisioner: Provisioner, machines: list[Machine]) -> None:
    """Release the machines an interrupted reservation had already recorded."""
    await provisioner.release_all()
    recorder = Recorder(rundir)
    for machine in machines:
        if machine.released_at:
            recorder.machine_released(machine)
        else:
            recorder.machine_changed(machine)


__all__ = [
    "BUILTIN",
    "Provisioner",
    "get_provisioner",
    "provisioner_class",
    "provisioner_kind",
    "record_reservations",
    "reserve_recorded",
]
