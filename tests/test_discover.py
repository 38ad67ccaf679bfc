"""Tests for atex_ci.discover against tmt's own selection.

The expected lists below were recorded with ``tmt run discover`` (tmt 1.78, fmf
1.7) on the fixture trees in tests/fixtures/discover/, from each plan's
``discover/tests.yaml``: names, order and serial numbers, durations, paths and
environments. tmt itself is not needed to run these tests.

One deliberate difference: for a discover phase with ``path: sub`` tmt reports
test paths relative to that sub-tree; atex-ci reports them relative to the fmf
root it uploads (``sub/deep`` instead of ``deep``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from atex_ci.discover import discover, parse_context
from atex_ci.errors import ConfigError
from atex_ci.model import Phase, Plan

FIXTURES = Path(__file__).parent / "fixtures" / "discover"
MAIN = FIXTURES / "main"
EXTRAS = FIXTURES / "extras"
REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- recorded with tmt

MAIN_NO_CONTEXT: dict[str, list[str]] = {
    "/plans/ordered": [
        "/tests/core/smoke",
    ],
    "/plans/all": [
        "/tests/core/virtual/three",
        "/tests/extra/gamma",
        "/tests/core/pathed",
        "/tests/core/relpath",
        "/tests/core/smoke",
        "/tests/core/virtual/one",
        "/tests/core/virtual/two",
        "/tests/extra/alpha",
        "/tests/extra/beta",
        "/tests/core/nested",
    ],
    "/plans/context": [],
    "/plans/filtered": [
        "/tests/core/pathed",
        "/tests/core/relpath",
        "/tests/core/smoke",
        "/tests/core/virtual/one",
        "/tests/core/virtual/two",
    ],
    "/plans/include": [
        "/tests/extra/gamma",
        "/tests/core/smoke",
    ],
    "/plans/multi": [
        "/early/tests/core/virtual/three",
        "/early/tests/core/virtual/two",
        "/first/tests/extra/gamma",
        "/first/tests/extra/alpha",
        "/first/tests/extra/beta",
        "/default-0/tests/core/smoke",
    ],
    "/plans/names": [
        "/tests/extra/gamma",
        "/tests/extra/alpha",
        "/tests/extra/beta",
        "/tests/core/smoke",
        "/tests/core/virtual/one",
        "/tests/core/smoke",
    ],
    "/plans/tagged": [
        "/tests/core/virtual/two",
        "/tests/core/nested",
    ],
    "/plans/when": [
        "/everywhere/tests/extra/alpha",
    ],
}

MAIN_FEDORA_41: dict[str, list[str]] = {
    "/plans/ordered": [
        "/tests/core/smoke",
    ],
    "/plans/all": [
        "/tests/core/virtual/three",
        "/tests/extra/gamma",
        "/tests/core/pathed",
        "/tests/core/relpath",
        "/tests/core/smoke",
        "/tests/core/virtual/one",
        "/tests/core/virtual/two",
        "/tests/extra/beta",
        "/tests/core/nested",
    ],
    "/plans/context": [
        "/tests/core/smoke",
    ],
    "/plans/filtered": [
        "/tests/core/pathed",
        "/tests/core/relpath",
        "/tests/core/smoke",
        "/tests/core/virtual/one",
        "/tests/core/virtual/two",
    ],
    "/plans/include": [
        "/tests/extra/gamma",
        "/tests/core/smoke",
    ],
    "/plans/multi": [
        "/early/tests/core/virtual/three",
        "/early/tests/core/virtual/two",
        "/first/tests/extra/gamma",
        "/first/tests/extra/beta",
        "/default-0/tests/core/smoke",
    ],
    "/plans/names": [
        "/tests/extra/gamma",
        "/tests/extra/beta",
        "/tests/core/smoke",
        "/tests/core/virtual/one",
        "/tests/core/smoke",
    ],
    "/plans/tagged": [
        "/tests/core/virtual/two",
        "/tests/core/nested",
    ],
    "/plans/when": [
        "/only-fedora/tests/extra/beta",
    ],
}

MAIN_CENTOS_STREAM_9: dict[str, list[str]] = {
    "/plans/ordered": [],
    "/plans/all": [
        "/tests/core/virtual/three",
        "/tests/extra/gamma",
        "/tests/core/pathed",
        "/tests/core/relpath",
        "/tests/core/virtual/one",
        "/tests/core/virtual/two",
        "/tests/extra/alpha",
        "/tests/extra/beta",
        "/tests/core/nested",
    ],
    "/plans/context": [],
    "/plans/filtered": [
        "/tests/core/pathed",
        "/tests/core/relpath",
        "/tests/core/virtual/one",
        "/tests/core/virtual/two",
    ],
    "/plans/include": [
        "/tests/extra/gamma",
    ],
    "/plans/multi": [
        "/early/tests/core/virtual/three",
        "/early/tests/core/virtual/two",
        "/first/tests/extra/gamma",
        "/first/tests/extra/alpha",
        "/first/tests/extra/beta",
    ],
    "/plans/names": [
        "/tests/extra/gamma",
        "/tests/extra/alpha",
        "/tests/extra/beta",
        "/tests/core/virtual/one",
    ],
    "/plans/tagged": [
        "/tests/core/virtual/two",
        "/tests/core/nested",
    ],
    "/plans/when": [
        "/everywhere/tests/extra/alpha",
    ],
}

MAIN_FEDORA_39: dict[str, list[str]] = {
    "/plans/ordered": [
        "/tests/core/smoke",
    ],
    "/plans/all": [
        "/tests/core/virtual/three",
        "/tests/extra/gamma",
        "/tests/core/pathed",
        "/tests/core/relpath",
        "/tests/core/smoke",
        "/tests/core/virtual/one",
        "/tests/core/virtual/two",
        "/tests/extra/alpha",
        "/tests/extra/beta",
        "/tests/core/nested",
    ],
    "/plans/context": [
        "/tests/core/smoke",
    ],
    "/plans/filtered": [
        "/tests/core/pathed",
        "/tests/core/relpath",
        "/tests/core/smoke",
        "/tests/core/virtual/one",
        "/tests/core/virtual/two",
    ],
    "/plans/include": [
        "/tests/extra/gamma",
        "/tests/core/smoke",
    ],
    "/plans/multi": [
        "/early/tests/core/virtual/three",
        "/early/tests/core/virtual/two",
        "/first/tests/extra/gamma",
        "/first/tests/extra/alpha",
        "/first/tests/extra/beta",
        "/default-0/tests/core/smoke",
    ],
    "/plans/names": [
        "/tests/extra/gamma",
        "/tests/extra/alpha",
        "/tests/extra/beta",
        "/tests/core/smoke",
        "/tests/core/virtual/one",
        "/tests/core/smoke",
    ],
    "/plans/tagged": [
        "/tests/core/virtual/two",
        "/tests/core/nested",
    ],
    "/plans/when": [
        "/everywhere/tests/extra/alpha",
        "/only-fedora/tests/extra/beta",
    ],
}

MAIN_FEDORA_39_AND_CENTOS: dict[str, list[str]] = {
    "/plans/ordered": [],
    "/plans/all": [
        "/tests/core/virtual/three",
        "/tests/extra/gamma",
        "/tests/core/pathed",
        "/tests/core/relpath",
        "/tests/core/virtual/one",
        "/tests/core/virtual/two",
        "/tests/extra/alpha",
        "/tests/extra/beta",
        "/tests/core/nested",
    ],
    "/plans/context": [],
    "/plans/filtered": [
        "/tests/core/pathed",
        "/tests/core/relpath",
        "/tests/core/virtual/one",
        "/tests/core/virtual/two",
    ],
    "/plans/include": [
        "/tests/extra/gamma",
    ],
    "/plans/multi": [
        "/early/tests/core/virtual/three",
        "/early/tests/core/virtual/two",
        "/first/tests/extra/gamma",
        "/first/tests/extra/alpha",
        "/first/tests/extra/beta",
    ],
    "/plans/names": [
        "/tests/extra/gamma",
        "/tests/extra/alpha",
        "/tests/extra/beta",
        "/tests/core/virtual/one",
    ],
    "/plans/tagged": [
        "/tests/core/virtual/two",
        "/tests/core/nested",
    ],
    "/plans/when": [
        "/everywhere/tests/extra/alpha",
        "/only-fedora/tests/extra/beta",
    ],
}

EXTRAS_NO_CONTEXT: dict[str, list[str]] = {
    "/plans/filters": [
        "/missing-key/tests/c",
        "/defaults/tests/a",
        "/defaults/tests/b",
        "/defaults/top",
    ],
    "/plans/names": [
        "/default-1/tests/a",
        "/default-0/tests/b",
        "/default-3/top",
    ],
    "/plans/sub": [
        "/default-0/deep/test",
        "/default-0/here",
        "/default-1/tests/a",
    ],
}

EXTRAS_AARCH64: dict[str, list[str]] = {
    "/plans/filters": [
        "/missing-key/tests/c",
        "/defaults/tests/a",
        "/defaults/tests/b",
        "/defaults/top",
    ],
    "/plans/names": [
        "/default-1/tests/a",
        "/default-0/tests/b",
        "/default-3/top",
    ],
    "/plans/sub": [
        "/default-0/here",
        "/default-1/tests/a",
    ],
}

EXTRAS_S390X_UPPER: dict[str, list[str]] = {
    "/plans/filters": [
        "/missing-key/tests/c",
        "/defaults/tests/a",
        "/defaults/tests/b",
        "/defaults/top",
    ],
    "/plans/names": [
        "/default-1/tests/a",
        "/default-0/tests/b",
        "/default-3/top",
    ],
    "/plans/sub": [
        "/default-0/deep/test",
        "/default-0/here",
        "/default-1/tests/a",
    ],
}

NOPLANS: dict[str, list[str]] = {
    "/default/plan": [
        "/tests/two",
        "/tests/one",
    ],
}

ALL_NO_CONTEXT = [
    ("/tests/core/virtual/three", 600.0, "tests/core", {"LEVEL": "tests"}),
    ("/tests/extra/gamma", 600.0, "tests/extra", {"LEVEL": "gamma"}),
    ("/tests/core/pathed", 600.0, "scripts", {"LEVEL": "tests"}),
    ("/tests/core/relpath", 600.0, "scripts", {"LEVEL": "tests"}),
    ("/tests/core/smoke", 120.0, "tests/core", {"LEVEL": "tests", "SMOKE": "1"}),
    ("/tests/core/virtual/one", 600.0, "tests/core", {"CASE": "one", "LEVEL": "tests"}),
    ("/tests/core/virtual/two", 600.0, "tests/core", {"CASE": "two", "LEVEL": "tests"}),
    ("/tests/extra/alpha", 600.0, "tests/extra", {"LEVEL": "tests"}),
    ("/tests/extra/beta", 90.0, "tests/extra", {"LEVEL": "tests"}),
    ("/tests/core/nested", 3600.0, "tests/core/nested", {"LEVEL": "tests"}),
]

ALL_FEDORA_41 = [
    ("/tests/core/virtual/three", 600.0, "tests/core", {"LEVEL": "tests"}),
    ("/tests/extra/gamma", 600.0, "tests/extra", {"LEVEL": "gamma"}),
    ("/tests/core/pathed", 600.0, "scripts", {"LEVEL": "tests"}),
    ("/tests/core/relpath", 600.0, "scripts", {"LEVEL": "tests"}),
    (
        "/tests/core/smoke",
        180.0,
        "tests/core",
        {"DISTRO_IS": "fedora-41", "LEVEL": "tests", "SMOKE": "1"},
    ),
    ("/tests/core/virtual/one", 600.0, "tests/core", {"CASE": "one", "LEVEL": "tests"}),
    ("/tests/core/virtual/two", 600.0, "tests/core", {"CASE": "two", "LEVEL": "tests"}),
    ("/tests/extra/beta", 90.0, "tests/extra", {"LEVEL": "tests"}),
    ("/tests/core/nested", 3600.0, "tests/core/nested", {"LEVEL": "tests"}),
]

ALL_FEDORA_39 = [
    ("/tests/core/virtual/three", 600.0, "tests/core", {"LEVEL": "tests"}),
    ("/tests/extra/gamma", 1200.0, "tests/extra", {"LEVEL": "gamma"}),
    ("/tests/core/pathed", 600.0, "scripts", {"LEVEL": "tests"}),
    ("/tests/core/relpath", 600.0, "scripts", {"LEVEL": "tests"}),
    ("/tests/core/smoke", 120.0, "tests/core", {"LEVEL": "tests", "SMOKE": "1"}),
    ("/tests/core/virtual/one", 600.0, "tests/core", {"CASE": "one", "LEVEL": "tests"}),
    ("/tests/core/virtual/two", 600.0, "tests/core", {"CASE": "two", "LEVEL": "tests"}),
    ("/tests/extra/alpha", 600.0, "tests/extra", {"LEVEL": "tests"}),
    ("/tests/extra/beta", 90.0, "tests/extra", {"LEVEL": "tests"}),
    ("/tests/core/nested", 3600.0, "tests/core/nested", {"LEVEL": "tests"}),
]


# ---------------------------------------------------------------- helpers


def names(plans: list[Plan]) -> dict[str, list[str]]:
    return {plan.name: [test.name for test in plan.tests] for plan in plans}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """An fmf tree under ``root`` with the given files (path -> content)."""
    (root / ".fmf").mkdir(parents=True)
    (root / ".fmf" / "version").write_text("1\n")
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


PLAN = "discover:\n    how: fmf\nexecute:\n    how: tmt\n"


# ---------------------------------------------------------------- selection = tmt's


@pytest.mark.parametrize(
    ("tree", "context", "expected"),
    [
        (MAIN, None, MAIN_NO_CONTEXT),
        (MAIN, {"distro": "fedora-41"}, MAIN_FEDORA_41),
        (MAIN, {"distro": "centos-stream-9"}, MAIN_CENTOS_STREAM_9),
        (MAIN, {"distro": "fedora-39"}, MAIN_FEDORA_39),
        (
            MAIN,
            {"distro": "fedora-39,centos-stream-9", "arch": "x86_64"},
            MAIN_FEDORA_39_AND_CENTOS,
        ),
        (EXTRAS, None, EXTRAS_NO_CONTEXT),
        (EXTRAS, {"arch": "aarch64,x86_64"}, EXTRAS_AARCH64),
        (EXTRAS, {"arch": "S390X"}, EXTRAS_S390X_UPPER),
        (FIXTURES / "noplans", None, NOPLANS),
    ],
    ids=[
        "main",
        "main-fedora-41",
        "main-centos-stream-9",
        "main-fedora-39",
        "main-two-distros",
        "extras",
        "extras-aarch64",
        "extras-S390X",
        "noplans",
    ],
)
def test_selection_matches_tmt(
    tree: Path, context: dict[str, str] | None, expected: dict[str, list[str]]
) -> None:
    plans = discover(tree, context=context)
    # plan order, test names and test order are exactly tmt's
    assert list(names(plans).items()) == list(expected.items())
    for plan in plans:
        assert [t.serial_number for t in plan.tests] == list(range(1, len(plan.tests) + 1))
        assert all(t.plan == plan.name for t in plan.tests)


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (None, ALL_NO_CONTEXT),
        ({"distro": "fedora-41"}, ALL_FEDORA_41),
        ({"distro": "fedora-39"}, ALL_FEDORA_39),
    ],
    ids=["no-context", "fedora-41", "fedora-39"],
)
def test_test_attributes_match_tmt(
    context: dict[str, str] | None, expected: list[tuple[str, float, str, dict[str, str]]]
) -> None:
    [plan] = discover(MAIN, ["^/plans/all$"], context)
    got = [(t.name, t.duration, t.path, t.environment) for t in plan.tests]
    assert got == expected


def test_test_fields_and_defaults() -> None:
    [plan] = discover(MAIN, ["/plans/all"])
    tests = {t.name: t for t in plan.tests}
    pathed = tests["/tests/core/pathed"]
    assert (pathed.test, pathed.require, pathed.result, pathed.tty) == (
        "./helper.sh",
        ["make", "gcc"],
        "xfail",
        True,
    )
    smoke = tests["/tests/core/smoke"]
    assert (smoke.require, smoke.recommend, smoke.framework) == (
        ["bash"],
        ["curl", "wget"],
        "shell",
    )
    assert (smoke.result, smoke.tty) == ("respect", False)
    assert tests["/tests/extra/gamma"].test == "echo gamma\ntrue\n"
    # the whole inherited, adjusted fmf node is kept, JSON-serialisable
    assert smoke.data["tag"] == ["all", "core"]
    assert smoke.data["contact"] == "Tester <tester@example.com>"
    assert smoke.data["summary"] == "Quick smoke test"
    json.dumps([t.to_dict() for t in plan.tests])


def test_default_duration_is_five_minutes(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "t", {"plan.fmf": PLAN, "t.fmf": "test: ./t.sh\n"})
    [plan] = discover(root)
    [test] = plan.tests
    assert (test.name, test.duration, test.path, test.serial_number) == ("/t", 300.0, ".", 1)


def test_plan_environment_prepare_and_finish() -> None:
    [plan] = discover(MAIN, ["/plans/all"])
    assert plan.environment == {"PLAN_VAR": "all", "NUMBER": "42"}
    # sorted by 'order' (stable), unnamed phases named default-N in listed order
    assert plan.prepare == [
        Phase(how="shell", name="default-1", script=["echo one", "echo two"], order=20),
        Phase(how="install", name="default-0", package=["make", "gcc"], missing="skip"),
        Phase(how="install", name="pkg", package=["tree"]),
        Phase(how="shell", name="late", script=["echo late"], order=70),
    ]
    assert plan.finish == [Phase(how="shell", name="default-0", script=["echo bye"])]


def test_plan_context_key_is_overridden_by_the_callers() -> None:
    # /plans/context sets distro: centos-stream-9, which disables its only test ...
    assert names(discover(MAIN, ["/plans/context"])) == {"/plans/context": []}
    # ... unless the caller's context says otherwise (tmt: command line wins)
    [plan] = discover(MAIN, ["/plans/context"], {"distro": "fedora-41"})
    assert [(t.name, t.duration) for t in plan.tests] == [("/tests/core/smoke", 180.0)]
    # the other plans of the same call are not affected by that plan's context
    plans = discover(MAIN, ["/plans/context", "/plans/ordered"])
    assert names(plans) == {"/plans/ordered": ["/tests/core/smoke"], "/plans/context": []}


def test_adjust_compares_context_case_insensitively() -> None:
    # tmt 1.78 with -c distro=FEDORA-41: smoke's 'distro == fedora-41' rule applies
    [plan] = discover(MAIN, ["/plans/ordered"], {"distro": "FEDORA-41"})
    [smoke] = plan.tests
    assert smoke.duration == 180.0
    assert smoke.environment["DISTRO_IS"] == "fedora-41"


def test_plan_filters_are_searched_regexes_in_tmt_order() -> None:
    # the order is tmt's (order key, then name), not the order of the filters
    plans = discover(MAIN, ["names", "^/plans/a"])
    assert [p.name for p in plans] == ["/plans/all", "/plans/names"]
    # disabled plans are never selected
    assert "/plans/disabled" not in [p.name for p in discover(MAIN)]


def test_context_values_may_be_lists() -> None:
    assert parse_context({"distro": "fedora-39,centos-stream-9"}) == {
        "distro": ["fedora-39", "centos-stream-9"]
    }
    assert parse_context({"arch": ["x86_64"]}) == {"arch": ["x86_64"]}
    with pytest.raises(ConfigError, match="empty value"):
        parse_context({"distro": ""})


def test_path_phase_reads_another_tree() -> None:
    plans = discover(EXTRAS, ["/plans/sub"])
    got = [(t.name, t.path, t.duration) for t in plans[0].tests]
    assert got == [
        ("/default-0/deep/test", "sub/deep", 180.0),
        ("/default-0/here", "sub", 180.0),
        ("/default-1/tests/a", "tests", 300.0),
    ]


def test_yaml_timestamps_in_data_become_strings(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "t", {"plan.fmf": PLAN, "t.fmf": "test: ./t.sh\ncreated: 2024-01-02\n"}
    )
    [plan] = discover(root)
    assert plan.tests[0].data["created"] == "2024-01-02"


# ---------------------------------------------------------------- bad input


def error_of(root: Path | str, *args: object) -> str:
    with pytest.raises(ConfigError) as caught:
        discover(root, *args)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_tree(tmp_path: Path) -> None:
    assert "does not exist" in error_of(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "no .fmf/version" in error_of(tmp_path / "empty")
    (tmp_path / "bad" / ".fmf").mkdir(parents=True)
    (tmp_path / "bad" / ".fmf" / "version").write_text("one\n")
    assert "Invalid version format" in error_of(tmp_path / "bad")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("test: ./x\nsummary: [unclosed\n", "cannot parse tests/x.fmf line 3, column 1: expected"),
        ("test: a\ntest: b\n", "cannot parse tests/x.fmf line 2, column 1: found duplicate key"),
        ("test: a\n- b\n", "cannot parse tests/x.fmf line 2, column 1: expected <block end>"),
    ],
    ids=["unclosed", "duplicate-key", "block"],
)
def test_yaml_syntax_error_names_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    root = write_tree(tmp_path / "t", {"plan.fmf": PLAN, "tests/x.fmf": content})
    assert error_of(root).startswith(expected)


def test_plan_regex_matching_nothing_lists_plans() -> None:
    message = error_of(MAIN, ["xyz"])
    assert message.startswith(f"no plan matches 'xyz'; plans in {MAIN}: /plans/all, ")
    assert "/plans/disabled" not in message


def test_bad_plan_regex() -> None:
    assert "invalid plan name regular expression 'a('" in error_of(MAIN, ["a("])


@pytest.mark.parametrize(
    ("test_line", "expected"),
    [
        (
            "test: true\n",
            "'test' must be a string, 'bool' found (an unquoted true is a YAML boolean",
        ),
        ("test: 3\n", "'test' must be a string, 'int' found"),
        ("test:\n", "the 'test' key is empty"),
        ("test: ''\n", "the 'test' key is empty"),
    ],
    ids=["boolean", "integer", "null", "empty"],
)
def test_bad_test_key(tmp_path: Path, test_line: str, expected: str) -> None:
    root = write_tree(tmp_path / "t", {"plan.fmf": PLAN, "tests/x.fmf": test_line})
    message = error_of(root)
    assert message.startswith("plan /plan: test /tests/x (tests/x.fmf): ")
    assert expected in message


def test_leaf_without_test_key_is_not_a_test(tmp_path: Path) -> None:
    # tmt: a test is a leaf with a 'test' key; anything else is ignored
    root = write_tree(
        tmp_path / "t",
        {"plan.fmf": PLAN, "doc.fmf": "summary: docs\n", "t.fmf": "test: ./t.sh\n"},
    )
    assert names(discover(root)) == {"/plan": ["/t"]}


def test_unparsable_duration(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "t", {"plan.fmf": PLAN, "tests/x.fmf": "test: ./x\nduration: 5 minutes\n"}
    )
    assert error_of(root).startswith(
        "plan /plan: test /tests/x (tests/x.fmf): invalid duration '5 minutes'"
    )


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (
            "discover:\n    how: manual\n",
            "discover phase 'default-0': 'how: manual' is not supported",
        ),
        ("discover:\n    how: fmf\n    ref: main\n", "'ref' needs a 'url'"),
        ("discover:\n    how: fmf\n    link: verifies:/x\n", "selecting tests by 'link'"),
        ("discover:\n    how: fmf\n    test: [{name: /t, duration: 1h}]\n", "adjust rules"),
        ("discover:\n    how: fmf\n    exclude: ['(']\n", "invalid exclude regular expression"),
        ("discover:\n    how: fmf\n    path: nowhere\n", "'path' 'nowhere' is not an fmf tree"),
        (
            "discover:\n    how: fmf\nprepare:\n    how: ansible\n",
            "prepare phase 'default-0': 'how: ansible' needs a 'playbook'",
        ),
        ("discover:\n    how: fmf\nprepare:\n    how: install\n    missing: maybe\n", "'missing'"),
        ("discover:\n    how: fmf\nfinish:\n    how: install\n", "'how: install' is not supported"),
        ("summary: no discover\n", "has no 'discover' step"),
    ],
    ids=[
        "unknown-discover",
        "ref-without-url",
        "link",
        "test-adjust",
        "bad-exclude",
        "bad-path",
        "ansible",
        "missing",
        "finish-install",
        "no-discover",
    ],
)
def test_unsupported_plans(tmp_path: Path, plan: str, expected: str) -> None:
    root = write_tree(
        tmp_path / "t", {"plans/p.fmf": plan + "execute:\n    how: tmt\n", "t.fmf": "test: ./t\n"}
    )
    message = error_of(root)
    assert message.startswith("plan /plans/p")
    assert expected in message


def test_unsupported_plan_can_be_filtered_out(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "t",
        {
            "plans/shell.fmf": "discover:\n    how: manual\nexecute:\n    how: tmt\n",
            "plans/fmf.fmf": PLAN,
            "t.fmf": "test: ./t\n",
        },
    )
    assert names(discover(root, ["/plans/fmf"])) == {"/plans/fmf": ["/t"]}


# ---------------------------------------------------------------- command line


def test_module_prints_names() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "atex_ci.discover",
            str(MAIN),
            "-p",
            "multi",
            "-c",
            "distro=fedora-41",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert result.stdout.splitlines() == MAIN_FEDORA_41["/plans/multi"]


def test_module_reports_errors_on_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "atex_ci.discover", str(MAIN), "-p", "xyz"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("atex-ci: no plan matches 'xyz'")
    assert result.stderr.count("\n") == 1


# ---------------------------------------------------------------- unknown keys (typos)


def test_a_misspelt_key_is_a_warning_naming_file_key_and_the_likely_key(tmp_path, caplog):
    """tmt 1.78 warns "'durration' does not match any of the regexes: '^extra-'"
    and goes on; so do we, and we name the key that was meant."""
    import logging

    (tmp_path / ".fmf").mkdir()
    (tmp_path / ".fmf" / "version").write_text("1\n")
    (tmp_path / "plan.fmf").write_text(
        "discover:\n  how: fmf\nexecute:\n  how: tmt\nprovison:\n  how: local\n"
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "main.fmf").write_text(
        "/typo:\n  test: 'true'\n  durration: 1m\n"
        "/mine:\n  test: 'true'\n  extra-owner: me\n  frobnicate: 1\n"
    )
    with caplog.at_level(logging.WARNING, logger="atex_ci"):
        [plan] = discover(tmp_path)
    assert [t.name for t in plan.tests] == ["/tests/mine", "/tests/typo"]
    assert plan.tests[1].duration == 300.0  # tmt's default 5m: the misspelt key does nothing
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "plan.fmf: plan /plan: unknown key 'provison' is ignored; did you mean 'provision'?",
        "tests/main.fmf: test /tests/mine: unknown key 'frobnicate' is ignored "
        "(your own keys start with extra-)",
        "tests/main.fmf: test /tests/typo: unknown key 'durration' is ignored; "
        "did you mean 'duration'?",
    ]


def test_atex_keys_warn_on_near_misses_and_values_they_cannot_use(tmp_path, caplog):
    """extra-priority and the destructive tag reach the test's data as written;
    a misspelling of them, or a priority that is not a number, is a warning."""
    import logging

    (tmp_path / ".fmf").mkdir()
    (tmp_path / ".fmf" / "version").write_text("1\n")
    (tmp_path / "plan.fmf").write_text("discover:\n  how: fmf\nexecute:\n  how: tmt\n")
    (tmp_path / "main.fmf").write_text(
        "/good:\n  test: 'true'\n  extra-priority: 5\n  tag: destructive\n"
        "  extra-priority-why: mine\n  extra-prio: also mine\n"
        "/typo:\n  test: 'true'\n  extra-priorty: 5\n"
        "/word:\n  test: 'true'\n  extra-priority: high\n"
        "/plain:\n  test: 'true'\n  priority: 5\n  destructive: true\n"
    )
    with caplog.at_level(logging.WARNING, logger="atex_ci"):
        [plan] = discover(tmp_path)
    good = next(t for t in plan.tests if t.name == "/good")
    from atex_ci.schedule import Job, Scheduler

    job = Job("default", good)
    policy = Scheduler([job])
    assert policy.priority(job) == 5 and policy.destructive(job)
    assert [r.getMessage() for r in caplog.records] == [
        "main.fmf: test /plain: unknown key 'priority' is ignored; did you mean 'extra-priority'?",
        "main.fmf: test /plain: unknown key 'destructive' is ignored; "
        "a destructive test is tagged: tag: [destructive]",
        "main.fmf: test /typo: key 'extra-priorty' means nothing to atex-ci; "
        "did you mean 'extra-priority'?",
        "main.fmf: test /word: 'extra-priority' must be a number (higher runs earlier), "
        "not 'high'; the test keeps priority 0",
    ]


def test_the_recorded_trees_warn_exactly_where_tmt_does(caplog):
    """tmt 1.78 warns about one unknown key in these trees: 'foo' in extras' /tests/c."""
    import logging

    with caplog.at_level(logging.WARNING, logger="atex_ci"):
        discover(MAIN)
        discover(EXTRAS)
        discover(REPO / "examples" / "demo")
    assert [r.getMessage() for r in caplog.records] == [
        "tests/main.fmf: test /tests/c: unknown key 'foo' is ignored "
        "(your own keys start with extra-)"
    ]


def test_the_cli_shows_the_warning_as_a_user_sees_it(tmp_path):
    (tmp_path / ".fmf").mkdir()
    (tmp_path / ".fmf" / "version").write_text("1\n")
    (tmp_path / "main.fmf").write_text("/t:\n  test: 'true'\n  durration: 1m\n")
    proc = subprocess.run(
        [sys.executable, "-m", "atex_ci", "run", "--dry-run", "--fmf-root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout == "/t\n"
    assert proc.stderr == (
        "atex-ci: main.fmf: test /t: unknown key 'durration' is ignored; did you mean 'duration'?\n"
    )
