"""Scaling curves: time and peak memory against the number of animals.

    python benchmarks/scaling.py                         # plot from benchmarks/results/latest.json
    python benchmarks/scaling.py path/to/results.json

Draws the pedigree build (read + check + sort, inbreeding, A-inverse, per stage and in
total), the textbook NumPy/SciPy baseline of the pedigree build where it ran (and its
extrapolation where it did not, dotted), and the PCG solve with known variances, 10^4
animals upwards (10^7 when the run had ``--full``), from a JSON file written by
``run_all.py --json`` (or ``--save``), into ``docs/img/scaling.png`` (needs matplotlib).
The figure's title carries the date and machine of the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"
DEFAULT_PNG = HERE.parent / "docs" / "img" / "scaling.png"


def _series(rows: list[dict], prefix: str, tool: str = "mixedblup") -> list[tuple[int, dict]]:
    """(animals, result) of ``tool`` for the problems named ``prefix + size`` that ran."""
    out = []
    for row in rows:
        if not row["problem"].startswith(prefix):
            continue
        try:
            n = int(float(row["problem"].removeprefix(prefix)))
        except ValueError:  # another family with the same prefix (pcg_dask_...)
            continue
        r = row.get(tool) or {}
        if r.get("status") == "ok" or (tool != "mixedblup" and r.get("estimate")):
            out.append((n, r))
    return sorted(out, key=lambda t: t[0])


def plot(results: dict, path: Path = DEFAULT_PNG) -> Path:
    """Write the scaling figure for a ``run_all.py --json`` result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    ped = _series(rows, "pedigree_")
    pcg = _series(rows, "pcg_")
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    if ped:
        n = [p[0] for p in ped]
        ax_t.loglog(n, [p[1]["seconds"] for p in ped], "o-", lw=2, label="pedigree build, total")
        stages = sorted({k for _, r in ped for k in r.get("stages", {})})
        for stage in stages:
            ax_t.loglog(n, [r.get("stages", {}).get(stage, float("nan")) for _, r in ped], ".--", lw=1,
                        label=f"  {stage}")
        ax_m.loglog(n, [p[1]["peak_mb"] for p in ped], "o-", label="pedigree build")
    base = _series(rows, "pedigree_", "textbook")
    measured = [(n, r) for n, r in base if r.get("status") == "ok"]
    guessed = [(n, r) for n, r in base if r.get("status") != "ok"]
    if measured:
        ax_t.loglog([n for n, _ in measured], [r["seconds"] for _, r in measured], "^-", color="tab:red", lw=1.5,
                    label="textbook NumPy/SciPy baseline (pedigree build)")
        ax_m.loglog([n for n, _ in measured], [r["peak_mb"] for _, r in measured], "^-", color="tab:red",
                    label="textbook baseline (pedigree)")
    if measured and guessed:
        pts = measured[-1:] + guessed
        ax_t.loglog([n for n, _ in pts], [r.get("estimate", r.get("seconds")) for _, r in pts], "^:",
                    color="tab:red", mfc="none", lw=1, label="  baseline, extrapolated (not run)")
    if pcg:
        n = [p[0] for p in pcg]
        ax_t.loglog(n, [p[1]["seconds"] for p in pcg], "s-", lw=2, label="PCG solve (0.6 records/animal)")
        ax_m.loglog(n, [p[1]["peak_mb"] for p in pcg], "s-", label="PCG solve")
    targets = [(1e6, 10, "pedigree target (1e6)", (8, -10)), (1e7, 120, "pedigree target (1e7)", (-100, 6)),
               (1e6, 15, "PCG target (1e6)", (8, 4)), (1e7, 600, "PCG target (1e7)", (-80, 6))]
    for x, y, label, offset in targets:
        ax_t.plot([x], [y], "k*", ms=9)
        ax_t.annotate(label, (x, y), textcoords="offset points", xytext=offset, fontsize=7)
    all_n = [p[0] for p in ped + pcg]
    if all_n:
        lo, hi = min(all_n), max(all_n)
        ref_t = min(p[1]["seconds"] for p in ped + pcg)
        ax_t.loglog([lo, hi], [ref_t, ref_t * hi / lo], color="grey", lw=0.8, ls=":", label="linear growth")
    ax_t.set(xlabel="animals", ylabel="wall time (s)", title="Time against animals")
    ax_m.set(xlabel="animals", ylabel="peak resident memory (MB)", title="Peak memory against animals")
    ax_t.legend(fontsize=6, loc="upper left", framealpha=0.85)
    ax_m.legend(fontsize=7)
    fig.suptitle(f"mixedblup scaling, {results.get('date', '')[:10]}: {results.get('machine', '')[:90]}",
                 fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0]) if argv else DEFAULT_JSON
    out = plot(json.loads(src.read_text()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
