"""Benchmark problems: data, the mixedblup run and the alternatives' runs.

Each run happens in a fresh subprocess (see ``run_all.py``), so peak memory is the
process's own: the kernel's resident-set high-water mark (``VmHWM``), reset just before
the timed stage (``/proc/self/clear_refs``) so data simulation does not count.  Times are
wall-clock seconds of the timed stage only (model fitting, or each pedigree stage).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------- memory


def reset_peak() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak resident set size (MB) since the last :func:`reset_peak` (or process start)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- data


def classic(name: str) -> pd.DataFrame:
    import mixedblup as mb

    return mb.datasets.load(name)


def insteval_like(seed: int = 1) -> pd.DataFrame:
    """A crossed design with the structure of lme4's InstEval.

    73,421 ratings; 2,972 students x 1,128 instructors; each instructor belongs to one of
    14 departments and students rate mostly (85%) in their own department; ``service``
    (2 levels) varies by rating, so ``dept:service`` has 28 levels.  Variances close to lme4's fit of InstEval (s 0.105, d 0.262, dept:service
    0.005, residual 1.385).
    """
    rng = np.random.default_rng(seed)
    n, ns, nd, ndept = 73_421, 2_972, 1_128, 14
    # uneven activity: some students rate many lectures, some instructors teach many;
    # students mostly rate lectures of their own department (85%), as in InstEval
    s = rng.choice(ns, n, p=_skewed(ns, rng))
    s[:ns] = np.arange(ns)
    dept_of_d = np.concatenate([np.arange(ndept), rng.integers(0, ndept, nd - ndept)])
    home = rng.integers(0, ndept, ns)
    row_dept = np.where(rng.random(n) < 0.85, home[s], rng.integers(0, ndept, n))
    w_d = _skewed(nd, rng)
    d = np.empty(n, dtype=np.int64)
    for k in range(ndept):
        rows = np.flatnonzero(row_dept == k)
        members = np.flatnonzero(dept_of_d == k)
        d[rows] = rng.choice(members, len(rows), p=w_d[members] / w_d[members].sum())
    d[:nd] = np.arange(nd)  # every instructor rated at least once
    dept = dept_of_d[d]
    service = (rng.random(n) < 0.43).astype(int)
    u_s = rng.normal(0, np.sqrt(0.105), ns)
    u_d = rng.normal(0, np.sqrt(0.262), nd)
    u_ds = rng.normal(0, np.sqrt(0.005), ndept * 2)
    y = 3.2 - 0.08 * service + u_s[s] + u_d[d] + u_ds[dept * 2 + service] + rng.normal(0, np.sqrt(1.385), n)
    return pd.DataFrame({
        "y": np.clip(np.round(y), 1, 5),
        "s": pd.Series([f"S{i:04d}" for i in s], dtype=object),
        "d": pd.Series([f"D{i:04d}" for i in d], dtype=object),
        "dept": pd.Series([f"{i + 1:02d}" for i in dept], dtype=object),
        "service": pd.Series(np.where(service == 1, "1", "0"), dtype=object),
    })


def _skewed(n: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.gamma(1.5, 1.0, n)
    return w / w.sum()


def animal_population(n_animals: int, n_records: int, *, seed: int = 1, records_per_animal: int = 1,
                      n_herds: int = 50, n_generations: int = 10, pe: float = 0.0,
                      maternal: float = 0.0, cov_am: float = 0.0, recorded_sex: str = "both",
                      sires_per_generation: int = 200):
    """Pedigree and records from :func:`mixedblup.datasets.simulate` with about ``n_records`` records."""
    import mixedblup as mb

    eligible = n_animals * (1 - 1 / n_generations) * (1.0 if recorded_sex == "both" else 0.5)
    frac = min(1.0, n_records / records_per_animal / eligible)
    pop = mb.datasets.simulate(
        n_animals, n_generations=n_generations, n_herds=n_herds, records_per_animal=records_per_animal,
        recorded_fraction=frac, recorded_sex=recorded_sex, pe=pe, maternal=maternal, cov_am=cov_am,
        sires_per_generation=sires_per_generation, seed=seed,
    )
    return pop


# --------------------------------------------------------------------------- problem table


@dataclass
class Problem:
    """One benchmark problem.

    Attributes
    ----------
    name : str
        Short key (``--only`` selects by it).
    size : str
        Human-readable size.
    tools : tuple of str
        Which programs are run: ``mixedblup``, ``statsmodels``, ``lme4``.
    target : str
        The target from the issues, as text (empty when none).
    full_only : bool
        Only with ``--full``.
    timeout : float
        Seconds before a run is stopped and reported as a timeout.
    target_seconds, target_mb : float or None
        Numbers the PASS/FAIL verdict compares with.
    target_ratio : float or None
        For "at most 1/10 of lme4's time": mixedblup time / lme4 time must be below it.
    reference_seconds : float or None
        The alternative's time quoted in the issue, used when the alternative is absent.
    notes : dict
        Tool -> note printed instead of running it (e.g. why statsmodels is skipped).
    """

    name: str
    size: str
    tools: tuple[str, ...]
    target: str = ""
    full_only: bool = False
    timeout: float = 600.0
    target_seconds: float | None = None
    target_mb: float | None = None
    target_ratio: float | None = None
    reference_seconds: float | None = None
    notes: dict[str, str] = field(default_factory=dict)


CLASSIC = {
    "sleepstudy": ("sleepstudy", "Reaction ~ Days + (Days|Subject)",
                   dict(formula="Reaction ~ Days", groups="Subject", re_formula="~Days")),
    "dyestuff": ("dyestuff", "Yield ~ 1 + (1|Batch)", dict(formula="Yield ~ 1", groups="Batch")),
    "penicillin": ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)",
                   dict(formula="diameter ~ 1", groups="one", re_formula="0",
                        vc_formula={"plate": "0 + C(plate)", "sample": "0 + C(sample)"})),
    "pastes": ("pastes", "strength ~ 1 + (1|batch/cask)",
               dict(formula="strength ~ 1", groups="batch", re_formula="1",
                    vc_formula={"cask": "0 + C(cask)"})),
}

PEDIGREE_SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
PCG_SIZES = (10_000, 100_000, 1_000_000, 10_000_000)


def problems() -> list[Problem]:
    """Every problem, in the order of the printed table."""
    out = [
        Problem(f"classic_{k}", f"{v[0]}: {v[1]}", ("mixedblup", "statsmodels", "lme4"), timeout=300)
        for k, v in CLASSIC.items()
    ]
    out.append(Problem(
        "insteval", "73,421 rows; 2,972 x 1,128 crossed + 28-level dept:service; REML",
        ("mixedblup", "lme4", "statsmodels"), target="REML <= 1/10 of lme4's time",
        target_ratio=0.1, reference_seconds=21.0, timeout=600,
        notes={"statsmodels": "skipped: did not finish within 30 min (issue 4); run with --full to try"},
    ))
    out.append(Problem(
        "animal_3k", "3,000 animals, 2,400 records, y ~ 1 + (1|id) with A; REML",
        ("mixedblup", "lme4"), target="< 1 s", target_seconds=1.0, timeout=300,
        notes={"lme4": "lme4 through the Cholesky factor of A: about 6 min (issue 4); --full runs it"},
    ))
    out.append(Problem(
        "animal_100k", "100,000 animals, 80,000 records, herd-year fixed (~2,000), A + PE; REML",
        ("mixedblup",), target="< 120 s and 4 GB", target_seconds=120.0, target_mb=4096, timeout=240,
    ))
    out.append(Problem(
        "maternal_50k", "50,000 animals, direct + maternal sharing A (unstructured 2x2); REML",
        ("mixedblup",), target="< 120 s", target_seconds=120.0, timeout=240,
    ))
    for n in PEDIGREE_SIZES:
        big = n >= 10_000_000
        out.append(Problem(
            f"pedigree_{n:.0e}".replace("+0", ""), f"{n:,} animals, 20 generations, 3% unknown, shuffled, string IDs",
            ("mixedblup",),
            target={1_000_000: "<= 10 s and 2 GB", 10_000_000: "< 120 s and 8 GB"}.get(n, ""),
            target_seconds={1_000_000: 10.0, 10_000_000: 120.0}.get(n),
            target_mb={1_000_000: 2048.0, 10_000_000: 8192.0}.get(n),
            full_only=big, timeout=1800 if big else 600,
        ))
    for n in PCG_SIZES:
        big = n >= 10_000_000
        out.append(Problem(
            f"pcg_{n:.0e}".replace("+0", ""),
            f"{n:,} animals, {int(n * 0.6):,} records, ~{max(n // 33, 30):,} herd-years; known variances",
            ("mixedblup",),
            target={1_000_000: "<= 15 s and 1.5 GB", 10_000_000: "< 600 s and 8 GB"}.get(n, ""),
            target_seconds={1_000_000: 15.0, 10_000_000: 600.0}.get(n),
            target_mb={1_000_000: 1536.0, 10_000_000: 8192.0}.get(n),
            full_only=big, timeout=2400 if big else 600,
        ))
    return out


# --------------------------------------------------------------------------- runners (in the worker)


def _fit_quietly(*args: Any, **kwargs: Any) -> Any:
    import mixedblup as mb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mb.fit(*args, **kwargs)


def run_mixedblup(problem: str) -> dict[str, Any]:
    """Build the problem's data, then time mixedblup on it."""
    import mixedblup as mb

    if problem.startswith("classic_"):
        dataset, formula, _ = CLASSIC[problem.removeprefix("classic_")]
        data = classic(dataset)
        _fit_quietly(formula, data)  # warm-up: imports and compiled kernels are not the benchmark
        return _timed(lambda: _fit_quietly(formula, data), _reml_detail)
    if problem == "insteval":
        data = insteval_like()
        _warm_up()
        return _timed(lambda: _fit_quietly("y ~ service + (1|s) + (1|d) + (1|dept:service)", data), _reml_detail)
    if problem == "animal_3k":
        pop = animal_population(3_000, 2_400, n_generations=10, n_herds=20, sires_per_generation=30)
        ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
        _warm_up()
        return _timed(lambda: _fit_quietly("y ~ 1 + (1|id)", pop.records, cov={"id": ped}), _reml_detail)
    if problem == "animal_100k":
        pop = animal_population(100_000, 80_000, records_per_animal=2, n_herds=100, pe=0.1, recorded_sex="F")
        ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
        _warm_up()
        out = _timed(lambda: _fit_quietly("y ~ herd_year + (1|id) + (1|pe)", pop.records, cov={"id": ped}),
                     _reml_detail)
        out["detail"] = f"{len(pop.records):,} records, {pop.records['herd_year'].nunique():,} herd-years; " + out["detail"]
        return out
    if problem == "maternal_50k":
        pop = animal_population(50_000, 40_000, n_herds=100, maternal=0.1, cov_am=-0.02, recorded_sex="both")
        ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
        rec = pop.records[pop.records["dam"] != "0"]  # a maternal term needs a known dam
        _warm_up()
        return _timed(lambda: _fit_quietly("y ~ herd_year + (1|id) + (1|dam)", rec, cov={("id", "dam"): ped}),
                      _reml_detail)
    if problem.startswith("pedigree_"):
        return _pedigree_build(int(float(problem.removeprefix("pedigree_"))))
    if problem.startswith("pcg_"):
        return _pcg(int(float(problem.removeprefix("pcg_"))))
    raise KeyError(problem)


