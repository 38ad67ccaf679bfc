"""The fmf trees people have: shell discovery, execute script, remote trees,
imported plans, environment files, beakerlib libraries and file requirements.

Expected names, order and serial numbers were recorded with ``tmt run -r
discover`` (tmt 1.78) on the same trees, with git's ``url.<base>.insteadOf``
pointing the https URLs at the local repositories made here (no network).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from atex_ci.discover import discover
from atex_ci.errors import ConfigError
from atex_ci.libraries import LibraryResolver, parse_requirements
from atex_ci.model import Plan
from atex_ci.remote_tree import GitCache, GitError, unpack_tree

from .treeutil import REPO, git_redirect_env, git_repo

BASE = "https://example.test/"


def write(root: Path, files: dict[str, str]) -> Path:
    (root / ".fmf").mkdir(parents=True, exist_ok=True)
    (root / ".fmf" / "version").write_text("1\n")
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def names(plans: list[Plan]) -> dict[str, list[str]]:
    return {plan.name: [t.name for t in plan.tests] for plan in plans}


@pytest.fixture
def offline_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory whose repositories stand in for https://example.test/<name>;
    the cross-run cache is private to the test."""
    repos = tmp_path / "repos"
    repos.mkdir()
    for key, value in git_redirect_env(BASE, repos).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ATEX_CI_CACHE", str(tmp_path / "cache"))
    return repos


# ---------------------------------------------------------------- shell and script

SHELL_PLANS = """
/shell:
    discover:
        how: shell
        tests:
          - name: /first
            test: echo one
            duration: 10m
          - name: second/two
            test: echo two
            require: [bash]
          - name: /third
            test: echo three
            order: 10
          - name: /off
            test: echo off
            enabled: false
    execute:
        how: tmt
/script:
    execute:
        how: tmt
        script:
          - echo a
          - echo b
/script1:
    execute:
        how: tmt
        script: echo a
/shellmulti:
    discover:
      - how: shell
        tests:
          - name: /a
            test: "true"
      - how: fmf
    execute:
        how: tmt
"""


def test_shell_discovery_and_execute_script_match_tmt(tmp_path: Path) -> None:
    root = write(tmp_path / "t", {"plans.fmf": SHELL_PLANS, "test.fmf": 'test: "true"\n'})
    plans = {plan.name: plan for plan in discover(root)}
    assert names(list(plans.values())) == {
        "/plans/script": ["/script-00", "/script-01"],
        "/plans/script1": ["/script-00"],
        "/plans/shell": ["/third", "/first", "/second/two"],
        "/plans/shellmulti": ["/default-0/a", "/default-1/test"],
    }
    shell = plans["/plans/shell"].tests
    assert [t.serial_number for t in shell] == [1, 2, 3]
    assert [t.duration for t in shell] == [3600, 600, 3600]  # tmt: 1h unless given
    assert [t.test for t in shell] == ["echo three", "echo one", "echo two"]
    assert shell[2].require == ["bash"]
    assert {t.path for t in shell} == {"."}  # tests written in a plan run in the tree root
    assert [t.duration for t in plans["/plans/script"].tests] == [3600, 3600]


def test_script_and_discover_together_are_refused(tmp_path: Path) -> None:
    plan = "discover:\n    how: fmf\nexecute:\n    how: tmt\n    script: echo a\n"
    root = write(tmp_path / "t", {"plan.fmf": plan, "t.fmf": "test: ./t\n"})
    with pytest.raises(ConfigError, match=r"^plan /plan: tests come from either 'discover'"):
        discover(root)


# ---------------------------------------------------------------- remote trees

REMOTE_FILES = {
    ".fmf/version": "1\n",
    "sub/.fmf/version": "1\n",
    "main.fmf": """
/plans/remote:
    discover:
        how: fmf
        filter: tag:-skip
    environment:
        FROM_REMOTE: remote
        SHARED: remote
    execute:
        how: tmt
/tests:
    /a:
        test: ./a.sh
    /b:
        test: ./b.sh
        tag: [skip]
    /c:
        test: ./c.sh
        order: 10
""",
    "sub/main.fmf": "/deep/x:\n    test: echo x\n",
}

