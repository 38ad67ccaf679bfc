"""Testing Farm provisioner: the request it builds, the pipeline.log parser, and
reservations end to end against the stand-in (tests/tf_fake.py) with real sshd
test hosts, including every injected fault."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

from atex_ci.errors import ConfigError, InfraError
from atex_ci.model import MachineState
from atex_ci.provision import get_provisioner, record_reservations
from atex_ci.provision.testingfarm import (
    MAX_API_ANSWER,
    LogFollower,
    TestingFarmAPI,
    TestingFarmProvisioner,
    api_url_from_env,
    build_request,
    find_guest,
    parse_artifact,
    parse_json_option,
)
from atex_ci.rundir import RunDir
from tests.tf_fake import FakeTestingFarm

from .treeutil import make_tree, own_results, shared_dir, signal_when

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOdd6E3i9h2z8B3M0x7oP8UuHcD2Yc0p3Q6T2g7sSgLb"


# -- pure parts ---------------------------------------------------------------------


def test_request_is_built_like_testing_farm_reserve():
    spec = build_request(
        compose="Fedora-41",
        arch="aarch64",
        public_key=PUBLIC_KEY + " alice@laptop.example.com",
        duration=90,
        pool="beaker",
        hardware={"memory": ">= 8 GB"},
        kickstart={"post-install": "%post\n%end"},
        variables={"A": "1"},
        secrets={"S": "hidden"},
        context={"distro": "fedora-41"},
        pipeline_timeout=600,
        ingress_cidr="192.0.2.7/32",
    )
    assert spec["test"]["fmf"] == {
        "url": "https://gitlab.com/testing-farm/tests",
        "ref": "main",
        "name": "/testing-farm/reserve",
    }
    [env] = spec["environments"]
    assert env["arch"] == "aarch64"
    assert env["os"] == {"compose": "Fedora-41"}
    assert env["pool"] == "beaker"
    assert env["hardware"] == {"memory": ">= 8 GB"}
    assert env["kickstart"] == {"post-install": "%post\n%end"}
    assert env["tmt"] == {"context": {"distro": "fedora-41"}}
    assert env["variables"] == {"A": "1", "TF_RESERVATION_DURATION": "90"}
    keys = base64.b64decode(env["secrets"]["TF_RESERVATION_AUTHORIZED_KEYS_BASE64"]).decode()
    assert keys == PUBLIC_KEY + "\n"  # the comment (user and host name) is gone
    assert env["secrets"]["S"] == "hidden"
    provisioning = env["settings"]["provisioning"]
    assert provisioning["tags"] == {"ArtemisUseSpot": "false"}
    assert provisioning["security_group_rules_ingress"] == [
        {"type": "ingress", "protocol": "-1", "cidr": "192.0.2.7/32", "port_min": 0,
         "port_max": 65535}
    ]  # fmt: skip
    assert spec["settings"]["pipeline"]["timeout"] == 600


def test_pipeline_timeout_outlives_the_reservation():
    spec = build_request(compose="X", arch="x86_64", public_key=PUBLIC_KEY, duration=720)
    assert spec["settings"]["pipeline"]["timeout"] > 720
    assert "security_group_rules_ingress" not in spec["environments"][0]["settings"]["provisioning"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "[12:00:01] [+] [guest-setup] Guest is ready: ArtemisGuest(ab-1, root@10.0.0.7, "
            "arch=x86_64, compose=Fedora-41)",
            ("root", "10.0.0.7"),
        ),
        (
            "Guest is ready: ArtemisGuest(x, cloud-user@guest-7.example.com, arch=s390x)",
            ("cloud-user", "guest-7.example.com"),
        ),
        (
            "Guest is ready: ArtemisGuest(x, root@[2001:db8::5], arch=x86_64)",
            ("root", "2001:db8::5"),
        ),
        ("Guest is being provisioned root@10.0.0.7", None),
        ("Guest is ready: no address yet", None),
        ("Guest is ready: ArtemisGuest(x, root@-oProxyCommand=evil, arch=x)", None),
    ],
)
def test_guest_line(line, expected):
    assert find_guest(line) == expected


def test_log_follower_finds_lines_however_the_log_is_split():
    log = b"first line\r\nGuest is ready: ArtemisGuest(a, root@10.1.2.3, arch=x)\nrest"
    for cut in range(len(log) + 1):
        follower = LogFollower()
        lines = follower.feed(log[:cut]) + follower.feed(log[cut:])
        assert lines == ["first line", "Guest is ready: ArtemisGuest(a, root@10.1.2.3, arch=x)"]
        assert follower.offset == len(log)
        assert follower.tail_text().endswith("rest")


def test_log_follower_bounds_an_endless_line():
    follower = LogFollower()
    for _ in range(100):
        assert follower.feed(b"x" * 100_000) == []
    [line] = follower.feed(b"\n")
    assert len(line) <= 64 * 1024


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "https://api.testing-farm.io/v0.1"),
        ("https://api.dev.testing-farm.io/v0.1/", "https://api.dev.testing-farm.io/v0.1"),
        ("https://api.dev.testing-farm.io", "https://api.dev.testing-farm.io/v0.1"),
    ],
)
def test_api_url_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("TESTING_FARM_API_URL", raising=False)
    else:
        monkeypatch.setenv("TESTING_FARM_API_URL", value)
    assert api_url_from_env() == expected


def test_missing_token_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("TESTING_FARM_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="TESTING_FARM_API_TOKEN is not set"):
        TestingFarmAPI("http://127.0.0.1:9/v0.1")


# -- against the stand-in -------------------------------------------------------------


def api_for(fake: FakeTestingFarm, **kw: Any) -> TestingFarmAPI:
    kw.setdefault("backoff", 0.001)
    kw.setdefault("timeout", (5.0, 5.0))
    return TestingFarmAPI(fake.url, token=fake.token, **kw)


@pytest.fixture(autouse=True)
def fast_waits(monkeypatch):
    """Polling as fast as the stand-in allows (production never sets this)."""
    monkeypatch.setenv("ATEX_CI_TF_TIME_SCALE", "0.001")


def provisioner_for(rundir: RunDir, fake: FakeTestingFarm, **kw: Any) -> TestingFarmProvisioner:
    kw.setdefault("compose", "X")
    return TestingFarmProvisioner(rundir, api=kw.pop("api", None) or api_for(fake), **kw)


def test_polling_is_never_faster_than_testing_farm_allows(tmp_path, monkeypatch):
    rundir = RunDir.create(tmp_path / "run")
    monkeypatch.delenv("ATEX_CI_TF_TIME_SCALE")
    assert TestingFarmProvisioner(rundir, poll_interval=1).poll_interval == 30
    monkeypatch.setenv("ATEX_CI_TF_TIME_SCALE", "0.5")
    assert TestingFarmProvisioner(rundir, poll_interval=1).poll_interval == 15
    monkeypatch.setenv("ATEX_CI_TF_TIME_SCALE", "2")
    with pytest.raises(ConfigError, match="ATEX_CI_TF_TIME_SCALE"):
        TestingFarmProvisioner(rundir)


def test_hostile_answers_are_one_line_errors():
    """An answer nested too deep or too large, from a broken server or one in
    the middle, is named in one line; a deep error message changes nothing."""
    with FakeTestingFarm([]) as fake:
        api = api_for(fake)
        deep = b'{"token": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        huge = b'{"token": "' + b"x" * (MAX_API_ANSWER + 10) + b'"}'
        for body, reason in ((deep, "nested deeper than 80 levels"), (huge, "larger than")):
            fake.answer_next(body, path="/v0.1/whoami")
            with pytest.raises(InfraError) as raised:
                api.whoami()
            message = str(raised.value)
            assert "GET /whoami did not answer with a JSON object" in message
            assert reason in message and "\n" not in message
        fake.answer_next(deep, status=403, path="/v0.1/whoami")  # its message is unreadable
        with pytest.raises(ConfigError, match=r"refused whoami \(HTTP 403\): the token is not"):
            api.whoami()
        assert api.whoami()["token"]["ranch"] == "redhat"  # the next answer is read as usual


def test_a_deep_json_option_is_a_config_error():
    with pytest.raises(ConfigError, match="--hardware must be a JSON object: line 1: nested"):
        parse_json_option("hardware", "[" * 1000 + "]" * 1000)


def reserve_with(provisioner: TestingFarmProvisioner, count: int) -> list:
    return asyncio.run(record_reservations(provisioner.rundir, provisioner, count))


def test_reserve_three_and_release_through_the_api(tmp_path, ssh_hosts):
    hosts = ssh_hosts(3)
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm(hosts) as fake:
        provisioner = provisioner_for(rundir, fake)
        machines = reserve_with(provisioner, 3)
        assert len(machines) == 3
        assert {m.host for m in machines} == {h.address for h in hosts}
        by_address = {h.address: h for h in hosts}
        for machine in machines:
            assert machine.host_key == by_address[machine.host].host_key
            assert machine.key == "keys/testing-farm-1"
        recorded = rundir.read_machines()
        assert [m.id for m in recorded] == [m.id for m in machines]
        assert {m.provisioner for m in recorded} == {"testing-farm"}
        key = rundir.path / "keys" / "testing-farm-1"
        assert key.stat().st_mode & 0o777 == 0o600
        # Our key (and only ours) is what the guests accept.
        proc = subprocess.run(
            ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", f"root@{machines[0].host}", "hostname"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        # Each submission carried the run's public key, without its comment.
        posted = [c.body for c in fake.calls if c.method == "POST"]
        public = (rundir.path / "keys" / "testing-farm-1.pub").read_text()
        for body in posted:
            secret = body["environments"][0]["secrets"]["TF_RESERVATION_AUTHORIZED_KEYS_BASE64"]
            assert base64.b64decode(secret).decode() == public
            assert len(public.split()) == 2
        # The artifacts server never got the token.
        assert all(c.authorization is None for c in fake.calls if c.path.startswith("/artif"))
        assert all(c.authorization for c in fake.calls if c.path.startswith("/v0.1"))
        ids = [m.handle["request"] for m in machines]
        for machine in machines:
            asyncio.run(provisioner.release(machine))
            asyncio.run(provisioner.release(machine))  # idempotent
            assert machine.state == MachineState.RELEASED
        assert sorted(fake.deleted()) == sorted(ids)
        assert fake.count("DELETE") == 3
        assert set(fake.states().values()) == {"canceled"}


def test_an_unknown_compose_is_a_warning(tmp_path, ssh_host, caplog):
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([ssh_host]) as fake:
        provisioner = provisioner_for(rundir, fake, compose="Fedora-Nope")
        with caplog.at_level(logging.WARNING, logger="atex_ci"):
            [machine] = reserve_with(provisioner, 1)
        assert "compose Fedora-Nope is not in Testing Farm's list for the redhat ranch" in (
            caplog.text
        )
        assert any(c.path == "/v0.1/composes/redhat" for c in fake.calls)
        asyncio.run(provisioner.release(machine))


def test_a_log_server_without_range_support_still_works(tmp_path, ssh_host):
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([ssh_host]) as fake:
        fake.ignore_range = True
        provisioner = provisioner_for(rundir, fake)
        [machine] = reserve_with(provisioner, 1)
        assert machine.host == ssh_host.address
        asyncio.run(provisioner.release(machine))  # the host is free again
        logs = [c for c in fake.calls if c.path.endswith("/pipeline.log") and c.status == 200]
        assert len(logs) >= 2  # read again and again, each time from the start
        # Only what is new counts: the log's tail shows each line once.
        fake.behaviours = ["no-guest"]
        provisioner = provisioner_for(rundir, fake, retries=0, ready_timeout=0.5)
        with pytest.raises(InfraError) as info:
            reserve_with(provisioner, 1)
        tail = str(info.value).split("pipeline.log ends: ", 1)[1].split(" | ")
        assert len(tail) > 3
        assert len(set(tail)) == len(tail)


def test_bursts_of_429_and_500_are_retried(tmp_path, ssh_host):
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([ssh_host]) as fake:
        fake.fail_next(429, 3, method="POST")
        fake.fail_next(500, 2, method="GET", path="/v0.1/requests/")
        fake.fail_next(503, 2, method="GET", path="/v0.1/whoami")
        [machine] = reserve_with(provisioner_for(rundir, fake), 1)
        statuses = [c.status for c in fake.calls if c.method == "POST"]
        assert statuses == [429, 429, 429, 200]
        assert [c.status for c in fake.calls if c.path == "/v0.1/whoami"] == [503, 503, 200]
        assert sum(c.status == 500 for c in fake.calls) == 2
        assert machine.host == ssh_host.address


def test_a_slow_answer_is_retried_after_the_timeout(tmp_path, ssh_host):
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([ssh_host]) as fake:
        fake.delay_next(3.0, 1, method="GET", path="/v0.1/requests/")
        api = api_for(fake, timeout=(5.0, 0.5))
        [machine] = reserve_with(provisioner_for(rundir, fake, api=api), 1)
        assert machine.host == ssh_host.address
        gets = [c for c in fake.calls if c.method == "GET" and c.path.startswith("/v0.1/req")]
        # The slow GET was answered (late, to nobody) and asked again.
        assert len(gets) >= 2


def test_a_request_that_errors_is_replaced(tmp_path, ssh_host):
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([ssh_host]) as fake:
        fake.behaviours = ["error"]
        [machine] = reserve_with(provisioner_for(rundir, fake, retries=1), 1)
        states = fake.states()
        assert sorted(states.values()) == ["canceled", "error"] or sorted(states.values()) == [
            "error",
            "running",
        ]
        errored = next(r for r, s in states.items() if s == "error")
        assert machine.handle["request"] != errored
        assert fake.count("POST") == 2


def test_a_request_that_errors_without_budget_fails_with_the_log_tail(tmp_path, ssh_host):
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([ssh_host]) as fake:
        fake.behaviours = ["error"]
        with pytest.raises(InfraError) as info:
            reserve_with(provisioner_for(rundir, fake, retries=0), 1)
        message = str(info.value)
        assert "reserved 0 of 1" in message
        assert "ended (error)" in message
        assert "Result of testing: ERROR" in message
        assert "\n" not in message
        assert rundir.read_machines() == []
        assert list((rundir.path / "keys").iterdir()) == []  # no machine, no key left


def test_secrets_in_the_log_tail_are_hidden(tmp_path, ssh_host):
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([ssh_host]) as fake:
        fake.behaviours = ["error"]
        provisioner = provisioner_for(rundir, fake, retries=0, secrets={"PW": "hunter2-secret"})
        with pytest.raises(InfraError) as info:
            reserve_with(provisioner, 1)
        assert "environment: " in str(info.value)
        assert "hunter2-secret" not in str(info.value)
        assert "***" in str(info.value)


def test_a_request_that_never_names_a_guest_is_cancelled(tmp_path, ssh_host):
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([ssh_host]) as fake:
        fake.behaviours = ["no-guest"]
        provisioner = provisioner_for(rundir, fake, retries=0, ready_timeout=0.5)
        with pytest.raises(InfraError, match="named no guest") as info:
            reserve_with(provisioner, 1)
        assert "still waiting for a guest" in str(info.value)  # the log's tail
        [request_id] = fake.states()
        assert fake.deleted() == [request_id]
        assert fake.states()[request_id] == "canceled"


def test_an_expired_token_is_a_one_line_error_without_the_token(tmp_path, ssh_host):
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([ssh_host]) as fake:
        fake.expire_token()
        with pytest.raises(ConfigError) as info:
            reserve_with(provisioner_for(rundir, fake), 1)
        message = str(info.value)
        assert "401" in message and "TESTING_FARM_API_TOKEN" in message
        assert fake.token not in message
        assert fake.count("POST") == 0


@pytest.mark.parametrize(
    ("status", "kind", "words"),
    [
        (401, ConfigError, "rejected the API token"),
        (403, ConfigError, "403"),
        (404, InfraError, "does not know request"),
        (409, InfraError, "409"),
        (400, InfraError, "HTTP 400"),
    ],
)
def test_api_errors_are_one_line(ssh_host, status, kind, words):
    with FakeTestingFarm([ssh_host]) as fake:
        fake.fail_next(status, 1, method="GET")
        api = api_for(fake)
        with pytest.raises(kind, match=words) as info:
            api.get("00000000-0000-0000-0000-000000000000")
        assert "\n" not in str(info.value) and fake.token not in str(info.value)


def test_release_treats_gone_requests_as_released_and_keeps_held_ones(tmp_path, ssh_host):
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([ssh_host]) as fake:
        provisioner = provisioner_for(rundir, fake)
        [machine] = reserve_with(provisioner, 1)
        fake.fail_next(500, 20, method="DELETE")  # longer than every retry
        with pytest.raises(InfraError, match="HTTP 500"):
            asyncio.run(provisioner.release(machine))
        assert machine.state != MachineState.RELEASED
        fake.clear_faults()
        asyncio.run(provisioner.release(machine))
        assert machine.state == MachineState.RELEASED
        # Already cancelled: DELETE answers 409, which means gone.
        machine.state = MachineState.READY
        asyncio.run(provisioner.release(machine))
        assert machine.state == MachineState.RELEASED
        assert [c.status for c in fake.calls if c.method == "DELETE"][-1] == 409


def test_public_ranch_gets_an_ingress_rule_for_our_address(tmp_path, ssh_host, caplog):
    with FakeTestingFarm([ssh_host], ranch="public") as fake:
        rundir = RunDir.create(tmp_path / "run")
        provisioner = provisioner_for(rundir, fake, address_lookup_url=fake.base + "/ip")
        [machine] = reserve_with(provisioner, 1)
        body = next(c.body for c in fake.calls if c.method == "POST")
        rules = body["environments"][0]["settings"]["provisioning"]["security_group_rules_ingress"]
        assert [r["cidr"] for r in rules] == ["127.0.0.1/32"]
        asyncio.run(provisioner.release(machine))

        # The lookup fails: say so and go on without a rule.
        fake.address_status = 500
        rundir = RunDir.create(tmp_path / "run2")
        provisioner = provisioner_for(rundir, fake, address_lookup_url=fake.base + "/ip")
        with caplog.at_level(logging.WARNING, logger="atex_ci"):
            [machine] = reserve_with(provisioner, 1)
        assert "cannot look up this machine's public address" in caplog.text
        body = [c.body for c in fake.calls if c.method == "POST"][-1]
        assert (
            "security_group_rules_ingress"
            not in body["environments"][0]["settings"]["provisioning"]
        )
        asyncio.run(provisioner.release(machine))


def test_a_queued_request_waits_for_a_free_guest_and_the_budget_bounds_failures(
    tmp_path, ssh_hosts
):
    """Two machines, one host: the second request stays queued until the first is
    released; meanwhile the first machine is already recorded and usable."""
    [host] = ssh_hosts(1)
    rundir = RunDir.create(tmp_path / "run")
    with FakeTestingFarm([host]) as fake:
        provisioner = provisioner_for(rundir, fake)

        async def scenario() -> list[str]:
            seen = []
            async for machine in provisioner.reserve(2):
                seen.append(machine.id)
                if len(seen) == 1:
                    assert sorted(fake.states().values()) == ["queued", "running"]
                    await provisioner.release(machine)  # frees the host for the other
            return seen

        seen = asyncio.run(scenario())
        assert len(seen) == 2
        assert fake.count("POST") == 2


# -- the command line ----------------------------------------------------------------


def atex_env(fake: FakeTestingFarm, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTING_FARM_", "GITHUB_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **fake.env(), **extra}


def cli(fake: FakeTestingFarm, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atex_ci", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=atex_env(fake, **extra),
    )


def terminate_when(
    fake: FakeTestingFarm, args: list[str], ready: Callable[[subprocess.Popen[str]], None]
) -> tuple[int, str]:
    """Start ``atex-ci ARGS``, wait for ``ready(proc)``, send SIGTERM; the exit
    code and stderr (the process is killed if it does not end)."""
    return signal_when(args, ready, env=atex_env(fake))


def everything_written(run: Path, *outputs: str) -> list[tuple[str, bytes]]:
    files = [(str(p), p.read_bytes()) for p in run.rglob("*") if p.is_file()]
    return files + [(f"output {i}", out.encode()) for i, out in enumerate(outputs)]


def test_cli_reserve_three_run_release(tmp_path, ssh_hosts):
    """The issue's "done when": three machines from the stand-in, a run on
    them, three DELETEs on release, and the token nowhere."""
    hosts = ssh_hosts(3)
    run = tmp_path / "run"
    tree = make_tree(
        tmp_path / "tree",
        {f"t{i}": {"test": "hostname; sleep 0.2"} for i in range(6)},
    )
    with FakeTestingFarm(hosts) as fake:
        reserve = cli(
            fake, "reserve", "-d", str(run), "--provisioner", "testing-farm",
            "--compose", "X", "--arch", "x86_64", "--count", "3",
            "--secret", "API_PASSWORD=hunter2-secret", "--variable", "MODE=ci",
        )  # fmt: skip
        assert reserve.returncode == 0, reserve.stderr
        machines = json.loads((run / "machines.json").read_text())["machines"]
        assert len(machines) == 3
        assert {m["host"] for m in machines} == {h.address for h in hosts}
        assert {m["state"] for m in machines} == {"ready"}
        assert reserve.stderr.count("atex-ci: reserved ") == 3
        ran = cli(fake, "run", "-d", str(run), "--fmf-root", str(tree))
        assert ran.returncode == 0, ran.stderr
        own = own_results(run)
        assert {r["status"] for r in own.values()} == {"pass"}
        assert {r["machine"] for r in own.values()} <= {m["id"] for m in machines}
        released = cli(fake, "release", "-d", str(run))
        assert released.returncode == 0, released.stderr
        ids = sorted(m["handle"]["request"] for m in machines)
        assert sorted(fake.deleted()) == ids
        assert fake.count("DELETE") == 3
        assert not (run / "keys").exists()
        states = {m["state"] for m in json.loads((run / "machines.json").read_text())["machines"]}
        assert states == {"released"}
        run_json = json.loads((run / "run.json").read_text())
        assert run_json["provisioner"]["kind"] == "testing-farm"
        assert run_json["provisioner"]["options"]["compose"] == "X"
    outputs = (reserve.stdout, reserve.stderr, ran.stdout, ran.stderr, released.stdout)
    for name, data in everything_written(run, *outputs, released.stderr):
        assert fake.token.encode() not in data, name
        assert b"hunter2-secret" not in data, name


def test_cli_run_reserves_its_own_and_starts_before_every_guest_is_ready(tmp_path, ssh_host):
    """run --provisioner: the tests start on the first guest while the second
    request is still queued (one host: it stays queued); once nothing is left,
    that request is cancelled and the guest released."""
    run = tmp_path / "run"
    with shared_dir() as shared:
        gate = f"until [ -e {shared}/go ]; do sleep 0.01; done"
        tree = make_tree(tmp_path / "tree", {f"t{i}": {"test": gate} for i in range(3)})
        with FakeTestingFarm([ssh_host]) as fake:

            def open_gate() -> None:
                # Once both requests exist, one of them necessarily still queued.
                fake.wait_for(lambda: len(fake.requests) == 2, timeout=120)
                (shared / "go").touch()

            opener = threading.Thread(target=open_gate)
            opener.start()
            try:
                ran = cli(
                    fake, "run", "-d", str(run), "--fmf-root", str(tree),
                    "--provisioner", "testing-farm", "--compose", "X", "--count", "2",
                )  # fmt: skip
            finally:
                (shared / "go").touch()
                opener.join()
            assert ran.returncode == 0, ran.stderr
            assert sorted(fake.deleted()) == sorted(fake.requests)
            assert sorted(fake.states().values()) == ["canceled", "canceled"]
    own = own_results(run)
    assert {r["status"] for r in own.values()} == {"pass"}
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert [m["state"] for m in machines] == ["released"]
    assert {r["machine"] for r in own.values()} == {machines[0]["id"]}
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["provisioner"]["options"]["compose"] == "X"
    assert not (run / "keys").exists() or list((run / "keys").iterdir()) == []


def test_cli_run_that_reserves_gives_everything_back_on_sigterm(tmp_path, ssh_host):
    """SIGTERM while a test runs on the first guest and the second request is
    queued: both requests are cancelled, the guest released, exit 143."""
    run = tmp_path / "run"
    with shared_dir() as shared:
        hang = f"touch {shared}/started; sleep 300"
        tree = make_tree(tmp_path / "tree", {"hang": {"test": hang}})
        with FakeTestingFarm([ssh_host]) as fake:
            args = ["run", "-d", str(run), "--fmf-root", str(tree),
                    "--provisioner", "testing-farm", "--compose", "X", "--count", "2"]  # fmt: skip
            code, err = terminate_when(
                fake,
                args,
                lambda proc: fake.wait_for(
                    lambda: len(fake.requests) == 2 and (shared / "started").exists(),
                    timeout=120,
                ),
            )
            assert code == 143, err
            assert sorted(fake.deleted()) == sorted(fake.requests)
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert [m["state"] for m in machines] == ["released"]
    own = own_results(run)["/tests/hang"]
    assert (own["status"], own["reason"]) == ("error", "interrupted")


def test_cli_sigterm_while_queued_cancels_every_request(tmp_path, ssh_host):
    run = tmp_path / "run"
    with FakeTestingFarm([ssh_host]) as fake:
        fake.hold()
        args = ["reserve", "-d", str(run), "--provisioner", "testing-farm", "--compose", "X",
                "--count", "3"]  # fmt: skip
        code, err = terminate_when(
            fake,
            args,
            lambda proc: fake.wait_for(
                lambda: (
                    len(fake.requests) == 3
                    and all(r.state == "queued" for r in fake.requests.values())
                )
            ),
        )
        assert code == 143, err  # SIGTERM: 128 + 15, as shells expect
        assert "given back" in err
        assert sorted(fake.deleted()) == sorted(fake.requests)
        assert set(fake.states().values()) == {"canceled"}
        machines = (
            json.loads((run / "machines.json").read_text())["machines"]
            if (run / "machines.json").exists()
            else []
        )
        assert [m for m in machines if m["state"] != "released"] == []
        assert not (run / "keys").exists() or list((run / "keys").iterdir()) == []


def test_cli_sigterm_after_one_is_ready_gives_that_one_back_too(tmp_path, ssh_host):
    run = tmp_path / "run"
    with FakeTestingFarm([ssh_host]) as fake:  # one host: the second stays queued

        def one_reserved(proc: subprocess.Popen[str]) -> None:
            assert proc.stderr is not None
            while "atex-ci: reserved " not in (line := proc.stderr.readline()):
                assert line, proc.communicate()[1]

        args = ["reserve", "-d", str(run), "--provisioner", "testing-farm", "--compose", "X",
                "--count", "2"]  # fmt: skip
        code, err = terminate_when(fake, args, one_reserved)
        assert code == 143, err
        assert sorted(fake.deleted()) == sorted(fake.requests)
        machines = json.loads((run / "machines.json").read_text())["machines"]
        assert len(machines) == 1 and machines[0]["state"] == "released"


def test_cli_masks_the_token_on_github_actions(tmp_path, ssh_host):
    run = tmp_path / "run"
    with FakeTestingFarm([ssh_host]) as fake:
        proc = cli(
            fake, "reserve", "-d", str(run), "--provisioner", "testing-farm", "--compose", "X",
            GITHUB_ACTIONS="true",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == f"::add-mask::{fake.token}"
        assert fake.token not in proc.stderr
        assert cli(fake, "release", "-d", str(run)).returncode == 0


def test_cli_testing_farm_errors_are_one_line(tmp_path, ssh_host):
    with FakeTestingFarm([ssh_host]) as fake:
        no_compose = cli(
            fake, "reserve", "-d", str(tmp_path / "a"), "--provisioner", "testing-farm"
        )
        assert no_compose.returncode == 2
        assert no_compose.stderr.strip().endswith("needs --compose, e.g. Fedora-Rawhide")
        assert not (tmp_path / "a").exists()  # a bad command line creates nothing
        stray = cli(fake, "reserve", "-d", str(tmp_path / "b"), "--compose", "X")
        assert stray.returncode == 2
        assert "--compose needs --provisioner testing-farm" in stray.stderr
        fake.expire_token()
        expired = cli(
            fake, "reserve", "-d", str(tmp_path / "c"), "--provisioner", "testing-farm",
            "--compose", "X",
        )  # fmt: skip
        assert expired.returncode == 2
        assert expired.stderr.count("\n") == 1 and "HTTP 401" in expired.stderr
        assert fake.token not in expired.stderr
        no_token = cli(
            fake, "reserve", "-d", str(tmp_path / "d"), "--provisioner", "testing-farm",
            "--compose", "X", TESTING_FARM_API_TOKEN="",
        )  # fmt: skip
        assert no_token.returncode == 2
        assert "TESTING_FARM_API_TOKEN is not set" in no_token.stderr


# -- Testing Farm's own fields, and the recipe in run.json ---------------------------


def test_request_carries_artifacts_tags_and_guest_setup_where_the_api_takes_them():
    spec = build_request(
        compose="Fedora-41",
        arch="x86_64",
        public_key=PUBLIC_KEY,
        duration=60,
        artifacts=[
            parse_artifact("fedora-koji-build:123456"),
            parse_artifact("repository-file:https://example.com/extra.repo"),
        ],
        tags={"BusinessUnit": "qe", "ArtemisUseSpot": "true"},
        skip_guest_setup=True,
        post_install_script="#!/bin/sh\necho ready\n",
    )
    [env] = spec["environments"]
    assert env["artifacts"] == [
        {"type": "fedora-koji-build", "id": "123456"},
        {"type": "repository-file", "id": "https://example.com/extra.repo"},
    ]
    assert env["settings"]["pipeline"] == {"skip_guest_setup": True}
    provisioning = env["settings"]["provisioning"]
    assert provisioning["tags"] == {"ArtemisUseSpot": "true", "BusinessUnit": "qe"}
    assert provisioning["post_install_script"] == "#!/bin/sh\necho ready\n"
    plain = build_request(compose="X", arch="x86_64", public_key=PUBLIC_KEY, duration=60)
    [env] = plain["environments"]
    assert "artifacts" not in env and "pipeline" not in env["settings"]
    assert env["settings"]["provisioning"] == {"tags": {"ArtemisUseSpot": "false"}}


@pytest.mark.parametrize("text", ["koji", ":123", "Fedora-Koji-Build:1", "repository:", "a b:1"])
def test_a_malformed_artifact_is_a_config_error(text):
    with pytest.raises(ConfigError, match=r"invalid --artifact .*expected TYPE:ID"):
        parse_artifact(text)


def test_cli_parity_fields_reach_the_request_and_a_replacement_asks_for_the_same(
    tmp_path, ssh_hosts
):
    """reserve's --artifact, --tag, --skip-guest-setup and --post-install-script
    are in the POST body the stand-in got and in run.json's recipe; the
    provisioner rebuilt from that recipe (what replaces a lost machine) submits
    the same environment."""
    hosts = ssh_hosts(2)
    run = tmp_path / "run"
    with FakeTestingFarm(hosts) as fake:
        reserve = cli(
            fake, "reserve", "-d", str(run), "--provisioner", "testing-farm", "--compose", "X",
            "--artifact", "fedora-koji-build:123456", "--artifact",
            "repository:https://example.com/repo", "--tag", "BusinessUnit=qe",
            "--skip-guest-setup", "--post-install-script", "echo ready",
        )  # fmt: skip
        assert reserve.returncode == 0, reserve.stderr
        [first] = [c.body for c in fake.calls if c.method == "POST"]
        [env] = first["environments"]
        assert env["artifacts"] == [
            {"type": "fedora-koji-build", "id": "123456"},
            {"type": "repository", "id": "https://example.com/repo"},
        ]
        assert env["settings"]["pipeline"] == {"skip_guest_setup": True}
        assert env["settings"]["provisioning"]["tags"] == {
            "ArtemisUseSpot": "false",
            "BusinessUnit": "qe",
        }
        assert env["settings"]["provisioning"]["post_install_script"] == "echo ready"
        recipe = json.loads((run / "run.json").read_text())["provisioner"]
        assert recipe == {
            "kind": "testing-farm",
            "platform": "default",
            "replaceable": True,
            "options": {
                "compose": "X",
                "arch": "x86_64",
                "artifacts": env["artifacts"],
                "tags": {"BusinessUnit": "qe"},
                "skip_guest_setup": True,
                "post_install_script": "echo ready",
            },
        }
        rundir = RunDir.open(run)
        again = get_provisioner("testing-farm", rundir, "default")
        assert isinstance(again, TestingFarmProvisioner) and again.can_replace()
        again._api = api_for(fake)
        [replacement] = reserve_with(again, 1)
        second = [c.body for c in fake.calls if c.method == "POST"][-1]["environments"][0]
        for field in ("artifacts", "settings", "arch", "os"):
            assert second[field] == env[field], field
        asyncio.run(again.release(replacement))
        assert cli(fake, "release", "-d", str(run)).returncode == 0
        bad = cli(
            fake, "reserve", "-d", str(tmp_path / "bad"), "--provisioner", "testing-farm",
            "--compose", "X", "--artifact", "koji",
        )  # fmt: skip
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1
        assert "invalid --artifact 'koji'" in bad.stderr
        stray = cli(fake, "reserve", "-d", str(tmp_path / "s"), "--local", "1", "--tag", "a=b")
        assert stray.returncode == 2 and "--tag needs --provisioner testing-farm" in stray.stderr
        assert not (tmp_path / "bad").exists() and not (tmp_path / "s").exists()


def test_the_recipe_says_whether_a_reservation_can_be_repeated(tmp_path, monkeypatch):
    """Variables and secrets are never recorded: a recipe that had them is not
    replaceable, and the provisioner rebuilt from it says so itself; for a
    release (no platform) run.json is not even read."""
    monkeypatch.setenv("TF_EXTRA", "from-the-environment")
    rundir = RunDir.create(tmp_path / "run")
    # The values as click parses the declared options.
    parse = click.Command("t", params=TestingFarmProvisioner.options(), callback=lambda **kw: kw)
    args = ["--compose", "X", "--variable", "MODE=ci", "--secret", "TF_EXTRA"]
    values = parse.main(args, standalone_mode=False)
    recipe = TestingFarmProvisioner.recipe_from_options("testing-farm", "c9s", values, {})
    assert recipe.unrecorded == {
        "variables": {"MODE": "ci"},
        "secrets": {"TF_EXTRA": "from-the-environment"},
    }
    recorded = TestingFarmProvisioner.write_recipe(recipe)
    assert "from-the-environment" not in json.dumps(recorded)
    assert "MODE" not in json.dumps(recorded) and recorded["replaceable"] is False
    rundir.update_run(provisioner=recorded)
    rebuilt = get_provisioner("testing-farm", rundir, "c9s")
    assert isinstance(rebuilt, TestingFarmProvisioner)
    assert rebuilt.compose == "X" and not rebuilt.can_replace()
    other = get_provisioner("testing-farm", rundir, "f41")  # recorded for c9s only
    assert not other.can_replace()
    (rundir.path / "run.json").write_text("{damaged")
    assert get_provisioner("testing-farm", rundir).kind == "testing-farm"
