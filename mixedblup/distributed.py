"""PCG on Dask: records and pedigree as partitioned DataFrames, products reduced per iteration.

Beyond one machine the equations are solved on an existing distributed engine
(`Dask <https://docs.dask.org>`_), not on a scheduler of our own.  Install the extra:
``pip install 'mixedblup[dask]'``.

Design
------
The coefficient matrix is a sum of weighted Gram matrices of row blocks,

    C = sum_records-partitions  M_b' W_b M_b
      + sum_pedigree-partitions L_b' (lambda D_b^-1) L_b  + iid penalties,

where ``M_b`` holds the incidence rows of one partition of the records and ``L_b``
the rows ``e_i - e_s / 2 - e_d / 2`` of ``(I - P)`` for one partition of the pedigree
(``A^-1 = (I - P)' D^-1 (I - P)``).  Each partition is turned once into a compact
block (its rows over the few equations it touches, in local numbering) that stays in
worker memory.  Every PCG iteration then

1. scatters the search direction to the workers (one broadcast),
2. computes ``M_b' W_b M_b p`` on every block (a task per partition),
3. gathers the per-block results (only the equations each block touches) and adds
   them on the client.

The vectors of the iteration (seven of the order of the equations) live on the
client, which runs the same :func:`~mixedblup.iterative.run_pcg` loop as the
in-memory solver, so the solutions agree to the stopping tolerance.  The same code
runs on a ``LocalCluster`` and on any Dask cluster: it only uses ``Client.scatter``,
``Client.submit`` and Dask DataFrame operations.

Model
-----
Single-trait animal model ``y = X b + Z_a a + sum_t Z_t u_t + e`` with categorical
fixed factors (the first with all its levels, the others without their first level),
numeric covariates (an intercept when there is no factor), one animal effect with the
numerator relationship matrix, and independent random factors (e.g. permanent
environment, herd).  This is what :func:`~mixedblup.iterative.design_from_codes`
builds in memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._accel import NUMBA
from .errors import CovarianceError, DataError, PedigreeError
from .iterative import DEFAULT_TOL, PCGProgress, diagonal_preconditioner, run_pcg

__all__ = ["solve_pcg_dask", "DaskPCGResult", "GramBlock"]

logger = logging.getLogger("mixedblup.distributed")

#: Codes of an unknown parent in a pedigree DataFrame (as in Pedigree.from_frame).
UNKNOWN = ("0", "", "NA", ".")


def _require_dask() -> None:
    try:
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Dask path needs dask[dataframe,distributed]: pip install 'mixedblup[dask]'"
        ) from exc


# --------------------------------------------------------------------------------------
# blocks (built and kept on the workers)
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class GramBlock:
    """Rows of one partition over the equations they touch: contributes ``M' W M``.

    Attributes
    ----------
    cols : numpy.ndarray
        Global equation numbers of the local columns (sorted, unique).
    M : scipy.sparse.csr_matrix
        Local rows x ``len(cols)``.
    w : numpy.ndarray
        Row weights.
    wy : numpy.ndarray or None
        ``w * y`` for record blocks (``None`` for pedigree blocks).
    """

    cols: np.ndarray
    M: sp.csr_matrix
    w: np.ndarray
    wy: np.ndarray | None = None

    @classmethod
    def from_rows(cls, rows: np.ndarray, gcols: np.ndarray, vals: np.ndarray, n_rows: int,
                  w: np.ndarray, wy: np.ndarray | None = None) -> GramBlock:
        """From COO triplets with global column numbers."""
        cols, local = np.unique(gcols, return_inverse=True)
        M = sp.csr_matrix((vals, (rows, local.ravel())), shape=(n_rows, len(cols)))
        M.sum_duplicates()
        return cls(cols.astype(np.int64), M, np.asarray(w, dtype=float), wy)

    def product(self, x: np.ndarray) -> np.ndarray:
        """``M' W M x[cols]`` over ``cols``."""
        return np.asarray(self.M.T @ (self.w * (self.M @ x[self.cols]))).ravel()

    def diagonal(self) -> np.ndarray:
        """``diag(M' W M)`` over ``cols``."""
        M2 = self.M.copy()
        M2.data = M2.data**2
        return np.asarray(M2.T @ self.w).ravel()

    def rhs(self) -> np.ndarray:
        """``M' W y`` over ``cols`` (zeros for pedigree blocks)."""
        if self.wy is None:
            return np.zeros(len(self.cols))
        return np.asarray(self.M.T @ self.wy).ravel()


