"""Interoperability: other programs' files, lme4 code, and non-pandas data frames.

* :func:`read_blupf90_data`, :func:`read_blupf90_pedigree` (plain or renumf90's
  ``renadd`` file) and :func:`read_asreml_pedigree` read the files of those programs
  into pandas, with every ID kept as a string (leading zeros kept, no NA guessing:
  missing codes are explicit arguments).
* :func:`to_lme4` writes R code that fits the same model with lme4, to cross-check
  a fit; it refuses, with the reason, terms lme4 cannot express.
* :func:`as_pandas` turns a polars (or any narwhals-supported) data frame into pandas,
  keeping categoricals and string IDs.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError, MixedBlupError

__all__ = [
    "read_blupf90_data",
    "read_blupf90_pedigree",
    "read_asreml_pedigree",
    "to_lme4",
    "as_pandas",
    "Lme4ExportError",
]

PathOrBuffer = str | os.PathLike | io.IOBase | Any

#: Parent codes :func:`read_asreml_pedigree` treats as unknown by default.
ASREML_UNKNOWN = ("0", "*", ".", "NA")

#: Columns of renumf90's ``renadd`` pedigree file, in file order.
RENADD_COLUMNS = (
    "id", "sire", "dam", "parent_code", "birth", "known_parents", "n_records",
    "n_progeny_as_sire", "n_progeny_as_dam", "original_id",
)


class Lme4ExportError(MixedBlupError, ValueError):
    """The model has a term lme4 cannot express; the message says which and what to use."""


# ----------------------------------------------------------------------------- reading
def _fast_table(lines: list[str], width: int | None) -> np.ndarray | None:
    """Whitespace-separated fields through pandas' C parser, or None to take the slow path.

    The slow path (:func:`_split`) is taken for comment lines, ragged lines and
    anything else the C parser refuses, so that errors can name the line.
    """
    try:
        frame = pd.read_csv(io.StringIO("\n".join(lines)), sep=r"\s+", header=None, dtype=object,
                            na_filter=False, skip_blank_lines=True, engine="c")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
        return None
    table = frame.to_numpy(dtype=object)
    if table.size == 0 or (width is not None and table.shape[1] != width):
        return None
    if (table == "").any() or np.char.startswith(table[:, 0].astype(str), "#").any():
        return None
    return table


def _read_lines(source: PathOrBuffer) -> list[str]:
    """All lines of a path or a text/binary buffer."""
    if hasattr(source, "read"):
        text = source.read()
        if isinstance(text, bytes):
            text = text.decode("utf-8")
    else:
        with open(os.fspath(source), encoding="utf-8") as handle:
            text = handle.read()
    return text.splitlines()


def _split(lines: list[str], sep: str | None, what: str) -> tuple[list[list[str]], list[int]]:
    """Fields of the non-blank lines (1-based line numbers kept for messages)."""
    rows: list[list[str]] = []
    numbers: list[int] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if sep is None:
            fields = line.split()
        else:
            fields = [f.strip() for f in line.split(sep)]
        rows.append(fields)
        numbers.append(i)
    if not rows:
        raise DataError(f"the {what} file has no data lines")
    return rows, numbers


def _as_codes(missing: Any) -> frozenset[str]:
    if missing is None:
        return frozenset()
    if isinstance(missing, (str, int, float, np.integer, np.floating)):
        missing = [missing]
    out = set()
    for m in missing:
        out.add(str(m).strip())
        if isinstance(m, (int, float, np.integer, np.floating)) and float(m) == int(m):
            out.add(str(int(m)))
    return frozenset(out)


def read_blupf90_data(
    source: PathOrBuffer,
    columns: Sequence[str],
    *,
    numeric: Iterable[str] = (),
    missing: Any = None,
) -> pd.DataFrame:
    """Read a BLUPF90 / renumf90 data file (space-separated, no header).

    Parameters
    ----------
    source : str, path or file-like
        The data file (``renf90.dat`` or the raw file given to renumf90).
    columns : sequence of str
        A name for every field of a line, in file order (BLUPF90 files have no header).
    numeric : iterable of str
        Columns read as numbers (traits, covariates, weights).  Every other column is
        kept as a string: IDs and class codes (herd-year, sex ...), leading zeros kept.
    missing : scalar or sequence, optional
        Codes of a missing value in the numeric columns; they become NaN.  BLUPF90's own
        default is ``0`` (``OPTION missing``): pass ``missing=0`` to follow it.  Nothing
        is treated as missing unless given here.

    Returns
    -------
    pandas.DataFrame
        One row per line; string columns have ``object`` dtype, numeric ones float64.

    Raises
    ------
    DataError
        A line with a different number of fields than ``columns`` (the line is named),
        a ``numeric`` column that is not in ``columns``, or a non-numeric token in a
        numeric column.

    Examples
    --------
    >>> import io
    >>> from mixedblup.interop import read_blupf90_data
    >>> text = "0012 H01 305.2\\n0013 H01 0\\n"
    >>> read_blupf90_data(io.StringIO(text), ["animal", "hy", "milk"],
    ...                   numeric=["milk"], missing=0)["milk"].tolist()
    [305.2, nan]
    """
    columns = list(columns)
    numeric = list(numeric)
    if len(set(columns)) != len(columns):
        raise DataError(f"columns has repeated names: {columns}")
    unknown = [c for c in numeric if c not in columns]
    if unknown:
        raise DataError(f"numeric names {unknown}, which are not in columns {columns}")
    lines = _read_lines(source)
    table = _fast_table(lines, len(columns))
    numbers: list[int] | None = None
    if table is None:
        rows, numbers = _split(lines, None, "data")
        for fields, line in zip(rows, numbers):
            if len(fields) != len(columns):
                raise DataError(
                    f"line {line} of the data file has {len(fields)} fields but {len(columns)} columns "
                    f"were named ({columns}); give one name per field"
                )
        table = np.array(rows, dtype=object).reshape(len(rows), len(columns))
    codes = _as_codes(missing)
    data: dict[str, Any] = {}
    for j, name in enumerate(columns):
        col = table[:, j]
        if name in numeric:
            tokens = pd.Series(col, dtype=object)
            is_missing = tokens.isin(list(codes)).to_numpy()
            values = np.array(pd.to_numeric(tokens.where(~is_missing, "0"), errors="coerce"), dtype=float)
            bad = np.flatnonzero(np.isnan(values) & ~is_missing)
            if bad.size:
                i = int(bad[0])
                numbers = numbers if numbers is not None else _split(lines, None, "data")[1]
                raise DataError(
                    f"column {name!r} is numeric but line {numbers[i]} has {col[i]!r}; list the "
                    "column's missing code in missing=, or leave it out of numeric="
                )
            values[is_missing] = np.nan
            if codes:
                values[np.isin(values, [float(c) for c in codes if _is_float(c)])] = np.nan
            data[name] = values
        else:
            data[name] = pd.Series(col, dtype=object)
    return pd.DataFrame(data)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_blupf90_pedigree(
    source: PathOrBuffer,
    *,
    format: str = "auto",
    unknown: Any = "0",
) -> pd.DataFrame:
    """Read a BLUPF90 pedigree file: plain ``animal sire dam`` or renumf90's ``renadd``.

    Parameters
    ----------
    source : str, path or file-like
        Space-separated, no header.
    format : {"auto", "plain", "renadd"}
        ``"plain"``: the first three fields are animal, sire and dam (further fields
        are kept as ``extra1``, ``extra2`` ...).  ``"renadd"``: renumf90's
        ``renaddXX.ped`` with its ten fields (renumbered animal, parents or unknown
        parent group numbers, parent code, birth year, known parents (+10 when
        genotyped), records, progeny as sire and as dam, original ID).  ``"auto"``
        picks ``"renadd"`` when every line has exactly ten fields.
    unknown : scalar or sequence
        Codes of an unknown parent (default ``"0"``); they become missing (``None``).

    Returns
    -------
    pandas.DataFrame
        ``id, sire, dam`` as strings (``None`` for unknown), ready for
        ``mb.Pedigree.from_frame(df, id="id", sire="sire", dam="dam")``.  A renadd file
        adds ``original_id``, ``sire_original``, ``dam_original`` (the parents'
        original IDs), ``sire_group``, ``dam_group`` (unknown parent group numbers,
        whose parents in ``sire``/``dam`` are then unknown), ``birth``,
        ``genotyped``, ``n_records``, ``n_progeny_as_sire`` and ``n_progeny_as_dam``.

    Raises
    ------
    DataError
        Fewer than three fields on a line, or a renadd line without ten fields.
    """
    if format not in ("auto", "plain", "renadd"):
        raise ValueError(f"format must be 'auto', 'plain' or 'renadd'; got {format!r}")
    lines = _read_lines(source)
    table = _fast_table(lines, None)
    codes = _as_codes(unknown)
    if table is not None and table.shape[1] >= 3:
        if format == "auto":
            format = "renadd" if table.shape[1] == 10 else "plain"
        if format == "renadd" and table.shape[1] == 10:
            return _renadd_frame(table, codes)
    else:
        table = None
    if table is None or format == "renadd":
        rows, numbers = _split(lines, None, "pedigree")
        widths = {len(r) for r in rows}
        if format == "auto":
            format = "renadd" if widths == {10} else "plain"
        if format == "renadd":
            for fields, line in zip(rows, numbers):
                if len(fields) != 10:
                    raise DataError(
                        f"line {line} of the renadd file has {len(fields)} fields; renumf90's renadd "
                        "files have 10 (use format='plain' for an animal-sire-dam file)"
                    )
            return _renadd_frame(np.array(rows, dtype=object), codes)
        for fields, line in zip(rows, numbers):
            if len(fields) < 3:
                raise DataError(
                    f"line {line} of the pedigree file has {len(fields)} fields; a pedigree line needs "
                    "animal, sire and dam"
                )
        width = max(widths)
        table = np.array([r + [""] * (width - len(r)) for r in rows], dtype=object)
    width = table.shape[1]
    out = pd.DataFrame({
        "id": pd.Series(table[:, 0], dtype=object),
        "sire": pd.Series(_unknown_to_none(table[:, 1], codes), dtype=object),
        "dam": pd.Series(_unknown_to_none(table[:, 2], codes), dtype=object),
    })
    for j in range(3, width):
        out[f"extra{j - 2}"] = pd.Series(table[:, j], dtype=object)
    return out


def _unknown_to_none(values: np.ndarray, codes: frozenset[str]) -> np.ndarray:
    out = values.astype(object).copy()
    out[np.isin(out, list(codes))] = None
    return out


def _renadd_frame(table: np.ndarray, codes: frozenset[str]) -> pd.DataFrame:
    ids = table[:, 0]
    index = pd.Index(ids)
    originals = table[:, 9]
    out = pd.DataFrame({"id": pd.Series(ids, dtype=object)})
    for j, parent in ((1, "sire"), (2, "dam")):
        col = table[:, j]
        pos = index.get_indexer(col)
        is_unknown = np.isin(col, list(codes))
        is_group = ~is_unknown & (pos < 0)
        known_parent = ~is_unknown & ~is_group
        out[parent] = pd.Series(np.where(known_parent, col, None), dtype=object)
        out[f"{parent}_group"] = pd.Series(np.where(is_group, col, None), dtype=object)
        out[f"{parent}_original"] = pd.Series(
            np.where(known_parent, originals[np.maximum(pos, 0)], None), dtype=object)
    out["original_id"] = pd.Series(table[:, 9], dtype=object)
    known_parents = table[:, 5].astype(np.int64)
    out["birth"] = table[:, 4].astype(np.int64)
    out["genotyped"] = known_parents >= 10
    out["n_records"] = table[:, 6].astype(np.int64)
    out["n_progeny_as_sire"] = table[:, 7].astype(np.int64)
    out["n_progeny_as_dam"] = table[:, 8].astype(np.int64)
    order = ["id", "sire", "dam", "original_id", "sire_original", "dam_original", "sire_group",
             "dam_group", "birth", "genotyped", "n_records", "n_progeny_as_sire", "n_progeny_as_dam"]
    return out[order]


def read_asreml_pedigree(
    source: PathOrBuffer,
    *,
    skip: int = 0,
    sep: str | None = None,
    unknown: Any = ASREML_UNKNOWN,
    names: Sequence[str] = ("animal", "sire", "dam"),
) -> pd.DataFrame:
    """Read an ASReml pedigree file: animal, sire and dam in the first three fields.

    Parameters
    ----------
    source : str, path or file-like
        Comma-, tab- or space-separated.
    skip : int
        Lines to skip at the top, as ASReml's ``!SKIP n`` (e.g. ``1`` for a header line).
    sep : str, optional
        Field separator; by default a comma when the first data line has one, else any
        run of whitespace.
    unknown : scalar or sequence
        Codes of an unknown parent; ASReml's are ``0``, ``*`` and ``.`` (also ``NA``
        here).  They become missing (``None``).  Empty fields are always unknown.
    names : sequence of str
        Names of the three columns returned.

    Returns
    -------
    pandas.DataFrame
        ``names`` columns as strings (``None`` for unknown parents), file order; extra
        fields (birth year, sex ...) are dropped.

    Raises
    ------
    DataError
        A line with fewer than three fields.
    """
    names = list(names)
    if len(names) != 3:
        raise ValueError(f"names must give three column names (animal, sire, dam); got {names}")
    lines = _read_lines(source)[int(skip):]
    if sep is None:
        first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
        sep = "," if "," in first else ("\t" if "\t" in first and " " not in first.strip() else None)
    rows, numbers = _split(lines, sep, "pedigree")
    for fields, line in zip(rows, numbers):
        if len(fields) < 3:
            raise DataError(
                f"line {line + int(skip)} of the pedigree file has {len(fields)} fields; ASReml "
                "pedigree lines start with animal, sire and dam (skip= a header line?)"
            )
    table = np.array([r[:3] for r in rows], dtype=object)
    codes = _as_codes(unknown) | {""}
    return pd.DataFrame({
        names[0]: pd.Series(table[:, 0], dtype=object),
        names[1]: pd.Series(_unknown_to_none(table[:, 1], codes), dtype=object),
        names[2]: pd.Series(_unknown_to_none(table[:, 2], codes), dtype=object),
    })


# ----------------------------------------------------------------------------- lme4
_ALLOWED_R_FUNCS = {"log", "exp", "sqrt", "I", "C", "center", "scale", "abs", "factor"}


def _r_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _translate_formula(formula: str) -> str:
    """The formula in R's spelling (``**`` -> ``^``, ``C(x)`` -> ``factor(x)``, ``center``)."""
    out = formula.replace("**", "^")
    if re.search(r"\bC\([^()]*,", out):
        raise Lme4ExportError(
            "C() with a contrast argument has no automatic R translation; set the contrast on a "
            "factor column in R instead"
        )
    for func in re.findall(r"([A-Za-z_][A-Za-z0-9_.]*)\s*\(", out):
        if func not in _ALLOWED_R_FUNCS:
            raise Lme4ExportError(
                f"the formula uses {func}(), which has no checked R translation; rewrite the term "
                "with a precomputed column to export it to lme4"
            )
    out = re.sub(r"\bC\(", "factor(", out)
    out = re.sub(r"\bcenter\(([^()]*)\)", r"scale(\1, scale = FALSE)", out)
    return out


