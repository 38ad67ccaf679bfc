"""Machines as a pool: tests start on the first ready machine, reservations stop
when nothing is left, lost or discarded machines are replaced within the
budget, and every machine is released as soon as nothing is left for it."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator
from pathlib import Path

from atex_ci.errors import InfraError
from atex_ci.model import Machine
from atex_ci.pool import PoolLimits
from atex_ci.provision.local import LocalProvisioner
from atex_ci.rundir import RunDir
from atex_ci.runner import RunOptions, run_tests

from .treeutil import (
    atex,
    barrier_tests,
    kill_where,
    make_tree,
    own_results,
    reserve_hosts,
    results,
    shared_dir,
)

REPO = Path(__file__).resolve().parent.parent


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


class GatedSlots(LocalProvisioner):
    """Local slots: the first at once, each further one only once ``gate`` is set."""

    def __init__(self, rundir: RunDir, gate: asyncio.Event) -> None:
        super().__init__(rundir)
        self.gate = gate
        self.closed = False

    async def reserve(self, count: int) -> AsyncGenerator[Machine, None]:
        try:
            first = True
            async for machine in super().reserve(count):
                if not first:
                    await self.gate.wait()
                first = False
                yield machine
        finally:
            self.closed = True


def run_with(tree: Path, run: Path, **options) -> tuple[int, list[str]]:
    """Run the tree in this process with RunOptions; the exit code and progress lines."""
    lines: list[str] = []

    async def main() -> int:
        progress = options.pop("progress", None)

        def line(text: str) -> None:
            lines.append(text)
            if progress:
                progress(text)

        summary = await run_tests(run, tree, options=RunOptions(progress=line, **options))
        return summary.exit_code

    return asyncio.run(main()), lines


def test_tests_start_on_the_first_machine_while_the_others_are_still_coming(tmp_path):
    # The barrier tests pass only if two machines run side by side, and the
    # second machine comes only after a test has finished on the first.
    tests = {"a-first": {"test": "true"}, **barrier_tests(2, tmp_path / "barrier")}
    tree = make_tree(tmp_path / "tree", tests)
    run = tmp_path / "run"
    holder: dict[str, GatedSlots] = {}

    async def main() -> int:
        gate = asyncio.Event()
        source = holder["p"] = GatedSlots(RunDir.open_or_create(run), gate)

        def progress(line: str) -> None:
            if "PASS  /tests/a-first" in line:
                gate.set()

        options = RunOptions(progress=progress, sources=[(source, 2)])
        return (await run_tests(run, tree, options=options)).exit_code

    assert asyncio.run(main()) == 0
    assert {r["status"] for r in own_results(run).values()} == {"pass"}
    order = [
        (e["event"], e.get("test") or e.get("machine"))
        for e in events(run)
        if e["event"] in ("test_finished", "machine_reserved")
    ]
    assert order.index(("test_finished", "/tests/a-first")) < order.index(
        ("machine_reserved", "local-2")
    )
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert [(m["id"], m["state"]) for m in machines] == [
        ("local-1", "released"),
        ("local-2", "released"),
    ]
    assert holder["p"].closed


def test_a_reservation_stops_when_nothing_is_left_to_run(tmp_path):
    tree = make_tree(tmp_path / "tree", {"only": {"test": "true"}})
    run = tmp_path / "run"
    holder: dict[str, GatedSlots] = {}

    async def main() -> int:
        # The second slot would never come: the run must not wait for it.
        source = holder["p"] = GatedSlots(RunDir.open_or_create(run), asyncio.Event())
        options = RunOptions(sources=[(source, 3)])
        return (await run_tests(run, tree, options=options)).exit_code

    assert asyncio.run(main()) == 0
    assert holder["p"].closed  # the provisioner was told to stop (and gave back the rest)
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert [(m["id"], m["state"]) for m in machines] == [("local-1", "released")]
    assert not any(e["event"] == "reservation_failed" for e in events(run))


class NoMachines(LocalProvisioner):
    async def reserve(self, count: int) -> AsyncGenerator[Machine, None]:
        raise InfraError("the pool is empty")
        yield  # an async generator


def test_a_failed_reservation_is_named_in_the_tests_that_did_not_run(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    run = tmp_path / "run"
    code, lines = run_with(tree, run, sources=[(NoMachines(RunDir.open_or_create(run)), 2)])
    assert code == 3
    own = own_results(run)["/tests/a"]
    assert own["status"] == "error"
    assert own["note"] == "not run: no usable machine left for platform default (the pool is empty)"
    failed = [e for e in events(run) if e["event"] == "reservation_failed"]
    assert [(e["platform"], e["note"]) for e in failed] == [("default", "the pool is empty")]
    assert any("reserving for platform default failed: the pool is empty" in x for x in lines)


def destructive_run(tmp_path: Path, *extra: str):
    """Three tests tagged destructive (as in upstream ATEX) and two others, on one
    local slot, with the default scheduler."""
    tests = {f"d{n}": {"test": "true", "tag": ["destructive"]} for n in range(3)}
    tests.update({f"z{n}": {"test": "true"} for n in range(2)})
    tree = make_tree(tmp_path / "tree", tests)
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1", *extra)
    return run, proc


def test_a_discarded_machine_is_replaced_and_released(tmp_path):
    run, proc = destructive_run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    own = own_results(run)
    assert {r["status"] for r in own.values()} == {"pass"}
    # Each destructive test had a machine of its own, never used again.
    machines_of = {name: r["machine"] for name, r in own.items()}
    destructive = [machines_of[f"/tests/d{n}"] for n in range(3)]
    assert len(set(destructive)) == 3
    assert not set(destructive) & {machines_of["/tests/z0"], machines_of["/tests/z1"]}
    replaced = [
        (e["machine"], e["replacement"]) for e in events(run) if e["event"] == "machine_replaced"
    ]
    assert len(replaced) == 3
    assert "machine local-2 replaces local-1" in proc.stderr
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert len(machines) == 4
    assert {m["state"] for m in machines} == {"released"}
    assert not any((run / "work").iterdir())  # every slot's directory is gone


def test_replacements_stop_at_max_machines(tmp_path):
    run, proc = destructive_run(tmp_path, "--max-machines", "2")
    assert proc.returncode == 3, proc.stderr
    own = own_results(run)
    ran = [name for name, r in own.items() if r["status"] == "pass"]
    # Once no machine can be replaced, the destructive tests wait until every
    # other test had its turn on the last machine.
    assert ran == ["/tests/d0", "/tests/z0", "/tests/z1", "/tests/d1"]
    for name in ("/tests/d2",):
        assert own[name]["status"] == "error"
        assert own[name]["note"] == ("not run: no usable machine left for platform default"), own[
            name
        ]["note"]
    not_replaced = [e for e in events(run) if e["event"] == "machine_not_replaced"]
    assert [e["note"] for e in not_replaced] == ["the run has used 2 machine(s) (--max-machines)"]
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert len(machines) == 2 and {m["state"] for m in machines} == {"released"}


def test_a_host_killed_mid_test_is_replaced_from_its_provisioner(tmp_path, ssh_hosts):
    hosts = ssh_hosts(2)
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"hosts": [f"root@{h.address}" for h in hosts], "leases": {}}))
    env = {**os.environ, "PYTHONPATH": str(REPO / "examples")}
    run = tmp_path / "run"
    reserve = atex(
        "reserve", "-d", str(run), "--provisioner", "leased_hosts:LeasedHosts",
        "--lease-pool", str(pool), "-o", f"key={hosts[0].key_path}", "--count", "1", env=env,
    )  # fmt: skip
    assert reserve.returncode == 0, reserve.stderr
    first = json.loads((run / "machines.json").read_text())["machines"][0]
    with shared_dir() as shared:
        # The victim hangs on its first run only; run again, it passes.
        victim = f"if [ -e {shared}/ran ]; then exit 0; fi; touch {shared}/ran; sleep 60"
        tests = {"a-victim": {"test": victim}, **{f"b-{n}": {"test": "true"} for n in range(3)}}
        tree = make_tree(tmp_path / "tree", tests)
        killed: list = []
        killer = kill_where(hosts, "sleep 60", killed)
        try:
            proc = atex("run", "-d", str(run), "--fmf-root", str(tree), env=env)
        finally:
            killer.join()
    assert killed and killed[0].address == first["host"]
    assert proc.returncode == 0, proc.stderr
    attempts = [r for r in results(run) if r["test"] == "/tests/a-victim" and r["name"] is None]
    assert [(a["attempt"], a["status"], a["reason"]) for a in attempts] == [
        (1, "error", "infra"),
        (2, "pass", None),
    ]
    machines = {m["id"]: m for m in json.loads((run / "machines.json").read_text())["machines"]}
    replacement = attempts[1]["machine"]
    assert attempts[0]["machine"] == first["id"] and replacement != first["id"]
    assert machines[replacement]["host"] != first["host"]
    replaced = [
        (e["machine"], e["replacement"]) for e in events(run) if e["event"] == "machine_replaced"
    ]
    assert replaced == [(first["id"], replacement)]
    # The replacement was this run's: released, its lease given back; the lost
    # host is the user's to release.
    assert machines[replacement]["state"] == "released"
    assert machines[first["id"]]["state"] == "broken"
    run_id = json.loads((run / "run.json").read_text())["id"]
    assert json.loads(pool.read_text())["leases"] == {f"root@{first['host']}": run_id}
    released = atex("release", "-d", str(run), env=env)
    assert released.returncode == 0, released.stderr
    assert json.loads(pool.read_text())["leases"] == {}
    # The reports show the loss.
    assert atex("report", "-d", str(run)).returncode == 0
    summary = (run / "summary.md").read_text()
    assert f"out of use: lost while running /tests/a-victim; replaced by {replacement}" in summary


def test_a_lost_static_host_is_not_replaced(tmp_path, ssh_host):
    # The only host: its test, queued again, waits for a replacement that a
    # static host cannot have (test_run_ssh: a surviving host takes it).
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    tree = make_tree(tmp_path / "tree", {"a-victim": {"test": "sleep 60"}, "b": {"test": "true"}})
    killed: list = []
    killer = kill_where([ssh_host], "sleep 60", killed)
    try:
        proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    finally:
        killer.join()
    assert killed
    assert proc.returncode == 3, proc.stderr
    assert not [e for e in events(run) if e["event"] == "machine_replaced"]
    notes = [e["note"] for e in events(run) if e["event"] == "machine_not_replaced"]
    assert notes == ["static machines cannot be replaced"]
    own = own_results(run)
    assert (own["/tests/a-victim"]["status"], own["/tests/a-victim"]["reason"]) == (
        "error",
        "infra",
    )
    assert own["/tests/b"]["note"] == "not run: no usable machine left for platform default"


def test_destructive_tests_run_last_on_static_hosts_and_the_rest_are_not_run(tmp_path, ssh_hosts):
    # Two static hosts (no stand-in), two destructive tests discovered first,
    # and a third: every other test runs before a host is thrown away, each
    # host then takes one destructive test, and the third has no host left.
    hosts = ssh_hosts(2)
    run = tmp_path / "run"
    reserve_hosts(run, hosts)
    tests = {f"a-wipe{n}": {"test": "true", "tag": ["destructive"]} for n in range(3)}
    tests.update({f"b{n}": {"test": "true"} for n in range(4)})
    tree = make_tree(tmp_path / "tree", tests)
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 3, proc.stderr
    # A test is taken before its machine is set up, so the event order across
    # machines is not the order of taking; on each machine it is: the
    # destructive test is the last one there, after that host's other tests.
    started = [(e["machine"], e["test"]) for e in events(run) if e["event"] == "test_started"]
    per_machine: dict[str, list[str]] = {}
    for machine, test in started:
        per_machine.setdefault(machine, []).append(test)
    assert len(per_machine) == 2, started
    for tests_there in per_machine.values():
        assert tests_there[-1].startswith("/tests/a-wipe"), started
        assert not any(t.startswith("/tests/a-wipe") for t in tests_there[:-1]), started
    assert sorted(t for _, t in started) == sorted(
        [f"/tests/b{n}" for n in range(4)] + ["/tests/a-wipe0", "/tests/a-wipe1"]
    )
    assert all(own_results(run)[f"/tests/b{n}"]["status"] == "pass" for n in range(4))
    own = own_results(run)
    assert own["/tests/a-wipe2"]["note"] == "not run: no usable machine left for platform default"
    broken = {e["machine"]: e["note"] for e in events(run) if e["event"] == "machine_broken"}
    assert sorted(broken.values()) == [
        "/tests/a-wipe0 is destructive (tag 'destructive')",
        "/tests/a-wipe1 is destructive (tag 'destructive')",
    ]
    notes = [e["note"] for e in events(run) if e["event"] == "machine_not_replaced"]
    assert notes == ["static machines cannot be replaced"] * 2  # a-wipe2 still waited
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"broken"}  # the user's hosts: 'release' next
    assert atex("release", "-d", str(run)).returncode == 0


def test_pool_limits_are_checked():
    for bad in ({"max_machines": 0}, {"max_failed_setups": -1}):
        try:
            PoolLimits(**bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")


def test_run_reserves_hosts_itself_and_releases_them(tmp_path, ssh_hosts):
    hosts = ssh_hosts(2)
    tree = make_tree(tmp_path / "tree", {**barrier_tests(2, tmp_path / "b"), "t": {"test": "true"}})
    run = tmp_path / "run"
    args = ["run", "-d", str(run), "--fmf-root", str(tree), "--key", str(hosts[0].key_path)]
    for host in hosts:
        args += ["--host", f"root@{host.address}"]
    with shared_dir() as shared:
        tree = make_tree(tmp_path / "tree", {**barrier_tests(2, shared), "t": {"test": "true"}})
        proc = atex(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("; it takes tests now") == 2
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert sorted(m["host"] for m in machines) == sorted(h.address for h in hosts)
    assert {m["state"] for m in machines} == {"released"}
    assert {r["status"] for r in own_results(run).values()} == {"pass"}
    # Bad reservation options are refused before anything runs.
    bad = atex("run", "-d", str(tmp_path / "r2"), "--fmf-root", str(tree), "--count", "2")
    assert bad.returncode == 2
    assert bad.stderr == "atex-ci: --count is for --provisioner; use --local N for local slots\n"
    assert not (tmp_path / "r2").exists()


def test_max_machines_bounds_what_run_reserves_and_says_so(tmp_path):
    tree = make_tree(tmp_path / "tree", {f"t{n}": {"test": "true"} for n in range(4)})
    run = tmp_path / "run"
    rundir = RunDir.open_or_create(run)
    code, lines = run_with(
        tree,
        run,
        sources=[(LocalProvisioner(rundir), 3)],
        pool=PoolLimits(max_machines=2),
    )
    assert code == 0
    assert (
        "atex-ci: reserving 2 of 3 machine(s) for platform default: the rest is over "
        in "\n".join(lines)
    )
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert len(machines) == 2


def test_run_with_an_inventory_of_two_platforms_runs_each_test_on_each(tmp_path, ssh_hosts):
    hosts = ssh_hosts(2)
    inventory = tmp_path / "fleet.json"
    inventory.write_text(
        json.dumps(
            [
                {"host": h.address, "key": str(h.key_path), "platform": platform}
                for h, platform in zip(hosts, ["one", "two"], strict=True)
            ]
        )
    )
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}, "b": {"test": "true"}})
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--hosts", str(inventory))
    assert proc.returncode == 0, proc.stderr
    machines = {m["id"]: m for m in json.loads((run / "machines.json").read_text())["machines"]}
    ran = sorted(
        (r["platform"], r["test"], machines[r["machine"]]["platform"])
        for r in results(run)
        if r["name"] is None
    )
    assert ran == [
        ("one", "/tests/a", "one"),
        ("one", "/tests/b", "one"),
        ("two", "/tests/a", "two"),
        ("two", "/tests/b", "two"),
    ]
    assert json.loads((run / "run.json").read_text())["platforms"] == ["one", "two"]
