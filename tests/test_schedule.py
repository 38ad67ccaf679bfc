"""The pure scheduling policy and its simulation (no machines, no clock)."""

from __future__ import annotations

import random

import pytest

from atex_ci.model import Machine, Reason, Result, Status, Test
from atex_ci.schedule import (
    Decision,
    History,
    Job,
    Next,
    Outcome,
    Scheduler,
    lower_bound,
    partition,
)
from atex_ci.simulate import estimate, simulate

PASS = Outcome(Status.PASS, duration=1.0)
FAIL = Outcome(Status.FAIL, reason=Reason.TEST, duration=1.0)


def jobs(*names: str, plan: str = "/p", platform: str = "default") -> list[Job]:
    return [Job(platform, Test(name=n, plan=plan, test="true", path="")) for n in names]


def machine(name: str, platform: str = "default", provisioner: str = "static") -> Machine:
    return Machine(id=name, provisioner=provisioner, platform=platform)


def names(items: list[Job]) -> list[str]:
    return [j.test.name for j in items]


def take(sched: Scheduler, m: Machine) -> Job:
    job = sched.next_test(m)
    assert isinstance(job, Job), job
    return job


def test_free_machine_takes_next_test_in_discovery_order_without_history():
    sched = Scheduler(jobs("/a", "/b", "/c"))
    m1, m2 = machine("m1"), machine("m2")
    sched.add_machine(m1)
    sched.add_machine(m2)
    a, b = take(sched, m1), take(sched, m2)
    assert names([a, b]) == ["/a", "/b"]
    # m2 is free first and takes /c: nothing was pre-assigned to m1.
    assert sched.test_finished(m2, b, PASS) == Decision(keep_machine=True)
    c = take(sched, m2)
    assert c.test.name == "/c"
    assert not sched.pending() and not sched.finished  # /a and /c still run
    sched.test_finished(m2, c, PASS)
    # Nothing queued, but /a may still come back (its machine could be lost):
    # m2 waits rather than leaves.
    assert sched.next_test(m2, c) is Next.WAIT
    sched.test_finished(m1, a, PASS)
    assert sched.next_test(m1, a) is Next.DONE
    assert sched.next_test(m2) is Next.DONE
    assert sched.finished


def test_history_orders_longest_first_and_unknown_tests_before_them():
    history = History(
        {("default", "/p", "/short"): [1.0, 1.2], ("default", "/p", "/long"): [30.0, 90.0, 31.0]}
    )
    sched = Scheduler(jobs("/short", "/new-1", "/long", "/new-2"), history=history)
    assert names(sched.pending()) == ["/new-1", "/new-2", "/long", "/short"]
    assert sched.expected_duration(sched.pending()[2]) == 31.0  # median: one slow run ignored


def test_history_from_another_platform_is_borrowed():
    history = History({("f41", "/p", "/t"): [5.0]})
    assert history.expected(("c9s", "/p", "/t")) == 5.0
    assert history.expected(("c9s", "/p", "/other")) is None


def test_each_platform_goes_to_its_own_machines_only():
    sched = Scheduler(jobs("/a", "/b", platform="f41") + jobs("/a", platform="c9s"))
    fedora, centos = machine("f", "f41"), machine("c", "c9s")
    sched.add_machine(fedora)
    sched.add_machine(centos)
    c = take(sched, centos)
    assert (c.platform, c.test.name) == ("c9s", "/a")
    assert sched.next_test(centos, c) is Next.DONE  # /b is Fedora's
    assert [take(sched, fedora).platform for _ in range(2)] == ["f41", "f41"]
    assert sched.wants_machine("f41") is False


def test_machine_fate_after_a_test():
    sched = Scheduler(jobs("/a", "/b", "/c", "/d"))
    ssh, slot = machine("ssh"), machine("slot", provisioner="local")
    for m in (ssh, slot):
        sched.add_machine(m)
    timeout = Outcome(Status.ERROR, reason=Reason.TIMEOUT, timed_out=True)
    # A timeout kills the process group; only a local slot is known to be clean after it.
    job = take(sched, slot)
    assert not sched.wants_check(slot, job, timeout)
    assert sched.test_finished(slot, job, timeout).keep_machine
    job = take(sched, ssh)
    assert sched.wants_check(ssh, job, timeout)  # a host is checked first
    decision = sched.test_finished(ssh, job, timeout)  # ...and without a check, discarded
    assert not decision.keep_machine and "timed out" in decision.why
    assert sched.next_test(ssh) is Next.DONE
    lost = Outcome(Status.ERROR, reason=Reason.INFRA, machine_lost=True)
    assert not sched.test_finished(slot, take(sched, slot), lost).keep_machine