def _float(x: float) -> str:
    return repr(float(x))


def to_lme4(
    res: Any,
    *,
    data: str = "data",
    data_file: str | None = None,
    character_columns: Sequence[str] | None = None,
    weights: str | None = None,
) -> str:
    """R code that fits the same model with lme4, to cross-check a mixedblup fit.

    Estimated variances give an ``lmer(...)`` call (``REML = TRUE`` or ``FALSE`` as
    fitted).  Known variances (``fit(..., variances=...)``) give lme4's modular code
    evaluated at the same relative covariance factors (``lFormula`` ->
    ``mkLmerDevfun`` -> ``mkMerMod``), so the BLUEs and BLUPs are comparable.  The
    code ends with mixedblup's own numbers as comments.

    Parameters
    ----------
    res : MixedModelResults
        A fitted model.
    data : str
        Name of the R data frame in the generated code.
    data_file : str, optional
        A CSV file to read into ``data`` first (``read.csv``), with the grouping
        factors read as character columns so IDs such as ``"007"`` are kept.
    character_columns : sequence of str, optional
        Columns read as character (default: every grouping factor of the formula).
    weights : str, optional
        Column of precision weights, if the fit used ``weights=``.

    Returns
    -------
    str
        R source code (needs the lme4 package).

    Raises
    ------
    Lme4ExportError
        A random term with a pedigree or a user relationship matrix (lme4 has only
        independent levels; use lme4qtl's ``relmatLmer`` or pedigreemm for a
        relationship matrix), or a formula function without a checked translation.

    Notes
    -----
    R's ``factor()`` orders string levels by the locale's collation, mixedblup
    lexically; a fixed factor's reference level can differ, which changes the
    coding of the fixed effects but not the fit.
    """
    terms = res.terms
    special = terms[terms["covariance"] != "identity"]
    if len(special):
        raise Lme4ExportError(
            f"term(s) {list(special.index)} use a {', '.join(sorted(set(special['covariance'])))} "
            "covariance; lme4 has only independent levels. To cross-check in R, use lme4qtl::relmatLmer "
            "(relmat = list(animal = A)) or pedigreemm::pedigreemm (pedigree = list(animal = ped)), or "
            "lme4 through the Cholesky factor of A"
        )
    groups: list[str] = []
    for name in terms.index:
        m = re.fullmatch(r"(.+)\.\d+", name)
        groups.append(m.group(1) if m and m.group(1) in groups else name)
    formula = _translate_formula(res.formula)
    reml = "TRUE" if res.method == "REML" else "FALSE"
    weights_arg = f", weights = {weights}" if weights else ""
    lines = ["# R code written by mixedblup.interop.to_lme4 to cross-check a fit", "library(lme4)"]
    if data_file is not None:
        chars = list(character_columns) if character_columns is not None else sorted(
            {part for g in groups for part in g.split(":")})
        classes = ", ".join(f"{_r_string(c)} = \"character\"" for c in chars)
        lines.append(f"{data} <- read.csv({_r_string(data_file)}, colClasses = c({classes}))")
    if not res.variances_known:
        lines.append(f"fit <- lmer({formula}, data = {data}, REML = {reml}{weights_arg})")
    else:
        lines += _known_variance_code(res, formula, data, reml, weights_arg, groups)
    lines += ["print(summary(fit))", "print(VarCorr(fit), comp = \"Variance\")",
              "print(logLik(fit))", "", "# mixedblup's numbers for comparison:"]
    lines.append(f"#   logLik ({res.method}) = {res.loglik:.6f}")
    for _, row in res.fixed_effects.iterrows():
        lines.append(f"#   fixed {row.name} = {row['estimate']:.6g}")
    for _, row in res.variance_components.iterrows():
        label = row["group"] + " " + str(row["term1"]) + (f" {row['term2']}" if row["term2"] else "")
        lines.append(f"#   variance {label.strip()} = {row['estimate']:.6g}")
    return "\n".join(lines) + "\n"


