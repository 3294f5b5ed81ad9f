"""Pedigree engine benchmark (issue 3): read, check, sort, inbreeding and A-inverse per stage.

    python benchmarks/bench_pedigree.py                     # 10^4, 10^5, 10^6
    python benchmarks/bench_pedigree.py --sizes 1e4 1e7     # any sizes (10^7: ~8 GB RAM, minutes)
    python benchmarks/bench_pedigree.py --no-reference      # skip the uncompiled comparisons

Pedigrees come from ``mixedblup.datasets.simulate`` (20 overlapping generations, 3%
unknown parents, rows shuffled, string IDs) and are written to a CSV file, which is then
read back with ``mixedblup.read_pedigree`` as a user would.  Each size runs in a fresh
Python process; numba compilation is done on a tiny pedigree first (it is not the
benchmark) and the peak resident memory is reset after the simulation.

Stages: ``read`` (pandas' CSV reader, all columns as text), ``check+sort`` (ID
normalisation, the catalogue checks and the topological sort: ``Pedigree.from_frame``),
``inbreeding`` (compiled indirect method), ``A-inverse`` (Henderson's rules).  The
comparison rows time what a user would otherwise run: the pure NumPy/SciPy vectorised
Meuwissen-Luo tracing (``inbreeding_vectorised``; up to 10^5 animals) and the same
indirect algorithm uncompiled (plain Python, ``.py_func``; 10^4 animals).

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


def rows(sizes=DEFAULT_SIZES, *, reference: bool = True, timeout: float = 1800.0) -> list[dict]:
    """Run every size in its own process; one row per run (and per comparison).

    Returns
    -------
    list of dict
        ``problem, size, stages, seconds, peak_mb, target, verdict, detail`` (and
        ``cpu_seconds, load`` for mixedblup rows).
    """
    out = []
    for n in sizes:
        n = int(float(n))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(n)]
        if not reference:
            cmd.append("--no-reference")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            out.append({"problem": "pedigree", "size": n, "stages": {}, "seconds": float("nan"),
                        "peak_mb": float("nan"), "target": _target_text(n), "verdict": "FAIL",
                        "detail": f"timeout after {timeout:.0f} s"})
            continue
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")), None)
        if line is None:
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            out.append({"problem": "pedigree", "size": n, "stages": {}, "seconds": float("nan"),
                        "peak_mb": float("nan"), "target": _target_text(n), "verdict": "ERROR",
                        "detail": err[-300:]})
            continue
        res = json.loads(line[len("RESULT "):])
        refs = res.pop("references", [])
        res["target"] = _target_text(n)
        res["verdict"] = _verdict(n, res["seconds"], res["peak_mb"])
        out.append(res)
        for r in refs:
            r.update(peak_mb=float("nan"), target="", verdict="")
            out.append(r)
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
    head += f" {'total s':>8} {'peak MB':>8} {'target':>18} {'verdict':>7}"
    lines = [head, "-" * len(head)]
    for r in table:
        st = r.get("stages", {})
        cells = " ".join(f"{st[s]:>10.2f}" if s in st else f"{'':>10}" for s in stage_names)
        peak = r.get("peak_mb", float("nan"))
        lines.append(
            f"{r['problem'][:62]:<62} {r['size']:>10,} {cells} {r['seconds']:>8.2f} "
            f"{'' if peak != peak else f'{peak:8.0f}':>8} {r.get('target', ''):>18} {r.get('verdict', ''):>7}"
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
    parser.add_argument("--worker", type=int)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.worker is not None:
        res = _worker(args.worker, not args.no_reference)
        print("RESULT " + json.dumps(res))
        return 0
    table = rows(args.sizes, reference=not args.no_reference)
    print(f"machine: {os.cpu_count()} cores; load average at start of each run shown per row")
    print(format_table(table))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
