"""Rendering results as reports: text, HTML, LaTeX and Markdown.  Numbers are formatted only here."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = ["Summary", "format_number", "results_summary"]


def format_number(value: Any, digits: int = 4) -> str:
    """Format one cell: numbers to ``digits`` significant decimals, NaN as blank."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return ""
        if np.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 1e6 or mag < 10 ** (-digits):
            return f"{value:.{digits}e}"
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _md(text: str) -> str:
    return str(text).replace("|", r"\|")


def _flat_index(table: pd.DataFrame) -> list[str]:
    if isinstance(table.index, pd.MultiIndex):
        return [" ".join(str(x) for x in tup if str(x) != "") for tup in table.index]
    return [str(x) for x in table.index]


@dataclass
class Summary:
    """A report: a title, a block of key-value facts and titled tables.

    ``str(summary)`` is the text report; ``as_html()`` (also the notebook display),
    ``as_latex()`` and ``as_markdown()`` render the same content.  Tables stay
    numeric until rendered.

    Attributes
    ----------
    title : str
        First line of the report.
    info : list of (str, object)
        Facts about the model (method, nobs, logLik ...).
    tables : list of (str, pandas.DataFrame)
        Titled tables.
    notes : list of str
        Footnotes (warnings, boundary terms ...).
    """

    title: str
    info: list[tuple[str, Any]] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def _formatted(self, table: pd.DataFrame) -> pd.DataFrame:
        return table.apply(lambda col: col.map(format_number)).astype(str)

    def table(self, title: str) -> pd.DataFrame:
        """The (numeric) table with this title."""
        for t, table in self.tables:
            if t == title:
                return table
        raise KeyError(f"no table {title!r}; the tables are {[t for t, _ in self.tables]}")

    def as_text(self) -> str:
        """The report as plain text."""
        blocks: list[str] = []
        info = [(k, format_number(v)) for k, v in self.info]
        half = (len(info) + 1) // 2
        left, right = info[:half], info[half:]
        lw = max((len(k) + len(v) for k, v in left), default=0) + 4
        rw = max((len(k) + len(v) for k, v in right), default=0) + 4
        lines = []
        for i in range(half):
            k, v = left[i]
            cell = f"{k}:".ljust(lw - len(v)) + v
            if i < len(right):
                k2, v2 = right[i]
                cell += "    " + f"{k2}:".ljust(rw - len(v2)) + v2
            lines.append(cell)
        body_tables = []
        for title, table in self.tables:
            text = self._formatted(table).to_string()
            body_tables.append((title, text))
        width = max([len(self.title)] + [len(x) for x in lines]
                    + [len(line) for _, t in body_tables for line in t.splitlines()])
        rule, thin = "=" * width, "-" * width
        blocks.append(self.title.center(width))
        blocks.append(rule)
        blocks.extend(lines)
        for title, text in body_tables:
            blocks.append(rule)
            blocks.append(title)
            blocks.append(thin)
            blocks.append(text)
        blocks.append(rule)
        blocks.extend(self.notes)
        return "\n".join(blocks)

    def as_html(self) -> str:
        """The report as HTML tables."""
        parts = [f"<h4>{html.escape(self.title)}</h4>", "<table class='mixedblup-info'>"]
        for k, v in self.info:
            parts.append(f"<tr><th>{html.escape(k)}</th><td>{html.escape(format_number(v))}</td></tr>")
        parts.append("</table>")
        for title, table in self.tables:
            parts.append(f"<h5>{html.escape(title)}</h5>")
            parts.append(self._formatted(table).to_html(escape=True))
        for note in self.notes:
            parts.append(f"<p>{html.escape(note)}</p>")
        return "\n".join(parts)

    def as_latex(self) -> str:
        """The report as LaTeX ``tabular`` environments (booktabs rules)."""
        out = [f"% {self.title}", r"\begin{tabular}{ll}", r"\toprule"]
        for k, v in self.info:
            out.append(f"{_latex(k)} & {_latex(format_number(v))} \\\\")
        out += [r"\bottomrule", r"\end{tabular}", ""]
        for title, table in self.tables:
            cells = self._formatted(table)
            rows = _flat_index(table)
            out.append(f"% {title}")
            out.append(r"\begin{tabular}{l" + "r" * cells.shape[1] + "}")
            out.append(r"\toprule")
            out.append(" & ".join([""] + [_latex(c) for c in cells.columns]) + r" \\")
            out.append(r"\midrule")
            for label, (_, row) in zip(rows, cells.iterrows()):
                out.append(" & ".join([_latex(label)] + [_latex(x) for x in row]) + r" \\")
            out += [r"\bottomrule", r"\end{tabular}", ""]
        out.extend(f"% {_latex(n)}" for n in self.notes)
        return "\n".join(out)

    def as_markdown(self) -> str:
        """The report as Markdown (pipe tables)."""
        out = [f"**{_md(self.title)}**", "", "| | |", "|---|---|"]
        out += [f"| {_md(k)} | {_md(format_number(v))} |" for k, v in self.info]
        for title, table in self.tables:
            cells = self._formatted(table)
            rows = _flat_index(table)
            out += ["", f"*{_md(title)}*", "",
                    "| " + " | ".join([""] + [_md(c) for c in cells.columns]) + " |",
                    "|---" + "|---:" * cells.shape[1] + "|"]
            for label, (_, row) in zip(rows, cells.iterrows()):
                out.append("| " + " | ".join([_md(label)] + [_md(x) for x in row]) + " |")
        if self.notes:
            out.append("")
            out += [f"* {_md(n)}" for n in self.notes]
        return "\n".join(out)

    def _repr_html_(self) -> str:
        return self.as_html()

    def _repr_markdown_(self) -> str:
        return self.as_markdown()

    def _repr_latex_(self) -> str:
        return self.as_latex()

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()