LOCAL_PLANS = """
/url:
    discover:
        how: fmf
        url: https://example.test/rrepo
        ref: v1
    execute:
        how: tmt
/urlpath:
    discover:
        how: fmf
        url: https://example.test/rrepo
        path: /sub
    execute:
        how: tmt
/imported:
    plan:
        import:
            url: https://example.test/rrepo
            name: /plans/remote
    environment:
        LOCAL: "1"
        SHARED: local
/urltest:
    discover:
      - how: fmf
        url: https://example.test/rrepo
        test: [/tests/c, /tests/a]
      - how: fmf
        name: local
    execute:
        how: tmt
"""


def test_remote_discovery_and_imported_plans_match_tmt(tmp_path: Path, offline_git: Path) -> None:
    commit = git_repo(offline_git / "rrepo", REMOTE_FILES, tag="v1")
    root = write(tmp_path / "t", {"plans.fmf": LOCAL_PLANS, "t.fmf": 'test: "true"\n'})
    plans = {plan.name: plan for plan in discover(root)}
    assert names(list(plans.values())) == {
        "/plans/imported": ["/tests/c", "/tests/a"],
        "/plans/url": ["/tests/c", "/tests/a", "/tests/b"],
        "/plans/urlpath": ["/deep/x"],
        "/plans/urltest": ["/default-0/tests/c", "/default-0/tests/a", "/local/t"],
    }
    upload = f".atex-ci/trees/{commit[:16]}"
    for plan in plans.values():
        assert list(plan.trees) == [upload]
        assert Path(plan.trees[upload], "main.fmf").read_text() == REMOTE_FILES["main.fmf"]
    assert [t.path for t in plans["/plans/urltest"].tests] == [upload, upload, "."]
    assert plans["/plans/urlpath"].tests[0].path == f"{upload}/sub"
    # tmt: the importing plan's environment wins over the imported plan's.
    assert plans["/plans/imported"].environment == {
        "FROM_REMOTE": "remote",
        "SHARED": "local",
        "LOCAL": "1",
    }


def test_dynamic_ref_follows_the_plan_context(tmp_path: Path, offline_git: Path) -> None:
    repo = offline_git / "dyn"
    git_repo(repo, {".fmf/version": "1\n", "t.fmf": "/old:\n    test: ./t\n"}, tag="v1")
    git_repo(
        repo,
        {
            "t.fmf": "/new:\n    test: ./t\n",
            "ref.fmf": "ref: main\nadjust:\n  - when: distro == rhel-9\n    ref: v1\n",
        },
    )
    plan = "discover:\n    how: fmf\n    url: https://example.test/dyn\n    ref: '@ref.fmf'\n"
    root = write(tmp_path / "t", {"plan.fmf": plan + "execute:\n    how: tmt\n"})
    assert names(discover(root, context={"distro": "rhel-9"})) == {"/plan": ["/t/old"]}
    assert names(discover(root, context={"distro": "fedora-41"})) == {"/plan": ["/t/new"]}


def test_unreachable_repository_is_one_line_naming_plan_and_phase(
    tmp_path: Path, offline_git: Path
) -> None:
    plan = (
        "discover:\n    how: fmf\n    url: https://example.test/missing\nexecute:\n    how: tmt\n"
    )
    root = write(tmp_path / "t", {"plan.fmf": plan})
    with pytest.raises(ConfigError) as caught:
        discover(root)
    message = str(caught.value)
    assert message.startswith("plan /plan: discover phase 'default-0': cannot fetch git repository")
    assert "\n" not in message


# ---------------------------------------------------------------- the git cache


def test_git_cache_fetches_each_url_once_per_run_and_keeps_commits_across_runs(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    first = git_repo(repo, {"a": "1\n"}, tag="v1")
    url = f"file://{repo}"
    run1 = GitCache(tmp_path / "cache")
    assert (run1.checkout(url, "v1").path / "a").read_text() == "1\n"
    assert run1.checkout(url, None).commit == first
    assert run1.checkout(url, first).commit == first
    assert run1.fetches == 1
    second = git_repo(repo, {"a": "2\n"})
    # A new run: a commit it already has needs no fetch; a branch is updated once.
    run2 = GitCache(tmp_path / "cache")
    assert (run2.checkout(url, first).path / "a").read_text() == "1\n"
    assert run2.fetches == 0
    assert run2.checkout(url, "main").commit == second
    assert run2.checkout(url, None).commit == second
    assert run2.fetches == 1
    with pytest.raises(ConfigError, match="has no ref 'nope'"):
        run2.checkout(url, "nope")
    # The repository's default branch changes: the next run follows it.
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "-b", "next"], check=True)
    third = git_repo(repo, {"a": "3\n"})
    run3 = GitCache(tmp_path / "cache")
    assert run3.checkout(url, None).commit == third
    assert run3.checkout(url, "main").commit == second


