"""One exception and warning hierarchy for mixedblup.

Every exception is a :class:`MixedBlupError`, itself a :class:`ValueError`, so
``except ValueError`` keeps working for callers that do not know mixedblup.
Messages say what failed, show the offending value (column, row, level or ID)
and what to do next.  Where a fault concerns many rows or IDs the exception
carries them in full as ``problems`` (a DataFrame) while the message lists the
first few.

Warnings are typed subclasses of :class:`MixedBlupWarning`; the same facts are
kept on the returned object (for example ``result.diagnostics``), so nothing is
only shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

__all__ = [
    "MixedBlupError",
    "FormulaError",
    "DataError",
    "PedigreeError",
    "CovarianceError",
    "EstimationError",
    "ResourceError",
    "MixedBlupWarning",
    "RowsDroppedWarning",
    "RankDeficiencyWarning",
    "PedigreeFixWarning",
    "SingularFitWarning",
    "ConvergenceWarning",
    "ScaleWarning",
    "DataWarning",
    "CovarianceWarning",
    "GenotypeWarning",
    "preview",
]


class MixedBlupError(ValueError):
    """Base class of every error raised by mixedblup.

    Parameters
    ----------
    message : str
        What failed, the offending value and what to do next.
    problems : pandas.DataFrame, optional
        Every offending row, level or ID (the message shows only the first).
    """

    def __init__(self, message: str, problems: pd.DataFrame | None = None) -> None:
        super().__init__(message)
        self.problems = problems


class FormulaError(MixedBlupError):
    """The formula is malformed, refers to unknown names or uses disallowed syntax."""


class DataError(MixedBlupError):
    """The data cannot be used as given (non-finite values, wrong types, no rows...)."""


class PedigreeError(MixedBlupError):
    """The pedigree is inconsistent (loops, own parent, conflicting duplicates...)."""


class CovarianceError(MixedBlupError):
    """A covariance specification or supplied matrix is invalid or does not match the data."""


class EstimationError(MixedBlupError):
    """The mixed model equations cannot be solved (for example a singular system)."""


class ResourceError(MixedBlupError):
    """Building the model would need more memory than the configured limit (A19, D8).

    The message gives the estimate and the override (``allow_large=True`` or a
    larger limit); nothing large has been allocated when it is raised.
    """


class MixedBlupWarning(UserWarning):
    """Base class of every warning issued by mixedblup."""


class RowsDroppedWarning(MixedBlupWarning):
    """Rows were removed from the data (missing values); counts and labels are kept."""


class RankDeficiencyWarning(MixedBlupWarning):
    """The fixed-effect design is rank deficient; the named columns were dropped."""


class PedigreeFixWarning(MixedBlupWarning):
    """The pedigree was repaired automatically (added founders, dropped duplicates...)."""


class SingularFitWarning(MixedBlupWarning):
    """A variance component is on the boundary of the parameter space."""


class ConvergenceWarning(MixedBlupWarning):
    """The optimiser stopped before meeting its convergence criterion."""


class ScaleWarning(MixedBlupWarning):
    """Predictors or the response are on very different scales."""


class DataWarning(MixedBlupWarning):
    """Something in the data is legal but probably not what was meant."""


class GenotypeWarning(DataWarning):
    """Genotypes were changed or discarded: missing values imputed, markers dropped."""


class CovarianceWarning(MixedBlupWarning):
    """A supplied covariance matrix is legal but looks suspicious."""


def preview(items: Iterable[Any], limit: int = 10) -> str:
    """Render the first ``limit`` items of ``items`` for an error message.

    Parameters
    ----------
    items : iterable
        Values to show (IDs, row labels, levels).
    limit : int
        How many to show before summarising the rest as "... and N more".

    Returns
    -------
    str
        For example ``"'a', 'b', 'c' and 4 more"``.
    """
    values: Sequence[Any] = list(items)
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:limit])
    extra = len(values) - limit
    return f"{shown} and {extra} more" if extra > 0 else shown
