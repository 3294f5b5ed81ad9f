"""Factorising the symmetric positive-definite coefficient matrix of the MME.

One interface, :class:`Factor` (``solve``, ``logdet`` and selected blocks of the
inverse), over several back ends:

* ``"dense"``   -- LAPACK Cholesky of the dense matrix (small systems);
* ``"schur"``   -- a diagonal block (a large random term with independent levels, e.g.
  the biggest factor of a crossed design) is eliminated exactly and the Schur
  complement onto the remaining equations is factorised densely or sparsely
  (the block structure MixedModels.jl exploits);
* ``"cholmod"`` -- CHOLMOD through scikit-sparse, if installed and asked for (never chosen
  by ``"auto"``: with AI-REML's selected inverses the own LDL' measured faster);
* ``"ldl"``     -- a sparse ``L D L'`` compiled with numba (:mod:`mixedblup.selinv`) against a
  symbolic analysis (approximate-minimum-degree ordering, elimination tree, pattern of
  ``L``) done once per sparsity pattern; its selected inversion gives the diagonal
  blocks of ``C^-1`` (PEV) and the traces REML derivatives need (the default for large
  sparse systems);
* ``"splu"``    -- scipy's SuperLU in symmetric mode (always available).

``factorize(C, "auto", eliminate=...)`` picks among them by structure and size.
"""

from __future__ import annotations

from typing import Any

import re

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._accel import jit
from ._blas import blas_threads, cholesky_inverse, small_kernel_threads
from .errors import EstimationError

__all__ = ["Factor", "factorize", "BACKENDS", "DENSE_MAX"]

#: Systems (or Schur complements) up to this order are factorised densely by default.
DENSE_MAX = 2500

#: Largest Schur complement that is still factorised densely after an elimination.
SCHUR_DENSE_MAX = 6000

BACKENDS = ("auto", "dense", "schur", "ldl", "splu", "cholmod")

_SINGULAR = (
    "the mixed model equations are singular (not positive definite); a fixed effect may be "
    "confounded with a random term, or a variance ratio is extreme"
)


#: A pivot below this fraction of its diagonal element of ``C`` (the squared norm an
#: equation keeps after projection on the equations eliminated before it) means ``C`` is
#: singular to working precision: the solution would be rounding noise (E7).  The fixed
#: part's rank test (``design.RANK_TOL = 1e-7`` on the QR diagonal, 1e-14 on this scale)
#: is a little finer; rounding alone leaves pivots of a singular ``C`` near 1e-14.
PIVOT_TOL = 1e-13


def _singular(equations: Any = (), pivots: Any = ()) -> EstimationError:
    """The singular-system error, carrying the offending equations (original indices).

    ``equations`` and ``pivots`` (relative pivots, NaN where the factorisation broke
    down) are attached as attributes; :func:`mixedblup.mme.solve_mme` names their
    blocks.
    """
    err = EstimationError(_SINGULAR)
    err.equations = np.asarray(equations, dtype=np.int64).ravel()  # type: ignore[attr-defined]
    err.pivots = np.asarray(pivots, dtype=float).ravel()  # type: ignore[attr-defined]
    return err


def _check_pivots(pivots: np.ndarray, diagonal: np.ndarray, index: np.ndarray) -> tuple[float, int]:
    """Raise :func:`_singular` if a relative pivot ``pivots / diagonal`` is below ``PIVOT_TOL``.

    ``pivots[k]`` is the pivot of original equation ``index[k]`` (elimination order),
    ``diagonal`` the diagonal of ``C`` in original order.  Returns the smallest relative
    pivot and its equation (a cheap conditioning indicator, reported in diagnostics).
    """
    if len(pivots) == 0:
        return np.nan, -1
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = pivots / diagonal[index]
    bad = ~(rel > PIVOT_TOL)  # NaN counts as bad
    if bad.any():
        raise _singular(index[bad], rel[bad])
    k = int(np.argmin(rel))
    return float(rel[k]), int(index[k])


