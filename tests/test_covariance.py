"""Covariance structures: Relationship matched by label, checks on user matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import mixedblup as mb
from mixedblup.covariance import Identity


@pytest.fixture
def grm():
    rng = np.random.default_rng(1)
    m = rng.integers(0, 3, size=(5, 40)).astype(float)
    m -= m.mean(axis=0)
    G = m @ m.T / 40 + 0.05 * np.eye(5)
    return pd.DataFrame(G, index=list("abcde"), columns=list("abcde"))


@pytest.fixture
def records():
    return pd.DataFrame({"y": [1.0, 2.0, 1.5, 3.0, 2.2, 2.8], "id": list("abcadb")})


def test_relationship_matched_by_label_not_position(grm, records):
    v = {"id": 2.0, "residual": 1.0}
    a = mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(grm)}, variances=v)
    order = list("ecadb")
    shuffled = grm.loc[order, order]
    b = mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(shuffled.to_numpy(), labels=order)},
               variances=v)
    ea = a.random_effects().set_index("level")["estimate"]
    eb = b.random_effects().set_index("level")["estimate"]
    pd.testing.assert_series_equal(ea.sort_index(), eb.sort_index())
    # "e" has no records but gets a BLUP through its relationships
    assert set(ea.index) == set("abcde")
    assert not a.random_effects().set_index("level").loc["e", "has_records"]


def test_inverse_and_sparse_input_equivalent(grm, records):
    v = {"id": 2.0, "residual": 1.0}
    a = mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(grm)}, variances=v)
    ginv = np.linalg.inv(grm.to_numpy())
    b = mb.fit("y ~ 1 + (1|id)", records, variances=v,
               cov={"id": mb.Relationship(sp.csc_matrix(ginv), labels=grm.index, inverse=True)})
    np.testing.assert_allclose(a.random_effects()["estimate"], b.random_effects()["estimate"], rtol=1e-9)
    np.testing.assert_allclose(a.random_effects()["pev"], b.random_effects()["pev"], rtol=1e-9)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-10)


def test_identity_relationship_equals_no_cov(records):
    labels = list("abcd")
    a = mb.fit("y ~ 1 + (1|id)", records, variances={"id": 2.0, "residual": 1.0})
    b = mb.fit("y ~ 1 + (1|id)", records, variances={"id": 2.0, "residual": 1.0},
               cov={"id": mb.Relationship(np.eye(4), labels=labels)})
    np.testing.assert_allclose(a.random_effects()["estimate"], b.random_effects()["estimate"], rtol=1e-12)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-12)


def test_labels_normalised_like_ids(grm):
    data = pd.DataFrame({"y": [1.0, 2.0, 1.2, 2.5], "id": [12, 13, 12, 14]})
    G = mb.Relationship(np.eye(3), labels=["12", 13.0, " 14"])
    res = mb.fit("y ~ 1 + (1|id)", data, cov={"id": G}, variances={"id": 1.0, "residual": 1.0})
    assert list(res.random_effects()["level"]) == ["12", "13", "14"]


def test_data_level_missing_from_matrix_names_it(grm, records):
    data = pd.concat([records, pd.DataFrame({"y": [1.0], "id": ["zz"]})], ignore_index=True)
    with pytest.raises(mb.CovarianceError, match="'zz'") as err:
        mb.fit("y ~ 1 + (1|id)", data, cov={"id": mb.Relationship(grm)}, variances={"id": 1, "residual": 1})
    assert list(err.value.problems["level"]) == ["zz"]


@pytest.mark.parametrize("mutate, message", [
    (lambda G: G + np.triu(np.ones_like(G), 1) * 0.1, "not symmetric"),
    (lambda G: np.where(np.eye(len(G), dtype=bool), np.nan, G), "non-finite"),
    (lambda G: G - np.eye(len(G)) * 10, "non-positive diagonal"),
    (lambda G: np.ones_like(G), "not positive definite"),
])
def test_bad_matrices_are_refused(grm, records, mutate, message):
    G = mutate(grm.to_numpy())
    with pytest.raises(mb.CovarianceError, match=message):
        mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(G, labels=grm.index)},
               variances={"id": 1.0, "residual": 1.0})


def test_duplicate_and_missing_labels():
    with pytest.raises(mb.CovarianceError, match="duplicated: 'a'"):
        mb.Relationship(np.eye(2), labels=["a", "a"])
    with pytest.raises(mb.CovarianceError, match="labels="):
        mb.Relationship(np.eye(2))
    with pytest.raises(mb.CovarianceError, match="2 rows but 3 labels"):
        mb.Relationship(np.eye(2), labels=["a", "b", "c"])


def test_bare_matrix_and_unknown_cov_key(grm, records):
    with pytest.raises(mb.CovarianceError, match="Relationship"):
        mb.fit("y ~ 1 + (1|id)", records, cov={"id": grm}, variances={"id": 1, "residual": 1})
    with pytest.raises(mb.CovarianceError, match="not a grouping factor"):
        mb.fit("y ~ 1 + (1|id)", records, cov={"animal": mb.Relationship(grm)},
               variances={"id": 1, "residual": 1})


def test_inverse_looking_matrix_warns():
    full_sibs = 0.5 * (np.eye(5) + np.ones((5, 5)))  # A of five full sibs of unrelated parents
    with pytest.warns(mb.CovarianceWarning, match="inverse=True"):
        mb.Relationship(np.linalg.inv(full_sibs), labels=list("abcde"))


def test_identity_binding():
    bound = Identity().bind(pd.Index(["x", "y"]))
    assert bound.logdet == 0 and bound.precision.shape == (2, 2) and bound.is_identity
