"""Bundled datasets: loaders, provenance and shipping inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import mixedblup as mb

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", mb.datasets.names())
def test_every_dataset_loads_with_provenance(name):
    frame = mb.datasets.load(name)
    assert isinstance(frame, pd.DataFrame) and len(frame) > 0
    assert mb.datasets.describe(name)
    assert name in (ROOT / "datasets" / "README.md").read_text()


def test_pigs_as_in_the_course_notes():
    pigs = mb.datasets.load("pigs")
    assert list(pigs.columns) == ["pig", "sex", "dam", "weight"]
    assert pigs["weight"].tolist() == [1.72, 1.45, 1.49, 1.36, 1.54, 1.50]
    assert pigs["dam"].tolist() == ["474"] * 3 + ["475"] * 3


def test_unknown_dataset():
    with pytest.raises(KeyError, match="pigs"):
        mb.datasets.load("nope")


def test_ids_are_read_as_strings():
    ped = mb.datasets.load("mrode_3_1_pedigree")
    assert all(isinstance(v, str) for v in ped["sire"])


def test_wheel_ships_the_datasets(tmp_path):
    """A normal (non-editable) wheel contains every file of datasets/."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), "-q"],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("mixedblup-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for csv in (ROOT / "datasets").glob("*.csv"):
        assert f"mixedblup/_datasets/{csv.name}" in names
