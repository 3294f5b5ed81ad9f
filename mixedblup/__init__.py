"""mixedblup: linear mixed models and BLUP with lme4-style formulas and pedigrees."""

from .errors import (
    ConvergenceWarning,
    CovarianceError,
    DataError,
    EstimationError,
    FormulaError,
    MixedBlupError,
    MixedBlupWarning,
    PedigreeError,
    RowsDroppedWarning,
    SingularFitWarning,
)

__version__ = "0.1.0"
