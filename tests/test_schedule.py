"""The pure scheduling policy."""

from __future__ import annotations

from atex_ci.model import Test
from atex_ci.schedule import MachineAction, Scheduler


def _tests(*names: str, plan: str = "/p") -> list[Test]:
    return [Test(name=n, plan=plan, test="true", path="") for n in names]


def test_free_machine_takes_next_test_in_discovery_order():
    sched = Scheduler(_tests("/a", "/b", "/c"))
    sched.add_machine("m1")
    sched.add_machine("m2")
    assert sched.next_test("m1").name == "/a"
    assert sched.next_test("m2").name == "/b"
    # m2 is done first and takes /c: nothing was pre-assigned to m1.
    assert sched.test_finished("m2", _tests("/b")[0]) is MachineAction.KEEP
    assert sched.next_test("m2").name == "/c"
    assert sched.next_test("m1") is None
    assert not sched.has_pending()


def test_broken_machine_is_discarded_and_gets_no_more_tests():
    sched = Scheduler(_tests("/a", "/b"))
    sched.add_machine("m1")
    test = sched.next_test("m1")
    assert sched.test_finished("m1", test, machine_ok=False) is MachineAction.DISCARD
    assert sched.next_test("m1") is None
    assert [t.name for t in sched.pending()] == ["/b"]


def test_abort_drops_the_rest_of_the_plan_only():
    tests = _tests("/a", "/b", plan="/p1") + _tests("/c", plan="/p2")
    sched = Scheduler(tests)
    sched.add_machine("m")
    sched.next_test("m")
    assert [t.name for t in sched.abort_plan("/p1")] == ["/b"]
    assert [t.name for t in sched.pending()] == ["/c"]


def test_custom_order_by_subclass():
    class Reverse(Scheduler):
        def order(self, tests):
            return list(reversed(tests))

    sched = Reverse(_tests("/a", "/b"))
    sched.add_machine("m")
    assert sched.next_test("m").name == "/b"


def test_unknown_machine_gets_nothing():
    sched = Scheduler(_tests("/a"))
    assert sched.next_test("ghost") is None
    assert sched.has_pending()
