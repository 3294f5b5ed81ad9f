"""Factorising the symmetric positive-definite coefficient matrix of the MME.

One small interface, :class:`Factor`, over three back ends chosen by size and
availability:

* ``"dense"``  -- LAPACK Cholesky of the dense matrix (small systems; fastest there);
* ``"cholmod"`` -- CHOLMOD through scikit-sparse, if installed (optional accelerator);
* ``"splu"``   -- scipy's SuperLU on the sparse matrix (always available).

Every back end gives the same three things: ``solve``, ``logdet`` and selected
blocks of the inverse (the diagonal blocks PEV needs, and the fixed-effect block).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .errors import EstimationError

__all__ = ["Factor", "factorize", "BACKENDS", "DENSE_MAX"]

#: Systems up to this order are factorised densely by default.
DENSE_MAX = 2500

BACKENDS = ("auto", "dense", "splu", "cholmod")


def _cholmod() -> Any | None:
    try:  # optional accelerator
        from sksparse import cholmod  # type: ignore[import-not-found]
    except Exception:  # pragma: no cover - depends on the environment
        return None
    return cholmod


class Factor:
    """A factorisation of a symmetric positive-definite matrix ``C``.

    Use :func:`factorize` to build one.

    Attributes
    ----------
    backend : str
        ``"dense"``, ``"cholmod"`` or ``"splu"``.
    n : int
        Order of ``C``.
    """

    def __init__(self, backend: str, n: int, payload: Any, logdet: float) -> None:
        self.backend = backend
        self.n = n
        self._payload = payload
        self._logdet = logdet

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Return ``C^-1 rhs`` (``rhs`` a vector or a matrix)."""
        if self.backend == "dense":
            return sla.cho_solve((self._payload, True), rhs, check_finite=False)
        if self.backend == "cholmod":
            return self._payload(rhs)
        if rhs.ndim == 1:
            return self._payload.solve(rhs)
        return self._payload.solve(np.asfortranarray(rhs))

    def logdet(self) -> float:
        """``log|C|``."""
        return self._logdet

    def inverse_columns(self, cols: np.ndarray, rows: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
        """``C^-1[rows][:, cols]`` computed by solving for unit vectors in chunks."""
        cols = np.asarray(cols, dtype=np.int64)
        rows = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), len(cols)))
        for start in range(0, len(cols), chunk):
            c = cols[start : start + chunk]
            unit = np.zeros((self.n, len(c)))
            unit[c, np.arange(len(c))] = 1.0
            out[:, start : start + len(c)] = self.solve(unit)[rows]
        return out

    def block_diagonal(self, starts: np.ndarray, sizes: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Diagonal blocks of ``C^-1`` for a partition into consecutive blocks.

        Parameters
        ----------
        starts, sizes : numpy.ndarray
            For every index ``i`` of ``C``: the first index and the size of the block
            that contains ``i``.

        Returns
        -------
        numpy.ndarray
            ``out[i, m] = C^-1[starts[i] + m, i]`` for ``m < sizes[i]`` (NaN beyond).
        """
        width = int(sizes.max()) if len(sizes) else 0
        out = np.full((self.n, width), np.nan)
        offsets = np.arange(width)
        if self.backend == "dense":
            inv = sla.cho_solve((self._payload, True), np.eye(self.n), check_finite=False)
            for m in offsets:
                ok = m < sizes
                idx = np.nonzero(ok)[0]
                out[idx, m] = inv[starts[idx] + m, idx]
            return out
        for first in range(0, self.n, chunk):
            c = np.arange(first, min(first + chunk, self.n))
            unit = np.zeros((self.n, len(c)))
            unit[c, np.arange(len(c))] = 1.0
            sol = self.solve(unit)
            for m in offsets:
                ok = m < sizes[c]
                out[c[ok], m] = sol[starts[c[ok]] + m, np.nonzero(ok)[0]]
        return out


def factorize(C: sp.spmatrix | np.ndarray, backend: str = "auto") -> Factor:
    """Factorise a symmetric positive-definite matrix.

    Parameters
    ----------
    C : scipy.sparse matrix or numpy.ndarray
        The coefficient matrix.
    backend : {"auto", "dense", "splu", "cholmod"}
        ``"auto"`` picks dense for small systems, CHOLMOD when installed, else SuperLU.

    Returns
    -------
    Factor

    Raises
    ------
    EstimationError
        If ``C`` is not (numerically) positive definite.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    n = C.shape[0]
    if backend == "auto":
        backend = "dense" if n <= DENSE_MAX else ("cholmod" if _cholmod() is not None else "splu")
    if backend == "dense":
        dense = C.toarray() if sp.issparse(C) else np.asarray(C)
        try:
            low = sla.cholesky(dense, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise EstimationError(
                "the mixed model equations are singular (not positive definite); a fixed effect "
                "may be confounded with a random term or a variance ratio is extreme"
            ) from None
        return Factor("dense", n, low, 2.0 * float(np.log(np.diag(low)).sum()))
    C = sp.csc_matrix(C)
    if backend == "cholmod":
        cholmod = _cholmod()
        if cholmod is None:
            raise ValueError("backend='cholmod' needs scikit-sparse (pip install scikit-sparse)")
        try:
            f = cholmod.cholesky(C)
        except Exception as exc:  # CholmodNotPositiveDefiniteError
            raise EstimationError(f"the mixed model equations are not positive definite: {exc}") from None
        return Factor("cholmod", n, f, float(f.logdet()))
    try:
        lu = spla.splu(C, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options={"SymmetricMode": True})
    except RuntimeError:
        raise EstimationError(
            "the mixed model equations are singular; a fixed effect may be confounded with a "
            "random term"
        ) from None
    du = lu.U.diagonal()
    if (du <= 0).any() or not np.isfinite(du).all():
        raise EstimationError(
            "the mixed model equations are not positive definite (a non-positive pivot was met)"
        )
    return Factor("splu", n, lu, float(np.log(du).sum()))
