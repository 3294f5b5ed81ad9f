"""Heterogeneous residual variances by class: cross-products recombined per evaluation.

With classes ``g`` of records, ``var(e_i) = sigma^2_{g(i)} / w_i``.  Writing
``sigma^2_g = rho_g sigma^2`` (``sigma^2`` the variance of a reference class,
``rho_ref = 1``), the model is the weighted model with weights ``w_i / rho_{g(i)}``
and residual variance ``sigma^2``, so every relative-factor formula of
:mod:`mixedblup.mme` holds unchanged.  The data part of the equations is linear in
``1 / rho``:

    M(rho) = sum_g M_g / rho_g,   log|W(rho)| = sum_g (sum_{i in g} log w_i - n_g log rho_g)

so the per-class cross-products are computed once (on one common sparsity pattern)
and recombined for each value of ``rho``; nothing is recomputed from the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .covariance import BoundCovariance
from .design import Design
from .mme import CrossProducts, cross_products

__all__ = ["ResidualGroupCrossProducts", "residual_group_cross_products"]

#: Cache entries of :class:`~mixedblup.mme.CrossProducts` that depend only on the sparsity
#: pattern (shared between the recombined cross-products of one model).
_PATTERN_KEYS = ("template", "full", "zz")


def _pattern_union(parts: Sequence[sp.spmatrix]) -> sp.csc_matrix:
    """Sparsity pattern holding every part's non-zeros (sum of absolute values: no cancellation)."""
    total = sp.csc_matrix(abs(sp.csc_matrix(parts[0])))
    for part in parts[1:]:
        total = total + abs(sp.csc_matrix(part))
    total = sp.csc_matrix(total)
    total.sum_duplicates()
    total.sort_indices()
    return total


def _values_on(pattern: sp.csc_matrix, part: sp.spmatrix) -> np.ndarray:
    """``part``'s entries at the positions of ``pattern``'s stored entries (CSC order)."""
    rows = pattern.indices
    cols = np.repeat(np.arange(pattern.shape[1]), np.diff(pattern.indptr))
    if len(rows) == 0:
        return np.zeros(0)
    return np.asarray(sp.csr_matrix(part)[rows, cols]).ravel()


@dataclass(frozen=True)
class _Combined:
    """One matrix of the cross-products as per-class values on a common pattern."""

    pattern: sp.csc_matrix | None  # None: dense parts
    parts: np.ndarray  # (G, nnz) values, or (G, rows, cols) dense

    @classmethod
    def of(cls, parts: Sequence) -> _Combined:
        if all(not sp.issparse(x) for x in parts):
            return cls(None, np.stack([np.asarray(x, dtype=float) for x in parts]))
        pattern = _pattern_union(parts)
        return cls(pattern, np.stack([_values_on(pattern, x) for x in parts]))

    def at(self, inv_rho: np.ndarray):
        if self.pattern is None:
            return np.tensordot(inv_rho, self.parts, axes=1)
        data = inv_rho @ self.parts
        return sp.csc_matrix((data, self.pattern.indices.copy(), self.pattern.indptr.copy()),
                             shape=self.pattern.shape)


@dataclass(frozen=True)
class ResidualGroupCrossProducts:
    """Per-class cross-products of a model with heterogeneous residual variances.

    Attributes
    ----------
    base : CrossProducts
        The cross-products with every ``rho_g = 1`` (layout, covariances, penalty).
    levels : tuple of str
        Class labels.
    counts : numpy.ndarray
        Records per class.
    """

    base: CrossProducts
    levels: tuple[str, ...]
    counts: np.ndarray
    _XtX: _Combined = field(repr=False)
    _XtZ: _Combined = field(repr=False)
    _ZtZ: _Combined = field(repr=False)
    _M: _Combined = field(repr=False)
    _Xty: np.ndarray = field(repr=False)
    _Zty: np.ndarray = field(repr=False)
    _yty: np.ndarray = field(repr=False)
    _log_w: np.ndarray = field(repr=False)
    _pattern_cache: dict = field(repr=False, compare=False, default_factory=dict)

    def at(self, rho: np.ndarray) -> CrossProducts:
        """The cross-products for residual variance ratios ``rho`` (one per class).

        Parameters
        ----------
        rho : numpy.ndarray
            ``sigma^2_g / sigma^2`` per class (positive).

        Returns
        -------
        CrossProducts
            Those of the weighted model with weights ``w_i / rho_{g(i)}``.
        """
        rho = np.asarray(rho, dtype=float)
        if rho.shape != (len(self.levels),) or not np.all(rho > 0) or not np.all(np.isfinite(rho)):
            raise ValueError(f"rho must hold {len(self.levels)} positive finite ratios; got {rho}")
        inv = 1.0 / rho
        M = self._M.at(inv)
        cache = {k: v for k, v in self._pattern_cache.items()}
        cp = dataclasses.replace(
            self.base, XtX=self._XtX.at(inv), XtZ=self._XtZ.at(inv), ZtZ=self._ZtZ.at(inv),
            Xty=inv @ self._Xty, Zty=inv @ self._Zty, yty=float(inv @ self._yty),
            log_w=float(self._log_w.sum() - self.counts @ np.log(rho)), M=M, _cache=cache,
        )
        return cp

    def remember(self, cp: CrossProducts) -> None:
        """Keep the pattern-only analyses (template, symbolic factorisations) ``cp`` computed."""
        for key in _PATTERN_KEYS:
            if key in cp._cache and key not in self._pattern_cache:
                self._pattern_cache[key] = cp._cache[key]


def _rows(design: Design, rows: np.ndarray) -> Design:
    """The design restricted to ``rows`` (same columns, terms and levels)."""
    terms = tuple(dataclasses.replace(t, Z=t.Z[rows]) for t in design.terms)
    X = design.X[rows] if not sp.issparse(design.X) else sp.csc_matrix(sp.csr_matrix(design.X)[rows])
    w = None if design.weights is None else design.weights[rows]
    return dataclasses.replace(design, y=design.y[rows], X=X, terms=terms, index=design.index[rows],
                               weights=w, residual_groups=None)


def residual_group_cross_products(design: Design, covariances: Sequence[BoundCovariance],
                                  base: CrossProducts | None = None) -> ResidualGroupCrossProducts:
    """Per-class cross-products for a design with ``residual_groups``.

    Parameters
    ----------
    design : Design
        With ``design.residual_groups`` set.
    covariances : sequence of BoundCovariance
        Level structure of every term.
    base : CrossProducts, optional
        ``cross_products(design, covariances)`` if already computed.

    Returns
    -------
    ResidualGroupCrossProducts
    """
    groups = design.residual_groups
    if groups is None:
        raise ValueError("the design has no residual groups")
    base = cross_products(design, covariances) if base is None else base
    parts = [cross_products(_rows(design, np.flatnonzero(groups.codes == g)), covariances)
             for g in range(len(groups.levels))]
    return ResidualGroupCrossProducts(
        base=base, levels=tuple(groups.levels), counts=groups.counts.astype(float),
        _XtX=_Combined.of([c.XtX for c in parts]), _XtZ=_Combined.of([c.XtZ for c in parts]),
        _ZtZ=_Combined.of([c.ZtZ for c in parts]), _M=_Combined.of([c.M for c in parts]),
        _Xty=np.stack([c.Xty for c in parts]), _Zty=np.stack([c.Zty for c in parts]),
        _yty=np.array([c.yty for c in parts]), _log_w=np.array([c.log_w for c in parts]),
    )
