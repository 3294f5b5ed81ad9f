"""Normalising labels (animal IDs, factor levels) to strings.

The same animal written as ``12``, ``"12"``, ``" 12 "`` or ``12.0`` is one
animal.  Every matching between a pedigree, a user-supplied relationship matrix
and the data goes through :func:`normalize_labels`, so a pedigree read as
integers matches data read as strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError, preview

__all__ = ["normalize_labels", "label_to_str"]


def label_to_str(value: Any) -> str | None:
    """Normalise one label: ``None`` for missing, otherwise a stripped string.

    Integral floats (``12.0``) become ``"12"``; floats with a fractional part are
    not valid labels and raise :class:`~mixedblup.errors.DataError`.

    Parameters
    ----------
    value : object
        An ID or level as found in a DataFrame.

    Returns
    -------
    str or None
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        if not np.isfinite(value) or float(value) != np.floor(value):
            raise DataError(
                f"label {value!r} is a number with a fractional part (or infinite) and cannot be "
                "an ID or level; read ID columns as strings (dtype=str)"
            )
        return str(int(value))
    text = str(value).strip()
    return text


def normalize_labels(values: Iterable[Any], what: str = "labels") -> pd.Index:
    """Normalise a column of labels to an Index of strings (missing stay missing).

    Parameters
    ----------
    values : iterable
        IDs or levels of any dtype (int, float with integral values, str, category).
    what : str
        Name used in error messages (for example the column name).

    Returns
    -------
    pandas.Index
        ``object`` dtype, each entry a ``str`` or ``None``.

    Raises
    ------
    DataError
        If some values are numbers with a fractional part.
    """
    if isinstance(values, (pd.Series, pd.Index)) and pd.api.types.is_integer_dtype(values.dtype):
        arr = np.asarray(values)
        return pd.Index([str(v) for v in arr.tolist()], dtype=object)
    if isinstance(values, (pd.Series, pd.Index, np.ndarray)) and values.dtype.kind in "OU" or (
            isinstance(values, (pd.Series, pd.Index)) and values.dtype == "str"):
        arr = np.asarray(values, dtype=object)
        if set(map(type, arr)) <= {str}:  # the common case, without a call per label
            return pd.Index([v.strip() for v in arr], dtype=object)
    out: list[str | None] = []
    bad: list[Any] = []
    for v in values:
        try:
            out.append(label_to_str(v))
        except DataError:
            bad.append(v)
            out.append(None)
    if bad:
        raise DataError(
            f"{what}: {len(bad)} value(s) are numbers with a fractional part and cannot be IDs or "
            f"levels: {preview(bad)}; read ID columns as strings (dtype=str)",
            problems=pd.DataFrame({"value": bad}),
        )
    return pd.Index(out, dtype=object)
