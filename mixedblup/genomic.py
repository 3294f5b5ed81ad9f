"""Genomic relationships: VanRaden's G, explicit blending/tuning, and single-step H.

* :func:`genomic_relationship` builds a labelled genomic relationship matrix ``G``
  from a 0/1/2 marker matrix (VanRaden 2008 methods 1 and 2, Yang et al. 2010).
  Missing genotypes, dropped markers and every adjustment are reported, never silent.
* :func:`adjust_relationship` applies the same explicit adjustments (tuning to
  ``A22``, blending with ``I`` or ``A22``) to a ``G`` the user already has.
* GBLUP uses ``G`` through :class:`~mixedblup.Relationship`.
* :class:`SingleStep` is the single-step covariance ``H`` (Legarra et al. 2009;
  Aguilar et al. 2010; Christensen & Lund 2010) of a pedigree plus genotyped animals,
  used through its sparse inverse ``H^-1``; it implements the covariance-structure
  protocol of :mod:`mixedblup.covariance`, so ``cov={"animal": mb.SingleStep(ped, G)}``
  fits ssGBLUP.  :func:`h_inverse` returns ``H^-1`` itself.

A dense ``A`` is never formed: ``A22`` (and every product with ``A``) comes from
``A = T^-1 D T^-T`` with the sparse, triangular ``T`` of the pedigree.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp

from ._accel import jit
from .covariance import BoundCovariance
from .errors import CovarianceError, DataError, GenotypeWarning, preview
from .labels import normalize_labels

__all__ = [
    "genomic_relationship",
    "adjust_relationship",
    "GenomicRelationship",
    "Adjustment",
    "GenotypeWarning",
    "SingleStep",
    "h_inverse",
    "METHODS",
]

#: Methods of :func:`genomic_relationship`.
METHODS = ("vanraden1", "vanraden2", "yang")

#: Memory (bytes) of one block of dense right-hand sides in products with ``A``.
_BLOCK_BYTES = 64 * 2**20

#: Pedigrees at least this large use the compiled kernel for products with ``A``.
_JIT_MIN = 2000


@dataclass(frozen=True)
class Adjustment:
    """One explicit adjustment applied to a relationship matrix.

    Attributes
    ----------
    kind : str
        ``"tune"`` or ``"blend"``.
    description : str
        The operation as a formula, e.g. ``"G <- 0.95 G + 0.05 A22"``.
    parameters : dict
        Its numbers (``alpha`` and ``with`` for a blend; ``a``, ``b`` and the means
        matched for a tune).
    """

    kind: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class GenomicRelationship:
    """A genomic relationship matrix and how it was obtained.

    Attributes
    ----------
    G : pandas.DataFrame
        The relationship matrix, index and columns the (normalised) animal labels.
        Pass it to fit as ``mb.Relationship(grm.G)`` (GBLUP) or to
        :class:`SingleStep` (ssGBLUP).
    method : str
        ``"vanraden1"``, ``"vanraden2"``, ``"yang"`` or ``"user"`` (from
        :func:`adjust_relationship`).
    frequencies : pandas.Series or None
        Allele frequency ``p`` of every marker used (the counted allele), by marker.
    scale : float or None
        The denominator: ``2 sum p(1-p)`` (vanraden1) or the number of markers.
    dropped_markers : pandas.DataFrame
        Markers not used: ``marker, reason, maf``.
    missing : pandas.Series
        Number of imputed (missing) genotypes per animal, only animals with any.
    adjustments : tuple of Adjustment
        Every adjustment applied after computing ``G``, in order.
    """

    G: pd.DataFrame
    method: str
    frequencies: pd.Series | None = None
    scale: float | None = None
    dropped_markers: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"marker": [], "reason": [], "maf": []})
    )
    missing: pd.Series = field(default_factory=lambda: pd.Series([], dtype=np.int64, name="missing"))
    adjustments: tuple[Adjustment, ...] = ()

    @property
    def labels(self) -> pd.Index:
        """The animals, in the order of the rows of :attr:`G`."""
        return self.G.index

    @property
    def n_markers(self) -> int:
        """Number of markers used (0 for a user matrix)."""
        return 0 if self.frequencies is None else len(self.frequencies)

    @cached_property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of :attr:`G`, ascending (for checking positive definiteness)."""
        return np.linalg.eigvalsh(self.G.to_numpy())

    @property
    def positive_definite(self) -> bool:
        """Whether :attr:`G` is numerically positive definite.

        Cholesky must succeed with every squared pivot above ``1e-10`` times the largest
        diagonal element (a centred ``G``, singular in exact arithmetic, can pass a plain
        Cholesky through rounding, with a pivot near ``1e-8``).
        """
        return _robust_cholesky(self.G.to_numpy()) is not None

    def relationship(self) -> Any:
        """``mb.Relationship(self.G)``: the covariance structure for GBLUP.

        Returns
        -------
        mixedblup.Relationship
        """
        from .covariance import Relationship

        return Relationship(self)  # keeps the adjustments, recorded by fit in diagnostics

    def __repr__(self) -> str:
        adj = "; ".join(a.description for a in self.adjustments) or "none"
        return (
            f"GenomicRelationship({self.method}, {len(self.G)} animals, {self.n_markers} markers, "
            f"adjustments: {adj})"
        )


# ---------------------------------------------------------------------------- markers


