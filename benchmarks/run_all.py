"""Run every benchmark and print one table.

    python benchmarks/run_all.py                 # default set (about 30 minutes on 2 shared cores)
    python benchmarks/run_all.py --quick         # small sizes only (a few minutes): do the scripts work?
    python benchmarks/run_all.py --full          # adds 10^7 animals and slow alternatives
    python benchmarks/run_all.py --only classic insteval --skip lme4
    python benchmarks/run_all.py --save          # also benchmarks/results/latest.* and docs/img/scaling.png
    python benchmarks/run_all.py --only pcg_1e7 --full --update "after a fix"   # re-measure rows of latest.*
    python benchmarks/run_all.py --list

The table has one row per problem, with every target of the issues (3: pedigree build;
4: REML speed; 6: maternal model; 9: PCG and the Dask path; 7: alternatives and ratios).
A problem that was not run in this mode (``--quick``, or 10^7 animals without
``--full``) is still listed, with its target and the verdict "not run".

Each (problem, program) pair runs in its own subprocess, so the reported peak memory
is that process's resident-set high-water mark during the timed stage (reset after the
data are simulated and the code is warmed up). Alternatives are run when present on the
machine: statsmodels MixedLM when importable, lme4 when ``Rscript`` and the lme4 package
are installed; for the pedigree problems, the textbook methods in plain Python/NumPy/SciPy
(``baseline_pedigree.py``: Meuwissen & Luo inbreeding in Python loops, Henderson's
A-inverse with scipy.sparse; checked against mixedblup before it is timed) and R's nadiv
and pedigreemm when installed. The textbook baseline is run only where its time,
extrapolated from the two previous sizes, is under ``--baseline-limit`` seconds; above
that the table shows the extrapolation as ``~seconds (extrapolated)``. ``ratio`` is the
alternative's time over mixedblup's (above 1: mixedblup is faster). Targets come from the
issues; the verdict compares the measurement with the target, nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import problems as P  # noqa: E402

ALTERNATIVES = ("statsmodels", "lme4", "textbook", "nadiv", "pedigreemm")
LABELS = {"statsmodels": "statsmodels", "lme4": "lme4", "textbook": "textbook NumPy/SciPy",
          "nadiv": "nadiv (R)", "pedigreemm": "pedigreemm (R)"}
#: What ``--quick`` runs (name prefixes); every other problem is listed as "not run".
QUICK = ("classic_", "animal_3k", "pedigree_1e4", "pedigree_1e5", "pcg_1e4", "pcg_1e5", "pcg_dask_1e4")
#: Problems only ``--quick`` runs (a small check of a path whose target is at a large size).
QUICK_ONLY = ("pcg_dask_1e4",)
#: Seconds: the textbook baseline is not run where its extrapolated time is above this.
BASELINE_LIMIT = 300.0
PEDIGREE_TOOLS = ("textbook", "nadiv", "pedigreemm")


def problems() -> list[P.Problem]:
    """The problems of ``problems.py``, with the pedigree comparisons and the Dask path added."""
    out = []
    for p in P.problems():
        if p.name.startswith("pedigree_"):
            p.tools = tuple(p.tools) + tuple(t for t in PEDIGREE_TOOLS if t not in p.tools)
        out.append(p)
        if p.name == "pcg_1e6":
            out.append(P.Problem(
                "pcg_dask_1e6", "as pcg_1e6, through mixedblup.distributed on a Dask LocalCluster (2 workers)",
                ("mixedblup",), target="same solutions as in memory (1e-6 rel.); overhead reported",
                timeout=1800))
    out.append(P.Problem("pcg_dask_1e4", "as pcg_1e4, Dask LocalCluster (2 workers); --quick check",
                         ("mixedblup",), timeout=600))
    return out


def _size_of(name: str) -> int:
    return int(float(name.rsplit("_", 1)[1]))


def _available(tool: str) -> str | None:
    """None when the tool can run here, else why not."""
    if tool == "mixedblup":
        return None
    if tool == "statsmodels":
        try:
            import statsmodels  # noqa: F401
        except ImportError:
            return "not installed"
        return None
    if tool == "lme4":
        return None if P.rscript() else "Rscript/lme4 not installed"
    if tool == "textbook":
        return None
    if tool in ("nadiv", "pedigreemm"):
        import baseline_pedigree as B

        return B.r_available(tool)
    return "unknown tool"


def _timeout(problem: P.Problem, tool: str) -> float:
    return max(problem.timeout, 8 * BASELINE_LIMIT) if tool in PEDIGREE_TOOLS else problem.timeout


def _run_worker(problem: P.Problem, tool: str, full: bool) -> dict:
    """One (problem, tool) run in a fresh Python process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", problem.name, tool]
    if full:
        cmd.append("--full")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_timeout(problem, tool) + 120,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "detail": f"stopped after {_timeout(problem, tool):.0f} s"}
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if line is None:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "detail": err[-300:], "wall": time.perf_counter() - t0}
    out = json.loads(line[len("RESULT "):])
    return out


