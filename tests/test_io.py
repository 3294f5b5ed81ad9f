"""save / load: JSON + NPZ without pickle; identical tables; tampered files refused."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.io import _content_hash


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