def test_checkout_keeps_links_and_modes_as_git_records_them(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git_repo(repo, {"tests/run.sh": "exit 0\n", "tests/data/x": "x\n"})
    (repo / "tests" / "run.sh").chmod(0o755)
    (repo / "tests" / "up").symlink_to("../tests/data")
    (repo / "dangling").symlink_to("nowhere/at/all")
    commit = git_repo(repo, {})
    path = GitCache(tmp_path / "cache").checkout(f"file://{repo}", commit).path
    assert (path / "tests" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (path / "tests" / "data" / "x").stat().st_mode & 0o777 == 0o644
    assert os.readlink(path / "tests" / "up") == "../tests/data"
    assert (path / "tests" / "up" / "x").read_text() == "x\n"
    assert os.readlink(path / "dangling") == "nowhere/at/all"


def _archive(path: Path, members: list[tuple[str, bytes, str]]) -> Path:
    """A tar of (name, kind, link target) members: kind is tarfile's type byte."""
    with tarfile.open(path, "w") as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.mode = 0o4777 if kind == tarfile.REGTYPE else 0o755
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([("/etc/evil", tarfile.REGTYPE, "")], "an absolute path"),
        ([("a/../../evil", tarfile.REGTYPE, "")], "a path with '..'"),
        ([("up", tarfile.SYMTYPE, "..")], "leads outside"),
        ([("abs", tarfile.SYMTYPE, "/etc")], "a link to an absolute path"),
        # Each link alone stays inside; together the first leads out.
        ([("l", tarfile.SYMTYPE, "s/.."), ("s", tarfile.SYMTYPE, ".")], "leads outside"),
        ([("s", tarfile.SYMTYPE, "."), ("s/x", tarfile.REGTYPE, "")], "inside a symbolic link"),
        ([("hard", tarfile.LNKTYPE, "a")], "neither a file"),
        ([("dev", tarfile.CHRTYPE, "")], "neither a file"),
        ([("fifo", tarfile.FIFOTYPE, "")], "neither a file"),
        ([("same", tarfile.SYMTYPE, "x"), ("same", tarfile.REGTYPE, "")], "twice"),
    ],
)
def test_unpacking_a_tree_refuses_what_leads_outside_it(
    tmp_path: Path, members: list[tuple[str, bytes, str]], why: str
) -> None:
    archive = _archive(tmp_path / "a.tar", members)
    tree = tmp_path / "box" / "tree"
    tree.mkdir(parents=True)
    with pytest.raises(GitError, match=why):
        unpack_tree(archive, tree, "commit c of u")
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["tree"]
    assert not (tmp_path / "evil").exists()


def test_unpacked_files_lose_setuid_and_group_write(tmp_path: Path) -> None:
    archive = _archive(
        tmp_path / "a.tar", [("d", tarfile.DIRTYPE, ""), ("d/f", tarfile.REGTYPE, "")]
    )
    unpack_tree(archive, tmp_path / "tree", "commit c of u")
    assert (tmp_path / "tree" / "d" / "f").stat().st_mode & 0o7777 == 0o755


# ---------------------------------------------------------------- requirements

LIBRARY_FILES = {
    ".fmf/version": "1\n",
    "main.fmf": """
/hello:
    require: [lib-package, {url: "https://example.test/other", name: /util}]
    recommend: [lib-optional]
/unused:
    require: [never-installed]
""",
    "hello/lib.sh": "greet() { echo hello from the library; }\n",
    "unused/lib.sh": "true\n",
}
OTHER_FILES = {
    ".fmf/version": "1\n",
    "main.fmf": "/util:\n    require: [util-package]\n",
    "util/lib.sh": "util() { true; }\n",
}


