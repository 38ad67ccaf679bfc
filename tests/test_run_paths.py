"""Paths end to end on real sshd test hosts: names a filesystem refuses, the
tree copy on a machine, ids and work directories from the run directory, and
a user's own work area."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from .treeutil import atex, make_tree, own_results, reserve_hosts, results

#: Names that a naive sanitiser folds together, or that no filesystem holds as
#: one component, each with a marker its test prints and stores.
SPECIAL = {
    "a b": "M01",
    "a_b": "M02",
    "a?b": "M03",
    "é": "M04",  # two non-ASCII names of one length
    "ü": "M05",
    "x" * 300: "M06",  # a 300-byte component: over NAME_MAX
    "/".join(["abcdefghi"] * 30): "M07",  # 300 characters in short components
}
ORDINARY = {f"plain-{n}": f"M{10 + n}" for n in range(4)}


def _marker_test(marker: str, status: int) -> dict[str, object]:
    # Each test prints its marker, stores it in TMT_TEST_DATA under a name
    # every test uses, and uploads it under another shared name.
    return {
        "test": (
            f'echo "{marker}-"; echo "{marker}-" > "$TMT_TEST_DATA/same.txt"; '
            f'echo "{marker}-" > /tmp/up-$$; tmt-file-submit -l /tmp/up-$$; exit {status}'
        )
    }


def _markers(text: str) -> list[str]:
    return re.findall(r"M\d\d-", text)


def _run_failing_on(ssh_host, tmp_path, tests, run) -> dict:
    """Run ``tests`` on ``ssh_host`` (some fail or error on purpose: exit 1,
    no machine out of use); each test's own result."""
    tree = make_tree(tmp_path / "tree", tests)
    reserve_hosts(run, [ssh_host])
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 1, proc.stderr
    assert "out of use" not in proc.stderr
    return own_results(run)


def test_lookalike_and_long_names_each_keep_their_own_files(tmp_path, ssh_host):
    """The special tests fail on purpose (so every report shows their output);
    each is found with its own output only, and every other test passes."""
    tests = {name: _marker_test(m, 1) for name, m in SPECIAL.items()}
    tests |= {name: _marker_test(m, 0) for name, m in ORDINARY.items()}
    run = tmp_path / "run"
    own = _run_failing_on(ssh_host, tmp_path, tests, run)
    marker_of = {f"/tests/{name}": m for name, m in {**SPECIAL, **ORDINARY}.items()}
    assert set(own) == set(marker_of)
    owners: dict[str, str] = {}
    for test, result in own.items():
        want = "fail" if marker_of[test] in SPECIAL.values() else "pass"
        assert result["status"] == want, (test, result)
        assert result["attempt"] == 1
        names = {Path(f).name for f in result["files"]}
        assert {"output.txt", "same.txt"} <= names, result["files"]
        for relative in result["files"]:
            assert relative not in owners, f"{test} and {owners.get(relative)} share {relative}"
            owners[relative] = test
            text = (run / "artifacts" / relative).read_text()
            assert _markers(text) == [f"{marker_of[test]}-"], (test, relative, text)
    # Every file under artifacts/ belongs to exactly one test.
    artifacts = run / "artifacts"
    stored = {str(p.relative_to(artifacts)) for p in artifacts.rglob("*") if p.is_file()}
    assert stored == set(owners)
    _reports_show_each_test_its_own_output(run, marker_of)


def _reports_show_each_test_its_own_output(run: Path, marker_of: dict[str, str]) -> None:
    html = run / "report.html"
    proc = atex("report", "-d", str(run), "--html", str(html))
    assert proc.returncode == 0, proc.stderr
    failed = {t: m for t, m in marker_of.items() if m in SPECIAL.values()}
    # JUnit: each failed testcase's system-out is its own output.
    seen = set()
    for case in ET.parse(run / "junit.xml").getroot().iter("testcase"):
        out = "".join(e.text or "" for e in case.iter("system-out"))
        found = set(_markers(out))
        if found:
            assert len(found) == 1, (case.get("name"), out)
            seen |= found
    assert seen == {f"{m}-" for m in failed.values()}
    # Markdown: each failed test's output once, nobody else's in its place.
    summary = (run / "summary.md").read_text()
    for marker in failed.values():
        assert summary.count(f"{marker}-") == 1, marker
    # HTML: every test links its own output.txt, no two the same.
    links = re.findall(r'href="([^"]*output\.txt)"', html.read_text())
    assert len(links) == len(set(links)) == len(marker_of)


