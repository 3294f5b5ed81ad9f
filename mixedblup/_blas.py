"""Capping the BLAS thread pool around small dense kernels (no threadpoolctl needed).

On few cores (and on busy machines) OpenBLAS's threads make small dense kernels
several times slower than one thread: they spin waiting for work.  ``blas_threads(1)``
sets the thread count of every OpenBLAS loaded in the process (numpy's and scipy's
wheels each ship one) for the duration and restores it afterwards.  It does nothing
where no OpenBLAS is found (MKL, Accelerate, non-Linux), and ``MIXEDBLUP_BLAS_THREADS``
overrides the count used for small kernels.
"""

from __future__ import annotations

import ctypes
import os
import re
from contextlib import contextmanager
from collections.abc import Iterator

__all__ = ["blas_threads", "small_kernel_threads", "SMALL_DENSE"]

#: Dense blocks up to this order run on one BLAS thread by default.
SMALL_DENSE = 2500

_LIBS: list[tuple[object, object]] | None = None


def _openblas() -> list[tuple[object, object]]:
    global _LIBS
    if _LIBS is not None:
        return _LIBS
    found: list[tuple[object, object]] = []
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", fh.read())))
        for path in paths:
            lib = ctypes.CDLL(path)
            for suffix in ("64_", "", "_64"):
                for stem in ("scipy_openblas", "openblas"):
                    setter = getattr(lib, f"{stem}_set_num_threads{suffix}", None)
                    getter = getattr(lib, f"{stem}_get_num_threads{suffix}", None)
                    if setter is not None and getter is not None:
                        getter.restype = ctypes.c_int
                        found.append((setter, getter))
                        break
                else:
                    continue
                break
    except Exception:  # pragma: no cover - platform dependent
        found = []
    _LIBS = found
    return found


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` OpenBLAS threads (``None``: leave as is)."""
    libs = _openblas() if n is not None else []
    old = [int(get()) for _, get in libs]
    try:
        for set_, _ in libs:
            set_(int(n))
        yield
    finally:
        for (set_, _), k in zip(libs, old):
            set_(k)


def small_kernel_threads(order: int) -> int | None:
    """Thread count for a dense kernel of this order: 1 for small ones, else unchanged."""
    env = os.environ.get("MIXEDBLUP_BLAS_THREADS")
    if env:
        return int(env)
    return 1 if order <= SMALL_DENSE else None
