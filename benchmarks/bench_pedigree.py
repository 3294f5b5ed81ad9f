"""Pedigree engine benchmark (issue 3): read, check, sort, inbreeding and A-inverse per stage.

    python benchmarks/bench_pedigree.py                     # 10^4, 10^5, 10^6
    python benchmarks/bench_pedigree.py --sizes 1e4 1e7     # any sizes (10^7: ~8 GB RAM, minutes)
    python benchmarks/bench_pedigree.py --no-reference      # mixedblup only, no comparison rows
    python benchmarks/bench_pedigree.py --sizes 1e4 --baseline-limit 60   # quick check

Pedigrees come from ``mixedblup.datasets.simulate`` (20 overlapping generations, 3%
unknown parents, rows shuffled, string IDs) and are written to a CSV file, which is then
read back with ``mixedblup.read_pedigree`` as a user would.  Each size runs in a fresh
Python process; numba compilation is done on a tiny pedigree first (it is not the
benchmark) and the peak resident memory is reset after the simulation.

Stages: ``read`` (pandas' CSV reader, all columns as text), ``check+sort`` (ID
normalisation, the catalogue checks and the topological sort: ``Pedigree.from_frame``),
``inbreeding`` (compiled indirect method), ``A-inverse`` (Henderson's rules).

Comparison rows (what a user would otherwise run), each size in its own process too:

* **textbook baseline** (``baseline_pedigree.py``): pandas/NumPy reading and sorting,
  Meuwissen & Luo (1992) inbreeding in plain Python loops and Henderson/Quaas ``A^-1``
  assembled with ``scipy.sparse``, on the same CSV file.  Before anything is timed, its
  ``F`` and ``A^-1`` are checked against mixedblup's on a 2,000-animal pedigree with
  inbreeding (the run stops if they differ by more than 1e-10).  It runs at every size
  whose time, extrapolated from the two previous sizes, is under ``--baseline-limit``
  seconds (300); above that the row shows the extrapolation, marked as such;
* R's **nadiv** (``makeAinv``) and **pedigreemm** (``inbreeding`` + ``getAInv``) through
  ``Rscript`` when installed (a note says so when they are not);
* the pure NumPy/SciPy vectorised Meuwissen-Luo tracing kept in mixedblup for tests
  (``inbreeding_vectorised``; up to 10^5 animals) and mixedblup's indirect algorithm
  uncompiled (plain Python, ``.py_func``; 10^4 animals).

``vs mb`` is the row's total time over mixedblup's at the same size (for the
inbreeding-only rows: over mixedblup's inbreeding stage); above 1, mixedblup is faster.

:func:`rows` returns the table for ``benchmarks/run_all.py``: one dict per row with
``problem, size, stages (seconds), seconds, peak_mb, target, verdict``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from problems import peak_mb, reset_peak  # noqa: E402  (one copy of the memory probes)

#: Targets of issue 3 (seconds, MB) for read+check+sort+inbreeding+A-inverse.
TARGETS = {1_000_000: (10.0, 2048.0), 10_000_000: (120.0, 8192.0)}
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)


def _worker(n: int, reference: bool) -> dict:
    """Inside a fresh process: simulate, write, then time each stage."""
    import gc
    import warnings

    import pandas as pd

    import mixedblup as mb
    from mixedblup import _pedigree_kernels as K
    from mixedblup.pedigree import _stable_order, inbreeding_vectorised

    warnings.simplefilter("ignore")
    pop = mb.datasets.simulate(n, n_generations=20, unknown_parent_rate=0.03, shuffle=True,
                               string_ids=True, recorded_fraction=0.0, seed=1)
    tmp = Path(tempfile.mkdtemp(prefix="mb_bench_ped_"))
    path = tmp / "ped.csv"
    pop.pedigree[["id", "sire", "dam"]].to_csv(path, index=False)
    del pop
    gc.collect()
    tiny = pd.DataFrame({"a": ["1", "2", "3", "4"], "s": ["0", "0", "1", "1"], "d": ["0", "0", "2", "3"]})
    warm = mb.Pedigree.from_frame(tiny, id="a", sire="s", dam="d")
    warm.inbreeding(), warm.a_inverse()
    reset_peak()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    stages: dict[str, float] = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[],
                        engine=_engine())
    t1 = time.perf_counter()
    stages["read"] = t1 - t0
    ped = mb.Pedigree.from_frame(frame, id="id", sire="sire", dam="dam")
    del frame
    t2 = time.perf_counter()
    stages["check+sort"] = t2 - t1
    F = ped.inbreeding()
    t3 = time.perf_counter()
    stages["inbreeding"] = t3 - t2
    ainv = ped.a_inverse()
    t4 = time.perf_counter()
    stages["A-inverse"] = t4 - t3
    cpu = time.process_time() - cpu0
    out = {
        "problem": "pedigree",
        "size": n,
        "stages": stages,
        "seconds": t4 - t0,
        "cpu_seconds": cpu,
        "peak_mb": peak_mb(),
        "load": load,
        "detail": f"mean F {float(F.mean()):.4f}, max F {float(F.max()):.3f}, "
        f"{int(ped.generation.max()) + 1} generations, nnz(A-inverse) {ainv.nnz:,}",
    }
    refs = []
    if reference and n <= 100_000:
        t = time.perf_counter()
        F_ref = inbreeding_vectorised(ped.sire_pos, ped.dam_pos, ped.generation)
        refs.append({"problem": "pedigree: inbreeding, pure NumPy/SciPy (vectorised M&L)",
                     "size": n, "stages": {"inbreeding": time.perf_counter() - t},
                     "seconds": time.perf_counter() - t,
                     "detail": f"max |F - F_compiled| {abs(F_ref - F.to_numpy()).max():.1e}"})
    if reference and n <= 10_000:
        import numpy as np

        gen = np.array(ped.generation)
        order = _stable_order(gen).astype(np.int64)
        starts = np.searchsorted(gen[order], np.arange(gen.max() + 2)).astype(np.int64)
        f = getattr(K.inbreeding_indirect, "py_func", K.inbreeding_indirect)
        t = time.perf_counter()
        F_py, _ = f(np.array(ped.sire_pos), np.array(ped.dam_pos), gen, order, starts)
        refs.append({"problem": "pedigree: inbreeding, same algorithm uncompiled (plain Python)",
                     "size": n, "stages": {"inbreeding": time.perf_counter() - t},
                     "seconds": time.perf_counter() - t,
                     "detail": f"max |F - F_compiled| {abs(F_py - F.to_numpy()).max():.1e}"})
    out["references"] = refs
    try:
        path.unlink()
        tmp.rmdir()
    except OSError:
        pass
    return out


def _engine() -> str:
    try:
        import pyarrow  # noqa: F401

        return "pyarrow"
    except ImportError:
        return "c"


BASELINE = "pedigree: textbook baseline (Python M&L + scipy.sparse)"


def _baseline_worker(n: int, check: bool) -> dict:
    """Inside a fresh process: agreement check, then the textbook baseline and R on the same CSV."""
    import gc
    import warnings

    import baseline_pedigree as B

    import mixedblup as mb

    warnings.simplefilter("ignore")
    agreement = B.agree_with_mixedblup() if check else None
    pop = mb.datasets.simulate(n, n_generations=20, unknown_parent_rate=0.03, shuffle=True,
                               string_ids=True, recorded_fraction=0.0, seed=1)
    tmp = Path(tempfile.mkdtemp(prefix="mb_bench_base_"))
    path = tmp / "ped.csv"
    pop.pedigree[["id", "sire", "dam"]].to_csv(path, index=False)
    del pop
    gc.collect()
    reset_peak()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out = B.time_stages(path)
    out.update(problem=BASELINE, size=n, peak_mb=peak_mb(), load=load)
    out["detail"] = (f"mean F {out.pop('mean_F'):.4f}, nnz(A-inverse) {out.pop('nnz'):,}; no checks (duplicates, "
                     "loops, sexes) are made")
    if agreement:
        out["detail"] += (f"; agrees with mixedblup on {agreement['n']:,} animals (max |dF| "
                          f"{agreement['max_abs_diff_F']:.1e}, max |dA^-1| {agreement['max_abs_diff_Ainv']:.1e})")
    r_rows = []
    for pkg in B.R_PACKAGES:
        r = B.run_r(pkg, path)
        r.update(problem=f"pedigree: R {pkg} (Rscript)", size=n)
        r_rows.append(r)
    out["r"] = r_rows
    try:
        path.unlink()
        tmp.rmdir()
    except OSError:
        pass
    return out


def _spawn(args: list[str], timeout: float) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve())] + args
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if line is None:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": err[-300:]}
    return json.loads(line[len("RESULT "):])


def extrapolate(times: dict[int, float], n: int) -> tuple[float, str] | None:
    """Time at ``n`` from the two largest measured sizes below it (power law), with how it was made."""
    below = sorted(k for k in times if k < n)
    if len(below) < 2:
        return None
    a, b = below[-2], below[-1]
    k = np.log(times[b] / times[a]) / np.log(b / a)
    return float(times[b] * (n / b) ** k), f"extrapolated from {a:,} and {b:,} animals (time ~ n^{k:.2f})"


def rows(sizes=DEFAULT_SIZES, *, reference: bool = True, timeout: float = 1800.0,
         baseline_limit: float = 300.0) -> list[dict]:
    """Run every size in its own process; one row per run (and per comparison).

    Returns
    -------
    list of dict
        ``problem, size, stages, seconds, peak_mb, target, verdict, detail`` (and
        ``cpu_seconds, load`` for measured rows, ``ratio`` for comparison rows,
        ``extrapolated`` for baseline rows that were not run).
    """
    out = []
    base_times: dict[int, float] = {}
    checked = False
    for n in sorted(int(float(s)) for s in sizes):
        args = ["--worker", str(n)] + ([] if reference else ["--no-reference"])
        res = _spawn(args, timeout)
        if "error" in res:
            out.append({"problem": "pedigree", "size": n, "stages": {}, "seconds": float("nan"),
                        "peak_mb": float("nan"), "target": _target_text(n),
                        "verdict": "FAIL" if res["error"].startswith("timeout") else "ERROR",
                        "detail": res["error"]})
            mine = float("nan")
        else:
            refs = res.pop("references", [])
            res["target"] = _target_text(n)
            res["verdict"] = _verdict(n, res["seconds"], res["peak_mb"])
            out.append(res)
            mine = res["seconds"]
            for r in refs:
                # inbreeding-only rows are compared with mixedblup's inbreeding stage
                ref = res["stages"]["inbreeding"] if set(r["stages"]) == {"inbreeding"} else mine
                r.update(peak_mb=float("nan"), target="", verdict="", ratio=r["seconds"] / ref)
                out.append(r)
        if not reference:
            continue
        est = extrapolate(base_times, n)
        if est is not None and est[0] > baseline_limit:
            out.append({"problem": BASELINE, "size": n, "stages": {}, "seconds": est[0], "peak_mb": float("nan"),
                        "target": "", "verdict": "", "ratio": est[0] / mine, "extrapolated": True,
                        "detail": f"NOT RUN (over --baseline-limit {baseline_limit:.0f} s): {est[1]}"})
            continue
        print(f"  textbook baseline, {n:,} animals ...", file=sys.stderr, flush=True)
        base = _spawn(["--baseline-worker", str(n)] + ([] if checked else ["--check"]),
                      max(timeout, 8 * baseline_limit))
        if "error" in base:
            if "AssertionError" in base["error"]:
                raise SystemExit(f"the textbook baseline disagrees with mixedblup: {base['error']}")
            out.append({"problem": BASELINE, "size": n, "stages": {}, "seconds": float("nan"),
                        "peak_mb": float("nan"), "target": "", "verdict": "", "detail": base["error"]})
            continue
        checked = True
        r_rows = base.pop("r", [])
        base.update(target="", verdict="", ratio=base["seconds"] / mine)
        base_times[n] = base["seconds"]
        out.append(base)
        for r in r_rows:
            if r.get("status") == "ok":
                r.update(peak_mb=float("nan"), target="", verdict="", ratio=r["seconds"] / mine)
                out.append(r)
            elif r.get("status") != "absent" or n == min(int(float(s)) for s in sizes):
                out.append({"problem": r["problem"], "size": n, "stages": {}, "seconds": float("nan"),
                            "peak_mb": float("nan"), "target": "", "verdict": "", "detail": r.get("detail", "")})
    return out


def _target_text(n: int) -> str:
    if n not in TARGETS:
        return ""
    s, mb = TARGETS[n]
    return f"<= {s:g} s and {mb / 1024:g} GB"


def _verdict(n: int, seconds: float, peak: float) -> str:
    if n not in TARGETS:
        return ""
    s, mb = TARGETS[n]
    return "PASS" if seconds <= s and peak <= mb else "FAIL"


def format_table(table: list[dict]) -> str:
    """The rows as a fixed-width text table."""
    stage_names = ["read", "check+sort", "inbreeding", "A-inverse"]
    head = f"{'problem':<62} {'size':>10} " + " ".join(f"{s:>10}" for s in stage_names)
    head += f" {'total s':>8} {'vs mb':>7} {'peak MB':>8} {'target':>18} {'verdict':>7}"
    lines = [head, "-" * len(head)]
    for r in table:
        st = r.get("stages", {})
        cells = " ".join(f"{st[s]:>10.2f}" if s in st else f"{'':>10}" for s in stage_names)
        peak = r.get("peak_mb", float("nan"))
        secs = r["seconds"]
        total = "" if np.isnan(secs) else (f"~{secs:.0f}" if r.get("extrapolated") else f"{secs:.2f}")
        ratio = r.get("ratio", float("nan"))
        ratio = "" if np.isnan(ratio) else f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"
        lines.append(
            f"{r['problem'][:62]:<62} {r['size']:>10,} {cells} {total:>8} {ratio:>7} "
            f"{'' if np.isnan(peak) else f'{peak:8.0f}':>8} {r.get('target', ''):>18} {r.get('verdict', ''):>7}"
        )
        if r.get("detail"):
            extra = r["detail"]
            if "cpu_seconds" in r:
                extra += f"; CPU {r['cpu_seconds']:.2f} s; load average {r['load']:.1f}"
            lines.append(f"    {extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=[str(s) for s in DEFAULT_SIZES])
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--baseline-limit", type=float, default=300.0,
                        help="run the textbook baseline only where its extrapolated time is below this (s)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.worker is not None:
        res = _worker(args.worker, not args.no_reference)
        print("RESULT " + json.dumps(res))
        return 0
    if args.baseline_worker is not None:
        print("RESULT " + json.dumps(_baseline_worker(args.baseline_worker, args.check)))
        return 0
    table = rows(args.sizes, reference=not args.no_reference, baseline_limit=args.baseline_limit)
    print(f"machine: {os.cpu_count()} cores; load average at start of each run shown per row")
    print(format_table(table))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
