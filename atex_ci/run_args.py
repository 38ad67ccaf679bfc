"""The options of ``run`` that say how a run goes: per-test caps, reruns, the
history, the share to run (``--shard``, ``--split-from``, ``--rerun-failed``),
when to stop (``--max-failures``, ``--time-budget``), the scheduling policy,
the machine budget and the secrets handed to tests. ``options()`` declares
them, in the order ``run --help`` shows them, for cli.py to put on the
command; ``RunArgs`` checks their values and turns them into ``RunOptions``
(run_options.py).

cli.py imports this module only when ``run`` is parsed or shown, and what a
value needs (the scheduler, the pool, the history) only when it is read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import click

    from .run_options import RunOptions


def options() -> list[click.Option]:
    """``run``'s options of this module, as click parameters."""
    import click

    from .masking import take_secret_env

    return [
        click.Option(
            ["--max-output"], default="1G", show_default=True, help="Per-test output cap."
        ),
        click.Option(
            ["--max-upload"],
            default="1G",
            show_default=True,
            help="Per-test cap on uploaded files.",
        ),
        click.Option(
            ["--max-reruns"],
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Run a failed or errored test again up to N times, preferring another machine; "
            "a test that passes on a rerun is flaky.",
        ),
        click.Option(
            ["--history"],
            type=click.Path(exists=True, path_type=Path),
            help="Earlier durations (a run directory or a history.json): longest tests first, "
            "balanced shards.",
        ),
        click.Option(
            ["--shard"],
            metavar="I/N",
            help="Run only share I of N (1-based), balanced by --history; 'collect' merges the "
            "shards.",
        ),
        click.Option(
            ["--split-from"],
            type=click.Path(file_okay=False, exists=True, path_type=Path),
            metavar="PREV",
            help="With --shard: take the split recorded in run directory PREV (split.json) "
            "instead of computing one from --history.",
        ),
        click.Option(
            ["--rerun-failed"],
            type=click.Path(file_okay=False, exists=True, path_type=Path),
            metavar="PREV",
            help="Run only the tests whose final result in run directory PREV (or a collected "
            "one) was fail, error or not run, with PREV's recorded shard split; then "
            "'collect -d OUT PREV RUN'.",
        ),
        click.Option(
            ["--max-failures"],
            type=click.IntRange(min=1),
            metavar="N",
            help="After N final failures or errors no new test starts; the rest are "
            "'not run: stopped after N failures'.",
        ),
        click.Option(["--exit-first"], is_flag=True, help="The same as --max-failures 1."),
        click.Option(
            ["--time-budget"],
            metavar="DURATION",
            help="Start no test that is not expected to end inside DURATION (e.g. 90m, 5h30m) "
            "from now, keeping time to release and report; the rest are 'not run: time "
            "budget' (--resume runs them).",
        ),
        click.Option(
            ["--scheduler", "scheduler_spec"],
            metavar="MODULE:CLASS",
            help="Your own scheduling policy: a subclass of atex_ci.schedule.Scheduler.",
        ),
        click.Option(
            ["--keep-machines"],
            is_flag=True,
            help="Keep reserved machines for another run; by default each is released as soon "
            "as no test is left for it, and a later 'release' skips it.",
        ),
        click.Option(
            ["--max-machines"],
            type=click.IntRange(min=1),
            help="Machines the run may use in all, replacements of lost or discarded ones "
            "included (default: no limit).",
        ),
        click.Option(
            ["--max-failed-setups"],
            type=click.IntRange(min=0),
            default=3,
            show_default=True,
            help="Stop replacing machines after this many failed to come up or to set up.",
        ),
        click.Option(
            ["--secret-env", "secret_env"],
            multiple=True,
            metavar="NAME",
            callback=lambda _ctx, _param, names: take_secret_env(names),
            help="Hand the environment variable NAME to every test (repeatable); its value, "
            "base64 and URL-encoded, is masked as *** in output, files, notes and reports, "
            "never recorded.",
        ),
    ]


