"""Run a composite action.yml the way the GitHub Actions runner does, on this machine.

What is emulated (the parts atex-ci's action relies on):

- inputs: defaults from action.yml, given values as strings, ``INPUT_<NAME>``
  in every step's environment, a missing required input is an error;
- ``${{ ... }}`` is substituted only where the runner does it (a step's
  ``if``, ``env``, ``with``, ``working-directory`` and the action's
  ``outputs``), never inside ``run:``: a script that needed it would see the
  literal text and fail, which is what the test wants to catch;
- ``if:`` with the status functions (``success()``, ``always()``,
  ``cancelled()``, ``failure()``; a condition without one means
  ``success() && (...)``), ``!``, ``==``/``!=`` (strings compared without
  case, as the runner does), ``&&``/``||`` returning an operand,
  parentheses, and the ``inputs``, ``steps``, ``env``, ``github`` and
  ``runner`` contexts;
- ``run:`` steps: the script in a file under RUNNER_TEMP, started as
  ``bash --noprofile --norc -eo pipefail FILE`` in the workspace, with the
  runner's variables (GITHUB_OUTPUT, GITHUB_ENV, GITHUB_PATH,
  GITHUB_STEP_SUMMARY, GITHUB_ACTION_PATH, GITHUB_WORKSPACE, RUNNER_TEMP,
  GITHUB_ACTIONS=true, CI=true); GITHUB_OUTPUT/GITHUB_ENV in both the
  ``name=value`` and the ``name<<DELIMITER`` forms;
- workflow commands on stdout and stderr, in the order the lines arrive:
  ``::add-mask::``, ``::error``/``::warning``/``::notice`` annotations and
  ``::stop-commands::TOKEN`` ... ``::TOKEN::`` (no command in between);
- ``uses:`` steps are recorded with their evaluated ``with:`` and do nothing
  (no network here), their outputs empty, unless a ``uses`` handler runs
  them (WorkflowRunner's artifacts and caches); ``continue-on-error: true``
  keeps a failed step from failing the job (its outcome stays failure);
- the ``github`` context and its GITHUB_* variables (``github``: job,
  workflow, run_id, run_attempt, repository, api_url, event_path...);
- cancellation as the runner does it: SIGINT to the step's entry process
  (bash; or to its process group, ``cancel_group``), SIGTERM after 7.5 s,
  after 2.5 s more the process tree is killed;
  then only steps whose condition holds with ``cancelled()`` true run;
- at the end of the job, every process the steps left behind (found by the
  RUNNER_TRACKING_ID in its environment, as the runner finds them) is killed.

Not emulated: the runner's log grouping, annotations' rendering, post steps,
step timeouts.

WorkflowRunner runs a whole workflow with these composite actions in it: its
jobs, their matrix and ``needs``, checkout and artifacts (see its docstring).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

#: What the runner waits after SIGINT before SIGTERM, and after SIGTERM before
#: killing the process tree (GitHub's "workflow cancellation" reference).
SIGINT_GRACE = 7.5
SIGTERM_GRACE = 2.5

#: How often a running step's cancel predicate is asked (it looks for files).
POLL = 0.05


class ExpressionError(ValueError):
    """An expression this evaluator does not understand."""


# ---------------------------------------------------------------- expressions

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op>==|!=|&&|\|\||<=|>=|[!()<>\[\].,])
    | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ExpressionError(f"cannot parse {text[pos:]!r} in {text!r}")
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def truthy(value: Any) -> bool:
    """The runner's truthiness: false, 0, '', null and NaN are false."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == value and value != 0
    if isinstance(value, str):
        return value != ""
    return True


def _loose_equal(left: Any, right: Any) -> bool:
    # Strings compare without case; mixed types compare as numbers.
    if isinstance(left, str) and isinstance(right, str):
        return left.casefold() == right.casefold()
    if type(left) is type(right):
        return bool(left == right)

    def number(value: Any) -> float:
        if value is None:
            return 0.0
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip() or 0)
            except ValueError:
                return float("nan")
        return float("nan")

    return number(left) == number(right)


