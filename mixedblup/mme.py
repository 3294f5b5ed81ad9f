"""Henderson's mixed model equations: assemble once, solve per parameter value.

The equations are solved in *relative-factor* form, which works unchanged for
known variances and for REML, and on the boundary (zero variances, singular
covariance matrices).  For a term with coefficient covariance ``Sigma`` and level
structure ``K`` (``var(u) = K (x) Sigma``), write ``Sigma = sigma_e^2 Lambda Lambda'``
with ``Lambda`` ``k x r`` (``r = rank Sigma``) and ``u = (I (x) Lambda) b``.  Then
``b ~ N(0, sigma_e^2 K (x) I_r)`` and the coefficient matrix is

    C = [[X'WX,        X'WZT        ],
         [T'Z'WX,  T'Z'WZT + K^-1 (x) I_r]]     (T = blockdiag(I (x) Lambda_t))

With ``Sigma`` positive definite this is Henderson's matrix up to the similarity
``diag(I, T)`` and the factor ``sigma_e^2``.  Its factorisation gives everything:
``log|V| + log|X'V^-1X| = (n - p) log sigma_e^2 - log|W| + sum_t r_t log|K_t| + log|C|``
and ``r'V^-1 r = (y'Wy - sol' rhs) / sigma_e^2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .covariance import BoundCovariance
from .design import Design
from .errors import EstimationError
from .factor import Factor, factorize

__all__ = ["CrossProducts", "Solution", "cross_products", "relative_factor", "solve_mme"]


@dataclass(frozen=True)
class CrossProducts:
    """The data part of the equations, computed once per model.

    Attributes
    ----------
    XtX, XtZ, ZtZ : arrays
        ``X'WX`` (dense, sparse beyond 2,000 columns), ``X'WZ`` (dense ``p x q``, sparse
        when X is sparse) and ``Z'WZ`` (sparse).
    Xty, Zty : numpy.ndarray
        ``X'Wy`` and ``Z'Wy``.
    yty : float
        ``y'Wy``.
    n, p : int
        Observations and rank of X.
    log_w : float
        ``sum(log w)`` (0 without weights).
    offsets : tuple of int
        Start column of each term in Z.
    covariances : tuple of BoundCovariance
        Level structure of each term.
    ks : tuple of int
        Coefficients per level of each term.
    M : scipy.sparse.csc_matrix
        ``[[X'WX, X'WZ], [Z'WX, Z'WZ]]``, the data part of every coefficient matrix.
    penalty : scipy.sparse.csc_matrix
        ``blockdiag(0_p, K_t^-1 (x) I_k)``, the prior part (independent of the parameters).
    eliminate : numpy.ndarray
        Equations whose block of every coefficient matrix is diagonal (the largest
        one-column term with independent levels), for the ``"schur"`` back end.
    """

    XtX: np.ndarray
    XtZ: np.ndarray
    ZtZ: sp.csc_matrix
    Xty: np.ndarray
    Zty: np.ndarray
    yty: float
    n: int
    p: int
    log_w: float
    offsets: tuple[int, ...]
    covariances: tuple[BoundCovariance, ...]
    ks: tuple[int, ...]
    M: sp.csc_matrix = field(repr=False)
    penalty: sp.csc_matrix = field(repr=False)
    _t_pattern: sp.csc_matrix = field(repr=False)
    _t_order: np.ndarray = field(repr=False)
    eliminate: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.int64))
    _cache: dict = field(repr=False, compare=False, default_factory=dict)
    fixed_names: tuple[str, ...] = field(repr=False, default=())
    term_names: tuple[str, ...] = field(repr=False, default=())

    @property
    def size(self) -> int:
        """Order of the coefficient matrix (``p + sum_t q_t k_t``)."""
        return self.M.shape[0]

    def transform(self, lambdas: Sequence[np.ndarray]) -> sp.csc_matrix:
        """``T~ = blockdiag(I_p, I_q (x) Lambda_t)``: maps ``(beta, b)`` to ``(beta, u)``.

        Every ``Lambda_t`` is ``k_t x k_t`` (pad rank-deficient factors with zero columns).
        """
        values = [np.ones(self.p)]
        for cov, lam in zip(self.covariances, lambdas):
            values.append(np.tile(np.asarray(lam, dtype=float).ravel(), len(cov.levels)))
        T = self._t_pattern.copy()
        T.data = np.concatenate(values)[self._t_order]
        return T


    def template(self) -> sp.csc_matrix:
        """A pattern containing every coefficient matrix of the model (all ones).

        ``|T~|' |M| |T~| + |penalty|`` with full ``k x k`` relative factors, plus
        ``K_t^-1 (x) 1_{k x k}``: the last makes every block of ``C^-1`` that REML traces
        ``tr(K^-1 C^tt)`` read lie on the pattern of the factor.
        """
        key = "template"
        if key not in self._cache:
            ones = lambda A: sp.csc_matrix((np.ones(A.nnz), A.indices, A.indptr), shape=A.shape)  # noqa: E731
            T1 = ones(self._t_pattern)
            pat = T1.T @ ones(self.M) @ T1 + ones(self.penalty)
            blocks = [sp.csc_matrix((self.p, self.p))]
            for cov, k in zip(self.covariances, self.ks):
                blocks.append(sp.kron(ones(sp.csc_matrix(cov.precision)), np.ones((k, k)), format="csc"))
            pat = pat + sp.block_diag(blocks, format="csc") + sp.identity(self.size, format="csc")
            self._cache[key] = ones(sp.csc_matrix(pat))
        return self._cache[key]

    def symbolic(self, block: str = "full"):
        """Symbolic analysis (ordering, elimination tree) of :meth:`template`, once per model.

        ``block="zz"``: of its random-effect block (for ``C_zz`` alone).
        """
        if block not in self._cache:
            from .selinv import symbolic

            pat = self.template()
            if block == "zz":
                pat = pat[self.p:, self.p:]
            self._cache[block] = symbolic(pat)
        return self._cache[block]


def _t_template(p: int, qs: Sequence[int], ks: Sequence[int]) -> tuple[sp.csc_matrix, np.ndarray]:
    """Sparsity pattern of ``T~`` and the map from "row-major per block" values to CSC order."""
    rows, cols = [np.arange(p)], [np.arange(p)]
    offset = p
    for q, k in zip(qs, ks):
        a, b = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
        base = offset + np.arange(q)[:, None] * k
        rows.append((base + a.ravel()[None, :]).ravel())
        cols.append((base + b.ravel()[None, :]).ravel())
        offset += q * k
    r, c = np.concatenate(rows), np.concatenate(cols)
    order = sp.csc_matrix((np.arange(len(r), dtype=float) + 1, (r, c)), shape=(offset, offset))
    order.sort_indices()
    pattern = sp.csc_matrix((np.ones(len(r)), order.indices.copy(), order.indptr.copy()), shape=(offset, offset))
    return pattern, order.data.astype(np.int64) - 1


def cross_products(design: Design, covariances: Sequence[BoundCovariance]) -> CrossProducts:
    """Compute ``X'WX, X'WZ, Z'WZ, X'Wy, Z'Wy, y'Wy`` for a design."""
    X, y, Z = design.X, design.y, design.Z.tocsc()
    w = design.weights
    Xw = X if w is None else (sp.diags(w) @ X if sp.issparse(X) else X * w[:, None])
    yw = y if w is None else y * w
    Zw = Z if w is None else sp.diags(w) @ Z
    offsets = tuple(int(o) for o in np.cumsum([0] + [t.q for t in design.terms])[:-1])
    XtX = X.T @ Xw
    if sp.issparse(X):
        XtX = XtX.toarray() if X.shape[1] <= 2000 else sp.csc_matrix(XtX)
        XtZ = sp.csc_matrix(X.T @ Zw)
    else:
        XtZ = np.asarray((Zw.T @ X).T) if Z.shape[1] else np.zeros((X.shape[1], 0))
    ZtZ = sp.csc_matrix(Z.T @ Zw)
    M = sp.bmat([[sp.csc_matrix(XtX), sp.csc_matrix(XtZ)], [sp.csc_matrix(XtZ.T), ZtZ]], format="csc")
    if M is None or M.shape[0] == 0:
        M = sp.csc_matrix((X.shape[1] + Z.shape[1],) * 2)
    p = X.shape[1]
    ks = [t.k for t in design.terms]
    penalty = sp.block_diag(
        [sp.csc_matrix((p, p))] + [sp.kron(cov.precision, sp.identity(k), format="csc")
                                   for cov, k in zip(covariances, ks)], format="csc")
    t_pattern, t_order = _t_template(p, [len(c.levels) for c in covariances], ks)
    eliminate = _diagonal_term(p, ZtZ, covariances, ks)
    return CrossProducts(
        XtX=XtX,
        XtZ=XtZ,
        ZtZ=ZtZ,
        Xty=np.asarray(X.T @ yw).ravel(),
        Zty=np.asarray(Z.T @ yw).ravel(),
        yty=float(y @ yw),
        n=design.n,
        p=design.p,
        log_w=0.0 if w is None else float(np.log(w).sum()),
        offsets=offsets,
        covariances=tuple(covariances),
        ks=tuple(ks),
        M=M,
        penalty=penalty,
        _t_pattern=t_pattern,
        _t_order=t_order,
        eliminate=eliminate,
        fixed_names=tuple(nm for nm, k in zip(design.fixed_names, design.fixed_kept) if k),
        term_names=tuple(t.name for t in design.terms),
    )


def _diagonal_term(p: int, ZtZ: sp.csc_matrix, covariances: Sequence[BoundCovariance],
                   ks: Sequence[int]) -> np.ndarray:
    """Equations of the largest one-column identity term whose Z'Z block is diagonal."""
    best = np.zeros(0, dtype=np.int64)
    offset = 0
    for cov, k in zip(covariances, ks):
        q = len(cov.levels) * k
        if k == 1 and cov.is_identity and q > len(best):
            block = ZtZ[offset: offset + q, offset: offset + q]
            if block.nnz <= q and (block - sp.diags(block.diagonal())).count_nonzero() == 0:
                best = p + offset + np.arange(q)
        offset += q
    return best


