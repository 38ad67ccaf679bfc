"""Containers end to end: real podman, a Debian image built here (tests/images.py),
the real CLI (reserve, run, release) and the container transport on its own.

docker cannot run on the machines this suite runs on (no engine); its
provisioner shares all of this code, and the one path it takes that podman
does not (commands through ``ENGINE exec -i``) is tested here with podman.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from atex_ci.errors import ConfigError
from atex_ci.provision.container import (
    INIT,
    RUN_LABEL,
    PodmanProvisioner,
    container_name,
    parse_images,
)
from atex_ci.transport.base import NotStartedError
from atex_ci.transport.container import ContainerTransport

from . import images
from .test_hostile import (
    MAX_CONTROLLER_RSS_KB,
    assert_error_notes,
    control_stream_abuse,
    run_measured,
)
from .treeutil import (
    DEMO,
    REPO,
    make_tree,
    own_results,
    results,
    signal_when,
    statuses,
    wait_while_running,
)

PODMAN = ["podman"]
NAMES = ("--format", "{{.Names}}")
HOSTILE = REPO / "tests" / "fixtures" / "hostile.py"


@pytest.fixture(scope="module")
def image() -> str:
    reason = images.missing_podman()
    if reason is not None:
        pytest.skip(reason)
    os.environ["CONTAINERS_CONF"] = str(images.containers_conf())
    return images.debian_image()


def catex(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atex_ci", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run_id(run: Path) -> str:
    return str(json.loads((run / "run.json").read_text())["id"])


def containers_of(run: Path) -> list[str]:
    """Names of the run's containers, running or not (``podman ps -a``)."""
    out = subprocess.run(
        [*PODMAN, "ps", "-a", "--filter", f"label={RUN_LABEL}={run_id(run)}", *NAMES],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def remove_all(run: Path) -> None:
    """Clean up after a test that failed half-way (what release should have done)."""
    if (run / "run.json").is_file():
        for name in containers_of(run):
            subprocess.run([*PODMAN, "rm", "-f", "-t", "0", name], capture_output=True)


@pytest.fixture
def run(tmp_path: Path) -> Any:
    """The run directory; its containers are removed even when the test fails."""
    path = tmp_path / "run"
    try:
        yield path
    finally:
        remove_all(path)


def machines(run: Path) -> list[dict[str, Any]]:
    return list(json.loads((run / "machines.json").read_text())["machines"])


def _wait_for(predicate: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


# -- what is asked for ----------------------------------------------------------------------


def test_images_and_platforms_are_checked_before_anything_runs():
    assert parse_images(("fedora:41",), "mine") == {"mine": "fedora:41"}
    assert parse_images(("quay.io/fedora/fedora:41", "centos:stream9"), "mine") == {
        "fedora-41": "quay.io/fedora/fedora:41",
        "centos-stream9": "centos:stream9",
    }
    assert parse_images(("a=img", "b=img"), "mine") == {"a": "img", "b": "img"}
    for bad in (("--privileged",), ("a=x", "a=y"), ("../x=img",), ("",)):
        with pytest.raises(ConfigError):
            parse_images(bad, "mine")
    # What a damaged run.json gives back is checked too.
    with pytest.raises(ConfigError):
        PodmanProvisioner(None, "p", {"p": "--privileged"})  # type: ignore[arg-type]
    # Two machine ids never share a container name.
    assert container_name("r1", "a:b") != container_name("r1", "a_b")


# -- the transport ------------------------------------------------------------------------


@pytest.fixture
def container(image: str) -> Any:
    name = f"atex-ci-transport-test-{os.getpid()}"
    subprocess.run(
        [*PODMAN, "run", "-d", "--name", name, "--entrypoint", "/bin/sh", image, "-c", INIT],
        check=True,
        capture_output=True,
    )
    try:
        yield name
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "0", name], capture_output=True)


def in_container(name: str, command: str) -> str:
    return subprocess.run(
        [*PODMAN, "exec", name, "bash", "-c", command], capture_output=True, text=True
    ).stdout


