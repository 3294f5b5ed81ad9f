"""Run every benchmark and print one table.

    python benchmarks/run_all.py                 # default set (a few minutes)
    python benchmarks/run_all.py --full          # adds 10^7 animals and slow alternatives
    python benchmarks/run_all.py --only classic insteval --skip lme4
    python benchmarks/run_all.py --save          # also benchmarks/results/latest.* and docs/img/scaling.png
    python benchmarks/run_all.py --list

Each (problem, program) pair runs in its own subprocess, so the reported peak memory
is that process's resident-set high-water mark during the timed stage (reset after the
data are simulated and the code is warmed up). Alternatives are run when present on the
machine: statsmodels MixedLM when importable, lme4 when ``Rscript`` and the lme4 package
are installed. ``ratio`` is the alternative's time over mixedblup's (above 1: mixedblup is
faster). Targets come from the issues; the verdict compares the measurement with the
target, nothing else.
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

ALTERNATIVES = ("statsmodels", "lme4")


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
    return "unknown tool"


def _run_worker(problem: P.Problem, tool: str, full: bool) -> dict:
    """One (problem, tool) run in a fresh Python process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", problem.name, tool]
    if full:
        cmd.append("--full")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=problem.timeout + 120,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "detail": f"stopped after {problem.timeout:.0f} s"}
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if line is None:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "detail": err[-300:], "wall": time.perf_counter() - t0}
    out = json.loads(line[len("RESULT "):])
    return out


def _worker(name: str, tool: str, full: bool) -> None:
    """Inside the subprocess: run and print one RESULT line of JSON."""
    problem = next(p for p in P.problems() if p.name == name)
    import signal

    def _alarm(*_):
        raise TimeoutError(f"stopped after {problem.timeout:.0f} s")

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(problem.timeout))
    started = time.perf_counter()
    try:
        if tool == "mixedblup":
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
        if time.perf_counter() - started >= problem.timeout - 1:
            # the alarm fired inside compiled code, which re-raised it as another exception
            out = {"status": "timeout", "detail": f"stopped after {problem.timeout:.0f} s"}
        else:
            msg = str(exc).splitlines()[0] if str(exc) else ""
            out = {"status": "error", "detail": f"{type(exc).__name__}: {msg}"[:300]}
    finally:
        signal.alarm(0)
    print("RESULT " + json.dumps(out), flush=True)


def _verdict(problem: P.Problem, mine: dict, alts: dict[str, dict]) -> str:
    if not problem.target:
        return ""
    if mine.get("status") != "ok":
        return "FAIL" if mine.get("status") == "timeout" else "n/a"
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
    return r.get("status", "")


def _fmt_mb(r: dict) -> str:
    return f"{r['peak_mb']:.0f}" if r and r.get("status") == "ok" else ""


def _ratio(mine: dict, alt: dict) -> str:
    if mine.get("status") == "ok" and alt and alt.get("status") == "ok" and mine["seconds"] > 0:
        return f"{alt['seconds'] / mine['seconds']:.1f}x"
    return ""


def render(rows: list[dict], fmt: str = "text") -> str:
    """The results table as aligned text or as Markdown."""
    header = ["problem", "size", "mixedblup s", "peak MB", "statsmodels s", "peak MB", "ratio",
              "lme4 s", "peak MB", "ratio", "target", "verdict"]
    body = []
    for row in rows:
        m, sm, r4 = row["mixedblup"], row.get("statsmodels", {}), row.get("lme4", {})
        body.append([row["problem"], row["size"], _fmt_s(m), _fmt_mb(m), _fmt_s(sm), _fmt_mb(sm), _ratio(m, sm),
                     _fmt_s(r4), _fmt_mb(r4), _ratio(m, r4), row["target"], row["verdict"]])
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also the 10^7-animal problems and slow alternatives")
    parser.add_argument("--slow-alternatives", action="store_true",
                        help="also run the alternatives skipped by default (statsmodels on InstEval, lme4 "
                             "through the Cholesky factor of A); implied by --full")
    parser.add_argument("--only", nargs="*", default=None, help="problem name prefixes to run")
    parser.add_argument("--skip", nargs="*", default=[], help="problem name prefixes or programs to skip")
    parser.add_argument("--no-alternatives", action="store_true", help="run mixedblup only")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    parser.add_argument("--list", action="store_true", help="list the problems and exit")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/latest.json and .md and the scaling plot docs/img/scaling.png")
    parser.add_argument("--worker", nargs=2, metavar=("PROBLEM", "TOOL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(*args.worker, args.full)
        return 0
    selected = []
    for p in P.problems():
        if p.full_only and not args.full:
            continue
        if args.only is not None and not any(p.name.startswith(o) for o in args.only):
            continue
        if any(p.name.startswith(s) for s in args.skip):
            continue
        selected.append(p)
    if args.list:
        for p in P.problems():
            print(f"{p.name:22s} {'(--full) ' if p.full_only else ''}{p.size}  target: {p.target or '-'}")
        return 0
    print(f"# mixedblup benchmarks, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", flush=True)
    print(f"# {machine()}", flush=True)
    rows = []
    for p in selected:
        row = {"problem": p.name, "size": p.size, "target": p.target}
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
            print(f"  running {p.name} with {tool} ...", file=sys.stderr, flush=True)
            row[tool] = _run_worker(p, tool, args.full)
        row["verdict"] = _verdict(p, row["mixedblup"], {k: v for k, v in row.items() if k in ALTERNATIVES})
        rows.append(row)
        m = row["mixedblup"]
        print(f"  {p.name}: {_fmt_s(m)} s, {_fmt_mb(m)} MB {row['verdict']}  {m.get('detail', '')}",
              file=sys.stderr, flush=True)
    print()
    print(render(rows))
    print()
    for row in rows:
        for tool in ("mixedblup",) + ALTERNATIVES:
            r = row.get(tool)
            if r and r.get("detail"):
                extra = ""
                if r.get("cpu_seconds") is not None:
                    extra = f" (cpu {r['cpu_seconds']:.2f} s, load {r.get('load', float('nan')):.1f})"
                print(f"{row['problem']} [{tool}] {r['status']}{extra}: {r['detail']}")
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "full": args.full, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(meta, indent=1))
    if args.markdown:
        args.markdown.write_text(render(rows, "markdown") + "\n")
    if args.save:
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