def relative_factor(sigma: np.ndarray, residual: float, tol: float = 1e-10) -> np.ndarray:
    """``Lambda`` (``k x k``) with ``Lambda Lambda' = sigma / residual``.

    Lower-triangular Cholesky factor when ``sigma`` is positive definite; otherwise
    the eigen-factor of its positive part, with zero columns for the null space
    (so the equations keep one fixed structure whatever the rank).
    """
    rel = np.atleast_2d(np.asarray(sigma, dtype=float)) / residual
    try:
        lam = np.linalg.cholesky(rel)
        diag = np.diag(lam)
        if diag.min() ** 2 > tol * diag.max() ** 2:
            return lam
    except np.linalg.LinAlgError:
        pass
    vals, vecs = np.linalg.eigh(rel)
    top = max(vals.max(), 0.0)
    keep = vals > tol * top if top > 0 else np.zeros(len(vals), dtype=bool)
    return vecs * np.sqrt(np.where(keep, vals, 0.0))


@dataclass(frozen=True)
class Solution:
    """The solved equations at one parameter value.

    Attributes
    ----------
    beta : numpy.ndarray
        BLUE of the estimable fixed effects.
    u : numpy.ndarray
        BLUP of all random effects (Z's column order).
    b : numpy.ndarray
        Solution in relative-factor coordinates.
    T : scipy.sparse.csc_matrix
        ``u = T b``.
    factor : Factor
        Factorisation of the coefficient matrix ``C`` (order ``p + dim b``).
    logdet_C : float
        ``log|C|``.
    pwrss : float
        Penalised weighted residual sum of squares ``y'Wy - sol' rhs``.
    logdet_K : float
        ``sum_t r_t log|K_t|``.
    ranks : tuple of int
        ``r_t`` of each term.
    """

    beta: np.ndarray
    u: np.ndarray
    b: np.ndarray
    T: sp.csc_matrix
    factor: Factor = field(repr=False)
    logdet_C: float
    pwrss: float
    logdet_K: float
    ranks: tuple[int, ...]
    coefficient_matrix: sp.csc_matrix = field(repr=False)
    eliminate: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.int64))
    _zz_symbolic: Any = field(repr=False, compare=False, default=None)

    def random_block_factor(self) -> Factor:
        """Factor of the random-effect block ``C_zz`` alone (fixed effects taken as known)."""
        p = len(self.beta)
        backend = "auto" if self.factor.backend == "schur" else self.factor.backend
        return factorize(self.coefficient_matrix[p:, p:], backend, self.eliminate - p, self._zz_symbolic)


