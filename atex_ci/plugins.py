"""Finding a user's own class from a ``module:Class`` spec (provisioners, schedulers).

The module is imported by name, so it must be installed or on PYTHONPATH
(the current directory is not searched unless it is on the path).
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def load_class(spec: str, base: type[T], what: str) -> type[T]:
    """The class named by ``module:Class`` (``Class`` may be dotted), a subclass of ``base``.

    Raises ConfigError with one line saying what is wrong: a malformed spec,
    a module that does not import, a missing name, or a class of the wrong kind.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"invalid {what} {spec!r}: expected module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {what} module {module_name!r}: {exc} "
            "(is it installed or on PYTHONPATH?)"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"module {module_name!r} has no {attr!r}")
    if not isinstance(obj, type) or not issubclass(obj, base):
        raise ConfigError(f"{spec} is not a subclass of {base.__module__}.{base.__qualname__}")
    return obj


__all__ = ["load_class"]