class _Parser:
    """Recursive descent: or -> and -> equality -> unary -> postfix -> primary."""

    def __init__(self, text: str, contexts: dict[str, Any], status: dict[str, bool]) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0
        self.contexts = contexts
        self.status = status
        self.uses_status = False

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in {self.text!r}")
        self.pos += 1
        return token

    def parse(self) -> Any:
        value = self.parse_or()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()} in {self.text!r}")
        return value

    def parse_or(self) -> Any:
        value = self.parse_and()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.parse_and()
            value = value if truthy(value) else right
        return value

    def parse_and(self) -> Any:
        value = self.parse_equality()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.parse_equality()
            value = right if truthy(value) else value
        return value

    def parse_equality(self) -> Any:
        value = self.parse_unary()
        while self.peek() in (("op", "=="), ("op", "!=")):
            op = self.take()[1]
            right = self.parse_unary()
            equal = _loose_equal(value, right)
            value = equal if op == "==" else not equal
        return value

    def parse_unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not truthy(self.parse_unary())
        return self.parse_postfix()

    def parse_postfix(self) -> Any:
        value = self.parse_primary()
        while self.peek() in (("op", "."), ("op", "[")):
            if self.take()[1] == ".":
                key = self.take()[1]
            else:
                key = self.parse_or()
                self.take("]")
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def parse_primary(self) -> Any:
        kind, value = self.take()
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if kind == "number":
            return float(value) if "." in value else int(value)
        if value == "(":
            inner = self.parse_or()
            self.take(")")
            return inner
        if kind != "name":
            raise ExpressionError(f"unexpected {value!r} in {self.text!r}")
        if value in ("true", "false"):
            return value == "true"
        if value == "null":
            return None
        if self.peek() == ("op", "("):
            return self.call(value)
        if value not in self.contexts:
            raise ExpressionError(f"unknown context {value!r} in {self.text!r}")
        return self.contexts[value]

    def call(self, name: str) -> Any:
        self.take("(")
        args: list[Any] = []
        while self.peek() != ("op", ")"):
            args.append(self.parse_or())
            if self.peek() == ("op", ","):
                self.take()
        self.take(")")
        if name in ("success", "always", "cancelled", "failure"):
            self.uses_status = True
            return self.status[name]
        if name == "contains" and len(args) == 2:
            haystack, needle = args
            if isinstance(haystack, list):
                return any(_loose_equal(item, needle) for item in haystack)
            return str(needle).casefold() in str(haystack).casefold()
        raise ExpressionError(f"function {name}() is not emulated ({self.text!r})")


def evaluate(text: str, contexts: dict[str, Any], status: dict[str, bool] | None = None) -> Any:
    """The value of the expression ``text`` (without ``${{ }}``)."""
    return _Parser(text, contexts, status or _status("success")).parse()


def _status(job: str) -> dict[str, bool]:
    return {
        "success": job == "success",
        "failure": job == "failure",
        "cancelled": job == "cancelled",
        "always": True,
    }


def condition_holds(condition: Any, contexts: dict[str, Any], job: str) -> bool:
    """Whether a step with ``if: condition`` runs when the job is ``job``.

    ``job`` is success, failure or cancelled. Without a status function the
    runner reads the condition as ``success() && (condition)``.
    """
    if condition is None or condition == "":
        condition = "success()"
    if isinstance(condition, bool):
        return condition and job == "success"
    text = str(condition).strip()
    match = re.fullmatch(r"\$\{\{(.*)\}\}", text, re.DOTALL)
    if match:
        text = match.group(1)
    parser = _Parser(text, contexts, _status(job))
    value = truthy(parser.parse())
    if not parser.uses_status:
        return value and job == "success"
    return value


