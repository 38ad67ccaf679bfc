"""What a test (or a plan's script) finds in its environment on the machine,
and the shell command that exports it.

Policy only: the values come from the test, the plan and the work directory's
layout; nothing here runs anything. The order of the layers is tmt's: the
plan's ``environment``, then the test's, then ``run --secret-env``'s
secrets, then the variables tmt and atex-ci set, which a test's own keys can
never override.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from .. import masking
from ..model import Plan, Test
from ..pathnames import flat_component
from ..report.text import display_name
from .frameworks import Framework
from .reaper import OWNER_VARIABLE, phase_owner

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def export(env: Mapping[str, str]) -> str:
    """A bash ``export`` of every variable, values quoted."""
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def invalid_names(env: Mapping[str, str]) -> list[str]:
    """Names a shell cannot export (the caller decides what that means)."""
    return [key for key in env if not _ENV_NAME.fullmatch(key)]


# A lone UTF-16 surrogate: what a JSON or YAML "\ud83d" escape (half of an
# emoji's pair) leaves in a name. No byte string on the machine can hold it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def unencodable(what: str, text: str) -> str | None:
    """Why ``text`` cannot reach the machine (a command line, the environment,
    a file name: all UTF-8 bytes there), or None when it can."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (
        f"{what} '{display_name(text)}' cannot reach the machine: U+{ord(found.group()):04X} "
        "is a lone UTF-16 surrogate (half of an escaped pair, e.g. an emoji's), not "
        "encodable as UTF-8"
    )


def check_encodable(test: Test, plan: Plan, env: Mapping[str, str]) -> None:
    """Raise ValueError naming the first name or value that cannot reach the
    machine: the test's and the plan's names first, then every variable."""
    checks = [("the test's name", test.name), ("the plan's name", plan.name)]
    for key, value in env.items():
        checks += [("an environment variable name", key), (f"variable {key}", value)]
    for what, text in checks:
        why = unencodable(what, text)
        if why is not None:
            raise ValueError(why)


#: tmt's name of the TMT_PLAN_SOURCE_SCRIPT file in TMT_PLAN_DATA.
PLAN_SOURCE_SCRIPT = "plan-source-script.sh"

#: What a test's command or a prepare/finish script starts with: the plan's
#: source script, in the same shell (functions and variables it defines are
#: the script's), as tmt does.
SOURCE_PLAN_SCRIPT = '[ -s "$TMT_PLAN_SOURCE_SCRIPT" ] && . "$TMT_PLAN_SOURCE_SCRIPT"\n'


class WorkDir:
    """The layout of one run's work directory on one machine (``base``)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        #: The uploaded fmf tree (TMT_TREE).
        self.tree = f"{self.base}/tree"
        #: The tmt shims, first on a test's PATH.
        self.bin_dir = f"{self.base}/remote/bin"
        #: The wrapper a test's command sources.
        self.wrapper = f"{self.base}/remote/wrapper.sh"

    def plan_dir(self, plan: str) -> str:
        return f"{self.base}/plans/{flat_component(plan)}"

    def plan_tree(self, plan: Plan) -> str:
        """The plan's tree on the machine: the uploaded tree, or the imported
        plan's repository inside it."""
        return f"{self.tree}/{plan.tree_path}" if plan.tree_path else self.tree

    def plan_environment(self, plan: Plan) -> dict[str, str]:
        """tmt's plan variables, and the owner of a plan's scripts (reaper.py)."""
        plan_dir = self.plan_dir(plan.name)
        return {
            "TMT_TREE": self.plan_tree(plan),
            "TMT_PLAN_DATA": f"{plan_dir}/data",
            "TMT_PLAN_ENVIRONMENT_FILE": f"{plan_dir}/environment",
            # Sourced before each test and each prepare/finish script, as tmt does.
            "TMT_PLAN_SOURCE_SCRIPT": f"{plan_dir}/data/{PLAN_SOURCE_SCRIPT}",
            OWNER_VARIABLE: phase_owner(self.base),
        }


def build_test_environment(
    work: WorkDir,
    test: Test,
    plan: Plan,
    *,
    framework: Framework,
    test_dir: str,
    run_id: str,
    owner: str,
    reboot_count: int,
    local_slot: bool,
) -> dict[str, str]:
    """Every variable the wrapper and the test get (``test_dir`` is the test's
    scratch directory on the machine). Raises ValueError naming a variable of
    the plan or the test that cannot be exported, or a name or value that
    cannot be encoded for the machine (``check_encodable``)."""
    env: dict[str, str] = {}
    env.update(plan.environment)
    env.update(test.environment)
    bad = invalid_names(env)
    if bad:
        raise ValueError(f"invalid environment variable name {bad[0]!r}")
    env.update(masking.secret_environment())  # run --secret-env: above the fmf layers
    env.update(work.plan_environment(plan))
    env.update(
        {
            "TMT_TEST_NAME": test.name,
            "TMT_TEST_DATA": f"{test_dir}/data",
            "TMT_TEST_METADATA": f"{test_dir}/metadata.yaml",
            "TMT_TEST_INVOCATION_PATH": test_dir,
            "TMT_TEST_ITERATION_ID": f"{run_id}-{test.serial_number}",
            "TMT_REBOOT_COUNT": str(reboot_count),
            # The restraint/beaker spellings of the same count.
            "REBOOTCOUNT": str(reboot_count),
            "RSTRNT_REBOOTCOUNT": str(reboot_count),
            "TMT_TEST_RESTART_COUNT": str(reboot_count),
            "TMT_TEST_SERIAL_NUMBER": str(test.serial_number),
            "TMT_RESTRAINT_COMPATIBLE": "0",
            "ATEX_TEST_COMMAND": SOURCE_PLAN_SCRIPT + framework.command(test),
            "ATEX_TEST_CWD": f"{work.tree}/{test.path.strip('/')}".rstrip("/"),
            "ATEX_TEST_DIR": test_dir,
            "ATEX_TEST_TTY": "1" if test.tty else "0",
            "ATEX_LOCAL_SLOT": "1" if local_slot else "0",
            "ATEX_TEST_FRESH": "1" if reboot_count == 0 else "0",
            OWNER_VARIABLE: owner,
        }
    )
    env.update(framework.environment(test, data_dir=f"{test_dir}/data", bin_dir=work.bin_dir))
    if test.library_dirs:  # where rlImport finds the test's fetched libraries
        env["BEAKERLIB_LIBRARY_PATH"] = ":".join(f"{work.tree}/{d}" for d in test.library_dirs)
    carried = [key for key, value in env.items() if "\0" in value]
    if carried:
        # No command line or environment can carry a NUL (C strings end there).
        raise ValueError(f"{carried[0]} holds a NUL character, which no command can carry")
    check_encodable(test, plan, env)
    return env


def wrapper_command(work: WorkDir, env: Mapping[str, str]) -> str:
    """The command that starts the wrapper with ``env`` (shims first on PATH)."""
    return (
        f'{export(env)}; export PATH={shlex.quote(work.bin_dir)}:"$PATH"; '
        f"source {shlex.quote(work.wrapper)}"
    )


__all__ = [
    "WorkDir",
    "build_test_environment",
    "check_encodable",
    "export",
    "invalid_names",
    "unencodable",
    "wrapper_command",
]
