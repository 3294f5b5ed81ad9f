"""REML speed targets of issue 4, measured in one run and printed as a table.

    python benchmarks/bench_reml.py            # all three problems
    python benchmarks/bench_reml.py small      # only the 3,000-animal model

Each row: problem, size (equations), seconds for ``estimate_variances`` (the REML
optimisation: every factorisation it needs), seconds for the whole ``fit`` when run
(REML + standard errors + PEV + Satterthwaite information, as ``fit`` composes them),
peak resident memory of the process so far (MB), the target and PASS/FAIL.
"""

from __future__ import annotations

import resource
import sys
import time
import warnings

import numpy as np
import pandas as pd

import mixedblup as mb
from mixedblup.api import resolve_covariances
from mixedblup.design import build_design
from mixedblup.estimate import estimate_variances
from mixedblup.formula import parse_formula
from mixedblup.mme import cross_products
from mixedblup.simulate import simulate_population


def _prepare(formula, data, cov):
    spec = parse_formula(formula, data.columns)
    covs = resolve_covariances(spec, cov)
    design = build_design(spec, data, levels={n: s.labels for n, s in covs.structures.items()},
                          joint=covs.joint)
    cp = cross_products(design, [covs.structures[t.name].bind(t.levels) for t in design.terms])
    return design, cp


def _run(name, formula, data, cov, target, full_fit):
    t0 = time.perf_counter()
    design, cp = _prepare(formula, data, cov)
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sigmas, s2, opt = estimate_variances(cp, design, method="REML")
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS so far
    fit_s = np.nan
    if full_fit:
        t3 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mb.fit(formula, data, cov=cov)
        fit_s = time.perf_counter() - t3
    return {"problem": name, "equations": cp.size, "setup_s": round(t1 - t0, 2),
            "reml_s": round(t2 - t1, 2), "evaluations": opt.evaluations, "fit_s": round(fit_s, 2),
            "peak_MB": round(peak), "target_s": target,
            "result": "PASS" if (t2 - t1) < target else "FAIL",
            "estimates": ", ".join(f"{np.diag(s).round(4).tolist()}" for s in sigmas) + f", e={s2:.4f}"}


def small_animal():
    sim = simulate_population(3000, n_generations=5, n_herds=60, sires_per_generation=60,
                              recorded_fraction=1.0, records_per_animal=2, seed=1)
    ped = mb.Pedigree.from_frame(sim.pedigree, id="id", sire="sire", dam="dam")
    return "animal model 3,000 animals", "y ~ herd_year + (1|id)", sim.records, {"id": ped}, 1.0


def large_animal():
    sim = simulate_population(100_000, n_generations=10, n_herds=100, sires_per_generation=200,
                              recorded_fraction=0.9, records_per_animal=2, pe=0.1, seed=1)
    ped = mb.Pedigree.from_frame(sim.pedigree, id="id", sire="sire", dam="dam")
    return ("animal model 100,000 animals + pe", "y ~ herd_year + (1|id) + (1|pe)", sim.records,
            {"id": ped}, 120.0)


def insteval_like(seed=0):
    rng = np.random.default_rng(seed)
    n, ns, nd, ndept = 73_421, 2_972, 1_128, 14
    s = rng.integers(0, ns, n)
    d = rng.integers(0, nd, n)
    dept = rng.integers(0, ndept, nd)[d]
    service = rng.integers(0, 2, n)
    y = (3 + 0.3 * rng.normal(size=ns)[s] + 0.5 * rng.normal(size=nd)[d]
         + 0.1 * rng.normal(size=2 * ndept)[dept * 2 + service] + rng.normal(size=n))
    data = pd.DataFrame({"y": y, "s": s.astype(str), "d": d.astype(str), "dept": dept.astype(str),
                         "service": service.astype(str)})
    return ("InstEval-sized crossed (73,421 rows)", "y ~ service + (1|s) + (1|d) + (1|dept:service)",
            data, None, 2.0)


def run(which=("small", "insteval", "large"), full_fit=True):
    """Rows of the benchmark table (a list of dicts)."""
    makers = {"small": small_animal, "insteval": insteval_like, "large": large_animal}
    rows = []
    for key in which:
        name, formula, data, cov, target = makers[key]()
        rows.append(_run(name, formula, data, cov, target, full_fit and key != "large"))
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    return rows


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--no-fit"]
    which = tuple(args) or ("small", "insteval", "large")
    rows = run(which, full_fit="--no-fit" not in sys.argv)
    print()
    print(pd.DataFrame(rows).to_string(index=False))
