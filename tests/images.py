"""Container images built on this machine for the tests (no registry is reachable).

``debian_image()`` gives the tag of a minimal Debian 12 image: a root file
system made once with ``debootstrap --variant=minbase`` from the Debian
mirror apt already uses, imported into podman. It is built once per machine
and found again by a content key (the recipe below), so the suite and CI
pay for one debootstrap. ``flavour_image(name)`` is that image with
/etc/atex-ci-flavour holding ``name``: a second image for tests that need
two, without a second debootstrap; ``systemd_image()`` has systemd as its
init. ``rootfs_tar()`` is the root file system
as a tar archive, for anything else that boots Debian from it.

Concurrent builds (pytest-xdist, two CI jobs on one machine) wait for each
other on a lock file; a build that fails leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: What the image is made of; change any of it and the key (and tag) change.
SUITE = "bookworm"
VARIANT = "minbase"
#: Packages on top of minbase: procps for tests that look at processes,
#: python3 for the hostile test fixture (tests/fixtures/hostile.py).
INCLUDE = ("procps", "python3")
#: Bumped when the way the image is made changes without the values above.
RECIPE_VERSION = 1

#: Where built root file systems are kept between runs (outlives /tmp cleaning).
CACHE = Path(os.environ.get("ATEX_CI_IMAGE_CACHE", "/var/tmp/atex-ci-images"))
REPOSITORY = "localhost/atex-ci-test/debian"
#: The podman command the tests use here (see docs/provisioners.md: runc, as
#: crun refuses this machine's hybrid cgroup layout).
PODMAN = ("podman", "--runtime", "runc")
#: debootstrap downloads ~40 MB and unpacks ~150 MB; minutes at worst.
BUILD_TIMEOUT = 1800

FALLBACK_MIRROR = "http://deb.debian.org/debian"


def recipe_key() -> str:
    recipe = {"suite": SUITE, "variant": VARIANT, "include": INCLUDE, "v": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def debian_mirror() -> str:
    """The Debian archive apt on this machine uses for SUITE (deb822 or one-line
    sources), else Debian's own (a machine of another distribution)."""
    sources = Path("/etc/apt")
    for path in sorted([sources / "sources.list", *sources.glob("sources.list.d/*")]):
        if not path.is_file() or not path.name.endswith((".list", ".sources")):
            continue
        text = path.read_text(errors="replace")
        uris = re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", text, re.M)
        for stanza in re.split(r"\n\s*\n", text):
            if re.search(r"^Suites:.*\b" + SUITE + r"\b(?!-)", stanza, re.M):
                uris += re.findall(r"^URIs:\s*(\S+)", stanza, re.M)
        for uri in uris:
            if "security" not in uri:
                return uri.rstrip("/")
    return FALLBACK_MIRROR


@contextlib.contextmanager
def _build_lock(key: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def missing_podman() -> str | None:
    """Why podman cannot run the container tests here, or None."""
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (apt-get install podman runc debootstrap)"
    if os.geteuid() != 0:
        return "the container tests build their image with debootstrap, as root"
    return None


def rootfs_tar() -> Path:
    """The cached root file system (a tar archive), made with debootstrap once."""
    key = recipe_key()
    tar = CACHE / f"debian-{SUITE}-{key}.tar"
    if tar.is_file():
        return tar
    with _build_lock(key):
        if tar.is_file():
            return tar
        with tempfile.TemporaryDirectory(dir=CACHE, prefix="build-") as scratch:
            root = Path(scratch) / "root"
            subprocess.run(
                [
                    "debootstrap",
                    f"--variant={VARIANT}",
                    f"--include={','.join(INCLUDE)}",
                    SUITE,
                    str(root),
                    debian_mirror(),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=BUILD_TIMEOUT,
            )
            # No package caches in the image: smaller, and nothing stale.
            shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
            part = Path(scratch) / "rootfs.tar"
            subprocess.run(
                ["tar", "-C", str(root), "--numeric-owner", "-cf", str(part), "."], check=True
            )
            part.rename(tar)  # whole or not at all
    return tar


def _exists(tag: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", tag], check=False).returncode == 0


def debian_image() -> str:
    """The tag of the minimal Debian image, imported into podman once."""
    tag = f"{REPOSITORY}:12-{recipe_key()}"
    if _exists(tag):
        return tag
    tar = rootfs_tar()
    with _build_lock(recipe_key()):
        if not _exists(tag):
            subprocess.run(
                [*PODMAN, "import", "--change", "CMD=/bin/bash", str(tar), tag],
                check=True,
                stdout=subprocess.DEVNULL,
            )
    return tag


def flavour_image(name: str) -> str:
    """The Debian image with /etc/atex-ci-flavour saying ``name`` (made once)."""
    if not re.fullmatch(r"[a-z0-9]{1,20}", name):
        raise ValueError(f"flavour name {name!r}")
    return _derived(name, f"echo {name} > /etc/atex-ci-flavour")


def _derived(name: str, script: str) -> str:
    """The Debian image after ``script`` ran in it, tagged with ``name`` (made once)."""
    base = debian_image()
    tag = f"{REPOSITORY}-{name}:12-{recipe_key()}"
    if _exists(tag):
        return tag
    with _build_lock(recipe_key()):
        if _exists(tag):
            return tag
        container = f"atex-ci-image-build-{name}-{os.getpid()}"
        try:
            subprocess.run(
                [*PODMAN, "run", "--name", container, *ULIMITS, base, "bash", "-c", script],
                check=True,
            )
            subprocess.run([*PODMAN, "commit", "-q", container, tag], check=True)
        finally:
            subprocess.run([*PODMAN, "rm", "-f", container], check=False, capture_output=True)
    return tag


#: Limits a container may have here (raising them is denied on this machine).
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")

#: podman's configuration for what the tests run (CONTAINERS_CONF): the
#: runtime and limits that work here, as a user would set them once.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
"""


def containers_conf() -> Path:
    """A containers.conf with the settings above (what CONTAINERS_CONF names)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "containers.conf"
    if not path.is_file() or path.read_text() != CONTAINERS_CONF:
        part = path.with_suffix(f".{os.getpid()}")
        part.write_text(CONTAINERS_CONF)
        part.rename(path)
    return path


def systemd_image() -> str:
    """The Debian image with systemd as /sbin/init (made once, with the image's
    own apt from the Debian mirror)."""
    return _derived(
        "systemd",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -qq --no-install-recommends systemd-sysv >/dev/null && "
        "rm -rf /var/lib/apt/lists/*",
    )


if __name__ == "__main__":
    print(debian_image())
    print(flavour_image("second"))
    print(systemd_image())