def _stringify(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def substitute(text: Any, contexts: dict[str, Any]) -> str:
    """``text`` with every ``${{ expr }}`` replaced by its value, as a string."""
    if not isinstance(text, str):
        return _stringify(text)
    return re.sub(
        r"\$\{\{(.*?)\}\}", lambda m: _stringify(evaluate(m.group(1), contexts)), text, flags=re.S
    )


# ---------------------------------------------------------------- file commands


def parse_file_command(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV contents: ``name=value`` and ``name<<EOF`` blocks."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body: list[str] = []
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"file command: no closing {delimiter!r} for {name!r}")
            i += 1
            values[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        else:
            raise ValueError(f"file command: invalid line {line!r}")
    return values


#: The workflow commands the runner acts on that this emulator records.
COMMANDS = ("add-mask", "error", "warning", "notice", "stop-commands")


def workflow_commands(lines: Iterable[str]) -> list[tuple[str, str]]:
    """The commands in a step's output lines, honouring ``::stop-commands::``.

    A command is a line that starts (after blanks) with ``::NAME`` followed
    by a space, ``::`` or the end; between ``::stop-commands::TOKEN`` and a
    line ``::TOKEN::`` nothing is a command.
    """
    found: list[tuple[str, str]] = []
    stopped: str | None = None
    for raw in lines:
        line = raw.rstrip("\r\n").lstrip()
        if stopped is not None:
            if line == f"::{stopped}::":
                stopped = None
            continue
        match = re.match(r"::([\w-]+)(?:\s[^:]*)?::(.*)$", line)
        if match is None or match.group(1) not in COMMANDS:
            continue
        name, value = match.group(1), match.group(2)
        if name == "stop-commands":
            stopped = value
        found.append((name, value))
    return found


# ---------------------------------------------------------------- the run


@dataclasses.dataclass
class StepRecord:
    """What happened to one step."""

    index: int
    id: str | None
    name: str
    outcome: str  # success | failure | cancelled | skipped
    exit_code: int | None = None
    uses: str | None = None
    with_: dict[str, str] = dataclasses.field(default_factory=dict)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    lines: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    commands: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    summary: str = ""


@dataclasses.dataclass
class ActionRun:
    """The result of running an action: the job's status, steps, outputs, log."""

    status: str  # success | failure | cancelled
    steps: list[StepRecord]
    outputs: dict[str, str]
    summary: str
    masks: list[str]
    env: dict[str, str]
    path: list[str]  # directories the steps added through GITHUB_PATH

    def step(self, step_id: str) -> StepRecord:
        """The record of the step with this ``id`` (KeyError if it has none)."""
        for record in self.steps:
            if record.id == step_id:
                return record
        raise KeyError(step_id)

    @property
    def log(self) -> str:
        """Everything the steps printed, lines in arrival order (unmasked)."""
        return "".join(line for record in self.steps for _, line in record.lines)

    @property
    def commands(self) -> list[tuple[str, str]]:
        """Every workflow command the runner acted on: (command, rest of the line)."""
        return [command for record in self.steps for command in record.commands]

    def ran(self) -> list[str]:
        """Ids (or names) of the steps that ran, in order."""
        return [r.id or r.name for r in self.steps if r.outcome != "skipped"]


#: Runs a ``uses:`` step inside a composite action (the workflow's artifacts
#: and caches): called with the reference and the evaluated ``with:``, returns
#: the outcome and the outputs.
UsesHandler = Callable[[str, dict[str, str]], tuple[str, dict[str, str]]]

#: The runner's GITHUB_* variables of the ``github`` context's keys.
GITHUB_VARIABLES = {
    "job": "GITHUB_JOB",
    "workflow": "GITHUB_WORKFLOW",
    "run_id": "GITHUB_RUN_ID",
    "run_attempt": "GITHUB_RUN_ATTEMPT",
    "repository": "GITHUB_REPOSITORY",
    "api_url": "GITHUB_API_URL",
    "event_name": "GITHUB_EVENT_NAME",
    "event_path": "GITHUB_EVENT_PATH",
    "ref_name": "GITHUB_REF_NAME",
    "head_ref": "GITHUB_HEAD_REF",
    "base_ref": "GITHUB_BASE_REF",
}


def github_env(github: dict[str, Any]) -> dict[str, str]:
    """The GITHUB_* environment variables the runner sets for ``github``'s values."""
    return {var: str(github[key]) for key, var in GITHUB_VARIABLES.items() if key in github}


#: Decides, while a step runs, that the job is cancelled now:
#: called with the step's id, returns True to cancel.
CancelWhen = Callable[[str | None], bool]


class ActionRunner:
    """Runs one composite action with the runner's environment.

    ``action_dir`` holds action.yml; ``workspace`` and ``temp`` are the
    GITHUB_WORKSPACE and RUNNER_TEMP directories (created if missing);
    ``env`` is the job's environment (the machine's PATH etc. are added);
    ``runner_os`` is what the runner says it is (RUNNER_OS, ``runner.os``).
    """

    def __init__(
        self,
        action_dir: Path,
        workspace: Path,
        temp: Path,
        env: dict[str, str] | None = None,
        cancel_group: bool = False,
        runner_os: str = "Linux",
        github: dict[str, Any] | None = None,
        uses: UsesHandler | None = None,
    ) -> None:
        self.action_dir = action_dir
        self.github = github or {}
        self.uses = uses
        self.runner_os = runner_os
        self.cancel_group = cancel_group
        self.workspace = workspace
        self.temp = temp
        yaml = YAML(typ="safe")
        self.action = yaml.load((action_dir / "action.yml").read_text())
        if self.action["runs"]["using"] != "composite":
            raise ValueError("only composite actions are emulated")
        base = {
            key: value
            for key, value in os.environ.items()
            if key in ("PATH", "HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "TMPDIR")
        }
        self.job_env = {**base, **(env or {})}
        self.tracking_id = f"atex-ci-emulator-{uuid.uuid4().hex}"
        self.orphans: list[int] = []

    def run(self, inputs: dict[str, str], cancel_when: CancelWhen | None = None) -> ActionRun:
        """Run every step; return what happened (``orphans``: processes killed at the end)."""
        try:
            return self._run(inputs, cancel_when)
        finally:
            self.orphans = kill_tracked(self.tracking_id)

    def _run(self, inputs: dict[str, str], cancel_when: CancelWhen | None) -> ActionRun:
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.temp.mkdir(parents=True, exist_ok=True)
        values = self._inputs(inputs)
        job_env = dict(self.job_env)
        github = {
            "token": "",
            "event_name": "pull_request",
            **self.github,
            "action_path": str(self.action_dir),
            "workspace": str(self.workspace),
        }
        runner = {"temp": str(self.temp), "os": self.runner_os, "arch": "X64"}
        steps_ctx: dict[str, Any] = {}
        records: list[StepRecord] = []
        masks: list[str] = []
        path_additions: list[str] = []
        job = "success"
        for index, step in enumerate(self.action["runs"]["steps"]):
            step_id = step.get("id")
            name = step.get("name") or step.get("uses") or f"step {index}"
            contexts = {
                "inputs": values,
                "steps": steps_ctx,
                "env": job_env,
                "github": github,
                "runner": runner,
            }
            if not condition_holds(step.get("if"), contexts, job):
                record = StepRecord(index, step_id, name, "skipped")
                records.append(record)
                if step_id:
                    steps_ctx[step_id] = {
                        "outputs": {},
                        "outcome": "skipped",
                        "conclusion": "skipped",
                    }
                continue
            step_env = {k: substitute(v, contexts) for k, v in (step.get("env") or {}).items()}
            if "uses" in step:
                record = StepRecord(
                    index,
                    step_id,
                    name,
                    "success",
                    uses=step["uses"],
                    with_={k: substitute(v, contexts) for k, v in (step.get("with") or {}).items()},
                )
                if self.uses is not None:
                    record.outcome, record.outputs = self.uses(record.uses or "", record.with_)
            else:
                record = self._run_script(
                    index,
                    step,
                    name,
                    contexts,
                    job_env,
                    step_env,
                    values,
                    path_additions,
                    cancel_when if job != "cancelled" else None,
                )
                masks.extend(value for name, value in record.commands if name == "add-mask")
            records.append(record)
            conclusion = record.outcome
            if conclusion == "failure" and step.get("continue-on-error") is True:
                conclusion = "success"
            if step_id:
                steps_ctx[step_id] = {
                    "outputs": record.outputs,
                    "outcome": record.outcome,
                    "conclusion": conclusion,
                }
            if conclusion == "cancelled":
                job = "cancelled"
            elif conclusion == "failure" and job == "success":
                job = "failure"
        contexts = {
            "inputs": values,
            "steps": steps_ctx,
            "env": job_env,
            "github": github,
            "runner": runner,
        }
        outputs = {
            name: substitute(spec.get("value", ""), contexts)
            for name, spec in (self.action.get("outputs") or {}).items()
        }
        return ActionRun(
            status=job,
            steps=records,
            outputs=outputs,
            summary="".join(r.summary for r in records),
            masks=masks,
            env=job_env,
            path=path_additions,
        )

    def _inputs(self, given: dict[str, str]) -> dict[str, str]:
        declared = self.action.get("inputs") or {}
        unknown = set(given) - set(declared)
        if unknown:
            raise ValueError(f"inputs not declared in action.yml: {sorted(unknown)}")
        values: dict[str, str] = {}
        contexts = {
            "github": {"token": "", **self.github, "workspace": str(self.workspace)},
            "runner": {"temp": str(self.temp)},
        }
        for name, spec in declared.items():
            spec = spec or {}
            if name in given:
                values[name] = str(given[name])
            elif "default" in spec:
                values[name] = substitute(spec["default"], contexts)
            elif spec.get("required"):
                raise ValueError(f"input {name!r} is required")
            else:
                values[name] = ""
        return values

    def _run_script(
        self,
        index: int,
        step: dict[str, Any],
        name: str,
        contexts: dict[str, Any],
        job_env: dict[str, str],
        step_env: dict[str, str],
        inputs: dict[str, str],
        path_additions: list[str],
        cancel_when: CancelWhen | None,
    ) -> StepRecord:
        shell = step.get("shell")
        if shell != "bash":
            raise ValueError(f"step {name!r}: only shell: bash is emulated (got {shell!r})")
        step_dir = Path(tempfile.mkdtemp(prefix=f"step{index}-", dir=self.temp))
        files = {
            "GITHUB_OUTPUT": step_dir / "output",
            "GITHUB_ENV": step_dir / "env",
            "GITHUB_PATH": step_dir / "path",
            "GITHUB_STEP_SUMMARY": step_dir / "summary",
        }
        for file in files.values():
            file.touch()
        script = step_dir / "script.sh"
        script.write_text(step["run"])
        env = dict(job_env)
        if path_additions:
            env["PATH"] = os.pathsep.join([*reversed(path_additions), env.get("PATH", "")])
        env.update({f"INPUT_{k.upper().replace(' ', '_')}": v for k, v in inputs.items()})
        env.update(
            {
                "GITHUB_ACTIONS": "true",
                "CI": "true",
                "GITHUB_ACTION_PATH": str(self.action_dir),
                "GITHUB_WORKSPACE": str(self.workspace),
                "RUNNER_TEMP": str(self.temp),
                "RUNNER_OS": self.runner_os,
                "RUNNER_ARCH": "X64",
                "RUNNER_TRACKING_ID": self.tracking_id,
                **github_env(self.github),
                **{k: str(v) for k, v in files.items()},
            }
        )
        env.update(step_env)
        cwd = self.workspace
        if step.get("working-directory"):
            cwd = self.workspace / substitute(step["working-directory"], contexts)
        process = subprocess.Popen(
            [
                shutil.which("bash") or "/bin/bash",
                "--noprofile",
                "--norc",
                "-eo",
                "pipefail",
                str(script),
            ],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        lines: list[tuple[str, str]] = []
        lock = threading.Lock()

        def read(stream: str, pipe: Any) -> None:
            for raw in iter(pipe.readline, b""):
                with lock:
                    lines.append((stream, raw.decode(errors="replace")))
            pipe.close()

        readers = [
            threading.Thread(target=read, args=("stdout", process.stdout)),
            threading.Thread(target=read, args=("stderr", process.stderr)),
        ]
        for reader in readers:
            reader.start()
        try:
            cancelled = self._wait(process, step.get("id"), cancel_when)
        finally:
            for reader in readers:
                reader.join()
        record = StepRecord(
            index,
            step.get("id"),
            name,
            "cancelled" if cancelled else "success" if process.returncode == 0 else "failure",
            exit_code=process.returncode,
            env=step_env,
            stdout="".join(line for stream, line in lines if stream == "stdout"),
            stderr="".join(line for stream, line in lines if stream == "stderr"),
            lines=lines,
            commands=workflow_commands(line for _, line in lines),
            summary=files["GITHUB_STEP_SUMMARY"].read_text(),
        )
        record.outputs = parse_file_command(files["GITHUB_OUTPUT"].read_text())
        job_env.update(parse_file_command(files["GITHUB_ENV"].read_text()))
        path_additions.extend(
            line for line in files["GITHUB_PATH"].read_text().splitlines() if line.strip()
        )
        return record

    def _wait(
        self, process: subprocess.Popen[bytes], step_id: str | None, cancel_when: CancelWhen | None
    ) -> bool:
        """Wait for the step; cancel it as the runner does once ``cancel_when`` says so."""
        if cancel_when is None:
            process.wait()
            return False
        while process.poll() is None:
            if cancel_when(step_id):
                cancel(process, group=self.cancel_group)
                return True
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=POLL)
        return False


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first found first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def cancel(process: subprocess.Popen[bytes], group: bool = False) -> None:
    """Cancel a running step: SIGINT, SIGTERM after 7.5 s, kill the tree 2.5 s later.

    GitHub's hosted runner signals the step's entry process; ``group`` sends
    the first signal to its whole process group instead, as a terminal's
    Ctrl-C or some self-hosted set-ups do.
    """
    if group:
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGINT)
    for sig, grace in ((signal.SIGTERM, SIGINT_GRACE), (signal.SIGKILL, SIGTERM_GRACE)):
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
        if sig == signal.SIGKILL:
            for pid in [*descendants(process.pid), process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        else:
            process.send_signal(sig)
    process.wait()


def kill_tracked(tracking_id: str) -> list[int]:
    """SIGKILL every process whose environment holds ``RUNNER_TRACKING_ID=tracking_id``."""
    needle = f"RUNNER_TRACKING_ID={tracking_id}".encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


# ---------------------------------------------------------------- workflows


@dataclasses.dataclass
class JobRun:
    """One job of a workflow run (one combination of its matrix)."""

    job: str
    matrix: dict[str, Any]
    status: str  # success | failure | skipped
    steps: list[StepRecord]
    actions: dict[str, ActionRun]  # by step id (or name): what a composite action did
    workspace: Path
    orphans: list[int] = dataclasses.field(default_factory=list)
    attempt: int = 1  # the run attempt that ran it (a kept job keeps its own)

    def step(self, step_id: str) -> StepRecord:
        for record in self.steps:
            if step_id in (record.id, record.name):
                return record
        raise KeyError(step_id)


@dataclasses.dataclass
class WorkflowRun:
    """The jobs of a workflow run, in the order they ran."""

    jobs: list[JobRun]
    artifacts: Path  # one directory per uploaded artifact
    attempt: int = 1

    def job(self, job: str) -> list[JobRun]:
        return [run for run in self.jobs if run.job == job]


def _copy_artifact(includes: list[Path], excludes: list[Path], dest: Path) -> int:
    """Copy ``includes`` (their common directory is the artifact's root) minus ``excludes``."""
    existing = [p for p in includes if p.exists()]
    if not existing:
        return 0
    root = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in existing]))
    copied = 0
    for path in existing:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if any(file == ex or ex in file.parents for ex in excludes):
                continue
            target = dest / file.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
            copied += 1
    return copied


