"""atex-ci: run FMF tests on many machines in parallel, with ad-hoc scheduling.

The command line is a thin shell over this toolbox; ``atex_ci.run`` is the
synchronous entry point for scripts. Submodules are imported lazily so that
``import atex_ci`` (and discovery alone) stays cheap; so is ``__version__``
(importlib.metadata costs more than the rest of a command's start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run_options import RunSummary

    __version__: str


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            # Set at build time from the git tag (pyproject.toml, [tool.hatch.version]).
            found = version("atex-ci")
        except PackageNotFoundError:  # imported from a source tree that was never installed
            found = "0.0.0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(run_dir: str, fmf_root: str = ".", **kwargs: Any) -> RunSummary:
    """Discover the fmf tests under ``fmf_root`` and run them; see ``runner.run_tests``.

    Blocks until the run ends and returns its RunSummary (``.exit_code``,
    ``.results``). Keyword arguments: ``plans``, ``context``, ``options``.
    """
    import asyncio

    from .runner import run_tests

    return asyncio.run(run_tests(run_dir, fmf_root, **kwargs))
