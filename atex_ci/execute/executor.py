"""Run one test on one machine through a Transport, and turn what happened into results.

The executor owns the per-machine work directory (the uploaded fmf tree, the
wrapper and shims, per-test scratch dirs), the test's environment, the
deadline (``duration`` with runtime adjustment), reboots, resource caps, the
collection of uploaded files and TMT_TEST_DATA, and the mapping of every way
a test can end to results. Parsing the control stream is ``control.py``'s
job, merging results is ``results.py``'s; this module only does the I/O
between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..duration import MAX_DURATION
from ..model import Machine, Phase, Plan, Reason, Result, Test
from ..rundir import RunDir, now_iso, safe_component
from ..transport.base import NotStartedError, Transport, TransportError
from .ansible import run_playbooks
from .control import (
    ControlError,
    ControlParser,
    Disconnect,
    Duration,
    Event,
    ExitCode,
    FileChunk,
    FileEnd,
    ResultEvent,
    safe_join,
)
from .packages import NO_DNF_EXIT, copr_script, install_script
from .results import ResultCollector, parse_custom_results
from .staging import (
    TEST_DATA_ARCHIVE,
    extract_regular_files,
    test_dir,
    test_metadata,
)

log = logging.getLogger("atex_ci.execute")

#: Seconds to wait after SIGTERM before SIGKILL when ending a test's process group.
KILL_GRACE = 2.0
#: Bound on cleanup steps (killing a test, collecting files) so a dead machine
#: never hangs the run.
CLEANUP_TIMEOUT = 30.0
#: How long a cancelled (Ctrl-C) run may spend killing its remote tests.
CANCEL_CLEANUP_TIMEOUT = 10.0
#: Bound on one prepare/finish script or one package installation: generous,
#: but a hung package manager must not hold a machine for ever.
PHASE_TIMEOUT = 3600.0
#: How often to look for the note of a failed reboot command while waiting for
#: the machine to go down.
REBOOT_POLL_INTERVAL = 1.0
#: How long to try to reconnect to a machine whose idle connection dropped.
RECONNECT_TIMEOUT = 60.0

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Limits:
    """Per-test resource caps; exceeding one ends the test as error."""

    #: Bytes of captured stdout+stderr kept in output.txt.
    max_output: int = 1024 * 1024 * 1024
    #: Bytes of files a test may upload (result files plus TMT_TEST_DATA).
    max_upload: int = 1024 * 1024 * 1024
    #: Bytes of one result's JSON.
    max_result_json: int = 1024 * 1024


@dataclass
class TestOutcome:
    """What happened to one test run: its results and the machine's fate."""

    results: list[Result]
    #: False when the machine must not run more tests (lost, timed out, broken).
    machine_ok: bool = True
    #: The test asked to abort the rest of its plan (tmt-abort).
    abort: bool = False


class PhaseError(Exception):
    """A plan's prepare/finish step or a requirement install failed on a machine."""


class _Reboot(Exception):
    """Raised from the control callback when the test announced a reboot."""


class _TestError(Exception):
    """The test did something that ends it as error (the message says what)."""


class _LimitExceeded(_TestError):
    """A test went over one of its Limits."""


def _export(env: Mapping[str, str]) -> str:
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