def _worker(name: str, tool: str, full: bool) -> None:
    """Inside the subprocess: run and print one RESULT line of JSON."""
    problem = next(p for p in problems() if p.name == name)
    limit = _timeout(problem, tool)
    import signal

    def _alarm(*_):
        raise TimeoutError(f"stopped after {limit:.0f} s")

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(limit))
    started = time.perf_counter()
    try:
        if name.startswith("pcg_dask_"):
            out = _dask(_size_of(name), limit)
        elif tool == "textbook":
            out = _textbook(_size_of(name))
        elif tool in ("nadiv", "pedigreemm"):
            out = _r_pedigree(tool, _size_of(name), limit)
        elif tool == "mixedblup":
            out = P.run_mixedblup(name)
        elif tool == "statsmodels":
            out = P.run_statsmodels(name)
        elif tool == "lme4":
            out = P.run_lme4(name, problem.timeout)
        else:
            raise KeyError(tool)
        out["status"] = "ok"
    except TimeoutError as exc:
        out = {"status": "timeout", "detail": str(exc)}
    except Exception as exc:  # reported in the table, never hidden
        if time.perf_counter() - started >= limit - 1:
            # the alarm fired inside compiled code, which re-raised it as another exception
            out = {"status": "timeout", "detail": f"stopped after {limit:.0f} s"}
        else:
            msg = str(exc).splitlines()[0] if str(exc) else ""
            out = {"status": "error", "detail": f"{type(exc).__name__}: {msg}"[:300]}
    finally:
        signal.alarm(0)
    print("RESULT " + json.dumps(out), flush=True)


def _textbook(n: int) -> dict:
    """The textbook baseline (agreement with mixedblup checked first; AssertionError if not)."""
    import bench_pedigree

    out = bench_pedigree._baseline_worker(n, check=True)
    out.pop("r", None)
    return {k: out[k] for k in ("seconds", "cpu_seconds", "load", "peak_mb", "stages", "detail")}


def _r_pedigree(package: str, n: int, timeout: float) -> dict:
    """nadiv or pedigreemm through Rscript on the benchmark's pedigree (timed inside R)."""
    import shutil
    import tempfile

    import baseline_pedigree as B

    tmp = Path(tempfile.mkdtemp(prefix="mb_r_"))
    try:
        out = B.run_r(package, B._simulated_csv(n, tmp), timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if out.get("status") != "ok":
        raise RuntimeError(out.get("detail", "failed"))
    out.setdefault("peak_mb", float("nan"))
    return out


def _dask(n: int, timeout: float) -> dict:
    """The Dask path against the in-memory PCG (``bench_pcg.py --dask-worker``)."""
    cmd = [sys.executable, str(HERE / "bench_pcg.py"), "--dask-worker", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1][-300:])
    r = json.loads(line[len("RESULT "):])
    worst = max(r["max_rel_diff_animal"], r["max_rel_diff_fixed"])
    return {"seconds": r["seconds"], "peak_mb": r["peak_mb"], "load": r.get("load", float("nan")),
            "max_rel_diff": worst,
            "detail": f"in memory {r['memory_seconds']:.2f} s, Dask {r['seconds']:.2f} s (overhead "
                      f"{r['overhead']:.1f}x); max relative difference {worst:.1e}; {r['iterations']} iterations "
                      f"(in memory {r['memory_iterations']}); workers {r['worker_mb']:.0f} MB; driver peak "
                      f"{r['peak_mb']:.0f} MB"}


def _verdict(problem: P.Problem, mine: dict, alts: dict[str, dict]) -> str:
    if not problem.target:
        return ""
    if mine.get("status") == "not run":
        return "not run"
    if mine.get("status") != "ok":
        return "FAIL" if mine.get("status") == "timeout" else "n/a"
    if problem.name.startswith("pcg_dask_"):
        return "PASS" if mine.get("max_rel_diff", 1.0) <= 1e-6 else "FAIL"
    ok = True
    if problem.target_seconds is not None:
        ok &= mine["seconds"] <= problem.target_seconds
    if problem.target_mb is not None:
        ok &= mine["peak_mb"] <= problem.target_mb
    if problem.target_ratio is not None:
        lme4 = alts.get("lme4", {})
        ref = lme4["seconds"] if lme4.get("status") == "ok" else problem.reference_seconds
        ok &= mine["seconds"] <= problem.target_ratio * ref
    return "PASS" if ok else "FAIL"


