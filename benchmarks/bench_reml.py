"""REML speed targets of issues 4 and 6, measured in one run and printed as a table.

    python benchmarks/bench_reml.py                       # all problems, default optimiser
    python benchmarks/bench_reml.py animal_3k insteval    # a selection
    python benchmarks/bench_reml.py --optimizer cobyqa    # force the derivative-free optimiser
    python benchmarks/bench_reml.py --repeat 3            # median of three REML runs
    python benchmarks/bench_reml.py insteval --lme4       # + lme4 on the same data (Rscript)
    python benchmarks/bench_reml.py --no-fit              # REML only, no full fit

The problems are those of ``problems.py`` (the same data as ``run_all.py``).  Each row:
problem, equations, seconds to build the equations (``setup_s``), seconds for
``estimate_variances`` (the REML optimisation: every factorisation it needs; median over
``--repeat`` runs; ``reml_cpu_s`` the process CPU seconds), the optimiser and its evaluations (factorisations) and iterations,
seconds for the whole ``fit`` (REML, PEV; inference is computed lazily), peak resident
memory of the process so far (MB), the target and PASS/FAIL.  The warm-up (imports and
loading the compiled kernels) runs before any clock starts.  The machine's load average
is printed with every row: on a shared machine compare runs taken under the same load.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import problems as P

import mixedblup as mb

try:  # absent from versions before AI-REML (for before/after runs against an older tree)
    from mixedblup import ai_reml
except ImportError:  # pragma: no cover
    ai_reml = None
from mixedblup.api import resolve_covariances
from mixedblup.design import build_design
from mixedblup.estimate import estimate_variances
from mixedblup.formula import parse_formula
from mixedblup.mme import cross_products


def _prepare(formula, data, cov):
    spec = parse_formula(formula, data.columns)
    covs = resolve_covariances(spec, cov)
    design = build_design(spec, data, levels={n: s.labels for n, s in covs.structures.items()},
                          joint=covs.joint)
    cp = cross_products(design, [covs.structures[t.name].bind(t.levels) for t in design.terms])
    return design, cp


def animal_3k():
    pop = P.animal_population(3_000, 2_400, n_generations=10, n_herds=20, sires_per_generation=30)
    ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
    return "y ~ 1 + (1|id)", pop.records, {"id": ped}, 1.0


def insteval():
    return "y ~ service + (1|s) + (1|d) + (1|dept:service)", P.insteval_like(), None, None


def animal_100k():
    pop = P.animal_population(100_000, 80_000, records_per_animal=2, n_herds=100, pe=0.1, recorded_sex="F")
    ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
    return "y ~ herd_year + (1|id) + (1|pe)", pop.records, {"id": ped}, 120.0


def maternal_50k():
    pop = P.animal_population(50_000, 40_000, n_herds=100, maternal=0.1, cov_am=-0.02, recorded_sex="both")
    ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
    rec = pop.records[pop.records["dam"] != "0"]
    return "y ~ herd_year + (1|id) + (1|dam)", rec, {("id", "dam"): ped}, 120.0


MAKERS = {"animal_3k": animal_3k, "insteval": insteval, "animal_100k": animal_100k, "maternal_50k": maternal_50k}


def _reml(cp, design):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        sigmas, s2, opt = estimate_variances(cp, design, method="REML")
        return time.perf_counter() - t0, sigmas, s2, opt, time.process_time() - c0


def _run(key, repeat, full_fit, lme4):
    formula, data, cov, target = MAKERS[key]()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    design, cp = _prepare(formula, data, cov)
    setup = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        cp._cache.clear()  # every run pays for its own symbolic analysis
        try:
            from mixedblup import factor as _factor

            _factor._SYMBOLIC_CACHE.clear()
        except (ImportError, AttributeError):  # pragma: no cover
            pass
        runs.append(_reml(cp, design))
    reml_s = float(np.median([r[0] for r in runs]))
    cpu_s = float(np.median([r[4] for r in runs]))
    _, sigmas, s2, opt, _ = runs[-1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fit_s = np.nan
    if full_fit:
        t3 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mb.fit(formula, data, cov=cov)
        fit_s = time.perf_counter() - t3
    row = {"problem": key, "equations": cp.size, "load": round(load, 1), "setup_s": round(setup, 2),
           "reml_s": round(reml_s, 2), "reml_cpu_s": round(cpu_s, 2),
           "runs": " ".join(f"{r[0]:.2f}" for r in runs),
           "optimizer": opt.optimizer, "evals": opt.evaluations, "iters": opt.iterations,
           "fit_s": round(fit_s, 2), "peak_MB": round(peak), "-2logL": round(opt.criterion, 6),
           "estimates": ", ".join(f"{np.round(s, 4).tolist()}" for s in sigmas) + f", e={s2:.4f}"}
    if lme4 and key == "insteval":
        try:
            out = P.run_lme4("insteval", timeout=1800)
            row["lme4_s"] = round(out["seconds"], 2)
            row["ratio"] = round(out["seconds"] / reml_s, 1)
            row["result"] = "PASS" if reml_s <= 0.1 * out["seconds"] else "FAIL"
        except Exception as exc:  # noqa: BLE001 - reported in the table
            row["lme4_s"] = f"error: {exc}"
    if target is not None:
        row["target_s"] = target
        row["result"] = "PASS" if reml_s < target else "FAIL"
    return row


def run(which=tuple(MAKERS), repeat=1, full_fit=True, lme4=False):
    """Rows of the benchmark table (a list of dicts)."""
    P._warm_up()
    rows = []
    for key in which:
        rows.append(_run(key, repeat, full_fit, lme4))
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("problems", nargs="*", help=f"any of {', '.join(MAKERS)} (default: all)")
    parser.add_argument("--optimizer", choices=("default", "cobyqa", "ai"), default="default")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-fit", action="store_true")
    parser.add_argument("--lme4", action="store_true")
    args = parser.parse_args()
    unknown = [p for p in args.problems if p not in MAKERS]
    if unknown:
        parser.error(f"unknown problems {unknown}; choose from {list(MAKERS)}")
    if args.optimizer != "default" and ai_reml is None:
        parser.error("this mixedblup has no AI-REML (only the default optimiser)")
    if args.optimizer == "cobyqa":
        ai_reml.AI_MIN_SIZE = 10 ** 12
    elif args.optimizer == "ai":
        ai_reml.AI_MIN_SIZE = 0
    rows = run(tuple(args.problems) or tuple(MAKERS), args.repeat, not args.no_fit, args.lme4)
    print()
    print(pd.DataFrame(rows).to_string(index=False))