def test_a_name_no_command_can_carry_errors_alone(tmp_path, ssh_host):
    """A NUL in a test name (valid YAML, valid fmf) cannot go into an
    environment variable: that test errors, its machine stays in use."""
    tests = {"nul\u0000byte": {"test": "true"}, **{n: {"test": "true"} for n in ORDINARY}}
    run = tmp_path / "run"
    own = _run_failing_on(ssh_host, tmp_path, tests, run)
    bad = own.pop("/tests/nul\u0000byte")
    assert bad["status"] == "error" and bad["reason"] == "test", bad
    assert "NUL" in bad["note"] and bad["attempt"] == 1
    assert {r["status"] for r in own.values()} == {"pass"}


def test_paths_past_path_max_error_alone(tmp_path, ssh_host):
    """Under a run directory this deep, only the long-named tests' artifact
    paths pass PATH_MAX: they error, with a note saying so; the others pass
    and the run goes on (it used to stop: exit 3, "make room")."""
    deep = tmp_path
    while len(str(deep)) < 3800:
        deep = deep / ("d" * min(200, 3800 - len(str(deep)) - 1 or 1))
    run = deep / "run"
    long_name = "/".join(["abcdefghi"] * 30)  # 300 bytes of artifact path
    tests = {name: {"test": "echo hi"} for name in [long_name, *ORDINARY]}
    tree = make_tree(tmp_path / "tree", tests)
    reserve_hosts(run, [ssh_host])
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 1, proc.stderr
    assert "make room" not in proc.stderr
    own = own_results(run)
    long = own.pop("/tests/" + long_name)
    assert long["status"] == "error" and long["reason"] == "test", long
    assert "File name too long" in long["note"]
    assert {r["status"] for r in own.values()} == {"pass"}
    assert len(results(run)) == 1 + len(ORDINARY)


# -- the tree copy (issue: the run directory travels with the tree) -----------------


def _listing_test() -> dict[str, object]:
    """A test that prints every path of the tree copy on its machine."""
    return {"test": 'cd "$TMT_TREE" && find . | sort'}


def test_the_tree_copy_never_holds_a_run_directory(tmp_path, ssh_host):
    """README's layout puts the run directory inside the fmf tree; neither it,
    an earlier run's directory, a venv nor .git ever reaches a machine, and
    no private key leaves the controller."""
    tree = make_tree(tmp_path / "tree", {"list": _listing_test(), "ok": {"test": "true"}})
    (tree / ".venv" / "lib").mkdir(parents=True)
    (tree / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tree / ".venv" / "lib" / "big.py").write_text("x = 1\n" * 1000)
    (tree / "env2").mkdir()
    (tree / "env2" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tree / ".git").mkdir()
    (tree / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tree / "data").mkdir()
    (tree / "data" / "run.json").write_text('{"not": "a run"}')  # a file of the tree's own
    secret = "SECRET-KEY-MATERIAL-0123"
    listings = []
    for run in (tree / "run", tree / "sub" / "deeper" / "run2"):
        reserve_hosts(run, [ssh_host])
        # A key the run made (as Testing Farm reservations do) lives in RUN/keys.
        (run / "keys").mkdir(mode=0o700, exist_ok=True)
        (run / "keys" / "id_test").write_text(secret)
        proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--keep-machines")
        assert proc.returncode == 0, proc.stderr
        listing = (run / "artifacts").rglob("output.txt")
        text = next(p for p in listing if "list" in p.parts).read_text()
        listings.append(text.split())
        # What the machine really holds, looked at from outside.
        run_id = json.loads((run / "run.json").read_text())["id"]
        root = Path(f"/proc/{ssh_host.init_pid}/root/var/tmp/atex-ci/{run_id}")
        copies = list(root.glob("*/tree"))
        assert len(copies) == 1
        on_machine = {str(p.relative_to(copies[0])) for p in copies[0].rglob("*")}
        for path in on_machine:
            if (copies[0] / path).is_file():
                assert secret not in (copies[0] / path).read_text(errors="replace")
        assert "data/run.json" in on_machine
        assert not any(p.split("/")[0] in ("run", ".venv", "env2", ".git") for p in on_machine)
        assert not any(p.startswith("sub/deeper/run2") for p in on_machine)
        assert atex("release", "-d", str(run)).returncode == 0
    for listing in listings:
        assert "./tests/main.fmf" in listing and "./data/run.json" in listing
        assert not [p for p in listing if p.startswith(("./run", "./.venv", "./env2", "./.git"))]
        assert not [p for p in listing if p.startswith("./sub/deeper/run2")]


