"""Animal models with a pedigree: BLUP against a dense V-based computation and invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixedblup as mb


@st.composite
def pedigree_and_records(draw):
    """A random pedigree (parents drawn among earlier animals or unknown) and records."""
    n = draw(st.integers(6, 25))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    ids = [f"a{i}" for i in range(n)]
    sires, dams = [], []
    for i in range(n):
        if i < 3 or rng.random() < 0.2:
            sires.append("0")
            dams.append("0")
            continue
        males = [j for j in range(i) if j % 2 == 0]
        females = [j for j in range(i) if j % 2 == 1]
        sires.append(ids[rng.choice(males)] if males and rng.random() < 0.9 else "0")
        dams.append(ids[rng.choice(females)] if females and rng.random() < 0.9 else "0")
    ped = pd.DataFrame({"id": ids, "sire": sires, "dam": dams})
    recorded = rng.random(n) < 0.7
    recorded[:2] = True
    rec_ids = [i for i, r in zip(ids, recorded) if r]
    data = pd.DataFrame({
        "animal": rec_ids,
        "y": rng.normal(size=len(rec_ids)) * 2 + 10,
        "sex": rng.choice(["F", "M"], size=len(rec_ids)),
    })
    ratio = draw(st.floats(0.1, 10.0))
    return ped, data, ratio


@settings(max_examples=30, deadline=None, derandomize=True)
@given(pedigree_and_records())
def test_animal_model_blup_equals_dense_gls(case):
    ped_frame, data, ratio = case
    if data["sex"].nunique() < 2:
        data = data.assign(sex="F")
    ped = mb.Pedigree.from_frame(ped_frame, id="id", sire="sire", dam="dam")
    formula = "y ~ sex + (1|animal)" if data["sex"].nunique() == 2 else "y ~ 1 + (1|animal)"
    res = mb.fit(formula, data, cov={"animal": ped}, variances={"animal": ratio, "residual": 1.0})
    A = ped.a_matrix().to_numpy()
    ids = list(ped.ids)
    Z = np.zeros((len(data), len(ids)))
    Z[np.arange(len(data)), [ids.index(a) for a in data["animal"]]] = 1
    X = res._design.X
    G = A * ratio
    V = Z @ G @ Z.T + np.eye(len(data))
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ data["y"].to_numpy())
    u = G @ Z.T @ Vi @ (data["y"].to_numpy() - X @ beta)
    ebv = res.random_effects("animal").set_index("level")["estimate"]
    np.testing.assert_allclose(ebv[ids].to_numpy(), u, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.fixed_effects["estimate"].dropna(), beta, rtol=1e-7, atol=1e-9)
    # every pedigree animal gets a BLUP, recorded or not
    assert set(ebv.index) == set(ids)
    # PEV bounds: 0 <= PEV <= sigma_a^2 A_ii, so 0 <= reliability <= 1
    table = res.random_effects("animal").set_index("level")
    assert (table["pev"] >= 0).all()
    assert (table["pev"] <= ratio * np.diag(A)[[ids.index(i) for i in table.index]] * (1 + 1e-9)).all()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(pedigree_and_records())
def test_animal_without_records_or_progeny_gets_parent_average(case):
    ped_frame, data, ratio = case
    ped = mb.Pedigree.from_frame(ped_frame, id="id", sire="sire", dam="dam")
    res = mb.fit("y ~ 1 + (1|animal)", data, cov={"animal": ped},
                 variances={"animal": ratio, "residual": 1.0})
    ebv = res.random_effects("animal").set_index("level")["estimate"]
    parents = set(ped_frame["sire"]) | set(ped_frame["dam"])
    recorded = set(data["animal"])
    for _, row in ped_frame.iterrows():
        if row["id"] in recorded or row["id"] in parents:
            continue
        pa = sum(ebv[p] for p in (row["sire"], row["dam"]) if p != "0") / 2
        assert ebv[row["id"]] == pytest.approx(pa, abs=1e-9)


def test_pedigree_ids_as_ints_match_data_as_strings():
    ped = mb.datasets.load("mrode_3_1_pedigree").astype(int)
    data = mb.datasets.load("mrode_3_1")
    a = mb.fit("wwg ~ 0 + sex + (1|calf)", data, cov={"calf": mb.Pedigree.from_frame(
        ped, id="animal", sire="sire", dam="dam")}, variances={"calf": 20, "residual": 40})
    b = mb.fit("wwg ~ 0 + sex + (1|calf)", data.assign(calf=data["calf"].astype(int)),
               cov={"calf": mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"),
                                                   id="animal", sire="sire", dam="dam")},
               variances={"calf": 20, "residual": 40})
    pd.testing.assert_frame_equal(a.random_effects(), b.random_effects())


def test_recorded_animal_missing_from_pedigree_is_named():
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    data = pd.concat([mb.datasets.load("mrode_3_1"),
                      pd.DataFrame({"calf": ["99"], "sex": ["M"], "sire": ["1"], "dam": ["0"], "wwg": [4.0]})],
                     ignore_index=True)
    with pytest.raises(mb.CovarianceError, match="'99'"):
        mb.fit("wwg ~ 0 + sex + (1|calf)", data, cov={"calf": ped}, variances={"calf": 20, "residual": 40})


def test_animal_model_reml_equals_dense_reml():
    """REML estimates of an animal model equal those of an independent dense V-based REML."""
    from scipy import optimize

    rng = np.random.default_rng(3)
    n = 120
    sire = [("0" if i < 20 else f"a{rng.integers(0, 10) * 2}") for i in range(n)]
    dam = [("0" if i < 20 else f"a{rng.integers(0, 10) * 2 + 1}") for i in range(n)]
    ped_frame = pd.DataFrame({"id": [f"a{i}" for i in range(n)], "sire": sire, "dam": dam})
    ped = mb.Pedigree.from_frame(ped_frame, id="id", sire="sire", dam="dam")
    A = ped.a_matrix().to_numpy()
    L = np.linalg.cholesky(A)
    u = L @ rng.normal(size=n) * np.sqrt(2.0)
    recorded = np.arange(10, n)
    y = 5 + u[recorded] + rng.normal(size=len(recorded)) * np.sqrt(3.0)
    ids = list(ped.ids)
    data = pd.DataFrame({"animal": [f"a{i}" for i in recorded], "y": y})
    res = mb.fit("y ~ 1 + (1|animal)", data, cov={"animal": ped})
    Z = np.zeros((len(data), n))
    Z[np.arange(len(data)), [ids.index(a) for a in data["animal"]]] = 1
    X = np.ones((len(data), 1))

    def minus_two_reml(log_vars):
        sa, se = np.exp(log_vars)
        V = Z @ A @ Z.T * sa + np.eye(len(data)) * se
        Vi = np.linalg.inv(V)
        XtViX = X.T @ Vi @ X
        beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
        r = y - X @ beta
        return (np.linalg.slogdet(V)[1] + np.linalg.slogdet(XtViX)[1] + r @ Vi @ r
                + (len(y) - 1) * np.log(2 * np.pi))

    best = optimize.minimize(minus_two_reml, np.log([1.0, 1.0]), method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    vc = res.variance_components.set_index("group")["estimate"]
    np.testing.assert_allclose([vc["animal"], vc["Residual"]], np.exp(best.x), rtol=1e-4)
    assert -2 * res.loglik <= best.fun + 1e-6
