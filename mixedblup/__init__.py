"""mixedblup: linear mixed models and BLUP.

lme4-style formulas on pandas DataFrames, pedigree relationship matrices through
their sparse inverse, and Henderson's mixed model equations.

>>> import mixedblup as mb
>>> res = mb.fit("weight ~ 0 + sex + (1|dam)", mb.datasets.load("pigs"),
...              variances={"dam": 0.016, "residual": 0.08})
"""

from . import datasets, interop
from .api import fit
from .compare import compare
from .covariance import Identity, Relationship
from .errors import (
    ConvergenceWarning,
    CovarianceError,
    CovarianceWarning,
    DataError,
    DataWarning,
    EstimationError,
    FormulaError,
    MixedBlupError,
    MixedBlupWarning,
    PedigreeError,
    PedigreeFixWarning,
    RankDeficiencyWarning,
    ResourceError,
    RowsDroppedWarning,
    ScaleWarning,
    SingularFitWarning,
)
from .formula import parse_formula
from .genomic import (
    GenomicRelationship,
    GenotypeWarning,
    SingleStep,
    adjust_relationship,
    genomic_relationship,
    h_inverse,
)
from .io import load
from .pedigree import Pedigree, read_pedigree
from .results import MixedModelResults
from .sire_mgs import SireMGSPedigree

__version__ = "0.1.0"

__all__ = [
    "fit",
    "compare",
    "load",
    "parse_formula",
    "Pedigree",
    "read_pedigree",
    "SireMGSPedigree",
    "Relationship",
    "Identity",
    "MixedModelResults",
    "datasets",
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
    "genomic_relationship",
    "adjust_relationship",
    "GenomicRelationship",
    "GenotypeWarning",
    "SingleStep",
    "h_inverse",
]