def test_requirement_forms_split_like_tmt() -> None:
    parsed = parse_requirements(
        [
            "bash",
            "library(openssl/certgen)",
            {"type": "file", "pattern": ["/lib", "/conf"]},
            {"url": "https://github.com/beakerlib/openssl.git", "name": "/certgen"},
            {"url": "https://example.test/x.git", "nick": "mine", "name": "/y", "ref": "v2"},
            {"type": "library", "url": "https://example.test/z/", "destination": "vendor"},
            "bash",
        ],
        "test /t: 'require'",
    )
    assert parsed.packages == ["bash"]
    assert parsed.files == ["/lib", "/conf"]
    found = [(lib.repo, lib.name, lib.url, lib.ref, lib.destination) for lib in parsed.libraries]
    assert found == [
        # library(ns/name) and the same library spelled as a mapping are one library
        ("openssl", "/certgen", "https://github.com/beakerlib/openssl", None, "libs"),
        ("mine", "/y", "https://example.test/x.git", "v2", "libs"),
        ("z", "/", "https://example.test/z/", None, "vendor"),
    ]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"name": "/x"}, "a library needs 'url'"),
        ({"url": "https://example.test/x", "name": "x"}, "must start with '/'"),
        ({"url": "https://example.test/x", "typo": 1}, "unknown library key 'typo'"),
        ({"type": "package", "name": "x"}, "unknown requirement type 'package'"),
        ({"url": "https://example.test/x", "destination": "../up"}, "must be a relative path"),
    ],
)
def test_bad_requirements(item: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_requirements([item], "test /t: 'require'")


def library_tree(root: Path, require: str) -> Path:
    test = f"test: ./run.sh\nframework: beakerlib\nrequire: {require}\n"
    return write(root, {"plan.fmf": "discover:\n    how: fmf\nexecute:\n    how: tmt\n",
                        "tests/one.fmf": test, "tests/two.fmf": test})  # fmt: skip


def test_libraries_are_fetched_once_and_their_packages_join_the_tests(
    tmp_path: Path, offline_git: Path
) -> None:
    git_repo(offline_git / "greet", LIBRARY_FILES)
    git_repo(offline_git / "other", OTHER_FILES)
    require = "[own-package, {url: 'https://example.test/greet', name: /hello}]"
    root = library_tree(tmp_path / "t", require)
    plans = discover(root)
    # Discovery only records the libraries: listing tests never clones one.
    assert not (tmp_path / "cache").exists()
    cache = GitCache()
    LibraryResolver(cache).resolve_plans(plans)
    assert cache.fetches == 2  # two repositories, two tests: each fetched once
    for test in plans[0].tests:
        assert test.require == ["own-package", "lib-package", "util-package"]
        assert test.recommend == ["lib-optional"]
        assert test.library_dirs == [".atex-ci"]
    trees = plans[0].trees
    assert sorted(trees) == [".atex-ci/libs/greet/hello", ".atex-ci/libs/other/util"]
    assert (Path(trees[".atex-ci/libs/greet/hello"]) / "lib.sh").is_file()
    assert "never-installed" not in json.dumps([t.to_dict() for t in plans[0].tests])


def test_legacy_library_form_is_fetched_from_the_beakerlib_organisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repos = tmp_path / "beakerlib"
    git_repo(repos / "other", OTHER_FILES)
    for key, value in git_redirect_env("https://github.com/beakerlib/", repos).items():
        monkeypatch.setenv(key, value)
    plans = discover(library_tree(tmp_path / "t", "['library(other/util)']"))
    LibraryResolver(GitCache(tmp_path / "cache")).resolve_plans(plans)
    assert plans[0].tests[0].require == ["util-package"]
    assert list(plans[0].trees) == [".atex-ci/libs/other/util"]


def test_missing_library_names_plan_test_and_library(tmp_path: Path, offline_git: Path) -> None:
    git_repo(offline_git / "greet", LIBRARY_FILES)
    require = "[{url: 'https://example.test/greet', name: /nope}]"
    plans = discover(library_tree(tmp_path / "t", require))
    with pytest.raises(ConfigError) as caught:
        LibraryResolver(GitCache()).resolve_plans(plans)
    assert str(caught.value) == (
        "plan /plan: test /tests/one: library greet/nope (https://example.test/greet) "
        "not found: no fmf node /nope"
    )


def test_dry_run_lists_tests_without_fetching_libraries(tmp_path: Path) -> None:
    require = "[{url: 'https://example.test/nowhere', name: /x}, 'library(none/y)']"
    root = library_tree(tmp_path / "t", require)
    env = {**os.environ, "ATEX_CI_CACHE": str(tmp_path / "cache"), "GIT_ALLOW_PROTOCOL": "file"}
    proc = subprocess.run(
        [sys.executable, "-m", "atex_ci", "run", "--dry-run", "--fmf-root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["/tests/one", "/tests/two"]
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- validation after selection


def test_only_selected_tests_are_validated(tmp_path: Path) -> None:
    files = {
        "plans/good.fmf": "discover:\n  how: fmf\n  filter: tag:-broken\nexecute:\n  how: tmt\n",
        "plans/all.fmf": "discover:\n    how: fmf\nexecute:\n    how: tmt\n",
        "ok.fmf": "test: ./ok\n",
        "bad.fmf": "test: ./bad\ntag: [broken]\nrequire: [{type: weird}]\nduration: soon\n",
        "off.fmf": "test: 3\nenabled: false\n",
    }
    root = write(tmp_path / "t", files)
    assert names(discover(root, ["/plans/good"])) == {"/plans/good": ["/ok"]}
    with pytest.raises(ConfigError) as caught:
        discover(root, ["/plans/all"])
    assert str(caught.value).startswith(
        "plan /plans/all: test /bad (bad.fmf): 'require': unknown requirement type 'weird'"
    )


# ---------------------------------------------------------------- environment files


def test_environment_files_then_environment(tmp_path: Path) -> None:
    plan = (
        "discover:\n    how: fmf\nexecute:\n    how: tmt\n"
        "environment-file: [env/base.env, env/more.yaml]\nenvironment:\n    B: plan\n"
    )
    files = {
        "plan.fmf": plan,
        "t.fmf": "test: ./t\n",
        "env/base.env": "# comment\nA=1\nB='from file'\nC=\"two words\"\n",
        "env/more.yaml": "C: yaml\nD: 4\n",
    }
    root = write(tmp_path / "t", files)
    assert discover(root)[0].environment == {"A": "1", "B": "plan", "C": "yaml", "D": "4"}
    (root / "plan.fmf").write_text(plan.replace("env/base.env", "../outside.env"))
    with pytest.raises(ConfigError, match="outside the fmf root"):
        discover(root)


# ---------------------------------------------------------------- controller tools


def test_ansible_phase_without_ansible_playbook_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import atex_ci.execute.ansible as ansible
    from atex_ci.runner import run_tests

    plan = "discover:\n    how: fmf\nexecute:\n    how: tmt\n"
    plan += "prepare:\n    how: ansible\n    playbook: site.yml\n"
    root = write(tmp_path / "t", {"plan.fmf": plan, "t.fmf": "test: ./t\n", "site.yml": "[]\n"})
    # As on a controller where the 'ansible' extra is not installed.
    monkeypatch.setattr(ansible, "ansible_playbook", lambda: None)
    with pytest.raises(ConfigError) as caught:
        asyncio.run(run_tests(tmp_path / "run", root))
    assert str(caught.value) == (
        "plan /plan: phase 'default-0' uses 'how: ansible'; install ansible-core on the "
        "controller: pip install 'atex-ci[ansible]'"
    )
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_playbook_outside_the_tree_is_refused(tmp_path: Path) -> None:
    plan = "discover:\n    how: fmf\nexecute:\n    how: tmt\n"
    plan += "prepare:\n    how: ansible\n    playbook: ../site.yml\n"
    root = write(tmp_path / "t", {"plan.fmf": plan, "t.fmf": "test: ./t\n"})
    (tmp_path / "site.yml").write_text("[]\n")
    with pytest.raises(ConfigError, match=r"playbook '../site.yml' is not a file in"):
        discover(root)


# ---------------------------------------------------------------- contest, if a clone is here

CONTEST = Path(os.environ.get("ATEX_CI_CONTEST", "/tmp/contest"))
CONTEST_COMMIT = "e1ff561"


def _contest_at_commit() -> bool:
    if not (CONTEST / ".fmf").is_dir():
        return False
    head = subprocess.run(
        ["git", "-C", str(CONTEST), "rev-parse", "--short=7", "HEAD"],
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() == CONTEST_COMMIT


@pytest.mark.skipif(not _contest_at_commit(), reason=f"no contest clone at {CONTEST_COMMIT}")
def test_contest_daily_matches_tmt() -> None:
    """RHSecurityCompliance/contest (never vendored: a clone at $ATEX_CI_CONTEST):
    tmt 1.78 selects 142 tests for /plans/daily with this context."""
    plans = discover(CONTEST, ["/plans/daily"], {"distro": "rhel-9.6", "arch": "x86_64"})
    tests = [t.name for t in plans[0].tests]
    assert len(tests) == 142
    assert tests[:2] == ["/hardening/oscap/anssi_bp28_high", "/hardening/oscap/bsi"]
    assert tests[-2:] == ["/static-checks/rule-identifiers", "/static-checks/unit-tests-metadata"]


def test_library_dynamic_ref_follows_the_plan_context(tmp_path: Path, offline_git: Path) -> None:
    repo = offline_git / "greet"
    git_repo(repo, {**LIBRARY_FILES, "main.fmf": "/hello:\n    require: [old-package]\n"}, "v1")
    git_repo(
        repo,
        {
            "main.fmf": "/hello:\n    require: [new-package]\n",
            "ref.fmf": "ref: main\nadjust:\n  - when: distro == rhel-9\n    ref: v1\n",
        },
    )
    require = "[{url: 'https://example.test/greet', name: /hello, ref: '@ref.fmf'}]"
    root = library_tree(tmp_path / "t", require)
    for distro, package in (("rhel-9", "old-package"), ("fedora-41", "new-package")):
        plans = discover(root, context={"distro": distro})
        LibraryResolver(GitCache()).resolve_plans(plans)
        assert plans[0].tests[0].require == [package]


def test_a_run_fetches_each_repository_once(tmp_path: Path, offline_git: Path) -> None:
    """The remote tree and a library of its test come from one repository: one fetch."""
    import asyncio

    from atex_ci.runner import RunOptions, run_tests

    both = {
        ".fmf/version": "1\n",
        "main.fmf": "/t:\n    test: . $BEAKERLIB_LIBRARY_PATH/libs/both/lib/lib.sh && mark\n"
        "    require: [{url: 'https://example.test/both', name: /lib}]\n"
        "/lib:\n    require: [bash]\n",
        "lib/lib.sh": 'mark() { test -n "$BEAKERLIB_LIBRARY_PATH"; }\n',
    }
    git_repo(offline_git / "both", both)
    plan = "discover:\n    how: fmf\n    url: https://example.test/both\nexecute:\n    how: tmt\n"
    root = write(tmp_path / "t", {"plan.fmf": plan})
    git = GitCache()
    plans = discover(root, git=git)
    run = tmp_path / "run"
    summary = asyncio.run(
        run_tests(run, root, options=RunOptions(local_slots=1), discovered=plans, git=git)
    )
    assert [(r.test, r.status) for r in summary.results] == [("/t", "pass")]
    assert git.fetches == 1


def test_ansible_phase_on_a_local_slot_runs_the_playbook_locally(tmp_path: Path) -> None:
    import asyncio

    from atex_ci.runner import RunOptions, run_tests

    mark = tmp_path / "mark"
    playbook = (
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.copy:\n"
        f"        dest: {mark}\n        content: '{{{{ inventory_hostname }}}}'\n"
    )
    plan = "discover:\n    how: fmf\nexecute:\n    how: tmt\n"
    plan += "prepare:\n    how: ansible\n    playbook: /setup/site.yml\n"
    files = {"plan.fmf": plan, "t.fmf": f"test: test -f {mark}\n", "setup/site.yml": playbook}
    root = write(tmp_path / "t", files)
    summary = asyncio.run(run_tests(tmp_path / "run", root, options=RunOptions(local_slots=1)))
    assert [(r.test, r.status) for r in summary.results] == [("/t", "pass")]
    assert mark.read_text() == "localhost"
