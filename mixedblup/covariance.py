"""Covariance structures attached to random-effect terms.

A random term ``(x | g)`` with ``k`` columns and ``q`` levels has
``var(u) = K (x) Sigma``: ``Sigma`` is the ``k x k`` covariance of the term's
coefficients (a variance for ``(1 | g)``) and ``K`` the ``q x q`` structure among
levels.  This module supplies ``K`` through its inverse (the precision), never a
dense ``K`` for pedigrees:

* :class:`Identity` -- levels are independent (``K = I``), the levels come from the data;
* :class:`Relationship` -- a user-supplied ``G`` or ``G``-inverse (dense or sparse),
  matched to the data by label, never by position;
* :class:`~mixedblup.pedigree.Pedigree` -- the numerator relationship matrix
  ``A`` through its sparse inverse (Henderson's rules).

Every structure is turned into a :class:`BoundCovariance` for the exact list of
levels the design uses, by :func:`bind_covariance`.  That is the protocol the
equations stage relies on: ``precision`` (sparse ``K^-1``), ``logdet`` (``log|K|``)
and ``diagonal`` (``diag(K)``, for reliabilities).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp

from .errors import CovarianceError, CovarianceWarning, preview
from .labels import normalize_labels

__all__ = [
    "CovarianceStructure",
    "Identity",
    "Relationship",
    "BoundCovariance",
    "bind_covariance",
    "as_covariance",
]

#: Largest dense matrix (in elements) Relationship will invert without ``allow_large``.
_DENSE_LIMIT = 20_000 * 20_000


@runtime_checkable
class CovarianceStructure(Protocol):
    """What a covariance structure for the levels of a random term provides.

    ``labels`` is ``None`` when the levels come from the data (identity), or the
    full set of labels the structure defines (pedigree animals, rows of G):
    levels without records then still get BLUPs.
    """

    @property
    def labels(self) -> pd.Index | None: ...

    def bind(self, levels: pd.Index) -> BoundCovariance: ...


@dataclass(frozen=True)
class BoundCovariance:
    """A covariance structure restricted to (and ordered like) a term's levels.

    Attributes
    ----------
    levels : pandas.Index
        String labels, the order of rows and columns of every matrix below.
    precision : scipy.sparse.csc_matrix
        ``K^-1`` over ``levels``.
    logdet : float
        ``log|K|``.
    diagonal : numpy.ndarray
        ``diag(K)`` (1 for identity, ``1 + F`` for a pedigree).
    kind : str
        Short description for reports ("identity", "pedigree", "relationship").
    n_fixed_levels : int
        How many of the *last* levels are fixed effects absorbed in the term (unknown
        parent groups fitted as fixed, :class:`~mixedblup.genetic_groups.GroupedPedigree`):
        they have no incidence in the data and a singular penalty, and REML counts them
        in ``p`` (default 0).  ``logdet`` is then ``log|K|`` of the other levels.
    """

    levels: pd.Index
    precision: sp.csc_matrix
    logdet: float
    diagonal: np.ndarray
    kind: str
    n_fixed_levels: int = 0

    @property
    def is_identity(self) -> bool:
        """Whether ``K`` is the identity matrix."""
        return self.kind == "identity"


@dataclass(frozen=True)
class Identity:
    """Independent levels: ``K = I``.  The levels are those observed in the data."""

    @property
    def labels(self) -> None:
        """Identity defines no labels of its own."""
        return None

    def bind(self, levels: pd.Index) -> BoundCovariance:
        """Return ``K = I`` over ``levels``."""
        q = len(levels)
        return BoundCovariance(
            levels=pd.Index(levels, dtype=object),
            precision=sp.identity(q, format="csc"),
            logdet=0.0,
            diagonal=np.ones(q),
            kind="identity",
        )


class Relationship:
    """A user-supplied relationship matrix ``G`` (or its inverse), matched by label.

    Parameters
    ----------
    matrix : array-like, pandas.DataFrame or scipy.sparse matrix
        Square symmetric positive-definite matrix.  A DataFrame carries its labels
        in its index (which must equal its columns).
    labels : sequence, optional
        Labels of the rows/columns; required unless ``matrix`` is a DataFrame.
        Labels are normalised like IDs (``12``, ``"12"`` and ``12.0`` are one label).
    inverse : bool, default False
        ``True`` when ``matrix`` is already ``G^-1`` (a precision matrix).
    allow_large : bool, default False
        Allow inverting a dense matrix larger than 20,000 x 20,000.

    Notes
    -----
    Labels present in ``G`` but absent from the data are kept: their levels get
    BLUPs through their relationships.  Data levels absent from ``G`` are an error.
    ``G`` is checked for symmetry, finiteness and positive definiteness; nothing is
    ever added to its diagonal silently.
    """

    def __init__(
        self, matrix: Any, labels: Any = None, *, inverse: bool = False, allow_large: bool = False
    ) -> None:
        #: Explicit adjustments (tune, blend, nearest_pd) applied to the matrix before it was
        #: passed, when it comes from a GenomicRelationship; fit records them in diagnostics.
        self.adjustments: tuple[Any, ...] = tuple(getattr(matrix, "adjustments", ()) or ())
        if hasattr(matrix, "G") and hasattr(matrix, "adjustments"):  # a GenomicRelationship
            matrix = matrix.G
        if isinstance(matrix, pd.DataFrame):
            if labels is None:
                if not matrix.index.equals(matrix.columns):
                    raise CovarianceError(
                        "Relationship: the DataFrame's index and columns differ; give a square "
                        "matrix labelled identically on both axes, or pass labels= explicitly"
                    )
                labels = matrix.index
            matrix = matrix.to_numpy(dtype=float)
        if labels is None:
            raise CovarianceError(
                "Relationship needs labels= (or a labelled DataFrame): matrices are matched to the "
                "data by label, never by position"
            )
        labels = normalize_labels(labels, what="Relationship labels")
        matrix = sp.csc_matrix(matrix, dtype=float) if sp.issparse(matrix) else np.asarray(matrix, dtype=float)
        shape = matrix.shape
        if len(shape) != 2 or shape[0] != shape[1]:
            raise CovarianceError(f"Relationship matrix must be square; got shape {shape}")
        if shape[0] != len(labels):
            raise CovarianceError(
                f"Relationship has {shape[0]} rows but {len(labels)} labels; give one label per row"
            )
        if labels.hasnans:
            raise CovarianceError("Relationship labels contain missing values; every row needs a label")
        dup = labels[labels.duplicated()].unique()
        if len(dup):
            raise CovarianceError(
                f"Relationship labels are duplicated: {preview(dup)}; each label must appear once",
                problems=pd.DataFrame({"label": dup}),
            )
        if shape[0] * shape[0] > _DENSE_LIMIT and not allow_large:
            raise CovarianceError(
                f"a dense {shape[0]} x {shape[0]} relationship matrix needs "
                f"{shape[0] ** 2 * 8 / 1e9:.1f} GB per copy; pass allow_large=True to go ahead"
            )
        _check_matrix(matrix, labels, inverse)
        # D1: asymmetry at rounding level (checked above) is removed, so the Cholesky factor,
        # the inverse and the precision used in the equations all see the same matrix
        matrix = (matrix + matrix.T) / 2.0
        matrix = sp.csc_matrix(matrix) if sp.issparse(matrix) else np.ascontiguousarray(matrix)
        self._labels = labels
        self._matrix = matrix
        self.inverse = inverse

    @property
    def labels(self) -> pd.Index:
        """The normalised labels, in the order of the matrix's rows."""
        return self._labels

    def __repr__(self) -> str:
        kind = "G-inverse" if self.inverse else "G"
        return f"Relationship({kind}, {len(self._labels)} labels)"

    def bind(self, levels: pd.Index) -> BoundCovariance:
        """Restrict to ``levels`` (a permutation of this matrix's labels)."""
        pos = self._labels.get_indexer(levels)
        if (pos < 0).any():
            missing = list(pd.Index(levels)[pos < 0])
            raise CovarianceError(
                f"{len(missing)} level(s) are not labels of the relationship matrix: {preview(missing)}; "
                "every level in the data needs a row and column of the matrix (matched by label: "
                "check the ID format, e.g. 12 vs '0012'), or remove these records",
                problems=pd.DataFrame({"level": missing}),
            )
        m = self._matrix
        m = m[pos][:, pos] if sp.issparse(m) else m[np.ix_(pos, pos)]
        dense = m.toarray() if sp.issparse(m) else m
        chol = _cholesky(dense, "G-inverse" if self.inverse else "G")
        half_logdet = float(np.log(np.diag(chol)).sum())
        inv = sla.cho_solve((chol, False), np.eye(len(pos)))
        inv = (inv + inv.T) / 2.0
        if self.inverse:
            precision, logdet, diagonal = sp.csc_matrix(m), -2.0 * half_logdet, np.diag(inv).copy()
        else:
            precision, logdet, diagonal = sp.csc_matrix(inv), 2.0 * half_logdet, np.diag(dense).copy()
        return BoundCovariance(pd.Index(levels, dtype=object), precision, logdet, diagonal, "relationship")


