"""Properties of the name -> path mapping (atex_ci/pathnames.py): injective,
bounded, stable, and accepted by a real filesystem whatever the name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atex_ci.pathnames import (
    COMPONENT_MAX_BYTES,
    NAME_PATH_MAX_BYTES,
    component,
    flat_component,
    is_plain,
    name_components,
)
from atex_ci.rundir import RunDir

#: Characters that fold together under a naive "replace what is unsafe"
#: (and the ones that make a filesystem refuse a name: "/", NUL).
_LOOKALIKES = st.sampled_from([*"a_ ?/.-~1é\x00\n", "ü", "\ud83d", "中", "\u0301"])
#: Any code point, lone surrogates included (what json.dumps + YAML can give).
_ANY_CHAR = st.characters(exclude_categories=())
TEXT = st.one_of(
    st.text(_LOOKALIKES, max_size=12),
    st.text(_ANY_CHAR, max_size=40),
    # Long components: 300 bytes is over every filesystem's NAME_MAX.
    st.text(st.sampled_from("ab_é/"), min_size=250, max_size=400),
)
#: Test-name-like strings: short parts, sometimes very many of them.
NAME = st.one_of(
    TEXT,
    st.lists(st.text(_LOOKALIKES, min_size=1, max_size=8), min_size=1, max_size=120).map(
        lambda parts: "/" + "/".join(parts)
    ),
)


def _ok_component(c: str) -> None:
    assert c and c not in (".", "..")
    assert "/" not in c and "\0" not in c
    assert c.isascii() and len(c.encode()) <= COMPONENT_MAX_BYTES


@given(st.lists(TEXT, min_size=2, max_size=8, unique=True))
def test_component_is_injective_and_bounded(texts):
    mapped = [component(t) for t in texts]
    assert len(set(mapped)) == len(texts)
    for c in mapped:
        _ok_component(c)


@given(st.lists(NAME, min_size=2, max_size=6, unique=True))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_name_components_are_injective_and_bounded(names):
    mapped = [tuple(name_components(n)) for n in names]
    assert len(set(mapped)) == len(names)
    for parts in mapped:
        assert parts
        for c in parts:
            _ok_component(c)
        assert len("/".join(parts).encode()) <= NAME_PATH_MAX_BYTES


@given(st.lists(NAME, min_size=2, max_size=6, unique=True))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_flat_component_is_injective_and_bounded(names):
    mapped = [flat_component(n) for n in names]
    assert len(set(mapped)) == len(names)
    for c in mapped:
        _ok_component(c)


KEY = st.tuples(
    st.one_of(st.just("fedora"), TEXT),  # platform
    st.one_of(st.just("/plans/basic"), NAME),  # plan
    NAME,  # test
    st.one_of(st.none(), st.integers(1, 3)),  # serial (a repeated instance)
    st.integers(1, 12),  # attempt
)


@given(st.lists(KEY, min_size=2, max_size=5, unique=True))
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
def test_no_two_artifact_directories_overlap(keys):
    """Two different test attempts never get the same directory, nor one
    inside the other's (where one test's uploads could meet the other's files)."""
    rundir = RunDir("/run")
    paths = [rundir.artifact_path(p, t, a, plan, s).parts for p, plan, t, s, a in keys]
    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            shorter, longer = sorted((a, b), key=len)
            assert longer[: len(shorter)] != shorter, (a, b)


@given(st.lists(KEY, min_size=1, max_size=3))
@settings(
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    max_examples=60,
)
def test_a_real_filesystem_takes_every_artifact_path(tmp_path_factory, keys):
    """Names the filesystem itself refuses (NUL, a 300-byte component,
    surrogates) all map to directories it creates."""
    rundir = RunDir(tmp_path_factory.mktemp("run"))
    for platform, plan, test, serial, attempt in keys:
        path = rundir.artifact_dir(platform, test, attempt, plan, serial)
        (path / "output.txt").write_bytes(b"x")
        assert path.is_relative_to(rundir.path / "artifacts")


def test_lookalike_names_of_the_issue_are_kept_apart():
    names = ["/a b", "/a_b", "/a?b", "/é", "/ü", "/" + "x" * 300]
    mapped = {tuple(name_components(n)) for n in names}
    assert len(mapped) == len(names)
    assert name_components("/a_b") == ["a_b"]  # a safe name is kept as it is
    assert name_components("/a b")[0].startswith("a_b~")  # readable part + hash


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("basic", True),
        ("smoke-test", True),
        ("1", False),  # an attempt directory's name
        ("instance-2", False),  # a repeated instance's directory
        ("CON", False),  # reserved on Windows, where artifacts get downloaded
        ("nul.txt", False),
        (".hidden", False),
        ("a.", False),
        ("x" * COMPONENT_MAX_BYTES, True),
        ("x" * (COMPONENT_MAX_BYTES + 1), False),
    ],
)
def test_which_components_are_kept_as_they_are(name, plain):
    assert is_plain(name) is plain
    assert (component(name) == name) is plain


#: Mapped values pinned: run directories written by one version are read by
#: the next (collect, report), so the mapping never changes silently.
PINNED = {
    ("component", "a b"): "a_b~gxchratllqa6",
    ("component", "příliš žluťoučký"): "prilis_zlutoucky~3thyhiln2h7n",
    ("flat", "/plans/basic"): "plans.basic",
    ("flat", "/plans/a.b"): None,
}


def _mapping_in_a_new_process() -> dict[str, object]:
    code = (
        "import json; from atex_ci.pathnames import *; "
        "names = ['/a b', '/é', '/plans/x', '/" + "y" * 300 + "', '/\\udc80']; "
        "print(json.dumps({n.encode('utf-8', 'surrogatepass').hex(): "
        "[name_components(n), flat_component(n), component(n)] for n in names}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout
    import json

    result: dict[str, object] = json.loads(out)
    return result


def test_mapping_is_stable_across_processes_and_versions():
    assert component("a b") == PINNED[("component", "a b")]
    assert component("příliš žluťoučký") == PINNED[("component", "příliš žluťoučký")]
    assert flat_component("/plans/basic") == "plans.basic"
    assert "~" in flat_component("/plans/a.b")  # "." inside a part: would read as two
    there = _mapping_in_a_new_process()
    for hexname, mapped in there.items():
        name = bytes.fromhex(hexname).decode("utf-8", "surrogatepass")
        assert mapped == [name_components(name), flat_component(name), component(name)]


def test_machine_side_test_directory_is_bounded_and_unique(tmp_path):
    """The scratch directory on the machine: a 300-character name in short
    components fits one component; the serial number keeps tests apart."""
    from atex_ci.execute.staging import test_dir
    from atex_ci.model import Test

    long_name = "/" + "/".join(["abcdefghi"] * 30)
    tests = [
        Test(name=long_name, plan="/plans/p", test="true", path=".", serial_number=1),
        Test(name=long_name + "x", plan="/plans/p", test="true", path=".", serial_number=2),
        Test(name="/a b", plan="/plans/p", test="true", path=".", serial_number=3),
        Test(name="/a_b", plan="/plans/p", test="true", path=".", serial_number=4),
    ]
    dirs = [test_dir(t) for t in tests]
    assert len(set(dirs)) == len(dirs)
    for d in dirs:
        for part in Path(d).parts:
            assert len(part.encode()) <= COMPONENT_MAX_BYTES
        (tmp_path / d).mkdir(parents=True)  # a real filesystem takes it
