"""Sire and maternal-grandsire (sire-MGS) pedigrees for sire models.

In a sire model the evaluated animals are males, and each male's known ancestry is
often only his sire and his maternal grandsire (the sire of his dam); dams are not
identified.  The breeding value of male ``i`` with sire ``s`` and maternal grandsire
``k`` is then::

    u_i = 1/2 u_s + 1/4 u_k + e_i,

where ``e_i`` collects the dam's Mendelian sampling, the unknown maternal granddam
and the male's own Mendelian sampling.  With ``T^-1 = I - P`` (``P`` holding the
1/2 and 1/4 coefficients) and ``D = var(e)`` diagonal,

    A = T D T',    A^-1 = (I - P)' D^-1 (I - P),

which is assembled from sparse triplets, never from a dense ``A`` (Mrode 2014,
Sections 2.5-2.6; Quaas 1976).  The variances ``d_i`` (in units of the additive
variance) are, with ``F`` the inbreeding coefficients::

    sire and MGS known   d_i = 11/16 - F_s / 4 - F_k / 16
    only the sire known  d_i = 3/4 - F_s / 4
    only the MGS known   d_i = 15/16 - F_k / 16
    neither known        d_i = 1

(without inbreeding ``d_i^-1`` = 16/11, 4/3, 16/15 and 1, as printed by Mrode).  The
inbreeding of male ``i`` is ``F_i = a_sk / 4`` (his sire is related to his dam through
her sire).  It is computed exactly by the pedigree engine on an equivalent animal
pedigree in which every male with a known MGS gets a distinct phantom dam whose sire
is the MGS; the relationships among the males are the same in both pedigrees.

Dams are assumed unrelated to everything except through their sires (the MGS), each
male having a different dam, as in every sire-MGS evaluation.

References
----------
Mrode, R. A. (2014). Linear Models for the Prediction of Animal Breeding Values, 3rd
ed., Sections 2.5 and 2.6 (rules and example) and Example 13.2 (a printed sire-MGS
``A^-1``).
Quaas, R. L. (1976). Computing the diagonal elements and inverse of a large numerator
relationship matrix. Biometrics 32, 949-953.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._pedigree_checks import _column, loop_error, normalize_unknown
from .covariance import BoundCovariance
from .errors import CovarianceError, PedigreeError, PedigreeFixWarning, preview
from .interop import as_pandas
from .labels import normalize_labels
from .pedigree import Pedigree, generations

__all__ = ["SireMGSPedigree"]

#: Largest pedigree for which :meth:`SireMGSPedigree.a_matrix` builds a dense ``A``
#: without ``max_size`` being raised (in thousands of animals, as in ``Pedigree``).
_DENSE_A_LIMIT = 20_000


class SireMGSPedigree:
    """Males related through their sires and maternal grandsires (sire model pedigree).

    Build one with :meth:`from_frame`.  Use it like a :class:`~mixedblup.Pedigree` in
    :func:`~mixedblup.fit`: ``cov={"sire": smgs}``.  Every male of the pedigree is a
    level of the term (males without progeny records get BLUPs through relatives).

    Attributes
    ----------
    ids : pandas.Index
        Male IDs (``str``), ancestors before descendants (generation, then input order).
    sire_index, mgs_index : numpy.ndarray
        Read-only int64 positions in :attr:`ids` of each male's sire and maternal
        grandsire, -1 for unknown.
    added_founders : tuple of str
        Sires or maternal grandsires that were not listed as males and were added as
        founders (unknown sire and MGS).
    """

    def __init__(
        self,
        ids: Iterable[Any],
        sire_index: np.ndarray,
        mgs_index: np.ndarray,
        *,
        added_founders: Iterable[str] = (),
    ) -> None:
        """Wrap already sorted arrays (internal; use :meth:`from_frame`).

        Parameters
        ----------
        ids : iterable
            Unique IDs, every sire and MGS listed before its descendants.
        sire_index, mgs_index : numpy.ndarray
            Positions of each male's sire and MGS in ``ids``, -1 for unknown; each
            smaller than the male's own position.
        added_founders : iterable of str
            Parents added as founders.
        """
        index = pd.Index(normalize_labels(list(ids), what="sire-MGS pedigree IDs"), dtype=object, name="id")
        sire = np.array(sire_index, dtype=np.int64)
        mgs = np.array(mgs_index, dtype=np.int64)
        n = len(index)
        if sire.shape != (n,) or mgs.shape != (n,):
            raise PedigreeError(f"sire_index and mgs_index must have one entry per male ({n})")
        if index.hasnans or not index.is_unique:
            raise PedigreeError("sire-MGS pedigree IDs must be unique and not missing")
        me = np.arange(n)
        for name, arr in (("sire", sire), ("maternal grandsire", mgs)):
            bad = (arr < -1) | ((arr >= me) & (arr >= 0))
            if bad.any():
                raise PedigreeError(
                    f"{name} positions must precede the male (ancestors-first order); violated for "
                    f"{preview(index[bad].tolist())}"
                )
        for arr in (sire, mgs):
            arr.flags.writeable = False
        self.ids: pd.Index = index
        self.sire_index: np.ndarray = sire
        self.mgs_index: np.ndarray = mgs
        self.added_founders: tuple[str, ...] = tuple(added_founders)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_frame(
        cls,
        df: Any,
        *,
        id: str,
        sire: str,
        mgs: str,
        unknown: Iterable[str] = ("0", "", "NA", "."),
    ) -> SireMGSPedigree:
        """Build a checked, sorted sire-MGS pedigree from a data frame.

        Parameters
        ----------
        df : pandas.DataFrame
            One row per male (a polars frame is converted).  Rows may be in any order.
        id, sire, mgs : str
            Columns of the male's ID, his sire and his maternal grandsire (keyword-only).
        unknown : iterable of str
            Codes for an unknown sire or MGS (compared after normalisation); missing
            values are always unknown.

        Returns
        -------
        SireMGSPedigree

        Raises
        ------
        PedigreeError
            Missing or duplicated IDs, an ID equal to an unknown code, a male that is
            his own sire or MGS, loops (a male among his own ancestors).

        Warns
        -----
        PedigreeFixWarning
            Sires or maternal grandsires not listed as males are added as founders
            (:attr:`added_founders`).

        Examples
        --------
        >>> import pandas as pd
        >>> import mixedblup as mb
        >>> frame = pd.DataFrame({"bull": ["1", "4", "5"], "sire": ["0", "1", "4"],
        ...                       "mgs": ["0", "0", "1"]})
        >>> smgs = mb.SireMGSPedigree.from_frame(frame, id="bull", sire="sire", mgs="mgs")
        >>> smgs.a_matrix().round(3).to_numpy().tolist()
        [[1.0, 0.5, 0.5], [0.5, 1.0, 0.625], [0.5, 0.625, 1.125]]
        """
        df = as_pandas(df)
        codes = normalize_unknown(unknown)
        cols = {what: _column(df, name, what) for what, name in (("id", id), ("sire", sire), ("mgs", mgs))}
        ids = normalize_labels(cols["id"], what=f"ID column {id!r}")
        if ids.hasnans:
            rows = list(df.index[np.asarray(ids.isna())])
            raise PedigreeError(f"{len(rows)} male(s) have a missing ID: rows {preview(rows)}",
                                problems=pd.DataFrame({"row": rows}))
        as_unknown = ids[ids.isin(list(codes))]
        if len(as_unknown):
            raise PedigreeError(
                f"IDs {preview(list(as_unknown))} equal an unknown-parent code ({sorted(codes)}); "
                "rename these males or change unknown="
            )
        dup = ids[ids.duplicated()].unique()
        if len(dup):
            raise PedigreeError(f"IDs listed more than once: {preview(list(dup))}; list each male once",
                                problems=pd.DataFrame({"id": list(dup)}))
        parents = {}
        for what in ("sire", "mgs"):
            lab = normalize_labels(cols[what], what=f"{what} column {cols[what].name!r}")
            arr = np.asarray(lab, dtype=object)
            known = ~pd.isna(arr) & ~np.isin(arr.astype(str), list(codes))
            parents[what] = np.where(known, arr, None)
        own = (parents["sire"] == np.asarray(ids, dtype=object)) | (parents["mgs"] == np.asarray(ids, dtype=object))
        if own.any():
            bad = list(ids[own])
            raise PedigreeError(f"males that are their own sire or maternal grandsire: {preview(bad)}",
                                problems=pd.DataFrame({"id": bad}))
        listed = set(ids)
        added: list[str] = []
        seen: set[str] = set()
        for s, k in zip(parents["sire"], parents["mgs"]):
            for p in (s, k):
                if p is not None and p not in listed and p not in seen:
                    seen.add(p)
                    added.append(p)
        if added:
            warnings.warn(
                f"{len(added)} sire(s)/maternal grandsire(s) not listed as males were added as founders: "
                f"{preview(added)}",
                PedigreeFixWarning,
                stacklevel=2,
            )
        all_ids = np.array(added + list(ids), dtype=object)
        pos = pd.Index(all_ids)
        n_add = len(added)

        def positions(arr: np.ndarray) -> np.ndarray:
            out = np.full(len(all_ids), -1, dtype=np.int64)
            known = np.array([p is not None for p in arr], dtype=bool)
            out[n_add:][known] = pos.get_indexer(arr[known].astype(str))
            return out

        s_pos, k_pos = positions(parents["sire"]), positions(parents["mgs"])
        gen = generations(s_pos, k_pos)
        remaining = np.flatnonzero(gen < 0)
        if remaining.size:
            rows = np.array([None] * n_add + list(df.index), dtype=object)
            raise loop_error(all_ids, rows, s_pos, k_pos, remaining)
        order = np.argsort(gen, kind="stable")
        new = np.empty(order.size, dtype=np.int64)
        new[order] = np.arange(order.size)
        s_sorted, k_sorted = s_pos[order], k_pos[order]
        return cls(
            all_ids[order],
            np.where(s_sorted >= 0, new[np.maximum(s_sorted, 0)], -1),
            np.where(k_sorted >= 0, new[np.maximum(k_sorted, 0)], -1),
            added_founders=added,
        )

    @classmethod
    def from_animal_pedigree(
        cls,
        df: Any,
        males: Iterable[Any],
        *,
        id: str,
        sire: str,
        dam: str,
        unknown: Iterable[str] = ("0", "", "NA", "."),
    ) -> SireMGSPedigree:
        """The sire-MGS pedigree of ``males`` read off an animal pedigree.

        Each male gets his sire and the sire of his dam; their own sires and maternal
        grandsires are added in turn, until every ancestor reachable through sires and
        maternal grandsires is listed.  Dams themselves are dropped (the sire model
        assumes them unrelated except through their sires).

        Parameters
        ----------
        df : pandas.DataFrame
            Animal pedigree, one row per animal.
        males : iterable
            The males to evaluate (e.g. the sires of recorded animals).
        id, sire, dam : str
            Columns of the animal pedigree.
        unknown : iterable of str
            Unknown-parent codes.

        Returns
        -------
        SireMGSPedigree
        """
        df = as_pandas(df)
        codes = set(normalize_unknown(unknown))
        ids = normalize_labels(_column(df, id, "id"), what=f"ID column {id!r}")
        if ids.duplicated().any():
            raise PedigreeError(f"IDs listed more than once: {preview(list(ids[ids.duplicated()].unique()))}")

        def lookup(col: str) -> dict[str, str]:
            lab = normalize_labels(_column(df, col, col), what=f"column {col!r}")
            return {a: p for a, p in zip(ids, lab) if isinstance(p, str) and p not in codes}

        sire_of, dam_of = lookup(sire), lookup(dam)

        def mgs_of(x: str) -> str | None:
            d = dam_of.get(x)
            return None if d is None else sire_of.get(d)

        wanted = [m for m in normalize_labels(list(males), what="males") if isinstance(m, str) and m not in codes]
        listed: dict[str, None] = dict.fromkeys(wanted)
        frontier = list(listed)
        while frontier:
            nxt = []
            for x in frontier:
                for p in (sire_of.get(x), mgs_of(x)):
                    if p is not None and p not in listed:
                        listed[p] = None
                        nxt.append(p)
            frontier = nxt
        bulls = list(listed)
        frame = pd.DataFrame({
            "id": bulls,
            "sire": [sire_of.get(b) for b in bulls],
            "mgs": [mgs_of(b) for b in bulls],
        })
        return cls.from_frame(frame, id="id", sire="sire", mgs="mgs", unknown=())

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        """Number of males (added founders included)."""
        return len(self.ids)

    def __contains__(self, label: object) -> bool:
        """Whether ``label`` (normalised like an ID) is a male of the pedigree."""
        try:
            key = normalize_labels([label])[0]
        except Exception:  # noqa: BLE001 - an unusable label is simply not an ID
            return False
        return key in self.ids

    def __repr__(self) -> str:
        both = int(((self.sire_index >= 0) & (self.mgs_index >= 0)).sum())
        return f"SireMGSPedigree({len(self)} males, {both} with sire and MGS known)"

    def to_frame(self) -> pd.DataFrame:
        """The pedigree in its sorted order: ``id, sire, mgs`` (missing for unknown)."""
        ids = np.asarray(self.ids, dtype=object)

        def lab(p: np.ndarray) -> np.ndarray:
            return np.where(p >= 0, ids[np.maximum(p, 0)], None)

        return pd.DataFrame({"id": ids, "sire": lab(self.sire_index), "mgs": lab(self.mgs_index)})

    # ------------------------------------------------------------------ relationships

    @cached_property
    def _animal_pedigree(self) -> tuple[Pedigree, np.ndarray]:
        """Equivalent animal pedigree (a phantom dam per male with a known MGS) and the
        labels of the males in it (in this pedigree's order)."""
        n = len(self)
        has_mgs = self.mgs_index >= 0
        # order: before male i, his phantom dam (if any); positions shift by the dams inserted
        n_dams_before = np.cumsum(has_mgs) - has_mgs  # dams inserted before male i's own dam
        male_pos = np.arange(n) + n_dams_before + has_mgs
        dam_pos = np.where(has_mgs, male_pos - 1, -1)
        total = n + int(has_mgs.sum())
        sire_col = np.full(total, -1, dtype=np.int64)
        dam_col = np.full(total, -1, dtype=np.int64)
        sire_col[male_pos] = np.where(self.sire_index >= 0, male_pos[np.maximum(self.sire_index, 0)], -1)
        dam_col[male_pos] = dam_pos
        dams = dam_pos[has_mgs]
        sire_col[dams] = male_pos[self.mgs_index[has_mgs]]
        labels = np.empty(total, dtype=object)
        labels[male_pos] = [f"m{i}" for i in range(n)]
        labels[dams] = [f"d{i}" for i in np.flatnonzero(has_mgs)]
        return Pedigree(labels, sire_col, dam_col), labels[male_pos]

    def inbreeding(self) -> pd.Series:
        """Inbreeding coefficients ``F_i = a(sire, MGS) / 4``, exact, indexed by ID."""
        ped, male_labels = self._animal_pedigree
        F = ped.inbreeding().reindex(male_labels).to_numpy()
        return pd.Series(F, index=self.ids, name="F")

    def mendelian_variances(self) -> np.ndarray:
        """``d_i = var(u_i - u_s / 2 - u_k / 4) / sigma_a^2`` (module docstring), in ID order."""
        F = self.inbreeding().to_numpy()
        s, k = self.sire_index, self.mgs_index
        Fs = np.where(s >= 0, F[np.maximum(s, 0)], 0.0)
        Fk = np.where(k >= 0, F[np.maximum(k, 0)], 0.0)
        d = np.ones(len(self))
        both, only_s, only_k = (s >= 0) & (k >= 0), (s >= 0) & (k < 0), (s < 0) & (k >= 0)
        d[both] = 11 / 16 - Fs[both] / 4 - Fk[both] / 16
        d[only_s] = 3 / 4 - Fs[only_s] / 4
        d[only_k] = 15 / 16 - Fk[only_k] / 16
        return d

    def a_inverse(self) -> sp.csc_matrix:
        """Sparse ``A^-1 = (I - P)' D^-1 (I - P)`` among the males, in ID order."""
        n = len(self)
        me = np.arange(n)
        w = 1.0 / self.mendelian_variances()
        cols, coefs = [me], [np.ones(n)]  # row i of (I - P): 1 at i, -1/2 at sire, -1/4 at MGS
        for par, c in ((self.sire_index, -0.5), (self.mgs_index, -0.25)):
            has = par >= 0
            cols.append(np.where(has, par, 0))
            coefs.append(np.where(has, c, 0.0))
        r, c, v = [], [], []
        for a in range(3):
            for b in range(3):
                r.append(cols[a])
                c.append(cols[b])
                v.append(w * coefs[a] * coefs[b])
        out = sp.coo_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))), shape=(n, n))
        out = out.tocsc()
        out.eliminate_zeros()
        return out

    def logdet_a(self) -> float:
        """``log|A| = sum(log d_i)``."""
        return float(np.log(self.mendelian_variances()).sum())

    def a_matrix(self, *, max_size: int = _DENSE_A_LIMIT) -> pd.DataFrame:
        """Dense ``A`` among the males by the tabular method (small pedigrees, checks).

        ``a_ij = a_i,s_j / 2 + a_i,k_j / 4`` for ``i`` older than ``j`` and
        ``a_jj = 1 + a_s_j,k_j / 4``.

        Parameters
        ----------
        max_size : int
            Refuse pedigrees with more males than this (the matrix is ``n x n``).

        Returns
        -------
        pandas.DataFrame
            Labelled by ID on both axes.
        """
        n = len(self)
        if n > max_size:
            raise PedigreeError(f"a dense A of {n} males was not built (max_size={max_size}); use a_inverse()")
        A = np.zeros((n, n))
        for j in range(n):
            s, k = int(self.sire_index[j]), int(self.mgs_index[j])
            col = np.zeros(j)
            if s >= 0:
                col += 0.5 * A[:j, s]
            if k >= 0:
                col += 0.25 * A[:j, k]
            A[:j, j] = col
            A[j, :j] = col
            A[j, j] = 1.0 + (0.25 * A[s, k] if s >= 0 and k >= 0 else 0.0)
        return pd.DataFrame(A, index=self.ids, columns=self.ids)

    # ------------------------------------------------------------------ covariance protocol

    @property
    def labels(self) -> pd.Index:
        """Every male of the pedigree, in its order (the levels of a term using it)."""
        return self.ids

    @cached_property
    def _parts(self) -> tuple[sp.csc_matrix, float, np.ndarray]:
        return self.a_inverse(), self.logdet_a(), 1.0 + self.inbreeding().to_numpy()

    def bind(self, levels: pd.Index) -> BoundCovariance:
        """``A^-1`` over ``levels``, which must be the pedigree's IDs in its order.

        The bound structure reports its kind as ``"relationship"`` (a genetic term for
        heritability and breeding-value tables); the parent-average decomposition of
        :meth:`~mixedblup.MixedModelResults.ebv_decomposition` needs an animal pedigree.
        """
        if not pd.Index(levels).equals(self.labels):
            raise CovarianceError(
                "internal error: a sire-MGS term must use every male of the pedigree as a level, in "
                "pedigree order"
            )
        ainv, logdet, diagonal = self._parts
        return BoundCovariance(pd.Index(levels, dtype=object), ainv, logdet, diagonal, "relationship")
