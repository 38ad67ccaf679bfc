"""The ``atex-ci`` command line: each command parses options and calls the API.

The options of a concept are declared by the module that owns it, which also
turns their values into what the API takes: the reservation options by
provision/options.py, ``run``'s scheduling, selection and stop options by
run_args.py, ``report``'s gating options by gating.py. This module only puts
them on the commands.

Exit codes: 0 all passed, 1 test failures, 2 usage or configuration error,
3 infrastructure error, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
A user error is one line on stderr, ``atex-ci: <what is wrong and what to
do>``, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from . import environ_secrets
from .errors import AtexError, ConfigError, Interrupted, StorageError, first_atex_error
from .signals import run_async

log = logging.getLogger("atex_ci")

NEW_RUN_DIR_HELP = "Run directory that holds the run's state (created if missing)."
EXISTING_RUN_DIR_HELP = "An existing run directory."


def _run_dir_option(
    required: bool = True, help: str = NEW_RUN_DIR_HELP
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "-d",
        "--run-dir",
        "run_dir",
        type=click.Path(file_okay=False, path_type=Path),
        required=required,
        help=help,
    )


def _fail(message: str, code: int) -> NoReturn:
    from .report.text import display_text

    # A message may quote a name from the tree: printed escaped, never raw.
    click.echo(f"atex-ci: {display_text(message)}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="atex-ci", prog_name="atex-ci")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (repeatable).")
def cli(verbose: int) -> None:
    """Reserve test machines, run FMF tests on them in parallel, report the results.

    Commands share state through a run directory (-d): reserve -> run -> report -> release.
    """
    # Before anything can start a test: no test may see a token (docs/test-limits.md).
    environ_secrets.take()
    logging.basicConfig(format="atex-ci: %(message)s", stream=sys.stderr)
    _set_verbosity(verbose)


def _set_verbosity(verbose: int) -> None:
    """Log levels for ``-v`` given ``verbose`` times in all."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.getLogger().setLevel(level)
    logging.getLogger("asyncssh").setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