class RunArgs:
    """What the options of ``options()`` ask for; every value that can be
    checked without the tests is checked when it is made."""

    def __init__(self, values: dict[str, Any], *, run_dir: Path | None, started: float) -> None:
        """``values``: the command's values as click passes them (others are
        left alone); ``started``: the monotonic time the time budget counts from."""
        from .collect import load_history
        from .selection import parse_shard

        self.max_output: str = values["max_output"]
        self.max_upload: str = values["max_upload"]
        self.max_reruns: int = values["max_reruns"]
        self.history: Path | None = values["history"]
        shard: str | None = values["shard"]
        self.split_from: Path | None = values["split_from"]
        self.rerun_failed: Path | None = values["rerun_failed"]
        self.keep_machines: bool = values["keep_machines"]
        self.max_machines: int | None = values["max_machines"]
        self.max_failed_setups: int = values["max_failed_setups"]
        self.shard = parse_shard(shard) if shard is not None else None
        self.policy = _policy(
            values["max_failures"], values["exit_first"], values["time_budget"], started
        )
        if self.split_from is not None and self.shard is None:
            raise ConfigError("--split-from needs --shard I/N (the share to run)")
        if self.rerun_failed is not None and run_dir is not None:
            _check_rerun_dir(self.rerun_failed, run_dir)
        self.scheduler_factory = _scheduler_class(values["scheduler_spec"])
        self.durations = load_history(self.history) if self.history is not None else None

    def run_options(self, **more: Any) -> RunOptions:
        """The ``RunOptions`` these values ask for, with ``more`` of its fields
        (the local slots, the progress display...). ConfigError for a bad size."""
        from .execute.limits import Limits, parse_size
        from .pool import PoolLimits
        from .run_options import RunOptions
        from .schedule import History
        from .selection import Selection

        return RunOptions(
            limits=Limits(
                max_output=parse_size(self.max_output), max_upload=parse_size(self.max_upload)
            ),
            scheduler_factory=self.scheduler_factory,
            history=History(self.durations) if self.durations is not None else None,
            max_reruns=self.max_reruns,
            shard=self.shard,
            pool=PoolLimits(
                max_machines=self.max_machines, max_failed_setups=self.max_failed_setups
            ),
            keep_machines=self.keep_machines,
            selection=Selection(
                shard=self.shard,
                split_from=self.split_from,
                rerun_failed=self.rerun_failed,
                history_source=str(self.history) if self.history is not None else None,
            ),
            policy=self.policy,
            **more,
        )


def _policy(
    max_failures: int | None, exit_first: bool, time_budget: str | None, started: float
) -> dict[str, Any]:
    """The scheduler's options for ``--max-failures``/``--exit-first`` and
    ``--time-budget`` (only those given: a policy of your own need not take them)."""
    from .duration import parse_duration

    if exit_first and max_failures not in (None, 1):
        raise ConfigError("--exit-first is --max-failures 1; give one of them")
    policy: dict[str, Any] = {}
    if exit_first or max_failures is not None:
        policy["max_failures"] = max_failures or 1
    if time_budget is not None:
        try:
            # "5h30m" as well as fmf's "5h 30m": a budget is typed, not copied from fmf.
            seconds = parse_duration(re.sub(r"(?<=[smhd])(?=\d)", " ", time_budget))
        except ValueError as exc:
            raise ConfigError(f"--time-budget: {exc}") from None
        if seconds <= 0:
            raise ConfigError(f"--time-budget {time_budget!r}: must be more than nothing")
        policy.update(time_budget=seconds, budget_start=started)
    return policy


def _check_rerun_dir(prev: Path, run_dir: Path) -> None:
    """ConfigError when ``--rerun-failed PREV`` would run into PREV itself."""
    try:
        same = prev.resolve() == run_dir.resolve()
    except OSError:
        same = False
    if same:
        raise ConfigError(
            f"--rerun-failed {prev}: give another run directory (-d NEW), then merge "
            f"them with 'atex-ci collect -d OUT {prev} NEW'"
        )


def _scheduler_class(spec: str | None) -> Any:
    """``--scheduler MODULE:CLASS``'s class; the built-in Scheduler without it."""
    from .plugins import load_class
    from .schedule import Scheduler

    if spec is None:
        return Scheduler
    return load_class(spec, Scheduler, "scheduler")


__all__ = ["RunArgs", "options"]
