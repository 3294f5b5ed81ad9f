"""predict(): training encoding reused, new-level policies, index handling, SEs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixedblup as mb
from tests.conftest import maternal_toy


@pytest.fixture(scope="module")
def sleep():
    return mb.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def res(sleep):
    return mb.fit("Reaction ~ Days + (Days|Subject)", sleep)


def test_predict_training_data_equals_fitted(sleep, res):
    pd.testing.assert_series_equal(res.predict(sleep), res.fitted, check_names=False, rtol=1e-12)
    pd.testing.assert_series_equal(res.predict(), res.fitted, check_names=False, rtol=1e-12)


@pytest.mark.parametrize("dataset, formula", [
    ("pastes", "strength ~ 1 + (1|batch/cask)"),
    ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
    ("sleepstudy", "Reaction ~ center(Days) + I(Days ** 2) + (Days||Subject)"),
])
def test_predict_training_equals_fitted_for_other_terms(dataset, formula):
    data = mb.datasets.load(dataset)
    fit = mb.fit(formula, data)
    np.testing.assert_allclose(fit.predict(data), fit.fitted, rtol=1e-10)
    # a subset is encoded with the training state (center() keeps the training mean)
    sub = data.iloc[5:12]
    np.testing.assert_allclose(fit.predict(sub), fit.fitted.iloc[5:12], rtol=1e-10)


def test_marginal_prediction_is_x_beta(sleep, res):
    beta = res.fixed_effects["estimate"]
    pred = res.predict(sleep.head(4), include_random=False)
    np.testing.assert_allclose(pred, beta["(Intercept)"] + beta["Days"] * sleep["Days"].head(4))


def test_rows_with_missing_values_are_nan_and_index_kept(sleep, res):
    new = sleep.iloc[[3, 7, 20, 40]].copy()
    new.index = ["a", "b", "c", "d"]
    new.loc["b", "Days"] = np.nan
    new.loc["d", "Subject"] = None
    with pytest.warns(mb.DataWarning, match=r"2 of 4 .*\(Days, Subject\).* NaN: rows 'b', 'd'"):
        out = res.predict(new)
    assert list(out.index) == ["a", "b", "c", "d"]
    np.testing.assert_allclose(out[["a", "c"]], res.fitted.iloc[[3, 20]])
    assert out[["b", "d"]].isna().all()
    # the marginal prediction does not need the grouping column
    with pytest.warns(mb.DataWarning, match="1 of 4"):
        marg = res.predict(new, include_random=False, se=True)
    assert list(marg.index) == ["a", "b", "c", "d"] and marg.loc["b"].isna().all()
    assert marg.loc[["a", "c", "d"]].notna().all().all()


def test_new_levels_error_or_population(res):
    new = pd.DataFrame({"Days": [1.0, 2.0], "Subject": ["308", "999"]}, index=[10, 11])
    with pytest.raises(mb.DataError, match="999"):
        res.predict(new)
    pop = res.predict(new, new_levels="population")
    marginal = res.predict(new, include_random=False)
    assert pop.loc[11] == pytest.approx(marginal.loc[11])
    assert pop.loc[10] != pytest.approx(marginal.loc[10])
    with pytest.raises(ValueError, match="new_levels"):
        res.predict(new, new_levels="zero")


def test_integer_and_string_labels_are_one_level(sleep):
    fit = mb.fit("Reaction ~ Days + (1|Subject)", sleep)
    as_int = pd.DataFrame({"Days": [3.0], "Subject": [308]})
    as_float = pd.DataFrame({"Days": [3.0], "Subject": [308.0]})
    assert fit.predict(as_int).iloc[0] == pytest.approx(fit.fitted.iloc[3])
    assert fit.predict(as_float).iloc[0] == pytest.approx(fit.fitted.iloc[3])


def test_unseen_fixed_effect_category_is_an_error(pigs):
    fit = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
    with pytest.raises(mb.DataError, match="categories not seen"):
        fit.predict(pd.DataFrame({"sex": ["X"], "dam": ["474"]}))
    with pytest.raises(mb.DataError, match="lacks"):
        fit.predict(pd.DataFrame({"dam": ["474"]}))


def test_pedigree_animals_without_records_are_not_new():
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    fit = mb.fit("wwg ~ 0 + sex + (1|calf)", mb.datasets.load("mrode_3_1"), cov={"calf": ped},
                 variances={"calf": 20, "residual": 40})
    new = pd.DataFrame({"sex": ["M", "F"], "calf": [1, "2"]})
    out = fit.predict(new)
    ebv = fit.breeding_values()["blup"]
    beta = fit.fixed_effects["estimate"]
    np.testing.assert_allclose(out, [beta["sex[M]"] + ebv["1"], beta["sex[F]"] + ebv["2"]])
    with pytest.raises(mb.DataError, match="99"):
        fit.predict(pd.DataFrame({"sex": ["M"], "calf": ["99"]}))


def test_prediction_standard_errors_against_henderson_inverse(pigs):
    fit = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
    out = fit.predict(pigs, se=True)
    Cinv = fit.mme.inverse().to_numpy()
    X = fit._design.X
    X = X.toarray() if hasattr(X, "toarray") else X
    A = np.hstack([X, fit._design.Z.toarray()])
    np.testing.assert_allclose(out["se"] ** 2, np.einsum("ij,jk,ik->i", A, Cinv, A), rtol=1e-10)
    marg = fit.predict(pigs, include_random=False, se=True)
    V = fit.vcov_fixed.to_numpy()
    np.testing.assert_allclose(marg["se"] ** 2, np.einsum("ij,jk,ik->i", X, V, X), rtol=1e-10)
    new = pd.DataFrame({"sex": ["F"], "dam": ["999"]})
    pop = fit.predict(new, new_levels="population", se=True)
    assert pop["se"].iloc[0] ** 2 == pytest.approx(V[0, 0] + 0.016, rel=1e-10)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(perm=st.permutations(list(range(30))))
def test_prediction_follows_row_order(sleep, res, perm):
    data = sleep.iloc[:30]
    new = data.iloc[list(perm)]
    pd.testing.assert_series_equal(res.predict(new), res.predict(data).loc[new.index], rtol=1e-12)


def test_predict_joint_and_social_terms_equals_fitted():
    ped, data = maternal_toy()
    G0 = np.array([[0.6, -0.1], [-0.1, 0.3]])
    maternal = mb.fit("y ~ 1 + (1|animal) + (1|dam)", data, cov={("animal", "dam"): ped},
                      variances={("animal", "dam"): G0, "residual": 1.0})
    np.testing.assert_allclose(maternal.predict(data), maternal.fitted, rtol=1e-10)
    social = mb.fit("y ~ 1 + (1|animal) + (1|mates(animal, pen))", data,
                    cov={("animal", "mates(animal, pen)"): ped},
                    variances={("animal", "mates(animal,pen)"): G0, "residual": 1.0})
    np.testing.assert_allclose(social.predict(data), social.fitted, rtol=1e-10)
    # a new dam: its maternal effect is predicted as zero, its prior variance added to the PEV
    new = data.iloc[:1].assign(dam="zz")
    with pytest.raises(mb.DataError, match="zz"):
        maternal.predict(new)
    pop = maternal.predict(new, new_levels="population", se=True)
    known = maternal.predict(data.iloc[:1], se=True)
    u = maternal.random_effects().set_index(["level", "term"])["estimate"]
    assert pop["prediction"].iloc[0] == pytest.approx(known["prediction"].iloc[0] - u[(data["dam"].iloc[0], "dam")])


@pytest.mark.filterwarnings("ignore::mixedblup.ScaleWarning")
def test_predict_reuses_stateful_transforms():
    rng = np.random.default_rng(1)
    dim = np.tile(np.linspace(5, 305, 6), 12)
    animal = np.repeat([f"a{i}" for i in range(12)], 6)
    data = pd.DataFrame({"y": 20 + rng.normal(size=len(dim)), "dim": dim, "animal": animal})
    fit = mb.fit("y ~ 0 + leg(dim, 1) + (0 + leg(dim, 1) | animal)", data,
                 variances={"animal": np.eye(2), "residual": 1.0})
    np.testing.assert_allclose(fit.predict(data.iloc[[3, 10]]), fit.fitted.iloc[[3, 10]], rtol=1e-10)
