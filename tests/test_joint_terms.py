"""Terms sharing a covariance structure (direct-maternal), against dense V computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

import mixedblup as mb


@pytest.fixture(scope="module")
def maternal_case():
    rng = np.random.default_rng(11)
    n = 60
    ids = [f"a{i}" for i in range(n)]
    sire = ["0" if i < 12 else f"a{2 * rng.integers(0, 6)}" for i in range(n)]
    dam = ["0" if i < 12 else f"a{2 * rng.integers(0, 6) + 1}" for i in range(n)]
    ped = mb.Pedigree.from_frame(pd.DataFrame({"id": ids, "sire": sire, "dam": dam}),
                                 id="id", sire="sire", dam="dam")
    rec = np.arange(12, n)
    data = pd.DataFrame({"animal": [ids[i] for i in rec], "dam": [dam[i] for i in rec],
                         "y": rng.normal(size=len(rec)) + 3})
    return ped, data


def dense_parts(ped, data):
    A = ped.a_matrix().to_numpy()
    order = list(ped.ids)
    n, q = len(data), len(order)
    Za = np.zeros((n, q))
    Zm = np.zeros((n, q))
    Za[np.arange(n), [order.index(a) for a in data["animal"]]] = 1
    Zm[np.arange(n), [order.index(d) for d in data["dam"]]] = 1
    return A, Za, Zm, order


def test_direct_maternal_blup_equals_dense(maternal_case):
    ped, data = maternal_case
    G0 = np.array([[0.6, -0.1], [-0.1, 0.3]])
    res = mb.fit("y ~ 1 + (1|animal) + (1|dam)", data, cov={("animal", "dam"): ped},
                 variances={("animal", "dam"): G0, "residual": 1.0})
    A, Za, Zm, order = dense_parts(ped, data)
    Z = np.hstack([Za, Zm])
    G = np.kron(G0, A)
    V = Z @ G @ Z.T + np.eye(len(data))
    Vi = np.linalg.inv(V)
    X = np.ones((len(data), 1))
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ data["y"].to_numpy())
    u = G @ Z.T @ Vi @ (data["y"].to_numpy() - X @ beta)
    table = res.random_effects().set_index(["level", "term"])["estimate"]
    np.testing.assert_allclose(table.xs("animal", level="term")[order], u[: len(order)], atol=1e-9)
    np.testing.assert_allclose(table.xs("dam", level="term")[order], u[len(order):], atol=1e-9)
    vc = res.variance_components
    assert list(vc["group"]) == ["animal,dam"] * 3 + ["Residual"]
    assert list(vc["term1"]) == ["animal", "dam", "animal", ""] and list(vc["term2"]) == ["", "", "dam", ""]
    assert vc["sdcor"].iloc[2] == pytest.approx(-0.1 / np.sqrt(0.18))


@pytest.mark.filterwarnings("ignore::mixedblup.SingularFitWarning")
def test_direct_maternal_reml_equals_dense(maternal_case):
    ped, data = maternal_case
    res = mb.fit("y ~ 1 + (1|animal) + (1|dam)", data, cov={("animal", "dam"): ped})
    A, Za, Zm, _ = dense_parts(ped, data)
    y = data["y"].to_numpy()
    X = np.ones((len(y), 1))

    def crit(par):
        l11, l21, l22, le = par
        L = np.array([[l11, 0.0], [l21, l22]])
        G0 = L @ L.T
        V = (Za @ A @ Za.T * G0[0, 0] + (Za @ A @ Zm.T + Zm @ A @ Za.T) * G0[0, 1]
             + Zm @ A @ Zm.T * G0[1, 1] + np.eye(len(y)) * le ** 2)
        Vi = np.linalg.inv(V)
        XtViX = X.T @ Vi @ X
        r = y - X @ np.linalg.solve(XtViX, X.T @ Vi @ y)
        return np.linalg.slogdet(V)[1] + np.linalg.slogdet(XtViX)[1] + r @ Vi @ r + (len(y) - 1) * np.log(2 * np.pi)

    best = min((optimize.minimize(crit, x0, method="Nelder-Mead",
                                  options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 20000})
                for x0 in ([0.5, 0.0, 0.5, 1.0], [0.3, -0.1, 0.2, 0.8])), key=lambda o: o.fun)
    assert -2 * res.loglik <= best.fun + 1e-6
    assert -2 * res.loglik == pytest.approx(best.fun, abs=1e-4)


def test_shared_cov_errors(maternal_case):
    ped, data = maternal_case
    with pytest.raises(mb.CovarianceError, match="not a grouping factor"):
        mb.fit("y ~ 1 + (1|animal) + (1|dam)", data, cov={("animal", "sire"): ped},
               variances={"animal,dam": np.eye(2), "residual": 1.0})
    with pytest.raises(mb.CovarianceError, match="twice"):
        mb.fit("y ~ 1 + (1|animal) + (1|dam)", data, cov={("animal", "dam"): ped, "dam": ped},
               variances={"animal,dam": np.eye(2), "residual": 1.0})