def test_failed_test_is_rerun_on_another_machine_when_one_is_there():
    sched = Scheduler(jobs("/flaky", "/other"), max_reruns=1)
    m1, m2 = machine("m1"), machine("m2")
    sched.add_machine(m1)
    sched.add_machine(m2)
    flaky, other = take(sched, m1), take(sched, m2)
    decision = sched.test_finished(m1, flaky, FAIL)
    assert decision.rerun and decision.keep_machine and "fail" in decision.why
    # m1 is free, but the rerun prefers m2, which is still busy: m1 waits.
    assert sched.next_test(m1, flaky) is Next.WAIT
    sched.test_finished(m2, other, PASS)
    assert take(sched, m2) is flaky
    # Failing again spends no more: the budget was one rerun.
    assert not sched.test_finished(m2, flaky, FAIL).rerun
    assert sched.next_test(m1) is Next.DONE and sched.next_test(m2) is Next.DONE
    assert flaky.runs == 2 and flaky.reruns == 1


def test_rerun_falls_back_to_the_same_machine_when_it_is_the_only_one():
    sched = Scheduler(jobs("/t"), max_reruns=2)
    m = machine("m")
    sched.add_machine(m)
    job = take(sched, m)
    assert sched.test_finished(m, job, FAIL).rerun
    assert take(sched, m) is job
    assert sched.test_finished(m, job, PASS) == Decision(keep_machine=True)
    assert sched.finished


def test_infra_failures_are_retried_without_spending_reruns_within_a_bound():
    lost = Outcome(None, reason=Reason.INFRA, machine_lost=True)
    job = jobs("/victim")[0]
    sched = Scheduler([job], max_infra_retries=2)
    for n in range(3):
        m = machine(f"m{n}")
        sched.add_machine(m)
        assert take(sched, m) is job
        decision = sched.test_finished(m, job, lost)
        assert not decision.keep_machine
        assert decision.rerun is (n < 2)
    assert job.infra_retries == 2 and job.reruns == 0
    assert sched.finished


def test_interrupted_and_passing_tests_are_never_rerun():
    sched = Scheduler(jobs("/a", "/b"), max_reruns=5)
    m = machine("m")
    sched.add_machine(m)
    interrupted = Outcome(Status.ERROR, reason=Reason.INTERRUPTED, interrupted=True)
    assert not sched.test_finished(m, take(sched, m), interrupted).rerun
    assert not sched.test_finished(m, take(sched, m), PASS).rerun


def test_abort_drops_the_rest_of_the_plan_on_that_platform_only():
    items = jobs("/a", "/b", plan="/p1") + jobs("/c", plan="/p2")
    items += jobs("/a", "/b", plan="/p1", platform="other")
    sched = Scheduler(items)
    m = machine("m")
    sched.add_machine(m)
    first = take(sched, m)
    decision = sched.test_finished(m, first, Outcome(Status.PASS, aborted=True))
    assert names(list(decision.dropped)) == ["/b"]
    assert [(j.platform, j.test.name) for j in sched.pending()] == [
        ("default", "/c"),
        ("other", "/a"),
        ("other", "/b"),
    ]


def test_machine_lost_between_tests_gives_its_work_back():
    sched = Scheduler(jobs("/a", "/b"))
    m1, m2 = machine("m1"), machine("m2")
    sched.add_machine(m1)
    sched.add_machine(m2)
    a = take(sched, m1)
    assert sched.machine_lost(m1) == [a]
    assert names(sched.pending()) == ["/a", "/b"]
    assert sched.next_test(m1) is Next.DONE
    assert take(sched, m2) is a
    assert sched.wants_machine("default")
    assert names(sched.no_machine_left("default")) == ["/b"]
    assert not sched.wants_machine("default")


