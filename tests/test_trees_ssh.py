"""Trees as people write them, run on real sshd hosts through the real CLI:
beakerlib libraries from (local) git repositories found by rlImport, a remote
discover tree, an imported plan, shell discovery, execute script, a test the
plan selects twice, and the copr and ansible prepare kinds.

The hosts have no beakerlib; the tree ships ``rlimport.sh``, a stand-in that
looks libraries up the way beakerlib's rlImport does: ``<root>/libs/<repo>/<name>/lib.sh``
and ``<root>/<repo>/<name>/lib.sh`` for each root in ``BEAKERLIB_LIBRARY_PATH``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atex_ci.rundir import RunDir

from .treeutil import atex, git_redirect_env, git_repo, reserve_hosts, results

RLIMPORT = """\
rlImport() {
    local component=${1%%/*} library=/${1#*/} root candidate
    local IFS=:
    for root in $BEAKERLIB_LIBRARY_PATH; do
        for candidate in "$root/libs/$component$library/lib.sh" "$root/$component$library/lib.sh"
        do
            if [ -f "$candidate" ]; then . "$candidate"; return 0; fi
        done
    done
    echo "rlImport: $1 not found in $BEAKERLIB_LIBRARY_PATH" >&2
    return 1
}
"""

GREET = {
    ".fmf/version": "1\n",
    "main.fmf": (
        "/hello:\n    require: [bash]\n/needy:\n    require: [no-such-package-from-a-library]\n"
    ),
    "hello/lib.sh": "greet() { echo 'hello from lib'; }\n",
    "needy/lib.sh": "true\n",
}

REMOTE = {
    ".fmf/version": "1\n",
    "marker-in-remote": "yes\n",
    "main.fmf": """
/plans/theirs:
    discover:
        how: fmf
    prepare:
        how: shell
        script: test -f marker-in-remote
    environment:
        THEIRS: "1"
    execute:
        how: tmt
/tests:
    /where:
        test: test -f marker-in-remote
    /env:
        test: test "$THEIRS" = 1 && test "$OURS" = 2 && test -f "$TMT_TREE/marker-in-remote"
""",
}

PLANS = """
/libs:
    discover:
        how: fmf
        test: /tests/lib
/remote:
    discover:
        how: fmf
        url: https://example.test/remote
        test: /tests/where
/imported:
    plan:
        import:
            url: https://example.test/remote
            name: /plans/theirs
    environment:
        OURS: "2"
/shell:
    discover:
        how: shell
        tests:
          - name: /in-plan/one
            test: test -f rlimport.sh
          - name: /in-plan/two
            test: test -f rlimport.sh && test "$TMT_TEST_NAME" = /in-plan/two
/script:
    execute:
        how: tmt
        script:
          - test -f rlimport.sh
          - test "$TMT_TEST_NAME" = /script-01
/twice:
    discover:
        how: fmf
        test: [/tests/twice, /tests/twi]
"""

TESTS = """
/lib/import:
    test: . "$TMT_TREE/rlimport.sh" && rlImport greet/hello && greet | grep -x 'hello from lib'
    require: [{url: "https://example.test/greet", name: /hello}]
/lib/needs-package:
    test: "true"
    require: [{url: "https://example.test/greet", name: /needy}]
/twice:
    test: echo "serial $TMT_TEST_SERIAL_NUMBER"
