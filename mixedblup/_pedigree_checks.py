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
        raise DataError(f"a pedigree must be a pandas DataFrame, got {type(df).__name__}")
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
        normalised.append(np.asarray(normalize_labels(values, what=what), dtype=object))
    arrays = [np.asarray(r) for r in raw_values]
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
        strangers = np.unique(pc[~is_animal[pc]])
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

    # C3 / C4: duplicate rows
    keys = {"i": idc, "s": sc, "d": dc}
    born = born_raw = None
    if birth_col is not None:
        born = _parse_birth(birth_col, birth)
        born_raw = _object_array(birth_col.tolist())
        keys["b"] = born
    exact = pd.DataFrame(keys).duplicated(keep="first").to_numpy()
    dropped: tuple[str, ...] = ()
    if exact.any():
        dropped = tuple(uniq[idc[exact]].tolist())
        warnings.warn(
            f"{len(dropped)} exact duplicate pedigree row(s) dropped "
            f"(IDs {preview(dropped, _SHOW)}; {_rows_text(rows[exact])})",
            PedigreeFixWarning,
            stacklevel=3,
        )
        keep = ~exact
        idc, sc, dc, rows = idc[keep], sc[keep], dc[keep], rows[keep]
        if born is not None:
            born, born_raw = born[keep], born_raw[keep]
    m = idc.size
    count = np.bincount(idc, minlength=nu + 1)
    conflict = count[idc] > 1
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
            + "; keep one row per animal",
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
            late = born[ppos] >= born[child]  # NaN compares False
            for c_, p_ in zip(child[late].tolist(), ppos[late].tolist()):
                recs.append(
                    {"id": uniq[idc[c_]], "role": role, "parent": uniq[idc[p_]],
                     "birth": born_raw[c_], "parent_birth": born_raw[p_], "row": rows[c_]}
                )
        if recs:
            raise PedigreeError(
                f"{len(recs)} parent(s) are born on or after their offspring: "
                + ", ".join(
                    f"{r['id']!r} (born {r['birth']!r}, row {r['row']!r}) has {r['role']} "
                    f"{r['parent']!r} born {r['parent_birth']!r}"
                    for r in recs[:_SHOW]
                )
                + (f" and {len(recs) - _SHOW} more" if len(recs) > _SHOW else "")
                + f"; check the parents or the birth column {birth!r}",
                problems=pd.DataFrame(recs),
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
    return IngestedPedigree(
        ids=np.concatenate([uniq[added], uniq[idc]]),
        sire=np.concatenate([none, pos_of[sc]]),
        dam=np.concatenate([none, pos_of[dc]]),
        rows=np.concatenate([np.full(n_add, None, dtype=object), rows]),
        added_founders=added_ids,
        dropped_duplicates=dropped,
    )


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
