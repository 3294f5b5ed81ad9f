"""The textbook pedigree methods in plain Python, NumPy and SciPy: what a user would otherwise run.

    python benchmarks/baseline_pedigree.py --check          # agreement with mixedblup (2,000 animals)
    python benchmarks/baseline_pedigree.py --sizes 1e4 1e5  # time the baseline alone
    python benchmarks/baseline_pedigree.py --r-check        # are R's nadiv / pedigreemm installed?

This is the comparison row of the pedigree benchmark (issue 3): a user without mixedblup
who needs inbreeding coefficients and ``A^-1`` for a large pedigree would write

* **reading and sorting** with pandas and NumPy: read the CSV as text, code the IDs as
  integers, find each animal's generation by repeated vectorised passes
  (``gen = max(gen[sire], gen[dam]) + 1`` until nothing changes) and renumber so that
  parents come before offspring.  No checks (duplicates, loops, sexes...) are made: a
  loop would make this pass run forever, which is why it stops after ``n`` passes;
* **inbreeding** by Meuwissen & Luo (1992), the method of Mrode's textbook and of most
  course notes, in plain Python loops: for each animal, trace its ancestors from the
  youngest to the oldest, accumulating the row of ``L`` (``A = L D L'``) in a work vector,
  and ``F_i = sum_j L_ij^2 d_j - 1``; full sibs that follow each other share ``F``;
* **A-inverse** by Henderson's (1976) rules with inbreeding (Quaas 1976), assembled as
  COO triplets with NumPy and summed by ``scipy.sparse`` (vectorised: this part is what a
  competent user writes and it is fast).

:func:`agree_with_mixedblup` checks ``F`` and ``A^-1`` against mixedblup (to 1e-10); the
benchmark (``bench_pedigree.py``, ``run_all.py``) calls it before timing anything.

R's nadiv (``makeAinv``: both ``F`` and ``A^-1``) and pedigreemm (``inbreeding``,
``getAInv``) are run through ``Rscript`` by :func:`run_r` when installed; neither is a
Debian package and CRAN cannot be reached from the development machine, so they are
usually reported as absent.
"""

from __future__ import annotations

import argparse
import heapq
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

UNKNOWN = ("0", "", "NA", ".")


# --------------------------------------------------------------------------- the textbook methods


def read_and_sort(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``id,sire,dam`` as text; return IDs and 1-based parent numbers (0 = unknown), parents first.

    Parents that are not listed as animals are treated as unknown (a user's shortcut;
    the simulated benchmark pedigrees list every parent).
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    return sort_pedigree(frame["id"].to_numpy(), frame["sire"].to_numpy(), frame["dam"].to_numpy())


def sort_pedigree(ids: Any, sires: Any, dams: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Code IDs as integers and renumber so that parents precede offspring (1-based, 0 = unknown)."""
    index = pd.Index(ids)
    s = index.get_indexer(pd.Index(sires))          # -1: unknown or not listed
    d = index.get_indexer(pd.Index(dams))
    n = len(index)
    gen = np.zeros(n, dtype=np.int64)
    has_s, has_d = s >= 0, d >= 0
    for _ in range(n):                              # one pass per generation of depth
        new = gen.copy()
        new[has_s] = np.maximum(new[has_s], gen[s[has_s]] + 1)
        new[has_d] = np.maximum(new[has_d], gen[d[has_d]] + 1)
        if np.array_equal(new, gen):
            break
        gen = new
    order = np.argsort(gen, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    sire = np.where(s >= 0, rank[np.maximum(s, 0)], 0)[order]
    dam = np.where(d >= 0, rank[np.maximum(d, 0)], 0)[order]
    return np.asarray(index)[order], sire, dam


def inbreeding_meuwissen_luo(sire: np.ndarray, dam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Meuwissen & Luo (1992) in plain Python: ``F`` and the Mendelian sampling variances ``d``.

    ``sire``/``dam`` are 1-based parent numbers (0 = unknown) with parents before offspring.
    """
    n = len(sire)
    s = [0] + [int(x) for x in sire]
    m = [0] + [int(x) for x in dam]
    F = [0.0] * (n + 1)
    F[0] = -1.0                                      # so that d_i has one formula for every case
    D = [0.0] * (n + 1)
    L = [0.0] * (n + 1)                              # the row of L being traced (work vector)
    heappush, heappop = heapq.heappush, heapq.heappop
    for i in range(1, n + 1):
        si, di = s[i], m[i]
        D[i] = 0.5 - 0.25 * (F[si] + F[di])
        if si == 0 or di == 0:
            F[i] = 0.0
            continue
        if si == s[i - 1] and di == m[i - 1]:        # a full sib of the previous animal
            F[i] = F[i - 1]
            continue
        fi = -1.0
        L[i] = 1.0
        heap = [-i]                                  # youngest first: all of j's offspring are done
        while heap:
            j = -heappop(heap)
            lj = L[j]
            L[j] = 0.0
            fi += lj * lj * D[j]
            half = 0.5 * lj
            p = s[j]
            if p:
                if L[p] == 0.0:
                    heappush(heap, -p)
                L[p] += half
            p = m[j]
            if p:
                if L[p] == 0.0:
                    heappush(heap, -p)
                L[p] += half
        F[i] = fi
    return np.array(F[1:]), np.array(D[1:])


def a_inverse_henderson(sire: np.ndarray, dam: np.ndarray, d: np.ndarray) -> sp.csr_matrix:
    """Henderson's rules with inbreeding (Quaas 1976), as COO triplets summed by scipy.sparse."""
    n = len(sire)
    i = np.arange(n)
    alpha = 1.0 / d
    s, m = sire - 1, dam - 1                         # 0-based, -1 unknown
    ks, km = s >= 0, m >= 0
    both = ks & km
    rows = [i, i[ks], s[ks], i[km], m[km], s[ks], m[km], s[both], m[both]]
    cols = [i, s[ks], i[ks], m[km], i[km], s[ks], m[km], m[both], s[both]]
    vals = [alpha, -alpha[ks] / 2, -alpha[ks] / 2, -alpha[km] / 2, -alpha[km] / 2,
            alpha[ks] / 4, alpha[km] / 4, alpha[both] / 4, alpha[both] / 4]
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n, n)).tocsr()


