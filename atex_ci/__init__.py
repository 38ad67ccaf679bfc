"""atex-ci: run FMF tests on many machines in parallel, with ad-hoc scheduling."""

from __future__ import annotations

__version__ = "0.1.0"