class WorkflowRunner:
    """Runs a workflow's jobs on this machine, one after another in ``needs`` order.

    Emulated beyond what ActionRunner does for a composite action:

    - ``strategy.matrix`` of lists (every combination is a job), ``needs``,
      a job's ``if:`` (the status functions see whether its needs succeeded)
      and its outputs of steps; every job has its own workspace and RUNNER_TEMP;
    - ``run:`` steps as the Linux runner runs them without ``shell:``
      (``bash -e FILE``), with the job's and step's ``env:``;
    - ``uses:`` of a composite action: ``./PATH`` from the job's workspace (as
      the runner does, so a job without a checkout cannot use it), and
      ``OWNER/REPO[/PATH]@REF`` from ``actions`` (OWNER/REPO: a local
      directory, the downloaded action);
    - actions/checkout clones ``repository``; actions/upload-artifact and
      actions/download-artifact (``name`` or ``pattern``, each artifact in its
      own directory; ``run-id`` of another run given in ``other_runs``) keep
      artifacts in a directory, also when a composite action uses them;
      actions/cache/restore and actions/cache/save keep caches by key, each
      with the branch that saved it, found as GitHub finds them (exact key,
      then each prefix of ``restore-keys``, newest first, in the run's
      branch and then in the default branch); any other ``uses:`` is
      recorded and succeeds, with no outputs;
    - the ``github`` context (``github``: repository, ref_name, head_ref,
      event_name, event, api_url, token...) with ``run_id``, ``run_attempt``,
      ``job`` and ``workflow``, and its GITHUB_* variables; the event is
      written to a file for GITHUB_EVENT_PATH;
    - "Re-run failed jobs": ``run(previous=...)`` is the next attempt of the
      same run (same artifacts and caches); a job (matrix combination) that
      succeeded in ``previous`` and needs no re-run job is kept as it was,
      the others run again.

    Not emulated: ``services``, ``container``, ``continue-on-error`` of a
    workflow step, ``defaults``, timeouts, cancellation, ``fail-fast``.
    """

    def __init__(
        self,
        workflow: Path,
        repository: Path,
        actions: dict[str, Path],
        root: Path,
        env_for: Callable[[str], dict[str, str]] | None = None,
        github: dict[str, Any] | None = None,
        other_runs: dict[str, Path] | None = None,
    ) -> None:
        self.workflow = YAML(typ="safe").load(workflow.read_text())
        self.repository = repository
        self.actions = actions
        self.root = root
        self.env_for = env_for or (lambda job: {})
        self.artifacts = root / "artifacts"
        self.caches = root / "caches"
        self.other_runs = other_runs or {}
        self.github: dict[str, Any] = {
            "event_name": "pull_request",
            "run_id": str(abs(hash(str(root))) % 10**9 + 1),
            "repository": "owner/repo",
            "ref_name": "main",
            "event": {"repository": {"default_branch": "main"}},
            "workflow": self.workflow.get("name") or workflow.name,
            **(github or {}),
        }

    def run(self, previous: WorkflowRun | None = None) -> WorkflowRun:
        """Run the workflow: its first attempt, or re-run the failed jobs of ``previous``."""
        attempt = previous.attempt + 1 if previous else 1
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.caches.mkdir(parents=True, exist_ok=True)
        event = self.root / f"event-{attempt}.json"
        event.write_text(json.dumps(self.github["event"]))
        jobs: dict[str, Any] = self.workflow["jobs"]
        done: dict[str, list[JobRun]] = {}
        order: list[JobRun] = []
        rerun: set[str] = set()
        while len(done) < len(jobs):
            ready = [
                name
                for name, job in jobs.items()
                if name not in done and set(self._needs(job)) <= set(done)
            ]
            if not ready:
                raise ValueError(f"jobs wait on each other: {sorted(set(jobs) - set(done))}")
            for name in ready:
                kept = previous.job(name) if previous else []
                must = bool(set(self._needs(jobs[name])) & rerun)
                done[name] = []
                for index, matrix in enumerate(self._matrix(jobs[name])):
                    before = next((j for j in kept if j.matrix == matrix), None)
                    if before is not None and before.status == "success" and not must:
                        done[name].append(before)
                        continue
                    rerun.add(name)
                    github = {
                        **self.github,
                        "run_attempt": str(attempt),
                        "job": name,
                        "event_path": str(event),
                    }
                    done[name].append(self._run_job(name, jobs[name], matrix, index, done, github))
                order.extend(done[name])
        return WorkflowRun(order, self.artifacts, attempt)

    @staticmethod
    def _needs(job: dict[str, Any]) -> list[str]:
        needs = job.get("needs") or []
        return [needs] if isinstance(needs, str) else list(needs)

    @staticmethod
    def _matrix(job: dict[str, Any]) -> list[dict[str, Any]]:
        axes = (job.get("strategy") or {}).get("matrix") or {}
        combos: list[dict[str, Any]] = [{}]
        for key, values in axes.items():
            combos = [{**combo, key: value} for combo in combos for value in values]
        return combos

    def _run_job(
        self,
        name: str,
        job: dict[str, Any],
        matrix: dict[str, Any],
        index: int,
        done: dict[str, list[JobRun]],
        github: dict[str, Any],
    ) -> JobRun:
        attempt = github["run_attempt"]
        home = self.root / (f"{name}-{index}" if attempt == "1" else f"{name}-{index}-{attempt}")
        workspace, temp = home / "workspace", home / "temp"
        workspace.mkdir(parents=True)
        temp.mkdir()
        needs = {
            need: {
                "result": "success"
                if all(r.status == "success" for r in done[need])
                else "failure",
                "outputs": {},
            }
            for need in self._needs(job)
        }
        state = "success" if all(n["result"] == "success" for n in needs.values()) else "failure"
        base = {
            key: value
            for key, value in os.environ.items()
            if key in ("PATH", "HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "TMPDIR")
        }
        job_env = {**base, **(self.workflow.get("env") or {}), **(job.get("env") or {})}
        job_env.update(self.env_for(name))
        contexts: dict[str, Any] = {
            "matrix": matrix,
            "needs": needs,
            "steps": {},
            "env": job_env,
            "github": {**github, "workspace": str(workspace)},
            "runner": {"temp": str(temp), "os": "Linux", "arch": "X64"},
        }
        run = JobRun(name, matrix, "skipped", [], {}, workspace, attempt=int(attempt))
        if not condition_holds(job.get("if"), contexts, state):
            return run
        run.status = "success"
        for index_, step in enumerate(job["steps"]):
            record = self._run_step(index_, step, run, contexts, job_env, temp)
            run.steps.append(record)
            if record.id:
                contexts["steps"][record.id] = {
                    "outputs": record.outputs,
                    "outcome": record.outcome,
                    "conclusion": record.outcome,
                }
            if record.outcome == "failure":
                run.status = "failure"
        return run

    def _run_step(
        self,
        index: int,
        step: dict[str, Any],
        run: JobRun,
        contexts: dict[str, Any],
        job_env: dict[str, str],
        temp: Path,
    ) -> StepRecord:
        step_id = step.get("id")
        name = step.get("name") or step.get("uses") or f"step {index}"
        if not condition_holds(step.get("if"), contexts, run.status):
            return StepRecord(index, step_id, name, "skipped")
        step_env = {k: substitute(v, contexts) for k, v in (step.get("env") or {}).items()}
        github = contexts["github"]
        if "run" in step:
            env = {**job_env, **github_env(github), **step_env}
            return self._run_script(index, step_id, name, step, run, env, temp)
        with_ = {k: substitute(v, contexts) for k, v in (step.get("with") or {}).items()}
        record = StepRecord(index, step_id, name, "success", uses=step["uses"], with_=with_)
        ref = str(step["uses"])
        action_dir = self._action_dir(ref, run.workspace)

        def uses(ref: str, with_: dict[str, str]) -> tuple[str, dict[str, str]]:
            return self._uses(ref, with_, run.workspace, github)

        if action_dir is not None:
            runner = ActionRunner(
                action_dir,
                run.workspace,
                temp,
                env={**job_env, **step_env},
                github={k: v for k, v in github.items() if k != "workspace"},
                uses=uses,
            )
            action = runner.run(with_)
            run.actions[step_id or name] = action
            run.orphans.extend(runner.orphans)
            record.outcome = "success" if action.status == "success" else "failure"
            record.outputs = action.outputs
        elif ref.startswith("actions/checkout@"):
            subprocess.run(
                ["git", "clone", "--quiet", str(self.repository), str(run.workspace)],
                check=True,
                capture_output=True,
            )
        else:
            record.outcome, record.outputs = uses(ref, with_)
        return record

    def _uses(
        self, ref: str, with_: dict[str, str], workspace: Path, github: dict[str, Any]
    ) -> tuple[str, dict[str, str]]:
        """Artifacts and caches for a step of the workflow or of a composite action."""
        if ref.startswith("actions/upload-artifact@"):
            return self._upload(with_, workspace), {}
        if ref.startswith("actions/download-artifact@"):
            return self._download(with_, workspace), {}
        if ref.startswith("actions/cache/restore@"):
            return "success", self._cache_restore(with_, workspace, github)
        if ref.startswith("actions/cache/save@"):
            return self._cache_save(with_, workspace, github), {}
        return "success", {}

    def _action_dir(self, ref: str, workspace: Path) -> Path | None:
        if ref.startswith("./"):
            return workspace / ref
        path, _, _ = ref.partition("@")
        owner_repo = "/".join(path.split("/")[:2])
        if owner_repo not in self.actions:
            return None
        return self.actions[owner_repo].joinpath(*path.split("/")[2:])

    def _run_script(
        self,
        index: int,
        step_id: str | None,
        name: str,
        step: dict[str, Any],
        run: JobRun,
        env: dict[str, str],
        temp: Path,
    ) -> StepRecord:
        step_dir = Path(tempfile.mkdtemp(prefix=f"step{index}-", dir=temp))
        files = {key: step_dir / key.lower() for key in ("GITHUB_OUTPUT", "GITHUB_ENV")}
        files["GITHUB_STEP_SUMMARY"] = step_dir / "summary"
        for file in files.values():
            file.touch()
        script = step_dir / "script.sh"
        script.write_text(step["run"])
        env = {
            **env,
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "GITHUB_WORKSPACE": str(run.workspace),
            "RUNNER_TEMP": str(temp),
            "RUNNER_OS": "Linux",
            **{k: str(v) for k, v in files.items()},
        }
        proc = subprocess.run(
            [shutil.which("bash") or "/bin/bash", "-e", str(script)],
            cwd=run.workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        record = StepRecord(
            index,
            step_id,
            name,
            "success" if proc.returncode == 0 else "failure",
            exit_code=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
        )
        record.outputs = parse_file_command(files["GITHUB_OUTPUT"].read_text())
        return record

    def _upload(self, with_: dict[str, str], workspace: Path) -> str:
        lines = [line.strip() for line in with_["path"].splitlines() if line.strip()]
        includes = [workspace / line for line in lines if not line.startswith("!")]
        excludes = [workspace / line[1:] for line in lines if line.startswith("!")]
        dest = self.artifacts / with_["name"]
        if dest.exists():
            if with_.get("overwrite") != "true":
                return "failure"  # an artifact name is used once per workflow run
            shutil.rmtree(dest)
        copied = _copy_artifact(includes, [ex.resolve() for ex in excludes], dest)
        if copied == 0 and with_.get("if-no-files-found") == "error":
            return "failure"
        return "success"

    def _download(self, with_: dict[str, str], workspace: Path) -> str:
        dest = workspace / with_.get("path", ".")
        store = self.artifacts
        if with_.get("run-id"):
            if not with_.get("github-token") or with_["run-id"] not in self.other_runs:
                return "failure"  # another run's artifacts need its id and a token
            store = self.other_runs[with_["run-id"]]
        if with_.get("name"):
            source = store / with_["name"]
            if not source.is_dir():
                return "failure"
            shutil.copytree(source, dest, dirs_exist_ok=True)
            return "success"
        pattern = with_.get("pattern", "*")
        for artifact in sorted(store.iterdir()):
            if fnmatch.fnmatchcase(artifact.name, pattern):
                shutil.copytree(artifact, dest / artifact.name)
        return "success"

    # caches: one directory per entry, with meta.json (key, branch, path, when)

    def _cache_entries(self) -> list[tuple[dict[str, Any], Path]]:
        entries = []
        for entry in self.caches.iterdir():
            meta = json.loads((entry / "meta.json").read_text())
            entries.append((meta, entry / "content"))
        return sorted(entries, key=lambda item: -int(item[0]["when"]))  # newest first

    @staticmethod
    def _branch(github: dict[str, Any]) -> str:
        return str(github.get("head_ref") or github.get("ref_name") or "")

    @staticmethod
    def _cache_path(text: str, workspace: Path) -> tuple[str, Path]:
        """A cache's path as its version sees it (the same on every runner), and on disk."""
        path = Path(os.path.expanduser(text.strip()))
        path = path if path.is_absolute() else workspace / path
        return str(path).replace(str(workspace.parent / "temp"), "${RUNNER_TEMP}"), path

    def _cache_restore(
        self, with_: dict[str, str], workspace: Path, github: dict[str, Any]
    ) -> dict[str, str]:
        key = with_["key"]
        prefixes = [line.strip() for line in with_.get("restore-keys", "").splitlines()]
        version, target = self._cache_path(with_["path"], workspace)
        default = (github.get("event") or {}).get("repository", {}).get("default_branch", "")
        entries = self._cache_entries()
        for branch in dict.fromkeys([self._branch(github), default]):
            scoped = [(m, c) for m, c in entries if m["branch"] == branch and m["path"] == version]
            for wanted, exact in [(key, True), *((p, False) for p in prefixes if p)]:
                for meta, content in scoped:
                    if meta["key"] == wanted if exact else meta["key"].startswith(wanted):
                        shutil.copytree(content, target, dirs_exist_ok=True)
                        return {
                            "cache-hit": "true" if meta["key"] == key else "false",
                            "cache-matched-key": meta["key"],
                            "cache-primary-key": key,
                        }
        return {"cache-hit": "false", "cache-primary-key": key}

    def _cache_save(self, with_: dict[str, str], workspace: Path, github: dict[str, Any]) -> str:
        version, source = self._cache_path(with_["path"], workspace)
        if source.exists():  # else nothing to save: a warning
            self.save_cache(with_["key"], source, version, self._branch(github))
        return "success"

    def save_cache(self, key: str, source: Path, path: str, branch: str) -> None:
        """Keep ``source`` as the cache ``key`` of ``branch`` (``path``: as the action names it).

        An entry is never replaced: a second save of a key is a warning on the
        runner, and does nothing.
        """
        self.caches.mkdir(parents=True, exist_ok=True)
        if any(meta["key"] == key for meta, _ in self._cache_entries()):
            return
        entry = self.caches / uuid.uuid4().hex
        shutil.copytree(source, entry / "content")
        when = str(len(list(self.caches.iterdir())))
        meta = {"key": key, "branch": branch, "path": path, "when": when}
        (entry / "meta.json").write_text(json.dumps(meta))