def _known_variance_code(res: Any, formula: str, data: str, reml: str, weights_arg: str,
                         groups: list[str]) -> list[str]:
    vc = res.variance_components
    entries = []
    for (name, row), group in zip(res.terms.iterrows(), groups):
        cols = list(row["columns"])
        k = len(cols)
        S = np.zeros((k, k))
        part = vc[vc["group"] == name]
        for _, r in part.iterrows():
            i = cols.index(r["term1"])
            j = cols.index(r["term2"]) if r["term2"] else i
            S[i, j] = S[j, i] = r["estimate"]
        values = ", ".join(_float(v) for v in S.ravel(order="F"))
        col_names = ", ".join(_r_string(c) for c in cols)
        entries.append(f"  list(group = {_r_string(group)}, columns = c({col_names}), "
                       f"Sigma = matrix(c({values}), {k}, {k}))")
    return [
        "# Known variances: lme4 cannot hold them fixed in lmer(), so evaluate its objective",
        "# at the same relative covariance factors and package the model (lme4's modular API).",
        f"lmod <- lFormula({formula}, data = {data}, REML = {reml}{weights_arg})",
        "devfun <- do.call(mkLmerDevfun, lmod)",
        f"sigma_e2 <- {_float(res.residual_variance)}",
        "known <- list(",
        ",\n".join(entries),
        ")",
        "lfac <- function(S) if (all(S == 0)) S else t(chol(S))",
        "theta <- unlist(lapply(seq_along(lmod$reTrms$cnms), function(i) {",
        "  g <- names(lmod$reTrms$cnms)[i]; cn <- lmod$reTrms$cnms[[i]]",
        "  hit <- Filter(function(e) e$group == g && all(cn %in% e$columns), known)",
        "  if (length(hit) != 1) stop(\"no unique known covariance for term \", g)",
        "  S <- hit[[1]]$Sigma[match(cn, hit[[1]]$columns), match(cn, hit[[1]]$columns), drop = FALSE]",
        "  L <- lfac(S / sigma_e2); L[lower.tri(L, diag = TRUE)]",
        "}))",
        "opt <- list(par = theta, fval = devfun(theta), conv = 0, message = \"known variances\")",
        "fit <- mkMerMod(environment(devfun), opt, lmod$reTrms, fr = lmod$fr)",
        "print(fixef(fit)); print(ranef(fit))",
    ]


