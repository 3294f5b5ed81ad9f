"""Bundled example data: ``load(name)`` returns a pandas DataFrame.

The CSV files live in the repository's top-level ``datasets/`` folder and are
shipped inside the wheel (as ``mixedblup/_datasets``), so they are available after
a normal ``pip install``.  Provenance and column descriptions are in
``datasets/README.md`` and :func:`describe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

__all__ = ["load", "names", "describe", "data_path"]


@dataclass(frozen=True)
class _Entry:
    file: str
    ids: tuple[str, ...]
    description: str


_CATALOG: dict[str, _Entry] = {
    "pigs": _Entry("pigs.csv", ("pig", "sex", "dam"),
                   "Birth weights of 6 piglets by sex and dam (course notes' worked example)."),
    "mrode_3_1": _Entry("mrode_3_1.csv", ("calf", "sex", "sire", "dam"),
                        "Pre-weaning gain of 5 beef calves, Mrode (2005) Example 3.1."),
    "mrode_3_1_pedigree": _Entry("mrode_3_1_pedigree.csv", ("animal", "sire", "dam"),
                                 "Pedigree of Mrode (2005) Example 3.1 (8 animals)."),
    "sleepstudy": _Entry("sleepstudy.csv", ("Subject",),
                         "Reaction times under sleep deprivation (lme4's sleepstudy)."),
    "dyestuff": _Entry("dyestuff.csv", ("Batch",), "Dyestuff yield by batch (lme4's Dyestuff)."),
    "penicillin": _Entry("penicillin.csv", ("plate", "sample"),
                         "Penicillin assay, crossed plates and samples (lme4's Penicillin)."),
    "pastes": _Entry("pastes.csv", ("batch", "cask", "sample"),
                     "Paste strength, casks nested in batches (lme4's Pastes)."),
}


def data_path() -> Path:
    """Folder holding the bundled CSV files (installed wheel or source checkout)."""
    packaged = resources.files("mixedblup") / "_datasets"
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / "datasets"
    if source.is_dir():
        return source
    raise FileNotFoundError(
        "mixedblup's bundled datasets were not found; reinstall the package (pip install mixedblup)"
    )


def names() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_CATALOG)


def describe(name: str) -> str:
    """One-line provenance of a dataset (the full notes are in ``datasets/README.md``)."""
    return _entry(name).description


def _entry(name: str) -> _Entry:
    if name not in _CATALOG:
        raise KeyError(f"no bundled dataset {name!r}; available: {', '.join(names())}")
    return _CATALOG[name]


def load(name: str) -> pd.DataFrame:
    """Load a bundled dataset.

    Parameters
    ----------
    name : str
        One of :func:`names` (``"pigs"``, ``"mrode_3_1"``, ``"sleepstudy"`` ...).

    Returns
    -------
    pandas.DataFrame
        ID and grouping columns as strings, measurements as numbers.
    """
    entry = _entry(name)
    path = data_path() / entry.file
    return pd.read_csv(path, dtype={c: str for c in entry.ids}, keep_default_na=False,
                       na_values={c: [] for c in entry.ids})