def _block_cols(block: GramBlock) -> np.ndarray:
    return block.cols


def _block_product(block: GramBlock, x: np.ndarray) -> np.ndarray:
    return block.product(x)


def _block_setup(block: GramBlock) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return block.cols, block.diagonal(), block.rhs()


@dataclass(frozen=True)
class _Layout:
    """Global numbering of the equations."""

    response: str
    animal: str
    weights: str | None
    fixed: tuple[str, ...]
    fixed_levels: tuple[tuple[str, ...], ...]
    covariates: tuple[str, ...]
    random: tuple[str, ...]
    random_levels: tuple[tuple[str, ...], ...]
    p: int
    n_animals: int

    @property
    def animal_offset(self) -> int:
        return self.p

    def random_offsets(self) -> list[int]:
        out, off = [], self.p + self.n_animals
        for levels in self.random_levels:
            out.append(off)
            off += len(levels)
        return out

    @property
    def size(self) -> int:
        return self.p + self.n_animals + sum(len(lv) for lv in self.random_levels)

    def fixed_names(self) -> list[str]:
        names: list[str] = [] if self.fixed else ["(Intercept)"]
        for i, (col, levels) in enumerate(zip(self.fixed, self.fixed_levels)):
            names.extend(f"{col}[{lab}]" for lab in levels[(0 if i == 0 else 1):])
        return names + list(self.covariates)


def _as_str(values: pd.Series) -> pd.Series:
    """Labels as strings (integers without a decimal point), the in-memory convention."""
    if pd.api.types.is_float_dtype(values.dtype):
        if not np.all(np.mod(values.dropna(), 1) == 0):
            raise DataError("label columns must be strings or integers")
        values = values.astype("Int64")
    return values.astype(str).str.strip()


def _record_block(df: pd.DataFrame, layout: _Layout) -> GramBlock:
    """Incidence rows of one partition of the records (with an ``_pos`` animal column)."""
    n = len(df)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    idx = np.arange(n)
    off = 0
    if not layout.fixed:
        rows.append(idx)
        cols.append(np.zeros(n, dtype=np.int64))
        vals.append(np.ones(n))
        off = 1
    for i, (col, levels) in enumerate(zip(layout.fixed, layout.fixed_levels)):
        codes = pd.Categorical(_as_str(df[col]), categories=list(levels)).codes.astype(np.int64)
        if (codes < 0).any():
            raise DataError(f"column {col!r} has missing or unexpected values")
        start = 0 if i == 0 else 1
        keep = codes >= start
        rows.append(idx[keep])
        cols.append(off + codes[keep] - start)
        vals.append(np.ones(int(keep.sum())))
        off += len(levels) - start
    for col in layout.covariates:
        rows.append(idx)
        cols.append(np.full(n, off, dtype=np.int64))
        vals.append(df[col].to_numpy(dtype=float))
        off += 1
    pos = df["_pos"].to_numpy(dtype=np.int64)
    rows.append(idx)
    cols.append(layout.animal_offset + pos.astype(np.int64))
    vals.append(np.ones(n))
    for col, levels, roff in zip(layout.random, layout.random_levels, layout.random_offsets()):
        codes = pd.Categorical(_as_str(df[col]), categories=list(levels)).codes.astype(np.int64)
        if (codes < 0).any():
            raise DataError(f"column {col!r} has missing or unexpected values")
        rows.append(idx)
        cols.append(roff + codes)
        vals.append(np.ones(n))
    w = np.ones(n) if layout.weights is None else df[layout.weights].to_numpy(dtype=float)
    y = df[layout.response].to_numpy(dtype=float)
    if not np.isfinite(y).all():
        raise DataError(f"response {layout.response!r} has missing or non-finite values")
    return GramBlock.from_rows(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), n,
                               w, w * y)


