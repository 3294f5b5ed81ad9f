"""Saving and loading results as JSON + NPZ (no pickle).

``res.save("fit")`` writes ``fit.json`` (formula, method, variance parameters, the
optimiser record, table metadata and the SHA-256 of the arrays) and ``fit.npz``
(y, X, every term's Z and level structure ``K^-1``, row labels and, when the
results carry it, the model frame), read back with ``allow_pickle=False``.

:func:`load` rebuilds the equations from the stored arrays, re-evaluates
``-2 log L`` at the stored parameters and refuses the files (``DataError``) when the
arrays' checksum or the criterion does not match, so an edited or corrupted file
is never turned into a results object.  The loaded object's tables are identical
to the saved ones.  ``predict`` on new data needs the formula encoding, which is
rebuilt from the stored model frame (saved whenever ``fit`` passed the data to
the results).

What round-trips: every fit of :func:`mixedblup.fit` with the direct solver --
known or estimated (REML/ML) variances, ``fixed_variances=`` (held components),
``residual_groups=`` (the classes and their variances are stored; the equations are
rebuilt with weights ``w_i / rho_g``), ``weights=``, every covariance structure (stored
as its bound ``K^-1``, ``log|K|``, ``diag(K)`` and the number of fixed levels of fixed
unknown parent groups), shared covariances (joint terms) and random regressions.
:func:`save` refuses (``DataError``) what it cannot store exactly: fits with
``solver="pcg"`` (no factorisation to rebuild, no ``-2 log L`` to check) and results whose
design or covariance structures carry something this layout does not know.

Layout version 1.  Keys added later (``n_fixed_levels``, ``members`` and ``term_kind`` per
term, ``residual_groups``, the kept rows' positions ``rows``) have defaults, so files written
before them still load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import mme
from .errors import DataError, EstimationError

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = ["FORMAT", "VERSION", "check_savable", "load", "save"]

#: Identifier written into every JSON file.
FORMAT = "mixedblup-results"
#: Version of the file layout.
VERSION = 1
#: Relative tolerance of the criterion check on load.
CRITERION_RTOL = 1e-10


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return p.parent / (p.name + ".json"), p.parent / (p.name + ".npz")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- JSON helpers
def _jsonable(value: Any) -> Any:
    """Plain JSON: arrays tagged, non-finite floats as strings."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _jsonable(value.tolist()), "dtype": str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else repr(v)  # 'nan', 'inf', '-inf'
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and "__ndarray__" in value:
        return np.array([float(v) if v in _NONFINITE else v for v in np.ravel(value["__ndarray__"])]
                        if value["dtype"].startswith("float") else value["__ndarray__"],
                        dtype=value["dtype"]).reshape(np.shape(value["__ndarray__"]))
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


#: How ``_jsonable`` writes non-finite floats.
_NONFINITE = ("nan", "inf", "-inf")


def _num(value: Any) -> float:
    return float(value)


# --------------------------------------------------------------------------- pandas <-> arrays
def _numeric_array(values: Any, what: str) -> np.ndarray:
    """A numeric or boolean column as a plain NumPy array (pandas' nullable dtypes without NA too)."""
    dtype = values.dtype
    numpy_dtype = getattr(dtype, "numpy_dtype", None)
    if isinstance(dtype, np.dtype) or numpy_dtype is None:
        arr = np.asarray(values)
    elif pd.isna(values).any():
        raise DataError(f"{what} has missing values ({dtype}) that cannot be saved; convert it to float")
    else:
        arr = np.asarray(values.to_numpy(dtype=numpy_dtype))
    if arr.dtype == object:
        raise DataError(f"{what}: a {dtype} column cannot be saved; convert it to float")
    return arr


