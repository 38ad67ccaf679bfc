"""The tmt shims run for real under bash; their stream is checked with ControlParser."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from atex_ci.execute.control import ControlParser, Event, FileChunk, FileEnd, ResultEvent

from .test_control import merged

BIN = Path(__file__).resolve().parent.parent / "atex_ci" / "execute" / "remote" / "bin"


def _env(tmp_path: Path, fd: int | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEX_TEST_CONTROL", "OUTPUTFILE")}
    env["PATH"] = f"{tmp_path / 'fakebin'}:{BIN}:{env['PATH']}"
    env["TMT_TEST_DATA"] = str(tmp_path / "data")
    env["TMT_TEST_NAME"] = "/tests/shim"
    if fd is not None:
        env["ATEX_TEST_CONTROL"] = str(fd)
    env.update(extra)
    return env


def run_shim(
    tmp_path: Path, script: str, *, ignore_sigpipe: bool = False, **extra: str
) -> tuple[list[Event], subprocess.CompletedProcess[bytes]]:
    """Run ``script`` in bash with a pipe as the control fd; parse what it wrote."""
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(read_end, chunks))
    reader.start()
    preexec: Callable[[], object] | None = None
    if ignore_sigpipe:
        preexec = lambda: signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # noqa: E731
    try:
        proc = subprocess.run(
            ["bash", "-c", script],
            env=_env(tmp_path, write_end, **extra),
            pass_fds=(write_end,),
            capture_output=True,
            timeout=60,
            cwd=tmp_path,
            preexec_fn=preexec,
            start_new_session=True,
        )
    finally:
        os.close(write_end)
        reader.join()
    parser = ControlParser()
    events = parser.feed(b"".join(chunks)) + parser.feed_eof()
    return events, proc


def _read_all(fd: int, chunks: list[bytes]) -> None:
    with os.fdopen(fd, "rb") as stream:
        chunks.append(stream.read())


def test_report_result_plain(tmp_path: Path) -> None:
    events, proc = run_shim(tmp_path, "tmt-report-result sub PASS")
    assert proc.returncode == 0, proc.stderr
    assert events == [
        ResultEvent({"name": "/sub", "status": "pass", "counts_for_test": True, "files": []})
    ]


@pytest.mark.parametrize("result", ["PASS", "fail", "Warn", "SKIP", "info", "ERROR"])
def test_report_result_status_case_insensitive(tmp_path: Path, result: str) -> None:
    events, proc = run_shim(tmp_path, f"tmt-report-result x {result}")
    assert proc.returncode == 0, proc.stderr
    assert isinstance(events[0], ResultEvent)
    assert events[0].data["status"] == result.lower()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'quo"te', '/quo"te'),
        (b"back\\slash\\", "/back\\slash\\"),
        (b"new\nline\ttab\x01\x1f", "/new\nline\ttab\x01\x1f"),
        (b"caf\xc3\xa9", "/caf\u00e9"),
        (b"latin\xe9\xff", "/latin\ufffd\ufffd"),
        (b"/already/slashed", "/already/slashed"),
        (b"del\x7fchar", "/del\x7fchar"),
    ],
)
def test_report_result_any_name(tmp_path: Path, raw: bytes, expected: str) -> None:
    name_file = tmp_path / "name"
    name_file.write_bytes(raw)
    events, proc = run_shim(tmp_path, 'tmt-report-result "$(cat name; printf x)" pass; :')
    # $(...) strips trailing newlines, hence the x; drop it again below.
    assert proc.returncode == 0, proc.stderr
    assert isinstance(events[0], ResultEvent)
    assert events[0].data["name"] == expected + "x"


def test_report_result_name_via_args_exact(tmp_path: Path) -> None:
    events, _ = run_shim(tmp_path, "tmt-report-result -- $'a\\\\\"b\\nc' pass")
    assert isinstance(events[0], ResultEvent)
    assert events[0].data["name"] == '/a\\"b\nc'


def test_report_result_trailing_colon_dropped(tmp_path: Path) -> None:
    events, _ = run_shim(tmp_path, "tmt-report-result 'name:' pass")
    assert isinstance(events[0], ResultEvent)
    assert events[0].data["name"] == "/name"


def test_report_result_with_logs_message_and_score(tmp_path: Path) -> None:
    (tmp_path / "one.log").write_bytes(b"first\x00\xff")
    (tmp_path / "two.log").write_bytes(b"")
    events, proc = run_shim(
        tmp_path, "tmt-report-result -o one.log 'my sub' FAIL 42 --outputfile=two.log -t 'bad x'"
    )
    assert proc.returncode == 0, proc.stderr
    assert merged(events) == [
        ResultEvent(
            {
                "name": "/my sub",
                "status": "fail",
                "counts_for_test": True,
                "note": "bad x",
                "score": "42",
                "files": [
                    {"name": "my_sub/one.log", "length": 7},
                    {"name": "my_sub/two.log", "length": 0},
                ],
            }
        ),
        FileChunk("my_sub/one.log", b"first\x00\xff"),
        FileEnd("my_sub/one.log"),
        FileEnd("my_sub/two.log"),
    ]


def test_report_result_outputfile_default(tmp_path: Path) -> None:
    (tmp_path / "out.log").write_bytes(b"restraint log")
    events, _ = run_shim(
        tmp_path, "tmt-report-result a/b pass", OUTPUTFILE=str(tmp_path / "out.log")
    )
    assert merged(events)[1:] == [
        FileChunk("a_b/out.log", b"restraint log"),
        FileEnd("a_b/out.log"),
    ]


def test_report_result_slash_is_the_test_itself(tmp_path: Path) -> None:
    events, _ = run_shim(tmp_path, "tmt-report-result / FAIL")
    assert events == [
        ResultEvent({"partial": True, "status": "fail", "counts_for_test": True, "files": []})
    ]


def test_report_result_unreadable_file_is_skipped(tmp_path: Path) -> None:
    events, proc = run_shim(tmp_path, "tmt-report-result -o missing.log x pass")
    assert proc.returncode == 0
    assert b"missing.log" in proc.stderr
    assert events == [
        ResultEvent({"name": "/x", "status": "pass", "counts_for_test": True, "files": []})
    ]


@pytest.mark.parametrize("args", ["", "onlyname", "a b c d", "--bogus a pass"])
def test_report_result_usage_errors(tmp_path: Path, args: str) -> None:
    events, proc = run_shim(tmp_path, f"tmt-report-result {args}")
    assert proc.returncode == 2
    assert events == []


def test_shims_refuse_to_run_outside_a_test(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", "-c", "tmt-report-result x pass"],
        env=_env(tmp_path, None),
        capture_output=True,
    )
    assert proc.returncode == 1
    assert b"running test" in proc.stderr


def test_file_submit(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.txt").write_bytes(b"payload\n")
    for script in ("tmt-file-submit -l sub/f.txt", "tmt-file-submit x sub/f.txt"):
        events, proc = run_shim(tmp_path, script)
        assert proc.returncode == 0, proc.stderr
        assert merged(events) == [
            ResultEvent({"partial": True, "files": [{"name": "f.txt", "length": 8}]}),
            FileChunk("f.txt", b"payload\n"),
            FileEnd("f.txt"),
        ]


def test_file_submit_non_regular_file_is_measured_from_a_copy(tmp_path: Path) -> None:
    expected = Path("/proc/version").read_bytes()
    events, proc = run_shim(tmp_path, "tmt-file-submit -l /proc/version")
    assert proc.returncode == 0, proc.stderr
    assert merged(events)[1] == FileChunk("version", expected)


def test_file_submit_missing_file(tmp_path: Path) -> None:
    events, proc = run_shim(tmp_path, "tmt-file-submit -l nope")
    assert proc.returncode == 2
    assert events == []


def test_abort_reports_and_kills_its_process_group(tmp_path: Path) -> None:
    events, proc = run_shim(tmp_path, "tmt-abort; echo survived > after")
    assert events == [
        ResultEvent({"status": "error", "note": "aborted by tmt-abort", "abort": True, "files": []})
    ]
    assert proc.returncode == -signal.SIGTERM
    assert not (tmp_path / "after").exists()


def _fake_reboot(tmp_path: Path) -> Path:
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir(exist_ok=True)
    (fakebin / "reboot").write_text("#!/bin/bash\ntouch rebooted\n")
    (fakebin / "reboot").chmod(0o755)
    return tmp_path / "rebooted"


@pytest.mark.parametrize("ignore_sigpipe", [False, True])
@pytest.mark.parametrize(
    ("script", "marker"),
    [
        ("tmt-reboot -c 'touch marker'", "marker"),
        ("tmt-reboot -t 600", "rebooted"),
        ("rstrnt-reboot", "rebooted"),
        ("rhts-reboot", "rebooted"),
    ],
)
def test_reboot(tmp_path: Path, script: str, marker: str, ignore_sigpipe: bool) -> None:
    _fake_reboot(tmp_path)
    read_end, write_end = os.pipe()
    preexec: Callable[[], object] | None = None
    if ignore_sigpipe:
        preexec = lambda: signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # noqa: E731
    proc = subprocess.Popen(
        ["bash", "-c", f"{script}; echo returned > returned"],
        env=_env(tmp_path, write_end),
        pass_fds=(write_end,),
        cwd=tmp_path,
        preexec_fn=preexec,
        start_new_session=True,
    )
    os.close(write_end)
    try:
        parser = ControlParser()
        seen: list[Event] = []
        with os.fdopen(read_end, "rb", buffering=0) as stream:
            while not seen:
                chunk = stream.read(1)
                assert chunk, "the shim closed the channel without 'disconnect'"
                seen += parser.feed(chunk)
            # The reboot must wait until we close the channel: the shim keeps
            # writing noop until a write fails, and reboots only after that.
            # A noop that arrives after the check proves it was still waiting.
            after = b""
            while after.count(b"noop\n") < 3:
                rebooted_before = (tmp_path / marker).exists()
                chunk = stream.read(64)
                assert chunk, "the shim closed the channel before we did"
                after += chunk
                assert not rebooted_before
            assert set(after.split(b"\n")[:-1]) == {b"noop"}
        deadline = time.monotonic() + 60
        while not (tmp_path / marker).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / marker).exists()
        # After the reboot command the shim never returns (a real reboot would
        # end it); it is still running, and "returned" was never written.
        assert proc.poll() is None, "tmt-reboot must not return after starting the reboot"
        assert not (tmp_path / "returned").exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert seen[0].__class__.__name__ == "Disconnect"


def test_rstrnt_report_result(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"L")
    events, proc = run_shim(
        tmp_path, "rstrnt-report-result --server http://x -o log --no-plugins /t/sub WARN 7"
    )
    assert proc.returncode == 0, proc.stderr
    assert merged(events) == [
        ResultEvent(
            {
                "name": "/t/sub",
                "status": "warn",
                "counts_for_test": True,
                "score": "7",
                "files": [{"name": "t_sub/log", "length": 1}],
            }
        ),
        FileChunk("t_sub/log", b"L"),
        FileEnd("t_sub/log"),
    ]


def test_rhts_report_result(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"R")
    events, _ = run_shim(tmp_path, "rhts-report-result sub FAIL log 3")
    assert isinstance(events[0], ResultEvent)
    assert events[0].data["status"] == "fail"
    assert events[0].data["score"] == "3"
    assert events[0].data["files"] == [{"name": "sub/log", "length": 1}]
    events, _ = run_shim(tmp_path, "rhts-report-result -sub- PASS ''", OUTPUTFILE="log")
    assert events == [
        ResultEvent({"name": "/-sub-", "status": "pass", "counts_for_test": True, "files": []})
    ]


@pytest.mark.parametrize(
    "script",
    [
        "rstrnt-report-log -l f",
        "rstrnt-report-log --server http://x -l f",
        "rhts-submit-log -S srv -T 1 -l f",
        "rhts_submit_log -l f",
    ],
)
def test_log_aliases(tmp_path: Path, script: str) -> None:
    (tmp_path / "f").write_bytes(b"F")
    events, proc = run_shim(tmp_path, script)
    assert proc.returncode == 0, proc.stderr
    assert merged(events) == [
        ResultEvent({"partial": True, "files": [{"name": "f", "length": 1}]}),
        FileChunk("f", b"F"),
        FileEnd("f"),
    ]


@pytest.mark.parametrize("script", ["rstrnt-abort", "rhts-abort"])
def test_abort_aliases(tmp_path: Path, script: str) -> None:
    events, proc = run_shim(tmp_path, f"{script}; touch after")
    assert proc.returncode == -signal.SIGTERM
    assert isinstance(events[0], ResultEvent)
    assert events[0].data["abort"] is True
    assert not (tmp_path / "after").exists()


def test_many_results_in_one_stream(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(300_000))
    events, proc = run_shim(
        tmp_path,
        "for i in 1 2 3; do tmt-report-result -o big r$i pass; done; tmt-file-submit -l big",
    )
    assert proc.returncode == 0, proc.stderr
    chunks = [e for e in merged(events) if isinstance(e, FileChunk)]
    assert [c.name for c in chunks] == ["r1/big", "r2/big", "r3/big", "big"]
    assert all(c.data == (tmp_path / "big").read_bytes() for c in chunks)
