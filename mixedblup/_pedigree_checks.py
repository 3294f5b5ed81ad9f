"""Ingestion checks for :meth:`mixedblup.pedigree.Pedigree.from_frame` (internal).

The checks run in the order of the bad-inputs catalogue (``BAD_INPUTS.md``, section C):
missing IDs (C17), IDs equal to an unknown code (C20), parent codes that look like
unknown codes (C1), duplicate rows (C3, C4), animals that are their own parent (C5),
animals used as both sire and dam and selfing (C8, C9), birth dates (C11), parents
that are not listed (C2), and finally loops (C6), found after the generation
numbering.  Every check is vectorised or iterative (no recursion) and every error
carries all offending rows or IDs in ``problems``.

Rows are reported by the input frame's index labels.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._arrays import distinct, distinct_codes
from .errors import DataError, PedigreeError, PedigreeFixWarning, preview
from .labels import label_to_str, normalize_labels

__all__ = ["UNKNOWN_LIKE", "IngestedPedigree", "ingest", "normalize_unknown", "loop_error"]

#: Parent tokens that look like a code for "unknown" (C1).
UNKNOWN_LIKE = re.compile(r"^(0+|-+|\.|\*|na|nan|null|none|unknown)$", re.IGNORECASE)

_SHOW = 10  # how many items an error message lists


@dataclass(frozen=True)
class IngestedPedigree:
    """Result of :func:`ingest` (internal).

    Attributes
    ----------
    ids : numpy.ndarray
        ``object`` array of str: added founders first (order of first use as a parent),
        then the listed animals in input order (exact duplicates dropped).
    sire, dam : numpy.ndarray
        int64 indices into ``ids``, -1 for unknown.
    rows : numpy.ndarray
        ``object`` array: the input row label of each animal, ``None`` for added founders.
    added_founders : tuple of str
    dropped_duplicates : tuple of str
        IDs whose exact duplicate rows were dropped (one entry per dropped row).
    """

    ids: np.ndarray
    sire: np.ndarray
    dam: np.ndarray
    rows: np.ndarray
    added_founders: tuple[str, ...]
    dropped_duplicates: tuple[str, ...]
    resolved_conflicts: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    sire_group: np.ndarray | None = None
    dam_group: np.ndarray | None = None


def normalize_unknown(unknown: Iterable[Any] | str | None) -> frozenset[str]:
    """Normalise the ``unknown=`` codes the way IDs are normalised (str, stripped).

    Parameters
    ----------
    unknown : iterable or str
        Codes meaning "unknown parent"; a single string is one code.

    Returns
    -------
    frozenset of str
    """
    if unknown is None:
        return frozenset()
    if isinstance(unknown, (str, bytes)) or not isinstance(unknown, Iterable):
        unknown = [unknown]
    out: set[str] = set()
    for token in unknown:
        text = label_to_str(token)
        if text is not None:
            out.add(text)
    return frozenset(out)


def _fmt(value: Any) -> str:
    """Render an ID (or None) for a message."""
    return "unknown" if value is None else repr(value)


def _rows_text(rows: Iterable[Hashable]) -> str:
    rows = list(rows)
    word = "row" if len(rows) == 1 else "rows"
    return f"{word} {preview(rows, _SHOW)}"


def _column(df: pd.DataFrame, name: str, what: str) -> pd.Series:
    if not isinstance(name, Hashable) or name not in df.columns:
        raise DataError(
            f"{what} column {name!r} is not in the pedigree frame; columns are: "
            f"{preview([str(c) for c in df.columns])}"
        )
    col = df[name]
    if isinstance(col, pd.DataFrame):
        raise DataError(f"{what} column {name!r} appears more than once in the pedigree frame")
    return col


def _parse_birth(col: pd.Series, name: str) -> np.ndarray:
    """Birth values as float (numbers as given, dates as days since 1970), NaN if missing."""
    if pd.api.types.is_bool_dtype(col.dtype):
        raise DataError(f"birth column {name!r} is boolean; give years, numbers or dates")
    if pd.api.types.is_numeric_dtype(col.dtype):
        return col.to_numpy(dtype=float, na_value=np.nan)
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        dt = pd.to_datetime(col)
    else:
        raw_missing = col.isna().to_numpy() | (col.astype(str).str.strip() == "").to_numpy()
        num = pd.to_numeric(col.where(~raw_missing), errors="coerce")
        if not (num.isna().to_numpy() & ~raw_missing).any():
            return num.to_numpy(dtype=float, na_value=np.nan)
        dt = pd.to_datetime(col.where(~raw_missing), errors="coerce")
        bad = dt.isna().to_numpy() & ~raw_missing
        if bad.any():
            values = col[bad]
            raise DataError(
                f"birth column {name!r}: {int(bad.sum())} value(s) are neither numbers nor dates: "
                f"{preview(values.astype(str).tolist())} ({_rows_text(values.index)})",
                problems=pd.DataFrame({"row": values.index, "birth": values.to_numpy()}),
            )
    if getattr(dt.dt, "tz", None) is not None:
        dt = dt.dt.tz_convert(None)
    days = (dt - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    return days.to_numpy(dtype=float, na_value=np.nan)


def ingest(
    df: pd.DataFrame,
    *,
    id: str,
    sire: str,
    dam: str,
    unknown: Iterable[Any] | str,
    birth: str | None,
    allow_selfing: bool,
    on_conflict: str = "error",
    sex: str | None = None,
    male: Iterable[Any] = ("M", "MALE", "1"),
    female: Iterable[Any] = ("F", "FEMALE", "2"),
    sex_check: str = "error",
    min_interval: float = 0.0,
    max_unlisted: float = 0.9,
    upg: Any = None,
    min_group_size: int = 5,
    leading_zeros: str = "error",
) -> IngestedPedigree:
    """Normalise and check a pedigree frame; see :meth:`Pedigree.from_frame` (internal).

    Each column is factorised, only its distinct values are normalised (with
    :func:`~mixedblup.labels.normalize_labels`) and the three are merged into one set of
    integer codes, on which every check works.

    Raises
    ------
    DataError
        Missing columns, IDs that are fractional numbers, unparseable birth values.
    PedigreeError
        Any pedigree fault of catalogue section C except loops (checked later).
    """
    if not isinstance(df, pd.DataFrame):
        try:
            from .interop import as_pandas

            df = as_pandas(df)
        except TypeError:
            raise DataError(
                f"a pedigree must be a pandas or polars DataFrame, got {type(df).__name__}"
            ) from None
    if on_conflict not in ("error", "most_complete", "first"):
        raise DataError(
            f"on_conflict must be 'error', 'most_complete' or 'first'; got {on_conflict!r}"
        )
    if leading_zeros not in ("error", "ignore"):
        raise DataError(f"leading_zeros must be 'error' or 'ignore'; got {leading_zeros!r}")
    if sex_check not in ("error", "warn"):
        raise DataError(f"sex_check must be 'error' or 'warn'; got {sex_check!r}")
    sex_col = _column(df, sex, "sex") if sex is not None else None
    if isinstance(upg, str):
        upg_cols = (_column(df, upg, "upg"), _column(df, upg, "upg"))
    elif upg is not None:
        if len(upg) != 2:
            raise DataError("upg= must be a column name or a pair (sire group column, dam group column)")
        upg_cols = (_column(df, upg[0], "upg"), _column(df, upg[1], "upg"))
    else:
        upg_cols = None
    id_col = _column(df, id, "id")
    sire_col = _column(df, sire, "sire")
    dam_col = _column(df, dam, "dam")
    birth_col = _column(df, birth, "birth") if birth is not None else None
    if len(df) == 0:
        raise PedigreeError("the pedigree frame has no rows; a pedigree needs at least one animal")
    unknown_codes = normalize_unknown(unknown)
    n = len(df)
    rows = _object_array(df.index.tolist())  # Python scalars, so messages show 3, not np.int64(3)

    # factorise each raw column, normalise its distinct values only, then merge the three
    raw_codes = []
    raw_values = []
    normalised = []
    columns = (
        (id_col, f"id column {id!r}"),
        (sire_col, f"sire column {sire!r}"),
        (dam_col, f"dam column {dam!r}"),
    )
    for col, what in columns:
        codes, values = pd.factorize(col)  # missing -> -1
        raw_codes.append(codes.astype(np.int64))
        raw_values.append(values)
        normalised.append(normalize_distinct(values, what=what))
    arrays = [np.asarray(r) for r in raw_values]
    floats = [what for (_, what), a in zip(columns, arrays) if a.dtype.kind == "f" and a.size]
    if floats:
        # C12: IDs read as floats (a column with blanks read by pandas): 12.0 -> "12";
        # lossless now, but leading zeros ("0012") were lost when the file was read
        warnings.warn(
            f"IDs in {' and '.join(floats)} are floating-point numbers, converted to IDs without the "
            "decimal part (12.0 -> '12'); if IDs may have leading zeros, read the file with "
            "dtype=str, keep_default_na=False (or use mixedblup.read_pedigree)",
            PedigreeFixWarning,
            stacklevel=3,
        )
    if all(a.dtype.kind in "if" for a in arrays):
        # signed integers and (integral, as normalize_labels checked) floats: merge on the
        # integers, which normalise one-to-one to their decimal strings
        merged, int_uniq = pd.factorize(np.concatenate([a.astype(np.int64) for a in arrays]))
        uniq = np.asarray(normalize_labels(pd.Index(int_uniq, dtype=np.int64)), dtype=object)
    else:
        merged, uniq = pd.factorize(np.concatenate(normalised))
    uniq = np.append(np.asarray(uniq, dtype=object), None)  # uniq[-1] is None: code -1
    nu = len(uniq) - 1
    offset = 0
    idc, sc, dc = [], [], []
    for codes, values, out in zip(raw_codes, normalised, (idc, sc, dc)):
        table = np.append(merged[offset : offset + len(values)].astype(np.int64), -1)
        out.append(table[codes])  # code -1 (missing) picks the appended -1
        offset += len(values)
    idc, sc, dc = idc[0], sc[0], dc[0]

    # C17: every animal needs an ID
    missing = idc < 0
    if missing.any():
        bad_rows = rows[missing]
        raise PedigreeError(
            f"{int(missing.sum())} row(s) have no animal ID in column {id!r} "
            f"({_rows_text(bad_rows)}); an ID is mandatory: fill in or remove these rows (if "
            "the IDs were codes such as 'NA' or 'None', read the file with "
            "keep_default_na=False)",
            problems=pd.DataFrame(
                {"row": bad_rows, "sire": uniq[sc[missing]], "dam": uniq[dc[missing]]}
            ),
        )

    # C20: an animal ID equal to an unknown code
    is_unknown = np.append(pd.Index(uniq[:nu], dtype=object).isin(unknown_codes), True)
    is_code = is_unknown[idc]
    if is_code.any():
        bad = uniq[idc[is_code]]
        raise PedigreeError(
            f"animal ID(s) {preview(sorted(set(bad)), _SHOW)} in column {id!r} "
            f"({_rows_text(rows[is_code])}) are also unknown-parent codes "
            f"(unknown={sorted(unknown_codes)!r}); rename these animals or remove the code from "
            "unknown=",
            problems=pd.DataFrame({"id": bad, "row": rows[is_code]}),
        )
    sc[is_unknown[sc]] = -1
    dc[is_unknown[dc]] = -1

    # C1: parent tokens that look like unknown codes but are neither codes nor animals
    is_animal = np.zeros(nu + 1, dtype=bool)
    is_animal[idc] = True
    is_animal[-1] = True
    suspicious = []
    for role, pc in (("sire", sc), ("dam", dc)):
        strangers = distinct(pc[~is_animal[pc]])
        looks = [k for k in strangers.tolist() if UNKNOWN_LIKE.match(uniq[k])]
        for k in looks:
            where = pc == k
            suspicious.append(
                {"column": sire if role == "sire" else dam, "role": role, "code": uniq[k],
                 "n_animals": int(where.sum()), "rows": rows[where].tolist()}
            )
    if suspicious:
        suspicious.sort(key=lambda x: -x["n_animals"])
        parts = [
            f"{x['role']} code {x['code']!r} is used by {x['n_animals']} animal(s) "
            f"({_rows_text(x['rows'])}) but is not an animal ID"
            for x in suspicious
        ]
        raise PedigreeError(
            "; ".join(parts[:_SHOW])
            + (f"; and {len(parts) - _SHOW} more" if len(parts) > _SHOW else "")
            + f"; add it to unknown= if it means 'unknown' (unknown={sorted(unknown_codes)!r})",
            problems=pd.DataFrame(suspicious),
        )

    # per-row group codes of unknown parents (C13) and sexes (C10), filtered like the rows
    sg = dg = None
    guniq = np.empty(0, dtype=object)
    if upg_cols is not None:
        gcodes, gvalues = pd.factorize(pd.concat([upg_cols[0], upg_cols[1]], ignore_index=True))
        gnorm = normalize_distinct(gvalues, what="upg column")
        gm, guniq = pd.factorize(gnorm)
        gtable = np.append(gm.astype(np.int64), -1)
        sg, dg = gtable[gcodes[:n]], gtable[gcodes[n:]]
        guniq = np.asarray(guniq, dtype=object)
    sex_code = None
    if sex_col is not None:
        males = {str(x).strip().upper() for x in male}
        females = {str(x).strip().upper() for x in female}
        text = sex_col.astype(object).where(sex_col.notna(), "").astype(str).str.strip().str.upper()
        sex_code = np.where(text.isin(males), 1, np.where(text.isin(females), 2, 0))
        sex_raw = _object_array(sex_col.tolist())

    # C3 / C4: duplicate rows
    keys = {"i": idc, "s": sc, "d": dc}
    if sg is not None:
        keys["sg"], keys["dg"] = sg, dg
    born = born_raw = None
    if birth_col is not None:
        born = _parse_birth(birth_col, birth)
        born_raw = _object_array(birth_col.tolist())
        keys["b"] = born
    if np.bincount(idc, minlength=nu + 1).max() > 1:
        exact = pd.DataFrame(keys).duplicated(keep="first").to_numpy()
    else:  # every ID once (the usual case): no duplicate rows at all
        exact = np.zeros(idc.size, dtype=bool)
    dropped: tuple[str, ...] = ()
    if exact.any():
        dropped = tuple(uniq[idc[exact]].tolist())
        warnings.warn(
            f"{len(dropped)} exact duplicate pedigree row(s) dropped "
            f"(IDs {preview(dropped, _SHOW)}; {_rows_text(rows[exact])}); one row per animal is kept, "
            "see Pedigree.dropped_duplicates",
            PedigreeFixWarning,
            stacklevel=3,
        )
        keep = ~exact
        idc, sc, dc, rows = idc[keep], sc[keep], dc[keep], rows[keep]
        if born is not None:
            born, born_raw = born[keep], born_raw[keep]
        if sg is not None:
            sg, dg = sg[keep], dg[keep]
        if sex_code is not None:
            sex_code, sex_raw = sex_code[keep], sex_raw[keep]
    m = idc.size
    count = np.bincount(idc, minlength=nu + 1)
    conflict = count[idc] > 1
    resolved: tuple[str, ...] = ()
    if conflict.any() and on_conflict != "error":
        # keep one row per animal: the first, or the first with the most known parents
        at = np.arange(m)
        known = (sc >= 0).astype(np.int64) + (dc >= 0)
        score = -known if on_conflict == "most_complete" else np.zeros(m, dtype=np.int64)
        order = np.lexsort((at, score, idc))
        first = np.ones(m, dtype=bool)
        first[1:] = idc[order][1:] != idc[order][:-1]
        keep = np.zeros(m, dtype=bool)
        keep[order[first]] = True
        resolved = tuple(pd.unique(uniq[idc[conflict]]).tolist())
        warnings.warn(
            f"{len(resolved)} animal ID(s) appear on several rows with different parents; kept "
            + ("the first row" if on_conflict == "first" else "the row with the most known parents")
            + f" of each (on_conflict={on_conflict!r}): {preview(resolved, _SHOW)}; dropped "
            + _rows_text(rows[~keep])
            + "; see Pedigree.resolved_conflicts",
            PedigreeFixWarning,
            stacklevel=3,
        )
        idc, sc, dc, rows = idc[keep], sc[keep], dc[keep], rows[keep]
        if born is not None:
            born, born_raw = born[keep], born_raw[keep]
        if sg is not None:
            sg, dg = sg[keep], dg[keep]
        if sex_code is not None:
            sex_code, sex_raw = sex_code[keep], sex_raw[keep]
        m = idc.size
        conflict = np.zeros(m, dtype=bool)
    if conflict.any():
        lines = []
        recs = []
        for k in pd.unique(idc[conflict]).tolist():
            at = np.flatnonzero(idc == k)
            desc = []
            for j in at.tolist():
                rec = {"id": uniq[k], "sire": uniq[sc[j]], "dam": uniq[dc[j]], "row": rows[j]}
                text = f"row {rows[j]!r} (sire {_fmt(rec['sire'])}, dam {_fmt(rec['dam'])}"
                if born_raw is not None:
                    rec["birth"] = born_raw[j]
                    text += f", birth {born_raw[j]!r}"
                recs.append(rec)
                desc.append(text + ")")
            lines.append(f"{uniq[k]!r}: " + ", ".join(desc))
        raise PedigreeError(
            f"{len(lines)} animal ID(s) appear on several rows with different parents"
            + (" or birth dates" if born_raw is not None else "")
            + ": "
            + "; ".join(lines[:_SHOW])
            + (f"; and {len(lines) - _SHOW} more" if len(lines) > _SHOW else "")
            + "; keep one row per animal, or pass on_conflict='most_complete' or 'first'",
            problems=pd.DataFrame(recs),
        )

    # C5: own parent
    own_s = sc == idc
    own_d = dc == idc
    if own_s.any() or own_d.any():
        recs = [
            {"id": uniq[idc[j]], "role": role, "row": rows[j]}
            for j in np.flatnonzero(own_s | own_d).tolist()
            for role, flag in (("sire", own_s[j]), ("dam", own_d[j]))
            if flag
        ]
        raise PedigreeError(
            "animal(s) listed as their own parent: "
            + ", ".join(
                f"{r['id']!r} is its own {r['role']} (row {r['row']!r})" for r in recs[:_SHOW]
            )
            + (f" and {len(recs) - _SHOW} more" if len(recs) > _SHOW else "")
            + "; correct the parents of these rows",
            problems=pd.DataFrame(recs),
        )

    # C8 / C9: both sexes and selfing
    if not allow_selfing:
        first_s = _first_row(sc, nu)
        first_d = _first_row(dc, nu)
        both = np.flatnonzero((first_s[:nu] >= 0) & (first_d[:nu] >= 0))
        if both.size:
            both = both[np.argsort(first_s[both], kind="stable")]
            selfed = np.bincount(sc[(sc >= 0) & (sc == dc)], minlength=nu)
            si, di = first_s[both], first_d[both]
            problems = pd.DataFrame(
                {
                    "id": uniq[both],
                    "sire_of": uniq[idc[si]],
                    "sire_row": rows[si],
                    "dam_of": uniq[idc[di]],
                    "dam_row": rows[di],
                    "n_selfed": selfed[both],
                }
            )
            descr = [
                f"{p.id!r} (sire of {p.sire_of!r} row {p.sire_row!r}, dam of {p.dam_of!r} "
                f"row {p.dam_row!r}"
                + (f"; selfing on {p.n_selfed} row(s)" if p.n_selfed else "")
                + ")"
                for p in problems.head(_SHOW).itertuples(index=False)
            ]
            n_self = int(problems["n_selfed"].sum())
            raise PedigreeError(
                f"{both.size} animal(s) are used both as sire and as dam"
                + (f" ({n_self} row(s) have the same sire and dam: selfing)" if n_self else "")
                + ": "
                + ", ".join(descr)
                + (f" and {both.size - _SHOW} more" if both.size > _SHOW else "")
                + "; correct the parents, or pass allow_selfing=True for monoecious species "
                "(plants, hermaphrodites)",
                problems=problems,
            )

    # C11: parent born on or after its offspring
    row_of = np.full(nu + 1, -1, dtype=np.int64)
    row_of[idc] = np.arange(m)
    row_of[-1] = -1
    if born is not None:
        recs = []
        for role, pc in (("sire", sc), ("dam", dc)):
            ppos = row_of[pc]
            child = np.flatnonzero(ppos >= 0)
            ppos = ppos[child]
            late = born[ppos] > born[child] - min_interval  # NaN compares False
            if min_interval == 0:
                late |= born[ppos] == born[child]
            for c_, p_ in zip(child[late].tolist(), ppos[late].tolist()):
                recs.append(
                    {"id": uniq[idc[c_]], "role": role, "parent": uniq[idc[p_]],
                     "birth": born_raw[c_], "parent_birth": born_raw[p_], "row": rows[c_]}
                )
        if recs:
            raise PedigreeError(
                f"{len(recs)} parent(s) are born "
                + ("on or after their offspring" if min_interval == 0 else
                   f"less than min_interval={min_interval:g} before their offspring")
                + ": "
                + ", ".join(
                    f"{r['id']!r} (born {r['birth']!r}, row {r['row']!r}) has {r['role']} "
                    f"{r['parent']!r} born {r['parent_birth']!r}"
                    for r in recs[:_SHOW]
                )
                + (f" and {len(recs) - _SHOW} more" if len(recs) > _SHOW else "")
                + f"; check the parents or the birth column {birth!r}",
                problems=pd.DataFrame(recs),
            )

    # C10: sex column consistent with the parental roles
    if sex_code is not None:
        recs = []
        for role, pc, wrong in (("sire", sc, 2), ("dam", dc, 1)):
            ppos = row_of[pc]
            child = np.flatnonzero(ppos >= 0)
            ppos = ppos[child]
            bad = sex_code[ppos] == wrong
            seen: set[int] = set()
            for c_, p_ in zip(child[bad].tolist(), ppos[bad].tolist()):
                if p_ in seen:
                    continue
                seen.add(p_)
                recs.append(
                    {"id": uniq[idc[p_]], "sex": sex_raw[p_], "used_as": role,
                     "offspring": uniq[idc[c_]], "row": rows[p_], "offspring_row": rows[c_]}
                )
        if recs:
            text = (
                f"{len(recs)} animal(s) have a sex in column {sex!r} that contradicts their use "
                "as a parent: "
                + ", ".join(
                    f"{r['id']!r} (sex {r['sex']!r}, row {r['row']!r}) is {r['used_as']} of "
                    f"{r['offspring']!r} (row {r['offspring_row']!r})"
                    for r in recs[:_SHOW]
                )
                + (f" and {len(recs) - _SHOW} more" if len(recs) > _SHOW else "")
                + "; correct the sex or the parents"
            )
            if sex_check == "error":
                raise PedigreeError(text + " (or pass sex_check='warn')", problems=pd.DataFrame(recs))
            warnings.warn(text, PedigreeFixWarning, stacklevel=3)

    # C12: most parents not found among the animals: IDs probably changed type or format
    used = distinct_codes(np.concatenate([sc[sc >= 0], dc[dc >= 0]]), nu + 1)
    unlisted = used[~is_animal[used]]
    if used.size >= 20 and unlisted.size > max_unlisted * used.size:
        ids_show = uniq[idc[: min(m, 5)]].tolist()
        raise PedigreeError(
            f"{unlisted.size} of the {used.size} distinct parents ({unlisted.size / used.size:.0%}) "
            f"are not animal IDs after matching, e.g. parents {preview(uniq[unlisted[:5]].tolist())} "
            f"while animal IDs look like {preview(ids_show)}: did IDs change type or format (12 "
            "vs '0012', '12.0', a prefix)?  Read all ID columns as strings (dtype=str, "
            "keep_default_na=False); if the parents really are not listed, pass "
            f"max_unlisted=1.0 (now {max_unlisted:g})",
            problems=pd.DataFrame({"parent": uniq[unlisted]}),
        )

    # C12: IDs that differ only by leading zeros ("0012" and "12"): one animal written two ways
    if leading_zeros == "error" and not all(a.dtype.kind in "if" for a in arrays):
        _leading_zero_check(uniq, idc, sc, dc, rows, id, sire, dam)

    # C13: unknown parent groups
    groups: tuple[str, ...] = ()
    if sg is not None:
        clash = pd.Index(guniq, dtype=object).isin(pd.Index(uniq[:nu], dtype=object))
        if clash.any():
            bad = guniq[clash].tolist()
            raise PedigreeError(
                f"unknown-parent group code(s) {preview(bad, _SHOW)} are also animal IDs; group "
                "codes must differ from every animal and parent ID (e.g. prefix them with 'G:')",
                problems=pd.DataFrame({"group": bad}),
            )
        no_s = (sc < 0) & (sg < 0)
        no_d = (dc < 0) & (dg < 0)
        listed_unlisted = pd.unique(np.concatenate([sc, dc])[~is_animal[np.concatenate([sc, dc])]])
        if no_s.any() or no_d.any() or listed_unlisted.size:
            lacking = np.flatnonzero(no_s | no_d)
            parts = []
            if lacking.size:
                parts.append(
                    f"{lacking.size} animal(s) have an unknown parent but no group: "
                    f"{preview(uniq[idc[lacking]].tolist(), _SHOW)} ({_rows_text(rows[lacking])})"
                )
            if listed_unlisted.size:
                parts.append(
                    f"{listed_unlisted.size} parent(s) are not listed, so their unknown parents "
                    f"have no group: {preview(uniq[listed_unlisted].tolist(), _SHOW)} (list them "
                    "with a group)"
                )
            raise PedigreeError(
                "with unknown parent groups every unknown parent needs a group: "
                + "; ".join(parts),
                problems=pd.DataFrame(
                    {"id": np.concatenate([uniq[idc[lacking]], uniq[listed_unlisted]])}
                ),
            )
        sg = np.where(sc < 0, sg, -1)
        dg = np.where(dc < 0, dg, -1)
        used_g = np.concatenate([sg[sg >= 0], dg[dg >= 0]])
        size = np.bincount(used_g, minlength=guniq.size)
        groups = tuple(guniq.tolist())
        small = np.flatnonzero(size < min_group_size)
        if small.size:
            warnings.warn(
                f"{small.size} unknown-parent group(s) have fewer than {min_group_size} unknown "
                "parents: "
                + ", ".join(f"{guniq[g]!r} ({size[g]})" for g in small[:_SHOW].tolist())
                + "; small groups are poorly estimated (confounded with their animals); "
                "consider merging them",
                PedigreeFixWarning,
                stacklevel=3,
            )

    # C2: parents that are not listed become founders (order of first use)
    seq = np.empty(2 * m, dtype=np.int64)
    seq[0::2] = sc
    seq[1::2] = dc
    added = pd.unique(seq[~is_animal[seq]]).astype(np.int64)
    added_ids = tuple(uniq[added].tolist())
    if added_ids:
        warnings.warn(
            f"{len(added_ids)} parent(s) are not listed as animals and were added as founders "
            f"(both parents unknown): {preview(added_ids, _SHOW)}; see Pedigree.added_founders",
            PedigreeFixWarning,
            stacklevel=3,
        )
    n_add = added.size
    pos_of = np.full(nu + 1, -1, dtype=np.int64)
    pos_of[added] = np.arange(n_add)
    pos_of[idc] = n_add + np.arange(m)
    pos_of[-1] = -1
    none = np.full(n_add, -1, dtype=np.int64)
    if sg is not None:
        sg = np.concatenate([none, sg])
        dg = np.concatenate([none, dg])
    return IngestedPedigree(
        ids=np.concatenate([uniq[added], uniq[idc]]),
        sire=np.concatenate([none, pos_of[sc]]),
        dam=np.concatenate([none, pos_of[dc]]),
        rows=np.concatenate([np.full(n_add, None, dtype=object), rows]),
        added_founders=added_ids,
        dropped_duplicates=dropped,
        resolved_conflicts=resolved,
        groups=groups,
        sire_group=sg,
        dam_group=dg,
    )


def _leading_zero_check(uniq: np.ndarray, idc: np.ndarray, sc: np.ndarray, dc: np.ndarray,
                        rows: np.ndarray, id: str, sire: str, dam: str) -> None:
    """C12: raise if two IDs (animals or parents) differ only by leading zeros."""
    used = distinct_codes(np.concatenate([idc, sc[sc >= 0], dc[dc >= 0]]), len(uniq))
    labels = pd.Series(uniq[used], index=used, dtype=object)
    zero = labels.str.startswith("0") & (labels.str.len() > 1)
    if not zero.any():
        return
    digits = labels[labels.str.fullmatch(r"\d+").fillna(False).astype(bool)]
    key = digits.str.lstrip("0").replace("", "0")
    clash = key[key.duplicated(keep=False)]
    if clash.empty:
        return
    first_row = {}
    for codes, col in ((idc, id), (sc, sire), (dc, dam)):
        for code in clash.index.tolist():
            if code not in first_row:
                at = np.flatnonzero(codes == code)
                if at.size:
                    first_row[code] = (col, rows[at[0]])
    recs = []
    for k, members in clash.groupby(clash).groups.items():
        for code in members:
            col, row = first_row.get(code, (None, None))
            recs.append({"id": uniq[code], "same_as": k, "column": col, "row": row})
    groups = pd.DataFrame(recs).groupby("same_as", sort=False)
    texts = [
        " and ".join(f"{r.id!r} (column {r.column!r}, row {r.row!r})" for r in g.itertuples(index=False))
        for _, g in groups
    ]
    raise PedigreeError(
        f"{len(texts)} ID(s) are written with and without leading zeros: "
        + "; ".join(texts[:_SHOW])
        + (f"; and {len(texts) - _SHOW} more" if len(texts) > _SHOW else "")
        + "; they are probably one animal whose ID lost its zeros in one file (numbers read as "
        "integers): read every ID column with dtype=str and write IDs one way; if they really are "
        "different animals pass leading_zeros='ignore'",
        problems=pd.DataFrame(recs),
    )


def normalize_distinct(values: Any, what: str = "labels") -> np.ndarray:
    """Normalised labels of distinct, non-missing values, vectorised where possible.

    The same result as :func:`~mixedblup.labels.normalize_labels` (an ``object`` array of
    ``str``), without a Python loop for string and integer columns: strings are
    stripped by pandas' vectorised ``str.strip`` and integers formatted by numpy.  Other
    values (floats, mixed objects) go through ``normalize_labels``.
    """
    index = pd.Index(values)
    if len(index) == 0:
        return np.empty(0, dtype=object)
    dtype = index.dtype
    if pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return np.asarray(index.to_numpy().astype(str), dtype=object)
    if pd.api.types.is_string_dtype(dtype):
        if dtype != object:  # pandas' str dtype: vectorised (pyarrow) strip
            return index.str.strip().to_numpy(dtype=object)
        if pd.api.types.infer_dtype(index, skipna=False) == "string":
            return np.asarray(index.str.strip(), dtype=object)
    return np.asarray(normalize_labels(values, what=what), dtype=object)


def _object_array(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _first_row(parent_codes: np.ndarray, nu: int) -> np.ndarray:
    """First row at which each code is used as a parent (-1 if never), size ``nu + 1``."""
    first = np.full(nu + 1, -1, dtype=np.int64)
    at = np.flatnonzero(parent_codes >= 0)
    used, first_at = np.unique(parent_codes[at], return_index=True)
    first[used] = at[first_at]
    return first


def find_cycles(sire: np.ndarray, dam: np.ndarray, remaining: np.ndarray) -> list[list[int]]:
    """One cycle per strongly connected component of the loop remainder.

    Iterative Tarjan on the graph child -> parent restricted to ``remaining`` (the
    animals a Kahn sort could not place), then a walk inside each component.

    Parameters
    ----------
    sire, dam : numpy.ndarray
        int64 parent indices (-1 unknown).
    remaining : numpy.ndarray
        Indices left over by the Kahn sort.

    Returns
    -------
    list of list of int
        Each cycle as a path ``[a, b, ..., a]`` where each animal is a parent of the next.
    """
    rem = set(int(x) for x in remaining)

    def parents(v: int) -> list[int]:
        out = []
        for p in (int(sire[v]), int(dam[v])):
            if p >= 0 and p in rem and p not in out:
                out.append(p)
        return out

    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    comps: list[list[int]] = []
    counter = 0
    for root in sorted(rem):
        if root in index:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        call = [(root, iter(parents(root)))]
        while call:
            v, it = call[-1]
            pushed = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    call.append((w, iter(parents(w))))
                    pushed = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if pushed:
                continue
            call.pop()
            if call:
                u = call[-1][0]
                low[u] = min(low[u], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(comp)
    cycles = []
    for comp in comps:
        members = set(comp)
        start = min(comp)
        path = [start]
        seen = {start: 0}
        v = start
        while True:
            v = next(p for p in parents(v) if p in members)
            if v in seen:
                cyc = path[seen[v]:] + [v]
                break
            seen[v] = len(path)
            path.append(v)
        cycles.append(cyc[::-1])  # child -> parent walk reversed: parent -> offspring
    cycles.sort(key=lambda c: min(c))
    return cycles


def loop_error(
    ids: np.ndarray, rows: np.ndarray, sire: np.ndarray, dam: np.ndarray, remaining: np.ndarray
) -> PedigreeError:
    """Build the :class:`PedigreeError` for pedigree loops (C6)."""
    cycles = find_cycles(sire, dam, remaining)
    recs = []
    texts = []
    for k, cyc in enumerate(cycles):
        path = " -> ".join(str(ids[v]) for v in cyc)
        row_list = ", ".join(repr(rows[v]) for v in cyc[:-1])
        texts.append(f"{path} (rows {row_list})")
        for step, v in enumerate(cyc[:-1]):
            recs.append({"loop": k, "step": step, "id": ids[v], "row": rows[v]})
    n_below = len(remaining) - len({v for c in cycles for v in c})
    return PedigreeError(
        f"{len(cycles)} pedigree loop(s) (each animal is a parent of the next, so the first is "
        "its own ancestor): "
        + "; ".join(texts[:_SHOW])
        + (f"; and {len(texts) - _SHOW} more" if len(texts) > _SHOW else "")
        + (f" ({n_below} further animal(s) descend from these loops)" if n_below > 0 else "")
        + "; correct the parents of these animals",
        problems=pd.DataFrame(recs, columns=["loop", "step", "id", "row"]),
    )
