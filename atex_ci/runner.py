"""A run from the toolbox: ``run_tests`` discovers the tests (per platform
where a platform has its own context), checks what would fail everywhere
(a missing ansible-playbook, a run directory holding another run), fetches
beakerlib libraries, takes the run directory's lock and hands the run to the
``Orchestrator``. ``atex_ci.run`` and ``atex-ci run`` call it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError
from .model import MachineState, Plan
from .orchestrator import Orchestrator, run_platforms
from .recorder import Recorder, RunState
from .remote_tree import GitCache
from .run_options import RunOptions, RunSummary
from .rundir import RunDir


def _check_one_run(rundir: RunDir, options: RunOptions) -> None:
    """Refuse what would mix two runs or run tests where the user did not
    mean them to (``_set_aside_earlier_run`` then makes room for a restart)."""
    if options.resume and options.restart:
        raise ConfigError("--resume and --restart contradict each other; choose one")
    if rundir.holds_results() and not options.resume and not options.restart:
        state = rundir.read_run().get("state")
        raise ConfigError(
            f"{rundir.path} already holds a run (state {state!r}); add --resume to finish "
            f"it, --restart to start over (its results move to {rundir.path / 'previous'}), "
            "or use another run directory"
        )
    reserve_failed = rundir.read_run().get("state") == RunState.RESERVE_FAILED
    if reserve_failed and not options.sources and options.local_slots is None:
        ready = [m for m in rundir.read_machines() if m.state == MachineState.READY]
        if not ready:
            raise ConfigError(
                f"'atex-ci reserve' failed in {rundir.path}, so it has no machines (see "
                f"{rundir.path / 'events.jsonl'}); reserve again, or give run the machines "
                "to use (--host, --local...)"
            )


def _set_aside_earlier_run(rundir: RunDir, options: RunOptions) -> None:
    """With ``options.restart``, move the earlier run's files to previous/N/
    (called once every check has passed, so a refused run moves nothing)."""
    if options.restart and rundir.holds_results():
        moved = Recorder(rundir).set_aside_run()
        if options.progress is not None:
            options.progress(f"atex-ci: the earlier run's files are now in {moved}")


def _check_controller_tools(plans: list[Plan]) -> None:
    """Refuse at once what would fail on every machine: a missing ansible-playbook."""
    from .execute.ansible import INSTALL_HINT, ansible_playbook

    for plan in plans:
        for phase in plan.prepare + plan.finish:
            if phase.how == "ansible" and ansible_playbook() is None:
                raise ConfigError(
                    f"plan {plan.name}: phase {phase.name!r} uses 'how: ansible'; {INSTALL_HINT}"
                )


async def run_tests(
    run_dir: str | Path | RunDir,
    fmf_root: str | Path = ".",
    plans: list[str] | tuple[str, ...] = (),
    context: dict[str, str] | None = None,
    options: RunOptions | None = None,
    discovered: list[Plan] | None = None,
    git: GitCache | None = None,
    platform_context: dict[str, dict[str, str]] | None = None,
    on_locked: Callable[[RunDir], None] | None = None,
    warned: set[str] | None = None,
) -> RunSummary:
    """Discover and run tests on the machines of ``run_dir`` (local slots if none).

    The async entry point of the toolbox; ``atex_ci.run`` wraps it for
    synchronous callers. ``discovered`` skips discovery when the caller has
    already done it with the same arguments; ``git`` is the run's repository
    cache (pass the one discovery used, so no repository is fetched twice).
    ``platform_context`` adds context dimensions for one platform's machines
    (``{"c9s": {"distro": "centos-stream-9"}}``): that platform's tests are
    discovered with ``context`` plus these. beakerlib libraries are fetched
    here. ``on_locked`` is called with the run directory once its lock is
    held, before anything runs (to record what the run reserves from).
    ``warned``: the warnings ``discover`` showed for ``discovered`` (each
    platform's discovery then shows only new ones). Raises ConfigError (bad
    input) or InfraError.
    """
    from .discover import discover
    from .libraries import LibraryResolver

    root = Path(fmf_root).resolve()
    git = git or GitCache()
    base = dict(context or {})
    warned = set() if warned is None else warned

    def discover_for(extra: dict[str, str]) -> list[Plan]:
        return discover(root, list(plans), {**base, **extra}, git=git, warned=warned)

    rundir = run_dir if isinstance(run_dir, RunDir) else RunDir.open_or_create(run_dir)
    with rundir.locked():
        _check_one_run(rundir, options or RunOptions())
        if on_locked is not None:
            on_locked(rundir)
        to_run: list[Plan] | dict[str, list[Plan]]
        if platform_context:
            # The same platforms as the Orchestrator's: the machines' and those
            # of the provisioners the run reserves from itself.
            platforms = run_platforms(rundir.read_machines(), options or RunOptions())
            unknown = sorted(set(platform_context) - set(platforms))
            if unknown:
                raise ConfigError(
                    f"context given for platform(s) {', '.join(unknown)}, but the run's machines"
                    f" are {', '.join(platforms)}; reserve with --platform NAME first"
                )
            to_run = {}
            for platform in platforms:
                extra = platform_context.get(platform, {})
                if extra:
                    to_run[platform] = await asyncio.to_thread(discover_for, extra)
                    continue
                if discovered is None:  # once for every platform without a context
                    discovered = await asyncio.to_thread(discover_for, {})
                to_run[platform] = discovered
            # A platform without context of its own shares the plans of
            # another: each plan once, so its libraries are resolved once.
            unique = {id(plan): plan for found in to_run.values() for plan in found}
            all_plans = list(unique.values())
        else:
            if discovered is None:
                discovered = await asyncio.to_thread(discover_for, {})
            to_run = all_plans = discovered
        _check_controller_tools(all_plans)
        # Libraries are fetched once per run, before any machine is touched.
        await asyncio.to_thread(LibraryResolver(git).resolve_plans, all_plans)
        _set_aside_earlier_run(rundir, options or RunOptions())
        Recorder(rundir).run_info(
            fmf={
                "root": str(root),
                "plans": list(plans),
                "context": base,
                **({"platform_context": platform_context} if platform_context else {}),
            }
        )
        return await Orchestrator(rundir, root, to_run, options).run()


__all__ = ["RunOptions", "RunSummary", "run_tests"]