def test_transport_runs_commands_through_the_runtime(container):
    async def main() -> None:
        transport = ContainerTransport(PODMAN, container)
        await transport.connect()
        assert not transport.through_engine  # the OCI runtime's own exec
        rc, out, err = await transport.output("cat; echo err >&2; exit 3", stdin=b"in\n")
        assert (rc, out, err) == (3, b"in\n", b"err\n")
        rc, out, _err = await transport.output("yes | head -1; echo ${PIPESTATUS[0]}")
        assert (rc, out) == (0, b"y\n141\n")  # SIGPIPE as on any machine
        assert await transport.run("kill -TERM $$") == 143
        assert await transport.run("test -t 1", tty=True) == 0
        # Not started is not a command's failure: "exit 1" is the command's.
        assert await transport.run("exit 1") == 1
        subprocess.run([*PODMAN, "stop", "-t", "0", container], check=True, capture_output=True)
        with pytest.raises(NotStartedError):
            await transport.run("true")
        await transport.reconnect(60)
        assert await transport.run("true") == 0
        await transport.close()

    asyncio.run(main())


@pytest.mark.parametrize("through_engine", [False, True], ids=["runtime", "engine-exec"])
def test_a_cancelled_command_sees_its_channel_close(container, through_engine):
    """What tmt-reboot needs: once atex-ci stops reading, a write fails (EPIPE).
    Through ``podman exec`` it never does: conmon holds the container's end."""

    async def main() -> None:
        transport = ContainerTransport(PODMAN, container)
        await transport.connect()
        if through_engine:  # the fallback path (docker's when runc's state is elsewhere)
            assert transport._exec is not None
            transport._exec = [*PODMAN, "exec", "-i", transport._exec[-1]]
        started = asyncio.Event()
        command = "trap '' PIPE; while printf 'x\\n'; do sleep 0.05; done; echo ended > /tmp/ended"
        task = asyncio.ensure_future(transport.run(command, stdout=lambda _c: started.set()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await transport.close()

    asyncio.run(main())
    if through_engine:
        # The writer goes on: conmon keeps reading for it.
        time.sleep(1)
        assert in_container(container, "cat /tmp/ended 2>&1; pgrep -c -f 'printf'") != "ended\n"
    else:
        _wait_for(lambda: in_container(container, "cat /tmp/ended") == "ended\n", "EPIPE")


# -- the CLI --------------------------------------------------------------------------------


def test_demo_on_three_containers_then_nothing_is_left(tmp_path, image, run):
    reserved = catex(
        "reserve", "-d", str(run), "--provisioner", "podman", "--image", image, "--count", "3"
    )
    assert reserved.returncode == 0, reserved.stderr
    assert len(containers_of(run)) == 3
    proc = catex("run", "-d", str(run), "--fmf-root", str(DEMO), "--keep-machines")
    assert proc.returncode == 1, proc.stderr
    own = own_results(run)
    assert len(own) == 12
    assert own["/tests/broken/fails"]["status"] == "fail"
    assert own["/tests/broken/errors"]["status"] == "error"
    assert sum(r["status"] == "pass" for r in own.values()) == 10
    recorded = machines(run)
    assert {r["machine"] for r in own.values()} <= {m["id"] for m in recorded}
    assert sorted(containers_of(run)) == sorted(m["handle"]["container"] for m in recorded)
    # The data file reached the run directory from inside the container.
    assert any(
        f.endswith("data/measurement.txt") for f in own["/tests/reporting/data-file"]["files"]
    )
    released = catex("release", "-d", str(run))
    assert released.returncode == 0, released.stderr
    assert {m["state"] for m in machines(run)} == {"released"}
    assert containers_of(run) == []


def events(run: Path) -> list[dict[str, Any]]:
    lines = (run / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] != "output_progress"]


def test_reboot_timeout_and_destructive_tests_replace_containers(tmp_path, image, run):
    # Every test but the reboot one fails on a container that an earlier test
    # broke or destroyed: they prove which containers were replaced.
    fresh = "test ! -e /var/tmp/destroyed; "
    tree = make_tree(
        tmp_path / "tree",
        {
            "reboot": {
                "test": (
                    "tmt-report-result /before-$TMT_REBOOT_COUNT PASS; "
                    "touch /var/tmp/kept-$TMT_REBOOT_COUNT; "
                    'if [ "$TMT_REBOOT_COUNT" -lt 2 ]; then touch /tmp/gone; tmt-reboot; fi; '
                    # /tmp is empty after a reboot; the container's own files stay.
                    'test -z "$(ls /tmp)" && test -f /var/tmp/kept-0'
                ),
                "duration": "2m",
            },
            "hangs-and-breaks": {
                "test": fresh + 'touch /var/tmp/destroyed; rm -rf "$TMT_TREE"; sleep 600',
                "duration": "3s",
            },
            "destructive": {"test": fresh + "touch /var/tmp/destroyed", "tag": ["destructive"]},
            **{f"plain-{n}": {"test": fresh} for n in range(3)},
        },
    )
    proc = catex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--provisioner", "podman",
        "--image", image, "--count", "1",
    )  # fmt: skip
    own = own_results(run)
    assert statuses(own) == {
        "reboot": "pass",
        "hangs-and-breaks": "error",
        "destructive": "pass",
        "plain-0": "pass",
        "plain-1": "pass",
        "plain-2": "pass",
    }, proc.stderr
    assert "ran past its duration" in own["/tests/hangs-and-breaks"]["note"]
    subs = [r["name"] for r in results(run) if r["test"] == "/tests/reboot" and r["name"]]
    assert subs == ["/before-0", "/before-1", "/before-2"]
    assert own["/tests/reboot"]["exit_code"] == 0  # (sub-results decide its status)
    # The timed-out test's container failed its health check: it and the
    # destructive test's container were discarded, and each was replaced
    # when tests were left for it.
    broken = {e["machine"]: e["note"] for e in events(run) if e["event"] == "machine_broken"}
    timed_out = own["/tests/hangs-and-breaks"]["machine"]
    assert "failed its health check" in broken[timed_out]
    assert "is destructive" in broken[own["/tests/destructive"]["machine"]]
    replaced = [e for e in events(run) if e["event"] == "machine_replaced"]
    assert replaced, proc.stderr
    assert len(machines(run)) == 1 + len(replaced)
    assert {m["state"] for m in machines(run)} == {"released"}
    assert containers_of(run) == []