def _pedigree_block(pos: np.ndarray, sire: np.ndarray, dam: np.ndarray, d: np.ndarray,
                    offset: int, lam: float) -> GramBlock:
    """Rows of ``(I - P)`` for some animals, weights ``lam / d``: contributes ``lam A^-1``."""
    n = len(pos)
    idx = np.arange(n)
    ks, kd = sire >= 0, dam >= 0
    rows = np.concatenate([idx, idx[ks], idx[kd]])
    cols = offset + np.concatenate([pos, sire[ks], dam[kd]]).astype(np.int64)
    vals = np.concatenate([np.ones(n), np.full(int(ks.sum()), -0.5), np.full(int(kd.sum()), -0.5)])
    return GramBlock.from_rows(rows, cols, vals, n, lam / np.asarray(d, dtype=float))


def _pedigree_frame_block(df: pd.DataFrame, offset: int, lam: float) -> GramBlock:
    return _pedigree_block(df["_pos"].to_numpy(np.int64), df["_spos"].to_numpy(np.int64),
                           df["_dpos"].to_numpy(np.int64), df["_d"].to_numpy(float), offset, lam)


def _count_rows(df: pd.DataFrame) -> int:
    return len(df)


# --------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaskPCGResult:
    """Solutions of the Dask PCG path.

    Attributes
    ----------
    fixed : pandas.Series
        Fixed-effect solutions by column name (``"herd_year[H1Y2]"``, covariates).
    animal : pandas.Series
        Breeding values by animal ID (pedigree order).
    random : dict of str to pandas.Series
        Solutions of the independent random factors, by level.
    x : numpy.ndarray
        All solutions ``[fixed, animal, random...]`` (a warm start for another solve).
    iterations, accuracy, converged, interrupted, history, seconds
        As in :class:`~mixedblup.iterative.PCGResult`.
    setup_seconds : float
        Coding levels, merging IDs and building the blocks on the workers.
    seconds_in_products : float
        Time spent in the distributed products (scatter, tasks, gather, reduce).
    n_blocks : int
        Record and pedigree partitions.
    """

    fixed: pd.Series
    animal: pd.Series
    random: dict[str, pd.Series]
    x: np.ndarray = field(repr=False)
    iterations: int
    accuracy: float
    converged: bool
    interrupted: bool
    history: np.ndarray = field(repr=False)
    seconds: float
    setup_seconds: float
    seconds_in_products: float
    n_blocks: int
    tol: float = DEFAULT_TOL


# --------------------------------------------------------------------------------------
# set-up
# --------------------------------------------------------------------------------------


def _levels(ddf: Any, col: str) -> tuple[str, ...]:
    values = ddf[col].dropna().unique().compute()
    labels = sorted(set(_as_str(pd.Series(values)).tolist()))
    return tuple(labels)


