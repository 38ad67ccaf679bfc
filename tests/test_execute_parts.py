"""The executor's small parts on their own: the deadline (pure), the frameworks,
the environment builder and the artifact sink (real files, real caps)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from atex_ci.duration import MAX_DURATION
from atex_ci.execute.artifacts import ArtifactSink, LimitExceeded
from atex_ci.execute.artifacts import TestError as SinkError
from atex_ci.execute.control import ControlError, Duration, FileChunk
from atex_ci.execute.deadline import Deadline
from atex_ci.execute.environment import WorkDir, build_test_environment
from atex_ci.execute.frameworks import framework_for
from atex_ci.execute.limits import Limits
from atex_ci.model import Plan, Test
from atex_ci.rundir import RunDir


def test_deadline_words_move_it_from_now():
    deadline = Deadline(100.0, 60.0)
    assert deadline.at == 160.0
    assert deadline.change(Duration("set", 30.0), now=110.0) == 140.0
    assert deadline.change(Duration("add", 5.0), now=120.0) == 145.0
    assert deadline.change(Duration("sub", 10.0), now=120.0) == 135.0
    assert deadline.remaining(130.0) == 5.0
    assert deadline.remaining(200.0) == 0.0
    assert deadline.change(Duration("set", 10 * MAX_DURATION), now=0.0) == MAX_DURATION


def test_deadline_save_restore_nest_and_only_the_outer_pair_counts():
    deadline = Deadline(0.0, 100.0)
    deadline.change(Duration("save", None), now=10.0)  # 90 s left
    deadline.change(Duration("set", 1000.0), now=10.0)
    deadline.change(Duration("save", None), now=20.0)
    deadline.change(Duration("restore", None), now=30.0)  # inner: no effect
    assert deadline.at == 1010.0
    assert deadline.change(Duration("restore", None), now=500.0) == 590.0
    with pytest.raises(ControlError, match="without 'duration save'"):
        deadline.change(Duration("restore", None), now=600.0)


def test_deadline_after_exit_code_gets_a_grace_only():
    deadline = Deadline(0.0, 5.0)
    assert deadline.test_ended(now=1.0, grace=30.0) == 31.0  # ended early: grace from now
    deadline = Deadline(0.0, 500.0)
    assert deadline.test_ended(now=1.0, grace=30.0) == 500.0  # never shortened


def _test(**kw) -> Test:
    return Test(name="/t", plan="/plan", test="make check", path="/", **kw)


def test_frameworks_as_tmt_runs_them(tmp_path):
    shell = framework_for(_test())
    assert shell.command(_test()) == "set -eo pipefail; make check"
    assert shell.environment(_test(), data_dir="/d", bin_dir="/b") == {}
    assert shell.own_result(tmp_path) is None
    beaker = framework_for(_test(framework="beakerlib"))
    assert beaker.command(_test()) == "make check"
    assert beaker.environment(_test(), data_dir="/d", bin_dir="/b")["BEAKERLIB_DIR"] == "/d"
    assert beaker.own_result(tmp_path)["status"] == "error"  # no TestResults
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "TestResults").write_text(
        'TESTRESULT_RESULT_STRING=PASS\nTESTRESULT_STATE="complete"\n'
    )
    assert beaker.own_result(tmp_path) == {"status": "pass"}


def test_environment_layers_and_refuses_bad_names():
    work = WorkDir("/w/")
    plan = Plan(name="/plan", environment={"A": "plan", "TMT_TREE": "mine"})
    test = _test(environment={"A": "test"})
    env = build_test_environment(
        work, test, plan, framework=framework_for(test), test_dir="/w/tests/t", run_id="r",
        owner="/w#1-1;", reboot_count=2, local_slot=True,
    )  # fmt: skip
    assert env["A"] == "test"
    assert env["TMT_TREE"] == "/w/tree"  # tmt's variables win
    assert env["ATEX_CI_OWNER"] == "/w#1-1;"
    assert env["TMT_REBOOT_COUNT"] == env["REBOOTCOUNT"] == "2"
    assert env["ATEX_TEST_FRESH"] == "0" and env["ATEX_LOCAL_SLOT"] == "1"
    with pytest.raises(ValueError, match="'BAD-NAME'"):
        build_test_environment(
            work, _test(environment={"BAD-NAME": "x"}), plan, framework=framework_for(test),
            test_dir="/t", run_id="r", owner="o", reboot_count=0, local_slot=False,
        )  # fmt: skip


def _sink(tmp_path: Path, **limits: int) -> ArtifactSink:
    rundir = RunDir.create(tmp_path / "run")
    tree = rundir.artifacts
    sink = ArtifactSink(tree, tree.path("p", "/t", 1, "/plan"), Limits(**limits))
    sink.open()
    return sink


def test_sink_caps_output_and_uploads(tmp_path):
    sink = _sink(tmp_path, max_output=10, max_upload=8, max_files=2)
    sink.write_output(b"12345")
    with pytest.raises(LimitExceeded, match="output exceeded the limit of 10 bytes"):
        sink.write_output(b"678901234")
    assert (sink.path / "output.txt").read_bytes() == b"1234567890"
    sink.write_file(FileChunk("a", b"1234"))
    sink.end_file("a")
    sink.end_file("empty")  # an empty file exists
    assert (sink.path / "empty").read_bytes() == b""
    with pytest.raises(LimitExceeded, match="limit of 2 files"):
        sink.end_file("third")
    with pytest.raises(LimitExceeded, match="limit of 8 bytes"):
        sink.write_file(FileChunk("a", b"12345"))
    sink.close()


def test_sink_name_in_the_way_is_the_tests_fault(tmp_path):
    sink = _sink(tmp_path)
    sink.end_file("plain")
    with pytest.raises(SinkError, match="cannot store the file 'plain/x'"):
        sink.write_file(FileChunk("plain/x", b"1"))
    with pytest.raises(FileExistsError):
        sink.attach_output("plain/out.txt")
    assert sink.attach_output("copy/out.txt") == "p/plan/t/1/copy/out.txt"
    sink.close()


def _sparse_tar(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("big")
        info.size = size
        tar.addfile(info, io.BytesIO(b"\0" * size))
    return buf.getvalue()


def test_sink_unpacks_within_what_is_left_of_the_caps(tmp_path):
    sink = _sink(tmp_path, max_upload=1000, max_files=5)
    archive = _sparse_tar(5000)
    sink.upload_bytes = sink.archive_bytes = len(archive)  # as if it came on the stream
    sink.archive.write_bytes(archive)
    problem = sink.unpack_archive()
    assert problem is not None and "limit of 1000 bytes once unpacked" in problem
    assert not sink.archive.exists()  # removed, also after a cap
    assert (sink.path / "data" / "big").stat().st_size <= 1000
    sink.close()


def test_reaper_finds_processes_by_owner_in_any_session():
    import subprocess

    from atex_ci.execute.reaper import reap_command, run_owner, test_owner

    def start(owner: str) -> subprocess.Popen[bytes]:
        # A new session each, as a setsid daemon: no process group ties them.
        env = {"PATH": "/usr/bin:/bin", "ATEX_CI_OWNER": owner}
        return subprocess.Popen(["sleep", "1000"], env=env, start_new_session=True)

    one = start(test_owner("/w", 1, 1))
    two = start(test_owner("/w", 2, 1))
    ten = start(test_owner("/w0", 1, 1))  # another work dir sharing a prefix
    try:
        subprocess.run(["bash", "-c", reap_command(test_owner("/w", 1, 1))], check=True)
        assert one.wait(timeout=30) == -9
        assert two.poll() is None and ten.poll() is None
        subprocess.run(["bash", "-c", reap_command(run_owner("/w"))], check=True)
        assert two.wait(timeout=30) == -9
        assert ten.poll() is None
    finally:
        for proc in (one, two, ten):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_reaper_after_a_test_looks_at_newer_pids_only_when_safe():
    import subprocess

    from atex_ci.execute.reaper import _REAP_SH

    env = {"PATH": "/usr/bin:/bin", "ATEX_CI_OWNER": "/w#1-1;"}
    old = subprocess.Popen(["sleep", "1000"], env=env, start_new_session=True)
    try:
        # The pid given is newer than the process: it is left for the run's end...
        script = f"source {_REAP_SH}; read -r last </proc/sys/kernel/ns_last_pid; "
        subprocess.run(["bash", "-c", script + 'atex_reap "/w#1-1;" "$last"'], check=True)
        assert old.poll() is None
        # ...and found when the pid is older (or when the counter wrapped).
        subprocess.run(["bash", "-c", script + f'atex_reap "/w#1-1;" {old.pid}'], check=True)
        assert old.wait(timeout=30) == -9
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()


def test_only_metadata_too_large_for_a_command_is_staged():
    from atex_ci.execute.staging import INLINE_METADATA_MAX, build_remote_tar, is_staged, test_dir

    small = Test(name="/small", plan="/plan", test="true", path="/", serial_number=1)
    large = Test(
        name="/large",
        plan="/plan",
        test="true",
        path="/",
        serial_number=2,
        data={"description": "x" * INLINE_METADATA_MAX},
    )
    # Counted as quoted for the shell: a quote takes five bytes there.
    quotes = Test(
        name="/quotes",
        plan="/plan",
        test="true",
        path="/",
        serial_number=3,
        data={"description": "'" * (INLINE_METADATA_MAX // 4)},
    )
    assert not is_staged(small) and is_staged(large) and is_staged(quotes)
    with tarfile.open(fileobj=io.BytesIO(build_remote_tar([small, large]))) as tar:
        names = tar.getnames()
    assert f"{test_dir(large)}/metadata.yaml" in names
    assert f"{test_dir(large)}/data" in names
    assert not any(n.startswith(test_dir(small)) for n in names)
    assert "remote/wrapper.sh" in names


def test_one_test_runs_without_a_run_directory(tmp_path: Path) -> None:
    """The toolbox: an Executor needs a transport, a work directory on the
    machine, a tree for the test's files and a sink; no run directory."""
    import asyncio
    import os

    from atex_ci.discover import discover
    from atex_ci.events import Event, TestResults
    from atex_ci.execute.executor import Executor
    from atex_ci.execute.staging import build_remote_tar, build_tree_tar
    from atex_ci.model import Machine, Status
    from atex_ci.rundir import ArtifactTree
    from atex_ci.transport.local import LocalTransport, slot_environment

    from .treeutil import make_tree

    tree = make_tree(tmp_path / "tree", {"hello": {"test": "echo hello-from-the-test"}})
    plan = discover(tree)[0]
    test = plan.tests[0]
    machine = Machine(id="here", provisioner="local", platform="default", host=None, user="")
    heard: list[Event] = []

    async def main():
        transport = LocalTransport(slot_environment(os.environ))
        executor = Executor(
            transport,
            machine,
            base=str(tmp_path / "work"),
            artifacts=ArtifactTree(tmp_path / "out"),
            sink=heard.append,
        )
        await transport.connect()
        try:
            await executor.setup(build_tree_tar(tree), build_remote_tar([test]), [test])
            return await executor.run_test(test, plan, platform="default")
        finally:
            await executor.cleanup(10)
            await transport.close()

    outcome = asyncio.run(main())
    assert [(r.test, r.status) for r in outcome.results] == [("/tests/hello", Status.PASS)]
    assert len(heard) == 1 and isinstance(heard[0], TestResults)
    assert heard[0].results == outcome.results
    output = tmp_path / "out" / outcome.results[0].files[0]
    assert b"hello-from-the-test" in output.read_bytes()
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"tree", "work", "out"}  # no run directory anywhere
