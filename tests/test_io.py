"""save / load: JSON + NPZ without pickle; identical tables; tampered files refused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.io import _content_hash
from tests.conftest import lactation_records, maternal_toy


@pytest.fixture(scope="module")
def sleep():
    return mb.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return mb.fit("Reaction ~ Days + (Days|Subject)", sleep)


def assert_same_results(a, b):
    pd.testing.assert_frame_equal(a.fixed_effects, b.fixed_effects, check_exact=True)
    pd.testing.assert_frame_equal(a.variance_components, b.variance_components, check_exact=True)
    pd.testing.assert_frame_equal(a.random_effects(), b.random_effects(), check_exact=True)
    pd.testing.assert_frame_equal(a.vcov_fixed, b.vcov_fixed, check_exact=True)
    pd.testing.assert_series_equal(a.fitted, b.fitted, check_exact=True)
    pd.testing.assert_series_equal(a.residuals, b.residuals, check_exact=True)
    pd.testing.assert_frame_equal(a.tidy(), b.tidy(), check_exact=True)
    pd.testing.assert_frame_equal(a.glance(), b.glance(), check_exact=True)
    assert (a.loglik, a.aic, a.bic, a.nobs, a.npar) == (b.loglik, b.aic, b.bic, b.nobs, b.npar)
    assert a.dropped_rows.equals(b.dropped_rows)
    assert str(a.summary()) == str(b.summary())
    if a.vcov_variance_components is not None:
        pd.testing.assert_frame_equal(a.vcov_variance_components, b.vcov_variance_components, check_exact=True)


def test_round_trip_estimated(tmp_path, sleep_fit):
    path = sleep_fit.save(tmp_path / "fit")
    assert path == tmp_path / "fit.json" and (tmp_path / "fit.npz").exists()
    loaded = mb.load(path)
    assert_same_results(sleep_fit, loaded)
    assert loaded.optimizer.converged == sleep_fit.optimizer.converged
    np.testing.assert_array_equal(loaded.optimizer.theta, sleep_fit.optimizer.theta)
    pd.testing.assert_frame_equal(sleep_fit.anova(), loaded.anova(), check_exact=True)
    # the stem and the npz name load the same files
    assert_same_results(sleep_fit, mb.load(tmp_path / "fit"))
    with np.load(tmp_path / "fit.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_round_trip_known_variances_with_dropped_rows(tmp_path, pigs):
    data = pigs.copy()
    data.loc[data.index[2], "weight"] = np.nan
    with pytest.warns(mb.RowsDroppedWarning):
        fit = mb.fit("weight ~ 0 + sex + (1|dam)", data, variances={"dam": 0.016, "residual": 0.08})
    loaded = mb.load(fit.save(tmp_path / "pigs.json"))
    assert_same_results(fit, loaded)
    assert len(loaded.dropped_rows) == 1


def test_round_trip_pedigree_model(tmp_path):
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    fit = mb.fit("wwg ~ 0 + sex + (1|calf)", mb.datasets.load("mrode_3_1"), cov={"calf": ped},
                 variances={"calf": 20, "residual": 40})
    loaded = mb.load(fit.save(tmp_path / "animal"))
    assert_same_results(fit, loaded)
    pd.testing.assert_frame_equal(fit.breeding_values(), loaded.breeding_values(), check_exact=True)
    pd.testing.assert_frame_equal(fit.ebv_decomposition(pedigree=ped), loaded.ebv_decomposition(pedigree=ped))


def test_round_trip_with_model_frame_restores_predict(tmp_path, sleep, sleep_fit):
    with_frame = dataclasses.replace(sleep_fit, _frame=sleep[["Reaction", "Days", "Subject"]].copy())
    loaded = mb.load(with_frame.save(tmp_path / "framed"))
    assert_same_results(sleep_fit, loaded)
    new = pd.DataFrame({"Days": [2.5, 7.0], "Subject": ["309", "372"]}, index=["x", "y"])
    pd.testing.assert_series_equal(loaded.predict(new), sleep_fit.predict(new), check_exact=True)
    pd.testing.assert_frame_equal(loaded.augment(), with_frame.augment(), check_exact=True)


def test_loaded_results_predict_new_data(tmp_path, sleep, sleep_fit):
    loaded = mb.load(sleep_fit.save(tmp_path / "fit"))
    pd.testing.assert_series_equal(loaded.predict(), sleep_fit.predict(), check_exact=True)
    pd.testing.assert_series_equal(loaded.predict(sleep.head()), sleep_fit.predict(sleep.head()))


def _rehash(json_path, npz_path):
    doc = json.loads(json_path.read_text())
    doc["npz_sha256"] = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    doc["content_sha256"] = _content_hash(doc)
    json_path.write_text(json.dumps(doc))


def test_tampered_parameters_are_refused(tmp_path, sleep_fit):
    path = sleep_fit.save(tmp_path / "fit")
    doc = json.loads(path.read_text())
    doc["residual"] = doc["residual"] * (1 + 1e-6)
    path.write_text(json.dumps(doc))
    with pytest.raises(mb.DataError, match="edited"):
        mb.load(path)
    # with a recomputed checksum the criterion no longer matches the stored parameters
    doc["residual"] = doc["residual"] * 1.01
    doc["content_sha256"] = _content_hash(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(mb.DataError, match="-2 log L recomputed"):
        mb.load(path)


def test_tampered_arrays_are_refused(tmp_path, sleep_fit):
    path = sleep_fit.save(tmp_path / "fit")
    npz_path = tmp_path / "fit.npz"
    with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["y"] = arrays["y"].copy()
    arrays["y"][0] += 1.0
    np.savez_compressed(npz_path, **arrays)
    with pytest.raises(mb.DataError, match="checksum"):
        mb.load(path)
    _rehash(path, npz_path)  # a consistent checksum does not help: the content is re-checked
    with pytest.raises(mb.DataError, match="-2 log L recomputed|frame and the stored matrices disagree"):
        mb.load(path)


def test_not_a_results_file(tmp_path, sleep_fit):
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(mb.DataError, match="not a mixedblup results file"):
        mb.load(tmp_path / "x.json")
    path = sleep_fit.save(tmp_path / "fit")
    (tmp_path / "fit.npz").unlink()
    with pytest.raises(mb.DataError, match="missing"):
        mb.load(path)


# --------------------------------------------------------------------------- every kind of fit
def assert_round_trip(fit, loaded, new=None):
    """The loaded object gives the tables of the fit it was saved from, to the last digit."""
    assert_same_results(fit, loaded)
    for name in fit.terms.index:
        pd.testing.assert_frame_equal(fit.random_effects(name), loaded.random_effects(name), check_exact=True)
    pd.testing.assert_frame_equal(fit.terms, loaded.terms, check_exact=True)
    assert fit.summary().as_text() == loaded.summary().as_text()
    assert fit.residual_variance == loaded.residual_variance
    if fit.optimizer is not None:
        for f in dataclasses.fields(fit.optimizer):
            np.testing.assert_array_equal(getattr(loaded.optimizer, f.name), getattr(fit.optimizer, f.name), f.name)
    if new is not None:
        pd.testing.assert_series_equal(loaded.predict(new), fit.predict(new), check_exact=True)
        pd.testing.assert_frame_equal(loaded.predict(new, se=True), fit.predict(new, se=True), check_exact=True)


def round_trip(fit, tmp_path, new=None, name="fit"):
    loaded = mb.load(fit.save(tmp_path / name))
    assert_round_trip(fit, loaded, new)
    return loaded


@pytest.fixture(scope="module")
def groups_data():
    return pd.read_csv(Path(__file__).parent / "data" / "residual_groups" / "data.csv")


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_round_trip_residual_groups_estimated(tmp_path, groups_data, method):
    fit = mb.fit("y ~ x + (1|a)", groups_data, residual_groups="g", weights="w", method=method)
    loaded = round_trip(fit, tmp_path, new=groups_data.head(4).assign(x=0.5))
    vc = loaded.variance_components
    assert list(vc.loc[vc["group"] == "Residual", "term1"]) == ["A", "B", "C"]
    assert loaded._design.residual_groups.column == "g"
    np.testing.assert_array_equal(loaded._design.residual_groups.codes, fit._design.residual_groups.codes)
    assert "One residual variance per class of 'g'" in loaded.summary().as_text()
    pd.testing.assert_frame_equal(loaded.anova(), fit.anova(), check_exact=True)


def test_round_trip_residual_groups_known_and_held(tmp_path, groups_data):
    known = mb.fit("y ~ x + (1|a)", groups_data, residual_groups="g",
                   variances={"a": 1.2, "residual": {"A": 1.0, "B": 2.5, "C": 0.7}})
    round_trip(known, tmp_path, new=groups_data.tail(3), name="known")
    held = mb.fit("y ~ x + (1|a)", groups_data, residual_groups="g", fixed_variances={"residual": {"B": 2.0}})
    loaded = round_trip(held, tmp_path, name="held")
    assert loaded.optimizer.held == held.optimizer.held != ()


def test_tampered_residual_class_variance_is_refused(tmp_path, groups_data):
    fit = mb.fit("y ~ x + (1|a)", groups_data, residual_groups="g",
                 variances={"a": 1.2, "residual": {"A": 1.0, "B": 2.5, "C": 0.7}})
    path = fit.save(tmp_path / "fit")
    doc = json.loads(path.read_text())
    doc["residual_groups"]["variances"][2] *= 1.01
    doc["content_sha256"] = _content_hash(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(mb.DataError, match="-2 log L recomputed"):
        mb.load(path)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_round_trip_held_variances(tmp_path, sleep, method):
    fit = mb.fit("Reaction ~ Days + (Days|Subject)", sleep, fixed_variances={"residual": 650.0}, method=method)
    loaded = round_trip(fit, tmp_path, new=sleep.head(3).assign(Days=2.5))
    assert loaded.optimizer.held == fit.optimizer.held != ()
    vc = loaded.variance_components
    assert np.isnan(vc.loc[vc["group"] == "Residual", "std_error"]).all()
    assert loaded.npar == fit.npar and loaded.aic == fit.aic
    pd.testing.assert_frame_equal(loaded.anova(), fit.anova(), check_exact=True)


def _upg_case():
    """Founders in two groups, offspring with some unknown parents in a third; records on offspring."""
    rng = np.random.default_rng(7)
    ids = [f"f{i}" for i in range(8)] + [f"c{i}" for i in range(24)]
    sire = ["0"] * 8 + [f"f{rng.integers(0, 4)}" if i % 4 else "0" for i in range(24)]
    dam = ["0"] * 8 + [f"f{4 + rng.integers(0, 4)}" if i % 5 else "0" for i in range(24)]
    group = ["old"] * 4 + ["mid"] * 4 + ["new"] * 24
    frame = pd.DataFrame({"id": ids, "sire": sire, "dam": dam, "g": group})
    ped = mb.Pedigree.from_frame(frame, id="id", sire="sire", dam="dam", upg="g", min_group_size=1)
    order = [str(a) for a in ped.ids]
    a_true = np.linalg.cholesky(ped.a_matrix(order).to_numpy()) @ rng.normal(0, 1.5, len(order))
    rec = np.repeat(ids[8:], 3)
    data = pd.DataFrame({"id": rec, "x": rng.normal(size=len(rec))})
    unknown_parent = np.repeat([s == "0" or d == "0" for s, d in zip(sire[8:], dam[8:])], 3)
    data["y"] = (0.7 * data["x"] + a_true[[order.index(a) for a in rec]] + 1.0 * unknown_parent
                 + rng.normal(0, 1.0, len(data)))
    return ped, data


@pytest.fixture(scope="module")
def upg():
    return _upg_case()


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_round_trip_fixed_unknown_parent_groups(tmp_path, upg, method):
    from mixedblup.genetic_groups import GroupedPedigree

    ped, data = upg
    new = data.head(3).assign(x=0.0)
    known = mb.fit("y ~ 0 + x + (1|id)", data, cov={"id": GroupedPedigree(ped)},
                   variances={"id": 1.0, "residual": 1.0}, method=method)
    assert known._cp.covariances[0].n_fixed_levels == 3
    loaded = round_trip(known, tmp_path, new=new, name="known")
    assert loaded._cp.covariances[0].n_fixed_levels == 3
    with pytest.warns(mb.RankDeficiencyWarning, match="reference"):  # intercept: a reference group
        est = mb.fit("y ~ 1 + x + (1|id)", data, cov={"id": GroupedPedigree(ped)}, method=method)
    assert est._cp.covariances[0].n_fixed_levels == 2
    path = est.save(tmp_path / "est")
    assert [t["n_fixed_levels"] for t in json.loads(path.read_text())["terms"]] == [2]
    assert_round_trip(est, mb.load(path), new)


def test_fixed_groups_without_their_count_are_refused(tmp_path, upg):
    """The group count enters -2 log L (REML's p): a file that loses it does not load."""
    from mixedblup.genetic_groups import GroupedPedigree

    ped, data = upg
    fit = mb.fit("y ~ 0 + x + (1|id)", data, cov={"id": GroupedPedigree(ped)},
                 variances={"id": 1.0, "residual": 1.0})
    path = fit.save(tmp_path / "fit")
    doc = json.loads(path.read_text())
    doc["terms"][0]["n_fixed_levels"] = 0
    doc["content_sha256"] = _content_hash(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(mb.DataError, match="-2 log L recomputed"):
        mb.load(path)


def test_random_groups_round_trip(tmp_path, upg):
    from mixedblup.genetic_groups import GroupedPedigree

    ped, data = upg
    fit = mb.fit("y ~ 1 + x + (1|id)", data, cov={"id": GroupedPedigree(ped, groups="random", group_variance=0.5)},
                 variances={"id": 1.0, "residual": 1.0})
    round_trip(fit, tmp_path, new=data.head(2))


def test_pcg_fit_is_refused_before_writing(tmp_path, pigs):
    from mixedblup.iterative import PCGInferenceWarning

    with pytest.warns(PCGInferenceWarning):
        fit = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08}, solver="pcg")
    with pytest.raises(mb.DataError, match="solver='pcg'.*refit with solver='direct'") as info:
        fit.save(tmp_path / "fit")
    assert isinstance(info.value, mb.EstimationError)  # what save raised before
    assert list(tmp_path.iterdir()) == []