# -- ids and work directories from the run directory --------------------------------


def _host_path(host, path: str) -> Path:
    """``path`` on a test host, as the controller sees it."""
    return Path(f"/proc/{host.init_pid}/root{path}")


def test_a_run_id_that_is_a_path_is_refused(tmp_path, ssh_host):
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    data = json.loads((run / "run.json").read_text())
    data["id"] = "../escape"
    (run / "run.json").write_text(json.dumps(data))
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "run id '../escape'" in lines[0], proc.stderr
    assert not _host_path(ssh_host, "/var/tmp/escape").exists()
    assert not _host_path(ssh_host, "/var/tmp/atex-ci").exists()


def test_release_never_deletes_a_work_directory_atex_ci_did_not_make(tmp_path, ssh_host):
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    victim = _host_path(ssh_host, "/var/tmp/victim")
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    machines = json.loads((run / "machines.json").read_text())
    for workdir in ("/var/tmp/victim", "/var/tmp/atex-ci/x/../../victim", "/var/tmp/atex-ci"):
        machines["machines"][0]["workdir"] = workdir
        (run / "machines.json").write_text(json.dumps(machines))
        proc = atex("release", "-d", str(run))
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "refusing to touch it" in lines[0], proc.stderr
        assert (victim / "precious").read_text() == "keep me"
    # A machine id that is a path is refused the same way.
    machines["machines"][0]["workdir"] = None
    machines["machines"][0]["id"] = "../../victim"
    (run / "machines.json").write_text(json.dumps(machines))
    proc = atex("release", "-d", str(run))
    assert proc.returncode == 2 and "machine id '../../victim'" in proc.stderr, proc.stderr
    assert (victim / "precious").read_text() == "keep me"


def test_a_local_slot_release_deletes_only_its_own_directory(tmp_path):
    """A local slot's recorded work directory is never what release deletes."""
    run = tmp_path / "run"
    assert atex("reserve", "-d", str(run), "--local", "1").returncode == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    machines = json.loads((run / "machines.json").read_text())
    machines["machines"][0]["workdir"] = str(victim)
    (run / "machines.json").write_text(json.dumps(machines))
    proc = atex("release", "-d", str(run))
    assert proc.returncode == 0, proc.stderr
    assert (victim / "precious").read_text() == "keep me"
    assert not (run / "work" / machines["machines"][0]["id"]).exists()