def _warm_up() -> None:
    """Untimed warm-up: imports and loading every compiled kernel a large fit uses.

    Compiled (numba) kernels are loaded from the on-disk cache on their first call in a
    process (about a second for the pedigree, sparse LDL, selected-inverse and Schur
    kernels together); a dyestuff fit alone touches none of them.  So besides it, one
    small pedigree animal model and one small crossed design run here, each with more than
    ``ai_reml.AI_MIN_SIZE`` equations, so the sparse LDL / Schur back ends and AI-REML
    are warmed too.  The data are simulated and tiny; nothing is reused by the timed fit.
    """
    import mixedblup as mb

    _fit_quietly("Yield ~ 1 + (1|Batch)", classic("dyestuff"))
    pop = animal_population(2_600, 2_000, n_generations=5, n_herds=10, sires_per_generation=20, seed=99)
    ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
    _fit_quietly("y ~ 1 + (1|id)", pop.records, cov={"id": ped})
    rng = np.random.default_rng(99)
    n = 6_000
    s, d = rng.integers(0, 2_100, n), rng.integers(0, 300, n)
    data = pd.DataFrame({"y": rng.normal(size=n) + rng.normal(size=2_100)[s] + rng.normal(size=300)[d],
                         "s": s.astype(str), "d": d.astype(str)})
    _fit_quietly("y ~ 1 + (1|s) + (1|d)", data)