"""


@pytest.fixture
def offline_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repos = tmp_path / "repos"
    for key, value in git_redirect_env("https://example.test/", repos).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ATEX_CI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "file")  # nothing here may reach the network
    return repos


def write_tree(root: Path, files: dict[str, str]) -> Path:
    files = {".fmf/version": "1\n", **files}
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def test_libraries_remote_trees_shell_and_script_on_hosts(tmp_path, ssh_hosts, offline_git):
    git_repo(offline_git / "greet", GREET)
    git_repo(offline_git / "remote", REMOTE)
    tree = write_tree(
        tmp_path / "tree",
        {
            # every plan executes with tmt unless it says otherwise
            "plans/main.fmf": "execute:\n    how: tmt\n" + PLANS,
            "tests/main.fmf": TESTS,
            "rlimport.sh": RLIMPORT,
        },
    )
    run = tmp_path / "run"
    reserve_hosts(run, ssh_hosts(2))
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--keep-machines")
    assert proc.returncode == 1, proc.stderr  # one test's library needs a missing package
    own = [(r["plan"], r["test"], r["status"]) for r in results(run) if r["name"] is None]
    assert sorted(own) == [
        ("/plans/imported", "/tests/env", "pass"),
        ("/plans/imported", "/tests/where", "pass"),
        ("/plans/libs", "/tests/lib/import", "pass"),
        ("/plans/libs", "/tests/lib/needs-package", "error"),
        ("/plans/remote", "/tests/where", "pass"),
        ("/plans/script", "/script-00", "pass"),
        ("/plans/script", "/script-01", "pass"),
        ("/plans/shell", "/in-plan/one", "pass"),
        ("/plans/shell", "/in-plan/two", "pass"),
        ("/plans/twice", "/tests/twice", "pass"),
        ("/plans/twice", "/tests/twice", "pass"),
    ], proc.stderr
    by_test = {(r["plan"], r["test"]): r for r in results(run) if r["name"] is None}
    # The library's own requirement went to the package manager with the test's.
    note = by_test[("/plans/libs", "/tests/lib/needs-package")]["note"]
    assert "installing no-such-package-from-a-library failed" in note
    assert "library(" not in (run / "results.jsonl").read_text()

    # The test selected twice ran twice: two instances, each attempt 1, own files.
    twice = [r for r in results(run) if r["test"] == "/tests/twice" and r["name"] is None]
    assert sorted((r["serial_number"], r["attempt"]) for r in twice) == [(1, 1), (2, 1)]
    for result in twice:
        output = run / "artifacts" / result["files"][0]
        assert f"/instance-{result['serial_number']}/1/" in str(output)
        assert output.read_text().strip() == f"serial {result['serial_number']}"
    from atex_ci.report.summary import final_results

    final = final_results(RunDir.open(run).read_results())
    assert sum(r.test == "/tests/twice" and r.name is None for r in final) == 2

    # --resume knows both instances are done.
    lines = len(results(run))
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--resume")
    assert proc.returncode == 1, proc.stderr
    assert len(results(run)) == lines
    assert atex("release", "-d", str(run)).returncode == 0


PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: leave a mark
      ansible.builtin.copy:
        dest: /var/tmp/ansible-was-here
        content: "{{ inventory_hostname }}\\n"
"""


def test_ansible_then_copr_prepare_on_a_host(tmp_path, ssh_host):
    tree = write_tree(
        tmp_path / "tree",
        {
            "setup/site.yml": PLAYBOOK,
            "plans.fmf": """
discover:
    how: fmf
execute:
    how: tmt
/ansible:
    prepare:
        how: ansible
        playbook: setup/site.yml
/copr:
    prepare:
        how: install
        copr: [someone/something]
        package: [bash]
""",
            "t.fmf": f"test: grep -x {ssh_host.address} /var/tmp/ansible-was-here\n",
        },
    )
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    proc = atex(
        "run",
        "-d",
        str(run),
        "--fmf-root",
        str(tree),
        "--plan",
        "/plans/ansible",
        "--keep-machines",
    )
    assert proc.returncode == 0, proc.stderr
    # The same run goes on with another plan's tests (--resume: one run, not two).
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--plan", "/plans/copr", "--resume")
    assert proc.returncode == 3, proc.stderr
    copr = [r for r in results(run) if r["plan"] == "/plans/copr"]
    machine = json.loads((run / "machines.json").read_text())["machines"][0]["id"]
    assert copr[0]["status"] == "error"
    assert copr[0]["note"].endswith(f"'copr' needs dnf, and {machine} has none")
    assert atex("release", "-d", str(run)).returncode == 0