# --------------------------------------------------------------------------- agreement


def agree_with_mixedblup(n: int = 2_000, seed: int = 3) -> dict[str, float]:
    """Baseline vs mixedblup on a simulated pedigree with inbreeding; raises when they differ.

    Returns the largest absolute differences of ``F`` and of ``A^-1`` (after mapping by ID).
    """
    import warnings

    import mixedblup as mb

    pop = mb.datasets.simulate(n, n_generations=20, unknown_parent_rate=0.03, shuffle=True,
                               string_ids=True, recorded_fraction=0.0, seed=seed)
    frame = pop.pedigree[["id", "sire", "dam"]]
    ids, sire, dam = sort_pedigree(frame["id"].to_numpy(), frame["sire"].to_numpy(), frame["dam"].to_numpy())
    F, d = inbreeding_meuwissen_luo(sire, dam)
    ainv = a_inverse_henderson(sire, dam, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ped = mb.Pedigree.from_frame(frame, id="id", sire="sire", dam="dam")
    F_mb = ped.inbreeding().reindex(ids).to_numpy()
    pos = pd.Index(ids).get_indexer(pd.Index([str(x) for x in ped.ids]))
    if (pos < 0).any():
        raise AssertionError("baseline and mixedblup do not have the same animals")
    ainv_perm = ainv[pos][:, pos]
    diff_F = float(np.abs(F - F_mb).max())
    diff_A = float(abs(ainv_perm - ped.a_inverse()).max())
    if not (diff_F < 1e-10 and diff_A < 1e-10 and F.max() > 0):
        raise AssertionError(f"baseline disagrees with mixedblup: max |dF| {diff_F:.2e}, "
                             f"max |dA^-1| {diff_A:.2e}, max F {F.max():.3f}")
    return {"n": n, "max_abs_diff_F": diff_F, "max_abs_diff_Ainv": diff_A, "max_F": float(F.max()),
            "mean_F": float(F.mean())}


# --------------------------------------------------------------------------- timing


def time_stages(path: str | Path) -> dict[str, Any]:
    """Run the baseline on a CSV pedigree; seconds per stage (same stage names as bench_pedigree)."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    t1 = time.perf_counter()
    _ids, sire, dam = sort_pedigree(frame["id"].to_numpy(), frame["sire"].to_numpy(), frame["dam"].to_numpy())
    del frame
    t2 = time.perf_counter()
    F, d = inbreeding_meuwissen_luo(sire, dam)
    t3 = time.perf_counter()
    ainv = a_inverse_henderson(sire, dam, d)
    t4 = time.perf_counter()
    return {"stages": {"read": t1 - t0, "check+sort": t2 - t1, "inbreeding": t3 - t2, "A-inverse": t4 - t3},
            "seconds": t4 - t0, "cpu_seconds": time.process_time() - c0, "mean_F": float(F.mean()),
            "nnz": int(ainv.nnz)}


# --------------------------------------------------------------------------- R: nadiv, pedigreemm

R_PACKAGES = ("nadiv", "pedigreemm")

_R_SCRIPTS = {
    # nadiv::makeAinv sorts nothing itself: prepPed orders parents first (and adds missing parents)
    "nadiv": """
suppressMessages(library(nadiv))
t0 <- proc.time()[["elapsed"]]
p <- read.csv("{path}", colClasses = "character")
p[p == "0"] <- NA
t1 <- proc.time()[["elapsed"]]
p <- prepPed(p)
t2 <- proc.time()[["elapsed"]]
res <- makeAinv(p)
t3 <- proc.time()[["elapsed"]]
cat(sprintf("RESULT %.6f %.6f %.6f %.6f %.6f\\n", t1 - t0, t2 - t1, t3 - t2, 0, mean(res$f)))
""",
    "pedigreemm": """
suppressMessages(library(pedigreemm))
t0 <- proc.time()[["elapsed"]]
p <- read.csv("{path}", colClasses = "character")
p[p == "0"] <- NA
t1 <- proc.time()[["elapsed"]]
e <- editPed(sire = p$sire, dam = p$dam, label = p$id)
ped <- pedigree(sire = e$sire, dam = e$dam, label = e$label)
t2 <- proc.time()[["elapsed"]]
f <- inbreeding(ped)
t3 <- proc.time()[["elapsed"]]
ai <- getAInv(ped)
t4 <- proc.time()[["elapsed"]]
cat(sprintf("RESULT %.6f %.6f %.6f %.6f %.6f\\n", t1 - t0, t2 - t1, t3 - t2, t4 - t3, mean(f)))
""",
}


def r_available(package: str) -> str | None:
    """None when ``Rscript`` and the R package are installed, else why not."""
    exe = shutil.which("Rscript")
    if exe is None:
        return "Rscript not installed"
    ok = subprocess.run([exe, "-e", f"quit(status = !requireNamespace('{package}', quietly = TRUE))"],
                        capture_output=True, timeout=120, check=False)
    return None if ok.returncode == 0 else f"R package {package} not installed"


def run_r(package: str, path: str | Path, timeout: float = 1800.0) -> dict[str, Any]:
    """Time nadiv (inbreeding and A-inverse together, ``makeAinv``) or pedigreemm through Rscript."""
    why = r_available(package)
    if why:
        return {"status": "absent", "detail": why}
    with tempfile.TemporaryDirectory(prefix="mb_r_ped_") as tmp:
        script = Path(tmp) / "run.R"
        script.write_text(_R_SCRIPTS[package].replace("{path}", str(path)))
        try:
            proc = subprocess.run([shutil.which("Rscript"), str(script)], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "detail": f"stopped after {timeout:.0f} s"}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    if line is None:
        return {"status": "error", "detail": (proc.stderr.strip().splitlines() or ["no output"])[-1][-300:]}
    read, sort, first, second, mean_f = (float(x) for x in line.split()[1:])
    stages = {"read": read, "check+sort": sort}
    if package == "nadiv":
        stages["inbreeding+A-inverse"] = first
    else:
        stages.update({"inbreeding": first, "A-inverse": second})
    return {"status": "ok", "stages": stages, "seconds": sum(stages.values()),
            "detail": f"{package} through Rscript; mean F {mean_f:.4f}"}


# --------------------------------------------------------------------------- command line


def _simulated_csv(n: int, folder: Path) -> Path:
    import mixedblup as mb

    pop = mb.datasets.simulate(n, n_generations=20, unknown_parent_rate=0.03, shuffle=True, string_ids=True,
                               recorded_fraction=0.0, seed=1)
    path = folder / "ped.csv"
    pop.pedigree[["id", "sire", "dam"]].to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare F and A-inverse with mixedblup on 2,000 animals (raises if they differ)")
    parser.add_argument("--r-check", action="store_true", help="report whether nadiv / pedigreemm can run")
    parser.add_argument("--sizes", nargs="*", default=[], help="time the baseline at these sizes")
    args = parser.parse_args(argv)
    if args.check:
        print(json.dumps(agree_with_mixedblup()))
    if args.r_check:
        for pkg in R_PACKAGES:
            print(pkg, r_available(pkg) or "available")
    for size in args.sizes:
        n = int(float(size))
        with tempfile.TemporaryDirectory(prefix="mb_base_") as tmp:
            out = time_stages(_simulated_csv(n, Path(tmp)))
        st = ", ".join(f"{k} {v:.2f} s" for k, v in out["stages"].items())
        print(f"{n:>10,} animals: total {out['seconds']:.2f} s ({st}); CPU {out['cpu_seconds']:.2f} s; "
              f"mean F {out['mean_F']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