# ----------------------------------------------------------------------------- data frames
def as_pandas(data: Any) -> pd.DataFrame:
    """A pandas DataFrame from pandas, polars or any frame narwhals supports.

    pandas input is returned unchanged (not copied).  Other frames are converted
    column by column, without pyarrow: categoricals and enums become pandas
    categoricals with the same categories (in order), strings stay strings (IDs
    such as ``"007"`` are never turned into numbers), numbers become numpy columns
    (integers with nulls become float64 with NaN, as pandas itself reads them),
    booleans with nulls become ``object`` with ``None``.

    Parameters
    ----------
    data : pandas.DataFrame, polars.DataFrame, polars.LazyFrame or narwhals-supported frame
        A LazyFrame is collected first.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    TypeError
        An object that is not a data frame of a supported library.
    """
    if isinstance(data, pd.DataFrame):
        return data
    module = type(data).__module__.split(".")[0]
    if module == "polars":
        if type(data).__name__ == "LazyFrame":
            data = data.collect()
        if type(data).__name__ != "DataFrame":
            raise TypeError(f"expected a polars DataFrame or LazyFrame; got {type(data).__name__}")
        return pd.DataFrame({name: _column_to_pandas(data.get_column(name)) for name in data.columns})
    try:
        import narwhals as nw
    except ImportError:
        raise TypeError(
            f"data must be a pandas or polars DataFrame; got {type(data).__module__}.{type(data).__name__} "
            "(install narwhals to pass other data frame libraries)"
        ) from None
    try:
        frame = nw.from_native(data, eager_only=True)
    except TypeError:
        try:
            frame = nw.from_native(data).lazy().collect()
        except Exception:
            raise TypeError(
                f"data must be a data frame (pandas, polars or one narwhals supports); got "
                f"{type(data).__module__}.{type(data).__name__}"
            ) from None
    return pd.DataFrame({name: _column_to_pandas(frame.get_column(name)) for name in frame.columns})