def _pedigree_from_frame(
    pedigree: Any, client: Any, *, id: str, sire: str, dam: str, inbreeding: str | None,
    unknown: Sequence[str], npartitions: int | None,
) -> tuple[Any, pd.Index, Any]:
    """Positions, parent positions and Mendelian variances of a pedigree DataFrame.

    Returns the id -> position map (a Dask DataFrame), the IDs in position order and
    the coded pedigree (a Dask DataFrame with ``_pos, _spos, _dpos, _d``).
    """
    import dask

    cols = [id, sire, dam] + ([inbreeding] if inbreeding else [])
    ped = pedigree[cols]
    lengths = np.asarray(client.gather(client.compute([dask.delayed(_count_rows)(part)
                                                       for part in ped.to_delayed()])), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])

    def add_pos(df: pd.DataFrame, partition_info: dict | None = None) -> pd.DataFrame:
        start = starts[partition_info["number"]] if partition_info else 0
        out = pd.DataFrame({"_id": _as_str(df[id]).to_numpy(), "_s": _as_str(df[sire]).to_numpy(),
                            "_dm": _as_str(df[dam]).to_numpy(),
                            "_pos": np.arange(start, start + len(df), dtype=np.int64)}).astype(
                                {"_id": str, "_s": str, "_dm": str})
        out.loc[df[sire].isna().to_numpy(), "_s"] = ""
        out.loc[df[dam].isna().to_numpy(), "_dm"] = ""
        out["_F"] = df[inbreeding].to_numpy(dtype=float) if inbreeding else 0.0
        return out

    meta = pd.DataFrame({"_id": pd.Series(dtype=str), "_s": pd.Series(dtype=str),
                         "_dm": pd.Series(dtype=str), "_pos": pd.Series(dtype="int64"),
                         "_F": pd.Series(dtype=float)})
    coded = ped.map_partitions(add_pos, meta=meta)
    idmap = coded[["_id", "_pos", "_F"]]
    n = int(lengths.sum())
    n_unique = int(idmap["_id"].nunique().compute())
    if n_unique != n:
        raise PedigreeError(f"the pedigree has {n - n_unique} duplicated IDs; IDs must be unique")
    idmap = idmap.assign(_id=idmap["_id"].astype("string"))
    sires = idmap.rename(columns={"_id": "_s", "_pos": "_spos", "_F": "_Fs"})
    dams = idmap.rename(columns={"_id": "_dm", "_pos": "_dpos", "_F": "_Fd"})
    coded = coded.assign(_s=coded["_s"].astype("string"), _dm=coded["_dm"].astype("string"))
    coded = coded.merge(sires, on="_s", how="left").merge(dams, on="_dm", how="left")
    unknown = set(unknown)

    def finish(df: pd.DataFrame) -> pd.DataFrame:
        s_unk = (df["_s"].isin(unknown) | df["_s"].isna()).to_numpy()
        d_unk = (df["_dm"].isin(unknown) | df["_dm"].isna()).to_numpy()
        spos = df["_spos"].to_numpy(dtype=float, na_value=np.nan)
        dpos = df["_dpos"].to_numpy(dtype=float, na_value=np.nan)
        missing = (~s_unk & np.isnan(spos)) | (~d_unk & np.isnan(dpos))
        fs = np.where(np.isnan(spos), 0.0, 1.0 + np.nan_to_num(df["_Fs"].to_numpy(dtype=float, na_value=0.0)))
        fd = np.where(np.isnan(dpos), 0.0, 1.0 + np.nan_to_num(df["_Fd"].to_numpy(dtype=float, na_value=0.0)))
        return pd.DataFrame({
            "_pos": df["_pos"].to_numpy(np.int64),
            "_spos": np.where(np.isnan(spos), -1, spos).astype(np.int64),
            "_dpos": np.where(np.isnan(dpos), -1, dpos).astype(np.int64),
            "_d": 1.0 - 0.25 * (fs + fd),
            "_missing": missing,
        })

    meta2 = pd.DataFrame({"_pos": pd.Series(dtype="int64"), "_spos": pd.Series(dtype="int64"),
                          "_dpos": pd.Series(dtype="int64"), "_d": pd.Series(dtype=float),
                          "_missing": pd.Series(dtype=bool)})
    coded = coded.map_partitions(finish, meta=meta2)
    if npartitions:
        coded = coded.repartition(npartitions=npartitions)
    coded = client.persist(coded)
    n_missing, n_bad = dask.compute(coded["_missing"].sum(), (coded["_d"] <= 0).sum())
    if n_missing:
        raise PedigreeError(
            f"{int(n_missing)} animal(s) have a parent that is neither an animal of the pedigree nor "
            f"an unknown code {sorted(unknown)}; add the parents as founders (Pedigree.from_frame "
            "does this)"
        )
    if n_bad:
        raise PedigreeError(f"{int(n_bad)} animal(s) have a non-positive Mendelian sampling variance")
    ids = idmap.compute().sort_values("_pos")["_id"]
    return idmap[["_id", "_pos"]], pd.Index(ids.to_numpy(), dtype=object, name="id"), coded


