"""The documentation tells the truth: every `atex-ci` command shown in README.md
and docs/*.md runs for real, and docs/cli.md lists every command and option.

Commands are taken from the ```sh blocks (README's Setup section is CI's own
job: .ci/run runs it verbatim). Example names in them stand for real things
here: test1/test2.example.com for sshd test hosts, Testing Farm for the
stand-in (tests/tf_fake.py), /srv/ci/... for the leased-hosts example's pool.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from atex_ci.cli import cli

from .conftest import StartHosts
from .tf_fake import FakeTestingFarm
from .treeutil import DEMO, REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def repository_url() -> str:
    """pyproject.toml's Repository URL: the one spelling of where atex-ci lives."""
    with open(REPO / "pyproject.toml", "rb") as f:
        url: str = tomllib.load(f)["project"]["urls"]["Repository"]
    return url


def repository_slug() -> str:
    """OWNER/NAME of the repository, as `uses:` names the action."""
    return repository_url().removeprefix("https://github.com/")


def shell_blocks(path: Path) -> list[str]:
    """The ```sh blocks of a Markdown file, README's Setup section left out."""
    text = path.read_text()
    if path.name == "README.md":
        text = re.sub(r"^## Setup\n.*?(?=^## )", "", text, flags=re.S | re.M)
    return re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", text, flags=re.S | re.M)


def doc_commands(path: Path) -> list[str]:
    """Every command line of the file's shell blocks: continuations joined, comments dropped."""
    commands = []
    for block in shell_blocks(path):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def atex_commands(path: Path) -> list[str]:
    """The lines that run atex-ci (possibly after VAR=value or export lines)."""
    return [c for c in doc_commands(path) if "atex-ci " in c or c.startswith("export ")]