def _marker_frame(markers: Any, labels: Any) -> tuple[np.ndarray, pd.Index, pd.Index, pd.DataFrame | None]:
    """Values (float, NaN = missing), animal labels, marker names, original frame."""
    if isinstance(markers, pd.DataFrame):
        if labels is not None:
            raise DataError(
                "genomic_relationship: labels= is only for arrays; a DataFrame carries the animal "
                "labels in its index (set it with markers.set_index(...))"
            )
        frame = markers
        raw_labels: Any = markers.index
        names = pd.Index([str(c) for c in markers.columns], dtype=object)
    else:
        if labels is None:
            raise DataError(
                "genomic_relationship needs labels= with an array of markers (or a DataFrame whose "
                "index holds the animal labels): G is matched to the data by label, never by position"
            )
        arr = np.asarray(markers)
        if arr.ndim != 2:
            raise DataError(f"markers must be a 2-D matrix (animals x markers); got shape {arr.shape}")
        frame = pd.DataFrame(arr)
        raw_labels = labels
        names = pd.Index([str(j) for j in range(arr.shape[1])], dtype=object)
    ids = normalize_labels(raw_labels, what="genotyped animal labels")
    if len(ids) != frame.shape[0]:
        raise DataError(f"markers have {frame.shape[0]} rows but {len(ids)} labels; give one label per animal")
    if ids.hasnans:
        rows = np.flatnonzero(pd.isna(ids))
        raise DataError(
            f"{len(rows)} genotyped animal(s) have no label (rows {preview(rows.tolist())}); every "
            "row of the marker matrix needs an animal label",
            problems=pd.DataFrame({"row": rows}),
        )
    for what, index in (("animal labels", ids), ("marker names", names)):
        dup = index[index.duplicated()].unique()
        if len(dup):
            raise DataError(
                f"duplicated {what} in the marker matrix: {preview(list(dup))}; each must appear once",
                problems=pd.DataFrame({"label": list(dup)}),
            )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(f"the marker matrix is empty (shape {frame.shape})")
    try:
        values = frame.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        coerced = frame.apply(pd.to_numeric, errors="coerce")
        bad = coerced.isna().to_numpy() & frame.notna().to_numpy()
        r, c = np.nonzero(bad)
        cells = [(ids[i], names[j], frame.iat[i, j]) for i, j in zip(r, c)]
        raise DataError(
            f"{len(r)} genotype(s) are not numbers, e.g. (animal, marker, value) {preview(cells[:5], 5)}; "
            "genotypes are allele counts 0, 1 or 2 (missing: NaN)",
            problems=pd.DataFrame({"animal": ids[r], "marker": names[c], "value": [x[2] for x in cells]}),
        ) from None
    return values, ids, names, frame


def _check_values(values: np.ndarray, ids: pd.Index, names: pd.Index, missing_code: float | None) -> np.ndarray:
    """Validate 0/1/2 (C: non-integer or out-of-range values name animals and markers)."""
    if missing_code is not None:
        values = values.copy()
        values[values == missing_code] = np.nan
    observed = ~np.isnan(values)
    bad = observed & ~np.isin(values, (0.0, 1.0, 2.0))
    if bad.any():
        r, c = np.nonzero(bad)
        cells = [(ids[i], names[j], values[i, j]) for i, j in zip(r[:5], c[:5])]
        hint = "" if missing_code is not None else " (a missing-value code such as 5 or -9 needs missing_code=)"
        raise DataError(
            f"{len(r)} genotype(s) are not allele counts 0, 1 or 2, e.g. (animal, marker, value) "
            f"{preview(cells, 5)}; recode them{hint}",
            problems=pd.DataFrame({"animal": ids[r], "marker": names[c], "value": values[r, c]}),
        )
    return values


def _frequencies(allele_frequencies: Any, names: pd.Index) -> np.ndarray:
    """User allele frequencies aligned to the markers, validated."""
    if isinstance(allele_frequencies, pd.Series):
        given = pd.Series(allele_frequencies.to_numpy(), index=[str(i) for i in allele_frequencies.index])
        absent = names[~names.isin(given.index)]
        if len(absent):
            raise DataError(
                f"allele_frequencies has no value for {len(absent)} marker(s): {preview(list(absent))}",
                problems=pd.DataFrame({"marker": absent}),
            )
        p = pd.to_numeric(given.loc[list(names)], errors="coerce").to_numpy(dtype=float)
    else:
        p = np.asarray(allele_frequencies, dtype=float).ravel()
        if p.shape != (len(names),):
            raise DataError(
                f"allele_frequencies has {p.size} values for {len(names)} markers; give one per marker "
                "(a Series indexed by marker name is matched by name)"
            )
    bad = ~(np.isfinite(p) & (p >= 0) & (p <= 1))
    if bad.any():
        raise DataError(
            f"allele_frequencies must be in [0, 1]; {int(bad.sum())} are not, e.g. markers "
            f"{preview(list(names[bad]))}",
            problems=pd.DataFrame({"marker": names[bad], "frequency": p[bad]}),
        )
    return p