#: A Cholesky pivot (squared) below this fraction of the largest diagonal entry means the
#: matrix is singular to working precision (a rounding-positive pivot is not trusted).
_PIVOT_TOL = 1e-10


def _cholesky(dense: np.ndarray, what: str) -> np.ndarray:
    """Upper Cholesky factor, or CovarianceError with the smallest eigenvalue."""
    try:
        chol = sla.cholesky(dense, lower=False)
        pivots = np.diag(chol) ** 2
        if len(pivots) == 0 or pivots.min() > _PIVOT_TOL * np.abs(np.diag(dense)).max():
            return chol
        raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        eig = np.linalg.eigvalsh(dense)
        rank = int((eig > eig.max() * 1e-12).sum())
        raise CovarianceError(
            f"{what} is not positive definite (smallest eigenvalue {eig.min():.3g}; numerical rank "
            f"{rank} of {len(eig)}); fix the matrix explicitly before passing it: for a genomic G "
            "blend it, e.g. mb.adjust_relationship(G, blend=(0.95, 'A22'), a22=pedigree) or "
            "blend=(0.99, 'I'), or project it with mb.adjust_relationship(G, nearest_pd=True); "
            "every adjustment is recorded"
        ) from None


def _check_matrix(matrix: Any, labels: pd.Index, inverse: bool) -> None:
    """Finiteness, symmetry and diagonal checks with labelled messages (D1, D2, D5, D7)."""
    dense = matrix.toarray() if sp.issparse(matrix) else matrix
    finite = np.isfinite(dense)
    if not finite.all():
        r, c = np.nonzero(~finite)
        pairs = [(labels[i], labels[j]) for i, j in zip(r[:10], c[:10])]
        raise CovarianceError(
            f"Relationship matrix has {len(r)} non-finite entries, e.g. at {preview(pairs)}; "
            "replace them before fitting",
            problems=pd.DataFrame({"row": labels[r], "column": labels[c]}),
        )
    asym = np.abs(dense - dense.T).max() if dense.size else 0.0
    scale = np.abs(dense).max() if dense.size else 0.0
    if asym > 1e-10 * max(scale, 1.0):
        i, j = np.unravel_index(np.argmax(np.abs(dense - dense.T)), dense.shape)
        raise CovarianceError(
            f"Relationship matrix is not symmetric: max |G - G'| = {asym:.3g} at "
            f"({labels[i]!r}, {labels[j]!r}); symmetrise it explicitly, e.g. (G + G.T) / 2"
        )
    diag = np.diag(dense)
    if len(diag) and (diag.min() <= 0):
        bad = labels[diag <= 0]
        raise CovarianceError(
            f"Relationship matrix has non-positive diagonal entries at {preview(list(bad))}; a "
            "covariance (or precision) matrix needs a positive diagonal",
            problems=pd.DataFrame({"label": bad}),
        )
    if not inverse and len(diag):
        # D5: a relationship matrix has diagonal 1 + F (F in [0, 1)): far from it, the
        # variance component is on another scale (e.g. a kinship matrix has diagonal 0.5)
        odd = (diag < 0.5) | (diag > 2.5)
        if odd.any() or not 0.75 <= diag.mean() <= 1.5:
            shown = labels[odd] if odd.any() else labels[:0]
            warnings.warn(
                f"the relationship matrix has mean diagonal {diag.mean():.3g}"
                + (f" and {int(odd.sum())} diagonal entries outside [0.5, 2.5] (e.g. at "
                   f"{preview(list(shown), 5)})" if odd.any() else "")
                + "; a relationship matrix has diagonal 1 + F, so the variance component will be "
                "on this matrix's scale: rescale it (e.g. mb.adjust_relationship(G, tune='A22')) "
                "if that is not intended",
                CovarianceWarning,
                stacklevel=4,
            )
    off = dense[~np.eye(len(dense), dtype=bool)]
    if not inverse and len(off) and diag.mean() > 1.5 and (off < 0).mean() > 0.5:
        warnings.warn(
            "the relationship matrix has a large mean diagonal and mostly negative off-diagonals: "
            "it looks like an inverse; pass inverse=True if it is",
            CovarianceWarning,
            stacklevel=4,
        )