def test_a_user_works_in_its_own_area_after_a_root_run(tmp_path, ssh_host):
    """root's run leaves /var/tmp/atex-ci behind (root's, 0755); another
    user's run on the same host then works in its own area and passes."""
    tree = make_tree(tmp_path / "tree", {"who": {"test": 'echo "uid=$(id -u)"'}})
    for user, uid in (("root", "0"), (ssh_host.other_user, "4242")):
        run = tmp_path / f"run-{user}"
        proc = atex(
            "reserve", "-d", str(run), "--key", str(ssh_host.key_path),
            "--host", f"{user}@{ssh_host.address}",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
        assert proc.returncode == 0, proc.stderr
        [result] = results(run)
        assert result["status"] == "pass"
        output = run / "artifacts" / result["files"][0]
        assert output.read_text().split() == [f"uid={uid}"]
    assert _host_path(ssh_host, "/var/tmp/atex-ci").is_dir()  # root's, left for later runs
    area = _host_path(ssh_host, f"/var/tmp/atex-ci-{ssh_host.other_user}")
    assert area.is_dir() and area.stat().st_uid == 4242


def test_a_work_area_someone_else_made_is_refused(tmp_path, ssh_host):
    """In /var/tmp anyone can make the area first (or a link to elsewhere):
    the machine is not used, nothing is written through it."""
    elsewhere = _host_path(ssh_host, "/var/tmp/elsewhere")
    elsewhere.mkdir()
    _host_path(ssh_host, f"/var/tmp/atex-ci-{ssh_host.other_user}").symlink_to("/var/tmp/elsewhere")
    run = tmp_path / "run"
    proc = atex(
        "reserve", "-d", str(run), "--key", str(ssh_host.key_path),
        "--host", f"{ssh_host.other_user}@{ssh_host.address}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 3, proc.stderr
    assert "is not a directory of atexuser" in proc.stderr
    assert list(elsewhere.iterdir()) == []


def _tree_names(tree: Path, extras: dict[str, Path] | None = None) -> set[str]:
    import io
    import tarfile

    from atex_ci.execute.staging import build_tree_tar

    with tarfile.open(fileobj=io.BytesIO(build_tree_tar(tree, extras))) as tar:
        return {name.removeprefix("./") for name in tar.getnames()}


def _fake_run_dir(path: Path) -> None:
    from atex_ci.rundir import RunDir

    RunDir.create(path)
    (path / "keys").mkdir(mode=0o700)
    (path / "keys" / "id").write_text("KEY")
    (path / "artifacts" / "p").mkdir(parents=True)
    (path / "artifacts" / "p" / "output.txt").write_text("old output")


def test_no_run_directory_at_any_depth_is_in_the_tree_archive(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    for where in ("run", "a/b/c/run", "tests/run-x", ".hidden/r"):
        _fake_run_dir(tree / where)
    (tree / "v" / "bin").mkdir(parents=True)
    (tree / "v" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tree / "a" / "b" / "keep.txt").write_text("mine")
    (tree / "lookalike").mkdir()
    (tree / "lookalike" / "run.json").write_text('{"format": "something-else"}')
    (tree / "link").symlink_to(tree / "run")  # kept as a link, never followed
    names = _tree_names(tree)
    assert {"tests/main.fmf", "a/b/keep.txt", "lookalike/run.json", "link"} <= names
    for gone in ("run", "a/b/c/run", "tests/run-x", ".hidden/r", "v"):
        assert not [n for n in names if n == gone or n.startswith(f"{gone}/")], gone
    # Trees shipped beside it (remote trees, libraries) are filtered the same way.
    extra = tmp_path / "extra"
    (extra / "lib").mkdir(parents=True)
    _fake_run_dir(extra / "lib" / "run")
    names = _tree_names(tree, {".atex-ci/trees/x": extra})
    assert ".atex-ci/trees/x/lib" in names
    assert not [n for n in names if n.startswith(".atex-ci/trees/x/lib/run")]


def test_a_tree_that_is_itself_a_run_directory_leaves_the_run_out(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    _fake_run_dir(tree)
    names = _tree_names(tree)
    assert "tests/main.fmf" in names
    assert not names & {"run.json", "keys", "keys/id", "artifacts", "artifacts/p/output.txt"}


def test_release_gives_back_every_other_machine_when_one_record_is_refused(tmp_path, ssh_hosts):
    """A tampered record is never touched, yet it holds no other machine hostage."""
    good, tampered = ssh_hosts(2)
    run = tmp_path / "run"
    reserve_hosts(run, [good, tampered])
    victim = _host_path(tampered, "/var/tmp/victim")
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    machines = json.loads((run / "machines.json").read_text())
    bad = next(m for m in machines["machines"] if m["host"] == tampered.address)
    bad["workdir"] = "/var/tmp/victim"
    (run / "machines.json").write_text(json.dumps(machines))
    proc = atex("release", "-d", str(run))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "refusing to touch it" in lines[0] and "every other machine was released" in lines[0]
    assert (victim / "precious").read_text() == "keep me"
    states = {
        m["host"]: m["state"] for m in json.loads((run / "machines.json").read_text())["machines"]
    }
    assert states == {good.address: "released", tampered.address: "ready"}
    # The refused record stays as it was, for a person to look at.
    kept = next(
        m
        for m in json.loads((run / "machines.json").read_text())["machines"]
        if m["host"] == tampered.address
    )
    assert kept["workdir"] == "/var/tmp/victim"
