"""Existing machines: inventory files, --skip-unreachable, local slots through the
Provisioner interface, and a provisioner of your own from the command line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from atex_ci.errors import ConfigError
from atex_ci.model import MachineState
from atex_ci.provision import get_provisioner, provisioner_class, record_reservations
from atex_ci.provision.inventory import load_inventory
from atex_ci.provision.local import LocalProvisioner
from atex_ci.provision.static import HostSpec, StaticProvisioner
from atex_ci.rundir import RunDir

from .treeutil import REPO, make_tree, own_results


def atex(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atex_ci", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )


# -- inventory files ------------------------------------------------------------------


def test_inventory_yaml(tmp_path):
    (tmp_path / "keys").mkdir()
    inventory = tmp_path / "fleet.yaml"
    inventory.write_text(
        "- host: test1.example.com\n"
        "  platform: c9s\n"
        "- host: 192.0.2.7\n"
        "  port: 2222\n"
        "  user: ci\n"
        "  key: keys/fleet\n"
        "- root@[2001:db8::1]:22\n"
    )
    specs = load_inventory(inventory)
    assert specs == [
        HostSpec("test1.example.com", 22, "root", None, "c9s"),
        HostSpec("192.0.2.7", 2222, "ci", str(tmp_path / "keys" / "fleet"), None),
        HostSpec("2001:db8::1", 22, "root", None, None),
    ]


def test_inventory_json(tmp_path):
    inventory = tmp_path / "fleet.json"
    inventory.write_text(json.dumps({"hosts": [{"host": "a.example.com", "port": "2200"}]}))
    assert load_inventory(inventory) == [HostSpec("a.example.com", 2200)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must be a non-empty list of hosts"),
        ("host: a\n", "must be a non-empty list of hosts"),
        ("- host: a\n  colour: red\n", "host #1: unknown key(s) colour"),
        ("- host: a\n- host: b\n  port: 70000\n", "host #2: 'port' must be a number"),
        ("- host: a\n  port: true\n", "host #1: 'port' must be a number"),
        ("- host: 'a b'\n", "host #1: 'host' must be a host name"),
        ("- port: 22\n", "host #1: 'host' must be a host name"),
        ("- host: a\n  user: ''\n", "host #1: 'user' must be a non-empty string"),
        ("- [a, b]\n", "host #1: expected a mapping"),
        ("- 'root@@x'\n", "host #1: invalid host"),
        ("- host: [unclosed\n", "is not valid YAML or JSON"),
        ("- &a [*a]\n", "is not valid YAML or JSON"),
    ],
)
def test_inventory_errors_are_one_line_and_name_the_entry(tmp_path, text, message):
    inventory = tmp_path / "fleet.yaml"
    inventory.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_inventory(inventory)
    assert message in str(info.value)
    assert str(inventory) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_inventory(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the inventory"):
        load_inventory(tmp_path / "nope.yaml")


def fleet_file(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    path = tmp_path / "fleet.yaml"
    lines = []
    for entry in entries:
        first = True
        for key, value in entry.items():
            lines.append(f"{'- ' if first else '  '}{key}: {value}")
            first = False
    path.write_text("\n".join(lines) + "\n")
    return path


def dead_address(host) -> str:
    """An address of ours where nothing answers: a host we stopped."""
    host.kill()
    return host.address


def test_cli_reserve_from_an_inventory(tmp_path, ssh_hosts):
    first, second = ssh_hosts(2)
    inventory = fleet_file(
        tmp_path,
        [
            {"host": first.address, "platform": "c9s", "key": str(first.key_path)},
            {"host": second.address, "platform": "f41", "key": str(second.key_path)},
        ],
    )
    run = tmp_path / "run"
    proc = atex("reserve", "-d", str(run), "--hosts", str(inventory))
    assert proc.returncode == 0, proc.stderr
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert [(m["host"], m["platform"], m["host_key"]) for m in machines] == [
        (first.address, "c9s", first.host_key),
        (second.address, "f41", second.host_key),
    ]
    assert {m["key"] for m in machines} == {str(first.key_path)}
    tree = make_tree(tmp_path / "tree", {"where": {"test": "hostname"}})
    ran = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert ran.returncode == 0, ran.stderr
    assert atex("release", "-d", str(run)).returncode == 0


def test_cli_unreachable_host_is_an_error_naming_it(tmp_path, ssh_hosts):
    live, dead = ssh_hosts(2)
    address = dead_address(dead)
    inventory = fleet_file(
        tmp_path,
        [{"host": live.address, "key": str(live.key_path)}, {"host": address}],
    )
    run = tmp_path / "run"
    proc = atex("reserve", "-d", str(run), "--hosts", str(inventory))
    assert proc.returncode == 3
    *retries, line = proc.stderr.splitlines()
    assert re.match(rf"atex-ci: host root@{re.escape(address)}:22 is unreachable", line)
    # Each retry is said as it happens (a silent host would cost a while in silence).
    assert [r.split(" failed ")[0] for r in retries] == [
        f"atex-ci: root@{address}:22: connect attempt {n} of 4" for n in (1, 2, 3)
    ]
    assert not (run / "machines.json").exists()  # all or nothing


def test_a_rejected_key_is_said_at_once_with_exit_2(tmp_path, ssh_hosts):
    [host] = ssh_hosts(1)
    wrong = tmp_path / "wrong_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)],
        check=True,
        capture_output=True,
    )
    for command in (
        ["reserve"],
        ["run", "--fmf-root", str(make_tree(tmp_path / "tree", {"t": {"test": "true"}}))],
    ):
        run = tmp_path / command[0]
        proc = atex(*command, "-d", str(run), "--host", f"root@{host.address}", "--key", str(wrong))
        assert proc.returncode == 2, proc.stderr
        [line] = proc.stderr.splitlines()
        assert line.startswith(f"atex-ci: root@{host.address}:22: key rejected: {wrong} ("), line
        assert line.endswith("check --key and the user name")


def test_run_after_a_failed_reserve_is_refused(tmp_path, ssh_hosts):
    """A failed reservation is not "nothing reserved": no fallback to local slots."""
    [host] = ssh_hosts(1)
    address = dead_address(host)
    run = tmp_path / "run"
    proc = atex("reserve", "-d", str(run), "--host", f"root@{address}")
    assert proc.returncode == 3, proc.stderr
    assert json.loads((run / "run.json").read_text())["state"] == "reserve-failed"
    tree = make_tree(tmp_path / "tree", {"marker": {"test": f"touch {tmp_path}/ran-here"}})
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"atex-ci: 'atex-ci reserve' failed in {run}"), line
    assert not (tmp_path / "ran-here").exists()
    assert not (run / "results.jsonl").exists()
    # Machines given to run itself are what the user asked for: that runs.
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ran-here").exists()


def test_cli_skip_unreachable_warns_and_keeps_the_rest(tmp_path, ssh_hosts):
    live, dead = ssh_hosts(2)
    address = dead_address(dead)
    inventory = fleet_file(tmp_path, [{"host": address}, {"host": live.address}])
    run = tmp_path / "run"
    proc = atex(
        "reserve", "-d", str(run), "--hosts", str(inventory), "--key", str(live.key_path),
        "--skip-unreachable",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"skipping unreachable host root@{address}:22" in proc.stderr
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert [m["host"] for m in machines] == [live.address]
    assert atex("release", "-d", str(run)).returncode == 0


def test_static_hosts_are_yielded_and_released_through_the_interface(tmp_path, ssh_hosts):
    hosts = ssh_hosts(2)
    rundir = RunDir.create(tmp_path / "run")
    specs = [HostSpec(h.address) for h in hosts]
    provisioner = StaticProvisioner(rundir, "p", specs, str(hosts[0].key_path))
    machines = asyncio.run(record_reservations(rundir, provisioner, 2))
    assert [m.platform for m in machines] == ["p", "p"]
    assert [m.id for m in rundir.read_machines()] == [m.id for m in machines]
    failed = asyncio.run(provisioner.release_all())
    assert failed == []
    assert {m.state for m in machines} == {MachineState.RELEASED}
    assert provisioner.reserved == {}


def test_local_slots_through_the_interface(tmp_path):
    rundir = RunDir.create(tmp_path / "run")
    provisioner = LocalProvisioner(rundir)

    async def scenario() -> list[str]:
        first = await record_reservations(rundir, provisioner, 2)
        second = await record_reservations(rundir, provisioner, 1)
        await provisioner.release_all()
        return [m.id for m in first + second]

    assert asyncio.run(scenario()) == ["local-1", "local-2", "local-3"]
    assert not any((rundir.path / "work").iterdir())
    assert {m.state for m in rundir.read_machines()} == {MachineState.READY}  # recorded before
    assert get_provisioner("local", rundir).kind == "local"


# -- a provisioner of your own -----------------------------------------------------------


def test_unknown_provisioners_are_one_line_errors(tmp_path):
    for spec, words in [
        ("no_such_module_atex:Thing", "cannot import provisioner module"),
        ("os:path", "is not a subclass of atex_ci.provision.base.Provisioner"),
        ("os:NoSuchThing", "has no 'NoSuchThing'"),
        ("bogus", "unknown provisioner 'bogus'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            provisioner_class(spec)
        proc = atex("reserve", "-d", str(tmp_path / spec.replace(":", "_")), "--provisioner", spec)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and words in proc.stderr


def test_cli_your_own_provisioner(tmp_path, ssh_hosts):
    """The worked example of docs/provisioners.md, from the command line."""
    hosts = ssh_hosts(2)
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"hosts": [f"root@{h.address}" for h in hosts], "leases": {}}))
    env = {"PYTHONPATH": str(REPO / "examples")}
    run = tmp_path / "run"
    reserve = atex(
        "reserve", "-d", str(run), "--provisioner", "leased_hosts:LeasedHosts",
        "--lease-pool", str(pool), "-o", f"key={hosts[0].key_path}", "--count", "2", **env,
    )  # fmt: skip
    assert reserve.returncode == 0, reserve.stderr
    run_json = json.loads((run / "run.json").read_text())
    run_id = run_json["id"]
    # The declared option and -o alike are keyword arguments, recorded for later commands.
    assert run_json["provisioner"]["options"] == {
        "lease_pool": str(pool),
        "key": str(hosts[0].key_path),
    }
    leases = json.loads(pool.read_text())["leases"]
    assert leases == {f"root@{h.address}": run_id for h in hosts}
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["provisioner"] for m in machines} == {"leased_hosts:LeasedHosts"}
    assert [m["host_key"] for m in machines] == [h.host_key for h in hosts]
    tree = make_tree(tmp_path / "tree", {f"t{i}": {"test": "hostname"} for i in range(4)})
    ran = atex("run", "-d", str(run), "--fmf-root", str(tree), **env)
    assert ran.returncode == 0, ran.stderr
    assert {r["status"] for r in own_results(run).values()} == {"pass"}
    released = atex("release", "-d", str(run), **env)
    assert released.returncode == 0, released.stderr
    assert json.loads(pool.read_text())["leases"] == {}
    # Not enough hosts: the one that was ready is recorded, then a one-line error.
    pool.write_text(json.dumps({"hosts": [f"root@{hosts[0].address}"], "leases": {}}))
    short = atex(
        "reserve", "-d", str(tmp_path / "run2"), "--provisioner", "leased_hosts:LeasedHosts",
        "--lease-pool", str(pool), "-o", f"key={hosts[0].key_path}", "--count", "2", **env,
    )  # fmt: skip
    assert short.returncode == 3
    assert short.stderr.splitlines()[-1] == f"atex-ci: no free host left in {pool}"
    assert len(json.loads((tmp_path / "run2" / "machines.json").read_text())["machines"]) == 1
    assert atex("release", "-d", str(tmp_path / "run2"), **env).returncode == 0
    assert json.loads(pool.read_text())["leases"] == {}


def test_a_provisioner_of_your_own_brings_its_options_to_help(tmp_path):
    """The example declares --lease-pool; named with --provisioner, the class
    adds it to reserve's and run's options and --help, with no line of
    atex_ci/ naming it."""
    env = {"PYTHONPATH": str(REPO / "examples")}
    plain = atex("reserve", "--help")
    assert plain.returncode == 0 and "--lease-pool" not in plain.stdout
    for args in (
        ["reserve", "--provisioner", "leased_hosts:LeasedHosts", "--help"],
        ["reserve", "--help", "--provisioner=leased_hosts:LeasedHosts"],
        ["run", "--provisioner", "leased_hosts:LeasedHosts", "-h"],
    ):
        shown = atex(*args, **env)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"--lease-pool FILE +leased_hosts: the pool file", shown.stdout), args
        assert "--compose" in shown.stdout  # every built-in's options are still there
    sources = "\n".join(p.read_text() for p in (REPO / "atex_ci").rglob("*.py"))
    assert "leased_hosts" not in sources and "lease-pool" not in sources
    # An option that atex-ci already has (or another provisioner declares) is refused.
    (tmp_path / "clashing.py").write_text(
        "import click\n"
        "from atex_ci.provision.base import Provisioner\n"
        "class Clash(Provisioner):\n"
        "    @classmethod\n"
        "    def options(cls):\n"
        "        return [click.Option(['--pool'], help='mine')]\n"
        "    async def reserve(self, count):\n"
        "        yield\n"
        "    async def release(self, machine):\n"
        "        pass\n"
    )
    clash = atex("reserve", "--provisioner", "clashing:Clash", "--help", PYTHONPATH=str(tmp_path))
    assert clash.returncode == 2 and clash.stderr.count("\n") == 1
    assert "provisioner clashing:Clash declares option --pool, which atex-ci already has" in (
        clash.stderr
    )


def test_the_docs_show_the_example_as_it_is():
    docs = (REPO / "docs" / "provisioners.md").read_text()
    example = (REPO / "examples" / "leased_hosts.py").read_text()
    match = re.search(r"```python\n(.*?)```", docs, re.S)
    assert match is not None
    assert match[1] == example


def test_a_bad_option_for_your_own_provisioner(tmp_path):
    env = {"PYTHONPATH": str(REPO / "examples")}
    proc = atex(
        "reserve", "-d", str(tmp_path / "r"), "--provisioner", "leased_hosts:LeasedHosts",
        "-o", "colour=red", **env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "cannot create provisioner leased_hosts:LeasedHosts" in proc.stderr
    assert not (tmp_path / "r").exists()
    bad = atex("reserve", "-d", str(tmp_path / "r2"), "--local", "1", "-o", "a=b")
    assert bad.returncode == 2 and "-o/--option is for your own provisioner" in bad.stderr


def test_one_provisioner_class_per_run_directory(tmp_path):
    (tmp_path / "empty_provisioners.py").write_text(
        "from atex_ci.provision.base import Provisioner\n"
        "class Nothing(Provisioner):\n"
        "    async def reserve(self, count):\n"
        "        return\n"
        "        yield\n"
        "    async def release(self, machine):\n"
        "        self._released(machine)\n"
        "class Other(Nothing):\n"
        "    pass\n"
    )
    env = {"PYTHONPATH": str(tmp_path)}
    run = tmp_path / "run"
    first = atex(
        "reserve", "-d", str(run), "--provisioner", "empty_provisioners:Nothing", "-o", "", **env
    )
    assert first.returncode == 2 and "invalid -o/--option ''" in first.stderr
    assert not run.exists()
    first = atex("reserve", "-d", str(run), "--provisioner", "empty_provisioners:Nothing", **env)
    assert first.returncode == 0, first.stderr
    assert json.loads((run / "run.json").read_text())["provisioner"] == {
        "kind": "empty_provisioners:Nothing",
        "options": {},
        "platform": "default",
    }
    second = atex("reserve", "-d", str(run), "--provisioner", "empty_provisioners:Other", **env)
    assert second.returncode == 2
    assert "already has machines of empty_provisioners:Nothing" in second.stderr


def test_verbose_is_accepted_before_and_after_the_command(tmp_path, ssh_hosts):
    [host] = ssh_hosts(1)
    where = ("--host", f"root@{host.address}", "--key", str(host.key_path))
    quiet = atex("reserve", "-d", str(tmp_path / "quiet"), *where)
    assert quiet.returncode == 0, quiet.stderr
    assert "Opening SSH connection" not in quiet.stderr
    for args in (["-vv", "reserve"], ["reserve", "-vv"], ["-v", "reserve", "-v"]):
        run = tmp_path / "-".join(args).strip("-")
        proc = atex(*args, "-d", str(run), *where)
        assert proc.returncode == 0, proc.stderr
        # -vv (in all) shows the SSH library's own log.
        assert "Opening SSH connection" in proc.stderr, args