def test_unknown_design_features_are_refused_before_writing(tmp_path, groups_data, monkeypatch):
    """A design field the layout does not store (here: pretend weights were new) is refused."""
    from mixedblup import io

    fit = mb.fit("y ~ x + (1|a)", groups_data, weights="w", variances={"a": 1.0, "residual": 1.0})
    fields = {**io._STORED_FIELDS, "Design": io._STORED_FIELDS["Design"] - {"weights"}}
    monkeypatch.setattr(io, "_STORED_FIELDS", fields)
    with pytest.raises(mb.DataError, match=r"cannot store the design: Design field\(s\) \['weights'\]"):
        fit.save(tmp_path / "fit")
    assert list(tmp_path.iterdir()) == []


def _mrode_3_1():
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    return ped, mb.datasets.load("mrode_3_1")


def _relationship_fit(inverse):
    ped, data = _mrode_3_1()
    A = ped.a_matrix()
    G = 0.9 * A + 0.1 * np.eye(len(A))
    cov = (mb.Relationship(np.linalg.inv(G.to_numpy()), labels=list(G.index), inverse=True) if inverse
           else mb.Relationship(G))
    return mb.fit("wwg ~ 0 + sex + (1|calf)", data, cov={"calf": cov}, variances={"calf": 20, "residual": 40}), data