def _fixed_table(res: MixedModelResults) -> pd.DataFrame:
    fe = res.fixed_effects.drop(columns=["dropped"]).copy()
    fe.index.name = None
    stat = "z" if res.variances_known or not np.isfinite(fe["df"]).any() else "t"
    fe = fe.rename(columns={"statistic": stat})
    if res.variances_known:
        fe = fe.drop(columns=["df"])
    return fe


def _heritability_table(res: MixedModelResults) -> pd.DataFrame | None:
    genetic = [n for n, kind in res.terms["covariance"].items() if kind in ("pedigree", "relationship")]
    if not genetic:
        return None
    vc = res.variance_components
    residual = vc[vc["group"] == "Residual"]
    # residual classes: one heritability per class (the records of that class)
    classes = [None] if len(residual) < 2 else list(residual["term1"])
    rows = {}
    for name in genetic:
        columns = list(res.terms.loc[name, "columns"])
        # one row per column of a multi-column or joint term (direct, maternal ...)
        keys = [(name, name)] if len(columns) == 1 else [(f"{name}:{c}", (name, c)) for c in columns]
        for label, key in keys:
            for cls in classes:
                try:
                    h2 = res.heritability(key) if cls is None else res.heritability(key, residual_class=cls)
                except Exception:  # noqa: BLE001, S112 - a report never fails on an optional row
                    continue
                rows[label if cls is None else f"{label} (residual {cls})"] = h2
    if not rows:
        return None
    table = pd.DataFrame(rows).T
    table.index.name = None
    return table


def results_summary(res: MixedModelResults) -> Summary:
    """Build the standard report of a fitted model."""
    how = "known (given)" if res.variances_known else f"estimated by {res.method}"
    crit_name = "REML criterion" if res.method == "REML" else "Deviance"
    info: list[tuple[str, Any]] = [
        ("Model", "linear mixed model"),
        ("Formula", res.formula),
        ("Likelihood", res.method),
        ("Variances", how),
        ("No. observations", res.nobs),
        (crit_name, -2.0 * res.loglik),
        ("Log-likelihood", res.loglik),
        ("AIC", res.aic),
        ("BIC", res.bic),
        ("Parameters", res.npar),
    ]
    opt = res.optimizer
    if opt is not None:
        info.append(("Converged", "yes" if opt.converged else "NO"))
        info.append(("Iterations / evals", f"{opt.iterations} / {opt.evaluations}"))
        info.append(("Boundary terms", ", ".join(opt.boundary) or "none"))
    solver = getattr(res, "solver_info", None)
    if solver is not None:
        info.extend(solver.summary_items())
    for name, row in res.terms.iterrows():
        info.append((f"Groups: {name}", f"{row['n_levels']} ({row['n_observed']} observed, {row['covariance']})"))
    fe = _fixed_table(res)
    vc = res.variance_components.set_index(["group", "term1", "term2"])
    vc = vc.rename(columns={"estimate": "variance", "sdcor": "sd / cor"})
    vc.index.names = [None, None, None]
    tables = [("Fixed effects", fe), ("Variance components", vc)]
    h2 = _heritability_table(res)
    if h2 is not None:
        tables.append(("Heritability (share of the total variance)", h2))
    notes = []
    if res.variances_known and solver is not None:
        notes.append("Variance components were given, not estimated.")
    elif res.variances_known:
        notes.append("Variance components were given, not estimated; tests treat them as known (z).")
    elif "t" in fe.columns:
        notes.append("t tests with Satterthwaite's denominator degrees of freedom.")
    if opt is not None and opt.boundary:
        notes.append(f"Singular fit: variance(s) of {', '.join(opt.boundary)} estimated as zero.")
    if opt is not None and getattr(opt, "held", ()):
        notes.append(f"Held at given values (fixed_variances, not estimated): {', '.join(opt.held)}.")
    groups = getattr(res._design, "residual_groups", None)
    if groups is not None:
        notes.append(f"One residual variance per class of {groups.column!r}.")
    if opt is not None and not opt.converged:
        notes.append(f"The optimiser did not converge: {opt.message}.")
    if solver is not None:
        notes.extend(solver.summary_notes())
    if res.fixed_effects["dropped"].any():
        dropped = list(res.fixed_effects.index[res.fixed_effects["dropped"]])
        notes.append(f"Rank deficient fixed effects dropped: {', '.join(dropped)}.")
    if len(res.dropped_rows):
        why = "missing values or zero weights" if res._design.weights is not None else "missing values"
        notes.append(f"{len(res.dropped_rows)} row(s) dropped for {why} (listed in result.dropped_rows).")
    for _, d in res.diagnostics.iterrows():
        notes.append(f"[{d['level']}] {d['message']}")
    # inference computed on first use (the fixed-effect table above): why df may be missing
    notes.extend(f"[warning] {note}" for note in getattr(res, "_inference_notes", []))
    return Summary(title="Linear mixed model results", info=info, tables=tables, notes=notes)