def _fmt_s(r: dict) -> str:
    if not r:
        return ""
    if r.get("status") == "ok":
        s = r["seconds"]
        return f"{s:.3f}" if s < 10 else f"{s:.1f}"
    if r.get("estimate"):
        return f"~{r['estimate']:.0f} (extrapolated)"
    return r.get("status", "")


def _fmt_mb(r: dict) -> str:
    ok = r and r.get("status") == "ok" and r.get("peak_mb") == r.get("peak_mb")  # not NaN
    return f"{r['peak_mb']:.0f}" if ok else ""


def _ratio(mine: dict, alt: dict) -> str:
    if mine.get("status") == "ok" and alt and mine["seconds"] > 0:
        if alt.get("status") == "ok":
            r = alt["seconds"] / mine["seconds"]
        elif alt.get("estimate"):
            r = alt["estimate"] / mine["seconds"]
        else:
            return ""
        return ("~" if alt.get("status") != "ok" else "") + (f"{r:.1f}x" if r < 100 else f"{r:.0f}x")
    return ""


def shown_alternatives(rows: list[dict]) -> list[str]:
    """Alternatives with at least one result other than "absent" (the others get a note)."""
    return [a for a in ALTERNATIVES
            if any(row.get(a) and row[a].get("status") != "absent" for row in rows)]


def absent_notes(rows: list[dict]) -> list[str]:
    """One line per alternative that is absent from every row where it applies."""
    notes = []
    for a in ALTERNATIVES:
        seen = [row[a] for row in rows if row.get(a)]
        if seen and all(r.get("status") == "absent" for r in seen):
            notes.append(f"{LABELS[a]}: not run ({seen[0].get('detail', 'absent')})")
    return notes


def render(rows: list[dict], fmt: str = "text") -> str:
    """The results table as aligned text or as Markdown (alternatives absent everywhere are left out)."""
    alts = shown_alternatives(rows)
    header = ["problem", "size", "mixedblup s", "peak MB"]
    for a in alts:
        header += [f"{LABELS[a]} s", "peak MB", "ratio"]
    header += ["target", "verdict"]
    body = []
    for row in rows:
        m = row["mixedblup"]
        cells = [row["problem"], row["size"], _fmt_s(m), _fmt_mb(m)]
        for a in alts:
            r = row.get(a, {})
            cells += [_fmt_s(r), _fmt_mb(r), _ratio(m, r)]
        body.append(cells + [row["target"], row["verdict"]])
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    widths[1] = min(widths[1], 60)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    for r in body:
        cells = [c if i != 1 else (c if len(c) <= 60 else c[:57] + "...") for i, c in enumerate(r)]
        out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    return "\n".join(out)


def machine() -> str:
    """One line describing the machine and software of the run."""
    import numpy
    import scipy

    try:
        import mixedblup

        version = mixedblup.__version__
    except Exception:  # pragma: no cover
        version = "?"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):  # pragma: no cover
        mem = float("nan")
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB; Python {platform.python_version()}, "
            f"numpy {numpy.__version__}, scipy {scipy.__version__}, mixedblup {version}")