def _single_step_fit():
    ped, data = _mrode_3_1()
    genotyped = [str(a) for a in list(ped.ids)[3:]]
    A22 = ped.a_matrix(genotyped)
    G = 0.95 * A22 + 0.05 * np.eye(len(A22))
    return mb.fit("wwg ~ 0 + sex + (1|calf)", data, cov={"calf": mb.SingleStep(ped, G)},
                  variances={"calf": 20, "residual": 40}), data


def _sire_mgs_fit():
    frame = pd.DataFrame({"bull": ["1", "2", "3", "4", "5", "6"], "sire": ["0", "0", "1", "1", "3", "4"],
                          "mgs": ["0", "0", "0", "2", "2", "1"]})
    smgs = mb.SireMGSPedigree.from_frame(frame, id="bull", sire="sire", mgs="mgs")
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"y": rng.normal(10, 2, 30), "herd": rng.choice(["a", "b"], 30),
                         "sire": rng.choice(["3", "4", "5", "6"], 30)})
    return mb.fit("y ~ 0 + herd + (1|sire)", data, cov={"sire": smgs}, variances={"sire": 5.0, "residual": 55.0}), data


def _maternal_fit():
    data = mb.datasets.load("mrode_7_1")
    data["mpe"] = data["dam"]
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_7_1_pedigree"), id="animal", sire="sire", dam="dam")
    G0 = np.array([[150.0, -40.0], [-40.0, 90.0]])
    return mb.fit("bw ~ 0 + pen + herd + (1|calf) + (1|dam) + (1|mpe)", data, cov={("calf", "dam"): ped},
                  variances={("calf", "dam"): G0, "mpe": 40.0, "residual": 350.0}), data