def _encode_values(values: Any, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One column or index as plain arrays plus metadata."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        cats_meta, cats_arr = _encode_values(pd.Index(dtype.categories), f"{what} categories")
        return ({"kind": "category", "ordered": bool(dtype.ordered), "categories": cats_meta},
                {"codes": np.asarray(values.codes if hasattr(values, "codes") else values.cat.codes,
                                     dtype=np.int64), **{f"cat_{k}": v for k, v in cats_arr.items()}})
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype):
        return {"kind": "numeric", "dtype": str(dtype)}, {"values": _numeric_array(values, what)}
    if pd.api.types.is_datetime64_dtype(dtype):
        return ({"kind": "datetime", "dtype": str(dtype)},
                {"values": np.asarray(values).astype("datetime64[ns]").astype(np.int64)})
    items = list(values)
    if all(isinstance(v, str) for v in items):
        return {"kind": "str", "dtype": str(dtype)}, {"values": np.array(items, dtype=str)}
    raise DataError(
        f"{what} has values of mixed or unsupported types ({dtype}); convert it to strings or numbers "
        "before saving"
    )


def _decode_values(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    kind = meta["kind"]
    if kind == "category":
        cats = _decode_values(meta["categories"], {k[4:]: v for k, v in arrays.items() if k.startswith("cat_")})
        return pd.Categorical.from_codes(arrays["codes"], categories=pd.Index(cats),
                                         ordered=meta["ordered"])
    if kind == "numeric":
        values = np.asarray(arrays["values"])
        try:
            return values.astype(np.dtype(meta["dtype"]))
        except TypeError:  # pandas' own dtypes (Int64, Float64, boolean, int64[pyarrow])
            return pd.array(values, dtype=meta["dtype"])
    if kind == "datetime":
        return np.asarray(arrays["values"]).astype("datetime64[ns]").astype(meta["dtype"])
    values = [str(v) for v in arrays["values"].tolist()]
    if meta["dtype"] == "object":
        return np.array(values, dtype=object)
    return pd.array(values, dtype=meta["dtype"])


def _encode_index(index: pd.Index, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if isinstance(index, pd.MultiIndex):
        raise DataError(f"{what}: a MultiIndex cannot be saved; reset_index() the data before fitting")
    if isinstance(index, pd.RangeIndex):
        return {"kind": "range", "start": index.start, "stop": index.stop, "step": index.step,
                "name": index.name}, {}
    meta, arrays = _encode_values(index, what)
    meta["name"] = index.name
    return meta, arrays


def _decode_index(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> pd.Index:
    if meta["kind"] == "range":
        return pd.RangeIndex(meta["start"], meta["stop"], meta["step"], name=meta["name"])
    return pd.Index(_decode_values(meta, arrays), name=meta["name"])


def _put(store: dict[str, np.ndarray], prefix: str, arrays: dict[str, np.ndarray]) -> None:
    for k, v in arrays.items():
        store[f"{prefix}/{k}"] = v


def _get(npz: Any, prefix: str) -> dict[str, np.ndarray]:
    start = prefix + "/"
    return {k[len(start):]: npz[k] for k in npz.files if k.startswith(start)}


def _put_sparse(store: dict[str, np.ndarray], prefix: str, M: Any) -> None:
    M = sp.csr_matrix(M)
    M.sort_indices()
    store[f"{prefix}/data"] = M.data
    store[f"{prefix}/indices"] = M.indices.astype(np.int64)
    store[f"{prefix}/indptr"] = M.indptr.astype(np.int64)
    store[f"{prefix}/shape"] = np.array(M.shape, dtype=np.int64)


def _get_sparse(npz: Any, prefix: str) -> sp.csr_matrix:
    shape = tuple(int(x) for x in npz[f"{prefix}/shape"])
    return sp.csr_matrix((npz[f"{prefix}/data"], npz[f"{prefix}/indices"], npz[f"{prefix}/indptr"]), shape=shape)


# --------------------------------------------------------------------------- what save can store
class _SolverSaveError(DataError, EstimationError):
    """``save`` of a PCG fit: a :class:`DataError`, and an ``EstimationError`` as before."""


#: Fields of the stages' objects that :func:`save` stores (or rebuilds on load).  A field
#: not listed with a non-default value is refused: the file could not reproduce it.
_STORED_FIELDS = {
    "Design": {"y", "X", "fixed_names", "fixed_kept", "terms", "index", "dropped_rows", "response",
               "fixed_spec", "weights", "residual_groups", "rows"},
    "TermDesign": {"name", "term", "columns", "levels", "Z", "n_observed", "lhs_spec", "members"},
    "BoundCovariance": {"levels", "precision", "logdet", "diagonal", "kind", "n_fixed_levels"},
    "RandomTerm": {"lhs", "factors", "correlated", "kind"},
}


def _unknown_fields(obj: Any) -> list[str]:
    """Fields of dataclass ``obj`` that :func:`save` does not store and that differ from their default."""
    known = _STORED_FIELDS[type(obj).__name__]
    out = []
    for f in dataclasses.fields(obj):
        if f.name in known:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            out.append(f.name)
            continue
        value = getattr(obj, f.name)
        same = value is default or (type(value) is type(default) and _equal_default(value, default))
        if not same:
            out.append(f.name)
    return out


def _equal_default(value: Any, default: Any) -> bool:
    try:
        return bool(np.all(value == default)) and np.shape(value) == np.shape(default)
    except (TypeError, ValueError):
        return False


def _unsupported(what: str, todo: str) -> DataError:
    return DataError(f"save() cannot store {what}, so the loaded results would not equal these; {todo}")


def check_savable(res: MixedModelResults) -> None:
    """Refuse, before anything is written, results that :func:`save` cannot reproduce exactly.

    Parameters
    ----------
    res : MixedModelResults

    Raises
    ------
    DataError
        A fit with ``solver="pcg"``; results not built from factorised equations; a
        design, term or covariance structure with a feature the file layout does not
        store; a model frame that does not hold one row per observation.
    """
    from .covariance import BoundCovariance
    from .design import Design, TermDesign
    from .estimate import OptSummary
    from .formula import RandomTerm
    from .mme import CrossProducts, Solution

    if res.solver_info is not None:
        raise _SolverSaveError(
            "save() does not support fits with solver='pcg': load() rebuilds the results by factorising the "
            "mixed model equations and re-checking -2 log L, and a PCG fit has neither; refit with "
            "solver='direct' to save the results, or save the tables themselves (res.fixed_effects, "
            "res.random_effects(), e.g. with DataFrame.to_parquet)"
        )
    if not isinstance(res._cp, CrossProducts) or not isinstance(res._solution, Solution):
        raise _unsupported("results that were not built from factorised mixed model equations",
                           "refit with mixedblup.fit(..., solver='direct')")
    if res.optimizer is not None and type(res.optimizer) is not OptSummary:
        raise _unsupported(f"an optimisation record of type {type(res.optimizer).__name__}",
                           "refit with mixedblup.fit")
    design = res._design
    objects: list[tuple[str, Any]] = [("the design", design)]
    for term in design.terms:
        objects += [(f"term {term.name!r}", term), (f"the formula term of {term.name!r}", term.term)]
    objects += [(f"the covariance structure of {t.name!r}", cov) for t, cov in zip(design.terms, res._cp.covariances)]
    expected = {"Design": Design, "TermDesign": TermDesign, "BoundCovariance": BoundCovariance,
                "RandomTerm": RandomTerm}
    for what, obj in objects:
        kind = next((name for name, cls in expected.items() if type(obj) is cls), None)
        if kind is None:
            raise _unsupported(f"{what} (a {type(obj).__name__})", "refit with the structures mixedblup provides")
        extra = _unknown_fields(obj)
        if extra:
            raise _unsupported(f"{what}: {kind} field(s) {extra}",
                               "this version's file layout does not know them; keep the fitted object instead")
    if res._frame is not None and len(res._frame) != design.n:
        raise _unsupported(
            f"the model frame ({len(res._frame)} rows for {design.n} observations: the data's row index has "
            "duplicate labels)", "give the data a unique index (data.reset_index(drop=True)) and refit")


# --------------------------------------------------------------------------- save
def save(res: MixedModelResults, path: str | Path) -> Path:
    """Write ``res`` to ``<path>.json`` and ``<path>.npz`` (see module docstring).

    Parameters
    ----------
    res : MixedModelResults
        A fit of :func:`mixedblup.fit` (direct solver).
    path : str or pathlib.Path
        ``x``, ``x.json`` or ``x.npz``: writes ``x.json`` and ``x.npz``.

    Returns
    -------
    pathlib.Path
        The JSON file.

    Raises
    ------
    DataError
        When the results cannot be stored exactly (:func:`check_savable`; nothing is
        written then) or a column of the model frame has a type that cannot be saved.
    """
    from . import __version__

    check_savable(res)
    json_path, npz_path = _paths(path)
    design = res._design
    arrays: dict[str, np.ndarray] = {"y": np.asarray(design.y, dtype=float),
                                     "fixed_kept": np.asarray(design.fixed_kept, dtype=bool)}
    X = design.X
    if sp.issparse(X):
        _put_sparse(arrays, "X_sparse", X)
    else:
        arrays["X"] = np.asarray(X, dtype=float)
    if design.weights is not None:
        arrays["weights"] = np.asarray(design.weights, dtype=float)
    if design.rows is not None:
        arrays["rows"] = np.asarray(design.rows, dtype=np.int64)
    meta_index, arr = _encode_index(design.index, "the row index")
    _put(arrays, "index", arr)
    meta_dropped, arr = _encode_index(pd.Index(design.dropped_rows), "the dropped rows")
    _put(arrays, "dropped", arr)
    terms = []
    for i, (term, cov) in enumerate(zip(design.terms, res._cp.covariances)):
        _put_sparse(arrays, f"term{i}/Z", term.Z)
        _put_sparse(arrays, f"term{i}/precision", cov.precision)
        arrays[f"term{i}/levels"] = np.array([str(x) for x in term.levels], dtype=str)
        arrays[f"term{i}/diagonal"] = np.asarray(cov.diagonal, dtype=float)
        terms.append({"name": term.name, "lhs": term.term.lhs, "factors": list(term.term.factors),
                      "correlated": bool(term.term.correlated), "columns": list(term.columns),
                      "n_observed": int(term.n_observed), "kind": cov.kind, "logdet": float(cov.logdet),
                      "n_fixed_levels": int(cov.n_fixed_levels), "members": [m.name for m in term.members],
                      "term_kind": term.term.kind})
    residual_groups = _residual_groups_doc(res, arrays)
    if res.vcov_variance_components is not None:
        arrays["vc_covariance"] = res.vcov_variance_components.to_numpy()
    frame_meta = None
    if res._frame is not None:
        frame_meta = []
        for j, col in enumerate(res._frame.columns):
            meta, arr = _encode_values(res._frame[col], f"column {col!r}")
            frame_meta.append({"name": str(col), **meta})
            _put(arrays, f"frame/{j}", arr)
    pedigrees: list[Any] = []
    for i, s in enumerate(res._structures or ()):
        ped = getattr(s, "pedigree", s)
        if hasattr(ped, "sire_pos") and hasattr(ped, "ids"):
            arrays[f"pedigree{i}/ids"] = np.array([str(x) for x in ped.ids], dtype=str)
            arrays[f"pedigree{i}/sire"] = np.asarray(ped.sire_pos, dtype=np.int64)
            arrays[f"pedigree{i}/dam"] = np.asarray(ped.dam_pos, dtype=np.int64)
            pedigrees.append(i)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    with open(npz_path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    opt = None
    if res.optimizer is not None:
        opt = {f.name: _jsonable(getattr(res.optimizer, f.name)) for f in dataclasses.fields(res.optimizer)}
    diag = res.diagnostics
    diag = diag[diag["check"] != "satterthwaite"] if len(diag) else diag
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "mixedblup_version": __version__,
        "formula": res.formula,
        "method": res.method,
        "variances_known": bool(res.variances_known),
        "backend": res._backend,
        "response": design.response,
        "fixed_names": list(design.fixed_names),
        "sigmas": _jsonable([np.asarray(s, dtype=float) for s in res._sigmas]),
        "residual": _jsonable(res._residual),
        "minus_two_loglik": _jsonable(res._minus_two_ll),
        "n_cov_params": int(res.npar - res._cp.p - len(mme.fixed_level_equations(res._cp))),
        "covariance_kinds": list(res.terms["covariance"]),
        "terms": terms,
        "index": meta_index,
        "dropped_rows": meta_dropped,
        "frame": frame_meta,
        "pedigrees": pedigrees,
        "residual_groups": residual_groups,
        "optimizer": opt,
        "diagnostics": _jsonable(diag.astype(object).to_dict(orient="records")),
        "fixed_terms": [{"label": label, "columns": cols, "factors": sorted(factors)}
                        for label, cols, factors in res._fixed_terms],
        "npz_sha256": _sha256(npz_path),
    }
    doc["content_sha256"] = _content_hash(doc)
    json_path.write_text(json.dumps(doc, indent=1))
    return json_path


def _residual_groups_doc(res: MixedModelResults, arrays: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """Residual classes (``fit(residual_groups=...)``): codes into ``arrays``, the rest as JSON.

    The variances are those of the variance-components table, in class order; with the
    residual variance of the results (the scale of the equations) they give the weights
    ``w_i / rho_g`` of the cross-products, ``rho_g = sigma^2_g / sigma^2``.
    """
    from .variances import RESIDUAL

    groups = res._design.residual_groups
    if groups is None:
        return None
    vc = res.variance_components
    rows = vc[vc["group"] == RESIDUAL]
    if [str(x) for x in rows["term1"]] != [str(x) for x in groups.levels]:
        raise _unsupported("the residual variances per class (the variance-components table does not list "
                           "one Residual row per class)", "refit with mixedblup.fit(..., residual_groups=...)")
    arrays["residual_groups/codes"] = np.asarray(groups.codes, dtype=np.int64)
    return {"column": str(groups.column), "levels": [str(x) for x in groups.levels],
            "variances": _jsonable([float(v) for v in rows["estimate"]])}


def _content_hash(doc: dict[str, Any]) -> str:
    """SHA-256 of the JSON document without its own hash (canonical key order)."""
    body = {k: v for k, v in doc.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- load
def _refuse(message: str) -> DataError:
    return DataError(f"refusing to load the saved results: {message}")


def load(path: str | Path) -> MixedModelResults:
    """Load results written by :meth:`MixedModelResults.save`.

    Parameters
    ----------
    path : str or pathlib.Path
        The JSON file (or the common stem of the JSON and NPZ files).

    Returns
    -------
    MixedModelResults

    Raises
    ------
    DataError
        When the files are not mixedblup results, the arrays' checksum differs from
        the one recorded, or ``-2 log L`` recomputed at the stored parameters does not
        match the stored value (edited or corrupted files).
    """
    json_path, npz_path = _paths(path)
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise _refuse(f"{json_path} is not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _refuse(f"{json_path} is not a mixedblup results file")
    if doc.get("version") != VERSION:
        raise _refuse(f"file layout version {doc.get('version')!r} is not supported (expected {VERSION})")
    if doc.get("content_sha256") != _content_hash(doc):
        raise _refuse(f"{json_path} was edited after it was saved (checksum mismatch)")
    if not npz_path.exists():
        raise _refuse(f"the array file {npz_path} is missing")
    if _sha256(npz_path) != doc.get("npz_sha256"):
        raise _refuse(f"the arrays in {npz_path} are not the ones saved with {json_path} (checksum mismatch)")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            return _rebuild(doc, npz)
    except DataError:
        raise
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise _refuse(f"the files are inconsistent ({type(exc).__name__}: {exc})") from None


def _bound_and_terms(doc: dict[str, Any], npz: Any) -> tuple[list[Any], list[Any]]:
    """Every term's :class:`BoundCovariance` and its stored :class:`TermDesign`."""
    from .covariance import BoundCovariance
    from .design import TermDesign
    from .formula import RandomTerm

    bound, term_designs = [], []
    for i, t in enumerate(doc["terms"]):
        levels = pd.Index([str(x) for x in npz[f"term{i}/levels"].tolist()], dtype=object)
        precision = _get_sparse(npz, f"term{i}/precision").tocsc()
        diagonal = np.asarray(npz[f"term{i}/diagonal"], dtype=float)
        bound.append(BoundCovariance(levels, precision, _num(t["logdet"]), diagonal, t["kind"],
                                     n_fixed_levels=_n_fixed_levels(t, diagonal)))
        Z = _get_sparse(npz, f"term{i}/Z")
        spec = RandomTerm(t["lhs"], tuple(t["factors"]), bool(t["correlated"]),
                          t.get("term_kind", "mates" if t["name"].startswith("mates(") else "levels"))
        term_designs.append(TermDesign(t["name"], spec, tuple(t["columns"]), levels, Z, int(t["n_observed"]), None))
    return bound, term_designs


def _n_fixed_levels(term: dict[str, Any], diagonal: np.ndarray) -> int:
    """Fixed levels of a term (fixed unknown parent groups).

    Files written before the count was stored: the fixed groups of a
    :class:`~mixedblup.genetic_groups.GroupedPedigree` are the levels with ``diag(K) = inf``.
    """
    if "n_fixed_levels" in term:
        return int(term["n_fixed_levels"])
    return int(np.isinf(diagonal).sum()) if term["kind"] == "pedigree+groups" else 0


def _joint_members(term: dict[str, Any]) -> tuple[str, ...]:
    """Member terms of a joint term (a shared covariance); empty for an ordinary term.

    Files written before the members were stored: the joint name is the members' names
    joined by commas (commas inside ``mates(id,group)`` do not separate).
    """
    if "members" in term:
        return tuple(term["members"])
    parts, depth, start, name = [], 0, 0, term["name"]
    for pos, char in enumerate(name):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(name[start:pos])
            start = pos + 1
    parts.append(name[start:])
    return tuple(parts) if len(parts) > 1 else ()


def _residual_groups(doc: dict[str, Any], npz: Any, n: int) -> tuple[Any, dict[str, float] | None]:
    """The stored residual classes and their variances (``None, None`` without classes)."""
    from .design import ResidualGroups

    meta = doc.get("residual_groups")
    if meta is None:
        return None, None
    levels = tuple(str(x) for x in meta["levels"])
    codes = np.asarray(npz["residual_groups/codes"], dtype=np.int64)
    values = [_num(v) for v in meta["variances"]]
    in_range = not len(codes) or 0 <= codes.min() <= codes.max() < len(levels)
    if len(codes) != n or len(values) != len(levels) or not in_range:
        raise _refuse("the residual classes do not match the observations")
    return ResidualGroups(str(meta["column"]), levels, codes), dict(zip(levels, values))


def _load_design(doc: dict[str, Any], npz: Any, bound: list[Any], term_designs: list[Any]) -> tuple[Any, Any]:
    """The design (rebuilt from the stored model frame when there is one) and that frame."""
    from .design import Design

    y = np.asarray(npz["y"], dtype=float)
    X = _get_sparse(npz, "X_sparse").tocsc() if "X_sparse/shape" in npz.files else np.asarray(npz["X"], dtype=float)
    fixed_kept = np.asarray(npz["fixed_kept"], dtype=bool)
    weights = np.asarray(npz["weights"], dtype=float) if "weights" in npz.files else None
    rows = np.asarray(npz["rows"], dtype=np.int64) if "rows" in npz.files else None
    index = _decode_index(doc["index"], _get(npz, "index"))
    dropped = _decode_index(doc["dropped_rows"], _get(npz, "dropped"))
    if len(index) != len(y):
        raise _refuse("the row index and the response differ in length")
    rgroups, _ = _residual_groups(doc, npz, len(y))
    if doc.get("frame") is None:
        design = Design(y=y, X=X, fixed_names=tuple(doc["fixed_names"]), fixed_kept=fixed_kept,
                        terms=tuple(term_designs), index=index, dropped_rows=dropped, response=doc["response"],
                        fixed_spec=None, weights=weights, residual_groups=rgroups, rows=rows)
        return design, None
    cols = {meta["name"]: _decode_values(meta, _get(npz, f"frame/{j}")) for j, meta in enumerate(doc["frame"])}
    frame = pd.DataFrame(cols, index=index)
    design = _design_from_frame(doc, frame, weights, bound)
    _check_same(design, y, X, fixed_kept, term_designs)
    return dataclasses.replace(design, dropped_rows=dropped, residual_groups=rgroups, rows=rows), frame


def _cross_products(doc: dict[str, Any], npz: Any, design: Any, bound: list[Any], residual: float
                    ) -> tuple[Any, dict[str, float] | None]:
    """The cross-products at the stored parameters (weights ``w_i / rho_g`` with residual classes)."""
    from .mme import cross_products

    cp = cross_products(design, bound)
    _, variances = _residual_groups(doc, npz, design.n)
    if variances is None:
        return cp, None
    from .residual_groups import residual_group_cross_products

    rho = np.array(list(variances.values()), dtype=float) / residual
    return residual_group_cross_products(design, bound, cp).at(rho), variances


def _optimizer(doc: dict[str, Any]) -> Any:
    """The stored :class:`~mixedblup.estimate.OptSummary` (``None`` with known variances)."""
    if doc.get("optimizer") is None:
        return None
    from .estimate import OptSummary

    values = {}
    for f in dataclasses.fields(OptSummary):
        if f.name in doc["optimizer"]:
            v = _from_json(doc["optimizer"][f.name])
            if isinstance(v, list):
                v = tuple(float(x) if x in _NONFINITE else x for x in v)
            if isinstance(v, str) and v in _NONFINITE:
                v = float(v)
            values[f.name] = v
    return OptSummary(**values)


def _structures(doc: dict[str, Any], npz: Any, n_terms: int) -> list[Any] | None:
    """The stored pedigrees (``ebv_decomposition``), ``None`` for the other terms."""
    if not doc.get("pedigrees"):
        return None
    from .pedigree import Pedigree

    structures: list[Any] = [None] * n_terms
    for i in doc["pedigrees"]:
        structures[i] = Pedigree([str(x) for x in npz[f"pedigree{i}/ids"].tolist()],
                                 np.asarray(npz[f"pedigree{i}/sire"]), np.asarray(npz[f"pedigree{i}/dam"]))
    return structures


def _checked_criterion(doc: dict[str, Any], cp: Any, sol: Any, residual: float) -> float:
    """``-2 log L`` recomputed at the stored parameters; refuses the files when it differs.

    Returns the stored value (equal to the recomputed one within :data:`CRITERION_RTOL`),
    so that ``loglik``, AIC and BIC are those of the saved object to the last digit.
    """
    from .mme import minus_two_loglik

    reml = doc["method"] == "REML"
    schur = None
    if not reml:  # as fit computes it
        p = np.arange(cp.p)
        schur = -float(np.linalg.slogdet(sol.factor.inverse_columns(p, p))[1]) if cp.p else 0.0
    m2ll = minus_two_loglik(cp, sol, residual, reml, schur)
    stored = _num(doc["minus_two_loglik"])
    if not np.isfinite(m2ll) or abs(m2ll - stored) > CRITERION_RTOL * max(1.0, abs(stored)):
        raise _refuse(
            f"-2 log L recomputed at the stored parameters is {m2ll!r}, the file records {stored!r}; the "
            "data or the parameters were changed"
        )
    return stored


def _rebuild(doc: dict[str, Any], npz: Any) -> MixedModelResults:
    from .mme import relative_factor, solve_mme
    from .results import build_results

    bound, term_designs = _bound_and_terms(doc, npz)
    design, frame = _load_design(doc, npz, bound, term_designs)
    sigmas = [np.atleast_2d(np.asarray(_from_json(s), dtype=float)) for s in doc["sigmas"]]
    residual = _num(doc["residual"])
    cp, residual_variances = _cross_products(doc, npz, design, bound, residual)
    backend = doc.get("backend", "auto")
    sol = solve_mme(cp, [relative_factor(s, residual) for s in sigmas], backend)
    m2ll = _checked_criterion(doc, cp, sol, residual)
    vc_cov = np.asarray(npz["vc_covariance"], dtype=float) if "vc_covariance" in npz.files else None
    diagnostics = pd.DataFrame(doc.get("diagnostics") or [], columns=["check", "level", "message"])
    return build_results(
        formula=doc["formula"], method=doc["method"], variances_known=bool(doc["variances_known"]),
        design=design, cp=cp, solution=sol, sigmas=sigmas, residual=residual, minus_two_ll=m2ll,
        n_cov_params=int(doc["n_cov_params"]), diagnostics=diagnostics,
        covariance_kinds=list(doc["covariance_kinds"]), optimizer=_optimizer(doc), vc_covariance=vc_cov,
        data=frame, structures=_structures(doc, npz, len(bound)), backend=backend,
        fixed_terms=[(t["label"], list(t["columns"]), frozenset(t["factors"])) for t in doc["fixed_terms"]],
        residual_variances=residual_variances,
    )


_WEIGHTS_COLUMN = "__mixedblup_weights__"


def _design_from_frame(doc: dict[str, Any], frame: pd.DataFrame, weights: np.ndarray | None,
                       bound: list[Any]) -> Any:
    """Re-run the design stage on the stored model frame (restores the formula encoding).

    Terms keep the levels of their stored structure; joint terms (a shared covariance)
    are merged again from their members.
    """
    from .design import build_design
    from .formula import parse_formula

    data = frame
    wcol = None
    if weights is not None:
        data = frame.assign(**{_WEIGHTS_COLUMN: weights})
        wcol = _WEIGHTS_COLUMN
    spec = parse_formula(doc["formula"], data.columns)
    levels: dict[str, Any] = {}
    joint = []
    for t, cov in zip(doc["terms"], bound):
        defined = None if cov.kind == "identity" else cov.levels
        members = _joint_members(t)
        if members:
            joint.append(members)
        for name in (t["name"], *members):
            levels[name] = defined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return build_design(spec, data, levels=levels, na_action="raise", weights=wcol, joint=joint)
        except Exception as exc:  # noqa: BLE001 - any failure means the frame is unusable
            raise _refuse(f"the stored model frame does not rebuild the design ({exc})") from None


def _same_matrix(A: Any, B: Any) -> bool:
    """Exact equality of two dense or sparse matrices."""
    if A.shape != B.shape:
        return False
    if sp.issparse(A) or sp.issparse(B):
        return (sp.csr_matrix(A) != sp.csr_matrix(B)).nnz == 0
    return bool(np.array_equal(np.asarray(A), np.asarray(B)))


def _check_same(design, y, X, fixed_kept, term_designs) -> None:
    """The design rebuilt from the frame must equal the stored arrays."""
    same = (np.array_equal(design.y, y) and np.array_equal(np.asarray(design.fixed_kept), fixed_kept)
            and _same_matrix(design.X, X)
            and len(design.terms) == len(term_designs))
    if same:
        for a, b in zip(design.terms, term_designs):
            if a.name != b.name or not a.levels.equals(b.levels) or not _same_matrix(a.Z, b.Z):
                same = False
                break
    if not same:
        raise _refuse("the stored model frame and the stored matrices disagree")
