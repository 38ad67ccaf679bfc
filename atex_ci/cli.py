"""The ``atex-ci`` command line: each command parses options and calls the API.

Exit codes: 0 all passed, 1 test failures, 2 usage or configuration error,
3 infrastructure error, 130 interrupted. A user error is one line on stderr,
``atex-ci: <what is wrong and what to do>``, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from . import __version__
from .errors import AtexError, ConfigError

T = TypeVar("T")

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


def _parse_size(text: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    raw = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = raw[-1] if raw and raw[-1] in "kmg" else ""
    try:
        value = float(raw[: len(raw) - len(unit)])
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"invalid size {text!r}: expected e.g. 500M, 2G or 1048576")
    return int(value * units[unit])


def _parse_context(items: tuple[str, ...]) -> dict[str, str]:
    context: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"invalid context {item!r}: expected KEY=VALUE, e.g. distro=fedora-41"
            )
        context[key.strip()] = value.strip()
    return context


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a fresh event loop with orderly signal handling.

    The first SIGINT/SIGTERM cancels the main task, so every machine, connection
    and remote process is cleaned up on the way out; a second one exits at once.
    """

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                print(
                    "atex-ci: interrupted; cleaning up (interrupt again to exit at once)",
                    file=sys.stderr,
                    flush=True,
                )
                task.cancel()
            else:
                os._exit(130)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await factory()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"atex-ci: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="atex-ci")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (repeatable).")
def cli(verbose: int) -> None:
    """Reserve test machines, run FMF tests on them in parallel, report the results.

    Commands share state through a run directory (-d): reserve -> run -> report -> release.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="atex-ci: %(message)s", stream=sys.stderr)
    if verbose < 2:
        logging.getLogger("asyncssh").setLevel(logging.WARNING)


@cli.command()
@_run_dir_option()
@click.option("--local", "local", type=click.IntRange(min=1), help="Reserve N local slots.")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="[USER@]HOST[:PORT]",
    help="An existing machine reachable over SSH (repeatable).",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SSH private key for --host machines (default: your SSH agent/keys).",
)
@click.option(
    "--platform",
    default=None,
    help="Platform the machines provide (default: 'default'). Every test runs once per "
    "platform; machines of one platform share its tests.",
)
def reserve(
    run_dir: Path,
    local: int | None,
    hosts: tuple[str, ...],
    key: Path | None,
    platform: str | None,
) -> None:
    """Reserve machines for a run and record them in RUN/machines.json.

    Without options, reserves one local slot per CPU.
    """
    from .provision.local import LocalProvisioner
    from .provision.static import HostSpec, StaticProvisioner
    from .rundir import RunDir

    rundir = RunDir.open_or_create(run_dir)
    with rundir.locked():
        machines = []
        if hosts:
            specs = [HostSpec.parse(h) for h in hosts]
            machines += run_async(
                lambda: StaticProvisioner().reserve(
                    rundir, specs, str(key) if key else None, platform or "default"
                )
            )
        if local or not hosts:
            machines += LocalProvisioner().reserve(rundir, local, platform or "default")
        rundir.write_machines(rundir.read_machines() + machines)
        for machine in machines:
            rundir.append_event(
                "machine_reserved", machine=machine.id, provisioner=machine.provisioner
            )
        rundir.update_run(state="reserved")
    for machine in machines:
        where = f"{machine.user}@{machine.host}:{machine.port}" if machine.host else machine.workdir
        click.echo(f"atex-ci: reserved {machine.id} ({where})", err=True)


@cli.command()
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
    metavar="KEY=VALUE",
    help="fmf context for adjust and filters (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Print the selected test names and exit.")
@click.option(
    "--local",
    "local",
    type=click.IntRange(min=1),
    help="Local slots to use when no machines are reserved (default: CPUs).",
)
@click.option("--resume", is_flag=True, help="Skip tests that already have a final result.")
@click.option("--max-output", default="1G", show_default=True, help="Per-test output cap.")
@click.option(
    "--max-upload", default="1G", show_default=True, help="Per-test cap on uploaded files."
)
def run(
    run_dir: Path | None,
    fmf_root: Path,
    plans: tuple[str, ...],
    context: tuple[str, ...],
    dry_run: bool,
    local: int | None,
    resume: bool,
    max_output: str,
    max_upload: str,
) -> None:
    """Discover FMF tests and run them on the reserved machines.

    With no machines reserved, reserves local slots and releases them at the end.
    """
    from .discover import discover
    from .remote_tree import GitCache

    fmf_context = _parse_context(context)
    git = GitCache()  # one per run: each repository is fetched once
    found = discover(fmf_root, plans, fmf_context, git=git)
    if dry_run:
        for plan in found:
            for test in plan.tests:
                click.echo(test.name)
        return
    if run_dir is None:
        raise ConfigError("missing option '-d/--run-dir' (needed unless --dry-run)")
    if not any(plan.tests for plan in found):
        names = ", ".join(plan.name for plan in found)
        raise ConfigError(
            f"no tests selected by plan(s) {names}; check the plans' discover phases, "
            "filters and your -c context (try --dry-run)"
        )
    from .execute.executor import Limits
    from .orchestrator import RunOptions, run_tests, stderr_progress

    options = RunOptions(
        limits=Limits(max_output=_parse_size(max_output), max_upload=_parse_size(max_upload)),
        local_slots=local,
        resume=resume,
        progress=stderr_progress,
    )
    try:
        summary = run_async(
            lambda: run_tests(
                run_dir, fmf_root, plans, fmf_context, options, discovered=found, git=git
            )
        )
    except asyncio.CancelledError:
        _fail(f"interrupted; results so far are in {run_dir}", 130)
    totals: dict[str, int] = {}
    for result in summary.final or summary.results:
        if result.name is None:
            totals[str(result.status)] = totals.get(str(result.status), 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(totals.items())) or "no tests"
    click.echo(f"atex-ci: {counts}; results in {run_dir}", err=True)
    sys.exit(summary.exit_code)


@cli.command()
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
) -> None:
    """Write JUnit XML, a Markdown summary and optionally HTML for a run's results."""
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
    )
    for line in outcome.warnings:
        click.echo(f"atex-ci: warning: {line}", err=True)
    for line in outcome.annotations:
        click.echo(line)
    for what, path in outcome.written:
        click.echo(f"atex-ci: {what}: {path}", err=True)


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
    from .orchestrator import release_all
    from .rundir import RunDir

    rundir = RunDir.open(run_dir)
    with rundir.locked():
        machines = run_async(lambda: release_all(rundir))
        rundir.update_run(state="released")
    click.echo(f"atex-ci: released {len(machines)} machine(s)", err=True)


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
        leaf = _first_atex_error(group)
        if leaf is None:
            raise
        _fail(str(leaf), leaf.exit_code)
    except (KeyboardInterrupt, asyncio.CancelledError):
        _fail("interrupted; what was done so far is in the run directory", 130)
    except BrokenPipeError:
        sys.exit(1)


def _first_atex_error(group: BaseExceptionGroup[Any]) -> AtexError | None:
    for exc in group.exceptions:
        if isinstance(exc, AtexError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_atex_error(exc)
            if found is not None:
                return found
    return None
