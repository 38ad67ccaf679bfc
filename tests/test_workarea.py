"""The one check of ids and work directories read from a run directory (atex_ci/workarea.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atex_ci.errors import ConfigError
from atex_ci.model import Machine
from atex_ci.workarea import (
    area_root,
    check_id,
    check_machine,
    is_valid_id,
    remote_root,
    remote_work_dir,
    safe_id,
)


@pytest.mark.parametrize(
    "value",
    ["../escape", "..", ".", "", "a/b", "-rf", ".hidden", "x" * 129, None, 7, "a\0b", "a b"],
)
def test_ids_that_would_be_paths_are_refused(value):
    assert not is_valid_id(value)
    with pytest.raises(ConfigError, match="not a valid id"):
        check_id("run id", value)


@pytest.mark.parametrize("value", ["3f2a9c1b7d4e", "local-1", "default-::1-22", "a_b~x2", "f41"])
def test_ids_atex_ci_makes_are_valid(value):
    assert check_id("machine id", value) == value


@given(st.text(st.characters(exclude_categories=()), max_size=300))
def test_safe_id_always_gives_a_valid_id(text):
    assert is_valid_id(safe_id(text))


def test_each_user_has_its_own_area():
    assert remote_root("root") == "/var/tmp/atex-ci"
    assert remote_root("alice") == "/var/tmp/atex-ci-alice"
    assert remote_work_dir("alice", "r1", "m1") == "/var/tmp/atex-ci-alice/r1/m1"
    assert area_root("/var/tmp/atex-ci-alice/r1/m1") == "/var/tmp/atex-ci-alice"
    assert area_root("/srv/own/layout") is None
    with pytest.raises(ConfigError):
        remote_root("../x")
    with pytest.raises(ConfigError):
        remote_work_dir("root", "../escape", "m1")


def _ssh_machine(workdir: str | None, user: str = "root") -> Machine:
    return Machine(id="m1", provisioner="static", host="h", user=user, workdir=workdir)


@pytest.mark.parametrize(
    "workdir",
    [
        "/var/tmp/victim",
        "/var/tmp/atex-ci",
        "/var/tmp/atex-ci/r1",
        "/var/tmp/atex-ci/r1/other",
        "/var/tmp/atex-ci/../victim/m1",
        "/var/tmp/atex-ci/r1/../m1",
        "/var/tmp/atex-ci/r1/m1/..",
        "/var/tmp/atex-ci-bob/r1/m1",  # another user's area
        "/var/tmp/atex-ci/r1/m1/",
        "var/tmp/atex-ci/r1/m1",
    ],
)
def test_recorded_work_directories_atex_ci_did_not_make_are_refused(workdir):
    with pytest.raises(ConfigError, match="refusing to touch it"):
        check_machine(_ssh_machine(workdir), "machines.json")


def test_recorded_work_directories_atex_ci_makes_are_accepted():
    check_machine(_ssh_machine("/var/tmp/atex-ci/r1/m1"), "machines.json")
    check_machine(_ssh_machine("/var/tmp/atex-ci-alice/r1/m1", "alice"), "machines.json")
    # Recorded before per-user areas: the shared one, still atex-ci's own.
    check_machine(_ssh_machine("/var/tmp/atex-ci/r1/m1", "alice"), "machines.json")
    check_machine(_ssh_machine(None), "machines.json")


def test_a_second_machine_of_a_full_length_id_still_gets_a_valid_id(tmp_path):
    from atex_ci.provision.local import LocalProvisioner
    from atex_ci.rundir import RunDir

    provisioner = LocalProvisioner(RunDir.create(tmp_path / "run"), "p")
    base = "h" * 200  # made valid (128 bytes at most) by safe_id
    first = provisioner._unique_id(base)
    second = provisioner._unique_id(base, {first})
    third = provisioner._unique_id(base, {first, second})
    assert len({first, second, third}) == 3
    for machine_id in (first, second, third):
        assert check_id("machine id", machine_id) == machine_id