def test_resume_drops_final_results_and_keeps_what_never_ended():
    sched = Scheduler(jobs("/done", "/failed", "/interrupted", "/not-run", "/new"))

    def own(name: str, status: Status, **kw: object) -> Result:
        return Result(test=name, plan="/p", status=status, machine="m", **kw)  # type: ignore[arg-type]

    previous = [
        own("/done", Status.PASS),
        own("/failed", Status.FAIL),
        own("/interrupted", Status.PASS),
        own("/interrupted", Status.ERROR, reason=Reason.INTERRUPTED, attempt=2),
        Result(test="/not-run", plan="/p", status=Status.ERROR, reason=Reason.INFRA),
        Result(test="/new", plan="/p", status=Status.PASS, name="/sub-result-only"),
    ]
    assert names(sched.resume(previous)) == ["/done", "/failed"]
    assert names(sched.pending()) == ["/interrupted", "/not-run", "/new"]


def test_policy_hooks_in_a_subclass():
    class WipesDisk(Scheduler):
        """Discard a machine after a test tagged wipes-disk; reverse order."""

        def order(self, items: list[Job]) -> list[Job]:
            return list(reversed(items))

        def keep_machine(self, m: Machine, job: Job, outcome: Outcome) -> tuple[bool, str]:
            if "wipes-disk" in job.test.data.get("tag", []):
                return False, "wiped its disk"
            return super().keep_machine(m, job, outcome)

    items = jobs("/safe", "/wipe")
    items[1].test.data["tag"] = ["wipes-disk"]
    sched = WipesDisk(items)
    m = machine("m")
    sched.add_machine(m)
    wipe = take(sched, m)
    assert wipe.test.name == "/wipe"
    assert sched.test_finished(m, wipe, PASS) == Decision(False, why="wiped its disk")
    assert sched.next_test(m) is Next.DONE


def test_partition_is_deterministic_balanced_and_complete():
    items = jobs(*(f"/t{n}" for n in range(50)))
    rng = random.Random(7)
    expected = {i: rng.lognormvariate(0, 1) for i in range(50)}
    shards = partition(items, 3, expected)
    assert shards == partition(items, 3, expected)
    assert sorted(j.test.name for s in shards for j in s) == sorted(names(items))
    loads = [sum(expected[items.index(j)] for j in s) for s in shards]
    assert max(loads) - min(loads) <= max(expected.values())
    # Each shard keeps discovery order.
    for shard in shards:
        assert shard == sorted(shard, key=items.index)
    # Without history: equal counts.
    assert [len(s) for s in partition(items, 4)] == [13, 13, 12, 12]
    with pytest.raises(ValueError):
        partition(items, 0)