def solve_pcg_dask(
    records: Any,
    pedigree: Any,
    *,
    response: str,
    animal: str,
    variances: Mapping[str, float],
    fixed: Sequence[str] = (),
    covariates: Sequence[str] = (),
    random: Sequence[str] = (),
    weights: str | None = None,
    client: Any = None,
    id: str = "id",
    sire: str = "sire",
    dam: str = "dam",
    inbreeding: str | None = None,
    unknown: Sequence[str] = UNKNOWN,
    pedigree_partitions: int | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
    x0: np.ndarray | DaskPCGResult | None = None,
    callback: Callable[[PCGProgress], Any] | None = None,
    log_interval: float = 10.0,
    max_seconds: float | None = None,
) -> DaskPCGResult:
    """Solve an animal model by PCG with records and pedigree as Dask DataFrames.

    Parameters
    ----------
    records : dask.dataframe.DataFrame
        One row per record (pandas DataFrames are converted).
    pedigree : dask.dataframe.DataFrame or Pedigree
        Columns ``id, sire, dam`` (names configurable) and optionally inbreeding
        coefficients; or an in-memory :class:`~mixedblup.Pedigree` (exact inbreeding,
        the same model as :func:`~mixedblup.iterative.solve_pcg`).
    response, animal : str
        Response column and animal-ID column of ``records``.
    variances : mapping
        ``{animal: sigma_a^2, "residual": sigma_e^2, <random factor>: variance...}``.
    fixed : sequence of str
        Categorical fixed factors (first: all levels; others: first level dropped).
    covariates : sequence of str
        Numeric fixed covariates (an intercept is added when ``fixed`` is empty).
    random : sequence of str
        Independent random factors (identity covariance).
    weights : str, optional
        Column of precision weights.
    client : distributed.Client, optional
        Default: the current client (``distributed.get_client()``).
    id, sire, dam : str
        Pedigree columns.
    inbreeding : str, optional
        Pedigree column of inbreeding coefficients ``F`` (e.g. from
        :meth:`~mixedblup.Pedigree.inbreeding`).  Without it inbreeding is ignored in
        ``A^-1`` (the Mendelian variances are ``1/2, 3/4, 1``).
    unknown : sequence of str
        Unknown-parent codes (missing values are always unknown).  A parent that is
        neither an ID nor an unknown code is an error.
    pedigree_partitions : int, optional
        Repartition the coded pedigree into this many blocks.
    tol, max_iter, x0, callback, log_interval, max_seconds
        As in :func:`~mixedblup.iterative.solve_pcg`.

    Returns
    -------
    DaskPCGResult
    """
    _require_dask()
    import dask
    import dask.dataframe as dd
    from distributed import get_client

    t_setup = time.perf_counter()
    client = client or get_client()
    if isinstance(records, pd.DataFrame):
        records = dd.from_pandas(records, npartitions=max(1, len(client.scheduler_info()["workers"])))
    variances = dict(variances)
    residual_keys = [k for k in variances if isinstance(k, str) and k.lower() == "residual"]
    if len(residual_keys) != 1 or animal not in variances or any(r not in variances for r in random):
        raise CovarianceError(
            f"variances must give {animal!r}, 'residual' and every random factor {list(random)}"
        )
    s2e = float(variances[residual_keys[0]])
    s2a = float(variances[animal])
    if not (s2e > 0 and s2a > 0 and all(float(variances[r]) > 0 for r in random)):
        raise CovarianceError("the PCG path needs positive variances")
    fixed_levels = tuple(_levels(records, c) for c in fixed)
    random_levels = tuple(_levels(records, c) for c in random)
    p = (0 if fixed else 1) + sum(len(lv) - (0 if i == 0 else 1) for i, lv in enumerate(fixed_levels))
    p += len(covariates)
    lam_a = s2e / s2a

    # pedigree: positions, parents, Mendelian variances -> pedigree blocks on the workers
    from .pedigree import Pedigree

    if isinstance(pedigree, Pedigree):
        ids = pedigree.ids
        n_animals = len(ids)
        idmap = dd.from_pandas(pd.DataFrame({"_id": pd.Series(np.asarray(ids, dtype=object)).astype(str),
                                             "_pos": np.arange(n_animals, dtype=np.int64)}),
                               npartitions=max(1, records.npartitions))
        d = pedigree.mendelian_variances()
        nb = pedigree_partitions or max(1, records.npartitions)
        cuts = np.linspace(0, n_animals, nb + 1).astype(np.int64)
        ped_blocks = client.scatter([
            _pedigree_block(np.arange(a, b), np.asarray(pedigree.sire_pos[a:b]),
                            np.asarray(pedigree.dam_pos[a:b]), d[a:b], p, lam_a)
            for a, b in zip(cuts[:-1], cuts[1:]) if b > a
        ], hash=False)
    else:
        idmap, ids, coded = _pedigree_from_frame(
            pedigree, client, id=id, sire=sire, dam=dam, inbreeding=inbreeding, unknown=unknown,
            npartitions=pedigree_partitions)
        n_animals = len(ids)
        ped_blocks = client.compute([dask.delayed(_pedigree_frame_block)(part, p, lam_a)
                                     for part in coded.to_delayed()])
    layout = _Layout(response, animal, weights, tuple(fixed), fixed_levels, tuple(covariates),
                     tuple(random), random_levels, p, n_animals)

    # records: animal positions by a merge with the id map, then record blocks
    needed = [response, animal, *fixed, *covariates, *random] + ([weights] if weights else [])
    recs = records[list(dict.fromkeys(needed))]
    recs = recs.assign(_id=recs[animal].map_partitions(_as_str, meta=(animal, str)).astype("string"))
    recs = recs.merge(idmap.assign(_id=idmap["_id"].astype("string")), on="_id", how="left")
    recs = client.persist(recs)
    n_missing = int(recs["_pos"].isna().sum().compute())
    if n_missing:
        raise PedigreeError(f"{n_missing} record(s) have an animal that is not in the pedigree")
    rec_blocks = client.compute([dask.delayed(_record_block)(part, layout) for part in recs.to_delayed()])
    blocks = list(rec_blocks) + list(ped_blocks)
    N = layout.size
    b = np.zeros(N)
    diag = np.zeros(N)
    cols_of: list[np.ndarray] = []
    for cols, dg, rh in client.gather([client.submit(_block_setup, blk, pure=False) for blk in blocks]):
        cols_of.append(cols)
        diag[cols] += dg
        b[cols] += rh
    iid = np.zeros(N)
    for col, levels, roff in zip(random, random_levels, layout.random_offsets()):
        iid[roff: roff + len(levels)] = s2e / float(variances[col])
    diag += iid
    pre = diagonal_preconditioner(diag)
    setup = time.perf_counter() - t_setup
    logger.info("Dask PCG: %d equations, %d record and %d pedigree blocks; set-up %.1f s",
                N, len(rec_blocks), len(ped_blocks), setup)

    in_products = [0.0]

    def matvec(x: np.ndarray, out: np.ndarray) -> None:
        t = time.perf_counter()
        xf = client.scatter(x, broadcast=True, hash=False)
        futs = [client.submit(_block_product, blk, xf, pure=False) for blk in blocks]
        np.multiply(iid, x, out=out)
        for cols, vals in zip(cols_of, client.gather(futs)):
            out[cols] += vals
        del xf
        in_products[0] += time.perf_counter() - t

    if isinstance(x0, DaskPCGResult):
        x0 = x0.x
    res = run_pcg(matvec, b, pre, x0=x0, tol=tol, max_iter=max_iter, callback=callback,
                  log_interval=log_interval, max_seconds=max_seconds, compiled=NUMBA)
    x = res.pop("x")
    fixed_s = pd.Series(x[:p], index=pd.Index(layout.fixed_names(), name="term"), name="estimate")
    animal_s = pd.Series(x[p: p + n_animals], index=pd.Index(ids, name="id"), name="ebv")
    rand = {
        col: pd.Series(x[roff: roff + len(levels)], index=pd.Index(levels, name=col), name="estimate")
        for col, levels, roff in zip(random, random_levels, layout.random_offsets())
    }
    return DaskPCGResult(fixed=fixed_s, animal=animal_s, random=rand, x=x, setup_seconds=setup,
                         seconds_in_products=in_products[0], n_blocks=len(blocks), tol=tol, **res)
