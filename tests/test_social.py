"""Social (indirect) genetic effects: (1 | mates(id, group)) with a direct-social covariance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb


@pytest.fixture(scope="module")
def pens():
    rng = np.random.default_rng(5)
    n = 48
    ids = [f"a{i}" for i in range(n)]
    sire = ["0"] * 12 + [f"a{2 * rng.integers(0, 6)}" for _ in range(n - 12)]
    dam = ["0"] * 12 + [f"a{2 * rng.integers(0, 6) + 1}" for _ in range(n - 12)]
    ped = mb.Pedigree.from_frame(pd.DataFrame({"id": ids, "sire": sire, "dam": dam}), id="id", sire="sire", dam="dam")
    focal = ids[12:]
    pen = [f"p{i // 4}" for i in range(len(focal))]
    data = pd.DataFrame({"animal": focal, "pen": pen, "y": rng.normal(size=len(focal)) + 5})
    return ped, data


def test_mates_incidence(pens):
    _, data = pens
    spec = mb.parse_formula("y ~ 1 + (1|mates(animal, pen))", data.columns)
    from mixedblup.design import build_design

    d = build_design(spec, data)
    Z = d.terms[0].Z.toarray()
    assert d.terms[0].name == "mates(animal,pen)"
    levels = list(d.terms[0].levels)
    for i, row in data.iterrows():
        mates = set(data.loc[(data.pen == row.pen) & (data.animal != row.animal), "animal"])
        assert {levels[j] for j in np.nonzero(Z[i])[0]} == mates
        assert Z[i].sum() == len(mates)


def test_direct_social_blup_equals_dense(pens):
    ped, data = pens
    G0 = np.array([[1.0, 0.2], [0.2, 0.5]])
    res = mb.fit("y ~ 1 + (1|animal) + (1|mates(animal, pen))", data,
                 cov={("animal", "mates(animal, pen)"): ped},
                 variances={("animal", "mates(animal,pen)"): G0, "residual": 1.0})
    A = ped.a_matrix().to_numpy()
    order = list(ped.ids)
    n = len(data)
    Zd = np.zeros((n, len(order)))
    Zs = np.zeros((n, len(order)))
    for i, row in data.iterrows():
        Zd[i, order.index(row.animal)] = 1
        for mate in data.loc[(data.pen == row.pen) & (data.animal != row.animal), "animal"]:
            Zs[i, order.index(mate)] = 1
    Z = np.hstack([Zd, Zs])
    G = np.kron(G0, A)
    V = Z @ G @ Z.T + np.eye(n)
    Vi = np.linalg.inv(V)
    X = np.ones((n, 1))
    y = data["y"].to_numpy()
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    u = G @ Z.T @ Vi @ (y - X @ beta)
    table = res.random_effects().set_index(["level", "term"])["estimate"]
    np.testing.assert_allclose(table.xs("animal", level="term")[order], u[: len(order)], atol=1e-9)
    np.testing.assert_allclose(table.xs("mates(animal,pen)", level="term")[order], u[len(order):], atol=1e-9)
