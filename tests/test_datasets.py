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


def test_textbook_pedigree_with_inbreeding():
    """Mrode (2005) Section 2.1: F = 0.125 for animals 5 and 6, checked by the tabular method."""
    import numpy as np

    frame = mb.datasets.load("mrode_2_1_pedigree")
    n = len(frame)
    pos = {a: i for i, a in enumerate(frame["animal"])}
    A = np.zeros((n, n))
    for i, (s, d) in enumerate(zip(frame["sire"], frame["dam"])):  # rows are in birth order
        si, di = pos.get(s), pos.get(d)
        for j in range(i):
            A[i, j] = A[j, i] = 0.5 * ((A[j, si] if si is not None else 0) + (A[j, di] if di is not None else 0))
        A[i, i] = 1 + (0.5 * A[si, di] if si is not None and di is not None else 0)
    assert np.diag(A).tolist() == [1, 1, 1, 1, 1.125, 1.125]
    ped = mb.Pedigree.from_frame(frame, id="animal", sire="sire", dam="dam")
    assert ped.inbreeding().loc[["1", "2", "3", "4", "5", "6"]].tolist() == [0, 0, 0, 0, 0.125, 0.125]


def test_dairy_set_is_as_documented():
    rec = mb.datasets.load("dairy")
    ped = mb.datasets.load("dairy_pedigree")
    assert list(rec.columns) == ["animal", "dam", "herd", "year", "herd_year", "parity", "pe", "y"]
    assert len(rec) == 3168 and rec["animal"].nunique() == 1430 and rec["herd_year"].nunique() == 618
    assert len(ped) == 4000 and ped["generation"].max() == 7
    assert (rec["pe"] == rec["animal"]).all()
    assert set(rec["parity"]) == {"1", "2", "3"}
    assert rec["animal"].isin(ped["animal"]).all()
    assert rec.loc[rec["dam"] != "0", "dam"].isin(ped["animal"]).all()
    by_id = ped.set_index("animal")
    assert (by_id.loc[rec["animal"].unique(), "dam"].to_numpy() ==
            rec.drop_duplicates("animal").set_index("animal")["dam"].to_numpy()).all()
    p = mb.Pedigree.from_frame(ped, id="animal", sire="sire", dam="dam")
    assert len(p) == 4000 and not p.added_founders
    size = sum((ROOT / "datasets" / f).stat().st_size for f in ("dairy.csv", "dairy_pedigree.csv"))
    assert size < 1_000_000


def test_dairy_files_are_reproduced_by_their_script(tmp_path):
    """datasets/make_dairy.py regenerates the committed files byte for byte."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_dairy", ROOT / "datasets" / "make_dairy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make(tmp_path)
    for name in ("dairy.csv", "dairy_pedigree.csv"):
        assert (tmp_path / name).read_bytes() == (ROOT / "datasets" / name).read_bytes(), name


def test_every_csv_is_catalogued():
    files = {p.name for p in (ROOT / "datasets").glob("*.csv")}
    catalogued = {mb.datasets._CATALOG[n].file for n in mb.datasets.names()}
    assert files == catalogued


def test_simulate_front_door():
    pop = mb.datasets.simulate(800, n_generations=4, seed=2)
    assert len(pop.pedigree) == 800 and len(pop.records) > 0
    assert pop.parameters["additive"] == 0.3
