"""A small bootable Debian image for the QEMU tests, built from Debian's packages.

``vm_image()`` gives a ``VMImage``: a qcow2 disk holding a bare ext4 root
file system (no partition table, no boot loader) and the kernel and initrd
to boot it directly (``--kernel``/``--initrd``/``--kernel-cmdline``). It has
what a cloud image has for atex-ci: systemd, sshd and the real cloud-init,
which reads the provisioner's NoCloud seed; plus bash, coreutils and tar for
the executor. Networking is systemd-networkd with DHCP (QEMU's user network).

The image is built once per machine: under ``CACHE_ROOT/<key>``, where the
key is a hash of this file and the Debian suite and mirror, so a change here
builds a new one. Builds by parallel test processes are serialised by a lock.
Building needs root, debootstrap, e2fsprogs and qemu-img, and the Debian
mirror (``ATEX_CI_TEST_DEBIAN_MIRROR``, default deb.debian.org).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_ROOT = Path("/var/tmp/atex-ci-test-vm")
SUITE = "bookworm"
MIRROR = os.environ.get("ATEX_CI_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: What the VM needs beyond debootstrap's minbase. python3-cffi-backend is
#: named because debootstrap does not resolve the virtual package
#: python3-cryptography depends on (cloud-init's dependency).
PACKAGES = (
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "udev",
    "openssh-server",
    "cloud-init",
    "python3-cffi-backend",
    "iproute2",
)
#: Size of the root file system; the overlays grow into it.
DISK_SIZE = "2G"
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0"
TOOLS = ("debootstrap", "mkfs.ext4", "qemu-img", "qemu-system-x86_64", "genisoimage")

#: Files written into the image: path -> content.
FILES = {
    "etc/fstab": "/dev/vda / ext4 defaults 0 1\n",
    "etc/hostname": "atex-ci-vm\n",
    "etc/systemd/network/50-dhcp.network": "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n",
    # The image's own network configuration stands; cloud-init only reads the seed.
    "etc/cloud/cloud.cfg.d/90-atex-ci-test.cfg": (
        "network: {config: disabled}\ndatasource_list: [NoCloud, None]\n"
    ),
}


@dataclass(frozen=True)
class VMImage:
    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str = KERNEL_CMDLINE
    #: Seconds the build took (0 when it came from the cache).
    build_seconds: float = 0.0


def missing_requirements() -> str | None:
    """Why the image cannot be built or booted here, or None."""
    if os.geteuid() != 0:
        return "the VM image is built as root (debootstrap)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return (
                f"the QEMU tests need {tool} (apt-get install qemu-system-x86 qemu-utils "
                "debootstrap genisoimage e2fsprogs)"
            )
    if not Path(KEYRING).is_file():
        return f"debootstrap of Debian needs {KEYRING} (apt-get install debian-archive-keyring)"
    return None


def cache_key() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"{SUITE} {MIRROR}".encode())
    return digest.hexdigest()[:16]


def vm_image() -> VMImage:
    """The cached image, built first if this machine has none for this key."""
    target = CACHE_ROOT / cache_key()
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        seconds = 0.0
        if not (target / "disk.qcow2").is_file():
            start = time.monotonic()
            _build(target)
            seconds = time.monotonic() - start
    return VMImage(
        target / "disk.qcow2", target / "vmlinuz", target / "initrd.img", build_seconds=seconds
    )


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def _build(target: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE_ROOT))
    try:
        root = work / "root"
        _run(
            "debootstrap", "--variant=minbase", f"--keyring={KEYRING}",
            f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR,
        )  # fmt: skip
        for name, content in FILES.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        _run("chroot", str(root), "systemctl", "enable", "systemd-networkd")
        # Every VM gets its own host keys: cloud-init makes them at first boot.
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        out = work / "out"
        out.mkdir()
        shutil.copy(max((root / "boot").glob("vmlinuz-*")), out / "vmlinuz")
        shutil.copy(max((root / "boot").glob("initrd.img-*")), out / "initrd.img")
        raw = work / "disk.raw"
        _run("mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(raw), DISK_SIZE)
        _run("qemu-img", "convert", "-O", "qcow2", str(raw), str(out / "disk.qcow2"))
        shutil.rmtree(target, ignore_errors=True)
        out.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":  # build (or find) the image and say where it is
    image = vm_image()
    print(f"{image.disk} (built in {image.build_seconds:.0f} s)")
