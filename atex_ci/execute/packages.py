"""Installing packages on a machine with whatever package manager it has.

Only bash and the package manager are assumed: the script checks which
packages are missing (rpm or dpkg), then installs those with dnf, yum or
apt-get.
"""

from __future__ import annotations

import shlex


def install_script(packages: list[str], missing_ok: bool) -> str:
    """A bash script that installs what is missing with dnf, yum or apt-get."""
    pkgs = " ".join(shlex.quote(p) for p in packages)
    one_by_one = "1" if missing_ok else "0"
    return f"""
pkgs=({pkgs})
if command -v rpm >/dev/null && ! command -v dpkg >/dev/null; then
    check() {{ rpm -q --whatprovides "$1" >/dev/null 2>&1; }}
else
    check() {{ dpkg -s "$1" 2>/dev/null | grep -q '^Status:.* installed'; }}
fi
missing=()
for p in "${{pkgs[@]}}"; do check "$p" || missing+=("$p"); done
[ ${{#missing[@]}} -eq 0 ] && exit 0
if command -v dnf >/dev/null; then pm=(dnf install -y)
elif command -v yum >/dev/null; then pm=(yum install -y)
elif command -v apt-get >/dev/null; then
    pm=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q)
else
    echo "no package manager (dnf, yum, apt-get) to install: ${{missing[*]}}" >&2
    exit 1
fi
if [ {one_by_one} = 1 ]; then
    for p in "${{missing[@]}}"; do
        "${{pm[@]}}" "$p" >/dev/null 2>&1 || echo "skipped missing package $p" >&2
    done
    exit 0
fi
"${{pm[@]}}" "${{missing[@]}}" 2>&1
"""


#: Exit code of ``copr_script`` on a machine without dnf (told apart from dnf's own failures).
NO_DNF_EXIT = 42


def copr_script(repositories: list[str]) -> str:
    """A bash script that enables Copr repositories with dnf (installing dnf's
    copr plugin first if needed); exits NO_DNF_EXIT on a machine without dnf."""
    names = " ".join(shlex.quote(r) for r in repositories)
    return f"""
command -v dnf >/dev/null || exit {NO_DNF_EXIT}
for repo in {names}; do
    if ! dnf copr --help >/dev/null 2>&1; then
        dnf install -y 'dnf-command(copr)' 2>&1 || exit 1
    fi
    dnf copr enable -y "$repo" 2>&1 || exit 1
done
"""