@dataclass(frozen=True, eq=False)
class PedigreeCovariance:
    """The numerator relationship matrix ``A`` of a :class:`~mixedblup.pedigree.Pedigree`.

    Used through ``A^-1`` (sparse, Henderson's rules) and ``log|A|`` (sum of log
    Mendelian sampling variances); a dense ``A`` is never formed.
    """

    pedigree: Any

    @property
    def labels(self) -> pd.Index:
        """Every animal of the pedigree, in the pedigree's order."""
        return self.pedigree.ids

    @cached_property
    def _parts(self) -> tuple[sp.csc_matrix, float, np.ndarray]:
        ped = self.pedigree
        return ped.a_inverse(), float(ped.logdet_a()), 1.0 + ped.inbreeding().to_numpy()

    def bind(self, levels: pd.Index) -> BoundCovariance:
        """Restrict to ``levels``, which must be the pedigree's IDs in its order."""
        if not pd.Index(levels).equals(self.labels):
            raise CovarianceError(
                "internal error: a pedigree term must use every pedigree animal as a level, in "
                "pedigree order"
            )
        ainv, logdet, diagonal = self._parts
        return BoundCovariance(pd.Index(levels, dtype=object), ainv, logdet, diagonal, "pedigree")


def as_covariance(obj: Any, name: str = "") -> CovarianceStructure:
    """Turn what a user passed in ``cov=`` into a covariance structure.

    Parameters
    ----------
    obj : None, Identity, Relationship, Pedigree or CovarianceStructure
        ``None`` means :class:`Identity`.
    name : str
        The term's name, for error messages.

    Returns
    -------
    CovarianceStructure
    """
    if obj is None:
        return Identity()
    from .pedigree import Pedigree  # local import: covariance does not need pedigree otherwise

    if isinstance(obj, Pedigree):
        return PedigreeCovariance(obj)
    if isinstance(obj, (Identity, Relationship, PedigreeCovariance)):
        return obj
    if isinstance(obj, (np.ndarray, pd.DataFrame)) or sp.issparse(obj):
        raise CovarianceError(
            f"cov for {name!r} is a bare matrix; wrap it as mixedblup.Relationship(matrix, "
            "labels=...) (or inverse=True for a G-inverse) so it is matched to the data by label"
        )
    if isinstance(obj, CovarianceStructure):
        return obj
    raise CovarianceError(
        f"cov for {name!r} must be a Pedigree, a Relationship or None; got {type(obj).__name__}"
    )


def bind_covariance(structure: CovarianceStructure, levels: pd.Index) -> BoundCovariance:
    """Bind ``structure`` to a term's ``levels`` (see :class:`BoundCovariance`)."""
    return structure.bind(pd.Index(levels, dtype=object))
