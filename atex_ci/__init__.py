"""atex-ci: run FMF tests on many machines in parallel, with ad-hoc scheduling.

The command line is a thin shell over this toolbox; ``atex_ci.run`` is the
synchronous entry point for scripts. Submodules are imported lazily so that
``import atex_ci`` (and discovery alone) stays cheap.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .orchestrator import RunSummary

try:
    # Set at build time from the git tag (pyproject.toml, [tool.hatch.version]).
    __version__ = version("atex-ci")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def run(run_dir: str, fmf_root: str = ".", **kwargs: Any) -> RunSummary:
    """Discover the fmf tests under ``fmf_root`` and run them; see ``orchestrator.run_tests``.

    Blocks until the run ends and returns its RunSummary (``.exit_code``,
    ``.results``). Keyword arguments: ``plans``, ``context``, ``options``.
    """
    import asyncio

    from .orchestrator import run_tests

    return asyncio.run(run_tests(run_dir, fmf_root, **kwargs))