class Executor:
    """Runs tests on one machine. Not safe for concurrent tests: one executor per machine slot.

    ``base`` is the per-run work directory on the machine; ``setup`` must be
    called once before any test.
    """

    def __init__(
        self,
        transport: Transport,
        machine: Machine,
        rundir: RunDir,
        *,
        base: str,
        limits: Limits | None = None,
    ) -> None:
        self.transport = transport
        self.machine = machine
        self.rundir = rundir
        self.base = base.rstrip("/")
        self.run_id = rundir.read_run()["id"] if (rundir.path / "run.json").exists() else ""
        self.limits = limits or Limits()
        self.tree = f"{self.base}/tree"
        self._prepared: set[str] = set()
        self._staged: set[str] = set()

    # -- machine setup -------------------------------------------------------------

    async def setup(self, tree_tar: bytes, remote_tar: bytes, tests: Iterable[Test] = ()) -> None:
        """Upload the fmf tree, and the wrapper, shims and test directories made
        by ``build_remote_tar(tests)``. Raises TransportError."""
        q = shlex.quote
        await self.transport.run(f"rm -rf {q(self.base)}")
        await self.transport.put_tar(tree_tar, self.tree)
        await self.transport.put_tar(remote_tar, self.base)
        self._staged = {test_dir(t) for t in tests}

    def plan_tree(self, plan: Plan) -> str:
        """The plan's tree on the machine: the uploaded tree, or the imported
        plan's repository inside it."""
        return f"{self.tree}/{plan.tree_path}" if plan.tree_path else self.tree

    def plan_dir(self, plan: str) -> str:
        return f"{self.base}/plans/{safe_component(plan.strip('/').replace('/', '-'))}"

    async def prepare_plan(self, plan: Plan) -> None:
        """Run the plan's prepare phases once on this machine. Raises PhaseError."""
        if plan.name in self._prepared:
            return
        plan_dir = self.plan_dir(plan.name)
        q = shlex.quote
        rc, _out, err = await self.transport.output(
            f"mkdir -p {q(plan_dir)}/data && touch {q(plan_dir)}/environment"
        )
        if rc != 0:
            raise PhaseError(f"cannot create {plan_dir}: {_tail(err)}")
        for phase in plan.prepare:
            await self._run_phase(plan, phase, "prepare")
        self._prepared.add(plan.name)

    async def finish_plan(self, plan: Plan) -> None:
        """Run the plan's finish phases on this machine (if it was prepared)."""
        if plan.name not in self._prepared:
            return
        for phase in plan.finish:
            await self._run_phase(plan, phase, "finish")

    async def _run_phase(self, plan: Plan, phase: Phase, stage: str) -> None:
        label = f"{stage} {phase.name or phase.how} of plan {plan.name}"
        if phase.how == "install":
            if phase.copr:
                rc, out, err = await self._bounded(copr_script(phase.copr), label)
                if rc == NO_DNF_EXIT:
                    raise PhaseError(f"{label}: 'copr' needs dnf, and {self.machine.id} has none")
                if rc != 0:
                    raise PhaseError(f"{label}: enabling Copr failed: {_tail(out + err)}")
            await self.install(phase.package, missing_ok=phase.missing == "skip", what=label)
            return
        if phase.how == "ansible":
            try:
                rc, output = await run_playbooks(
                    self.machine, self.rundir, phase.playbook, phase.extra_args, PHASE_TIMEOUT
                )
            except FileNotFoundError as exc:
                raise PhaseError(f"{label}: {exc}") from None
            if rc != 0:
                raise PhaseError(f"{label} failed (exit {rc}): {_tail(output.encode())}")
            return
        for script in phase.script:
            env = {**self._plan_env(plan), **plan.environment}
            command = (
                f"{_export(env)}; cd {shlex.quote(self.plan_tree(plan))} && "
                f"bash -c {shlex.quote(script)}"
            )
            rc, out, err = await self._bounded(command, label)
            if rc != 0:
                raise PhaseError(f"{label} failed (exit {rc}): {_tail(out + err)}")

    async def install(self, packages: list[str], *, missing_ok: bool, what: str) -> None:
        """Install packages with the machine's package manager if they are missing.

        Raises PhaseError with the package manager's message on failure.
        """
        if not packages:
            return
        rc, out, err = await self._bounded(install_script(packages, missing_ok), what)
        if rc != 0:
            raise PhaseError(f"{what}: installing {' '.join(packages)} failed: {_tail(out + err)}")

    async def _bounded(self, command: str, what: str) -> tuple[int, bytes, bytes]:
        try:
            async with asyncio.timeout(PHASE_TIMEOUT):
                return await self.transport.output(command)
        except TimeoutError:
            raise PhaseError(f"{what}: no end after {_fmt_seconds(PHASE_TIMEOUT)}") from None

    def _plan_env(self, plan: Plan) -> dict[str, str]:
        plan_dir = self.plan_dir(plan.name)
        return {
            "TMT_TREE": self.plan_tree(plan),
            "TMT_PLAN_DATA": f"{plan_dir}/data",
            "TMT_PLAN_ENVIRONMENT_FILE": f"{plan_dir}/environment",
        }

    # -- one test ------------------------------------------------------------------

    async def run_test(
        self, test: Test, plan: Plan, *, platform: str, attempt: int = 1
    ) -> TestOutcome:
        """Run ``test`` to its end; its results are appended to results.jsonl
        and returned.

        Never raises for anything the test or the machine does; on
        cancellation, records the test as error (interrupted), kills its
        processes and re-raises CancelledError.
        """
        run = _TestRun(self, test, plan, platform=platform, attempt=attempt)
        return await run.execute()


