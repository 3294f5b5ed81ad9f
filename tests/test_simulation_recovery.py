"""Simulation recovery (slow): REML estimates from data simulated with known parameters.

Each test simulates a population with :func:`mixedblup.datasets.simulate` (or
:func:`mixedblup.simulate.simulate_social`) for several seeds, with sires chosen at
random (``select_sires=False``: selection on true breeding values, which the records do
not carry, would make REML biased), fits the model by REML and applies one criterion:

    for every variance component,  |mean over seeds of the estimates - truth|
                                   <= mean over seeds of their standard errors.

The standard errors are the asymptotic ones reported by ``fit`` (inverse of the average
information / Hessian of the REML criterion).  With k seeds the mean estimate has a
standard deviation of about SE / sqrt(k), so the criterion allows about sqrt(k) of those:
a biased estimator or wrongly scaled standard errors fail it, sampling noise does not.

Run with ``python -m pytest -m slow tests/test_simulation_recovery.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.simulate import simulate_social

pytestmark = pytest.mark.slow

SEEDS = (11, 12, 13, 14)


def components(res: mb.MixedModelResults) -> pd.DataFrame:
    """Estimates and standard errors keyed ``group/term1/term2``."""
    vc = res.variance_components
    key = vc["group"].astype(str) + "/" + vc["term1"].astype(str) + "/" + vc["term2"].astype(str)
    return pd.DataFrame({"estimate": vc["estimate"].to_numpy(), "std_error": vc["std_error"].to_numpy()},
                        index=key.to_numpy())


def check_recovery(fits: list[pd.DataFrame], truth: dict[str, float]) -> pd.DataFrame:
    """Apply the module's criterion to the components named in ``truth``."""
    est = pd.concat([f["estimate"] for f in fits], axis=1).loc[list(truth)]
    se = pd.concat([f["std_error"] for f in fits], axis=1).loc[list(truth)]
    summary = pd.DataFrame({"truth": pd.Series(truth), "mean_estimate": est.mean(axis=1),
                            "mean_se": se.mean(axis=1)})
    assert np.isfinite(summary.to_numpy()).all(), summary
    bad = (summary["mean_estimate"] - summary["truth"]).abs() > summary["mean_se"]
    assert not bad.any(), f"estimates off by more than their standard error:\n{summary}"
    return summary


def fit_quietly(*args, **kwargs) -> mb.MixedModelResults:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mb.fit(*args, **kwargs)


def pedigree(frame: pd.DataFrame, *recorded: pd.Series) -> mb.Pedigree:
    """The pedigree pruned to the animals informative about ``recorded`` (exact: the
    likelihood and the BLUPs of kept animals are those of the full pedigree)."""
    full = mb.Pedigree.from_frame(frame, id="id", sire="sire", dam="dam")
    keep = pd.concat(recorded).unique()
    return full.prune(keep[keep != "0"])


COMMON = {"n_generations": 5, "n_herds": 20, "sires_per_generation": 20, "select_sires": False,
          "unknown_parent_rate": 0.03}


def test_animal_model_recovery():
    """y = mu + herd-year + a + e; additive 0.3, herd-year 0.2, residual 0.5 (1,200 animals,
    both sexes recorded, one record each)."""
    fits = []
    for seed in SEEDS:
        pop = mb.datasets.simulate(1200, recorded_sex="both", recorded_fraction=0.9, additive=0.3,
                                   herd_year=0.2, residual=0.5, seed=seed, **COMMON)
        res = fit_quietly("y ~ 1 + (1|herd_year) + (1|id)", pop.records,
                          cov={"id": pedigree(pop.pedigree, pop.records["id"])})
        fits.append(components(res))
    check_recovery(fits, {"id/(Intercept)/": 0.3, "herd_year/(Intercept)/": 0.2, "Residual//": 0.5})


def test_repeatability_model_recovery():
    """Three records per cow sharing a permanent environment: additive 0.3, PE 0.15,
    herd-year 0.2, residual 0.4 (1,000 animals)."""
    fits = []
    for seed in SEEDS:
        pop = mb.datasets.simulate(1000, recorded_sex="F", recorded_fraction=0.9, records_per_animal=3,
                                   additive=0.3, pe=0.15, herd_year=0.2, residual=0.4, seed=seed, **COMMON)
        res = fit_quietly("y ~ 1 + (1|herd_year) + (1|id) + (1|pe)", pop.records,
                          cov={"id": pedigree(pop.pedigree, pop.records["id"])})
        fits.append(components(res))
    check_recovery(fits, {"id/(Intercept)/": 0.3, "pe/(Intercept)/": 0.15, "herd_year/(Intercept)/": 0.2,
                          "Residual//": 0.4})


def test_maternal_model_recovery():
    """Direct and maternal genetic effects sharing A: direct 0.3, maternal 0.15,
    covariance -0.05, herd-year 0.2, residual 0.5 (records of calves with a known dam)."""
    fits = []
    for seed in SEEDS:
        pop = mb.datasets.simulate(1500, recorded_sex="both", recorded_fraction=0.9, additive=0.3,
                                   maternal=0.15, cov_am=-0.05, herd_year=0.2, residual=0.5, seed=seed,
                                   **COMMON)
        rec = pop.records[pop.records["dam"] != "0"]
        res = fit_quietly("y ~ 1 + (1|herd_year) + (1|id) + (1|dam)", rec,
                          cov={("id", "dam"): pedigree(pop.pedigree, rec["id"], rec["dam"])})
        fits.append(components(res))
    check_recovery(fits, {"id,dam/id/": 0.3, "id,dam/dam/": 0.15, "id,dam/id/dam": -0.05,
                          "herd_year/(Intercept)/": 0.2, "Residual//": 0.5})


def test_social_model_recovery():
    """Direct and social genetic effects in pens of five: direct 0.3, social 0.05,
    covariance 0.02, residual 0.5 (800 animals)."""
    fits = []
    for seed in SEEDS:
        pop = simulate_social(800, group_size=5, direct=0.3, social=0.05, cov_ds=0.02, residual=0.5,
                              recorded_fraction=0.9, seed=seed, **COMMON)
        res = fit_quietly("y ~ 1 + (1|id) + (1|mates(id, pen))", pop.records,
                          cov={("id", "mates(id, pen)"): pedigree(pop.pedigree, pop.records["id"])})
        fits.append(components(res))
    name = "id,mates(id,pen)"
    check_recovery(fits, {f"{name}/id/": 0.3, f"{name}/mates(id,pen)/": 0.05,
                          f"{name}/id/mates(id,pen)": 0.02, "Residual//": 0.5})
