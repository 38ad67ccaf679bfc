"""A plan's phases on one machine: prepare (install, copr, ansible, shell
scripts) once before the plan's first test there, finish after its last, and
installing what a test requires. Test execution itself is ``executor.py``'s.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

from ..duration import format_limit
from ..model import Machine, Phase, Plan
from ..transport.base import Transport
from .ansible import run_playbooks
from .environment import PLAN_SOURCE_SCRIPT, SOURCE_PLAN_SCRIPT, WorkDir, export
from .packages import NO_DNF_EXIT, copr_script, install_script
from .reaper import OWNER_VARIABLE, phase_owner

#: Bound on one prepare/finish script or one package installation: generous,
#: but a hung package manager must not hold a machine for ever.
PHASE_TIMEOUT = 3600.0


class PhaseError(Exception):
    """A plan's prepare/finish step or a requirement install failed on a machine."""


class PlanPhases:
    """The prepare and finish phases of the plans run on one machine.

    ``key_root``: the directory a relative ``machine.key`` is relative to
    (the run directory), for ansible's connection.
    """

    def __init__(
        self, transport: Transport, machine: Machine, work: WorkDir, *, key_root: Path
    ) -> None:
        self.transport = transport
        self.machine = machine
        self.work = work
        self.key_root = key_root
        self._prepared: set[str] = set()

    async def prepare(self, plan: Plan) -> None:
        """Run the plan's prepare phases once on this machine. Raises PhaseError."""
        if plan.name in self._prepared:
            return
        plan_dir = self.work.plan_dir(plan.name)
        q = shlex.quote
        rc, _out, err = await self.transport.output(
            f"mkdir -p {q(plan_dir)}/data && touch {q(plan_dir)}/environment "
            f"{q(plan_dir)}/data/{PLAN_SOURCE_SCRIPT}"
        )
        if rc != 0:
            raise PhaseError(f"cannot create {plan_dir}: {tail(err)}")
        for phase in plan.prepare:
            await self._run_phase(plan, phase, "prepare")
        self._prepared.add(plan.name)

    async def finish(self, plan: Plan) -> None:
        """Run the plan's finish phases on this machine (if it was prepared)."""
        if plan.name not in self._prepared:
            return
        for phase in plan.finish:
            await self._run_phase(plan, phase, "finish")

    async def _run_phase(self, plan: Plan, phase: Phase, stage: str) -> None:
        label = f"{stage} {phase.name or phase.how} of plan {plan.name}"
        if phase.how == "install":
            if phase.copr:
                rc, out, err = await bounded(self.transport, copr_script(phase.copr), label)
                if rc == NO_DNF_EXIT:
                    raise PhaseError(f"{label}: 'copr' needs dnf, and {self.machine.id} has none")
                if rc != 0:
                    raise PhaseError(f"{label}: enabling Copr failed: {tail(out + err)}")
            await install(
                self.transport, phase.package, missing_ok=phase.missing == "skip", what=label
            )
            return
        if phase.how == "ansible":
            try:
                rc, output = await run_playbooks(
                    self.machine, self.key_root, phase.playbook, phase.extra_args, PHASE_TIMEOUT
                )
            except FileNotFoundError as exc:
                raise PhaseError(f"{label}: {exc}") from None
            if rc != 0:
                raise PhaseError(f"{label} failed (exit {rc}): {tail(output.encode())}")
            return
        for script in phase.script:
            env = {
                **self.work.plan_environment(plan),
                **plan.environment,
                # Last: a plan's own variables never hide its scripts from the reaper.
                OWNER_VARIABLE: phase_owner(self.work.base),
            }
            command = (
                f"{export(env)}; cd {shlex.quote(self.work.plan_tree(plan))} && "
                f"bash -c {shlex.quote(SOURCE_PLAN_SCRIPT + script)}"
            )
            rc, out, err = await bounded(self.transport, command, label)
            if rc != 0:
                raise PhaseError(f"{label} failed (exit {rc}): {tail(out + err)}")


async def install(
    transport: Transport, packages: list[str], *, missing_ok: bool, what: str
) -> None:
    """Install packages with the machine's package manager if they are missing.

    Raises PhaseError with the package manager's message on failure.
    """
    if not packages:
        return
    rc, out, err = await bounded(transport, install_script(packages, missing_ok), what)
    if rc != 0:
        raise PhaseError(f"{what}: installing {' '.join(packages)} failed: {tail(out + err)}")


async def bounded(transport: Transport, command: str, what: str) -> tuple[int, bytes, bytes]:
    """Run ``command``, bounded by PHASE_TIMEOUT (PhaseError when it takes longer)."""
    try:
        async with asyncio.timeout(PHASE_TIMEOUT):
            return await transport.output(command)
    except TimeoutError:
        raise PhaseError(f"{what}: no end after {format_limit(PHASE_TIMEOUT)}") from None


def tail(data: bytes, limit: int = 1500) -> str:
    """The end of a command's output, for an error message."""
    text = data.decode(errors="replace").strip()
    return text[-limit:] if text else "(no output)"


__all__ = ["PHASE_TIMEOUT", "PhaseError", "PlanPhases", "bounded", "install", "tail"]
