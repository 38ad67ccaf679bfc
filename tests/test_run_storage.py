"""The run directory failing under a run: full disk, read-only, run.json removed or damaged.

Each is one line on stderr with exit code 3, the results already written stay
intact, and the machines are released. Uses small tmpfs mounts (needs root).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .treeutil import atex, make_tree, own_results, reserve_hosts


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def one_line_error(stderr: str, *words: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("atex-ci: cannot")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def no_processes_of(run: Path) -> bool:
    needle = f"ATEX_CI_OWNER={run.resolve()}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes():
                    return False
            except OSError:
                continue
    return True


def test_full_disk_stops_the_run_with_one_line_and_keeps_results(tmp_path, small_fs):
    tree = make_tree(
        tmp_path / "tree",
        {
            "a-first": {"test": "echo fine", "order": 1},
            "b-fill": {"test": "head -c 8M /dev/zero", "order": 2},
            "c-later": {"test": "true", "order": 3},
        },
    )
    run = small_fs / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 3, proc.stderr
    one_line_error(proc.stderr, "No space left on device")
    own = own_results(run)
    assert own["/tests/a-first"]["status"] == "pass"
    assert "/tests/c-later" not in own or own["/tests/c-later"]["status"] != "pass"
    # The slot was released: its work directory is gone, nothing runs.
    assert not (run / "work" / "local-1").exists()
    assert no_processes_of(run)


def test_read_only_run_dir_is_one_line(tmp_path, small_fs):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    run = small_fs / "run"
    assert atex("reserve", "-d", str(run), "--local", "1").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
        assert proc.returncode == 3, proc.stderr
        one_line_error(proc.stderr, "Read-only file system")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    # Nothing was started; the reservation is intact and releases normally.
    assert not (run / "results.jsonl").exists()
    assert atex("release", "-d", str(run)).returncode == 0


def test_run_json_removed_mid_run(tmp_path):
    run = tmp_path / "run"
    tree = make_tree(
        tmp_path / "tree",
        {
            "a-remover": {"test": f"rm {run}/run.json", "order": 1},
            "b-later": {"test": "true", "order": 2},
        },
    )
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 3, proc.stderr
    one_line_error(proc.stderr, "run.json", "removed or damaged")
    own = own_results(run)
    assert own["/tests/a-remover"]["status"] == "pass"
    assert own["/tests/b-later"]["status"] == "pass"
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"released"}
    assert no_processes_of(run)


def test_release_works_with_a_damaged_run_json(tmp_path):
    run = tmp_path / "run"
    assert atex("reserve", "-d", str(run), "--local", "2").returncode == 0
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    assert atex("run", "-d", str(run), "--fmf-root", str(tree)).returncode == 0
    (run / "run.json").write_text('{"format": "atex-ci-run", "id": ')
    proc = atex("release", "-d", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"released"}
    assert not (run / "work" / "local-1").exists()


def test_release_of_hosts_works_with_a_damaged_run_json(tmp_path, ssh_host):
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    assert atex("run", "-d", str(run), "--fmf-root", str(tree), "--keep-machines").returncode == 0
    run_id = json.loads((run / "run.json").read_text())["id"]
    work = Path(f"/proc/{ssh_host.init_pid}/root/var/tmp/atex-ci/{run_id}")
    assert work.is_dir()
    (run / "run.json").write_text("garbage")
    proc = atex("release", "-d", str(run))
    assert proc.returncode == 0, proc.stderr
    assert not work.exists()
