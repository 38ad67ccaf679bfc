"""Shared pytest fixtures.

Test hosts (see tests/hosts.py):
- ``ssh_hosts``: a factory; ``hosts = ssh_hosts(4)`` starts four hosts and
  returns them (``SSHHost`` objects). Call it more than once if needed.
- ``ssh_host``: one started host.
Every host is stopped at teardown, also when the test fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.hosts import HostPool, SSHHost, missing_requirements

StartHosts = Callable[[int], list[SSHHost]]


@pytest.fixture
def ssh_hosts() -> Iterator[StartHosts]:
    """Factory that starts N real sshd test hosts; all are stopped at teardown."""
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    pool = HostPool()
    try:
        yield pool.start
    finally:
        pool.stop_all()


@pytest.fixture
def ssh_host(ssh_hosts: StartHosts) -> SSHHost:
    """One started real sshd test host."""
    return ssh_hosts(1)[0]