def _column_to_pandas(series: Any) -> pd.Series:
    """One polars or narwhals Series -> pandas, dtype by dtype."""
    kind = type(series.dtype).__name__ if not isinstance(series.dtype, type) else series.dtype.__name__
    name = series.name
    if kind in ("Categorical", "Enum"):
        values = series.to_list()
        fixed = getattr(series.dtype, "categories", None) if kind == "Enum" else None
        if fixed is not None:
            cats = [str(c) for c in (fixed.to_list() if hasattr(fixed, "to_list") else list(fixed))]
        else:  # a polars Categorical has no fixed category list: its distinct values, sorted
            cats = sorted({str(v) for v in values if v is not None})
        return pd.Series(pd.Categorical(values, categories=cats), name=name)
    if kind in ("String", "Utf8", "Object", "Binary"):
        return pd.Series(np.array(series.to_list(), dtype=object), name=name, dtype=object)
    if kind == "Boolean":
        values = series.to_list()
        if any(v is None for v in values):
            return pd.Series(np.array(values, dtype=object), name=name, dtype=object)
        return pd.Series(np.array(values, dtype=bool), name=name)
    if kind.startswith(("Int", "UInt")):
        if series.null_count():
            return pd.Series(np.asarray(series.to_numpy(), dtype=float), name=name)
        return pd.Series(series.to_numpy(), name=name)
    if kind.startswith("Float"):
        return pd.Series(np.asarray(series.to_numpy(), dtype=float), name=name)
    if kind.startswith("Decimal"):
        values = np.array([np.nan if v is None else float(v) for v in series.to_list()], dtype=float)
        return pd.Series(values, name=name)
    if kind in ("Date", "Datetime"):
        return pd.Series(pd.to_datetime(series.to_list()), name=name)
    return pd.Series(np.array(series.to_list(), dtype=object), name=name, dtype=object)
