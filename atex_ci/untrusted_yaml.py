"""Loading YAML we do not control (a test's results.yaml, an inventory file) with limits.

YAML has two ways to turn a small file into a huge amount of work: aliases
(``&a [*a, *a]`` nested ten deep is a billion nodes once expanded) and deep
nesting (the parser recurses). The safe loader of ruamel.yaml (which fmf
already brings) builds an alias as a shared reference, so loading itself stays
small; what blows up is every later step that walks the data as a tree (JSON,
merging, writing a result line). ``load`` therefore walks the loaded document
once, counting every node as if the aliases were expanded, and stops at the
first limit it crosses. What comes out is plain JSON data (dict, list, str,
int, float, bool, None): timestamps and other YAML types become strings, keys
become strings, and shared references are copied, so nothing downstream can be
surprised by YAML again.
"""

from __future__ import annotations

import io
import math
import os
import stat
from typing import Any

# A results file describes at most a few thousand sub-results; 16 MiB of YAML
# is far beyond any real one and still parses in a few seconds.
MAX_BYTES = 16 * 1024 * 1024

# Every node counted as if aliases were expanded. A real results file with
# 10,000 sub-results of ten keys each is about 200,000 nodes.
MAX_NODES = 1_000_000

# Characters of every string counted as if aliases were expanded: a 100-byte
# string used a million times through aliases is 100 MB of output once the
# data is written as JSON. No real results file comes near this.
MAX_CHARS = 16 * 1024 * 1024

# Nesting deeper than this is never data; it would also exhaust the parser's
# recursion long before the interpreter's limit is a concern for us.
MAX_DEPTH = 64


class UntrustedYAMLError(ValueError):
    """The document is not valid YAML or crosses one of the limits above."""


def load(text: str | bytes, *, max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES) -> Any:
    """Parse one YAML (or JSON) document into plain JSON data, within the limits.

    Raises UntrustedYAMLError with a one-line reason; never anything else for
    any input.
    """
    if isinstance(text, bytes):
        if len(text) > max_bytes:
            raise UntrustedYAMLError(f"larger than {max_bytes} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UntrustedYAMLError(f"not UTF-8 ({error.reason} at byte {error.start})") from None
    elif len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise UntrustedYAMLError(f"larger than {max_bytes} bytes")
    # Imported here: commands that read no YAML (reserve, release) skip its cost.
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML(typ="safe", pure=True)
    try:
        document = yaml.load(io.StringIO(text))
    except YAMLError as error:
        raise UntrustedYAMLError(" ".join(str(error).split())) from None
    except RecursionError:
        raise UntrustedYAMLError(f"nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, TypeError, OverflowError) as error:
        # The constructor can fail on odd scalars (dates out of range, ...).
        raise UntrustedYAMLError(" ".join(str(error).split())) from None
    return to_plain(document, max_nodes=max_nodes)


def read_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> Any:
    """Read and ``load`` the YAML file at ``path`` within the limits (see read_limited)."""
    return load(read_limited(path, max_bytes), max_bytes=max_bytes)


def read_limited(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path``, refused if over ``max_bytes``.

    The size is checked before a byte is read, so a huge or endless file (a
    2 GB file, a FIFO, /dev/zero behind a symlink) costs nothing. OSError if
    it cannot be opened; UntrustedYAMLError if it is not a regular file or is
    too large.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedYAMLError("not a regular file")
        if info.st_size > max_bytes:
            raise UntrustedYAMLError(f"larger than {max_bytes} bytes ({info.st_size} bytes)")
        data = f.read(max_bytes + 1)  # it may have grown since fstat
    if len(data) > max_bytes:
        raise UntrustedYAMLError(f"larger than {max_bytes} bytes")
    return data


def to_plain(document: Any, *, max_nodes: int = MAX_NODES) -> Any:
    """Copy already loaded data (YAML or JSON) into plain JSON data, within the limits."""
    return _Plain(max_nodes).convert(document, 0)


class _Plain:
    """One walk that copies the document into JSON data and counts nodes."""

    def __init__(self, max_nodes: int) -> None:
        self.budget = max_nodes
        self.max_nodes = max_nodes
        self.chars = MAX_CHARS

    def convert(self, value: Any, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise UntrustedYAMLError(
                f"more than {self.max_nodes} values (aliases count once per use)"
            )
        if depth > MAX_DEPTH:
            raise UntrustedYAMLError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            self._charge(len(value))
            return value
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            # JSON has no NaN or infinity; keep them readable instead of invalid.
            return value if math.isfinite(value) else str(value)
        if isinstance(value, dict):
            return {self._key(key): self.convert(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple | set):
            return [self.convert(item, depth + 1) for item in value]
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return str(value)

    def _charge(self, chars: int) -> None:
        self.chars -= chars
        if self.chars < 0:
            raise UntrustedYAMLError(
                f"more than {MAX_CHARS} characters of text (aliases count once per use)"
            )

    def _key(self, key: Any) -> str:
        if isinstance(key, str):
            self._charge(len(key))
            return key
        if key is None:
            return "null"
        if isinstance(key, bool):
            return "true" if key else "false"
        return str(key)


__all__ = [
    "MAX_BYTES",
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_NODES",
    "UntrustedYAMLError",
    "load",
    "read_file",
    "read_limited",
    "to_plain",
]
