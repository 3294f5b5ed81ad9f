"""Shared fixtures: bundled data and the lme4 reference fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LME4_DIR = Path(__file__).parent / "data" / "lme4"


def pytest_report_header(config):
    """Versions and the BLAS in use head the test log (results can be BLAS-dependent)."""
    import numpy as np
    import scipy

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas_text = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # pragma: no cover - numpy without dict mode
        blas_text = "unknown"
    from mixedblup._accel import NUMBA

    return f"numpy {np.__version__}, scipy {scipy.__version__}, BLAS {blas_text}, numba kernels: {NUMBA}"


def lme4_reference(name: str) -> dict:
    """One lme4 reference fit (see tests/data/lme4/README.md)."""
    return json.loads((LME4_DIR / f"{name}.json").read_text())


@pytest.fixture
def pigs():
    import mixedblup as mb

    return mb.datasets.load("pigs")
