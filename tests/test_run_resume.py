"""--resume runs again what never got a final result: interrupted tests, and
tests recorded "not run" because no machine was left (with new machines now)."""

from __future__ import annotations

from .treeutil import atex, make_tree, own_results, reserve_hosts, results


def test_resume_runs_tests_that_had_no_machine(tmp_path, ssh_host):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}, "b": {"test": "true"}})
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    ssh_host.kill()  # lost before the run: every test is "not run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 3, proc.stderr
    own = own_results(run)
    assert {r["status"] for r in own.values()} == {"error"}
    assert all("no usable machine left" in r["note"] for r in own.values())
    # With a new machine, --resume runs them; nothing else is run twice.
    assert atex("reserve", "-d", str(run), "--local", "1").returncode == 0
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--resume")
    assert proc.returncode == 0, proc.stderr
    own = own_results(run)
    assert {(n, r["status"], r["attempt"]) for n, r in own.items()} == {
        ("/tests/a", "pass", 2),
        ("/tests/b", "pass", 2),
    }
    # A third --resume has nothing left to do.
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert len(results(run)) == 4
