"""Shared fixtures: bundled data and the lme4 reference fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LME4_DIR = Path(__file__).parent / "data" / "lme4"


def lme4_reference(name: str) -> dict:
    """One lme4 reference fit (see tests/data/lme4/README.md)."""
    return json.loads((LME4_DIR / f"{name}.json").read_text())


@pytest.fixture
def pigs():
    import mixedblup as mb

    return mb.datasets.load("pigs")
