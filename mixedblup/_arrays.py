"""Array helpers shared by the pedigree and design code.

NumPy 2.3+ finds the distinct values of an integer array with a hash table
(``np.unique`` without ``return_*``); on this project's typical inputs (millions of
codes) that is about ten times slower than sorting, measured 2.5 s against 0.19 s for
3 million codes with NumPy 2.4.  These helpers give ``np.unique``'s result by sorting,
or by a mark array when the codes are known to lie in ``range(size)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["distinct", "distinct_codes"]


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a 1-D array (``np.unique(values)``, by sorting)."""
    out = np.sort(np.asarray(values).ravel())
    if out.size < 2:
        return out
    keep = np.empty(out.size, dtype=bool)
    keep[0] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out[keep]


def distinct_codes(codes: np.ndarray, size: int) -> np.ndarray:
    """The sorted distinct values of integer ``codes`` that all lie in ``range(size)`` (O(n + size))."""
    mark = np.zeros(size, dtype=bool)
    mark[codes] = True
    return np.flatnonzero(mark)
