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

import numpy as np

__all__ = ["blas_threads", "small_kernel_threads", "cholesky_inverse", "SMALL_DENSE"]

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
    """Thread count for a dense kernel of this order.

    1 for small kernels, and for every kernel when the machine is busy (one-minute load
    average at least the number of cores less one half): OpenBLAS threads that wait for a
    busy core made a 2,000-order Cholesky 7 times slower than one thread on a shared
    2-core machine.  Otherwise ``None`` (the library's own thread count).
    """
    env = os.environ.get("MIXEDBLUP_BLAS_THREADS")
    if env:
        return int(env)
    if order <= SMALL_DENSE:
        return 1
    return 1 if _busy() else None


def _busy() -> bool:
    """Whether the machine's load leaves no idle core for a second BLAS thread."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - platform dependent
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - platform dependent
        return False
    return cores <= 1 or load >= cores - 0.5


def cholesky_inverse(low: np.ndarray) -> np.ndarray:
    """``(L L')^-1`` from a lower Cholesky factor ``L``, by LAPACK ``potri`` (symmetrised).

    A third of the work of solving against the identity (``cho_solve(L, I)``).

    Parameters
    ----------
    low : numpy.ndarray
        Lower-triangular Cholesky factor (only its lower triangle is read).

    Returns
    -------
    numpy.ndarray
        The symmetric inverse.
    """
    from scipy.linalg import lapack

    n = low.shape[0]
    if n == 0:
        return np.zeros((0, 0))
    with blas_threads(small_kernel_threads(n)):
        inv, info = lapack.dpotri(low, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"potri failed (info={info})")
    return _mirror_lower(np.asarray(inv))


def _mirror_lower(a: np.ndarray) -> np.ndarray:
    """Copy the strict lower triangle onto the upper one (in place), blockwise."""
    n = a.shape[0]
    step = 512
    for j0 in range(0, n, step):
        j1 = min(n, j0 + step)
        # rows i >= j1 of columns j0:j1 -> upper block (j0:j1, i)
        a[j0:j1, j1:] = a[j1:, j0:j1].T
        blk = a[j0:j1, j0:j1]
        iu = np.triu_indices(j1 - j0, 1)
        blk[iu] = blk.T[iu]
    return a