class Workspace:
    """A directory, an environment and the names the docs use, mapped to real things."""

    def __init__(self, root: Path, env: dict[str, str], names: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.names = names
        self.ran: list[tuple[str, int]] = []

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        for name, real in self.names.items():
            line = line.replace(name, real)
        words = shlex.split(line)
        env = dict(self.env)
        if words[0] == "export":
            for word in words[1:]:
                key, _, value = word.partition("=")
                self.env[key] = self._value(key, value)
            return subprocess.CompletedProcess(words, 0, "", "")
        while "=" in words[0] and not words[0].startswith("-"):
            key, _, value = words.pop(0).partition("=")
            env[key] = self._value(key, value)
        assert words[0] == "atex-ci", line
        if "PYTHONPATH" in env:
            env["PYTHONPATH"] = str(self.root / env["PYTHONPATH"])
        proc = subprocess.run(
            [sys.executable, "-m", "atex_ci", *words[1:]],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.ran.append((line, proc.returncode))
        return proc

    def _value(self, key: str, value: str) -> str:
        # "TOKEN=..." in the docs: the stand-in's token.
        return self.env.get(key, value) if value == "..." else value

    def check_all(self, path: Path, allowed: Callable[[str], set[int]]) -> None:
        for line in atex_commands(path):
            proc = self.run(line)
            assert proc.returncode in allowed(line), f"{path.name}: {line}\n{proc.stderr}"


def runnable_tree(root: Path) -> None:
    """The demo tree, with the plan names the docs use."""
    shutil.copytree(DEMO, root, dirs_exist_ok=True)
    (root / ".fmf").mkdir(exist_ok=True)
    (root / ".fmf" / "version").write_text("1\n")
    plan = (DEMO / "plans" / "main.fmf").read_text()
    (root / "plans" / "tier1.fmf").write_text(plan)


def exit_codes(line: str) -> set[int]:
    # The demo tree has a failing test on purpose: `run` exits 1.
    return {0, 1} if re.search(r"atex-ci\b.* run\b", line) else {0}


@pytest.fixture
def workspace(tmp_path: Path, ssh_hosts: StartHosts):
    hosts = ssh_hosts(3)
    root = tmp_path / "work"
    root.mkdir()
    runnable_tree(root)
    (root / "fleet.yaml").write_text(
        "".join(f"- host: {h.address}\n  key: {h.key_path}\n" for h in hosts[1:])
        + "- host: 127.0.0.1\n  port: 1\n"  # dead: --skip-unreachable skips it
    )
    srv = tmp_path / "srv"
    srv.mkdir()
    (srv / "pool.json").write_text(
        json.dumps({"hosts": [f"root@{h.address}" for h in hosts[:2]], "leases": {}})
    )
    shutil.copy(hosts[0].key_path, srv / "id_ed25519")
    os.chmod(srv / "id_ed25519", 0o600)
    shutil.copytree(REPO / "examples", root / "examples", dirs_exist_ok=True)
    with FakeTestingFarm(hosts) as fake:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TESTING_FARM_", "GITHUB_"))
        }
        env.update(fake.env(), PYTHONUNBUFFERED="1")
        names = {
            "root@test1.example.com": f"root@{hosts[0].address}",
            "root@test2.example.com:2222": f"root@{hosts[1].address}:22",
            "~/.ssh/ci": str(hosts[0].key_path),
            "/srv/ci/": f"{srv}/",
        }
        yield Workspace(root, env, names)


def test_readme_quick_start_runs(workspace):
    workspace.check_all(REPO / "README.md", exit_codes)
    assert len(workspace.ran) == len(atex_commands(REPO / "README.md"))
    assert (workspace.root / "report.html").is_file()
    machines = json.loads((workspace.root / "run" / "machines.json").read_text())["machines"]
    kinds = {m["provisioner"] for m in machines}
    assert kinds == {"local", "static", "testing-farm"}
    assert {m["state"] for m in machines} == {"released"}


def test_provisioner_docs_run(workspace):
    workspace.check_all(REPO / "docs" / "provisioners.md", exit_codes)
    assert len(workspace.ran) >= 6


def test_report_and_scheduling_docs_run(workspace):
    demo = workspace.run("atex-ci run -d RUN --fmf-root .")
    assert demo.returncode == 1, demo.stderr
    summary, outputs = workspace.root / "summary.txt", workspace.root / "outputs.txt"
    workspace.env.update(GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(outputs))
    workspace.check_all(REPO / "docs" / "reports.md", exit_codes)
    assert "total=" in outputs.read_text()
    collected = workspace.run("atex-ci collect -d all RUN")
    assert collected.returncode == 0, collected.stderr
    workspace.check_all(REPO / "docs" / "scheduling.md", exit_codes)
    assert any("estimate" in line for line, _ in workspace.ran)


def test_migrating_doc_runs(workspace):
    workspace.check_all(REPO / "docs" / "migrating.md", exit_codes)
    assert (workspace.root / "report.html").is_file()


def test_every_documented_command_is_run_by_a_test():
    # The docs whose commands the tests above run; a new one must join them.
    covered = {"README.md", "provisioners.md", "reports.md", "scheduling.md", "migrating.md"}
    with_commands = {p.name for p in DOCS if any("atex-ci " in c for c in atex_commands(p))}
    assert with_commands == covered
    # Other shell lines shown in the docs are not atex-ci commands (a test's
    # own line writing to the control channel, for instance).
    for path in DOCS:
        for line in doc_commands(path):
            if "atex-ci" not in line and not line.startswith("export "):
                assert "ATEX_TEST_CONTROL" in line or line.startswith("tmt-"), (path, line)


def test_cli_reference_lists_every_command_and_option():
    text = (REPO / "docs" / "cli.md").read_text()
    ctx = click.Context(cli, info_name="atex-ci")
    for name in cli.list_commands(ctx):
        section = re.search(rf"^## atex-ci {name}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        assert section, f"docs/cli.md has no section for {name}"
        command = cli.get_command(ctx, name)
        assert command is not None
        # get_params: reserve and run take the options every provisioner declares.
        sub = click.Context(command, parent=ctx)
        for param in command.get_params(sub):
            if isinstance(param, click.Option) and param is not command.get_help_option(sub):
                for opt in param.opts + param.secondary_opts:
                    assert f"`{opt}`" in section.group(1), f"{name} {opt} is not in docs/cli.md"
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |", "| 143 |"):
        assert code in text


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_work_on_pypi():
    """PyPI shows README.md away from the repository: every link is absolute, and a link
    into the repository names the main branch's copy of a file it has (and its heading)."""
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, re.M)
    links += re.findall(r"""(?:href|src)=["']([^"']+)""", text)
    assert len(links) >= 20
    ours = repository_url() + "/"
    checked = 0
    for link in links:
        assert link.startswith("https://"), (
            f"README.md links to {link!r}: PyPI needs an absolute URL"
        )
        if not link.startswith(ours):
            continue
        where = re.fullmatch(r"(?:blob|tree)/main/([^#]+)(?:#(.+))?", link.removeprefix(ours))
        assert where, f"{link}: expected {ours}blob/main/PATH"
        target = REPO / where.group(1)
        assert target.exists(), f"{link}: the repository has no {where.group(1)}"
        if where.group(2):
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            assert where.group(2) in {github_anchor(h) for h in headings}, link
        checked += 1
    assert checked >= 20


def test_changelog_has_the_release_notes_of_the_version():
    """.ci/release_notes.py finds a version's section (the GitHub release's notes)."""
    versions = re.findall(r"^## (\d+\.\d+\.\d+\S*)", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert versions, "CHANGELOG.md has no version section"
    script = REPO / ".ci" / "release_notes.py"
    notes = subprocess.run(
        [sys.executable, str(script), versions[0]], capture_output=True, text=True, check=True
    ).stdout
    assert notes.strip() and not notes.startswith("## ")
    missing = subprocess.run(
        [sys.executable, str(script), "999.0.0"], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert "CHANGELOG.md has no section '## 999.0.0'" in missing.stderr


def test_version_option_reports_the_installed_version():
    from importlib.metadata import version

    proc = subprocess.run(
        [sys.executable, "-m", "atex_ci", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout == f"atex-ci, version {version('atex-ci')}\n"


def test_the_runner_from_the_parts_in_the_docs_is_the_example_the_tests_run():
    # tests/test_examples.py runs examples/kit_runner.py; the docs show it whole.
    text = (REPO / "docs" / "python-api.md").read_text()
    shown = re.search(r"<!-- examples/kit_runner.py -->\n```python\n(.*?)```", text, re.S)
    assert shown is not None
    assert shown.group(1) == (REPO / "examples" / "kit_runner.py").read_text()
