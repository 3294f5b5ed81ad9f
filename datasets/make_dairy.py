"""Generate the bundled simulated dairy data set (``dairy`` and ``dairy_pedigree``).

Run from the repository root::

    python datasets/make_dairy.py

It rewrites ``datasets/dairy.csv`` and ``datasets/dairy_pedigree.csv`` exactly (fixed seed;
the numbers depend only on NumPy's PCG64 generator and this script).  Provenance and the
true parameters are in ``datasets/README.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixedblup.simulate import simulate_population

SEED = 20240607
PARAMETERS = dict(additive=0.30, maternal=0.08, cov_am=-0.02, pe=0.10, herd_year=0.15, residual=0.40)


def make(out: Path) -> None:
    """Simulate and write the two CSV files into ``out``."""
    pop = simulate_population(
        4000, n_generations=8, n_herds=40, sires_per_generation=20, unknown_parent_rate=0.03,
        recorded_fraction=0.8, records_per_animal=3, years_per_generation=2, shuffle=True,
        seed=SEED, **PARAMETERS,
    )
    rng = np.random.default_rng(SEED + 1)
    rec = pop.records
    # culling: every cow has a first lactation, 80% a second, 55% a third
    keep_prob = np.array([1.0, 0.8, 0.55])[rec["parity"].to_numpy() - 1]
    alive = rng.random(len(rec)) < keep_prob
    # a cow culled after lactation p has no later lactation either
    culled = ~alive
    first_culled = rec.assign(c=culled).groupby("id", sort=False)["c"].cummax()
    rec = rec[~first_culled.to_numpy()].reset_index(drop=True)
    rec = rec.rename(columns={"id": "animal"})
    rec["y"] = rec["y"].round(3)
    rec["parity"] = rec["parity"].astype(str)
    rec = rec[["animal", "dam", "herd", "year", "herd_year", "parity", "pe", "y"]]
    ped = pop.pedigree.rename(columns={"id": "animal"})[["animal", "sire", "dam", "sex", "herd", "generation"]]
    ped["herd"] = ped["herd"].map(lambda h: f"H{h:04d}")
    rec.to_csv(out / "dairy.csv", index=False)
    ped.to_csv(out / "dairy_pedigree.csv", index=False)


if __name__ == "__main__":
    make(Path(__file__).resolve().parent)
