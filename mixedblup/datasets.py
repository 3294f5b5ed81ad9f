"""Bundled example data: ``load(name)`` returns a pandas DataFrame.

The CSV files live in the repository's top-level ``datasets/`` folder and are
shipped inside the wheel (as ``mixedblup/_datasets``), so they are available after
a normal ``pip install``.  Provenance and column descriptions are in
``datasets/README.md`` and :func:`describe`.

:func:`simulate` makes pedigrees and records of any size from known variance
components (benchmarks, teaching, simulation studies).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from .simulate import SimulatedPopulation, simulate_population

__all__ = ["load", "names", "describe", "data_path", "simulate", "SimulatedPopulation"]


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
    "mrode_4_1": _Entry("mrode_4_1.csv", ("cow", "sire", "dam", "parity", "hys"),
                        "Fat yield, two lactations of 5 cows, Mrode (2014, 3rd ed.) Example 4.1 "
                        "(repeatability model)."),
    "mrode_4_1_pedigree": _Entry("mrode_4_1_pedigree.csv", ("animal", "sire", "dam"),
                                 "Pedigree of Mrode (2014) Example 4.1 (8 animals)."),
    "mrode_7_1": _Entry("mrode_7_1.csv", ("calf", "sire", "dam", "herd", "pen"),
                        "Birth weight of 10 beef calves, Mrode (2014, 3rd ed.) Example 7.1 / "
                        "Table 7.1 (direct and maternal genetic effects)."),
    "mrode_7_1_pedigree": _Entry("mrode_7_1_pedigree.csv", ("animal", "sire", "dam"),
                                 "Pedigree of Mrode (2014) Example 7.1 (14 animals)."),
    "sleepstudy": _Entry("sleepstudy.csv", ("Subject",),
                         "Reaction times under sleep deprivation (lme4's sleepstudy)."),
    "dyestuff": _Entry("dyestuff.csv", ("Batch",), "Dyestuff yield by batch (lme4's Dyestuff)."),
    "penicillin": _Entry("penicillin.csv", ("plate", "sample"),
                         "Penicillin assay, crossed plates and samples (lme4's Penicillin)."),
    "pastes": _Entry("pastes.csv", ("batch", "cask", "sample"),
                     "Paste strength, casks nested in batches (lme4's Pastes)."),
    "mrode_2_1_pedigree": _Entry("mrode_2_1_pedigree.csv", ("animal", "sire", "dam"),
                                 "Six-animal pedigree with inbreeding, Mrode (2005) Section 2.1 "
                                 "(animals 5 and 6 have F = 0.125)."),
    "dairy": _Entry("dairy.csv", ("animal", "dam", "herd", "herd_year", "parity", "pe"),
                    "Simulated dairy records: 3,168 lactations of 1,430 cows, herd-year, parity, "
                    "repeated records and maternal effects (datasets/make_dairy.py, seed 20240607)."),
    "dairy_pedigree": _Entry("dairy_pedigree.csv", ("animal", "sire", "dam", "sex", "herd"),
                             "Pedigree of the simulated dairy set: 4,000 animals, 8 overlapping "
                             "generations, 20 AI sires per generation, 3% unknown parents."),
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


def simulate(n_animals: int = 10_000, *, seed: int | None = 0, **options: Any) -> SimulatedPopulation:
    """Simulate a dairy-like pedigree and records with known variance components.

    A thin front door to :func:`mixedblup.simulate.simulate_population`: overlapping
    generations, dams kept within herds, a limited number of AI sires per generation
    used across herds (the sparse, clustered structure of real pedigrees), repeated
    records with herd-year, permanent-environment and optionally maternal effects.

    Parameters
    ----------
    n_animals : int
        Animals in the pedigree (all generations).
    seed : int, optional
        Random seed; the same seed gives the same population.
    **options
        Any keyword of :func:`~mixedblup.simulate.simulate_population`:
        ``n_generations, n_herds, sires_per_generation, unknown_parent_rate,
        recorded_fraction, records_per_animal, additive, maternal, cov_am, pe,
        herd_year, residual, years_per_generation, string_ids, shuffle, select_sires``
        (``select_sires=False`` picks sires at random instead of by true breeding value,
        for simulation studies of estimators).

    Returns
    -------
    SimulatedPopulation
        ``pedigree`` (``id, sire, dam, generation, herd, sex``; unknown parents ``"0"``),
        ``records`` (``id, herd_year, parity, dam, y, herd, year, pe``), the true
        ``breeding_values`` and ``maternal_values``, and the ``parameters`` used.

    Examples
    --------
    >>> import mixedblup as mb
    >>> pop = mb.datasets.simulate(2000, n_generations=5, pe=0.1, records_per_animal=2, seed=1)
    >>> sorted(pop.parameters)
    ['additive', 'cov_am', 'herd_year', 'maternal', 'pe', 'residual']
    """
    return simulate_population(n_animals, seed=seed, **options)