def _maternal_reml_fit():
    ped, data = maternal_toy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mb.SingularFitWarning)
        fit = mb.fit("y ~ 1 + (1|animal) + (1|dam)", data, cov={("animal", "dam"): ped})
    return fit, data


def _social_fit():
    rng = np.random.default_rng(5)
    ids = [f"f{i}" for i in range(6)] + [f"a{i}" for i in range(16)]
    sire = ["0"] * 6 + [f"f{rng.integers(0, 3)}" for _ in range(16)]
    dam = ["0"] * 6 + [f"f{3 + rng.integers(0, 3)}" for _ in range(16)]
    ped = mb.Pedigree.from_frame(pd.DataFrame({"id": ids, "sire": sire, "dam": dam}), id="id", sire="sire", dam="dam")
    data = pd.DataFrame({"animal": ids[6:], "pen": [f"p{i // 4}" for i in range(16)], "y": rng.normal(size=16) + 5})
    G0 = np.array([[1.0, 0.2], [0.2, 0.5]])
    return mb.fit("y ~ 1 + (1|animal) + (1|mates(animal, pen))", data, cov={("animal", "mates(animal, pen)"): ped},
                  variances={("animal", "mates(animal,pen)"): G0, "residual": 1.0}), data


def _random_regression_fit():
    data = lactation_records(12, 5)
    return mb.fit("y ~ 0 + leg(dim, 1) + (0 + leg(dim, 1) | animal)", data, checks={"nobs_vs_nre": "ignore"}), data


