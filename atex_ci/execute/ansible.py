"""``how: ansible`` prepare and finish phases: ``ansible-playbook`` run on the
controller against one machine.

The playbook reaches an SSH machine with the run's private key and verifies the
host key recorded at reservation (a known_hosts file written for the call, never
the user's own); a local slot is this host, so the playbook runs with the local
connection. ansible-core is an optional extra (``pip install 'atex-ci[ansible]'``);
without it a plan that needs it fails with a one-line error saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from ..environ_secrets import SECRETS
from ..model import Machine

#: Bytes of ansible-playbook's output kept for the error message; the rest of a
#: long run's output is not needed to say what failed.
OUTPUT_TAIL = 64 * 1024
INSTALL_HINT = "install ansible-core on the controller: pip install 'atex-ci[ansible]'"


def ansible_playbook() -> str | None:
    """The ansible-playbook command: next to our interpreter (same venv), else on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("ansible-playbook")


def _known_hosts_line(machine: Machine) -> str:
    host = machine.host if machine.port == 22 else f"[{machine.host}]:{machine.port}"
    return f"{host} {machine.host_key}\n"


def playbook_command(
    machine: Machine, key_root: Path, playbook: str, extra_args: str, known_hosts: Path
) -> list[str]:
    """The ansible-playbook command line for one playbook on ``machine``."""
    command = [ansible_playbook() or "ansible-playbook"]
    if machine.is_local:
        # A local slot is this host: run the modules with our own interpreter,
        # which certainly works, rather than whatever ansible's discovery finds.
        command += ["-i", "localhost,", "-c", "local"]
        command += ["-e", f"ansible_python_interpreter={sys.executable}"]
    else:
        command += ["-i", f"{machine.host},", "-u", machine.user]
        command += ["-e", f"ansible_port={machine.port}"]
        if machine.key:
            key = Path(machine.key)
            command += ["--private-key", str(key if key.is_absolute() else key_root / key)]
        command += [
            "--ssh-common-args",
            f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes",
        ]
    return [*command, *shlex.split(extra_args), playbook]


async def run_playbooks(
    machine: Machine, key_root: Path, playbooks: list[str], extra_args: str, timeout: float
) -> tuple[int, str]:
    """Run each playbook in turn; (exit code of the first failure or 0, output tail).

    Raises FileNotFoundError (with INSTALL_HINT) when ansible-playbook is missing.
    """
    if ansible_playbook() is None:
        raise FileNotFoundError(f"'how: ansible' needs ansible-playbook; {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="atex-ci-ansible-") as tmp:
        known_hosts = Path(tmp) / "known_hosts"
        if not machine.is_local:
            if not machine.host_key:
                return 1, f"no recorded host key for {machine.id}; reserve it again"
            known_hosts.write_text(_known_hosts_line(machine))
        env = {
            # The plan's playbooks never see a secret run may hold (the CLI
            # has taken them out already; the Python API may not have).
            **{k: v for k, v in os.environ.items() if k not in SECRETS},
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_NOCOLOR": "1",
            # ansible's own files stay in the call's directory, not the user's home.
            "ANSIBLE_LOCAL_TEMP": str(Path(tmp) / "local"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(Path(tmp) / "cp"),
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
        }
        for playbook in playbooks:
            command = playbook_command(machine, key_root, playbook, extra_args, known_hosts)
            rc, output = await _run(command, env, Path(playbook).parent, timeout)
            if rc != 0:
                return rc, output
    return 0, ""


async def _run(
    command: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    tail = bytearray()
    try:
        async with asyncio.timeout(timeout):
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                tail += chunk
                del tail[:-OUTPUT_TAIL]
            rc = await proc.wait()
    except TimeoutError:
        rc = 124
        tail += f"\nansible-playbook did not end in {timeout:g}s".encode()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
    return rc, tail.decode(errors="replace")