class _TestRun:
    """The state of one test run across reboots."""

    def __init__(
        self, executor: Executor, test: Test, plan: Plan, *, platform: str, attempt: int
    ) -> None:
        self.ex = executor
        self.transport = executor.transport
        self.test = test
        self.plan = plan
        self.platform = platform
        self.attempt = attempt
        self.limits = executor.limits
        # A test the plan selects twice (tmt runs it twice) keeps two sets of files.
        repeated = sum(1 for t in plan.tests if t.name == test.name) > 1
        self.artdir = executor.rundir.artifact_path(
            platform, test.name, attempt, plan.name, test.serial_number if repeated else None
        )
        self.remote_dir = f"{executor.base}/{test_dir(test)}"
        self.collector = ResultCollector()
        self.parser = ControlParser(max_result_bytes=self.limits.max_result_json)
        self.output: IO[bytes] | None = None
        self.output_bytes = 0
        self.upload_bytes = 0
        self.current_file: IO[bytes] | None = None
        self.current_name: str | None = None
        self.exit_code: int | None = None
        self.reboot_count = 0
        self.deadline = 0.0
        self.timeout_cm: asyncio.Timeout | None = None
        self.saved_remaining: float | None = None
        self.save_depth = 0

    # -- driving -------------------------------------------------------------------

    async def execute(self) -> TestOutcome:
        loop = asyncio.get_running_loop()
        start_wall = now_iso()
        start = time.monotonic()
        self.deadline = loop.time() + self.test.duration
        failure: tuple[Reason, str] | None = None
        machine_ok = True
        cancelled: asyncio.CancelledError | None = None
        try:
            # Creating directories and files can take milliseconds on a busy
            # disk: do it off the event loop, which serves every other machine.
            self.output = await asyncio.to_thread(self._open_output)
            failure, machine_ok = await self._requirements()
            if failure is None:
                failure, machine_ok = await self._boot_loop()
            self._close_current_file()
            if (self.artdir / TEST_DATA_ARCHIVE).exists():
                failure = failure or await asyncio.to_thread(self._unpack_test_data)
            elif failure is not None and (machine_ok or failure[0] is Reason.TIMEOUT):
                # The wrapper sends TMT_TEST_DATA itself when the test ends; a
                # test cut short (timeout, violation, cap) never got that far.
                await self._collect_test_data()  # the test's failure is the one to report
        except asyncio.CancelledError as exc:
            cancelled = exc
            failure = (Reason.INTERRUPTED, "the run was interrupted")
        except Exception as exc:
            log.exception("internal error while running %s", self.test.name)
            failure = (Reason.INFRA, f"internal error in atex-ci: {type(exc).__name__}: {exc}")
            machine_ok = False
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._kill(CLEANUP_TIMEOUT))
        finally:
            self._close_current_file()
            if self.output is not None:
                self.output.close()
        outcome = self._results(failure, start_wall, time.monotonic() - start)
        outcome.machine_ok = machine_ok and cancelled is None
        if cancelled is not None:
            # Written at once, before the (possibly slow) kill, so a crash or a
            # second Ctrl-C that ends atex-ci at once loses nothing.
            for result in outcome.results:
                self.ex.rundir.append_result(result)
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._kill(CANCEL_CLEANUP_TIMEOUT))
            raise cancelled
        # fsync can take milliseconds: keep the event loop (other machines) going.
        await asyncio.to_thread(self._append_results, outcome.results)
        return outcome

    def _append_results(self, results: list[Result]) -> None:
        for result in results:
            self.ex.rundir.append_result(result)

    def _open_output(self) -> IO[bytes]:
        self.artdir.mkdir(parents=True, exist_ok=True)
        return open(self.artdir / "output.txt", "ab")

    async def _requirements(self) -> tuple[tuple[Reason, str] | None, bool]:
        try:
            await self.ex.install(self.test.require, missing_ok=False, what="require")
            await self.ex.install(self.test.recommend, missing_ok=True, what="recommend")
        except PhaseError as exc:
            return (Reason.TEST, str(exc)), True
        except TransportError as exc:
            return (Reason.INFRA, f"machine lost while installing requirements: {exc}"), False
        return None, True

    async def _boot_loop(self) -> tuple[tuple[Reason, str] | None, bool]:
        """Run the test, again after each reboot it asks for, until it ends."""
        loop = asyncio.get_running_loop()
        reconnected = False
        while True:
            self.parser = ControlParser(max_result_bytes=self.limits.max_result_json)
            try:
                async with asyncio.timeout_at(self.deadline) as cm:
                    self.timeout_cm = cm
                    await self.transport.run(
                        self._command(),
                        stdout=self._on_control,
                        stderr=self._on_output,
                        tty=False,
                    )
                    self._on_eof()
            except _Reboot:
                self.reboot_count += 1
                self._close_current_file()
                ended = await self._reboot(loop)
                if ended is not None:
                    return ended
                continue
            except TimeoutError:
                await self._kill(CLEANUP_TIMEOUT)
                if self.exit_code is not None:
                    return (
                        Reason.TEST,
                        "the test's files (TMT_TEST_DATA) did not arrive in "
                        f"{_fmt_seconds(self._data_timeout())}",
                    ), True
                # A machine where a test hung may be in any state: flag it so
                # the scheduler discards it. A local slot is this host, and
                # killing the test's process group is all there is to do.
                return (
                    Reason.TIMEOUT,
                    f"timeout: ran past its duration of {_fmt_seconds(self.test.duration)}",
                ), not self.transport.supports_reboot
            except ControlError as exc:
                await self._kill(CLEANUP_TIMEOUT)
                return (Reason.TEST, f"test-control protocol violation: {exc}"), True
            except _TestError as exc:
                await self._kill(CLEANUP_TIMEOUT)
                return (Reason.TEST, str(exc)), True
            except NotStartedError as exc:
                # The connection died while the machine was idle (noticed only
                # now): nothing ran, so reconnect once and start the test.
                if reconnected:
                    return (Reason.INFRA, f"cannot start the test: {exc}"), False
                reconnected = True
                try:
                    await self.transport.reconnect(min(RECONNECT_TIMEOUT, self._remaining()))
                except TransportError as again:
                    return (Reason.INFRA, f"machine unreachable: {again}"), False
                continue
            except TransportError as exc:
                return (Reason.INFRA, f"connection to the machine lost: {exc}"), False
            finally:
                self.timeout_cm = None
            if self.exit_code is None:
                return (
                    Reason.INFRA,
                    "the test wrapper ended without reporting an exit code",
                ), False
            return None, True

    def _data_timeout(self) -> float:
        """Time allowed to fetch a test's files: a floor plus 10 MB/s of the cap."""
        return CLEANUP_TIMEOUT + self.limits.max_upload / 10e6

    def _remaining(self) -> float:
        return max(self.deadline - asyncio.get_running_loop().time(), 0.0)

    async def _reboot(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[tuple[Reason, str], bool] | None:
        """After ``disconnect``: wait for the machine to go down and come back.

        Returns None when the test can start again, else (failure, machine_ok).
        """
        if not self.transport.supports_reboot:
            # A local slot cannot reboot: end the test's processes before they
            # see the closed channel and run a real reboot command, then start
            # the test again as if the machine had rebooted.
            await self._kill(CLEANUP_TIMEOUT)
            return None
        try:
            failed = await self._wait_down_or_failed(loop)
            if failed is not None:
                await self._kill(CLEANUP_TIMEOUT)
                return (Reason.TEST, f"the reboot command failed (exit {failed})"), True
            remaining = self.deadline - loop.time()
            if remaining <= 0:
                return (Reason.TIMEOUT, "timeout: ran past its duration while rebooting"), False
            await self.transport.reconnect(remaining)
        except TimeoutError:
            return (
                Reason.TIMEOUT,
                "timeout: the machine did not go down for the reboot the test requested",
            ), False
        except TransportError as exc:
            if loop.time() >= self.deadline:
                return (Reason.TIMEOUT, "timeout: ran past its duration while rebooting"), False
            return (Reason.INFRA, f"the machine did not come back after a reboot: {exc}"), False
        return None

    async def _wait_down_or_failed(self, loop: asyncio.AbstractEventLoop) -> str | None:
        """Wait for the connection to drop; meanwhile watch for the note tmt-reboot
        leaves when the reboot command failed. Returns that exit code, or None
        once the machine went down. TimeoutError at the test's deadline."""
        marker = shlex.quote(f"{self.remote_dir}/reboot-failed-{self.reboot_count - 1}")

        async def watch() -> str | None:
            while True:
                await asyncio.sleep(REBOOT_POLL_INTERVAL)
                try:
                    rc, out, _err = await self.transport.output(f"cat {marker} 2>/dev/null")
                except TransportError:
                    return None  # going down, as it should
                if rc == 0:
                    return out.decode(errors="replace").strip() or "?"

        remaining = max(self.deadline - loop.time(), 0)
        down = asyncio.ensure_future(self.transport.wait_disconnected(remaining))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({down, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done() and watcher.result() is not None:
                return watcher.result()
            if not await down:
                raise TimeoutError
            return None
        finally:
            for task in (down, watcher):
                task.cancel()
            await asyncio.gather(down, watcher, return_exceptions=True)

    async def _kill(self, timeout: float) -> None:
        """End the test's process group: SIGTERM, then SIGKILL after a grace period."""
        pidfile = shlex.quote(f"{self.remote_dir}/pid")
        steps = int(KILL_GRACE / 0.1)
        command = (
            f"for i in $(seq 20); do [ -s {pidfile} ] && break; sleep 0.1; done; "
            f"p=$(cat {pidfile} 2>/dev/null) || exit 0; "
            f'kill -TERM -- "-$p" 2>/dev/null || exit 0; '
            f'for i in $(seq {steps}); do kill -0 -- "-$p" 2>/dev/null || exit 0; sleep 0.1; done; '
            f'kill -KILL -- "-$p" 2>/dev/null; exit 0'
        )
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await self.transport.run(command)

    # -- the command and its environment ---------------------------------------------

    def _command(self) -> str:
        test = self.test
        ex = self.ex
        env: dict[str, str] = {}
        env.update(self.plan.environment)
        env.update(test.environment)
        bad = [k for k in env if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise _TestError(f"invalid environment variable name {bad[0]!r}")
        env.update(ex._plan_env(self.plan))
        env.update(
            {
                "TMT_TEST_NAME": test.name,
                "TMT_TEST_DATA": f"{self.remote_dir}/data",
                "TMT_TEST_METADATA": f"{self.remote_dir}/metadata.yaml",
                "TMT_TEST_INVOCATION_PATH": self.remote_dir,
                "TMT_TEST_ITERATION_ID": f"{ex.run_id}-{test.serial_number}",
                "TMT_REBOOT_COUNT": str(self.reboot_count),
                # The restraint/beaker spellings of the same count.
                "REBOOTCOUNT": str(self.reboot_count),
                "RSTRNT_REBOOTCOUNT": str(self.reboot_count),
                "TMT_TEST_RESTART_COUNT": str(self.reboot_count),
                "TMT_TEST_SERIAL_NUMBER": str(test.serial_number),
                "TMT_RESTRAINT_COMPATIBLE": "0",
                "ATEX_TEST_COMMAND": _test_command(test),
                "ATEX_TEST_CWD": f"{ex.tree}/{test.path.strip('/')}".rstrip("/"),
                "ATEX_TEST_DIR": self.remote_dir,
                "ATEX_TEST_TTY": "1" if test.tty else "0",
                "ATEX_LOCAL_SLOT": "0" if self.transport.supports_reboot else "1",
                "ATEX_TEST_FRESH": "1" if self.reboot_count == 0 else "0",
            }
        )
        if test.framework == "beakerlib":
            bin_dir = f"{ex.base}/remote/bin"
            env.update(
                {
                    # In TMT_TEST_DATA, so the journal and TestResults are collected.
                    "BEAKERLIB_DIR": f"{self.remote_dir}/data",
                    "BEAKERLIB_COMMAND_SUBMIT_LOG": f"{bin_dir}/tmt-file-submit",
                    # Called by every rlPhaseEnd (only when TESTID is set).
                    "BEAKERLIB_COMMAND_REPORT_RESULT": f"{bin_dir}/rhts-report-result",
                    "TESTID": str(test.serial_number),
                }
            )
        if test.library_dirs:  # where rlImport finds the test's fetched libraries
            env["BEAKERLIB_LIBRARY_PATH"] = ":".join(f"{ex.tree}/{d}" for d in test.library_dirs)
        if test_dir(test) not in ex._staged:
            env["ATEX_TEST_METADATA_JSON"] = test_metadata(test).decode()
        path = f"{ex.base}/remote/bin"
        return (
            f'{_export(env)}; export PATH={shlex.quote(path)}:"$PATH"; '
            f"source {shlex.quote(ex.base + '/remote/wrapper.sh')}"
        )

    # -- stream callbacks (synchronous, called by the transport) -----------------------

    def _on_output(self, chunk: bytes) -> None:
        assert self.output is not None
        room = self.limits.max_output - self.output_bytes
        if len(chunk) > room:
            self.output.write(chunk[: max(room, 0)])
            self.output_bytes = self.limits.max_output
            raise _LimitExceeded(
                f"the test's output exceeded the limit of {self.limits.max_output} bytes"
            )
        self.output.write(chunk)
        self.output_bytes += len(chunk)

    def _on_control(self, chunk: bytes) -> None:
        try:
            events = self.parser.feed(chunk)
        except ControlError as exc:
            # Keep what the test reported before the violation.
            self._handle(exc.events)
            raise
        self._handle(events)

    def _on_eof(self) -> None:
        try:
            events = self.parser.feed_eof()
        except ControlError as exc:
            self._handle(exc.events)
            raise
        self._handle(events)

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, FileChunk):
                self._write_file(event)
            elif isinstance(event, FileEnd):
                if self.current_name != event.name:
                    # A file of length 0: no data came, but it exists.
                    self._write_file(FileChunk(event.name, b""))
                self._close_current_file()
            elif isinstance(event, ResultEvent):
                self.collector.add(event.data)
            elif isinstance(event, ExitCode):
                self.exit_code = event.code
                # The test itself is over; what follows (its TMT_TEST_DATA)
                # gets its own time limit instead of the test's duration.
                if self.timeout_cm is not None:
                    now = asyncio.get_running_loop().time()
                    self.timeout_cm.reschedule(now + self._data_timeout())
            elif isinstance(event, Duration):
                self._adjust_deadline(event)
            elif isinstance(event, Disconnect):
                raise _Reboot()

    def _write_file(self, event: FileChunk) -> None:
        self.upload_bytes += len(event.data)
        if self.upload_bytes > self.limits.max_upload:
            raise _LimitExceeded(
                f"the test uploaded more than the limit of {self.limits.max_upload} bytes"
            )
        try:
            if self.current_name != event.name:
                self._close_current_file()
                path = safe_join(self.artdir, event.name)
                path.parent.mkdir(parents=True, exist_ok=True)
                self.current_file = open(path, "ab")  # noqa: SIM115 (closed on FileEnd)
                self.current_name = event.name
            assert self.current_file is not None
            self.current_file.write(event.data)
        except OSError as exc:
            # E.g. a name that is a file in one result and a directory in
            # another, or one too long for the filesystem: the test's fault.
            raise _TestError(f"cannot store the file {event.name!r}: {exc.strerror}") from None

    def _close_current_file(self) -> None:
        if self.current_file is not None:
            self.current_file.close()
        self.current_file = None
        self.current_name = None

    def _adjust_deadline(self, event: Duration) -> None:
        now = asyncio.get_running_loop().time()
        if event.op == "save":
            if self.save_depth == 0:
                self.saved_remaining = self.deadline - now
            self.save_depth += 1
        elif event.op == "restore":
            if self.save_depth == 0:
                raise ControlError("'duration restore' without 'duration save'")
            self.save_depth -= 1
            if self.save_depth == 0 and self.saved_remaining is not None:
                self.deadline = now + self.saved_remaining
        elif event.seconds is not None:
            if event.op == "set":
                self.deadline = now + event.seconds
            elif event.op == "add":
                self.deadline += event.seconds
            elif event.op == "sub":
                self.deadline -= event.seconds
        self.deadline = min(self.deadline, now + MAX_DURATION)
        if self.timeout_cm is not None:
            self.timeout_cm.reschedule(self.deadline)

    # -- after the test ------------------------------------------------------------

    async def _collect_test_data(self) -> tuple[Reason, str] | None:
        """Fetch TMT_TEST_DATA into artifacts/.../data (regular files and dirs only)."""
        q = shlex.quote
        data_dir = f"{self.remote_dir}/data"
        chunks: list[bytes] = []
        size = 0
        room = self.limits.max_upload - self.upload_bytes

        def take(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size > room + 1024 * 1024:  # tar headers are not the test's bytes
                raise _LimitExceeded(
                    f"the test uploaded more than the limit of {self.limits.max_upload} bytes"
                )
            chunks.append(chunk)

        try:
            async with asyncio.timeout(self._data_timeout()):
                rc = await self.transport.run(
                    f"[ -d {q(data_dir)} ] || exit 0; tar -c -f - -C {q(data_dir)} .",
                    stdout=take,
                )
        except _LimitExceeded as exc:
            return Reason.TEST, str(exc)
        except (TransportError, TimeoutError) as exc:
            return Reason.INFRA, f"could not collect TMT_TEST_DATA: {exc or 'timeout'}"
        if rc != 0 or not chunks:
            return None
        return self._store_test_data(b"".join(chunks))

    def _results(
        self, failure: tuple[Reason, str] | None, start: str, duration: float
    ) -> TestOutcome:
        custom: list[dict[str, Any]] | None = None
        if self.test.framework == "beakerlib" and failure is None:
            # As tmt: the journal's verdict is the test's own result; phase
            # results reported on the way are only details.
            self.collector.add(_beakerlib_result(self.artdir / "data" / "TestResults"))
        if self.test.result == "custom" and failure is None:
            custom, problem = self._read_custom()
            if problem:
                failure = (Reason.TEST, problem)
        try:
            collected = self.collector.finish(
                exit_code=self.exit_code,
                failure=failure,
                result_mode=self.test.result,
                custom_results=custom,
            )
        except ValueError as exc:
            collected = ResultCollector().finish(
                exit_code=self.exit_code, failure=(Reason.TEST, str(exc))
            )
        end = now_iso()
        rundir = self.ex.rundir
        results = []
        abort = False
        data_files = self._data_files()
        for item in collected:
            files = [
                rundir.relative(safe_join(self.artdir, f))
                for f in item.files
                if f != TEST_DATA_ARCHIVE
            ]
            if item.testout:
                files.append(self._attach_output(item.testout))
            if item.name is None:
                files = [rundir.relative(self.artdir / "output.txt"), *files, *data_files]
            if item.extra.get("abort") is True:
                abort = True
            results.append(
                Result(
                    test=self.test.name,
                    plan=self.test.plan,
                    name=item.name,
                    platform=self.platform,
                    status=item.status,
                    attempt=self.attempt,
                    machine=self.ex.machine.id,
                    start=start,
                    end=end,
                    duration=round(duration, 3),
                    note=item.note,
                    files=_dedupe(files),
                    exit_code=self.exit_code if item.name is None else None,
                    reason=item.reason,
                    extra=item.extra,
                    serial_number=self.test.serial_number,
                )
            )
        return TestOutcome(results=results, abort=abort)

    def _attach_output(self, name: str) -> str:
        target = safe_join(self.artdir, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target != self.artdir / "output.txt":
            with contextlib.suppress(OSError):
                os.link(self.artdir / "output.txt", target)
        return self.ex.rundir.relative(target)

    def _unpack_test_data(self) -> tuple[Reason, str] | None:
        """Turn the archive the wrapper sent into data/, then drop the archive."""
        archive = self.artdir / TEST_DATA_ARCHIVE
        try:
            return self._store_test_data(archive)
        finally:
            archive.unlink(missing_ok=True)

    def _store_test_data(self, archive: bytes | Path) -> tuple[Reason, str] | None:
        """Unpack TMT_TEST_DATA into data/ (regular files only); a failure if it cannot."""
        try:
            skipped = extract_regular_files(archive, self.artdir / "data")
        except OSError as exc:
            return Reason.TEST, f"cannot store TMT_TEST_DATA: {exc}"
        if skipped:
            log.warning(
                "%s: skipped unsafe entries in TMT_TEST_DATA: %s",
                self.test.name,
                ", ".join(skipped[:5]),
            )
        return None

    def _data_files(self) -> list[str]:
        data = self.artdir / "data"
        if not data.is_dir():
            return []
        return sorted(
            self.ex.rundir.relative(p)
            for p in data.rglob("*")
            if p.is_file() and not p.is_symlink()
        )

    def _read_custom(self) -> tuple[list[dict[str, Any]] | None, str | None]:
        for name in ("results.yaml", "results.json"):
            path = self.artdir / "data" / name
            if path.is_file():
                try:
                    return parse_custom_results(path.read_text(errors="replace"), name), None
                except ValueError as exc:
                    return None, f"result: custom: {exc}"
        return None, "result: custom, but the test wrote no results.yaml or results.json"


def _beakerlib_result(path: Path) -> dict[str, Any]:
    """The test's own result from beakerlib's TestResults file, judged as tmt does."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {"status": "error", "note": "beakerlib: no TestResults file (no rlJournalEnd?)"}
    result = re.search(r"TESTRESULT_RESULT_STRING=(.*)", text)
    state = re.search(r'TESTRESULT_STATE="?(\w+)"?', text)
    if result is None or state is None:
        return {"status": "error", "note": "beakerlib: result or state missing in TestResults"}
    if state.group(1) != "complete":
        return {"status": "error", "note": f"beakerlib: state {state.group(1)!r}"}
    return {"status": result.group(1).strip().strip('"').lower()}


#: What tmt's shell framework runs before a test's command (checked against
#: tmt 1.78): a failing command or pipeline stage fails the test.
SHELL_FRAMEWORK_OPTIONS = "set -eo pipefail"


def _test_command(test: Test) -> str:
    """The command the wrapper runs: tmt's shell options first, for the shell framework."""
    if test.framework == "shell":
        return f"{SHELL_FRAMEWORK_OPTIONS}; {test.test}"
    return test.test


def _tail(data: bytes, limit: int = 1500) -> str:
    text = data.decode(errors="replace").strip()
    return text[-limit:] if text else "(no output)"


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


__all__ = ["Executor", "Limits", "PhaseError", "TestOutcome"]