def _weighted_ml_fit():
    data = mb.datasets.load("sleepstudy").assign(w=lambda d: 1.0 + (d["Days"] % 3) / 2)
    return mb.fit("Reaction ~ Days + (1|Subject)", data, weights="w", method="ML"), data


@pytest.mark.filterwarnings("ignore:the Hessian of -2 log L:mixedblup.ConvergenceWarning")
@pytest.mark.parametrize("make", [
    lambda: _relationship_fit(False), lambda: _relationship_fit(True), _single_step_fit, _sire_mgs_fit,
    _maternal_fit, _maternal_reml_fit, _social_fit, _random_regression_fit, _weighted_ml_fit,
], ids=["G", "G-inverse", "single-step", "sire-mgs", "maternal", "maternal-reml", "social",
        "random-regression", "weights-ml"])
def test_round_trip_other_structures(tmp_path, make):
    fit, data = make()
    round_trip(fit, tmp_path, new=data.head(3))


def _strip_later_keys(path):
    doc = json.loads(path.read_text())
    for term in doc["terms"]:
        for key in ("n_fixed_levels", "members", "term_kind"):
            del term[key]
    del doc["residual_groups"]
    doc["content_sha256"] = _content_hash(doc)
    path.write_text(json.dumps(doc))


def test_files_without_the_later_keys_still_load(tmp_path, sleep_fit, upg):
    """Version-1 files written before n_fixed_levels, members, term_kind and residual_groups."""
    from mixedblup.genetic_groups import GroupedPedigree

    ped, data = upg
    groups = mb.fit("y ~ 0 + x + (1|id)", data, cov={"id": GroupedPedigree(ped)},
                    variances={"id": 1.0, "residual": 1.0})
    for i, fit in enumerate([sleep_fit, groups, _maternal_fit()[0], _social_fit()[0]]):
        path = fit.save(tmp_path / f"fit{i}")
        _strip_later_keys(path)
        assert_round_trip(fit, mb.load(path))


def test_duplicate_row_labels_are_refused_before_writing(tmp_path, sleep):
    """With repeated index labels the model frame cannot be matched to the observations."""
    data = sleep.set_axis(np.arange(len(sleep)) // 2)
    fit = mb.fit("Reaction ~ Days + (1|Subject)", data, variances={"Subject": 1300.0, "residual": 960.0})
    if len(fit._frame) == fit.nobs:  # pragma: no cover - the model frame kept one row per observation
        round_trip(fit, tmp_path)
        return
    with pytest.raises(mb.DataError, match=r"duplicate labels\).*reset_index"):
        fit.save(tmp_path / "fit")
    assert list(tmp_path.iterdir()) == []


def test_pandas_nullable_columns_round_trip(tmp_path, sleep):
    """Int64 / boolean model columns (no missing values once rows are dropped) keep their dtype."""
    data = sleep.assign(Days=sleep["Days"].astype("Int64"), late=(sleep["Days"] > 4).astype("boolean"))
    fit = mb.fit("Reaction ~ Days + late + (1|Subject)", data, variances={"Subject": 1300.0, "residual": 960.0})
    loaded = round_trip(fit, tmp_path, new=data.head(3))
    assert loaded._frame.dtypes.equals(fit._frame.dtypes)


def test_unsupported_frame_column_is_refused_before_writing(tmp_path, sleep):
    data = sleep.assign(t=pd.to_datetime("2020-01-01", utc=True) + pd.to_timedelta(sleep["Days"] % 3, unit="D"))
    fit = mb.fit("Reaction ~ Days + (1|Subject) + (1|t)", data,
                 variances={"Subject": 1300.0, "t": 1.0, "residual": 960.0})
    with pytest.raises(mb.DataError, match="column 't' has values of mixed or unsupported types.*convert it"):
        fit.save(tmp_path / "fit")
    assert list(tmp_path.iterdir()) == []
