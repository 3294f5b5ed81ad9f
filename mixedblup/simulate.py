"""Simulating pedigrees and records with known parameters (benchmarks, tests, teaching).

:func:`simulate_population` makes a dairy-like population: overlapping generations,
dams kept within herds, a limited number of AI sires per generation used across
herds (so the pedigree has the sparse, clustered structure of real data rather than
random mating across the whole population), repeated records with herd-year,
permanent-environment and optionally maternal effects.  Everything is vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SimulatedPopulation", "simulate_population", "simulate_social"]


@dataclass(frozen=True)
class SimulatedPopulation:
    """A simulated population with the truth that generated it.

    Attributes
    ----------
    pedigree : pandas.DataFrame
        ``id, sire, dam, generation, herd, sex`` (unknown parents are ``"0"``).
    records : pandas.DataFrame
        ``id, herd_year, parity, dam, y, herd, year, pe`` (one row per record; ``pe`` is a
        copy of ``id`` to use as the permanent-environment grouping factor, ``herd`` and
        ``year`` are the parts of ``herd_year``).
    breeding_values : pandas.Series
        True additive genetic values by ID.
    maternal_values : pandas.Series
        True maternal genetic values by ID (zeros without a maternal effect).
    parameters : dict
        The variance components used (``additive, maternal, cov_am, pe, herd_year, residual``).
    """

    pedigree: pd.DataFrame
    records: pd.DataFrame
    breeding_values: pd.Series
    maternal_values: pd.Series
    parameters: dict


def simulate_population(
    n_animals: int = 10_000,
    *,
    n_generations: int = 10,
    n_herds: int = 100,
    sires_per_generation: int = 200,
    unknown_parent_rate: float = 0.03,
    recorded_fraction: float = 0.8,
    records_per_animal: int = 1,
    recorded_sex: str = "F",
    additive: float = 0.3,
    maternal: float = 0.0,
    cov_am: float = 0.0,
    pe: float = 0.0,
    herd_year: float = 0.2,
    residual: float = 0.5,
    years_per_generation: int = 2,
    string_ids: bool = True,
    shuffle: bool = True,
    select_sires: bool = True,
    seed: int | None = 0,
) -> SimulatedPopulation:
    """Simulate a population and its records from known variance components.

    Parameters
    ----------
    n_animals : int
        Animals in the pedigree (all generations).
    n_generations : int
        Overlapping generations; dams come from the previous one to three generations
        of their own herd, sires from the ``sires_per_generation`` best males of the
        previous generation (by true breeding value).
    n_herds : int
        Herds; each herd-year is a level of the ``herd_year`` effect.
    sires_per_generation : int
        AI sires used across all herds per generation.
    unknown_parent_rate : float
        Share of non-founder animals whose sire and, independently, dam are unknown.
    recorded_fraction : float
        Share of the animals of ``recorded_sex`` (after the founders) with records.
    records_per_animal : int
        Records per recorded animal (repeated records share a permanent environment).
    recorded_sex : {"F", "M", "both"}
        Which animals have records: females (dairy, default), males, or both (beef, pigs).
    additive, maternal, cov_am, pe, herd_year, residual : float
        Variance components (``cov_am`` the direct-maternal genetic covariance).
    years_per_generation : int
        Herd-years per generation.
    string_ids : bool
        IDs as strings like ``"A000123"`` (default) or as integers.
    shuffle : bool
        Shuffle the pedigree rows (parents no longer precede offspring).
    select_sires : bool
        Choose each generation's sires as the best males by true breeding value (default,
        like AI programmes), or at random (``False``).  Selection on true breeding values,
        which the records do not carry, is not ignorable: REML estimates from such data
        are biased; simulation studies of estimators use random sires.
    seed : int, optional
        Random seed.

    Returns
    -------
    SimulatedPopulation
    """
    if recorded_sex not in ("F", "M", "both"):
        raise ValueError(f"recorded_sex must be 'F', 'M' or 'both'; got {recorded_sex!r}")
    rng = np.random.default_rng(seed)
    n = int(n_animals)
    gen = np.minimum((np.arange(n) * n_generations) // max(n, 1), n_generations - 1)
    herd = rng.integers(0, n_herds, n)
    sex = rng.integers(0, 2, n)  # 0 male, 1 female
    sire = np.full(n, -1)
    dam = np.full(n, -1)
    G = np.array([[additive, cov_am], [cov_am, maternal]])
    chol = np.linalg.cholesky(G + np.eye(2) * 1e-12)
    genetic = np.zeros((n, 2))
    founders = gen == 0
    genetic[founders] = rng.normal(size=(founders.sum(), 2)) @ chol.T
    for g in range(1, n_generations):
        kids = np.nonzero(gen == g)[0]
        prev = np.nonzero((gen < g) & (gen >= g - 1))[0]
        males = prev[sex[prev] == 0]
        if len(males):
            if select_sires:
                best = males[np.argsort(-genetic[males, 0])[:sires_per_generation]]
            else:
                best = rng.choice(males, size=min(sires_per_generation, len(males)), replace=False)
            sire[kids] = best[rng.integers(0, len(best), len(kids))]
        females = np.nonzero((gen < g) & (gen >= g - 3) & (sex == 1))[0]
        if len(females):
            # a dam from the offspring's own herd when the herd has one, else any female
            order = np.argsort(herd[females], kind="stable")
            f_sorted = females[order]
            h_sorted = herd[f_sorted]
            lo = np.searchsorted(h_sorted, herd[kids], side="left")
            hi = np.searchsorted(h_sorted, herd[kids], side="right")
            has = hi > lo
            pick = lo + (rng.random(len(kids)) * np.maximum(hi - lo, 1)).astype(np.int64)
            dam[kids] = np.where(has, f_sorted[np.minimum(pick, len(f_sorted) - 1)],
                                 females[rng.integers(0, len(females), len(kids))])
        lost_s = rng.random(len(kids)) < unknown_parent_rate
        lost_d = rng.random(len(kids)) < unknown_parent_rate
        sire[kids[lost_s]] = -1
        dam[kids[lost_d]] = -1
        known = (sire[kids] >= 0).astype(float) + (dam[kids] >= 0).astype(float)
        pa = 0.5 * (np.where(sire[kids] >= 0, 1, 0)[:, None] * genetic[np.maximum(sire[kids], 0)]
                    + np.where(dam[kids] >= 0, 1, 0)[:, None] * genetic[np.maximum(dam[kids], 0)])
        ms_var = 1.0 - 0.25 * known  # Mendelian sampling variance (non-inbred approximation)
        genetic[kids] = pa + (rng.normal(size=(len(kids), 2)) @ chol.T) * np.sqrt(ms_var)[:, None]
    labels = np.array([f"A{i:07d}" for i in range(n)], dtype=object) if string_ids else np.arange(1, n + 1)
    unknown = "0" if string_ids else 0
    ped = pd.DataFrame({
        "id": labels,
        "sire": np.where(sire >= 0, labels[np.maximum(sire, 0)], unknown),
        "dam": np.where(dam >= 0, labels[np.maximum(dam, 0)], unknown),
        "generation": gen, "herd": herd, "sex": np.where(sex == 0, "M", "F"),
    })
    eligible = np.ones(n, dtype=bool) if recorded_sex == "both" else sex == (1 if recorded_sex == "F" else 0)
    recorded = np.nonzero(eligible & (gen > 0) & (rng.random(n) < recorded_fraction))[0]
    rec = np.repeat(recorded, records_per_animal)
    parity = np.tile(np.arange(1, records_per_animal + 1), len(recorded))
    year = gen[rec] * years_per_generation + rng.integers(0, years_per_generation, len(rec)) + parity - 1
    hy_code = herd[rec] * 10_000 + year
    hy_levels, hy = np.unique(hy_code, return_inverse=True)
    hy_effect = rng.normal(size=len(hy_levels)) * np.sqrt(herd_year)
    pe_effect = rng.normal(size=n) * np.sqrt(pe)
    mat = np.where(dam[rec] >= 0, genetic[np.maximum(dam[rec], 0), 1], 0.0)
    y = (10.0 + hy_effect[hy] + genetic[rec, 0] + mat + pe_effect[rec]
         + rng.normal(size=len(rec)) * np.sqrt(residual))
    records = pd.DataFrame({
        "id": labels[rec],
        "herd_year": np.array([f"H{h // 10_000:04d}Y{h % 10_000:03d}" for h in hy_levels], dtype=object)[hy],
        "parity": parity,
        "dam": np.where(dam[rec] >= 0, labels[np.maximum(dam[rec], 0)], unknown),
        "y": y,
        "herd": np.array([f"H{h:04d}" for h in range(n_herds)], dtype=object)[herd[rec]],
        "year": year,
        "pe": labels[rec],
    })
    if shuffle:
        ped = ped.sample(frac=1.0, random_state=rng.integers(0, 2**31)).reset_index(drop=True)
    truth = dict(additive=additive, maternal=maternal, cov_am=cov_am, pe=pe, herd_year=herd_year,
                 residual=residual)
    return SimulatedPopulation(
        pedigree=ped,
        records=records,
        breeding_values=pd.Series(genetic[:, 0], index=pd.Index(labels, name="id")),
        maternal_values=pd.Series(genetic[:, 1], index=pd.Index(labels, name="id")),
        parameters=truth,
    )


def simulate_social(
    n_animals: int = 3000,
    *,
    group_size: int = 5,
    direct: float = 0.3,
    social: float = 0.05,
    cov_ds: float = 0.02,
    pen: float = 0.0,
    residual: float = 0.5,
    seed: int | None = 0,
    **options: Any,
) -> SimulatedPopulation:
    """Simulate animals kept in pens with direct and social (indirect) genetic effects.

    The pedigree and the two correlated genetic values come from
    :func:`simulate_population` (its second genetic value, there the maternal one, is
    the social one here: inherited the same way, covariance ``cov_ds``).  The recorded
    animals are put in pens of ``group_size`` in random order, and

        y_i = 10 + a_D,i + sum over pen mates j != i of a_S,j + pen + e_i.

    Parameters
    ----------
    n_animals : int
        Animals in the pedigree.
    group_size : int
        Animals per pen (the last pen may be smaller; pens of one are dropped).
    direct, social, cov_ds : float
        Direct and social genetic variances and their covariance.
    pen : float
        Variance of a random pen effect (0: none).
    residual : float
        Residual variance.
    seed : int, optional
        Random seed.
    **options
        Passed to :func:`simulate_population` (``n_generations``, ``recorded_sex``
        (default ``"both"``), ``recorded_fraction``, ``sires_per_generation`` ...).

    Returns
    -------
    SimulatedPopulation
        ``records`` has one row per animal: ``id, pen, y``; ``breeding_values`` are the
        direct and ``maternal_values`` the social genetic values; ``parameters`` holds
        ``direct, social, cov_ds, pen, residual``.
    """
    options.setdefault("recorded_sex", "both")
    base = simulate_population(n_animals, additive=direct, maternal=social, cov_am=cov_ds, pe=0.0,
                               herd_year=0.0, residual=residual, records_per_animal=1, seed=seed, **options)
    rng = np.random.default_rng(None if seed is None else seed + 7919)
    ids = base.records["id"].to_numpy()
    ids = ids[rng.permutation(len(ids))]
    pen_of = np.arange(len(ids)) // group_size
    sizes = np.bincount(pen_of)
    keep = sizes[pen_of] > 1
    ids, pen_of = ids[keep], pen_of[keep]
    a_d = base.breeding_values.reindex(ids).to_numpy()
    a_s = base.maternal_values.reindex(ids).to_numpy()
    mates_sum = np.bincount(pen_of, weights=a_s)[pen_of] - a_s
    pen_effect = rng.normal(size=int(pen_of.max()) + 1 if len(pen_of) else 0) * np.sqrt(pen)
    y = 10.0 + a_d + mates_sum + pen_effect[pen_of] + rng.normal(size=len(ids)) * np.sqrt(residual)
    records = pd.DataFrame({"id": ids, "pen": [f"P{p:05d}" for p in pen_of], "y": y})
    truth = {"direct": direct, "social": social, "cov_ds": cov_ds, "pen": pen, "residual": residual}
    return SimulatedPopulation(pedigree=base.pedigree, records=records, breeding_values=base.breeding_values,
                               maternal_values=base.maternal_values, parameters=truth)