def test_a_systemd_image_boots_and_reboots(tmp_path, image, run):
    booted = images.systemd_image()
    tree = make_tree(
        tmp_path / "tree",
        {
            "reboot": {
                "test": (
                    'test "$(cat /proc/1/comm)" = systemd || exit 10; '
                    "systemctl is-system-running | grep -qx -e running -e degraded || exit 11; "
                    "tmt-report-result /boot-$TMT_REBOOT_COUNT PASS; "
                    "touch /var/tmp/kept-$TMT_REBOOT_COUNT; "
                    'if [ "$TMT_REBOOT_COUNT" -lt 1 ]; then touch /tmp/gone; tmt-reboot; fi; '
                    # (systemd's services keep their private /tmp directories there)
                    "test ! -e /tmp/gone && test -f /var/tmp/kept-0 && echo done"
                ),
                "duration": "3m",
            }
        },
    )
    proc = catex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--provisioner", "podman",
        "--image", booted, "--systemd",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = [(r["name"], r["status"]) for r in results(run)]
    assert got == [("/boot-0", "pass"), ("/boot-1", "pass"), (None, "pass")]
    own = own_results(run)["/tests/reboot"]
    assert own["exit_code"] == 0
    assert (run / "artifacts" / own["files"][0]).read_text().endswith("done\n")
    recipe = json.loads((run / "run.json").read_text())["provisioner"]
    assert recipe["options"] == {"images": {"default": booted}, "systemd": True}
    assert containers_of(run) == []


def flavour_tree(root: Path) -> Path:
    """Two tests that tell the images apart: /etc/atex-ci-flavour is only in
    the second, and each platform's context says which flavour it has."""
    return make_tree(
        root,
        {
            "flavour": {
                "test": 'test "$(cat /etc/atex-ci-flavour 2>/dev/null || echo none)" = "$WANT"',
                "environment": {"WANT": "unset"},
                "adjust": [
                    {"when": "flavour == plain", "environment+": {"WANT": "none"}},
                    {"when": "flavour == second", "environment+": {"WANT": "second"}},
                ],
            },
            "only-second": {
                "test": "test -f /etc/atex-ci-flavour",
                "adjust": [{"when": "flavour != second", "enabled": False}],
            },
        },
    )


FLAVOUR_CONTEXTS = ("--context", "plain:flavour=plain", "--context", "two:flavour=second")


def assert_each_platform_had_its_context(run: Path, image: str, second: str) -> None:
    got = sorted((r["platform"], r["test"], r["status"]) for r in results(run) if r["name"] is None)
    assert got == [
        ("plain", "/tests/flavour", "pass"),
        ("two", "/tests/flavour", "pass"),
        ("two", "/tests/only-second", "pass"),
    ]
    assert {m["platform"]: m["handle"]["image"] for m in machines(run)} == {
        "plain": image,
        "two": second,
    }
    fmf = json.loads((run / "run.json").read_text())["fmf"]
    assert fmf["platform_context"] == {"plain": {"flavour": "plain"}, "two": {"flavour": "second"}}
    assert containers_of(run) == []


