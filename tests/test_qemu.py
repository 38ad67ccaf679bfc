"""QEMU VMs end to end (atex_ci/provision/qemu.py), through the real CLI.

The VMs boot the Debian image tests/vm_image.py builds from Debian's packages
(cached per machine), with the real cloud-init reading the provisioner's
NoCloud seed. KVM is used where it can run them, TCG otherwise.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .treeutil import DEMO, REPO, atex, own_results, signal_when, wait_while_running
from .vm_image import VMImage, missing_requirements, vm_image

#: Seconds a command that boots VMs may take: emulated (TCG) on two shared
#: cores a boot takes a minute or two.
BOOT_COMMAND_TIMEOUT = 900

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def image() -> VMImage:
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    return vm_image()


def vm_options(image: VMImage, count: int) -> list[str]:
    return [
        "--provisioner", "qemu", "--image", str(image.disk), "--count", str(count),
        "--kernel", str(image.kernel), "--initrd", str(image.initrd),
        "--kernel-cmdline", image.cmdline, "--memory", "512",
    ]  # fmt: skip


def qemu_pids(run: Path) -> list[int]:
    """The QEMU processes running a disk of this run directory."""
    marker = str(run / "vms").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and any(marker in a for a in argv):
            found.append(int(entry.name))
    return found


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Path]:
    """A run directory whose VMs are all gone at teardown, whatever the test did."""
    run = tmp_path / "run"
    try:
        yield run
    finally:
        for pid in qemu_pids(run):
            os.kill(pid, signal.SIGKILL)


def machines(run: Path) -> list[dict]:
    return json.loads((run / "machines.json").read_text())["machines"]


def qemu_img_info(path: Path) -> dict:
    proc = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def check_demo(run: Path) -> None:
    """The demo's outcome, as .ci/check_demo.py checks it."""
    proc = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "check_demo.py"), str(run)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_demo_on_two_vms_sharing_one_image(run, image):
    proc = atex("reserve", "-d", str(run), *vm_options(image, 2), timeout=BOOT_COMMAND_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    vms = machines(run)
    assert [m["provisioner"] for m in vms] == ["qemu", "qemu"]
    assert sorted(qemu_pids(run)) == sorted(m["handle"]["pid"] for m in vms)
    for machine in vms:
        # Each VM writes its own overlay; the image is only their backing file.
        overlay = Path(machine["handle"]["overlay"])
        info = qemu_img_info(overlay)
        assert overlay.parent == run / "vms" / machine["id"]
        assert info["format"] == "qcow2"
        assert info["backing-filename"] == str(image.disk)
        assert machine["host"] == "127.0.0.1" and machine["host_key"]
    recipe = json.loads((run / "run.json").read_text())["provisioner"]
    assert recipe["kind"] == "qemu" and recipe["options"]["image"] == str(image.disk)

    proc = atex("run", "-d", str(run), "--fmf-root", str(DEMO), "--keep-machines")
    assert proc.returncode == 1, proc.stderr  # the demo fails one test on purpose
    check_demo(run)
    assert {r["machine"] for r in own_results(run).values()} <= {m["id"] for m in vms}
    assert len(qemu_pids(run)) == 2  # kept for release

    proc = atex("release", "-d", str(run))
    assert proc.returncode == 0, proc.stderr
    assert qemu_pids(run) == []
    assert {m["state"] for m in machines(run)} == {"released"}
    for machine in vms:
        vm_dir = run / "vms" / machine["id"]
        assert sorted(p.name for p in vm_dir.iterdir()) == ["console.log"]
        console = (vm_dir / "console.log").read_text(errors="replace")
        # The guest's own boot, cloud-init taking the seed's host name included.
        assert "Linux version" in console
        assert "cloud-init" in console
    assert not (run / "keys").exists()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def image_server(image: VMImage) -> Iterator[str]:
    """The image's directory served over HTTP on 127.0.0.1; its base URL."""
    handler = functools.partial(_QuietFiles, directory=str(image.disk.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_vm_of_a_killed_run_is_destroyed_by_release(run, image, image_server, tmp_path):
    """An image given by URL is downloaded into the cache and booted; kill -9
    of `run` leaves its VM running (QEMU is a daemon); the next `release`
    finds it in machines.json and destroys it."""
    options = vm_options(image, 1)
    options[options.index("--image") + 1] = f"{image_server}/{image.disk.name}"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "atex_ci", "run", "-d", str(run), "--fmf-root", str(DEMO),
         *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + BOOT_COMMAND_TIMEOUT
        while (
            not (run / "events.jsonl").exists()
            or "test_started" not in (run / "events.jsonl").read_text()
        ):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no test started"
            time.sleep(0.2)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (vm,) = machines(run)
    assert qemu_pids(run) == [vm["handle"]["pid"]]
    (cached,) = (tmp_path / "cache" / "atex-ci" / "images").glob("*/disk.qcow2")
    assert cached.stat().st_size == image.disk.stat().st_size
    assert qemu_img_info(Path(vm["handle"]["overlay"]))["backing-filename"] == str(cached)

    proc2 = atex("release", "-d", str(run))
    assert proc2.returncode == 0, proc2.stderr
    assert qemu_pids(run) == []
    assert not Path(vm["handle"]["overlay"]).exists()
    assert (run / "vms" / vm["id"] / "console.log").stat().st_size > 0


def test_sigterm_while_booting_destroys_the_vm(run, image):
    """`reserve` stopped by SIGTERM once QEMU runs, before the VM answers:
    the VM is destroyed and its disks removed; nothing is recorded as held."""
    code, err = signal_when(
        ["reserve", "-d", str(run), *vm_options(image, 1)],
        lambda proc: wait_while_running(
            proc, lambda: bool(qemu_pids(run)), "QEMU never started", timeout=120
        ),
    )
    assert code == 143, err
    assert qemu_pids(run) == []
    (vm_dir,) = (run / "vms").iterdir()
    assert not (vm_dir / "overlay.qcow2").exists() and not (vm_dir / "seed.iso").exists()
    assert not (run / "machines.json").exists() or machines(run) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--provisioner", "qemu"], "--provisioner qemu needs --image PATH|URL"),
        (["--provisioner", "qemu", "--image", "/nonexistent.qcow2"], "does not exist"),
        (["--provisioner", "qemu", "--image", "x.qcow2", "--memory", "lots"], "invalid --memory"),
        (["--provisioner", "qemu", "--image", "x.qcow2", "--initrd", __file__], "need --kernel"),
        (["--image", "x.qcow2"], "--image needs --provisioner podman or docker or qemu"),
        (["--provisioner", "qemu", "--image", "a.qcow2", "--image", "b.qcow2"], "one --image"),
        (["--provisioner", "testing-farm", "--compose", "F", "--cpus", "2"], "--cpus needs"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    proc = atex("reserve", "-d", str(tmp_path / "run"), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("atex-ci: ")
