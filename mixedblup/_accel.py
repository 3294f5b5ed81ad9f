"""Optional compilation of hot loops with numba, with a pure-Python fallback.

``jit`` compiles a function with ``numba.njit(cache=True)`` when numba is importable
and ``MIXEDBLUP_NO_NUMBA`` is not set; otherwise the function runs as plain Python
(same results, slower).  Every kernel decorated with it must be correct in both
modes: the test suite runs the kernels both ways.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["jit", "NUMBA", "numba_disabled"]


def numba_disabled() -> bool:
    """Whether compilation is switched off with ``MIXEDBLUP_NO_NUMBA=1``."""
    return os.environ.get("MIXEDBLUP_NO_NUMBA", "") not in ("", "0")


try:  # pragma: no cover - depends on the environment
    if numba_disabled():
        raise ImportError
    import numba as _numba

    NUMBA = True
except ImportError:  # pragma: no cover
    _numba = None
    NUMBA = False


def jit(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorator: ``numba.njit(cache=True, **options)`` when available, else identity.

    Usable as ``@jit`` or ``@jit(parallel=False)``.
    """

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        if not NUMBA:
            return f
        try:  # the pure version stays available as .py_func
            return _numba.njit(cache=True, **options)(f)
        except RuntimeError:  # no cache locator (e.g. code not in a file)
            return _numba.njit(**options)(f)

    return wrap(func) if func is not None else wrap
