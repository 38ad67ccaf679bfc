"""Per-command cost of SSHTransport.run() against a bare asyncssh loop, same run.

Starts real sshd test hosts (tests/hosts.py; needs root), then on each host
runs COMMANDS trivial commands one after the other (hosts in parallel), once
with asyncssh's own ``conn.run('true')`` and once with ``SSHTransport.run``.
Prints wall time and this process's CPU time per command, and the ratios;
absolute numbers vary between machines, ratios much less.

    python -m benchmarks.ssh_baseline [--hosts 4] [--commands 100]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncssh

from atex_ci.transport.ssh import SSHTransport
from tests.hosts import HostPool, SSHHost, missing_requirements


async def bare_asyncssh(host: SSHHost, commands: int) -> None:
    async with asyncssh.connect(
        host.address,
        host.port,
        username=host.user,
        client_keys=[str(host.key_path)],
        known_hosts=None,
        config=None,
    ) as conn:
        for _ in range(commands):
            await conn.run("true")


async def transport(host: SSHHost, commands: int) -> None:
    async with SSHTransport(
        host.address, host.port, host.user, host.key_path, known_host_key=host.host_key
    ) as ssh:
        for _ in range(commands):
            await ssh.run("true")


async def measure(
    loop: Callable[[SSHHost, int], Awaitable[None]], hosts: list[SSHHost], commands: int
) -> tuple[float, float]:
    """(wall, CPU) seconds per command for ``loop`` on every host at once."""
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(loop(host, commands) for host in hosts))
    total = commands * len(hosts)
    return (time.perf_counter() - wall) / total, (time.process_time() - cpu) / total


async def main(hosts: list[SSHHost], commands: int) -> None:
    await measure(transport, hosts, 10)  # warm-up: imports, key loading, caches
    base_wall, base_cpu = await measure(bare_asyncssh, hosts, commands)
    ours_wall, ours_cpu = await measure(transport, hosts, commands)
    print(f"{len(hosts)} hosts x {commands} commands")
    print(f"bare asyncssh conn.run: {base_wall * 1e3:6.2f} ms wall, {base_cpu * 1e3:5.2f} ms CPU")
    print(f"SSHTransport.run:       {ours_wall * 1e3:6.2f} ms wall, {ours_cpu * 1e3:5.2f} ms CPU")
    print(f"ratio: wall {ours_wall / base_wall:.2f}, CPU {ours_cpu / base_cpu:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--commands", type=int, default=100)
    args = parser.parse_args()
    reason = missing_requirements()
    if reason is not None:
        raise SystemExit(f"ssh_baseline: {reason}")
    pool = HostPool()
    try:
        asyncio.run(main(pool.start(args.hosts), args.commands))
    finally:
        pool.stop_all()
