"""REML/ML with unknown parent groups fitted as fixed effects (issue 3).

The reference is the explicit model (Westell/Quaas equivalence): the groups are
fixed-effect columns ``Z Q`` next to ``X`` and the animal deviations are random with
covariance ``sigma_a^2 A``, so ``V = sigma_a^2 Z A Z' + sigma_e^2 I`` and REML counts
``p + n_groups`` fixed effects.  ``Q`` is built here by its own recursion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dense_reml import dense_fit

import mixedblup as mb
from mixedblup.errors import PedigreeError, RankDeficiencyWarning
from mixedblup.genetic_groups import GroupedPedigree


def _pedigree_frame(seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids, sires, dams, groups = [], [], [], []
    for i in range(16):  # founders: two groups of 8
        ids.append(f"f{i}")
        sires.append("0")
        dams.append("0")
        groups.append("old" if i < 8 else "mid")
    for i in range(50):  # offspring: some with an unknown parent from a newer group
        ids.append(f"c{i}")
        sires.append(f"f{rng.integers(0, 8)}" if i % 4 else "0")
        dams.append(f"f{rng.integers(8, 16)}" if i % 5 else "0")
        groups.append("new")
    for i in range(30):  # a third generation
        ids.append(f"d{i}")
        sires.append(f"c{rng.integers(0, 25)}")
        dams.append(f"c{rng.integers(25, 50)}" if i % 6 else "0")
        groups.append("new")
    return pd.DataFrame({"id": ids, "sire": sires, "dam": dams, "g": groups})


def _q_matrix(frame: pd.DataFrame, ids: list[str], groups: list[str]) -> np.ndarray:
    """Group contributions by the recursion q_i = (q_sire + q_dam) / 2, an unknown parent = its group."""
    pos = {a: i for i, a in enumerate(ids)}
    Q = np.zeros((len(ids), len(groups)))
    rows = frame.set_index("id")
    done: set[str] = set()

    def contrib(parent: str, group: str) -> np.ndarray:
        if parent == "0":
            e = np.zeros(len(groups))
            e[groups.index(group)] = 1.0
            return e
        visit(parent)
        return Q[pos[parent]]

    def visit(a: str) -> None:
        if a in done:
            return
        r = rows.loc[a]
        Q[pos[a]] = 0.5 * contrib(r["sire"], r["g"]) + 0.5 * contrib(r["dam"], r["g"])
        done.add(a)

    for a in ids:
        visit(a)
    return Q


def _dense_m2ll(y, F, ZAZ, sa, se, reml):
    n, p = F.shape
    V = sa * ZAZ + se * np.eye(n)
    Vi = np.linalg.inv(V)
    FtViF = F.T @ Vi @ F
    beta = np.linalg.solve(FtViF, F.T @ Vi @ y)
    r = y - F @ beta
    out = np.linalg.slogdet(V)[1] + r @ Vi @ r
    if reml:
        return (n - p) * np.log(2 * np.pi) + out + np.linalg.slogdet(FtViF)[1], beta
    return n * np.log(2 * np.pi) + out, beta


@pytest.fixture(scope="module")
def model():
    frame = _pedigree_frame()
    ped = mb.Pedigree.from_frame(frame, id="id", sire="sire", dam="dam", upg="g", min_group_size=1)
    ids, groups = [str(a) for a in ped.ids], [str(g) for g in ped.groups]
    Q = _q_matrix(frame, ids, groups)
    A = ped.a_matrix(ids).to_numpy()
    rng = np.random.default_rng(2)
    g_true = {"old": 0.0, "mid": 1.5, "new": 3.0}
    a_true = Q @ np.array([g_true[g] for g in groups]) + np.linalg.cholesky(A) @ rng.normal(0, 1.2, len(ids))
    rec_ids = np.repeat(ids[6:], 2)
    data = pd.DataFrame({"id": rec_ids, "x": rng.normal(size=len(rec_ids))})
    pos = np.array([ids.index(a) for a in rec_ids])
    data["y"] = 0.7 * data["x"] + a_true[pos] + rng.normal(0, 1.0, len(data))
    Z = np.zeros((len(data), len(ids)))
    Z[np.arange(len(data)), pos] = 1.0
    F = np.column_stack([data["x"].to_numpy(), Z @ Q])  # X and the group columns Z Q
    return ped, data, F, Z @ A @ Z.T, data["y"].to_numpy(), Q, A, Z, groups


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_loglik_at_given_variances_equals_explicit_group_model(model, method):
    ped, data, F, ZAZ, y, *_ = model
    res = mb.fit("y ~ 0 + x + (1|id)", data, cov={"id": GroupedPedigree(ped)},
                 variances={"id": 1.7, "residual": 0.9}, method=method)
    ref, _ = _dense_m2ll(y, F, ZAZ, 1.7, 0.9, method == "REML")
    assert -2 * res.loglik == pytest.approx(ref, rel=1e-11)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_estimates_equal_explicit_group_model(model, method):
    ped, data, F, ZAZ, y, Q, A, Z, groups = model
    reml = method == "REML"

    (sa, se), best = dense_fit(y, F, None, [ZAZ, np.eye(len(y))], reml)
    res = mb.fit("y ~ 0 + x + (1|id)", data, cov={"id": GroupedPedigree(ped)}, method=method)
    vc = res.variance_components.set_index("group")["estimate"]
    np.testing.assert_allclose([vc["id"], vc["Residual"]], [sa, se], rtol=2e-5)
    assert -2 * res.loglik == pytest.approx(best, abs=1e-7 * abs(best))
    # AIC/BIC count the groups as the fixed effects they are: x, 3 groups, sigma_a^2, sigma_e^2
    assert res.npar == F.shape[1] + 2 == 6
    assert res.aic == pytest.approx(best + 2 * 6, abs=1e-7 * abs(best))
    # solutions: group effects are the GLS estimates, a* = Q g + a_hat
    _, beta = _dense_m2ll(y, F, ZAZ, vc["id"], vc["Residual"], reml)
    blup = res.random_effects("id").set_index("level")["estimate"]
    np.testing.assert_allclose(blup[groups].to_numpy(), beta[1:], rtol=1e-6, atol=1e-8)
    assert res.fixed_effects.loc["x", "estimate"] == pytest.approx(beta[0], rel=1e-6)
    V = vc["id"] * ZAZ + vc["Residual"] * np.eye(len(y))
    a_hat = vc["id"] * A @ Z.T @ np.linalg.solve(V, y - F @ beta)
    ids = [str(a) for a in ped.ids]
    np.testing.assert_allclose(blup[ids].to_numpy(), Q @ beta[1:] + a_hat, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_groups_confounded_with_intercept_get_a_reference_group(model, method):
    """An intercept spans sum(Q g): the first group is set to zero (explicit model without its column)."""
    ped, data, F, ZAZ, y, Q, A, Z, groups = model
    reml = method == "REML"
    with pytest.warns(RankDeficiencyWarning, match=f"group '{groups[0]}' is set to zero as reference"):
        res = mb.fit("y ~ 1 + x + (1|id)", data, cov={"id": GroupedPedigree(ped)}, method=method)
    Fr = np.column_stack([np.ones(len(y)), F[:, :1], F[:, 2:]])  # intercept, x, Z Q without group 0
    (sa, se), best = dense_fit(y, Fr, None, [ZAZ, np.eye(len(y))], reml)
    vc = res.variance_components.set_index("group")["estimate"]
    np.testing.assert_allclose([vc["id"], vc["Residual"]], [sa, se], rtol=2e-5)
    assert -2 * res.loglik == pytest.approx(best, abs=1e-7 * abs(best))
    _, beta = _dense_m2ll(y, Fr, ZAZ, vc["id"], vc["Residual"], reml)
    blup = res.random_effects("id").set_index("level")["estimate"]
    assert groups[0] not in blup.index
    np.testing.assert_allclose(blup[groups[1:]].to_numpy(), beta[2:], rtol=1e-6, atol=1e-8)
    V = vc["id"] * ZAZ + vc["Residual"] * np.eye(len(y))
    a_hat = vc["id"] * A @ Z.T @ np.linalg.solve(V, y - Fr @ beta)
    ids = [str(a) for a in ped.ids]
    np.testing.assert_allclose(blup[ids].to_numpy(), Q[:, 1:] @ beta[2:] + a_hat, rtol=1e-6, atol=1e-8)


def test_chosen_reference_group_and_bad_reference(model):
    ped, data, F, ZAZ, y, Q, A, Z, groups = model
    ref = groups[-1]
    res = mb.fit("y ~ 1 + x + (1|id)", data, cov={"id": GroupedPedigree(ped, reference=ref)},
                 variances={"id": 1.7, "residual": 0.9})
    keep = [i for i, g in enumerate(groups) if g != ref]
    Fr = np.column_stack([np.ones(len(y)), F[:, :1], (Z @ Q)[:, keep]])
    ref_m2ll, beta = _dense_m2ll(y, Fr, ZAZ, 1.7, 0.9, True)
    assert -2 * res.loglik == pytest.approx(ref_m2ll, rel=1e-11)
    blup = res.random_effects("id").set_index("level")["estimate"]
    np.testing.assert_allclose(blup[[groups[i] for i in keep]].to_numpy(), beta[2:], rtol=1e-6, atol=1e-8)
    with pytest.raises(PedigreeError, match="'nope' is not a group"):
        GroupedPedigree(ped, reference="nope")
    with pytest.raises(PedigreeError, match="fixed groups only"):
        GroupedPedigree(ped, groups="random", reference=ref)


def test_random_groups_need_no_correction(model):
    """Random groups: V = sigma_a^2 Z (A + gamma Q Q') Z' + sigma_e^2 I, no extra fixed effects."""
    ped, data, F, _, y, Q, A, Z, _ = model
    gamma = 0.5
    res = mb.fit("y ~ 0 + x + (1|id)", data, cov={"id": GroupedPedigree(ped, groups="random", group_variance=gamma)},
                 variances={"id": 1.7, "residual": 0.9})
    X = F[:, :1]
    ZGZ = Z @ (A + gamma * Q @ Q.T) @ Z.T
    ref, _ = _dense_m2ll(y, X, ZGZ, 1.7, 0.9, True)
    assert -2 * res.loglik == pytest.approx(ref, rel=1e-11)


def test_fixed_groups_with_a_held_residual(model):
    ped, data, F, ZAZ, y, *_ = model
    (sa,), best = dense_fit(y, F, 0.8 * np.eye(len(y)), [ZAZ], True)
    res = mb.fit("y ~ 0 + x + (1|id)", data, cov={"id": GroupedPedigree(ped)}, fixed_variances={"residual": 0.8})
    assert res.variance_components.set_index("group").loc["id", "estimate"] == pytest.approx(sa, rel=2e-5)
    assert -2 * res.loglik == pytest.approx(best, abs=1e-7 * abs(best))


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_satterthwaite_and_se_use_the_explicit_group_model(model, method):
    """df and SEs from the criterion that counts the groups in p (the explicit model Z Q, V analytic)."""
    from dense_reml import dense_information, dense_satterthwaite

    ped, data, F, ZAZ, y, *_ = model
    res = mb.fit("y ~ 0 + x + (1|id)", data, cov={"id": GroupedPedigree(ped)}, method=method)
    vc = res.variance_components.set_index("group")
    v = vc.loc[["id", "Residual"], "estimate"].to_numpy()
    H, C, dC = dense_information(y, F, None, [ZAZ, np.eye(len(y))], v, method == "REML")
    l = np.zeros(F.shape[1])
    l[0] = 1.0  # x
    assert res.vcov_fixed.loc["x", "x"] == pytest.approx(C[0, 0], rel=1e-8)
    assert res.fixed_effects.loc["x", "df"] == pytest.approx(dense_satterthwaite(H, C, dC, l)[0], rel=1e-5)
    np.testing.assert_allclose(vc.loc[["id", "Residual"], "std_error"].to_numpy(),
                               np.sqrt(np.diag(2 * np.linalg.inv(H))), rtol=1e-5)
    assert res.anova().loc["x", "den_df"] == pytest.approx(res.fixed_effects.loc["x", "df"], rel=1e-12)