def genomic_relationship(
    markers: Any,
    labels: Any = None,
    *,
    method: str = "vanraden1",
    allele_frequencies: Any = None,
    min_maf: float = 0.0,
    missing: str = "mean",
    missing_code: float | None = None,
    tune: str | None = None,
    blend: tuple[float, Any] | None = None,
    a22: Any = None,
) -> GenomicRelationship:
    """Genomic relationship matrix ``G`` from a 0/1/2 marker matrix.

    Parameters
    ----------
    markers : pandas.DataFrame or array-like
        Animals x markers allele counts 0, 1, 2 (missing: NaN/None, or
        ``missing_code``).  A DataFrame's index holds the animal labels and its
        columns the marker names.
    labels : sequence, optional
        Animal labels, one per row; required for arrays (never with a DataFrame).
    method : {"vanraden1", "vanraden2", "yang"}
        ``"vanraden1"``: ``Z = M - 2p``, ``G = ZZ' / (2 sum p(1-p))`` (VanRaden 2008,
        method 1).  ``"vanraden2"``: each column of ``Z`` divided by
        ``sqrt(2p(1-p))``, ``G = ZZ' / m`` (method 2).  ``"yang"``: off-diagonals of
        method 2, diagonal ``1 + (1/m) sum (x^2 - (1+2p) x + 2p^2) / (2p(1-p))``
        (Yang et al. 2010, GCTA).
    allele_frequencies : pandas.Series or array-like, optional
        Frequencies ``p`` of the counted allele (base-population frequencies); a
        Series is matched by marker name.  Default: from the data,
        ``p = mean(observed counts) / 2`` per marker.
    min_maf : float, default 0.0
        Markers with minor allele frequency ``min(p, 1-p)`` below ``min_maf`` are
        dropped.  Monomorphic markers (MAF 0) and markers without any observed
        genotype are always dropped.  Every dropped marker is reported.
    missing : {"mean", "raise"}
        ``"mean"``: a missing genotype is replaced by its expectation ``2p`` (so it
        contributes 0 to ``Z``; for ``"yang"`` its diagonal term is its expectation
        0), with a :class:`GenotypeWarning` giving the counts.  ``"raise"``: a
        missing genotype is a :class:`~mixedblup.DataError`.
    missing_code : float, optional
        A value meaning "missing" in addition to NaN (e.g. 5 or -9).
    tune : {None, "A22"}
        ``"A22"``: replace ``G`` by ``a + b G`` with ``a, b`` such that the mean
        diagonal and the mean off-diagonal equal those of ``A22`` (Christensen et al.
        2012; BLUPF90's ``tunedG``).  Needs ``a22=``.  Applied before blending.
    blend : (float, matrix), optional
        ``(alpha, M)``: ``G <- alpha G + (1 - alpha) M`` with ``M`` one of ``"I"``,
        ``"A22"`` (from ``a22=``), a :class:`~mixedblup.Pedigree` (``M = A22``) or a
        labelled DataFrame (matched by label).  ``alpha`` in [0, 1].
    a22 : Pedigree or pandas.DataFrame, optional
        Where ``A22`` comes from for ``tune="A22"`` and ``blend=(alpha, "A22")``: a
        pedigree (``A22`` of the genotyped animals, their ancestors traced) or a
        labelled matrix.

    Returns
    -------
    GenomicRelationship
        ``G`` (labelled DataFrame), the frequencies used, dropped markers, missing
        counts and every adjustment applied.

    Raises
    ------
    DataError
        Non-numeric, non-integer or out-of-range genotypes (naming animals and
        markers), missing or duplicated labels, animals without any usable genotype,
        no polymorphic marker left.

    Warns
    -----
    GenotypeWarning
        When genotypes are imputed or markers dropped (counts; details on the result).

    Notes
    -----
    With frequencies from the data, ``Z`` is centred, so ``G`` has rank at most
    ``min(n - 1, m)``: it is singular and :class:`~mixedblup.Relationship` refuses
    it.  Nothing is done about it silently; blend it explicitly (``blend=(0.95,
    "A22")`` or ``(0.99, "I")``).

    Examples
    --------
    >>> import numpy as np, mixedblup as mb
    >>> M = np.array([[0, 1, 2, 1], [1, 1, 0, 2], [2, 0, 1, 1]])
    >>> grm = mb.genomic_relationship(M, labels=["a", "b", "c"], blend=(0.95, "I"))
    >>> grm.G.shape
    (3, 3)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if missing not in ("mean", "raise"):
        raise ValueError(f"missing must be 'mean' or 'raise'; got {missing!r}")
    if not (isinstance(min_maf, (int, float)) and 0.0 <= float(min_maf) <= 0.5):
        raise ValueError(f"min_maf must be a number in [0, 0.5]; got {min_maf!r}")
    _check_adjustment_args(tune, blend, a22)

    values, ids, names, _ = _marker_frame(markers, labels)
    values = _check_values(values, ids, names, missing_code)
    observed = ~np.isnan(values)
    n_obs = observed.sum(axis=0)
    if missing == "raise" and not observed.all():
        r, c = np.nonzero(~observed)
        raise DataError(
            f"{len(r)} genotype(s) are missing, e.g. (animal, marker) "
            f"{preview(list(zip(ids[r[:5]], names[c[:5]])), 5)}; impute them or use missing='mean'",
            problems=pd.DataFrame({"animal": ids[r], "marker": names[c]}),
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        sample_p = np.where(n_obs > 0, np.nansum(values, axis=0) / (2.0 * np.maximum(n_obs, 1)), np.nan)
    p = sample_p if allele_frequencies is None else _frequencies(allele_frequencies, names)
    maf = np.minimum(p, 1.0 - p)
    reasons = np.full(len(names), "", dtype=object)
    reasons[(maf < min_maf) & (maf > 0)] = f"maf < {min_maf}"
    reasons[maf == 0] = "monomorphic"
    reasons[n_obs == 0] = "no genotypes"
    drop = reasons != ""
    dropped = pd.DataFrame({"marker": names[drop], "reason": reasons[drop], "maf": maf[drop]})
    keep = ~drop
    if not keep.any():
        raise DataError(
            f"no marker is left after dropping {int(drop.sum())} monomorphic, low-MAF or ungenotyped "
            "markers; G cannot be computed"
        )
    X, p, obs = values[:, keep], p[keep], observed[:, keep]
    per_animal = obs.sum(axis=1)
    if (per_animal == 0).any():
        bad = ids[per_animal == 0]
        raise DataError(
            f"{len(bad)} animal(s) have no genotype on the markers used: {preview(list(bad))}; remove "
            "them from the marker matrix",
            problems=pd.DataFrame({"animal": bad}),
        )
    n_missing = int((~obs).sum())
    missing_by_animal = pd.Series((~obs).sum(axis=1), index=ids, name="missing")
    missing_by_animal = missing_by_animal[missing_by_animal > 0]
    if n_missing or drop.any():
        parts = []
        if n_missing:
            parts.append(
                f"{n_missing} missing genotype(s) in {len(missing_by_animal)} animal(s) were imputed "
                "by their expectation 2p (see .missing)"
            )
        if drop.any():
            counts = dropped["reason"].value_counts()
            parts.append(
                f"{int(drop.sum())} marker(s) were dropped ("
                + ", ".join(f"{k}: {v}" for k, v in counts.items())
                + "; see .dropped_markers)"
            )
        warnings.warn("genomic_relationship: " + "; ".join(parts), GenotypeWarning, stacklevel=2)

    Z = np.where(obs, X - 2.0 * p, 0.0)
    het = 2.0 * p * (1.0 - p)
    m = Z.shape[1]
    if method == "vanraden1":
        scale = float(het.sum())
        G = Z @ Z.T / scale
    else:
        Zs = Z / np.sqrt(het)
        scale = float(m)
        G = Zs @ Zs.T / scale
        if method == "yang":
            term = np.where(obs, (X**2 - (1.0 + 2.0 * p) * X + 2.0 * p**2) / het, 0.0)
            np.fill_diagonal(G, 1.0 + term.sum(axis=1) / scale)
    G = (G + G.T) / 2.0
    grm = GenomicRelationship(
        G=pd.DataFrame(G, index=ids, columns=ids.copy()),
        method=method,
        frequencies=pd.Series(p, index=names[keep], name="p"),
        scale=scale,
        dropped_markers=dropped.reset_index(drop=True),
        missing=missing_by_animal,
    )
    return _apply_adjustments(grm, tune=tune, blend=blend, a22=a22)


# ---------------------------------------------------------------------------- adjustments


def _check_adjustment_args(tune: Any, blend: Any, a22: Any) -> None:
    if tune not in (None, "A22"):
        raise ValueError(f"tune must be None or 'A22'; got {tune!r}")
    if blend is not None:
        if not (isinstance(blend, tuple) and len(blend) == 2):
            raise ValueError(
                f"blend must be a pair (alpha, M), e.g. (0.95, 'A22') or (0.99, 'I'); got {blend!r}"
            )
        alpha = blend[0]
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise ValueError(f"blend alpha must be a number in [0, 1]; got {alpha!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"blend alpha must be in [0, 1]; got {alpha!r}")
        if isinstance(blend[1], str) and blend[1] not in ("I", "A22"):
            raise ValueError(f"blend matrix must be 'I', 'A22', a Pedigree or a labelled DataFrame; got {blend[1]!r}")
    needs = tune == "A22" or (blend is not None and isinstance(blend[1], str) and blend[1] == "A22")
    if needs and a22 is None:
        raise ValueError("tune='A22' and blend=(alpha, 'A22') need a22= (a Pedigree or a labelled A22 matrix)")


def _a22_for(source: Any, ids: pd.Index) -> tuple[np.ndarray, str]:
    """``A22`` over ``ids`` from a pedigree or a labelled matrix, and its description."""
    from .pedigree import Pedigree

    if isinstance(source, Pedigree):
        ops = _PedigreeOps(source)
        pos = source.positions(ids, what="genotyped animals")
        return ops.a22(pos), "A22"
    if isinstance(source, pd.DataFrame):
        rows = normalize_labels(source.index, what="matrix labels")
        cols = normalize_labels(source.columns, what="matrix labels")
        if not rows.equals(cols):
            raise CovarianceError("the matrix to blend or tune with must have identical index and columns")
        pos = rows.get_indexer(ids)
        if (pos < 0).any():
            absent = list(ids[pos < 0])
            raise CovarianceError(
                f"{len(absent)} animal(s) of G are not labels of the matrix: {preview(absent)}",
                problems=pd.DataFrame({"label": absent}),
            )
        return source.to_numpy(dtype=float)[np.ix_(pos, pos)], "M"
    raise CovarianceError(
        f"expected a Pedigree or a labelled DataFrame for A22 (or the blend matrix); got {type(source).__name__}"
    )


def _apply_adjustments(grm: GenomicRelationship, *, tune: Any, blend: Any, a22: Any) -> GenomicRelationship:
    """Tune (to A22), then blend; every step recorded."""
    _check_adjustment_args(tune, blend, a22)
    ids = grm.G.index
    G = grm.G.to_numpy(dtype=float)
    done = list(grm.adjustments)
    cache: dict[str, np.ndarray] = {}

    def get_a22() -> np.ndarray:
        if "A22" not in cache:
            cache["A22"] = _a22_for(a22, ids)[0]
        return cache["A22"]

    if tune == "A22":
        n = len(G)
        if n < 2:
            raise CovarianceError("tune='A22' needs at least two genotyped animals (off-diagonal means)")
        A = get_a22()
        off = ~np.eye(n, dtype=bool)
        dg, og = float(np.diag(G).mean()), float(G[off].mean())
        da, oa = float(np.diag(A).mean()), float(A[off].mean())
        if dg == og:
            raise CovarianceError("tune='A22': G has equal mean diagonal and off-diagonal; cannot rescale")
        b = (da - oa) / (dg - og)
        a = oa - b * og
        G = a + b * G
        done.append(Adjustment(
            "tune", f"G <- {a:.6g} + {b:.6g} G (mean diagonal and off-diagonal of A22)",
            {"a": a, "b": b, "mean_diag_A22": da, "mean_offdiag_A22": oa,
             "mean_diag_G": dg, "mean_offdiag_G": og},
        ))
    if blend is not None:
        alpha, target = float(blend[0]), blend[1]
        if isinstance(target, str) and target == "I":
            M, name = np.eye(len(G)), "I"
        elif isinstance(target, str):
            M, name = get_a22(), "A22"
        else:
            M, name = _a22_for(target, ids)
        G = alpha * G + (1.0 - alpha) * M
        done.append(Adjustment(
            "blend", f"G <- {alpha:g} G + {1.0 - alpha:g} {name}", {"alpha": alpha, "with": name},
        ))
    if len(done) == len(grm.adjustments):
        return grm
    return GenomicRelationship(
        G=pd.DataFrame(G, index=ids, columns=grm.G.columns),
        method=grm.method, frequencies=grm.frequencies, scale=grm.scale,
        dropped_markers=grm.dropped_markers, missing=grm.missing, adjustments=tuple(done),
    )


def adjust_relationship(
    G: Any,
    labels: Any = None,
    *,
    tune: str | None = None,
    blend: tuple[float, Any] | None = None,
    a22: Any = None,
    nearest_pd: bool | float = False,
) -> GenomicRelationship:
    """Tune, blend and/or project an existing relationship matrix, recording each step.

    Parameters
    ----------
    G : GenomicRelationship, pandas.DataFrame or array-like
        The matrix (a DataFrame's index are the labels).
    labels : sequence, optional
        Labels for an array ``G``.
    tune, blend, a22
        As in :func:`genomic_relationship`: ``tune="A22"`` first, then ``blend=(alpha,
        M)`` giving exactly ``alpha G + (1 - alpha) M``.
    nearest_pd : bool or float
        Last, project onto the nearest positive-definite matrix in the Frobenius norm
        (Higham 1988: eigenvalues below a floor are raised to it, eigenvectors kept); the
        floor is ``1e-6`` times the mean diagonal, or this value times the mean diagonal
        when a float.  For an indefinite matrix (pairwise estimates, D4).  The change is
        recorded (``Adjustment("nearest_pd", ...)`` with the Frobenius norm of the change
        and the number of eigenvalues raised); an already positive-definite matrix with
        every eigenvalue above the floor is left unchanged (and nothing is recorded).

    Returns
    -------
    GenomicRelationship
        With the new adjustments appended (``method="user"`` for a plain matrix).

    Examples
    --------
    >>> import pandas as pd, mixedblup as mb
    >>> G = pd.DataFrame([[1.0, 1.0], [1.0, 1.0]], index=["a", "b"], columns=["a", "b"])
    >>> mb.adjust_relationship(G, blend=(0.9, "I")).G.to_numpy().tolist()
    [[1.0, 0.9], [0.9, 1.0]]
    """
    out = _apply_adjustments(_as_grm(G, labels), tune=tune, blend=blend, a22=a22)
    if nearest_pd is not False and nearest_pd is not None:
        out = _nearest_pd(out, 1e-6 if nearest_pd is True else float(nearest_pd))
    return out


def _nearest_pd(grm: GenomicRelationship, rel_floor: float) -> GenomicRelationship:
    """D4: raise eigenvalues below ``rel_floor * mean(diag)`` to that floor (recorded)."""
    if not (np.isfinite(rel_floor) and rel_floor > 0):
        raise ValueError(f"nearest_pd must be True or a positive relative floor; got {rel_floor!r}")
    G = grm.G.to_numpy(dtype=float)
    G = (G + G.T) / 2.0
    vals, vecs = np.linalg.eigh(G)
    floor = rel_floor * float(np.abs(np.diag(G)).mean() or 1.0)
    low = vals < floor
    if not low.any():
        return grm
    new = (vecs * np.maximum(vals, floor)) @ vecs.T
    new = (new + new.T) / 2.0
    change = float(np.linalg.norm(new - G))
    adj = Adjustment(
        "nearest_pd",
        f"G <- nearest positive definite matrix ({int(low.sum())} eigenvalue(s) below {floor:.3g} "
        f"raised to it, smallest was {vals.min():.3g}; Frobenius change {change:.3g}, "
        f"{change / max(float(np.linalg.norm(G)), 1e-300):.2%} of |G|)",
        {"floor": floor, "n_raised": int(low.sum()), "min_eigenvalue": float(vals.min()),
         "frobenius_change": change},
    )
    return GenomicRelationship(
        G=pd.DataFrame(new, index=grm.G.index, columns=grm.G.columns),
        method=grm.method, frequencies=grm.frequencies, scale=grm.scale,
        dropped_markers=grm.dropped_markers, missing=grm.missing,
        adjustments=tuple(grm.adjustments) + (adj,),
    )


def _as_grm(G: Any, labels: Any = None) -> GenomicRelationship:
    """Wrap a matrix as a GenomicRelationship (method "user"), labels normalised."""
    if isinstance(G, GenomicRelationship):
        return G
    if isinstance(G, pd.DataFrame):
        if labels is None:
            rows = normalize_labels(G.index, what="G labels")
            if not rows.equals(normalize_labels(G.columns, what="G labels")):
                raise CovarianceError("G's index and columns differ; give a square matrix labelled identically")
            labels = rows
        G = G.to_numpy(dtype=float)
    if labels is None:
        raise CovarianceError("G needs labels= (or a labelled DataFrame): it is matched by label, never by position")
    ids = normalize_labels(labels, what="G labels")
    M = np.asarray(G.toarray() if sp.issparse(G) else G, dtype=float)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] != len(ids):
        raise CovarianceError(f"G must be square with one label per row; got shape {M.shape} and {len(ids)} labels")
    if ids.hasnans or ids.duplicated().any():
        dup = list(ids[ids.duplicated()])
        raise CovarianceError(f"G labels must be present and unique; duplicated: {preview(dup)}")
    if not np.isfinite(M).all():
        raise CovarianceError("G has non-finite entries; replace them before use")
    return GenomicRelationship(G=pd.DataFrame(M, index=ids, columns=ids.copy()), method="user")


# ---------------------------------------------------------------------------- pedigree algebra


@jit
def _times_a(sire: np.ndarray, dam: np.ndarray, d: np.ndarray, Y: np.ndarray) -> None:  # pragma: no cover
    """In place ``Y <- A Y = T^-1 D T^-T Y`` (``T = I - P/2``, parents before offspring).

    ``T' x = y`` is solved from the youngest animal back (each animal passes half of
    its value to its parents), ``T z = x`` from the oldest forward (half of each
    parent's value).  Row operations, so the plain-Python fallback stays vectorised.
    """
    n = Y.shape[0]
    for k in range(n - 1, -1, -1):
        s = sire[k]
        m = dam[k]
        if s >= 0:
            Y[s, :] += 0.5 * Y[k, :]
        if m >= 0:
            Y[m, :] += 0.5 * Y[k, :]
    for k in range(n):
        Y[k, :] *= d[k]
    for k in range(n):
        s = sire[k]
        m = dam[k]
        if s >= 0:
            Y[k, :] += 0.5 * Y[s, :]
        if m >= 0:
            Y[k, :] += 0.5 * Y[m, :]


class _PedigreeOps:
    """Products with ``A = T^-1 D T^-T`` without forming ``A`` (``T = I - P/2``)."""

    def __init__(self, pedigree: Any) -> None:
        pedigree.logdet_a()  # raises PedigreeError if a Mendelian variance is zero
        self.n = len(pedigree)
        self.d = np.ascontiguousarray(pedigree.mendelian_variances(), dtype=np.float64)
        self._sire = np.ascontiguousarray(pedigree.sire_pos, dtype=np.int64)
        self._dam = np.ascontiguousarray(pedigree.dam_pos, dtype=np.int64)

    def times(self, B: np.ndarray) -> np.ndarray:
        """``A @ B`` for a dense ``n x k`` ``B``."""
        Y = np.array(B, dtype=np.float64, order="C", copy=True)
        # small pedigrees: the row-wise plain-Python kernel is fast and needs no compilation
        kernel = _times_a if self.n >= _JIT_MIN else getattr(_times_a, "py_func", _times_a)
        kernel(self._sire, self._dam, self.d, Y)
        return Y

    def blocks(self, pos: np.ndarray, W: np.ndarray):
        """Yield ``(columns, A[:, pos] @ W[:, columns])`` in memory-bounded blocks."""
        k = W.shape[1]
        step = max(1, min(k, _BLOCK_BYTES // (8 * max(self.n, 1))))
        for start in range(0, k, step):
            cols = slice(start, min(k, start + step))
            rhs = np.zeros((self.n, cols.stop - cols.start))
            rhs[pos] = W[:, cols]
            yield cols, self.times(rhs)

    def a22(self, pos: np.ndarray) -> np.ndarray:
        """``A[pos][:, pos]`` (dense)."""
        out = np.empty((len(pos), len(pos)))
        for cols, block in self.blocks(pos, np.eye(len(pos))):
            out[:, cols] = block[pos]
        return (out + out.T) / 2.0


#: Smallest squared Cholesky pivot, relative to the largest diagonal element, accepted.
_PIVOT_TOL = 1e-10


def _robust_cholesky(M: np.ndarray) -> np.ndarray | None:
    """Upper Cholesky factor, or ``None`` if ``M`` is not (numerically) positive definite."""
    try:
        chol = sla.cholesky(M, lower=False)
    except np.linalg.LinAlgError:
        return None
    scale = float(np.max(np.diag(M))) if len(M) else 1.0
    if len(M) and float(np.min(np.diag(chol))) ** 2 <= _PIVOT_TOL * scale:
        return None
    return chol


def _chol(M: np.ndarray, what: str, hint: str) -> np.ndarray:
    chol = _robust_cholesky(M)
    if chol is None:
        eig = np.linalg.eigvalsh(M)
        rank = int((eig > eig.max() * 1e-12).sum())
        raise CovarianceError(
            f"{what} is not positive definite (smallest eigenvalue {eig.min():.3g}; numerical rank "
            f"{rank} of {len(eig)}); {hint}"
        )
    return chol


def _chol_inv(chol: np.ndarray) -> np.ndarray:
    inv = sla.cho_solve((chol, False), np.eye(len(chol)))
    return (inv + inv.T) / 2.0


# ---------------------------------------------------------------------------- single step


class SingleStep:
    """Single-step covariance ``H`` of a pedigree plus genotyped animals (ssGBLUP).

    ``H^-1 = A^-1 + [[0, 0], [0, tau G^-1 - omega A22^-1]]`` over the pedigree's
    animals (Aguilar et al. 2010; Christensen & Lund 2010), sparse outside the
    genotyped block.  Pass it in ``cov=``: ``mb.fit(..., cov={"animal":
    mb.SingleStep(ped, G)})``.

    Parameters
    ----------
    pedigree : Pedigree
        Every genotyped animal must be in it (and every animal with records).
    G : GenomicRelationship, pandas.DataFrame or array-like
        Genomic relationships of the genotyped animals (labelled; an array needs
        ``genotyped=``).  Must be positive definite: blend it explicitly
        (:func:`genomic_relationship` ``blend=``) if it is not.
    genotyped : sequence, optional
        Labels of ``G``'s rows for an array ``G``; with a labelled ``G``, a subset (in
        any order) of its labels to use.
    tau, omega : float, default 1.0
        Scaling of ``G^-1`` and ``A22^-1`` (BLUPF90's ``TauOmega``).  ``H`` is
        positive definite when ``tau G^-1 + (1 - omega) A22^-1`` is.

    Notes
    -----
    With ``M = tau G^-1 + (1 - omega) A22^-1`` the covariance is
    ``H = A + P (M^-1 - A22) P'`` with ``P = A[:, 2] A22^-1`` (so ``H22 = M^-1``, which
    is ``G`` when ``tau = omega = 1``), and
    ``log|H| = log|A| - log|A22| - log|M|`` (``= log|A| - log|A22| + log|G|``).
    ``diag(H)`` is computed from an eigendecomposition of ``M^-1 - A22`` and sparse
    triangular solves with the pedigree, without forming a dense ``H`` or ``A``.
    ``A22`` is dense (genotyped x genotyped), as is ``G``.
    """

    def __init__(
        self, pedigree: Any, G: Any, *, genotyped: Any = None, tau: float = 1.0, omega: float = 1.0
    ) -> None:
        from .pedigree import Pedigree

        if not isinstance(pedigree, Pedigree):
            raise CovarianceError(f"SingleStep needs a Pedigree; got {type(pedigree).__name__}")
        for name, value in (("tau", tau), ("omega", omega)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number; got {value!r}")
        if not tau > 0:
            raise ValueError(f"tau must be positive; got {tau!r}")
        if not isinstance(G, (GenomicRelationship, pd.DataFrame)):
            grm = _as_grm(G, genotyped)
        else:
            grm = _as_grm(G)
            if genotyped is not None:
                want = normalize_labels(genotyped, what="genotyped")
                pos = grm.G.index.get_indexer(want)
                if (pos < 0).any():
                    absent = list(want[pos < 0])
                    raise CovarianceError(
                        f"{len(absent)} genotyped animal(s) are not labels of G: {preview(absent)}",
                        problems=pd.DataFrame({"label": absent}),
                    )
                grm = _as_grm(grm.G.iloc[pos, pos])
        self.pedigree = pedigree
        self.G: pd.DataFrame = grm.G
        self.tau = float(tau)
        self.omega = float(omega)
        #: Positions of the genotyped animals in ``pedigree.ids`` (C21: unknown IDs are named).
        self._pos = pedigree.positions(grm.G.index, what="genotyped animals")

    @property
    def labels(self) -> pd.Index:
        """Every animal of the pedigree, in the pedigree's order."""
        return self.pedigree.ids

    @property
    def genotyped(self) -> pd.Index:
        """The genotyped animals, in the order of :attr:`G`."""
        return self.G.index

    def __repr__(self) -> str:
        extra = "" if self.tau == 1.0 and self.omega == 1.0 else f", tau={self.tau:g}, omega={self.omega:g}"
        return f"SingleStep({len(self.pedigree)} animals, {len(self.G)} genotyped{extra})"

    @cached_property
    def _ops(self) -> _PedigreeOps:
        return _PedigreeOps(self.pedigree)

    @cached_property
    def a22(self) -> pd.DataFrame:
        """``A22``: pedigree relationships among the genotyped animals (labelled)."""
        return pd.DataFrame(self._ops.a22(self._pos), index=self.G.index, columns=self.G.columns)

    @cached_property
    def _core(self) -> dict[str, Any]:
        G = self.G.to_numpy(dtype=float)
        A22 = self.a22.to_numpy()
        ca = _chol(A22, "A22 (pedigree relationships of the genotyped animals)",
                   "the genotyped animals include pedigree duplicates (clones)")
        A22inv = _chol_inv(ca)
        cg = _chol(G, "G", "blend it explicitly, e.g. genomic_relationship(..., blend=(0.95, 'A22'), "
                   "a22=pedigree) or blend=(0.99, 'I'), before building the single-step H")
        Ginv = _chol_inv(cg)
        logdet_a22 = 2.0 * float(np.log(np.diag(ca)).sum())
        if self.tau == 1.0 and self.omega == 1.0:
            H22, logdet_m = G, -2.0 * float(np.log(np.diag(cg)).sum())
        else:
            M = self.tau * Ginv + (1.0 - self.omega) * A22inv
            cm = _chol((M + M.T) / 2.0, "tau G^-1 + (1 - omega) A22^-1",
                       "H is not positive definite with these tau and omega")
            H22, logdet_m = _chol_inv(cm), 2.0 * float(np.log(np.diag(cm)).sum())
        return {"A22inv": A22inv, "Ginv": Ginv, "H22": H22, "logdet_a22": logdet_a22, "logdet_m": logdet_m}

    def h_inverse(self) -> sp.csc_matrix:
        """``H^-1`` (sparse, pedigree order).

        Returns
        -------
        scipy.sparse.csc_matrix
            ``n x n`` over :attr:`labels`; dense only in the genotyped block.
        """
        core = self._core
        delta = self.tau * core["Ginv"] - self.omega * core["A22inv"]
        delta = (delta + delta.T) / 2.0
        n, pos = len(self.pedigree), self._pos
        r = np.repeat(pos, len(pos))
        c = np.tile(pos, len(pos))
        block = sp.csc_matrix((delta.ravel(), (r, c)), shape=(n, n))
        out = (self.pedigree.a_inverse() + block).tocsc()
        out.sum_duplicates()
        out.sort_indices()
        return out

    def logdet(self) -> float:
        """``log|H| = log|A| - log|A22| - log|tau G^-1 + (1 - omega) A22^-1|``.

        Returns
        -------
        float
        """
        core = self._core
        return float(self.pedigree.logdet_a() - core["logdet_a22"] - core["logdet_m"])

    def diagonal(self) -> pd.Series:
        """``diag(H)`` without forming ``H`` (for reliabilities).

        Returns
        -------
        pandas.Series
            Indexed by :attr:`labels`.
        """
        core = self._core
        pos = self._pos
        out = 1.0 + self.pedigree.inbreeding().to_numpy()
        D = core["H22"] - self.a22.to_numpy()
        lam, U = np.linalg.eigh((D + D.T) / 2.0)
        W = core["A22inv"] @ U  # P U = A[:, 2] A22^-1 U
        extra = np.zeros(len(out))
        for cols, block in self._ops.blocks(pos, W):
            extra += (block**2) @ lam[cols]
        out = out + extra
        out[pos] = np.diag(core["H22"])
        return pd.Series(out, index=self.labels, name="diagonal")

    def bind(self, levels: pd.Index) -> BoundCovariance:
        """Restrict to ``levels`` (a permutation of the pedigree's IDs).

        Parameters
        ----------
        levels : pandas.Index
            The term's levels.

        Returns
        -------
        BoundCovariance
            ``precision = H^-1``, ``logdet = log|H|``, ``diagonal = diag(H)``,
            ``kind = "single-step"``.
        """
        levels = pd.Index(levels, dtype=object)
        perm = self.labels.get_indexer(levels)
        if len(levels) != len(self.labels) or (perm < 0).any() or len(np.unique(perm)) != len(perm):
            raise CovarianceError(
                "internal error: a single-step term must use every pedigree animal as a level"
            )
        hinv, diag = self.h_inverse(), self.diagonal().to_numpy()
        if not (perm == np.arange(len(perm))).all():
            hinv, diag = hinv[perm][:, perm].tocsc(), diag[perm]
        return BoundCovariance(levels, hinv, self.logdet(), diag, "single-step")


def h_inverse(
    pedigree: Any, G: Any, *, genotyped: Sequence[Any] | None = None, tau: float = 1.0, omega: float = 1.0
) -> sp.csc_matrix:
    """The single-step ``H^-1`` of a pedigree and a genomic relationship matrix.

    ``H^-1 = A^-1 + [[0, 0], [0, tau G^-1 - omega A22^-1]]`` (Aguilar et al. 2010;
    Christensen & Lund 2010).  See :class:`SingleStep` (the structure to pass to
    ``fit``) for the parameters.

    Returns
    -------
    scipy.sparse.csc_matrix
        Rows and columns in ``pedigree.ids`` order.

    Examples
    --------
    >>> import pandas as pd, mixedblup as mb
    >>> ped = mb.Pedigree.from_frame(pd.DataFrame({"id": ["s", "d", "o"], "sire": ["0", "0", "s"],
    ...                              "dam": ["0", "0", "d"]}), id="id", sire="sire", dam="dam")
    >>> G = pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=["s", "o"], columns=["s", "o"])
    >>> mb.h_inverse(ped, G).shape
    (3, 3)
    """
    return SingleStep(pedigree, G, genotyped=genotyped, tau=tau, omega=omega).h_inverse()