def _command_verbosity(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    """``-v`` after the command name counts as before it (``run -v`` = ``-v run``)."""
    if value:
        before = ctx.find_root().params.get("verbose", 0) or 0
        _set_verbosity(before + value)


class _Command(click.Command):
    """A command that also takes options declared by the modules that own them:
    ``declared`` returns them (importing their module only when the command is
    parsed or shown), and they come after the command's own options."""

    def __init__(
        self,
        *args: Any,
        declared: Callable[[], list[click.Option]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._declare = declared
        self._declared: list[click.Option] | None = None

    def declared_params(self, ctx: click.Context) -> list[click.Option]:
        # The same objects on every call: click tells parameters apart by identity.
        if self._declared is None:
            self._declared = self._declare() if self._declare is not None else []
        return self._declared

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        # After the command's own options, before -v and --help.
        own = [p for p in self.params if p.name != "verbose"]
        last = [p for p in super().get_params(ctx) if p not in own]
        return [*own, *self.declared_params(ctx), *last]


class _ReservingCommand(_Command):
    """A command that takes the reservation options (``reserve``, and ``run``
    when it reserves its own machines): those every provisioner declares
    (provision/options.py), asked for when the command line is parsed, so
    that ``--provisioner module:Class`` brings its class's own options along,
    to ``--help`` too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from .provision.options import provisioner_spec

        ctx.meta[f"atex_ci.{self.name}.provisioner"] = provisioner_spec(args)
        return super().parse_args(ctx, args)

    def declared_params(self, ctx: click.Context) -> list[click.Option]:
        # ctx.meta is shared with the parent context: keyed by command.
        key = f"atex_ci.{self.name}.options"
        reservation = ctx.meta.get(key)
        if reservation is None:
            from .provision.options import reservation_options

            reservation = reservation_options(ctx.meta.get(f"atex_ci.{self.name}.provisioner"))
            ctx.meta[key] = reservation
        return [*super().declared_params(ctx), *reservation]


def _run_args() -> list[click.Option]:
    from . import run_args

    return run_args.options()


def _gating_options() -> list[click.Option]:
    from . import gating

    return gating.options()


@cli.command(cls=_ReservingCommand)
@_run_dir_option()
@click.option("--local", "local", type=click.IntRange(min=1), help="Reserve N local slots.")
def reserve(run_dir: Path, local: int | None, **options: Any) -> None:
    """Reserve machines for a run and record them in RUN/machines.json.

    Each machine is recorded as soon as it is ready. Without options, reserves
    one local slot per CPU. Interrupted (Ctrl-C, SIGTERM), it gives back what it
    had requested.
    """
    from .model import Machine
    from .provision import reserve_recorded
    from .provision.options import Reservation
    from .rundir import RunDir

    # Everything that can be checked is checked before the run directory is made.
    wanted = Reservation(local, options)

    def announce(machine: Machine) -> None:
        click.echo(f"atex-ci: reserved {machine.id} ({machine.address})", err=True)

    rundir = RunDir.open_or_create(run_dir)
    jobs = wanted.sources(rundir, default_local=True)
    with rundir.locked():
        try:
            machines = run_async(lambda: reserve_recorded(rundir, wanted, jobs, on_ready=announce))
        except Interrupted as exc:
            _fail(
                "interrupted; every machine this command had requested was given back",
                exc.exit_code,
            )
    click.echo(f"atex-ci: {len(machines)} machine(s) ready in {run_dir}", err=True)


@cli.command(cls=_ReservingCommand, declared=_run_args)
@_run_dir_option(required=False)
@click.option(
    "--fmf-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Root of the fmf tree (the directory with .fmf/).",
)
@click.option("--plan", "plans", multiple=True, metavar="REGEX", help="Plans to run (repeatable).")
@click.option(
    "-c",
    "--context",
    "context",
    multiple=True,
    metavar="[PLATFORM:]KEY=VALUE",
    help="fmf context for adjust and filters (repeatable); with PLATFORM: only for the "
    "machines of that platform (reserve --platform), whose tests are discovered with it.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the selected test names (escaped as the reports spell them) and exit.",
)
@click.option(
    "--local",
    "local",
    type=click.IntRange(min=1),
    help="Local slots to use when no machines are reserved (default: CPUs).",
)
@click.option("--resume", is_flag=True, help="Skip tests that already have a final result.")
@click.option(
    "--restart",
    is_flag=True,
    help="Start over in a run directory that holds a run: its results, events, artifacts "
    "and reports move to RUN/previous/N/ first (the machines stay reserved).",
)
def run(
    run_dir: Path | None,
    fmf_root: Path,
    plans: tuple[str, ...],
    context: tuple[str, ...],
    dry_run: bool,
    local: int | None,
    resume: bool,
    restart: bool,
    **values: Any,
) -> None:
    """Discover FMF tests and run them on the reserved machines.

    With the options of 'reserve' (--host, --hosts, --provisioner...), it
    reserves machines itself and starts tests on each as soon as it is ready.
    With no machines at all, it uses local slots. Each machine is released as
    soon as no test is left for it; one that is lost or discarded is replaced
    through its provisioner while the budget allows.
    """
    started = time.monotonic()  # the time budget counts from here
    from .discover import discover, require_tests, split_platform_contexts
    from .provision.options import Reservation
    from .remote_tree import GitCache
    from .run_args import RunArgs

    fmf_context, platform_context = split_platform_contexts(context)
    wanted = Reservation.for_run(local, values)  # reads only the reservation options
    asked = RunArgs(values, run_dir=run_dir, started=started)
    git = GitCache()  # one per run: each repository is fetched once
    warned: set[str] = set()  # an unknown key is warned about once, not once per platform
    found = discover(fmf_root, plans, fmf_context, git=git, warned=warned)
    if dry_run:
        from .discover import dry_run_lines

        for line in dry_run_lines(
            found, fmf_root, plans, fmf_context, platform_context, git=git, warned=warned
        ):
            click.echo(line)
        return
    if run_dir is None:
        raise ConfigError("missing option '-d/--run-dir' (needed unless --dry-run)")
    require_tests(found)
    from .progress import StderrProgress, status_interval
    from .rundir import RunDir
    from .runner import run_tests

    display = StderrProgress()
    options = asked.run_options(
        local_slots=local,
        resume=resume,
        restart=restart,
        progress=display.line,
        show_starts=False,  # the status summary says what runs where
        status=display.status,
        status_interval=status_interval(display.interval),
    )
    rundir = RunDir.open_or_create(run_dir)
    if wanted.given:
        options.sources = wanted.sources(rundir, default_local=False)
    try:
        summary = run_async(
            lambda: run_tests(
                rundir,
                fmf_root,
                plans,
                fmf_context,
                options,
                discovered=found,
                git=git,
                platform_context=platform_context,
                on_locked=wanted.record,
                warned=warned,
            )
        )
    except Interrupted as exc:
        display.close()
        _fail(f"interrupted; results so far are in {run_dir}", exc.exit_code)
    finally:
        display.close()
    from .report.summary import count_line
    from .report.text import stderr_line

    line = count_line(summary.final or summary.results)
    click.echo(stderr_line(f"atex-ci: {line}; results in {run_dir}"), err=True)
    sys.exit(summary.exit_code)


@cli.command()
@click.option(
    "--history",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Earlier durations: a run directory or a history.json (from collect/report).",
)
@click.option(
    "--machines",
    default="1,2,4,8,16",
    show_default=True,
    metavar="N,N,...",
    help="Machine counts to predict for.",
)
@click.option("--budget", metavar="DURATION", help="Also find the fewest machines that meet it.")
@click.option(
    "--overhead",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds added to every test (a run's per-test cost; see benchmarks/).",
)
def estimate(history: Path, machines: str, budget: str | None, overhead: float) -> None:
    """Predict how long the tests of a history take on N machines (no machines used).

    Replays the recorded durations through the same scheduler `run --history`
    uses, on a virtual clock, and prints the makespan and machine utilisation
    for each count; with --budget, the fewest machines that finish in time.
    """
    from .collect import load_history
    from .duration import parse_duration
    from .simulate import estimate as predict
    from .simulate import estimate_lines

    try:
        counts = [int(n) for n in machines.split(",") if n.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"invalid --machines {machines!r}: expected counts such as 1,2,4,8")
    try:
        seconds = parse_duration(budget) if budget is not None else None
    except ValueError as exc:
        raise ConfigError(f"--budget: {exc}") from None
    durations = load_history(history)
    if not durations:
        raise ConfigError(f"{history}: the history holds no test durations")
    result = predict(durations, counts, budget=seconds, overhead=overhead)
    for line in estimate_lines(result, len(durations), history, budget):
        click.echo(line)


@cli.command(cls=_Command, declared=_gating_options)
@_run_dir_option(help=EXISTING_RUN_DIR_HELP)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write JUnit XML here (default: RUN/junit.xml).",
)
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a Markdown summary here (default: RUN/summary.md).",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML report here.",
)
@click.option(
    "--github/--no-github",
    default=None,
    help="Write the GitHub job summary, step outputs and error annotations "
    "(default: on when GITHUB_ACTIONS=true).",
)
@click.option(
    "--subresults",
    type=click.Choice(["testcases", "fold"]),
    default="testcases",
    show_default=True,
    help="JUnit: each sub-result is a testcase, or fold them into their test's testcase.",
)
@click.option("--title", default=None, help="Title of the Markdown and HTML reports.")
def report(
    run_dir: Path,
    junit: Path | None,
    markdown: Path | None,
    html_path: Path | None,
    github: bool | None,
    subresults: str,
    title: str | None,
    **gating: Any,
) -> None:
    """Write JUnit XML, a Markdown summary and optionally HTML for a run's results."""
    from .gating import report_settings
    from .report import reporting

    if github is None:
        github = os.environ.get("GITHUB_ACTIONS") == "true"
    outcome = reporting.report_run(
        run_dir,
        junit=junit,
        markdown=markdown,
        html=html_path,
        github=github,
        subresults=subresults,
        title=title,
        **report_settings(gating),
    )
    for line in outcome.warnings:
        click.echo(f"atex-ci: warning: {line}", err=True)
    for line in outcome.annotations:
        click.echo(line)
    for what, path in outcome.written:
        click.echo(f"atex-ci: {what}: {path}", err=True)
    sys.exit(outcome.exit_code)


@cli.command()
@_run_dir_option()
@click.argument(
    "sources",
    nargs=-1,
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
)
def collect(run_dir: Path, sources: tuple[Path, ...]) -> None:
    """Merge the results and artifacts of run directories SOURCES into RUN.

    The last source wins for a test that ran in several; earlier failed attempts make it
    flaky. Also writes RUN/summary.json and RUN/history.json.
    """
    from .collect import collect as collect_runs
    from .report.reporting import capped_lines

    outcome = collect_runs(run_dir, list(sources))
    for line in capped_lines(outcome.warnings):
        click.echo(f"atex-ci: warning: {line}", err=True)
    for line in capped_lines(outcome.conflicts):
        click.echo(f"atex-ci: conflict: {line}", err=True)
    click.echo(
        f"atex-ci: merged {outcome.merged} result(s) from {len(sources)} run(s) into {run_dir}",
        err=True,
    )


@cli.command()
@_run_dir_option(help=EXISTING_RUN_DIR_HELP)
def release(run_dir: Path) -> None:
    """Release every machine of the run and delete its private keys (idempotent)."""
    from .pool import release_all
    from .recorder import Recorder, RunState
    from .rundir import RunDir

    rundir = RunDir.open_for_release(run_dir)
    with rundir.locked():
        machines = run_async(lambda: release_all(rundir))
        try:
            Recorder(rundir).state(RunState.RELEASED)
        except StorageError as exc:
            # The machines are released all the same; run.json is what is damaged.
            log.warning("%s", exc)
    click.echo(f"atex-ci: released {len(machines)} machine(s)", err=True)


# Every command takes -v too, so that it may come anywhere on the command line.
for _command in cli.commands.values():
    _command.params.append(
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            callback=_command_verbosity,
            help="More log output on stderr (repeatable; also before the command).",
        )
    )


def main() -> None:
    """Console entry point: runs the CLI and turns user errors into one line."""
    try:
        cli.main(prog_name="atex-ci", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except AtexError as exc:
        _fail(str(exc), exc.exit_code)
    except BaseExceptionGroup as group:
        # Errors from concurrent tasks arrive grouped; report the first user error.
        leaf = first_atex_error(group)
        if leaf is None:
            raise
        _fail(str(leaf), leaf.exit_code)
    except (KeyboardInterrupt, asyncio.CancelledError):
        _fail("interrupted; what was done so far is in the run directory", 130)
    except BrokenPipeError:
        sys.exit(1)