def coefficient_matrix(cp: CrossProducts, lambdas: Sequence[np.ndarray]) -> tuple[sp.csc_matrix, sp.csc_matrix]:
    """The relative-factor coefficient matrix ``C = T~' M T~ + penalty`` and ``T~``."""
    T = cp.transform(lambdas)
    C = (T.T @ cp.M @ T + cp.penalty).tocsc()
    return C, T


def solve_mme(cp: CrossProducts, lambdas: Sequence[np.ndarray], backend: str = "auto") -> Solution:
    """Solve the equations for given relative factors (one per term).

    Parameters
    ----------
    cp : CrossProducts
        From :func:`cross_products`.
    lambdas : sequence of numpy.ndarray
        ``Lambda_t`` per term, from :func:`relative_factor`.
    backend : str
        Factorisation back end (see :func:`~mixedblup.factor.factorize`).

    Returns
    -------
    Solution
    """
    C, Tfull = coefficient_matrix(cp, lambdas)
    p = cp.p
    rhs = Tfull.T @ np.concatenate([cp.Xty, cp.Zty])
    try:
        factor = factorize(C, backend, cp.eliminate, cp.symbolic)
    except EstimationError as exc:
        raise singular_equations_error(cp, C, lambdas, exc) from None
    sol = factor.solve(rhs)
    beta, b = sol[:p], sol[p:]
    T = Tfull[p:, p:].tocsc()
    u = T @ b
    ranks = tuple(cp.ks)
    logdet_K = float(sum(r * cov.logdet for r, cov in zip(ranks, cp.covariances)))
    pwrss = float(cp.yty - sol @ rhs)
    return Solution(beta, np.asarray(u).ravel(), b, T, factor, factor.logdet(), max(pwrss, 0.0),
                    logdet_K, ranks, C, cp.eliminate, lambda: cp.symbolic("zz"))


