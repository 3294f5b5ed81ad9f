"""mixedblup.simulate / mixedblup.datasets.simulate: structure and known parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.simulate import simulate_population


def test_same_seed_same_population_and_front_door_matches():
    a = mb.datasets.simulate(1500, n_generations=5, seed=3)
    b = simulate_population(1500, n_generations=5, seed=3)
    pd.testing.assert_frame_equal(a.pedigree, b.pedigree)
    pd.testing.assert_frame_equal(a.records, b.records)
    c = mb.datasets.simulate(1500, n_generations=5, seed=4)
    assert not a.records["y"].equals(c.records["y"])


def test_pedigree_structure():
    pop = mb.datasets.simulate(5000, n_generations=8, sires_per_generation=25, unknown_parent_rate=0.03, seed=1)
    ped = pop.pedigree
    assert len(ped) == 5000 and ped["id"].is_unique
    assert set(ped.columns) >= {"id", "sire", "dam", "generation", "herd", "sex"}
    later = ped[ped["generation"] > 0]
    # founders have unknown parents; later generations mostly known, at about the unknown rate
    assert (ped.loc[ped["generation"] == 0, ["sire", "dam"]] == "0").all().all()
    assert 0.005 < (later["sire"] == "0").mean() < 0.08
    # a limited number of AI sires per generation, all male; dams female
    by_id = ped.set_index("id")
    sires = later.loc[later["sire"] != "0", "sire"]
    assert (by_id.loc[sires.unique(), "sex"] == "M").all()
    assert (by_id.loc[later.loc[later["dam"] != "0", "dam"].unique(), "sex"] == "F").all()
    assert sires.groupby(later["generation"]).nunique().max() <= 25
    # parents come from earlier generations: a valid pedigree mixedblup accepts
    p = mb.Pedigree.from_frame(ped, id="id", sire="sire", dam="dam")
    assert len(p) == 5000
    F = p.inbreeding()
    assert (F >= 0).all() and (F < 1).all()


def test_records_columns_and_repeated_records():
    pop = mb.datasets.simulate(3000, records_per_animal=3, pe=0.1, recorded_fraction=0.5, seed=2)
    rec = pop.records
    assert list(rec.columns) == ["id", "herd_year", "parity", "dam", "y", "herd", "year", "pe"]
    assert (rec["pe"] == rec["id"]).all()
    assert rec.groupby("id").size().eq(3).all()
    assert set(rec["parity"]) == {1, 2, 3}
    assert (rec["herd_year"].str[:5] == rec["herd"]).all()
    sexes = pop.pedigree.set_index("id").loc[rec["id"].unique(), "sex"]
    assert (sexes == "F").all()


@pytest.mark.parametrize("which, expected", [("M", {"M"}), ("both", {"M", "F"})])
def test_recorded_sex(which, expected):
    pop = mb.datasets.simulate(2000, recorded_sex=which, seed=5)
    sexes = set(pop.pedigree.set_index("id").loc[pop.records["id"].unique(), "sex"])
    assert sexes == expected
    with pytest.raises(ValueError, match="recorded_sex"):
        mb.datasets.simulate(100, recorded_sex="X")


def test_integer_ids_and_unshuffled_order():
    pop = mb.datasets.simulate(500, string_ids=False, shuffle=False, seed=0)
    ped = pop.pedigree
    assert ped["id"].tolist() == list(range(1, 501))
    known = ped["sire"] != 0
    assert (ped.loc[known, "sire"] < ped.loc[known, "id"]).all()


def test_true_values_and_parameters():
    pop = mb.datasets.simulate(4000, additive=0.4, maternal=0.1, cov_am=-0.03, residual=0.5, seed=7)
    assert pop.parameters == dict(additive=0.4, maternal=0.1, cov_am=-0.03, pe=0.0, herd_year=0.2, residual=0.5)
    founders = pop.pedigree.loc[pop.pedigree["generation"] == 0, "id"]
    bv, mv = pop.breeding_values.loc[founders], pop.maternal_values.loc[founders]
    assert bv.var() == pytest.approx(0.4, rel=0.25)
    assert mv.var() == pytest.approx(0.1, rel=0.25)
    assert np.corrcoef(bv, mv)[0, 1] == pytest.approx(-0.03 / np.sqrt(0.04), abs=0.15)


def test_recovers_the_additive_variance():
    """Known parameters come back (one moderate replicate; a loose tolerance)."""
    pop = mb.datasets.simulate(2500, n_generations=6, herd_year=0.0, additive=0.5, residual=0.5,
                               recorded_sex="both", recorded_fraction=1.0, n_herds=1, seed=11)
    ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
    res = mb.fit("y ~ 1 + (1|id)", pop.records, cov={"id": ped})
    vc = res.variance_components.set_index("group")["estimate"]
    assert vc["id"] == pytest.approx(0.5, abs=0.2)
    assert vc["Residual"] == pytest.approx(0.5, abs=0.2)
