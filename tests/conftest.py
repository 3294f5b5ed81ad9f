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


def maternal_toy():
    """A 60-animal pedigree (12 founders) and records of the 48 others with their dam and a
    pen of four: a small direct-maternal (or social) model.  Returns ``(pedigree, data)``."""
    import numpy as np
    import pandas as pd

    import mixedblup as mb

    rng = np.random.default_rng(11)
    n = 60
    ids = [f"a{i}" for i in range(n)]
    sire = ["0" if i < 12 else f"a{2 * rng.integers(0, 6)}" for i in range(n)]
    dam = ["0" if i < 12 else f"a{2 * rng.integers(0, 6) + 1}" for i in range(n)]
    ped = mb.Pedigree.from_frame(pd.DataFrame({"id": ids, "sire": sire, "dam": dam}), id="id", sire="sire", dam="dam")
    rec = np.arange(12, n)
    data = pd.DataFrame({"animal": [ids[i] for i in rec], "dam": [dam[i] for i in rec],
                         "pen": [f"p{i // 4}" for i in range(len(rec))], "y": rng.normal(size=len(rec)) + 3})
    return ped, data


def lactation_records(n_animals: int, n_records: int):
    """Test-day records along a lactation (days in milk 5-305) with a random intercept and
    slope per animal: data for random regressions."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    dim = np.tile(np.linspace(5, 305, n_records), n_animals)
    animal = np.repeat([f"a{i}" for i in range(n_animals)], n_records)
    a, c = rng.normal(size=n_animals), rng.normal(size=n_animals)
    y = 20 + a.repeat(n_records) + c.repeat(n_records) * (dim - 155) / 150 + rng.normal(size=len(dim))
    return pd.DataFrame({"y": y, "dim": dim, "animal": animal})


@pytest.fixture
def pigs():
    import mixedblup as mb

    return mb.datasets.load("pigs")