def _merged(meta: dict, path: Path, note: str) -> dict:
    """The recorded run at ``path`` with the rows of ``meta`` replacing theirs (``--update``)."""
    old = json.loads(path.read_text())
    fresh = {row["problem"]: row for row in meta["rows"]}
    known = {row["problem"] for row in old["rows"]}
    rows = [fresh.get(row["problem"], row) for row in old["rows"]]
    rows += [row for name, row in fresh.items() if name not in known]
    before = old.get("supplement") or {}
    names = list(dict.fromkeys(before.get("problems", []) + list(fresh)))
    if before.get("note"):
        note = f"{before['note']} ({before.get('date', '')[:16]}); {note}"
    return {**old, "rows": rows,
            "supplement": {"date": meta["date"], "problems": names, "note": note, "machine": meta["machine"]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also the 10^7-animal problems and slow alternatives")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes only (10^4-10^5 animals, the classic sets, animal_3k); the other "
                             "problems are listed with their targets as 'not run'")
    parser.add_argument("--slow-alternatives", action="store_true",
                        help="also run the alternatives skipped by default (statsmodels on InstEval, lme4 "
                             "through the Cholesky factor of A); implied by --full")
    parser.add_argument("--baseline-limit", type=float, default=BASELINE_LIMIT,
                        help="seconds: run the textbook pedigree baseline only where its extrapolated time "
                             "is below this (default %(default)s)")
    parser.add_argument("--only", nargs="*", default=None, help="problem name prefixes to run")
    parser.add_argument("--skip", nargs="*", default=[], help="problem name prefixes or programs to skip")
    parser.add_argument("--no-alternatives", action="store_true", help="run mixedblup only")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    parser.add_argument("--list", action="store_true", help="list the problems and exit")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/latest.json and .md and the scaling plot docs/img/scaling.png")
    parser.add_argument("--update", metavar="NOTE",
                        help="replace only the rows run here in benchmarks/results/latest.* (the others are "
                             "kept), recorded with this note and the date as the run's supplement; redraws "
                             "the scaling plot")
    parser.add_argument("--worker", nargs=2, metavar=("PROBLEM", "TOOL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(*args.worker, args.full)
        return 0
    if args.quick and args.full:
        parser.error("--quick and --full exclude each other")
    if args.list:
        for p in problems():
            when = "(--full) " if p.full_only else "(--quick) " if p.name in QUICK_ONLY else ""
            print(f"{p.name:22s} {when}{p.size}  target: {p.target or '-'}")
        return 0
    plan = []  # (problem, None to run it, or why it is not run)
    for p in problems():
        if args.only is not None and not any(p.name.startswith(o) for o in args.only):
            continue
        if any(p.name.startswith(s) for s in args.skip):
            continue
        if p.name in QUICK_ONLY and not args.quick:
            continue
        if args.quick and not p.name.startswith(QUICK):
            plan.append((p, "not in --quick"))
        elif p.full_only and not args.full:
            plan.append((p, "needs --full"))
        else:
            plan.append((p, None))
    print(f"# mixedblup benchmarks, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
          f"{' (--quick)' if args.quick else ' (--full)' if args.full else ''}", flush=True)
    print(f"# {machine()}", flush=True)
    rows = []
    textbook_times: dict[int, float] = {}
    for p, why_not in plan:
        row = {"problem": p.name, "size": p.size, "target": p.target}
        if why_not:
            if not p.target:
                continue  # nothing to report for it
            row["mixedblup"] = {"status": "not run", "detail": why_not}
            row["verdict"] = _verdict(p, row["mixedblup"], {})
            rows.append(row)
            continue
        for tool in p.tools:
            if tool != "mixedblup" and (args.no_alternatives or tool in args.skip):
                continue
            note = p.notes.get(tool)
            if note and not (args.full or args.slow_alternatives):
                row[tool] = {"status": "skipped", "detail": note}
                continue
            why = _available(tool)
            if why:
                row[tool] = {"status": "absent", "detail": why}
                continue
            if tool in PEDIGREE_TOOLS and args.quick and _size_of(p.name) > 10_000:
                row[tool] = {"status": "skipped", "detail": "--quick runs the comparisons at 10^4 animals only"}
                continue
            if tool == "textbook":
                import bench_pedigree

                est = bench_pedigree.extrapolate(textbook_times, _size_of(p.name))
                if est is not None and est[0] > args.baseline_limit:
                    row[tool] = {"status": "skipped", "estimate": est[0],
                                 "detail": f"not run (over --baseline-limit {args.baseline_limit:.0f} s): {est[1]}"}
                    continue
            print(f"  running {p.name} with {tool} ...", file=sys.stderr, flush=True)
            row[tool] = _run_worker(p, tool, args.full)
            if tool == "textbook" and row[tool].get("status") == "ok":
                textbook_times[_size_of(p.name)] = row[tool]["seconds"]
        row["verdict"] = _verdict(p, row["mixedblup"], {k: v for k, v in row.items() if k in ALTERNATIVES})
        rows.append(row)
        m = row["mixedblup"]
        print(f"  {p.name}: {_fmt_s(m)} s, {_fmt_mb(m)} MB {row['verdict']}  {m.get('detail', '')}",
              file=sys.stderr, flush=True)
    print()
    print(render(rows))
    for note in absent_notes(rows):
        print(note)
    print()
    for row in rows:
        for tool in ("mixedblup",) + ALTERNATIVES:
            r = row.get(tool)
            if r and r.get("detail") and r.get("status") not in ("absent", "not run"):
                extra = ""
                if r.get("cpu_seconds") is not None:
                    extra = f" (cpu {r['cpu_seconds']:.2f} s, load {r.get('load', float('nan')):.1f})"
                print(f"{row['problem']} [{tool}] {r['status']}{extra}: {r['detail']}")
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "full": args.full, "quick": args.quick, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(meta, indent=1))
    if args.markdown:
        args.markdown.write_text(render(rows, "markdown") + "\n")
    if args.update:
        meta = _merged(meta, HERE / "results" / "latest.json", args.update)
        rows = meta["rows"]
    if args.save or args.update:
        results = HERE / "results"
        results.mkdir(exist_ok=True)
        (results / "latest.json").write_text(json.dumps(meta, indent=1))
        (results / "latest.md").write_text(render(rows, "markdown") + "\n")
        try:
            import scaling

            print(f"wrote {scaling.plot(meta)}")
        except ImportError as exc:  # matplotlib missing: the table is still saved
            print(f"no scaling plot ({exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
