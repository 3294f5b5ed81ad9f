"""Random regression on Legendre polynomials: basis, fit and outputs."""

from __future__ import annotations

import numpy as np
import pytest

import mixedblup as mb
from mixedblup.legendre import legendre_basis
from mixedblup.random_regression import basis, covariance_function, curves, variance_curve
from tests.conftest import lactation_records


def test_legendre_basis_is_orthonormal_on_minus_one_one():
    t, w = np.polynomial.legendre.leggauss(20)
    phi = legendre_basis(t, 4)
    np.testing.assert_allclose(phi.T @ (phi * w[:, None]), np.eye(5), atol=1e-12)
    np.testing.assert_allclose(phi[:, 0], np.sqrt(0.5))


@pytest.fixture(scope="module")
def test_day():
    data = lactation_records(40, 10)
    return data, mb.fit("y ~ 0 + leg(dim, 1) + (0 + leg(dim, 1) | animal)", data,
                        checks={"nobs_vs_nre": "ignore"})


def test_reparameterisation_gives_same_fit(test_day):
    """Legendre and raw linear bases span the same space: same ML likelihood, same
    covariance function (REML differs only by the constant log|T'T| of the X basis)."""
    data, res = test_day
    data = data.assign(t=(data.dim - 155) / 150)
    linear = mb.fit("y ~ t + (1 + t | animal)", data)
    ml_leg = mb.fit("y ~ 0 + leg(dim, 1) + (0 + leg(dim, 1) | animal)", data, method="ML",
                    checks={"nobs_vs_nre": "ignore"})
    ml_lin = mb.fit("y ~ t + (1 + t | animal)", data, method="ML")
    assert ml_leg.loglik == pytest.approx(ml_lin.loglik, rel=1e-8)
    assert res.residual_variance == pytest.approx(linear.residual_variance, rel=1e-5)
    # the covariance functions agree: phi(t)' Sigma phi(t) is basis-free
    grid = [5.0, 100.0, 305.0]
    K = covariance_function(res, "animal", grid).to_numpy()
    T = np.column_stack([np.ones(3), (np.array(grid) - 155) / 150])
    sigma = linear._sigmas[0]
    np.testing.assert_allclose(K, T @ sigma @ T.T, rtol=1e-4)


def test_curves_reproduce_the_random_part_of_fitted_values(test_day):
    data, res = test_day
    cur = curves(res, "animal", np.linspace(5, 305, 10))
    first = data[data.animal == "a0"]
    Zu = res._design.terms[0].Z @ res._solution.u
    np.testing.assert_allclose(cur.loc["a0"].to_numpy(), Zu[first.index], rtol=1e-10)
    assert variance_curve(res, "animal", [5, 305]).shape == (2,)


def test_basis_uses_training_scaling(test_day):
    _, res = test_day
    phi = basis(res, "animal", [5.0, 305.0])
    np.testing.assert_allclose(phi.iloc[:, 1], [-np.sqrt(1.5), np.sqrt(1.5)])


def test_intercept_plus_order_zero_is_refused(test_day):
    data, _ = test_day
    with pytest.raises(mb.FormulaError, match=r"write \(0 \+"):
        mb.fit("y ~ 1 + (leg(dim, 1) | animal)", data, variances={"animal": np.eye(3), "residual": 1.0})
