"""PCG benchmark: BLUP of a single-trait animal model from 10^4 to 10^7 animals, and Dask.

    python benchmarks/bench_pcg.py                           # 10^4, 10^5, 10^6 animals
    python benchmarks/bench_pcg.py --sizes 1e4 1e5 1e6 1e7 --plot docs/img/pcg_scaling.png
    python benchmarks/bench_pcg.py --sizes --dask 1e6        # Dask LocalCluster(2 workers) vs memory
    python benchmarks/bench_pcg.py --direct 1e4 1e5          # also the direct solver, for comparison
    python benchmarks/bench_pcg.py --sizes --fit 1e6         # mb.fit(..., solver="pcg") end to end

Problem (as issue 9): ``y ~ 0 + herd_year + (1|id)`` with ``A``, ``n`` animals over 10
generations, ``0.6 n`` records (males and females), about ``n / 33`` herd-years, known
variances (additive 0.3, residual 0.5), default stopping rule ``||b - Cx||^2 / ||b||^2 <= 1e-12``.

Each size runs in a fresh subprocess.  Not timed: simulating the data and processing
the pedigree (:meth:`Pedigree.from_frame`, inbreeding; reported separately as
``pedigree s``).  Timed ("BLUP"): building the sparse design from the records
(:func:`~mixedblup.iterative.design_from_codes`) and :func:`~mixedblup.iterative.solve_pcg`
(set-up and iterations).  ``peak MB`` is the process's resident-set high-water mark
during the timed stage (reset just before it), so it includes the data and pedigree
already in memory.

``--fit`` times the public API end to end, ``mb.fit("y ~ 0 + herd_year + (1|id)", records,
cov={"id": ped}, variances=..., solver="pcg")`` (formula, design through formulaic, checks,
PCG, approximate reliabilities and the results object), against the standalone path
(``design_from_codes`` + ``solve_pcg``) in the same process, same data.

``run(...)`` returns the rows (``problem, size, seconds, peak_mb, target, verdict`` and
details) for ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from problems import peak_mb, reset_peak  # noqa: E402  (one copy of the memory probes)

#: Targets of issue 9 (seconds, MB) by number of animals.
TARGETS = {1_000_000: (15.0, 1536.0), 10_000_000: (600.0, 8192.0)}
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)


# --------------------------------------------------------------------------- measuring


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


# --------------------------------------------------------------------------- data


def population(n: int, seed: int = 1) -> tuple[Any, Any]:
    """Records and pedigree frame of the benchmark problem with ``n`` animals."""
    from mixedblup.simulate import simulate_population

    n_generations = 10
    eligible = n * (1 - 1 / n_generations)
    pop = simulate_population(
        n, n_generations=n_generations, n_herds=max(n // 33 // 21, 2), recorded_sex="both",
        recorded_fraction=min(1.0, 0.6 * n / eligible), sires_per_generation=max(200, n // 5000),
        additive=0.3, residual=0.5, seed=seed,
    )
    return pop.records, pop.pedigree[["id", "sire", "dam"]]


def size_label(n: int, records: int | None = None, groups: int | None = None) -> str:
    text = f"{n:,} animals"
    if records is not None:
        text += f", {records:,} records, {groups:,} herd-years"
    return text


# --------------------------------------------------------------------------- workers


def _memory_worker(n: int, direct: bool) -> dict[str, Any]:
    import numpy as np

    import mixedblup as mb
    from mixedblup import iterative

    t = time.perf_counter()
    rec, ped_frame = population(n)
    t_data = time.perf_counter() - t
    t = time.perf_counter()
    ped = mb.Pedigree.from_frame(ped_frame, id="id", sire="sire", dam="dam")
    ped.mendelian_variances()  # inbreeding: needed for the exact A^-1
    t_ped = time.perf_counter() - t
    del ped_frame
    # warm-up on a tiny problem: numba compiles (or loads its cache) outside the timing
    small = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    iterative.solve_pcg(iterative.design_from_codes(mb.datasets.load("mrode_3_1"), "wwg", fixed=["sex"],
                                                    random={"calf": small.ids}),
                        [small], [np.array([[20.0]])], 40.0)
    base = rss_mb()
    reset_peak()
    c0 = time.process_time()
    t0 = time.perf_counter()
    design = iterative.design_from_codes(rec, "y", fixed=["herd_year"], random={"id": ped.ids})
    t_design = time.perf_counter() - t0
    res = iterative.solve_pcg(design, [ped], [np.array([[0.3]])], 0.5)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    peak = peak_mb()
    out = {
        "seconds": seconds, "peak_mb": peak, "baseline_mb": base, "cpu_seconds": cpu,
        "load": os.getloadavg()[0], "design_seconds": t_design, "setup_seconds": res.setup_seconds,
        "iteration_seconds": res.seconds, "iterations": res.iterations, "accuracy": res.accuracy,
        "converged": res.converged, "solver_mb": res.memory_bytes / 2**20, "data_seconds": t_data,
        "pedigree_seconds": t_ped, "records": len(rec), "groups": int(rec["herd_year"].nunique()),
        "equations": res.n_equations,
    }
    if direct:
        from mixedblup.covariance import PedigreeCovariance
        from mixedblup.mme import cross_products, relative_factor, solve_mme

        t1 = time.perf_counter()
        dense_x = design.X.toarray() if design.p * design.n < 2e8 else None
        if dense_x is None:
            out["direct"] = "skipped (dense X too large for the direct path)"
        else:
            import dataclasses

            d2 = dataclasses.replace(design, X=dense_x)
            bound = [PedigreeCovariance(ped).bind(ped.ids)]
            cp = cross_products(d2, bound)
            sol = solve_mme(cp, [relative_factor(np.array([[0.3]]), 0.5)])
            out["direct_seconds"] = time.perf_counter() - t1
            x_direct = np.concatenate([sol.beta, sol.u])
            out["direct_max_rel_diff"] = float(np.abs(res.x - x_direct).max() / np.abs(x_direct).max())
            tight = iterative.solve_pcg(design, [ped], [np.array([[0.3]])], 0.5, tol=1e-16)
            out["direct_max_rel_diff_tol1e-16"] = float(np.abs(tight.x - x_direct).max() / np.abs(x_direct).max())
    return out


def _fit_worker(n: int) -> dict[str, Any]:
    """``mb.fit(..., solver="pcg")`` end to end against design_from_codes + solve_pcg."""
    import gc

    import numpy as np

    import mixedblup as mb
    from mixedblup import api, iterative

    rec, ped_frame = population(n)
    ped = mb.Pedigree.from_frame(ped_frame, id="id", sire="sire", dam="dam")
    ped.mendelian_variances()
    del ped_frame
    variances = {"id": 0.3, "residual": 0.5}
    mrode = mb.datasets.load("mrode_3_1")  # warm-up: numba compiles (or loads its cache) outside the timing
    small = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    mb.fit("wwg ~ 0 + sex + (1|calf)", mrode, cov={"calf": small}, variances={"calf": 20, "residual": 40},
           solver="pcg")
    reset_peak()
    t0 = time.perf_counter()
    design = iterative.design_from_codes(rec, "y", fixed=["herd_year"], random={"id": ped.ids})
    alone = iterative.solve_pcg(design, [ped], [np.array([[0.3]])], 0.5)
    t_alone = time.perf_counter() - t0
    peak_alone = peak_mb()
    u_alone = alone.u
    del design, alone
    gc.collect()
    stages: dict[str, float] = {}
    build = api.build_design

    def timed_build(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = build(*args, **kwargs)
        stages["design"] = time.perf_counter() - t
        return out

    api.build_design = timed_build
    base = rss_mb()
    reset_peak()
    c0 = time.process_time()
    t0 = time.perf_counter()
    res = mb.fit("y ~ 0 + herd_year + (1|id)", rec, cov={"id": ped}, variances=variances, solver="pcg")
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    peak = peak_mb()
    api.build_design = build
    info = res.solver_info
    u_fit = res.random_effects("id")["estimate"].to_numpy()
    return {
        "seconds": seconds, "peak_mb": peak, "baseline_mb": base, "cpu_seconds": cpu, "load": os.getloadavg()[0],
        "design_seconds": stages.get("design", float("nan")), "solve_seconds": info.seconds,
        "setup_seconds": info.setup_seconds, "iteration_seconds": info.seconds - info.setup_seconds,
        "other_seconds": seconds - stages.get("design", 0.0) - info.seconds,
        "iterations": info.iterations, "accuracy": info.accuracy, "converged": info.converged,
        "standalone_seconds": t_alone, "standalone_peak_mb": peak_alone,
        "max_rel_diff_vs_standalone": float(np.abs(u_fit - u_alone).max() / np.abs(u_alone).max()),
        "records": len(rec), "groups": int(rec["herd_year"].nunique()), "equations": info.n_equations,
    }


def _dask_worker(n: int, partitions: int) -> dict[str, Any]:
    import logging

    import dask.dataframe as dd
    import numpy as np
    from distributed import Client, LocalCluster

    import mixedblup as mb
    from mixedblup import iterative
    from mixedblup.distributed import solve_pcg_dask

    logging.getLogger("distributed").setLevel(logging.ERROR)
    rec, ped_frame = population(n)
    ped = mb.Pedigree.from_frame(ped_frame, id="id", sire="sire", dam="dam")
    frame = ped_frame.assign(F=ped.inbreeding().reindex(ped_frame["id"]).to_numpy())
    t0 = time.perf_counter()
    design = iterative.design_from_codes(rec, "y", fixed=["herd_year"], random={"id": ped.ids})
    mem = iterative.solve_pcg(design, [ped], [np.array([[0.3]])], 0.5)
    t_mem = time.perf_counter() - t0
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           memory_limit="6GiB")
    client = Client(cluster)
    try:
        records = dd.from_pandas(rec, npartitions=partitions)
        pedigree = dd.from_pandas(frame, npartitions=partitions)
        reset_peak()
        t1 = time.perf_counter()
        res = solve_pcg_dask(records, pedigree, response="y", animal="id", fixed=["herd_year"],
                             variances={"id": 0.3, "residual": 0.5}, client=client, inbreeding="F")
        t_dask = time.perf_counter() - t1
        worker_mb = sum(client.run(lambda: __import__("psutil").Process().memory_info().rss).values()) / 2**20
    finally:
        client.close()
        cluster.close()
    u_mem = mem.u
    u_dask = res.animal.reindex(ped.ids).to_numpy()
    fe = res.fixed.reindex(list(design.fixed_names)).to_numpy()
    return {
        "seconds": t_dask, "peak_mb": peak_mb(), "worker_mb": worker_mb, "memory_seconds": t_mem,
        "overhead": t_dask / t_mem, "setup_seconds": res.setup_seconds, "iteration_seconds": res.seconds,
        "product_seconds": res.seconds_in_products, "iterations": res.iterations,
        "memory_iterations": mem.iterations, "accuracy": res.accuracy, "converged": res.converged,
        "max_rel_diff_animal": float(np.abs(u_dask - u_mem).max() / np.abs(u_mem).max()),
        "max_rel_diff_fixed": float(np.abs(fe - mem.beta).max() / np.abs(mem.beta).max()),
        "records": len(rec), "groups": int(rec["herd_year"].nunique()), "blocks": res.n_blocks,
        "load": os.getloadavg()[0],
    }


def _spawn(args: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if line is None:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "detail": err[-300:]}
    out = json.loads(line[len("RESULT "):])
    out["status"] = "ok"
    return out


# --------------------------------------------------------------------------- rows


def _verdict(n: int, r: dict[str, Any]) -> tuple[str, str]:
    target = TARGETS.get(n)
    if target is None:
        return "", ""
    text = f"<= {target[0]:.0f} s and {target[1] / 1024:.1f} GB"
    if r.get("status") != "ok":
        return text, "FAIL"
    ok = r["seconds"] <= target[0] and r["peak_mb"] <= target[1] and r.get("converged", False)
    return text, "PASS" if ok else "FAIL"


def run(sizes: tuple[float, ...] = DEFAULT_SIZES, *, dask_sizes: tuple[float, ...] = (),
        direct_sizes: tuple[float, ...] = (), partitions: int = 4, timeout: float = 3600,
        fit_sizes: tuple[float, ...] = ()) -> list[dict[str, Any]]:
    """Run the benchmark; one row per size (and per Dask size).

    Returns
    -------
    list of dict
        ``problem, size, seconds, peak_mb, target, verdict`` plus details.
    """
    rows = []
    for n in sorted(int(float(s)) for s in sizes):
        print(f"  pcg {n:,} animals ...", file=sys.stderr, flush=True)
        direct = any(int(float(d)) == n for d in direct_sizes)
        r = _spawn(["--worker", str(n)] + (["--direct"] if direct else []), timeout)
        target, verdict = _verdict(n, r)
        size = size_label(n, r.get("records"), r.get("groups")) if r.get("status") == "ok" else size_label(n)
        rows.append({"problem": "pcg", "n_animals": n, "size": size, "target": target, "verdict": verdict, **r})
        print(f"  -> {_line(rows[-1])}", file=sys.stderr, flush=True)
    for n in sorted(int(float(s)) for s in fit_sizes):
        print(f"  fit(solver='pcg') {n:,} animals ...", file=sys.stderr, flush=True)
        r = _spawn(["--fit-worker", str(n)], timeout)
        target, verdict = _verdict(n, r)
        size = size_label(n, r.get("records"), r.get("groups")) if r.get("status") == "ok" else size_label(n)
        rows.append({"problem": "mb.fit(solver='pcg')", "n_animals": n, "size": size, "target": target,
                     "verdict": verdict, **r})
        print(f"  -> {_line(rows[-1])}", file=sys.stderr, flush=True)
    for n in sorted(int(float(s)) for s in dask_sizes):
        print(f"  pcg-dask {n:,} animals ...", file=sys.stderr, flush=True)
        r = _spawn(["--dask-worker", str(n), "--partitions", str(partitions)], timeout)
        size = size_label(n, r.get("records"), r.get("groups")) if r.get("status") == "ok" else size_label(n)
        verdict = ""
        if r.get("status") == "ok":
            verdict = "PASS" if max(r["max_rel_diff_animal"], r["max_rel_diff_fixed"]) < 1e-4 else "FAIL"
        rows.append({"problem": "pcg-dask (LocalCluster, 2 workers)", "n_animals": n, "size": size,
                     "target": "same solutions as in memory", "verdict": verdict, **r})
        print(f"  -> {_line(rows[-1])}", file=sys.stderr, flush=True)
    return rows


def _line(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"{row['problem']} {row['size']}: {row.get('status')} {row.get('detail', '')}"
    return f"{row['problem']} {row['size']}: {row['seconds']:.2f} s, {row['peak_mb']:.0f} MB {row['verdict']}"


def render(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows."""
    head = ["problem", "size", "BLUP s", "peak MB", "iterations", "set-up s", "iterations s", "pedigree s",
            "target", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['problem']} | {r['size']} | {r.get('status')} |  |  |  |  |  | {r['target']} | "
                         f"{r['verdict']} |")
            continue
        ped = f"{r['pedigree_seconds']:.1f}" if "pedigree_seconds" in r else ""
        lines.append(
            f"| {r['problem']} | {r['size']} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | {r['iterations']} | "
            f"{r['setup_seconds']:.2f} | {r['iteration_seconds']:.2f} | {ped} | {r['target']} | {r['verdict']} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Time and peak memory against the number of animals (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["problem"] == "pcg" and r.get("status") == "ok"]
    n = [r["n_animals"] for r in ok]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    a1.loglog(n, [r["seconds"] for r in ok], "o-", label="BLUP (design + PCG)")
    a1.loglog(n, [r["iteration_seconds"] for r in ok], "s--", label="PCG iterations")
    a1.loglog(n, [r["pedigree_seconds"] for r in ok], "^:", label="pedigree + inbreeding (not in BLUP)")
    a2.loglog(n, [r["peak_mb"] for r in ok], "o-", label="process peak")
    a2.loglog(n, [r["solver_mb"] for r in ok], "s--", label="solver arrays")
    for n_t, (sec, mb) in TARGETS.items():
        a1.plot([n_t], [sec], "rx", ms=9)
        a2.plot([n_t], [mb], "rx", ms=9)
    a1.set(xlabel="animals", ylabel="seconds", title="time (x: target)")
    a2.set(xlabel="animals", ylabel="MB", title="memory (x: target)")
    for a in (a1, a2):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", default=[str(s) for s in DEFAULT_SIZES])
    parser.add_argument("--dask", nargs="*", default=[], help="sizes for the Dask comparison")
    parser.add_argument("--direct", nargs="*", default=[], help="sizes where the direct solver also runs")
    parser.add_argument("--fit", nargs="*", default=[], help="sizes for mb.fit(..., solver='pcg') end to end")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dask-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fit-worker", type=int, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.worker:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            print("RESULT " + json.dumps(_memory_worker(args.worker, "--direct" in (argv or sys.argv))), flush=True)
        return 0
    if args.fit_worker:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            print("RESULT " + json.dumps(_fit_worker(args.fit_worker)), flush=True)
        return 0
    if args.dask_worker:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            print("RESULT " + json.dumps(_dask_worker(args.dask_worker, args.partitions)), flush=True)
        return 0
    rows = run(tuple(args.sizes), dask_sizes=tuple(args.dask), direct_sizes=tuple(args.direct),
               partitions=args.partitions, fit_sizes=tuple(args.fit))
    print(render(rows))
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in ("problem", "size", "target", "verdict")}
        print(f"{r['problem']} {r['n_animals']:,}: " + json.dumps(extra, default=str))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
