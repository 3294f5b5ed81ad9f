"""Rendering results as reports: text and HTML.  Numbers are formatted only here."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = ["Summary", "results_summary", "format_number"]


def format_number(value: Any, digits: int = 4) -> str:
    """Format one cell: numbers to ``digits`` significant decimals, NaN as blank."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return ""
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 1e6 or mag < 10 ** (-digits):
            return f"{value:.{digits}e}"
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


@dataclass
class Summary:
    """A report: a title, a block of key-value facts and titled tables.

    ``str(summary)`` is the text report; ``summary.as_html()`` (and the notebook
    display) renders HTML tables.  Tables stay numeric until rendered.

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

    def _repr_html_(self) -> str:
        return self.as_html()

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()


def results_summary(res: MixedModelResults) -> Summary:
    """Build the standard report of a fitted model."""
    how = "known variances" if res.variances_known else res.method
    info: list[tuple[str, Any]] = [
        ("Model", "linear mixed model"),
        ("Formula", res.formula),
        ("Variances", how),
        ("No. observations", res.nobs),
        ("Log-likelihood", res.loglik),
        ("Likelihood", res.method),
        ("AIC", res.aic),
        ("BIC", res.bic),
    ]
    opt = res.optimizer
    if opt is not None:
        info.append(("Converged", "yes" if opt.converged else "NO"))
        info.append(("Evaluations", opt.evaluations))
        info.append(("Boundary terms", ", ".join(opt.boundary) or "none"))
    for name, row in res.terms.iterrows():
        info.append((f"Levels of {name}", f"{row['n_levels']} ({row['n_observed']} observed, {row['covariance']})"))
    fe = res.fixed_effects.drop(columns=["dropped"])
    fe.index.name = None
    vc = res.variance_components.set_index(["group", "term1", "term2"])
    vc.index.names = [None, None, None]
    notes = []
    if res.variances_known:
        notes.append("Variance components were given, not estimated; tests treat them as known (z).")
    if res.fixed_effects["dropped"].any():
        dropped = list(res.fixed_effects.index[res.fixed_effects["dropped"]])
        notes.append(f"Rank deficient fixed effects dropped: {', '.join(dropped)}.")
    if len(res.dropped_rows):
        notes.append(f"{len(res.dropped_rows)} row(s) with missing values were dropped.")
    return Summary(
        title="Linear mixed model results",
        info=info,
        tables=[("Fixed effects", fe), ("Variance components", vc)],
        notes=notes,
    )
