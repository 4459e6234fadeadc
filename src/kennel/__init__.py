"""kennel: run open-weight LLMs on hardware you own.

The public API is small on purpose: probe the machine, read a model's shape, estimate the fit.
"""

from __future__ import annotations

from kennel.errors import KennelError

__version__ = "0.1.0"

__all__ = ["KennelError", "__version__"]