def heavy_tailed(count: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    return {f"/t{n:03}": rng.lognormvariate(0, 1.2) for n in range(count)}


def test_simulation_lpt_with_history_beats_discovery_order_on_a_heavy_tail():
    durations = heavy_tailed(200, 3)
    durations["/t199"] = 25 * max(durations.values())  # a very long test found last
    items = jobs(*durations)
    history = History({("default", "/p", n): [d] for n, d in durations.items()})

    def real(job: Job) -> float:
        return durations[job.test.name]

    fifo = simulate(items, real, 8)
    lpt = simulate(jobs(*durations), real, 8, lambda js: Scheduler(js, history=history))
    assert lpt.ratio <= 1.05
    assert fifo.makespan > lpt.makespan
    assert lpt.decisions >= 200 and 0 < lpt.utilisation <= 1


def test_estimate_predicts_makespans_and_the_fewest_machines_for_a_budget():
    history = {("default", "/p", f"/t{n}"): [10.0] for n in range(8)}
    result = estimate(history, [1, 2, 4, 8], budget=25.0)
    assert [s.makespan for s in result.simulations] == [80.0, 40.0, 20.0, 10.0]
    assert [s.utilisation for s in result.simulations] == [1.0, 1.0, 1.0, 1.0]
    assert result.fewest == 4  # 3 machines need 30 s
    assert estimate(history, [1], budget=5.0).fewest is None  # one test alone takes 10 s
    assert lower_bound([10.0] * 8, 3) == pytest.approx(80 / 3)


def test_a_host_that_passed_its_health_check_after_a_timeout_is_kept():
    sched = Scheduler(jobs("/hangs", "/b", "/c"))
    host = machine("host")
    sched.add_machine(host)
    timeout = Outcome(Status.ERROR, reason=Reason.TIMEOUT, timed_out=True)
    healthy = Outcome(Status.ERROR, reason=Reason.TIMEOUT, timed_out=True, healthy=True)
    unhealthy = Outcome(Status.ERROR, reason=Reason.TIMEOUT, timed_out=True, healthy=False)
    assert not sched.wants_check(host, take(sched, host), PASS)
    assert sched.test_finished(host, take(sched, host), healthy).keep_machine
    decision = sched.test_finished(host, take(sched, host), unhealthy)
    assert not decision.keep_machine and "health check" in decision.why
    assert timeout.healthy is None


def test_a_rerun_that_cost_an_irreplaceable_machine_waits_behind_the_queue():
    """It must not take the platform's last machine before the tests still queued."""
    sched = Scheduler(jobs("/wrecks", "/a", "/b"), max_reruns=1)
    sched.replacements("default", False)
    doomed, last = machine("doomed"), machine("last")
    sched.add_machine(doomed)
    sched.add_machine(last)
    wrecks = take(sched, doomed)
    broke = Outcome(Status.ERROR, reason=Reason.TIMEOUT, timed_out=True, healthy=False)
    decision = sched.test_finished(doomed, wrecks, broke)
    assert decision.rerun and not decision.keep_machine
    assert names(sched.pending()) == ["/a", "/b", "/wrecks"]
    assert [take(sched, last).test.name for _ in range(3)] == ["/a", "/b", "/wrecks"]


def test_a_rerun_goes_first_when_its_machine_can_be_replaced_or_was_kept():
    sched = Scheduler(jobs("/flaky", "/a", "/b"), max_reruns=1)
    sched.replacements("default", True)
    m1, m2 = machine("m1"), machine("m2")
    sched.add_machine(m1)
    sched.add_machine(m2)
    flaky = take(sched, m1)
    lost = Outcome(Status.ERROR, reason=Reason.INFRA, machine_lost=True)
    assert sched.test_finished(m1, flaky, lost).rerun
    assert names(sched.pending()) == ["/flaky", "/a", "/b"]
    # Kept after a plain failure, on a platform without replacements: first too.
    sched = Scheduler(jobs("/flaky", "/a"), max_reruns=1)
    sched.add_machine(m1)
    sched.add_machine(m2)
    flaky = take(sched, m1)
    assert sched.test_finished(m1, flaky, FAIL).rerun
    assert names(sched.pending()) == ["/flaky", "/a"]


# ------------------------------------------------- extra-priority and destructive


def tagged(items: list[Job], name: str, **data: object) -> list[Job]:
    """Give the job named ``name`` fmf data (as discovery leaves it: tag a list)."""
    for job in items:
        if job.test.name == name:
            job.test.data.update(data)
    return items


def test_extra_priority_runs_higher_first_and_keeps_the_order_within_a_priority():
    items = jobs("/a", "/b", "/urgent", "/c", "/late", "/also-urgent", "/bad")
    tagged(items, "/urgent", **{"extra-priority": 10})
    tagged(items, "/also-urgent", **{"extra-priority": 10})
    tagged(items, "/late", **{"extra-priority": -1})
    tagged(items, "/bad", **{"extra-priority": "high"})  # not a number: priority 0
    sched = Scheduler(items)
    assert names(sched.pending()) == [
        "/urgent", "/also-urgent", "/a", "/b", "/c", "/bad", "/late",
    ]  # fmt: skip
    # Off: discovery order.
    assert names(Scheduler(items, priority_key=None).pending()) == names(items)


def test_extra_priority_comes_before_the_history_and_lpt_orders_within_it():
    items = jobs("/short", "/long", "/short-urgent", "/long-urgent")
    tagged(items, "/short-urgent", **{"extra-priority": 1})
    tagged(items, "/long-urgent", **{"extra-priority": 1})
    known = {"/short": 1.0, "/long": 9.0, "/short-urgent": 1.0, "/long-urgent": 9.0}
    history = History({("default", "/p", name): [d] for name, d in known.items()})
    sched = Scheduler(items, history=history)
    assert names(sched.pending()) == ["/long-urgent", "/short-urgent", "/long", "/short"]


def test_destructive_test_discards_its_machine_even_when_it_passes():
    items = tagged(jobs("/wipe", "/after"), "/wipe", tag=["destructive"])
    sched = Scheduler(items)
    sched.replacements("default", True)  # e.g. Testing Farm: no reason to wait
    m1, m2 = machine("m1"), machine("m2")
    sched.add_machine(m1)
    sched.add_machine(m2)
    wipe = take(sched, m1)
    assert wipe.test.name == "/wipe"  # replaceable: discovery order, not deferred
    timed_out = Outcome(Status.ERROR, reason=Reason.TIMEOUT, timed_out=True)
    assert not sched.wants_check(m1, wipe, timed_out)  # it goes anyway: no check
    decision = sched.test_finished(m1, wipe, PASS)
    assert decision == Decision(False, why="/wipe is destructive (tag 'destructive')")
    assert sched.next_test(m1) is Next.DONE
    assert take(sched, m2).test.name == "/after"
    # Off, or under another tag: the machine stays.
    plain = Scheduler(tagged(jobs("/wipe"), "/wipe", tag=["destructive"]), destructive_tag=None)
    plain.add_machine(m1)
    assert plain.test_finished(m1, take(plain, m1), PASS).keep_machine
    wipes = tagged(jobs("/wipe"), "/wipe", tag=["wipes-disk"])
    own = Scheduler(wipes, destructive_tag="wipes-disk")
    own.add_machine(m1)
    assert not own.test_finished(m1, take(own, m1), PASS).keep_machine


def test_destructive_tests_go_last_where_machines_cannot_be_replaced():
    # Static hosts: a destructive test first would throw away a host that
    # the other tests still needed.
    items = jobs("/d1", "/n1", "/d2", "/n2", "/n3")
    for name in ("/d1", "/d2"):
        tagged(items, name, tag=["destructive", "slow"])
    sched = Scheduler(items)  # no replacements: what a static fleet says
    a, b = machine("a"), machine("b")
    sched.add_machine(a)
    sched.add_machine(b)
    order = []
    for m in (a, b, a):
        job = take(sched, m)
        order.append(job.test.name)
        assert sched.test_finished(m, job, PASS).keep_machine
    assert order == ["/n1", "/n2", "/n3"]
    # Only destructive tests are left: each takes a machine, one machine each.
    d1, d2 = take(sched, a), take(sched, b)
    assert names([d1, d2]) == ["/d1", "/d2"]
    assert not sched.test_finished(a, d1, PASS).keep_machine
    assert not sched.test_finished(b, d2, PASS).keep_machine
    assert sched.finished and not sched.machines


def test_simulated_static_fleet_runs_every_other_test_before_discarding_machines():
    items = jobs(*(f"/n{i}" for i in range(10)), "/d1", "/d2", "/d3")
    items = [*items[10:], *items[:10]]  # the destructive ones discovered first
    for name in ("/d1", "/d2", "/d3"):
        tagged(items, name, tag=["destructive"])
    started: list[str] = []

    class Recording(Scheduler):
        def next_test(self, m: Machine, previous: Job | None = None) -> Job | Next:
            answer = super().next_test(m, previous)
            if isinstance(answer, Job):
                started.append(answer.test.name)
            return answer

    static = simulate(items, lambda j: 1.0, 2, Recording, replacement_delay=None)
    # Every non-destructive test ran before the first machine was thrown away;
    # two hosts are two destructive tests, and the third has no machine left.
    assert started == [*(f"/n{i}" for i in range(10)), "/d1", "/d2"]
    assert (static.discarded, static.not_run) == (2, 1)
    # Replaceable machines: discovery order, each discarded machine replaced.
    started.clear()
    pool = simulate(items, lambda j: 1.0, 2, Recording, replacement_delay=5.0)
    assert started[:3] == ["/d1", "/d2", "/d3"]
    assert (pool.discarded, pool.not_run) == (3, 0)
    assert sorted(started) == sorted(names(items))
    assert pool.makespan > 5.0  # the replacements' delay is on the clock


def timed_jobs(durations: dict[str, float]) -> list[Job]:
    """Jobs whose tests declare these fmf durations (seconds)."""
    return [
        Job("default", Test(name=n, plan="/p", test="true", path="", duration=d))
        for n, d in durations.items()
    ]


def test_max_failures_stops_starting_tests_running_ones_finish_without_reruns():
    sched = Scheduler(jobs("/a", "/b", "/c", "/d", "/e"), max_failures=1, max_reruns=1)
    m1, m2 = machine("m1"), machine("m2")
    sched.add_machine(m1)
    sched.add_machine(m2)
    a, b = take(sched, m1), take(sched, m2)
    # a's failure is rerun: not final yet, no stop.
    assert sched.test_finished(m1, a, FAIL).rerun and sched.stopped is None
    assert take(sched, m1).test.name == "/c"  # a prefers another machine
    sched.test_finished(m2, b, PASS)
    assert take(sched, m2) is a
    # a's second failure is final: the stop.
    assert not sched.test_finished(m2, a, FAIL).rerun
    assert sched.stopped == "not run: stopped after 1 failures"
    assert sched.next_test(m2, a) is Next.DONE  # nothing starts; m2 goes
    # c was running: it finishes, and its failure queues no rerun.
    c = sched.running()["m1"]
    assert sched.test_finished(m1, c, FAIL) == Decision(keep_machine=True)
    assert sched.next_test(m1, c) is Next.DONE and sched.finished
    dropped = sched.not_run()
    assert names([j for j, _ in dropped]) == ["/d", "/e"]
    assert {note for _, note in dropped} == {"not run: stopped after 1 failures"}
    assert sched.not_run() == []  # handed back once


def test_time_budget_starts_only_what_ends_in_time_on_the_clock_it_is_given():
    now = [0.0]
    # 1000s less the reserve (5%: 50s) leaves 950s.
    sched = Scheduler(
        timed_jobs({"/long": 900.0, "/mid": 500.0, "/short": 40.0, "/late": 60.0}),
        time_budget=1000.0,
        clock=lambda: now[0],
    )
    assert sched.deadline == 950.0
    m1 = machine("m1")
    sched.add_machine(m1)
    long = take(sched, m1)
    assert long.test.name == "/long"
    now[0] = 900.0
    sched.test_finished(m1, long, PASS)
    # 50s left: /mid and /late no longer fit and go at once; /short does.
    short = take(sched, m1)
    assert short.test.name == "/short"
    assert [(j.test.name, note) for j, note in sched.not_run()] == [
        ("/mid", "not run: time budget"),
        ("/late", "not run: time budget"),
    ]
    sched.test_finished(m1, short, PASS)
    assert sched.next_test(m1, short) is Next.DONE


def test_a_budget_keeps_at_most_five_minutes_and_counts_from_its_start():
    sched = Scheduler(jobs("/a"), time_budget=6 * 3600.0, budget_start=100.0, clock=lambda: 0.0)
    assert sched.deadline == 100.0 + 6 * 3600.0 - 300.0


def test_a_test_without_history_is_estimated_from_its_duration_scaled_by_the_known_ones():
    all_jobs = timed_jobs({"/known": 600.0, "/other": 100.0, "/new": 1000.0})
    history = History({("default", "/p", "/known"): [60.0], ("default", "/p", "/other"): [10.0]})
    sched = Scheduler(all_jobs, history=history)
    by_name = {j.test.name: j for j in all_jobs}
    # The known tests took a tenth of their declared durations.
    assert sched.estimated_duration(by_name["/new"]) == pytest.approx(100.0)
    assert sched.estimated_duration(by_name["/known"]) == 60.0
    assert sched.expected_duration(by_name["/new"]) is None  # the queue order is unchanged
    # Without a history: the declared duration itself.
    assert Scheduler(all_jobs).estimated_duration(by_name["/new"]) == 1000.0


def test_resume_runs_what_a_stop_kept_from_starting_and_not_a_skip_of_the_test():
    from atex_ci.schedule import unfinished

    def skip(note: str, machine: str | None = None) -> Result:
        return Result(test="/a", status=Status.SKIP, note=note, machine=machine)

    assert unfinished(skip("not run: time budget"))
    assert unfinished(skip("not run: stopped after 3 failures"))
    assert not unfinished(skip("not run: time budget", machine="m1"))  # the test said so
    assert not unfinished(skip("not run: plan /p was aborted by /b (tmt-abort)"))


def test_a_test_a_lost_machine_gives_back_after_a_stop_does_not_start():
    sched = Scheduler(jobs("/a", "/b", "/c"), max_failures=1)
    m1, m2, m3 = machine("m1"), machine("m2"), machine("m3")
    sched.add_machine(m1)
    sched.add_machine(m2)
    a, b = take(sched, m1), take(sched, m2)
    sched.test_finished(m1, a, FAIL)
    assert sched.machine_lost(m2) == [b]  # lost between tests: b is queued again
    sched.add_machine(m3)
    assert sched.next_test(m3) is Next.DONE and sched.finished
    # b had started: no "not run" record for it (what it left stands).
    assert names([j for j, _ in sched.not_run()]) == ["/c"]
