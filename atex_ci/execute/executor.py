"""Run one test on one machine through a Transport, and turn what happened into results.

The executor drives a test: it owns the per-machine work directory (the
uploaded fmf tree, the wrapper and shims, per-test scratch dirs), starts the
wrapper, follows reboots, kills what must end, and maps every way a test can
end to results. The parts with one job each live beside it:

- ``control.py`` parses the test-control stream, ``results.py`` merges results;
- ``frameworks.py``: shell and beakerlib, as strategies;
- ``environment.py``: the test's environment and the command that starts it;
- ``deadline.py``: the ``duration`` arithmetic (pure, ``now`` passed in);
- ``artifacts.py``: the artifact sink (caps, safe names, streaming to disk);
- ``outcome.py``: collected results to the records of results.jsonl;
- ``reaper.py``: finding and killing the run's processes on the machine;
- ``phases.py``: a plan's prepare and finish phases, and installing requirements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .. import events
from ..duration import format_limit
from ..errors import StorageError
from ..events import InternalError, Sink, TestResults
from ..model import Machine, Plan, Reason, Result, Test
from ..rundir import ArtifactTree, now_iso
from ..transport.base import NotStartedError, Transport, TransportError
from ..workarea import area_root
from .artifacts import ArtifactSink, LimitExceeded, TestError
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
)
from .deadline import Deadline
from .environment import (
    WorkDir,
    build_test_environment,
    wrapper_command,
)
from .frameworks import SHELL_FRAMEWORK_OPTIONS, framework_for
from .limits import Limits
from .outcome import RunFacts, TestOutcome, internal_error, record
from .phases import PhaseError, bounded, install, tail
from .reaper import reap_command, run_owner, test_owner, test_prefix
from .results import ResultCollector
from .staging import (
    TEST_DATA_ARCHIVE,
    is_staged,
    test_dir,
    test_metadata,
    too_large_to_send,
)

log = logging.getLogger("atex_ci.execute")

#: Seconds to wait after SIGTERM before SIGKILL when ending a test's process group.
KILL_GRACE = 2.0
#: Bound on each clean-up step after one test (killing its process group,
#: the floor of fetching its files), so a dead machine never hangs the run:
#: a kill needs KILL_GRACE plus a few SSH round trips, and 30 s leaves room
#: for a slow machine under load without holding a lost one long.
TEST_CLEANUP_TIMEOUT = 30.0
#: How long a cancelled (Ctrl-C) run may spend killing its remote tests.
CANCEL_CLEANUP_TIMEOUT = 10.0
#: How often to look for the note of a failed reboot command while waiting for
#: the machine to go down.
REBOOT_POLL_INTERVAL = 1.0
#: How long to try to reconnect to a machine whose idle connection dropped.
RECONNECT_TIMEOUT = 60.0


#: Exit status of the setup command when the work area is not the user's own.
WORK_AREA_REFUSED = 97


class _Reboot(Exception):
    """Raised from the control callback when the test announced a reboot."""


class Executor:
    """Runs tests on one machine. Not safe for concurrent tests: one executor per machine slot.

    ``base`` is the per-run work directory on the machine; ``setup`` must be
    called once before any test. Each test's files go to its directory in
    ``artifacts``; its results (``events.TestResults``) and atex-ci's own
    errors on it (``events.InternalError``) go to ``sink`` (in a run, the
    event stream the Recorder hears). ``run_id`` makes TMT_TEST_ITERATION_ID.
    No run directory is needed: a plan's phases are ``phases.PlanPhases``'.
    """

    def __init__(
        self,
        transport: Transport,
        machine: Machine,
        *,
        base: str,
        artifacts: ArtifactTree,
        sink: Sink | None = None,
        run_id: str = "",
        limits: Limits | None = None,
    ) -> None:
        self.transport = transport
        self.machine = machine
        self.artifacts = artifacts
        self.sink: Sink = sink or _ignore
        self.work = WorkDir(base)
        self.base = self.work.base
        self.run_id = run_id
        self.limits = limits or Limits()
        self.tree = self.work.tree
        #: The tests given to setup; which of them were staged is worked out
        #: only when a test with large metadata comes (``metadata_to_send``).
        self._setup_tests: tuple[Test, ...] = ()
        self._staged: set[str] | None = None
        #: Per plan, the names of the tests it selects more than once.
        self._repeated: dict[str, set[str]] = {}

    # -- machine setup -------------------------------------------------------------

    async def setup(self, tree_tar: bytes, remote_tar: bytes, tests: Iterable[Test] = ()) -> None:
        """Upload the fmf tree, and the wrapper, shims and staged test
        directories made by ``build_remote_tar(tests)``. Raises TransportError."""
        q = shlex.quote
        # An earlier invocation of this run on this machine may have been
        # killed (kill -9, a lost controller) with tests still running: end
        # them before their work directory is replaced under them.
        rc, _out, err = await self.transport.output(
            f"{self._work_area_check()}{reap_command(run_owner(self.base))}; rm -rf {q(self.base)}"
        )
        if rc == WORK_AREA_REFUSED:
            raise TransportError(f"cannot use the work area: {tail(err)}")
        await self.transport.put_tar(tree_tar, self.tree)
        await self.transport.put_tar(remote_tar, self.base)
        self._setup_tests = tuple(tests)
        self._staged = None

    def _work_area_check(self) -> str:
        """Commands (to run first) that make the user's work area (workarea.py)
        if it is missing and refuse one that is not the user's own directory,
        exiting WORK_AREA_REFUSED: in /var/tmp anyone may have made it first,
        or made it a link to somewhere else."""
        root = area_root(self.base)
        if root is None:
            return ""
        q = shlex.quote(root)
        return (
            f"mkdir -p {q} 2>/dev/null; if [ -L {q} ] || [ ! -d {q} ] || [ ! -O {q} ]; then "
            f'echo "{root} is not a directory of $(id -un)" >&2; exit {WORK_AREA_REFUSED}; fi\n'
        )

    async def cleanup(self, timeout: float) -> None:
        """End every process this run started on the machine (bounded; never raises)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await self.transport.run(reap_command(run_owner(self.base)))

    async def health_check(self, test: Test, timeout: float) -> str | None:
        """Whether the machine can take more tests after ``test`` timed out:
        it answers (reconnecting if the connection dropped), every process
        any attempt of ``test`` left is killed (by its ATEX_CI_OWNER, see
        reaper.py), and the work directory with its tree is still in place.

        Returns None when healthy, else why not (one line). Bounded by
        ``timeout``; never raises TransportError.
        """
        q = shlex.quote
        leftovers = reap_command(test_prefix(self.base, test.serial_number))
        command = f"{leftovers}\ntest -d {q(self.tree)} && test -w {q(self.base)} && echo ok"
        try:
            async with asyncio.timeout(timeout):
                await self.transport.connect()
                rc, out, err = await self.transport.output(command)
        except TimeoutError:
            return f"no answer in {format_limit(timeout)}"
        except TransportError as exc:
            return f"unreachable: {exc}"
        if rc != 0 or out.strip() != b"ok":
            detail = err.decode(errors="replace").strip()[:200]
            return f"work directory {self.base} is gone or not writable" + (
                f" ({detail})" if detail else ""
            )
        return None

    def repeated_in_plan(self, plan: Plan, test: Test) -> bool:
        """Whether ``plan`` selects ``test`` more than once (tmt then runs it
        twice, and each instance keeps its own files). Counted once per plan,
        not per test: a plan may hold thousands of tests."""
        repeated = self._repeated.get(plan.name)
        if repeated is None:
            counts = Counter(t.name for t in plan.tests)
            repeated = self._repeated[plan.name] = {n for n, c in counts.items() if c > 1}
        return test.name in repeated

    def metadata_to_send(self, test: Test) -> str | None:
        """TMT_TEST_METADATA for the command that starts ``test``, or None if
        setup staged it on the machine (large metadata, see staging.py)."""
        metadata = test_metadata(test)
        if too_large_to_send(metadata):
            if self._staged is None:
                self._staged = {test_dir(t) for t in self._setup_tests if is_staged(t)}
            if test_dir(test) in self._staged:
                return None
        return metadata.decode().removesuffix("\n")

    # -- one test ------------------------------------------------------------------

    async def run_test(
        self, test: Test, plan: Plan, *, platform: str, attempt: int = 1
    ) -> TestOutcome:
        """Run ``test`` to its end; its results go to the sink and are returned.

        Never raises for anything the test or the machine does; on
        cancellation, records the test as error (interrupted), kills its
        processes and re-raises CancelledError. Raises StorageError (after
        killing the test and recording what it can) when the run directory
        cannot be written.
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
        self.framework = framework_for(test)
        # A test the plan selects twice (tmt runs it twice) keeps two sets of files.
        repeated = executor.repeated_in_plan(plan, test)
        artdir = executor.artifacts.path(
            platform, test.name, attempt, plan.name, test.serial_number if repeated else None
        )
        self.sink = ArtifactSink(executor.artifacts, artdir, self.limits)
        self.remote_dir = f"{executor.base}/{test_dir(test)}"
        self.collector = ResultCollector()
        self.parser = ControlParser(max_result_bytes=self.limits.max_result_json)
        self.exit_code: int | None = None
        self.reboot_count = 0
        self.deadline = Deadline(0.0, test.duration)
        self.timeout_cm: asyncio.Timeout | None = None
        #: ATEX_CI_OWNER of this test's processes (see reaper.py).
        self.owner = test_owner(executor.base, test.serial_number, attempt)
        #: Bytes of result JSON received (Limits.max_results_total).
        self.result_bytes = 0
        #: The wrapper has started sending TMT_TEST_DATA after ``exitcode``.
        self.archive_started = False
        #: ...and all of it has arrived: only the end of the stream may follow.
        self.archive_done = False

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- driving -------------------------------------------------------------------

    async def execute(self) -> TestOutcome:
        start_wall = now_iso()
        start = time.monotonic()
        self.deadline = Deadline(self._now(), self.test.duration)
        failure: tuple[Reason, str] | None = None
        machine_lost = False
        cancelled: asyncio.CancelledError | None = None
        storage: StorageError | None = None
        try:
            # Creating directories and files can take milliseconds on a busy
            # disk: do it off the event loop, which serves every other machine.
            try:
                await asyncio.to_thread(self.sink.open)
            except TestError as exc:
                failure = (Reason.TEST, str(exc))  # nothing ran: only this test ends
            else:
                failure, machine_lost = await self._requirements()
                if failure is None:
                    failure, machine_lost = await self._boot_loop()
                self.sink.close_file()
                failure = await self._finish_test_data(failure, machine_lost)
        except asyncio.CancelledError as exc:
            cancelled = exc
            failure = (Reason.INTERRUPTED, "the run was interrupted")
        except StorageError as exc:
            # The run directory cannot take more (disk full, read-only): not
            # this test's fault, and no later test could be recorded either.
            storage = exc
            failure = (Reason.INFRA, str(exc))
            machine_lost = True
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._kill(TEST_CLEANUP_TIMEOUT))
        except Exception as exc:
            # A bug of atex-ci met on this test: that test's error (running it
            # again, here or elsewhere, would meet it again). The machine is
            # as good as before once the test's processes are gone.
            self._internal_error(exc)
            failure = (Reason.TEST, f"internal error in atex-ci: {type(exc).__name__}: {exc}")
            machine_lost = True
            with contextlib.suppress(BaseException):
                machine_lost = not await asyncio.shield(self._kill(TEST_CLEANUP_TIMEOUT))
        finally:
            self.sink.close()
        duration = time.monotonic() - start
        if cancelled is not None:
            outcome = self._safe_results(failure, start_wall, duration)
            # Written at once, before the (possibly slow) kill, so a crash or a
            # second Ctrl-C that ends atex-ci at once loses nothing.
            with contextlib.suppress(StorageError):
                self._append_results(outcome.results)
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._kill(CANCEL_CLEANUP_TIMEOUT))
            raise cancelled
        # Reading results.yaml, walking TMT_TEST_DATA and fsync can take a
        # while: keep the event loop (other machines) going.
        outcome = await asyncio.to_thread(self._safe_results, failure, start_wall, duration)
        outcome.machine_lost = machine_lost
        await asyncio.to_thread(self._append_results, outcome.results)
        if storage is not None:
            raise storage
        return outcome

    def _internal_error(self, exc: BaseException) -> None:
        """Keep the traceback of an unexpected error for debugging (events.jsonl,
        and the log at -vv), not on the terminal: the test's note says what happened."""
        text = "".join(traceback.format_exception(exc))
        log.debug("internal error while handling %s:\n%s", self.test.name, text)
        with contextlib.suppress(Exception):
            self.ex.sink(InternalError(self.test, text))

    def _safe_results(
        self, failure: tuple[Reason, str] | None, start: str, duration: float
    ) -> TestOutcome:
        """The test's results; whatever goes wrong turning its data into results
        ends as this test's error, never as an exception for the run."""
        try:
            return self._results(failure, start, duration)
        except StorageError:
            raise
        except Exception as exc:
            self._internal_error(exc)
            note = (
                "atex-ci could not turn what the test sent into results: "
                f"{type(exc).__name__}: {exc}"
            )
            if failure is not None:
                note = f"{failure[1]}; {note}"
            return internal_error(self._facts(start, duration), note)

    def _append_results(self, results: list[Result]) -> None:
        self.ex.sink(TestResults(results))

    async def _requirements(self) -> tuple[tuple[Reason, str] | None, bool]:
        try:
            await install(self.transport, self.test.require, missing_ok=False, what="require")
            await install(self.transport, self.test.recommend, missing_ok=True, what="recommend")
            missing = await self._framework_requirement()
            if missing is not None:
                return (Reason.TEST, missing), False
        except PhaseError as exc:
            return (Reason.TEST, str(exc)), False
        except TransportError as exc:
            return (Reason.INFRA, f"machine lost while installing requirements: {exc}"), True
        return None, False

    async def _framework_requirement(self) -> str | None:
        """Install what the test's framework needs (beakerlib) if it is missing,
        as tmt requires it; why the test cannot run, or None."""
        needed = self.framework.requirement()
        if needed is None:
            return None
        path, package = needed
        check = f"test -f {shlex.quote(path)}"
        rc, _out, _err = await bounded(self.transport, check, "framework")
        if rc == 0:
            return None
        where = f"framework {self.framework.name}: {path} is missing on {self.ex.machine.id}"
        try:
            await install(self.transport, [package], missing_ok=False, what="framework")
        except PhaseError as exc:
            return f"{where} ({exc})"
        rc, _out, _err = await bounded(self.transport, check, "framework")
        return None if rc == 0 else f"{where}, even after installing {package}"

    async def _boot_loop(self) -> tuple[tuple[Reason, str] | None, bool]:
        """Run the test, again after each reboot it asks for, until it ends."""
        loop = asyncio.get_running_loop()
        reconnected = False
        while True:
            self.parser = ControlParser(max_result_bytes=self.limits.max_result_json)
            try:
                command = self._command()
            except TestError as exc:
                return (Reason.TEST, str(exc)), False  # nothing started: nothing to end
            try:
                async with asyncio.timeout_at(self.deadline.at) as cm:
                    self.timeout_cm = cm
                    await self.transport.run(
                        command,
                        stdout=self._on_control,
                        stderr=self._on_output,
                        tty=False,
                    )
                    self._on_eof()
            except _Reboot:
                self.reboot_count += 1
                self.sink.close_file()
                ended = await self._reboot(loop)
                if ended is not None:
                    return ended
                continue
            except TimeoutError:
                await self._kill(TEST_CLEANUP_TIMEOUT)
                if self.archive_done:
                    # Everything came, but something still held the stream
                    # open: a process the test left that escaped the reaper.
                    return (
                        Reason.TEST,
                        "a process the test left running kept its output open after the test "
                        "ended (it dropped ATEX_CI_OWNER from its environment, see "
                        "docs/test-limits.md)",
                    ), False
                if self.archive_started:
                    return (
                        Reason.TEST,
                        "the test's files (TMT_TEST_DATA) did not arrive in "
                        f"{format_limit(self._data_timeout())}",
                    ), False
                # Whether a machine where a test hung can take more tests is
                # the scheduler's call (a local slot can; a host may be in any
                # state): the outcome says it timed out, nothing more.
                return (
                    Reason.TIMEOUT,
                    f"timeout: ran past its duration of {format_limit(self.test.duration)}",
                ), False
            except ControlError as exc:
                await self._kill(TEST_CLEANUP_TIMEOUT)
                return (Reason.TEST, f"test-control protocol violation: {exc}"), False
            except TestError as exc:
                await self._kill(TEST_CLEANUP_TIMEOUT)
                return (Reason.TEST, str(exc)), False
            except NotStartedError as exc:
                # The connection died while the machine was idle (noticed only
                # now): nothing ran, so reconnect once and start the test.
                if reconnected:
                    return (Reason.INFRA, f"cannot start the test: {exc}"), True
                reconnected = True
                try:
                    await self.transport.reconnect(min(RECONNECT_TIMEOUT, self._remaining()))
                except TransportError as again:
                    return (Reason.INFRA, f"machine unreachable: {again}"), True
                continue
            except TransportError as exc:
                return (Reason.INFRA, f"connection to the machine lost: {exc}"), True
            finally:
                self.timeout_cm = None
            if self.exit_code is None:
                return (
                    Reason.INFRA,
                    "the test wrapper ended without reporting an exit code",
                ), True
            return None, False

    def _data_timeout(self) -> float:
        """Time allowed to fetch a test's files: a floor plus 10 MB/s of the cap."""
        return TEST_CLEANUP_TIMEOUT + self.limits.max_upload / 10e6

    def _remaining(self) -> float:
        return self.deadline.remaining(self._now())

    async def _reboot(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[tuple[Reason, str], bool] | None:
        """After ``disconnect``: wait for the machine to go down and come back.

        Returns None when the test can start again, else (failure, machine_lost).
        """
        if not self.transport.supports_reboot:
            # A local slot cannot reboot: end the test's processes before they
            # see the closed channel and run a real reboot command, then start
            # the test again as if the machine had rebooted.
            await self._kill(TEST_CLEANUP_TIMEOUT)
            return None
        try:
            failed = await self._wait_down_or_failed(loop)
            if failed is not None:
                await self._kill(TEST_CLEANUP_TIMEOUT)
                return (Reason.TEST, f"the reboot command failed (exit {failed})"), False
            remaining = self.deadline.at - loop.time()
            if remaining <= 0:
                return (Reason.TIMEOUT, "timeout: ran past its duration while rebooting"), False
            await self.transport.reconnect(remaining)
        except TimeoutError:
            return (
                Reason.TIMEOUT,
                "timeout: the machine did not go down for the reboot the test requested",
            ), False
        except TransportError as exc:
            if loop.time() >= self.deadline.at:
                return (Reason.TIMEOUT, "timeout: ran past its duration while rebooting"), False
            return (Reason.INFRA, f"the machine did not come back after a reboot: {exc}"), True
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

        remaining = self.deadline.remaining(loop.time())
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

    async def _kill(self, timeout: float) -> bool:
        """End the test's process group: SIGTERM, then SIGKILL after a grace
        period. False when that could not be done (the machine unreachable)."""
        pidfile = shlex.quote(f"{self.remote_dir}/pid")
        steps = int(KILL_GRACE / 0.1)
        group = (
            f"for i in $(seq 20); do [ -s {pidfile} ] && break; sleep 0.1; done; "
            f"p=$(cat {pidfile} 2>/dev/null) || exit 0; "
            f'kill -TERM -- "-$p" 2>/dev/null || exit 0; '
            f'for i in $(seq {steps}); do kill -0 -- "-$p" 2>/dev/null || exit 0; sleep 0.1; done; '
            f'kill -KILL -- "-$p" 2>/dev/null; exit 0'
        )
        # The group gets SIGTERM first (a test may clean up); then whatever
        # the test started outside its group (setsid daemons) is found by its
        # ATEX_CI_OWNER and killed.
        command = f"( {group} ); {reap_command(self.owner)}"
        try:
            async with asyncio.timeout(timeout):
                await self.transport.run(command)
        except Exception:
            return False
        return True

    # -- the command and its environment ---------------------------------------------

    def _command(self) -> str:
        ex = self.ex
        try:
            env = build_test_environment(
                ex.work,
                self.test,
                self.plan,
                framework=self.framework,
                test_dir=self.remote_dir,
                run_id=ex.run_id,
                owner=self.owner,
                reboot_count=self.reboot_count,
                local_slot=not self.transport.supports_reboot,
            )
        except ValueError as exc:
            raise TestError(str(exc)) from None
        metadata = ex.metadata_to_send(self.test)
        if metadata is not None:
            env["ATEX_TEST_METADATA_JSON"] = metadata
        return wrapper_command(ex.work, env)

    # -- stream callbacks (synchronous, called by the transport) -----------------------

    def _on_output(self, chunk: bytes) -> None:
        self.sink.write_output(chunk)

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
                self.sink.write_file(event)
            elif isinstance(event, FileEnd):
                self.sink.end_file(event.name)
                if self.archive_started and event.name == TEST_DATA_ARCHIVE:
                    # The wrapper exits right after: the stream ends within the
                    # grace unless a leftover process holds it open.
                    self.archive_done = True
                    self._reschedule(self._now() + self.limits.exit_grace)
            elif isinstance(event, ResultEvent):
                self.result_bytes += event.size
                if self.result_bytes > self.limits.max_results_total:
                    raise LimitExceeded(
                        "the test's results exceeded the limit of "
                        f"{self.limits.max_results_total} bytes of JSON"
                    )
                self.collector.add(event.data)
                if self.exit_code is not None and any(
                    f["name"] == TEST_DATA_ARCHIVE for f in event.data["files"]
                ):
                    # The wrapper sends the test's files: that time is not the
                    # test's, the files get their own limit.
                    self.archive_started = True
                    self._reschedule(self._now() + self._data_timeout())
            elif isinstance(event, ExitCode):
                self.exit_code = event.code
                # The test itself is over; the wrapper packs TMT_TEST_DATA next,
                # which gets a grace period past the duration. (The test could
                # have written this line itself: it gets no more than that.)
                self._reschedule(self.deadline.test_ended(self._now(), self.limits.exit_grace))
            elif isinstance(event, Duration):
                self._reschedule(self.deadline.change(event, self._now()))
            elif isinstance(event, Disconnect):
                raise _Reboot()

    def _reschedule(self, when: float) -> None:
        if self.timeout_cm is not None:
            self.timeout_cm.reschedule(when)

    # -- after the test ------------------------------------------------------------

    async def _finish_test_data(
        self, failure: tuple[Reason, str] | None, machine_lost: bool
    ) -> tuple[Reason, str] | None:
        """Unpack the TMT_TEST_DATA archive the wrapper sent, or fetch the files
        of a test cut short; returns the test's failure (or a new one)."""
        archive = self.sink.archive
        if failure is None:
            if archive.exists():
                return await self._unpack_test_data()
            return None
        if archive.exists():
            if self.archive_done:
                # All of it came before the failure: keep the test's files (its
                # failure is still the one to report).
                await self._unpack_test_data()
            else:
                # Sent only in part (a cap or the time ran out while it came):
                # an archive cut in the middle is no data, remove it.
                await asyncio.to_thread(archive.unlink, True)
        elif not machine_lost:
            # The wrapper sends TMT_TEST_DATA itself when the test ends; a
            # test cut short (timeout, violation, cap) never got that far.
            await self._collect_test_data()  # the test's failure is the one to report
        return failure

    async def _collect_test_data(self) -> tuple[Reason, str] | None:
        """Fetch TMT_TEST_DATA into artifacts/.../data (regular files and dirs only).

        The archive streams to a file in the artifact directory as it comes
        (within the upload cap), and is unpacked off the event loop.
        """
        q = shlex.quote
        data_dir = f"{self.remote_dir}/data"
        writer = self.sink.archive_writer()
        try:
            try:
                async with asyncio.timeout(self._data_timeout()):
                    rc = await self.transport.run(
                        f"[ -d {q(data_dir)} ] || exit 0; tar -c -f - -C {q(data_dir)} .",
                        stdout=writer.write,
                    )
            finally:
                writer.close()
        except LimitExceeded as exc:
            await asyncio.to_thread(writer.discard)
            return Reason.TEST, str(exc)
        except (TransportError, TimeoutError) as exc:
            await asyncio.to_thread(writer.discard)
            return Reason.INFRA, f"could not collect TMT_TEST_DATA: {exc or 'timeout'}"
        if rc != 0 or writer.size == 0:
            await asyncio.to_thread(writer.discard)
            return None
        return await self._unpack_test_data()

    async def _unpack_test_data(self) -> tuple[Reason, str] | None:
        """Turn the archive into data/ off the event loop, then drop the archive."""
        problem = await asyncio.to_thread(self.sink.unpack_archive)
        if self.sink.skipped:
            log.warning(
                "%s: skipped unsafe entries in TMT_TEST_DATA: %s",
                self.test.name,
                ", ".join(self.sink.skipped[:5]),
            )
        return (Reason.TEST, problem) if problem else None

    def _facts(self, start: str, duration: float) -> RunFacts:
        return RunFacts(
            test=self.test,
            platform=self.platform,
            attempt=self.attempt,
            machine=self.ex.machine.id,
            start=start,
            duration=duration,
            exit_code=self.exit_code,
        )

    def _results(
        self, failure: tuple[Reason, str] | None, start: str, duration: float
    ) -> TestOutcome:
        custom: list[dict[str, Any]] | None = None
        if failure is None:
            verdict = self.framework.own_result(self.sink.path)
            if verdict is not None:
                # As tmt: the framework's verdict is the test's own result;
                # results reported on the way are only details.
                self.collector.add(verdict)
        if self.test.result == "custom" and failure is None:
            custom, problem = self.sink.read_custom_results()
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
        return record(self._facts(start, duration), collected, self.sink)


def _ignore(event: events.Event) -> None:
    """The sink of an executor given none."""


__all__ = ["SHELL_FRAMEWORK_OPTIONS", "Executor", "Limits", "TestOutcome"]