def _timed(run: Callable[[], Any], describe: Callable[[Any], str]) -> dict[str, Any]:
    import gc

    gc.collect()
    reset_peak()
    load = os.getloadavg()[0]
    c0 = time.process_time()
    t0 = time.perf_counter()
    res = run()
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "load": load, "peak_mb": peak_mb(), "detail": describe(res)}


def _reml_detail(res: Any) -> str:
    opt = getattr(res, "optimizer", None)
    evals = getattr(opt, "evaluations", None) if opt is not None else None
    vc = res.variance_components
    parts = [f"{g}{'' if not t2 else ''} {v:.4g}" for g, t2, v in zip(vc["group"], vc["term2"], vc["estimate"])]
    return f"logLik {res.loglik:.3f}; evals {evals}; " + ", ".join(parts)


def _pedigree_build(n: int) -> dict[str, Any]:
    import gc

    import mixedblup as mb

    pop = mb.datasets.simulate(n, n_generations=20, unknown_parent_rate=0.03, shuffle=True, string_ids=True,
                               recorded_fraction=0.0, seed=1)
    tmp = Path(tempfile.mkdtemp(prefix="mb_ped_"))
    try:
        path = tmp / "ped.csv"
        pop.pedigree[["id", "sire", "dam"]].to_csv(path, index=False)
        del pop
        gc.collect()
        # warm-up on a tiny pedigree: numba compilation is not the benchmark
        small = mb.Pedigree.from_frame(classic("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
        small.inbreeding(), small.a_inverse()
        reset_peak()
        stages = {}
        load = os.getloadavg()[0]
        c0 = time.process_time()
        t0 = time.perf_counter()
        reader = getattr(mb, "read_pedigree", None)
        if reader is not None:
            ped = reader(path, id="id", sire="sire", dam="dam")
            stages["read+check+sort"] = time.perf_counter() - t0
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            t1 = time.perf_counter()
            stages["read"] = t1 - t0
            ped = mb.Pedigree.from_frame(frame, id="id", sire="sire", dam="dam")
            stages["check+sort"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        F = ped.inbreeding()
        t3 = time.perf_counter()
        stages["inbreeding"] = t3 - t2
        ped.a_inverse()
        stages["A-inverse"] = time.perf_counter() - t3
        total = time.perf_counter() - t0
        detail = "; ".join(f"{k} {v:.2f} s" for k, v in stages.items()) + f"; mean F {float(F.mean()):.4f}"
        return {"seconds": total, "cpu_seconds": time.process_time() - c0, "load": load, "peak_mb": peak_mb(),
                "detail": detail, "stages": stages}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pcg(n: int) -> dict[str, Any]:
    import inspect

    import mixedblup as mb

    n_herds = max(n // 33 // 21, 2)
    pop = animal_population(n, int(n * 0.6), n_herds=n_herds, n_generations=10, recorded_sex="both",
                            sires_per_generation=max(200, n // 5000))
    ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
    rec = pop.records
    variances = {"id": 0.3, "residual": 0.5}
    params = inspect.signature(mb.fit).parameters
    if "solver" in params:
        _fit_quietly("Yield ~ 1 + (1|Batch)", classic("dyestuff"), variances={"Batch": 1.0, "residual": 1.0},
                     solver="pcg")
        run = lambda: _fit_quietly("y ~ 0 + herd_year + (1|id)", rec, cov={"id": ped}, variances=variances,  # noqa: E731
                                   solver="pcg")
        how = "fit(solver='pcg')"
    else:
        from mixedblup import iterative

        def solve(records: pd.DataFrame, pedigree: Any) -> Any:
            design = iterative.design_from_codes(records, "y", fixed=["herd_year"], random={"id": pedigree.ids})
            return iterative.solve_pcg(design, [pedigree], [np.array([[0.3]])], 0.5)

        small = animal_population(2_000, 1_200, n_herds=5, recorded_sex="both")
        solve(small.records, mb.Pedigree.from_frame(small.pedigree, id="id", sire="sire", dam="dam"))  # compile
        run = lambda: solve(rec, ped)  # noqa: E731
        how = "iterative.solve_pcg(design_from_codes(...))"
    out = _timed(run, lambda r: _pcg_detail(r))
    out["detail"] = f"{how}; {len(rec):,} records, {rec['herd_year'].nunique():,} herd-years; " + out["detail"]
    return out


def _pcg_detail(r: Any) -> str:
    info = getattr(r, "solver_info", None) or r
    it = getattr(info, "iterations", None)
    acc = getattr(info, "accuracy", None)
    return f"iterations {it}, accuracy {acc:.1e}" if acc is not None else f"iterations {it}"


# --------------------------------------------------------------------------- statsmodels


def run_statsmodels(problem: str) -> dict[str, Any]:
    """statsmodels MixedLM on the same data (REML)."""
    import statsmodels.formula.api as smf

    if problem.startswith("classic_"):
        dataset, _, spec = CLASSIC[problem.removeprefix("classic_")]
        data = classic(dataset).assign(one=1)
    elif problem == "insteval":
        data = insteval_like().assign(one=1)
        spec = dict(formula="y ~ service", groups="one", re_formula="0",
                    vc_formula={"s": "0 + C(s)", "d": "0 + C(d)", "ds": "0 + C(dept):C(service)"})
    else:
        raise KeyError(problem)
    spec = dict(spec)
    formula = spec.pop("formula")

    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return smf.mixedlm(formula, data, **spec).fit(reml=True)

    run()
    return _timed(run, lambda r: f"logLik {r.llf:.3f}; converged {r.converged}")


# --------------------------------------------------------------------------- lme4 through Rscript

R_PEAK = """
peak_reset <- function() try(writeLines("5", "/proc/self/clear_refs"), silent = TRUE)
peak_mb <- function() { s <- readLines("/proc/self/status"); as.numeric(strsplit(trimws(sub("VmHWM:", "", s[grepl("^VmHWM", s)])), " +")[[1]][1]) / 1024 }
"""


def rscript() -> str | None:
    """Path of Rscript when R and lme4 are installed, else None."""
    exe = shutil.which("Rscript")
    if exe is None:
        return None
    ok = subprocess.run([exe, "-e", "quit(status = !requireNamespace('lme4', quietly = TRUE))"],
                        capture_output=True, timeout=120)
    return exe if ok.returncode == 0 else None


def run_lme4(problem: str, timeout: float) -> dict[str, Any]:
    """lme4's lmer (REML) through Rscript, timed inside R."""
    exe = rscript()
    if exe is None:
        raise RuntimeError("Rscript with lme4 not found")
    tmp = Path(tempfile.mkdtemp(prefix="mb_lme4_"))
    try:
        if problem.startswith("classic_"):
            dataset, formula, _ = CLASSIC[problem.removeprefix("classic_")]
            data = classic(dataset)
            body = f"fit_once <- function() lmer({formula}, data = d, REML = TRUE)"
        elif problem == "insteval":
            data = insteval_like()
            body = "fit_once <- function() lmer(y ~ service + (1|s) + (1|d) + (1|dept:service), data = d, REML = TRUE)"
        elif problem == "animal_3k":
            pop = animal_population(3_000, 2_400, n_generations=10, n_herds=20, sires_per_generation=30)
            import mixedblup as mb

            ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
            frame = ped.to_frame()[["id", "sire", "dam"]].fillna("0")
            frame.to_csv(tmp / "ped.csv", index=False)
            data = pop.records[["id", "y"]]
            body = _R_CHOLESKY_TRICK
        else:
            raise KeyError(problem)
        chars = [c for c in data.columns if data[c].dtype == object or str(data[c].dtype) in ("str", "string")]
        data.to_csv(tmp / "data.csv", index=False)
        classes = ", ".join(f'"{c}" = "character"' for c in chars)
        script = f"""
suppressMessages(library(lme4))
{R_PEAK}
d <- read.csv("{tmp / 'data.csv'}", colClasses = c({classes}))
{body}
{"invisible(fit_once())  # warm-up" if problem.startswith("classic_") else "# no warm-up: R compiles nothing"}
gc(); peak_reset()
t <- system.time(fit <- fit_once())[["elapsed"]]
cat(sprintf("RESULT %.6f %.1f %.6f\\n", t, peak_mb(), as.numeric(logLik(fit))))
"""
        (tmp / "run.R").write_text(script)
        proc = subprocess.run([exe, str(tmp / "run.R")], capture_output=True, text=True, timeout=timeout, cwd=tmp)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
        if line is None:
            raise RuntimeError(f"Rscript failed: {proc.stderr.strip()[-500:]}")
        _, t, mem, ll = line.split()
        return {"seconds": float(t), "peak_mb": float(mem), "detail": f"logLik {float(ll):.3f}"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_R_CHOLESKY_TRICK = r"""
ped <- read.csv("ped.csv", colClasses = "character")
n <- nrow(ped); idx <- setNames(seq_len(n), ped$id)
s <- ifelse(ped$sire == "0", 0L, idx[ped$sire]); m <- ifelse(ped$dam == "0", 0L, idx[ped$dam])
fit_once <- function() {
  # the tabular method for A (parents precede offspring in ped), then Z* = Z L (lme4qtl's trick)
  A <- matrix(0, n, n)
  for (i in seq_len(n)) {
    if (i > 1) {
      j <- seq_len(i - 1)
      a <- 0.5 * ((if (s[i] > 0) A[j, s[i]] else 0) + (if (m[i] > 0) A[j, m[i]] else 0))
      A[j, i] <- a; A[i, j] <- a
    }
    A[i, i] <- 1 + (if (s[i] > 0 && m[i] > 0) 0.5 * A[s[i], m[i]] else 0)
  }
  dimnames(A) <- list(ped$id, ped$id)
  lmod <- lFormula(y ~ 1 + (1|id), data = d, REML = TRUE, control = lmerControl(check.nobs.vs.nlev = "ignore", check.nobs.vs.nRE = "ignore"))
  lev <- levels(lmod$reTrms$flist$id)
  L <- t(chol(A[lev, lev]))                      # A among the recorded animals
  lmod$reTrms$Zt <- as(Matrix::t(L) %*% lmod$reTrms$Zt, "CsparseMatrix")
  devfun <- do.call(mkLmerDevfun, lmod)
  opt <- optimizeLmer(devfun)
  mkMerMod(environment(devfun), opt, lmod$reTrms, fr = lmod$fr)
}
"""