def test_two_images_are_two_platforms_each_with_its_own_context(tmp_path, image, run):
    second = images.flavour_image("second")
    tree = flavour_tree(tmp_path / "tree")
    reserved = catex(
        "reserve", "-d", str(run), "--provisioner", "podman",
        "--image", f"plain={image}", "--image", f"two={second}",
    )  # fmt: skip
    assert reserved.returncode == 0, reserved.stderr
    proc = catex("run", "-d", str(run), "--fmf-root", str(tree), *FLAVOUR_CONTEXTS)
    assert proc.returncode == 0, proc.stderr
    assert_each_platform_had_its_context(run, image, second)


def test_a_run_reserving_two_images_gives_each_platform_its_context(tmp_path, image, run):
    # No 'reserve' first: the platforms come from the images run itself reserves.
    second = images.flavour_image("second")
    tree = flavour_tree(tmp_path / "tree")
    own = ("--provisioner", "podman", "--image", f"plain={image}", "--image", f"two={second}")
    # A context for a platform none of the images is refused before any container starts.
    refused = catex(
        "run", "-d", str(run), "--fmf-root", str(tree), *own, "--context", "three:flavour=x"
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "platform(s) three" in refused.stderr and "plain, two" in refused.stderr
    assert containers_of(run) == [] and not (run / "machines.json").exists()
    proc = catex("run", "-d", str(run), "--fmf-root", str(tree), *own, *FLAVOUR_CONTEXTS)
    assert proc.returncode == 0, proc.stderr
    assert_each_platform_had_its_context(run, image, second)


def test_hostile_tests_in_containers_end_as_their_own_errors(tmp_path, image, run):
    outside = tmp_path / "outside"
    # The image's own Python runs hostile.py (the host's is not in the container).
    nodes = {
        name: {**node, "test": "python3 " + node["test"].split(" ", 1)[1]}
        for name, node in control_stream_abuse(outside).items()
    }
    py = 'python3 "$TMT_TREE/hostile.py"'
    nodes.update(
        {
            "daemons": {"test": f"{py} daemons 7777"},
            "many-files": {"test": f"{py} many-files"},
            "big-output": {"test": "head -c 5M /dev/zero; echo after"},
            "timeout": {"test": "setsid sleep 7779 & sleep 7778", "duration": "2s"},
            "ok": {"test": "echo fine; tmt-report-result /check PASS"},
        }
    )
    tree = make_tree(tmp_path / "tree", nodes)
    (tree / "hostile.py").write_bytes(HOSTILE.read_bytes())
    code, err, peak = run_measured(
        tmp_path,
        "run", "-d", str(run), "--fmf-root", str(tree), "--provisioner", "podman",
        "--image", image, "--count", "2", "--max-output", "1M",
    )  # fmt: skip
    assert code == 1, err
    assert "Traceback" not in err
    assert peak < MAX_CONTROLLER_RSS_KB
    own = own_results(run)
    assert own["/tests/ok"]["status"] == "pass"
    assert_error_notes(
        own,
        [
            "testout-file-parent",
            "long-component",
            "long-file-name",
            "garbage",
            "deep-result",
            "second-exitcode",
            "many-files",
            "big-output",
            "timeout",
        ],
    )
    for name in ("surrogate", "escaping-names", "daemons"):
        assert own[f"/tests/{name}"]["status"] == "pass", own[f"/tests/{name}"]
    assert not outside.exists()
    assert containers_of(run) == []


# -- nothing outlives the run ---------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_no_container_outlives_sigterm_or_kill9_and_release(tmp_path, image, run, sig):
    tree = make_tree(tmp_path / "tree", {f"stuck-{n}": {"test": "sleep 600"} for n in (1, 2)})
    podman = ["--provisioner", "podman", "--image", image, "--count", "2"]

    def tests_running(proc: subprocess.Popen[str]) -> None:
        wait_while_running(
            proc,
            lambda: (
                (run / "machines.json").is_file()
                and len([m for m in machines(run) if m["state"] == "ready"]) == 2
                and (run / "events.jsonl").is_file()
                and (run / "events.jsonl").read_text().count('"test_started"') >= 2
            ),
            "never happened: the tests running",
            timeout=120,
        )
        # And one the controller made but never recorded (killed in between).
        orphan = container_name(run_id(run), "default-9")
        subprocess.run(
            [*PODMAN, "create", "--name", orphan, "--label", f"{RUN_LABEL}={run_id(run)}", image],
            check=True,
            capture_output=True,
        )

    try:
        code, err = signal_when(
            ["run", "-d", str(run), "--fmf-root", str(tree), *podman], tests_running, sig
        )
    except BaseException:
        remove_all(run)
        raise
    if sig == signal.SIGTERM:
        # The run released its containers, and with them the one nobody recorded.
        assert code != 0, err
        assert containers_of(run) == []
    else:
        assert len(containers_of(run)) == 3  # the controller is gone, the containers are not
    released = catex("release", "-d", str(run))
    assert released.returncode == 0, released.stderr
    assert containers_of(run) == []


# -- the Action -----------------------------------------------------------------------------


def test_the_action_runs_containers_of_its_image_input(tmp_path, image):
    from .action_runner import ActionRunner

    if not (Path(sys.prefix) / "bin" / "atex-ci").exists():
        pytest.skip("the tests do not run from a virtual environment with atex-ci installed")
    second = images.flavour_image("second")
    root = make_tree(
        tmp_path / "tree",
        {"flavour": {"test": "cat /etc/atex-ci-flavour 2>/dev/null || echo none"}},
    )
    runner = ActionRunner(
        REPO,
        tmp_path / "workspace",
        tmp_path / "runner-temp",
        env={"ATEX_CI_VENV": sys.prefix, "CONTAINERS_CONF": os.environ["CONTAINERS_CONF"]},
    )
    action = runner.run(
        {
            "fmf-root": str(root),
            "provisioner": "podman",
            "image": f"plain={image}\ntwo={second}\n",
        }
    )
    assert runner.orphans == []
    assert action.status == "success", action.log
    run_dir = Path(action.outputs["run-dir"])
    got = {(r["platform"], r["status"]) for r in results(run_dir) if r["name"] is None}
    assert got == {("plain", "pass"), ("two", "pass")}
    assert {m["provisioner"] for m in machines(run_dir)} == {"podman"}
    assert containers_of(run_dir) == []


def test_docker_kind_through_a_docker_compatible_cli(tmp_path, image, run):
    """docker's code path (its inspect fields, ``docker exec -i`` when runc's state is not
    found, its rm/ps/run flags), on podman's docker-compatible CLI: no docker engine here."""
    shim = tmp_path / "bin" / "docker"
    shim.parent.mkdir()
    shim.write_text('#!/bin/sh\nexec podman "$@"\n')
    shim.chmod(0o755)
    tree = make_tree(
        tmp_path / "tree",
        {
            "data": {"test": 'echo 7 > "$TMT_TEST_DATA/n"; tmt-report-result /sub PASS'},
            "fails": {"test": "exit 3"},
        },
    )
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}"}
    docker = ["--provisioner", "docker", "--image", image, "--count", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "atex_ci", "run", "-d", str(run), "--fmf-root", str(tree), *docker],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 1, proc.stderr
    assert "running commands through 'docker exec'" in proc.stderr
    own = own_results(run)
    assert own["/tests/fails"]["exit_code"] == 3
    assert own["/tests/data"]["status"] == "pass"
    data = [f for f in own["/tests/data"]["files"] if f.endswith("data/n")]
    assert data and (run / "artifacts" / data[0]).read_text() == "7\n"
    assert {m["provisioner"] for m in machines(run)} == {"docker"}
    assert containers_of(run) == []


def test_ansible_prepare_reaches_the_container_never_this_host(tmp_path, image, run):
    import importlib.util

    mark = f"/var/tmp/ansible-was-here-{os.getpid()}"
    tree = make_tree(
        tmp_path / "tree",
        {"marked": {"test": f"test -f {mark}"}},
        plan={"prepare": [{"how": "ansible", "playbook": "site.yml"}]},
    )
    (tree / "site.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        f"    - ansible.builtin.copy:\n        dest: {mark}\n        content: x\n"
    )
    proc = catex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--provisioner", "podman",
        "--image", image,
    )  # fmt: skip
    try:
        assert not Path(mark).exists(), "the playbook ran on the controller's host"
    finally:
        Path(mark).unlink(missing_ok=True)
    marked = own_results(run)["/tests/marked"]
    collections = importlib.util.find_spec("ansible_collections") is not None
    if collections and importlib.util.find_spec("ansible_collections.containers.podman"):
        assert (proc.returncode, marked["status"]) == (0, "pass"), proc.stderr
    else:  # ansible-core alone has no plugin for podman: the phase fails, saying so
        assert marked["status"] == "error", marked
        assert "containers.podman.podman" in proc.stderr + json.dumps(marked), proc.stderr
    assert containers_of(run) == []