def equation_label(cp: CrossProducts, i: int) -> tuple[str, str]:
    """``(block, description)`` of equation ``i`` of ``C``: a fixed effect or a term's level."""
    if i < cp.p:
        name = cp.fixed_names[i] if i < len(cp.fixed_names) else f"column {i}"
        return name, f"fixed effect {name!r}"
    j = i - cp.p
    for t, (off, cov, k) in enumerate(zip(cp.offsets, cp.covariances, cp.ks)):
        q = len(cov.levels) * k
        if off <= j < off + q:
            term = cp.term_names[t] if t < len(cp.term_names) else f"term {t + 1}"
            level = cov.levels[(j - off) // k]
            return term, f"level {level!r} of term {term!r}"
    return f"equation {i}", f"equation {i}"


def singular_equations_error(cp: CrossProducts, C: sp.spmatrix, lambdas: Sequence[np.ndarray],
                             exc: EstimationError) -> EstimationError:
    """E7: the singular-system error with the equations and effect blocks involved named.

    The factorisation reports where its pivots collapsed (an equation that is, to
    working precision, a combination of equations eliminated before it); the blocks
    coupled to that equation in ``C`` (correlation above 1e-3) are named as the likely
    partners, with the variance ratios of the random terms.
    """
    eqs = np.asarray(getattr(exc, "equations", ()), dtype=np.int64)
    piv = np.asarray(getattr(exc, "pivots", ()), dtype=float)
    if eqs.size == 0 and C.shape[0] <= 3000:  # locate the breakdown with a dense Cholesky
        from .factor import DenseFactor

        try:
            DenseFactor(sp.csc_matrix(C).toarray())
        except EstimationError as dense_exc:
            eqs = np.asarray(getattr(dense_exc, "equations", ()), dtype=np.int64)
            piv = np.asarray(getattr(dense_exc, "pivots", ()), dtype=float)
    if eqs.size == 0:
        return EstimationError(
            f"{exc}; the factorisation broke down before reaching a pivot (check for fixed effects "
            "confounded with random terms, collinear covariates, or extreme variance ratios)")
    Cc = sp.csc_matrix(C)
    diag = Cc.diagonal()
    blocks = []
    described = []
    for i, pv in list(zip(eqs.tolist(), piv.tolist()))[:3]:
        block, text = equation_label(cp, i)
        described.append(text + ("" if np.isnan(pv) else f" (relative pivot {pv:.2g})"))
        col = Cc[:, i].toarray().ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = np.abs(col) / np.sqrt(np.abs(diag * diag[i]))
        corr[i] = 0.0
        for j in np.flatnonzero(corr > 1e-3):
            other = equation_label(cp, int(j))[0]
            if other != block and other not in blocks:
                blocks.append(other)
        if block not in blocks:
            blocks.insert(0, block)
    ratios = []
    for name, lam in zip(cp.term_names, lambdas):
        lam = np.atleast_2d(np.asarray(lam, dtype=float))
        big = float(np.max(np.diag(lam @ lam.T))) if lam.size else 0.0
        if name in blocks and big > 1e6:
            ratios.append(f"{name!r} has variance ratio sigma2/sigma2_e = {big:.3g}")
    more = f" and {eqs.size - 3} more" if eqs.size > 3 else ""
    message = (
        "the mixed model equations are singular to working precision at "
        + "; ".join(described) + more
        + f": it is (nearly) a linear combination of other equations; blocks involved: "
        + ", ".join(repr(b) for b in blocks)
        + (" (" + "; ".join(ratios) + ")" if ratios else "")
        + ". Remove a fixed effect that is confounded with a random term or with other fixed "
        "effects, rescale or centre covariates, or use less extreme variance ratios"
    )
    out = EstimationError(message)
    out.equations = eqs  # type: ignore[attr-defined]
    out.blocks = tuple(blocks)  # type: ignore[attr-defined]
    return out


def minus_two_loglik(cp: CrossProducts, sol: Solution, residual: float, reml: bool,
                     logdet_schur: float | None = None) -> float:
    """``-2 log L`` (REML or ML) at given variances, lme4's convention.

    Parameters
    ----------
    cp, sol : CrossProducts, Solution
        The solved equations.
    residual : float
        ``sigma_e^2``.
    reml : bool
        REML (True) or ML.
    logdet_schur : float, optional
        ``log|X'WX - X'WZT C_zz^-1 T'Z'WX|`` (needed for ML: ``log|C_zz| = log|C| - this``).
    """
    n, p = cp.n, cp.p
    quad = sol.pwrss / residual
    fixed = fixed_level_equations(cp)
    if reml:
        # fixed levels (genetic groups) count in p; their equations are scaled by Lambda
        p += len(fixed)
        logdet_C = sol.logdet_C - fixed_level_logdet(cp, solution_lambdas(cp, sol)) if len(fixed) else sol.logdet_C
        logdet = (n - p) * np.log(residual) - cp.log_w + sol.logdet_K + logdet_C
        return float((n - p) * np.log(2 * np.pi) + logdet + quad)
    if len(fixed):
        # log|C_zz| over the random equations only (fixed levels are fixed effects)
        idx = np.concatenate([np.arange(cp.p), fixed])
        logdet_schur = -float(np.linalg.slogdet(sol.factor.inverse_columns(idx, idx))[1])
    if logdet_schur is None:
        raise ValueError("ML needs logdet_schur")
    logdet_v = n * np.log(residual) - cp.log_w + sol.logdet_K + sol.logdet_C - logdet_schur
    return float(n * np.log(2 * np.pi) + logdet_v + quad)


def fixed_level_equations(cp: CrossProducts) -> np.ndarray:
    """Equations (rows of ``C``) of levels that are fixed effects absorbed in a random term.

    Unknown parent groups fitted as fixed (``BoundCovariance.n_fixed_levels``, the last
    levels of the term) have a singular penalty and no incidence; REML counts them in
    ``p`` and ML leaves them out of ``log|C_zz|``.
    """
    out = [np.zeros(0, dtype=np.int64)]
    for off, cov, k in zip(cp.offsets, cp.covariances, cp.ks):
        g = int(getattr(cov, "n_fixed_levels", 0) or 0)
        if g:
            q = len(cov.levels)
            out.append(cp.p + off + np.arange((q - g) * k, q * k, dtype=np.int64))
    return np.concatenate(out)


def fixed_level_logdet(cp: CrossProducts, lambdas: Sequence[np.ndarray]) -> float:
    """``sum_t g_t log|Lambda_t Lambda_t'|``: what the relative-factor scaling of the
    ``g_t`` fixed-level equations adds to ``log|C|`` (subtract it for REML).

    With ``a* = a + Q g`` and ``(a*, g) = Lambda (b*, b_g)``, the equations in
    ``(beta, b*, b_g)`` are those in ``(beta, g, b_a)`` (groups as explicit fixed
    effects ``Z Q``) transformed by a matrix of determinant ``+-|Lambda|^g``.
    """
    total = 0.0
    for cov, lam in zip(cp.covariances, lambdas):
        g = int(getattr(cov, "n_fixed_levels", 0) or 0)
        if g:
            sign, logabs = np.linalg.slogdet(np.atleast_2d(lam))
            if sign == 0:
                return -np.inf
            total += 2.0 * g * logabs
    return float(total)


def solution_lambdas(cp: CrossProducts, sol: Solution) -> list[np.ndarray]:
    """``Lambda_t`` of every term, read back from ``sol.T`` (first level's block)."""
    out = []
    for off, k in zip(cp.offsets, cp.ks):
        out.append(sol.T[off: off + k, off: off + k].toarray())
    return out