def _cholmod() -> Any | None:
    try:  # optional accelerator
        from sksparse import cholmod  # type: ignore[import-not-found]
    except Exception:  # pragma: no cover - depends on the environment
        return None
    return cholmod


def _units(n: int, cols: np.ndarray) -> np.ndarray:
    unit = np.zeros((n, len(cols)))
    unit[cols, np.arange(len(cols))] = 1.0
    return unit


class Factor:
    """A factorisation of a symmetric positive-definite matrix ``C``.

    Build one with :func:`factorize`.  Subclasses implement ``solve`` and may
    override the inverse-block helpers with faster versions.

    Attributes
    ----------
    backend : str
        Name of the back end.
    n : int
        Order of ``C``.
    """

    backend = "abstract"

    #: Smallest relative pivot (pivot / diagonal element of ``C``) and its equation, when
    #: the back end checks its pivots (NaN and -1 otherwise); see :data:`PIVOT_TOL`.
    min_pivot: float = np.nan
    min_pivot_equation: int = -1

    def __init__(self, n: int, logdet: float) -> None:
        self.n = n
        self._logdet = logdet

    def solve(self, rhs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Return ``C^-1 rhs`` (``rhs`` a vector or a matrix)."""
        raise NotImplementedError

    def logdet(self) -> float:
        """``log|C|``."""
        return self._logdet

    def inverse_columns(self, cols: np.ndarray, rows: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
        """``C^-1[rows][:, cols]``, by solving for unit vectors in chunks."""
        cols = np.asarray(cols, dtype=np.int64)
        rows = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), len(cols)))
        for start in range(0, len(cols), chunk):
            c = cols[start: start + chunk]
            out[:, start: start + len(c)] = self.solve(_units(self.n, c))[rows]
        return out

    def inverse_block(self, idx: np.ndarray) -> np.ndarray:
        """The symmetric block ``C^-1[idx][:, idx]`` (e.g. ``C^11``, the fixed effects'
        ``var(beta_hat) / sigma_e^2``); generic version: one solve per column."""
        idx = np.asarray(idx, dtype=np.int64)
        if not len(idx):
            return np.zeros((0, 0))
        out = np.asarray(self.solve(_units(self.n, idx)))[idx]
        return (out + out.T) / 2

    def inverse_entries(self, rows: np.ndarray, cols: np.ndarray, chunk: int = 256) -> np.ndarray:
        """``C^-1[rows[m], cols[m]]`` for a list of pairs.

        The generic version solves for the unit vectors of the distinct columns (in
        chunks); back ends with an explicit or selected inverse override it.
        """
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        out = np.empty(len(rows))
        uniq, where = np.unique(cols, return_inverse=True)
        for start in range(0, len(uniq), chunk):
            c = uniq[start: start + chunk]
            sol = self.solve(_units(self.n, c))
            sel = np.nonzero((where >= start) & (where < start + len(c)))[0]
            out[sel] = sol[rows[sel], where[sel] - start]
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
        for first in range(0, self.n, chunk):
            c = np.arange(first, min(first + chunk, self.n))
            sol = self.solve(_units(self.n, c))
            _gather(out, sol, c, starts, sizes)
        return out


@jit
def _schur_dense_entries(rows, cols, pe, pr, Wp, Wi, Wx, d, Sinv):
    """Entries of ``C^-1`` of a Schur factor with a dense ``S^-1`` (see
    :meth:`SchurFactor.inverse_entries`); ``W`` in CSC by eliminated equation."""
    out = np.empty(len(rows), dtype=np.float64)
    for m in range(len(rows)):
        e1 = pe[rows[m]]
        e2 = pe[cols[m]]
        if e1 < 0 and e2 < 0:
            out[m] = Sinv[pr[rows[m]], pr[cols[m]]]
        elif e1 >= 0 and e2 >= 0:
            acc = 1.0 / d[e1] if e1 == e2 else 0.0
            for p in range(Wp[e1], Wp[e1 + 1]):
                a = Wi[p]
                s = 0.0
                for q in range(Wp[e2], Wp[e2 + 1]):
                    s += Sinv[a, Wi[q]] * Wx[q]
                acc += Wx[p] * s
            out[m] = acc
        else:
            e = e1 if e1 >= 0 else e2
            r = pr[cols[m]] if e1 >= 0 else pr[rows[m]]
            acc = 0.0
            for p in range(Wp[e], Wp[e + 1]):
                acc += Wx[p] * Sinv[Wi[p], r]
            out[m] = -acc
    return out


def _expand(indptr: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the nonzeros of columns ``cols`` of a CSC matrix, and which entry of
    ``cols`` each belongs to (concatenated in the order of ``cols``)."""
    starts = indptr[cols].astype(np.int64)
    counts = (indptr[cols + 1] - indptr[cols]).astype(np.int64)
    owner = np.repeat(np.arange(len(cols)), counts)
    first = np.cumsum(counts) - counts
    idx = starts[owner] + (np.arange(int(counts.sum())) - first[owner])
    return idx, owner


def _gather(out: np.ndarray, sol: np.ndarray, cols: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> None:
    """Copy ``sol[starts[c] + m, j]`` (``sol[:, j]`` is column ``cols[j]``) into ``out[c, m]``."""
    for m in range(out.shape[1]):
        ok = m < sizes[cols]
        j = np.nonzero(ok)[0]
        out[cols[j], m] = sol[starts[cols[j]] + m, j]


class DenseFactor(Factor):
    """LAPACK Cholesky factor of a dense matrix."""

    backend = "dense"

    def __init__(self, C: np.ndarray) -> None:
        try:
            with blas_threads(small_kernel_threads(len(C))):
                low = sla.cholesky(C, lower=True, check_finite=False)
        except np.linalg.LinAlgError as exc:
            found = re.search(r"(\d+)-th leading minor", str(exc))
            raise _singular([int(found.group(1)) - 1] if found else [], [np.nan] if found else []) from None
        diag = np.diag(low)
        if not (diag > 0).all() or not np.isfinite(diag).all():
            raise _singular(np.flatnonzero(~(diag > 0)), np.full(int((~(diag > 0)).sum()), np.nan))
        self.min_pivot, self.min_pivot_equation = _check_pivots(diag ** 2, np.diag(C), np.arange(len(C)))
        super().__init__(len(C), 2.0 * float(np.log(diag).sum()))
        self._low = low
        self._inverse: np.ndarray | None = None

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        with blas_threads(small_kernel_threads(self.n)):
            return sla.cho_solve((self._low, True), rhs, check_finite=False)

    def inverse(self) -> np.ndarray:
        """The full inverse (computed once, by LAPACK ``potri`` on the factor)."""
        if self._inverse is None:
            self._inverse = cholesky_inverse(self._low)
        return self._inverse

    def inverse_entries(self, rows: np.ndarray, cols: np.ndarray, chunk: int = 256) -> np.ndarray:
        return self.inverse()[np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)]

    def inverse_columns(self, cols: np.ndarray, rows: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
        inv = self.inverse()
        rows = np.arange(self.n) if rows is None else np.asarray(rows)
        return inv[np.ix_(rows, np.asarray(cols))]

    def block_diagonal(self, starts: np.ndarray, sizes: np.ndarray, chunk: int = 256) -> np.ndarray:
        width = int(sizes.max()) if len(sizes) else 0
        out = np.full((self.n, width), np.nan)
        _gather(out, self.inverse(), np.arange(self.n), starts, sizes)
        return out


class SparseLUFactor(Factor):
    """SuperLU in symmetric mode (no pivoting off the diagonal): ``log|C| = sum log U_ii``."""

    backend = "splu"

    def __init__(self, C: sp.csc_matrix) -> None:
        try:
            lu = spla.splu(C, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
        except RuntimeError:
            raise _singular() from None
        du = lu.U.diagonal()
        order = np.argsort(lu.perm_c)  # U[j, j] is the pivot of equation order[j]
        if not np.array_equal(lu.perm_c, lu.perm_r):  # pivoted off the diagonal: not PD
            raise _singular()
        if (du <= 0).any() or not np.isfinite(du).all():
            bad = ~((du > 0) & np.isfinite(du))
            raise _singular(order[bad], np.full(int(bad.sum()), np.nan))
        self.min_pivot, self.min_pivot_equation = _check_pivots(du, C.diagonal(), order)
        super().__init__(C.shape[0], float(np.log(du).sum()))
        self._lu = lu

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return self._lu.solve(rhs if rhs.ndim == 1 else np.asfortranarray(rhs))


class CholmodFactor(Factor):
    """CHOLMOD supernodal Cholesky (scikit-sparse)."""

    backend = "cholmod"

    def __init__(self, C: sp.csc_matrix) -> None:
        cholmod = _cholmod()
        if cholmod is None:
            raise ValueError("backend='cholmod' needs scikit-sparse (pip install scikit-sparse)")
        try:
            f = cholmod.cholesky(C)
        except Exception:  # CholmodNotPositiveDefiniteError
            raise EstimationError(_SINGULAR) from None
        super().__init__(C.shape[0], float(f.logdet()))
        self._f = f

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return self._f(rhs)


class SchurFactor(Factor):
    """Exact elimination of a diagonal block, then a factor of the Schur complement.

    With ``C`` permuted to ``[[D, B'], [B, E]]`` (``D`` diagonal):
    ``S = E - B D^-1 B'``, ``log|C| = sum log D + log|S|`` and
    ``C^-1 = [[D^-1 + W' S^-1 W, -W' S^-1], [-S^-1 W, S^-1]]`` with ``W = B D^-1``.
    """

    backend = "schur"

    def __init__(self, C: sp.csc_matrix, eliminate: np.ndarray, inner: str = "auto") -> None:
        n = C.shape[0]
        elim = np.asarray(eliminate, dtype=np.int64)
        mask = np.zeros(n, dtype=bool)
        mask[elim] = True
        rest = np.nonzero(~mask)[0]
        C = sp.csc_matrix(C)
        d = C.diagonal()[elim]
        if (d <= 0).any():
            raise _singular(elim[d <= 0], np.full(int((d <= 0).sum()), np.nan))
        B = C[rest][:, elim].tocsr()
        W = (B @ sp.diags(1.0 / d)).tocsr()
        E = C[rest][:, rest]
        S = E - W @ B.T
        self._elim, self._rest, self._d, self._W = elim, rest, d, W
        if inner == "auto":
            inner = "dense" if len(rest) <= SCHUR_DENSE_MAX else "ldl"
        # pivots of S are checked against C's diagonal: S_ii <= C_ii, and a Schur complement
        # that cancels to rounding level is as singular as a tiny pivot
        s_diag = S.diagonal()
        c_diag = C.diagonal()[rest]
        try:
            if len(rest) and not (s_diag / c_diag > PIVOT_TOL).all():
                bad = np.flatnonzero(~(s_diag / c_diag > PIVOT_TOL))
                raise _singular(bad, s_diag[bad] / c_diag[bad])
            self._inner = _build(S.toarray() if inner == "dense" else sp.csc_matrix(S), inner)
        except EstimationError as exc:
            eq = getattr(exc, "equations", np.zeros(0, dtype=np.int64))
            raise _singular(rest[eq], getattr(exc, "pivots", ())) from None
        # conditioning indicator relative to C's diagonal: the smaller of the inner factor's
        # smallest pivot and the smallest S_jj / C_jj (both bound the true pivots from above)
        candidates = []
        j = int(getattr(self._inner, "min_pivot_equation", -1))
        if j >= 0:
            candidates.append((float(self._inner.min_pivot * s_diag[j] / c_diag[j]), j))
        if len(rest):
            k = int(np.argmin(s_diag / c_diag))
            candidates.append((float(s_diag[k] / c_diag[k]), k))
        if candidates:
            value, j = min(candidates)
            self.min_pivot, self.min_pivot_equation = value, int(rest[j])
        super().__init__(n, float(np.log(d).sum()) + self._inner.logdet())

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        r1 = rhs[self._elim]
        r2 = rhs[self._rest]
        d = self._d if rhs.ndim == 1 else self._d[:, None]
        x2 = self._inner.solve(r2 - self._W @ r1)
        x1 = r1 / d - self._W.T @ x2
        out = np.empty_like(rhs, dtype=float)
        out[self._elim] = x1
        out[self._rest] = x2
        return out

    def block_diagonal(self, starts: np.ndarray, sizes: np.ndarray, chunk: int = 256) -> np.ndarray:
        width = int(sizes.max()) if len(sizes) else 0
        out = np.full((self.n, width), np.nan)
        elim, rest = self._elim, self._rest
        if (sizes[elim] != 1).any():
            return super().block_diagonal(starts, sizes, chunk)
        # eliminated singletons: 1/d + w_j' S^-1 w_j, from the entries of S^-1 on the
        # pattern (no dense solves with one right-hand side per eliminated equation)
        out[elim, 0] = self.inverse_entries(elim, elim)
        # blocks inside the rest: blocks of S^-1 (positions mapped into the rest)
        pos = np.full(self.n, -1)
        pos[rest] = np.arange(len(rest))
        inner = self._inner.block_diagonal(pos[starts[rest]], sizes[rest], chunk)
        out[rest, : inner.shape[1]] = inner
        return out

    def _inner_entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``S^-1[rows, cols]`` (positions within the rest), exact also off a selected pattern."""
        out = self._inner.inverse_entries(rows, cols)
        bad = ~np.isfinite(out)
        if bad.any():
            out[bad] = Factor.inverse_entries(self._inner, rows[bad], cols[bad])
        return out

    def inverse_entries(self, rows: np.ndarray, cols: np.ndarray, chunk: int = 256) -> np.ndarray:
        """``C^-1[rows[m], cols[m]]`` from the block formula and entries of ``S^-1``.

        ``C^-1[e, r] = -sum_a W[a, e] S^-1[a, r]`` and
        ``C^-1[e, f] = [e = f] / d_e + sum_{a, b} W[a, e] W[b, f] S^-1[a, b]``: sums over
        the nonzeros of ``W``'s columns, so the cost is about the squared number of
        neighbours of an eliminated equation per pair.
        """
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        out = np.zeros(len(rows))
        n_e = len(self._elim)
        pe = np.full(self.n, -1, dtype=np.int64)
        pe[self._elim] = np.arange(n_e)
        pr = np.full(self.n, -1, dtype=np.int64)
        pr[self._rest] = np.arange(len(self._rest))
        if not hasattr(self, "_Wc"):
            Wc = sp.csc_matrix(self._W)
            Wc.sort_indices()
            self._Wc = Wc
        Wc = self._Wc
        if isinstance(self._inner, DenseFactor):
            return _schur_dense_entries(rows, cols, pe, pr, Wc.indptr.astype(np.int64),
                                        Wc.indices.astype(np.int64), Wc.data, self._d, self._inner.inverse())
        a_e, b_e = pe[rows], pe[cols]
        # rest x rest
        rr = np.flatnonzero((a_e < 0) & (b_e < 0))
        if len(rr):
            out[rr] = self._inner_entries(pr[rows[rr]], pr[cols[rr]])
        # elim x rest (either order)
        er = np.flatnonzero((a_e >= 0) ^ (b_e >= 0))
        if len(er):
            e = np.where(a_e[er] >= 0, a_e[er], b_e[er])
            r = np.where(a_e[er] >= 0, pr[cols[er]], pr[rows[er]])
            idx, owner = _expand(Wc.indptr, e)
            vals = self._inner_entries(Wc.indices[idx].astype(np.int64), r[owner])
            out[er] = -np.bincount(owner, weights=Wc.data[idx] * vals, minlength=len(er))
        # elim x elim
        ee = np.flatnonzero((a_e >= 0) & (b_e >= 0))
        if len(ee):
            e1, e2 = a_e[ee], b_e[ee]
            out[ee] = np.where(e1 == e2, 1.0 / self._d[e1], 0.0)
            i1, o1 = _expand(Wc.indptr, e1)
            # every pair (a in column e1, b in column e2) of each requested pair
            n2 = np.diff(Wc.indptr)[e2][o1]
            rep = np.repeat(np.arange(len(i1)), n2)
            i2, _ = _expand(Wc.indptr, e2[o1])
            owner = o1[rep]
            vals = self._inner_entries(Wc.indices[i1[rep]].astype(np.int64), Wc.indices[i2].astype(np.int64))
            out[ee] += np.bincount(owner, weights=Wc.data[i1[rep]] * Wc.data[i2] * vals, minlength=len(ee))
        return out

    def inverse_columns(self, cols: np.ndarray, rows: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
        pos = np.full(self.n, -1)
        pos[self._rest] = np.arange(len(self._rest))
        cols = np.asarray(cols, dtype=np.int64)
        rows_arr = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        if (pos[cols] >= 0).all() and (pos[rows_arr] >= 0).all():
            return self._inner.inverse_columns(pos[cols], pos[rows_arr], chunk)
        return super().inverse_columns(cols, rows, chunk)


class SparseLDLFactor(Factor):
    """Numba ``L D L'`` against a cached symbolic analysis, with selected inversion."""

    backend = "ldl"

    def __init__(self, C: sp.csc_matrix, symbolic: Any = None) -> None:
        from .selinv import LDLFactor

        C = sp.csc_matrix(C)
        sym = symbolic if symbolic is not None else symbolic_for(C)
        try:
            f = LDLFactor(C, sym)
        except ValueError:  # pattern outside the given analysis: analyse this one
            sym = symbolic_for(C)
            f = LDLFactor(C, sym)
        perm = sym.perm
        n1 = int(sym.n1)
        if f.ok:
            piv = np.concatenate([np.asarray(f.D[:n1], dtype=float), np.diag(f.Ls) ** 2])
            if len(piv) == C.shape[0]:
                self.min_pivot, self.min_pivot_equation = _check_pivots(piv, C.diagonal(), perm)
        else:
            D = np.asarray(f.D[:n1], dtype=float)
            bad = np.flatnonzero(~((D > 0) & np.isfinite(D)))[:1]
            if bad.size == 0:  # the dense trailing block failed
                bad = np.arange(n1, min(n1 + 1, len(perm)))
            raise _singular(perm[bad], [np.nan] * len(bad))
        super().__init__(C.shape[0], f.logdet())
        self._f = f

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return self._f.solve(rhs)

    def inverse_entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``C^-1[rows[m], cols[m]]`` for pairs on the pattern of ``L + L'`` (NaN elsewhere)."""
        return self._f.inverse_entries(rows, cols)

    def inverse_columns(self, cols: np.ndarray, rows: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
        """``C^-1[rows][:, cols]``; a block given by ``rows`` (e.g. the fixed-effect block
        ``C^11``) comes from forward substitutions along the elimination tree only
        (:meth:`mixedblup.selinv.LDLFactor.inverse_block`)."""
        if rows is not None:
            cols = np.asarray(cols, dtype=np.int64)
            rows = np.asarray(rows, dtype=np.int64)
            idx, where = np.unique(np.concatenate([rows, cols]), return_inverse=True)
            G = self._f.inverse_block(idx)
            if G is not None:
                return G[np.ix_(where[: len(rows)], where[len(rows):])]
        return super().inverse_columns(cols, rows, chunk)

    def inverse_block(self, idx: np.ndarray) -> np.ndarray:
        """``C^-1[idx][:, idx]`` by forward substitutions along the elimination tree
        (:meth:`mixedblup.selinv.LDLFactor.inverse_block`); solves when that is too large."""
        idx = np.asarray(idx, dtype=np.int64)
        if not len(idx):
            return np.zeros((0, 0))
        G = self._f.inverse_block(idx)
        return super().inverse_block(idx) if G is None else G

    def block_diagonal(self, starts: np.ndarray, sizes: np.ndarray, chunk: int = 256) -> np.ndarray:
        width = int(sizes.max()) if len(sizes) else 0
        out = np.full((self.n, width), np.nan)
        idx = np.arange(self.n)
        for m in range(width):
            ok = m < sizes
            i = idx[ok]
            out[i, m] = self._f.inverse_entries(starts[i] + m, i)
        missing = np.zeros(self.n, dtype=bool)
        for m in range(width):
            missing |= (m < sizes) & np.isnan(out[:, m])
        cols = np.nonzero(missing)[0]
        for first in range(0, len(cols), chunk):  # pairs off the pattern (rare): solves
            c = cols[first: first + chunk]
            _gather(out, self.solve(_units(self.n, c)), c, starts, sizes)
        return out


_SYMBOLIC_CACHE: dict[tuple, Any] = {}


def symbolic_for(C: sp.spmatrix) -> Any:
    """Symbolic analysis of ``C``'s pattern, cached by the pattern (a few most recent)."""
    from .selinv import symbolic

    A = sp.csc_matrix(C)
    A.sort_indices()
    key = (A.shape[0], A.nnz, hash(A.indptr.tobytes()), hash(A.indices.tobytes()))
    sym = _SYMBOLIC_CACHE.get(key)
    if sym is None:
        sym = symbolic(A)
        if len(_SYMBOLIC_CACHE) >= 4:
            _SYMBOLIC_CACHE.pop(next(iter(_SYMBOLIC_CACHE)))
        _SYMBOLIC_CACHE[key] = sym
    return sym


def _build(C: sp.spmatrix | np.ndarray, backend: str, symbolic: Any = None) -> Factor:
    if backend == "dense":
        return DenseFactor(C.toarray() if sp.issparse(C) else np.asarray(C))
    if backend == "cholmod":
        return CholmodFactor(sp.csc_matrix(C))
    if backend == "ldl":
        return SparseLDLFactor(sp.csc_matrix(C), symbolic)
    return SparseLUFactor(sp.csc_matrix(C))


def factorize(C: sp.spmatrix | np.ndarray, backend: str = "auto", eliminate: np.ndarray | None = None,
              symbolic: Any = None) -> Factor:
    """Factorise a symmetric positive-definite matrix.

    Parameters
    ----------
    C : scipy.sparse matrix or numpy.ndarray
        The coefficient matrix.
    backend : {"auto", "dense", "schur", "ldl", "splu", "cholmod"}
        ``"auto"``: eliminate ``eliminate`` when given and worthwhile, otherwise dense
        for small systems, CHOLMOD when installed, else ``"ldl"``.
    eliminate : numpy.ndarray, optional
        Indices whose block of ``C`` is diagonal (a random term with independent
        levels and one coefficient); used by the ``"schur"`` back end.
    symbolic : selinv.Symbolic or callable, optional
        A symbolic analysis of a pattern containing ``C``'s (or a function returning
        one), for the ``"ldl"`` back end; default: analysed and cached by pattern.

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
    has_block = eliminate is not None and len(eliminate) > 0
    if backend == "auto":
        if has_block and len(eliminate) >= 64 and n - len(eliminate) <= DENSE_MAX:
            backend = "schur"
        elif n <= DENSE_MAX:
            backend = "dense"
        else:
            backend = "ldl"  # faster than CHOLMOD here once REML needs selected inverses (docs/performance.md)
    if backend == "schur":
        if not has_block:
            backend = "dense" if n <= DENSE_MAX else "ldl"
        else:
            return SchurFactor(sp.csc_matrix(C), np.asarray(eliminate))
    if backend == "ldl" and callable(symbolic):
        symbolic = symbolic()
    return _build(C, backend, symbolic)
