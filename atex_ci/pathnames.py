"""How names (platforms, plans, tests, machine ids) become path components.

Names come from fmf trees and options, so they may hold anything: spaces,
``?``, ``..``, non-ASCII text, lone surrogates, 300-byte components. Paths
built from them (``RUN/artifacts/...`` on the controller, the work directory
on a machine) must still be:

* **injective**: two different names never share a directory, so no test
  ever writes into another test's files;
* **bounded**: every component within ``COMPONENT_MAX_BYTES`` (below every
  filesystem's NAME_MAX) and a test's whole name within ``NAME_PATH_MAX_BYTES``
  (leaving room in PATH_MAX for the run directory and the files a test sends);
* **stable**: the same name gives the same path in every run and process
  (``collect`` and ``report`` find files again from names alone);
* **readable**: a name that is already a safe component is kept as it is;
  any other keeps its safe characters and gets ``~`` and a short hash of the
  whole name. ``~`` is never in a kept name, so the two kinds never meet.

Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata

#: Bytes of one component at most. NAME_MAX is 255 on most filesystems but
#: 143 on eCryptfs (encrypted names), and a component is only part of a path:
#: 128 fits everywhere and keeps long names readable.
COMPONENT_MAX_BYTES = 128
#: Bytes of a test name's components together (separators included) at most:
#: artifacts/<platform>/<plan>/<test>/instance-N/<attempt>/ then stays near
#: 1.3 KiB, leaving most of PATH_MAX (4096) to the run directory's own path
#: and to the file names a test uploads.
NAME_PATH_MAX_BYTES = 1024
#: Characters of the hash added to a name that is not kept as it is: base32,
#: 5 bits each, so 60 bits. Two different names of one run share a path only
#: if their hashes collide: about 1 in 10^8 for 100,000 such names.
HASH_CHARS = 12
#: Marks a component that carries a hash; never part of a kept name.
HASH_MARK = "~"
#: Joins the parts of a plan name flattened into one component.
FLAT_SEPARATOR = "."

#: Characters a kept component may hold (portable on every filesystem and in URLs).
_SAFE_CHARS = "A-Za-z0-9._+@=-"
_UNSAFE = re.compile(f"[^{_SAFE_CHARS}]")
_PLAIN = re.compile(f"[A-Za-z0-9_+@=-][{_SAFE_CHARS}]*")
#: Names that would look like the directories a test's own files are in
#: (``<attempt>/`` and ``instance-<serial>/``): a test named ``/t/1`` must
#: never share ``t/1/`` with attempt 1 of the test ``/t``.
_LAYOUT_NAME = re.compile(r"[0-9]+|instance-[0-9]+")
#: Names Windows reserves (whatever follows a dot): a run directory is often
#: downloaded as a CI artifact onto any system.
_RESERVED_STEMS = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{d}{n}" for d in ("com", "lpt") for n in range(1, 10)]
)


def _hash(domain: str, text: str) -> str:
    """A short hash of ``text``; ``domain`` keeps the hashes of different uses apart."""
    data = f"{domain}\0{text}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(data).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:HASH_CHARS]


def is_plain(text: str) -> bool:
    """Whether ``text`` is kept as it is as one component."""
    return (
        len(text) <= COMPONENT_MAX_BYTES
        and _PLAIN.fullmatch(text) is not None
        and not text.endswith(".")
        and _LAYOUT_NAME.fullmatch(text) is None
        and text.split(".", 1)[0].lower() not in _RESERVED_STEMS
    )


def readable(text: str) -> str:
    """The safe characters of ``text``: accents go (``příliš`` reads
    ``prilis``), every other character becomes ``_``, leading dots go (never
    ``.``, ``..`` or a hidden file). Not injective."""
    decomposed = unicodedata.normalize("NFKD", text)
    base = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _UNSAFE.sub("_", base).lstrip(".")


def _hashed(domain: str, text: str, shown: str) -> str:
    room = COMPONENT_MAX_BYTES - len(HASH_MARK) - HASH_CHARS
    return f"{shown[:room]}{HASH_MARK}{_hash(domain, text)}"


def component(text: str) -> str:
    """One path component for ``text`` (a platform, a part of a test name).

    ``text`` itself when it is plain (``is_plain``), else its readable part
    and a hash: injective, within COMPONENT_MAX_BYTES, ASCII only.
    """
    if is_plain(text):
        return text
    return _hashed("component", text, readable(text))


def name_components(name: str) -> list[str]:
    """The components of a slash-separated name (a test's), one directory per
    part, so artifacts keep the tree's shape.

    Injective over all strings: a name that is not ``/a/b/...`` exactly
    (no leading ``/``, an empty part), or whose components go past
    NAME_PATH_MAX_BYTES, keeps the components that fit and ends with one
    that carries a hash of the whole name.
    """
    parts = [p for p in name.split("/") if p]
    mapped = [component(p) for p in parts]
    canonical = bool(parts) and name == "/" + "/".join(parts)
    if canonical and _joined_bytes(mapped) <= NAME_PATH_MAX_BYTES:
        return mapped
    kept: list[str] = []
    room = NAME_PATH_MAX_BYTES - COMPONENT_MAX_BYTES - 1
    for part in mapped:
        if _joined_bytes([*kept, part]) > room:
            break
        kept.append(part)
    rest = "-".join(readable(p) for p in parts[len(kept) :])
    return [*kept, _hashed("name", name, rest)]


def flat_component(name: str) -> str:
    """One component for a slash-separated name (a plan's): its parts joined
    by FLAT_SEPARATOR (``/plans/basic`` is ``plans.basic``), kept as it is
    when that reads back unambiguously, else with a hash. Injective."""
    parts = [p for p in name.split("/") if p]
    flat = FLAT_SEPARATOR.join(parts)
    if (
        bool(parts)
        and name == "/" + "/".join(parts)
        and all(FLAT_SEPARATOR not in p for p in parts)
        and is_plain(flat)
    ):
        return flat
    return _hashed("flat", name, FLAT_SEPARATOR.join(readable(p) for p in parts))


def bounded_label(text: str, max_bytes: int) -> str:
    """A readable, safe label of at most ``max_bytes`` (ASCII) for a path
    component whose uniqueness comes from elsewhere (a serial number)."""
    return readable(text)[:max_bytes].rstrip(".") or "_"


def _joined_bytes(components: list[str]) -> int:
    # Components are ASCII: characters are bytes.
    return sum(len(c) + 1 for c in components)


__all__ = [
    "COMPONENT_MAX_BYTES",
    "NAME_PATH_MAX_BYTES",
    "bounded_label",
    "component",
    "flat_component",
    "is_plain",
    "name_components",
    "readable",
]
