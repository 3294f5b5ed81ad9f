"""Property-based invariants of the catalogue (``BAD_INPUTS.md``, section (c)).

Each test is named after the invariant it checks (``test_inv07_...`` is invariant 7).
Invariants already covered elsewhere are listed in ``docs/robustness.md`` with their
tests (for example 14 and 15 in ``tests/test_pedigree.py``, 17 in
``tests/test_animal_model.py``).

Strategies: unbalanced one-way and two-factor designs (groups of 1 to 8 records), the
variance ratio ``lambda = sigma_e^2 / sigma_u^2`` log-uniform in ``[1e-3, 1e3]``, random
pedigrees (a DAG where each animal picks parents among earlier ones or unknown, with
options for selfing and one known parent, and relabelled int or str IDs).

Reproducible: every test is derandomised (a fixed example sequence in CI).  The default
run uses few examples (the file takes well under a minute);
``test_invariants_many_examples`` (marked slow, ``pytest -m slow``) reruns every
property with many more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixedblup as mb

#: Examples per property: few by default; the slow run sets MIXEDBLUP_INVARIANT_EXAMPLES.
EXAMPLES = int(os.environ.get("MIXEDBLUP_INVARIANT_EXAMPLES", "0") or 0)
FAST = settings(max_examples=EXAMPLES or 5, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
#: Properties that estimate variances (several REML fits per example) run fewer examples.
FAST_REML = settings(FAST, max_examples=EXAMPLES or 3)

#: Examples per property in the slow run (see test_invariants_many_examples).
SLOW_EXAMPLES = 100

log_lambda = st.floats(-3.0, 3.0)  # lambda = 10 ** x: log-uniform in [1e-3, 1e3]


def quiet(fn, *args, **kwargs):
    """Fit without the (expected, tested elsewhere) singular-fit and check warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------ strategies


@st.composite
def designs(draw, min_groups: int = 2, max_groups: int = 8, max_size: int = 8):
    """An unbalanced one-way layout with a covariate and a two-level factor."""
    n_groups = draw(st.integers(min_groups, max_groups))
    sizes = draw(st.lists(st.integers(1, max_size), min_size=n_groups, max_size=n_groups))
    if sum(sizes) < n_groups + 4:
        sizes[0] += n_groups + 4 - sum(sizes)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    g = np.repeat([f"g{i}" for i in range(n_groups)], sizes)
    s = np.where(np.arange(n) % 2 == 0, "a", "b")
    rng.shuffle(s)
    data = pd.DataFrame({
        "y": 5 + rng.normal(size=n) + rng.normal(scale=draw(st.sampled_from([0.0, 0.5, 1.5])),
                                                 size=n_groups).repeat(sizes),
        "x": rng.normal(size=n),
        "s": s,
        "g": g,
    })
    lam = 10.0 ** draw(log_lambda)
    return data, lam


@st.composite
def dags(draw, max_n: int = 16, selfing: bool = False):
    """Random pedigree as parent index arrays: animal i picks parents among 0..i-1 or -1.

    Without selfing, sexes are drawn so nobody is both sire and dam; one known parent
    and unknown parents are common.
    """
    n = draw(st.integers(2, max_n))
    male = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    sire, dam = [], []
    for i in range(n):
        if selfing:
            s = draw(st.sampled_from([-1] + list(range(i))))
            d = s if (s >= 0 and draw(st.booleans())) else draw(st.sampled_from([-1] + list(range(i))))
        else:
            males = [j for j in range(i) if male[j]]
            females = [j for j in range(i) if not male[j]]
            s = draw(st.sampled_from([-1] + males[-3:]))
            d = draw(st.sampled_from([-1] + females[-3:]))
        sire.append(s)
        dam.append(d)
    return np.array(sire), np.array(dam)


def ped_frame(sire, dam, labels) -> pd.DataFrame:
    return pd.DataFrame({
        "id": labels,
        "sire": [labels[s] if s >= 0 else "0" for s in sire],
        "dam": [labels[d] if d >= 0 else "0" for d in dam],
    })


def tabular_a(sire, dam) -> np.ndarray:
    n = len(sire)
    A = np.zeros((n, n))
    for i in range(n):
        s, d = int(sire[i]), int(dam[i])
        for j in range(i):
            A[i, j] = A[j, i] = 0.5 * ((A[j, s] if s >= 0 else 0.0) + (A[j, d] if d >= 0 else 0.0))
        A[i, i] = 1.0 + (0.5 * A[s, d] if s >= 0 and d >= 0 else 0.0)
    return A


@st.composite
def animal_models(draw, selfing: bool = False):
    sire, dam = draw(dags(selfing=selfing))
    n = len(sire)
    labels = [f"a{i}" for i in range(n)]
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    recorded = [lab for lab in labels if rng.random() < 0.75]
    if len(recorded) < 2:
        recorded = labels[:2]
    reps = rng.integers(1, 3, size=len(recorded))
    reps[0] += 2  # at least 4 records
    animals = np.repeat(recorded, reps)
    data = pd.DataFrame({"y": rng.normal(size=len(animals)) + 3, "animal": animals})
    lam = 10.0 ** draw(log_lambda)
    return sire, dam, labels, data, lam


def dense_gls(X, Z, G, y, s2e=1.0):
    V = Z @ G @ Z.T + s2e * np.eye(len(y))
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    u = G @ Z.T @ Vi @ (y - X @ beta)
    return beta, u


def blups(res, group=None) -> pd.Series:
    return res.random_effects(group).set_index("level")["estimate"]


# ------------------------------------------------------------------------------ 1-13


@FAST
@given(designs())
def test_inv01_mme_equals_gls_log_uniform_lambda(case):
    data, lam = case
    res = mb.fit("y ~ x + (1|g)", data, variances={"g": 1.0 / lam, "residual": 1.0})
    d = res._design
    Z = d.Z.toarray()
    beta, u = dense_gls(d.X, Z, np.eye(Z.shape[1]) / lam, d.y)
    np.testing.assert_allclose(res.fixed_effects["estimate"], beta, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(res.random_effects()["estimate"], u, rtol=1e-7, atol=1e-9)


@FAST
@given(designs(min_groups=3), st.integers(2, 4))
def test_inv02_solver_equivalence(case, n_blocks):
    data, lam = case
    data = data.assign(b=[f"b{i % n_blocks}" for i in range(len(data))])
    v = {"g": 1.0 / lam, "b": 0.5, "residual": 1.0}
    formula = "y ~ x + (1|g) + (1|b)"
    ref = mb.fit(formula, data, variances=v, backend="dense")
    for backend in ("ldl", "splu", "schur"):
        res = mb.fit(formula, data, variances=v, backend=backend)
        np.testing.assert_allclose(res.fixed_effects["estimate"], ref.fixed_effects["estimate"], rtol=1e-8,
                                   atol=1e-10)
        np.testing.assert_allclose(res.random_effects()["estimate"], ref.random_effects()["estimate"],
                                   rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(res.random_effects()["pev"], ref.random_effects()["pev"], rtol=1e-8)
        assert res.loglik == pytest.approx(ref.loglik, rel=1e-10)
    pcg = quiet(mb.fit, formula, data, variances=v, solver="pcg", solver_options={"tol": 1e-24})
    np.testing.assert_allclose(pcg.fixed_effects["estimate"], ref.fixed_effects["estimate"], rtol=1e-6,
                               atol=1e-8)
    np.testing.assert_allclose(pcg.random_effects()["estimate"], ref.random_effects()["estimate"], rtol=1e-6,
                               atol=1e-8)


@FAST_REML
@given(designs(min_groups=4), st.integers(0, 2**31 - 1))
def test_inv03_row_order_invariance_including_reml(case, seed):
    data, _ = case
    shuffled = data.sample(frac=1.0, random_state=seed % 2**32)
    a = quiet(mb.fit, "y ~ x + (1|g)", data)
    b = quiet(mb.fit, "y ~ x + (1|g)", shuffled)
    np.testing.assert_allclose(a.variance_components["estimate"], b.variance_components["estimate"],
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(a.fixed_effects["estimate"], b.fixed_effects["estimate"], rtol=1e-6, atol=1e-8)
    pd.testing.assert_series_equal(blups(a).sort_index(), blups(b).sort_index(), rtol=1e-5, atol=1e-7)
    pd.testing.assert_series_equal(a.fitted.sort_index(), b.fitted.sort_index(), rtol=1e-6)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-9)


@FAST
@given(designs())
def test_inv04_lambda_limits(case):
    data, _ = case
    # lambda -> infinity: u -> 0 and beta -> OLS of y on X
    big = mb.fit("y ~ x + s + (1|g)", data, variances={"g": 1e-10, "residual": 1.0})
    X = big._design.X
    ols = np.linalg.lstsq(X, data["y"].to_numpy(), rcond=None)[0]
    assert np.abs(big.random_effects()["estimate"]).max() < 1e-8
    np.testing.assert_allclose(big.fixed_effects["estimate"].dropna(), ols, rtol=1e-6, atol=1e-8)
    # lambda -> 0: fitted values of the model with g as a fixed factor
    small = mb.fit("y ~ x + s + (1|g)", data, variances={"g": 1e8, "residual": 1.0})
    Xf = np.column_stack([X, pd.get_dummies(data["g"]).to_numpy(float)])
    fitted = Xf @ np.linalg.lstsq(Xf, data["y"].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(small.fitted.to_numpy(), fitted, rtol=1e-5, atol=1e-6)


@FAST
@given(designs(), animal_models())
def test_inv05_sum_to_zero_and_ones_ainv_u(case, animal):
    data, lam = case
    res = mb.fit("y ~ x + (1|g)", data, variances={"g": 1.0 / lam, "residual": 1.0})
    assert abs(res.random_effects()["estimate"].sum()) < 1e-9 * max(1.0, np.abs(data["y"]).sum())
    sire, dam, labels, adata, alam = animal
    ped = mb.Pedigree.from_frame(ped_frame(sire, dam, labels), id="id", sire="sire", dam="dam")
    ares = mb.fit("y ~ 1 + (1|animal)", adata, cov={"animal": ped}, variances={"animal": 1.0 / alam, "residual": 1.0})
    u = blups(ares).reindex(ped.ids).to_numpy()
    total = np.ones(len(u)) @ (ped.a_inverse() @ u)
    assert abs(total) < 1e-8 * max(1.0, np.abs(ped.a_inverse() @ u).sum())


@FAST
@given(designs(), st.data())
def test_inv06_duplicated_record_equals_weight_two(case, data_):
    data, lam = case
    rows = data_.draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4, unique=True))
    twice = pd.concat([data, data.iloc[rows]], ignore_index=True)
    w = np.ones(len(data))
    w[rows] = 2.0
    v = {"g": 1.0 / lam, "residual": 1.0}
    a = mb.fit("y ~ x + (1|g)", twice, variances=v)
    b = mb.fit("y ~ x + (1|g)", data.assign(w=w), variances=v, weights="w")
    np.testing.assert_allclose(a.fixed_effects["estimate"], b.fixed_effects["estimate"], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(a.random_effects()["estimate"], b.random_effects()["estimate"], rtol=1e-9,
                               atol=1e-11)
    np.testing.assert_allclose(a.random_effects()["pev"], b.random_effects()["pev"], rtol=1e-9)


@FAST_REML
@given(designs(min_groups=4), st.floats(-4.0, 4.0))
def test_inv07_scale_equivariance_including_reml(case, log_k):
    data, lam = case
    k = 10.0 ** log_k
    scaled = data.assign(y=data["y"] * k)
    a = mb.fit("y ~ x + (1|g)", data, variances={"g": 1.0 / lam, "residual": 1.0})
    b = mb.fit("y ~ x + (1|g)", scaled, variances={"g": k**2 / lam, "residual": k**2})
    np.testing.assert_allclose(b.fixed_effects["estimate"], a.fixed_effects["estimate"] * k, rtol=1e-8)
    np.testing.assert_allclose(b.random_effects()["estimate"], a.random_effects()["estimate"] * k, rtol=1e-8,
                               atol=1e-12 * k)
    ra = quiet(mb.fit, "y ~ x + (1|g)", data)
    rb = quiet(mb.fit, "y ~ x + (1|g)", scaled)
    va = ra.variance_components.set_index("group")["estimate"]
    vb = rb.variance_components.set_index("group")["estimate"]
    np.testing.assert_allclose(vb.to_numpy(), va.to_numpy() * k**2, rtol=1e-5, atol=1e-7 * k**2 * va.max())
    np.testing.assert_allclose(rb.fixed_effects["estimate"], ra.fixed_effects["estimate"] * k, rtol=1e-5,
                               atol=1e-7 * k)


@FAST_REML
@given(designs(min_groups=4), st.floats(-50.0, 50.0))
def test_inv08_shift_equivariance(case, c):
    data, lam = case
    shifted = data.assign(y=data["y"] + c * data["x"])
    v = {"g": 1.0 / lam, "residual": 1.0}
    a = mb.fit("y ~ x + (1|g)", data, variances=v)
    b = mb.fit("y ~ x + (1|g)", shifted, variances=v)
    assert b.fixed_effects.loc["x", "estimate"] == pytest.approx(a.fixed_effects.loc["x", "estimate"] + c,
                                                                 abs=1e-8 * (1 + abs(c)))
    np.testing.assert_allclose(b.random_effects()["estimate"], a.random_effects()["estimate"],
                               atol=1e-8 * (1 + abs(c)))
    ra = quiet(mb.fit, "y ~ x + (1|g)", data)
    rb = quiet(mb.fit, "y ~ x + (1|g)", shifted)
    np.testing.assert_allclose(rb.variance_components["estimate"], ra.variance_components["estimate"],
                               rtol=1e-5, atol=1e-8)


@FAST_REML
@given(designs(min_groups=4), st.floats(0.1, 10.0), st.floats(-5.0, 5.0))
def test_inv09_reml_invariant_to_reparametrising_x(case, scale, shift):
    data, _ = case
    a = quiet(mb.fit, "y ~ x + s + (1|g)", data)
    # treatment contrasts vs cell means, and x -> scale * x + shift (X -> X T, T nonsingular)
    b = quiet(mb.fit, "y ~ 0 + s + z + (1|g)", data.assign(z=scale * data["x"] + shift))
    np.testing.assert_allclose(b.variance_components["estimate"], a.variance_components["estimate"],
                               rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(b.fitted, a.fitted, rtol=1e-6, atol=1e-8)
    assert b.fixed_effects.loc["z", "estimate"] * scale == pytest.approx(a.fixed_effects.loc["x", "estimate"],
                                                                         rel=1e-5, abs=1e-8)


@FAST
@given(designs(min_groups=3), st.data())
def test_inv11_na_handling_equivalence(case, data_):
    data, lam = case
    rows = data_.draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=3, unique=True))
    holed = data.copy()
    holed.loc[holed.index[rows], "y"] = np.nan
    kept = holed.dropna(subset=["y"])
    if kept["g"].nunique() < 2:
        return
    v = {"g": 1.0 / lam, "residual": 1.0}
    with pytest.warns(mb.RowsDroppedWarning):
        a = mb.fit("y ~ x + (1|g)", holed, variances=v)
    b = mb.fit("y ~ x + (1|g)", kept, variances=v)
    np.testing.assert_allclose(a.fixed_effects["estimate"], b.fixed_effects["estimate"], rtol=1e-12)
    pd.testing.assert_series_equal(blups(a), blups(b), rtol=1e-12)
    assert set(a.dropped_rows) == set(holed.index[rows])
    # NaN in a column the model does not use changes nothing
    extra = data.assign(unused=np.where(np.arange(len(data)) % 2 == 0, np.nan, 1.0))
    c = mb.fit("y ~ x + (1|g)", extra, variances=v)
    d = mb.fit("y ~ x + (1|g)", data, variances=v)
    np.testing.assert_allclose(c.random_effects()["estimate"], d.random_effects()["estimate"], rtol=1e-12)
    assert c.nobs == len(data)


@FAST
@given(animal_models(), st.sampled_from(["int", "str"]))
def test_inv12_label_invariance_ids_int_and_str(model, kind):
    sire, dam, labels, data, lam = model
    new = {lab: (1000 + 7 * i if kind == "int" else f"X{i * 3}") for i, lab in enumerate(labels)}
    ped_a = mb.Pedigree.from_frame(ped_frame(sire, dam, labels), id="id", sire="sire", dam="dam")
    relab = ped_frame(sire, dam, [new[lab] for lab in labels])
    if kind == "int":
        relab = relab.replace({"sire": {"0": 0}, "dam": {"0": 0}})
    ped_b = mb.Pedigree.from_frame(relab, id="id", sire="sire", dam="dam")
    v = {"animal": 1.0 / lam, "residual": 1.0}
    a = mb.fit("y ~ 1 + (1|animal)", data, cov={"animal": ped_a}, variances=v)
    b = mb.fit("y ~ 1 + (1|animal)", data.assign(animal=data["animal"].map(new)), cov={"animal": ped_b},
               variances=v)
    back = {str(v_): k for k, v_ in new.items()}
    ub = blups(b)
    assert set(ub.index) == {str(x) for x in new.values()}  # keyed by the new labels
    ub.index = ub.index.map(back)
    pd.testing.assert_series_equal(ub.sort_index(), blups(a).sort_index(), rtol=1e-10, atol=1e-12)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-12)


@FAST
@given(designs(), designs())
def test_inv13_disconnected_blocks_fit_separately(case1, case2):
    (d1, lam), (d2, _) = case1, case2
    d2 = d2.assign(g=d2["g"].str.replace("g", "h"))
    both = pd.concat([d1.assign(herd="A"), d2.assign(herd="B")], ignore_index=True)
    v = {"g": 1.0 / lam, "residual": 1.0}
    joint = mb.fit("y ~ 0 + herd + (1|g)", both, variances=v)
    a = mb.fit("y ~ 1 + (1|g)", d1, variances=v)
    b = mb.fit("y ~ 1 + (1|g)", d2, variances=v)
    sep = pd.concat([blups(a), blups(b)])
    pd.testing.assert_series_equal(blups(joint).sort_index(), sep.sort_index(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(joint.fixed_effects["estimate"],
                               [a.fixed_effects["estimate"].iloc[0], b.fixed_effects["estimate"].iloc[0]],
                               rtol=1e-9)


# ------------------------------------------------------------------------------ 14-20


@FAST
@given(dags(max_n=14, selfing=True))
def test_inv14_ainv_times_a_is_identity_with_selfing_and_one_parent(dag):
    sire, dam = dag
    labels = [f"p{i}" for i in range(len(sire))]
    ped = mb.Pedigree.from_frame(ped_frame(sire, dam, labels).iloc[::-1], id="id", sire="sire", dam="dam",
                                 allow_selfing=True)
    A = tabular_a(sire, dam)
    pos = ped.positions(labels)
    Ainv = ped.a_inverse().toarray()[np.ix_(pos, pos)]
    np.testing.assert_allclose(Ainv @ A, np.eye(len(A)), atol=1e-9)


@FAST
@given(dags(max_n=16), st.integers(1, 6))
def test_inv16_a_pd_diagonal_one_plus_f_and_bounds(dag, n_founders):
    sire, dam = dag
    labels = [f"p{i}" for i in range(len(sire))]
    ped = mb.Pedigree.from_frame(ped_frame(sire, dam, labels), id="id", sire="sire", dam="dam")
    A = ped.a_matrix(labels).to_numpy()
    F = ped.inbreeding()[labels].to_numpy()
    np.testing.assert_allclose(A, A.T, atol=0)
    assert np.linalg.eigvalsh(A).min() > 0
    np.testing.assert_allclose(np.diag(A), 1.0 + F, atol=1e-12)
    assert (F >= 0).all() and (F < 1).all()
    for i, (s, d) in enumerate(zip(sire, dam)):  # no selfing: F <= (1 + max F_parent) / 2
        parents = [F[p] for p in (s, d) if p >= 0]
        if parents:
            assert F[i] <= 0.5 * (1.0 + max(parents)) + 1e-12
    founders = mb.Pedigree.from_frame(ped_frame(np.full(n_founders, -1), np.full(n_founders, -1),
                                                [f"f{i}" for i in range(n_founders)]),
                                      id="id", sire="sire", dam="dam")
    np.testing.assert_array_equal(founders.a_matrix().to_numpy(), np.eye(n_founders))


@FAST
@given(animal_models())
def test_inv20_g_path_equals_a_path(model):
    sire, dam, labels, data, lam = model
    ped = mb.Pedigree.from_frame(ped_frame(sire, dam, labels), id="id", sire="sire", dam="dam")
    A = ped.a_matrix()
    Ainv = pd.DataFrame(ped.a_inverse().toarray(), index=ped.ids, columns=ped.ids)
    v = {"animal": 1.0 / lam, "residual": 1.0}
    fits = [mb.fit("y ~ 1 + (1|animal)", data, cov={"animal": c}, variances=v)
            for c in (ped, quiet(mb.Relationship, A), quiet(mb.Relationship, Ainv, inverse=True))]
    for other in fits[1:]:
        pd.testing.assert_series_equal(blups(other).sort_index(), blups(fits[0]).sort_index(), rtol=1e-8,
                                       atol=1e-10)
        assert other.loglik == pytest.approx(fits[0].loglik, rel=1e-10)


# ------------------------------------------------------------------------------ 22-29


@FAST_REML
@given(st.integers(3, 8), st.integers(2, 6), st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.3, 1.0, 3.0]))
def test_inv22_balanced_one_way_reml_equals_anova(a, k, seed, sd_u):
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{i}" for i in range(a)], k)
    y = 10 + np.repeat(rng.normal(scale=sd_u, size=a), k) + rng.normal(size=a * k)
    data = pd.DataFrame({"y": y, "g": g})
    grp = data.groupby("g")["y"]
    msw = ((data["y"] - grp.transform("mean")) ** 2).sum() / (a * (k - 1))
    msb = k * ((grp.mean() - data["y"].mean()) ** 2).sum() / (a - 1)
    res = quiet(mb.fit, "y ~ 1 + (1|g)", data)
    vc = res.variance_components.set_index("group")["estimate"]
    if msb > msw * (1 + 1e-3):
        assert vc["g"] == pytest.approx((msb - msw) / k, rel=1e-4)
        assert vc["Residual"] == pytest.approx(msw, rel=1e-4)
    elif msb < msw * (1 - 1e-3):
        assert vc["g"] == 0.0 and res.optimizer.boundary == ("g",)
        assert vc["Residual"] == pytest.approx(data["y"].var(ddof=1), rel=1e-4)


@FAST_REML
@given(designs(min_groups=3))
def test_inv25_reml_and_ml_variances_never_negative(case):
    data, _ = case
    for method in ("REML", "ML"):
        res = quiet(mb.fit, "y ~ x + (1|g)", data, method=method)
        assert (res.variance_components.loc[res.variance_components["term2"] == "", "estimate"] >= 0).all()


@FAST_REML
@given(designs(min_groups=4))
def test_inv26_save_load_round_trip(case):
    data, _ = case
    res = quiet(mb.fit, "y ~ x + (1|g)", data)
    with tempfile.TemporaryDirectory() as tmp:
        path = res.save(Path(tmp) / "fit")
        back = mb.load(path)
    assert back.loglik == pytest.approx(res.loglik, rel=1e-12)
    np.testing.assert_allclose(back.variance_components["estimate"], res.variance_components["estimate"],
                               rtol=1e-12)
    np.testing.assert_allclose(back.random_effects()["estimate"], res.random_effects()["estimate"], rtol=1e-10,
                               atol=1e-12)


@FAST
@given(designs(), animal_models())
def test_inv28_pev_bounds_and_c_inverse_pd(case, animal):
    data, lam = case
    res = mb.fit("y ~ x + (1|g)", data, variances={"g": 1.0 / lam, "residual": 1.0})
    t = res.random_effects()
    assert (t["pev"] >= 0).all() and (t["pev"] <= (1.0 / lam) * (1 + 1e-9)).all()
    assert t["reliability"].between(0, 1).all()
    assert np.linalg.eigvalsh(res.mme.inverse().to_numpy()).min() > 0
    sire, dam, labels, adata, alam = animal
    ped = mb.Pedigree.from_frame(ped_frame(sire, dam, labels), id="id", sire="sire", dam="dam")
    ares = mb.fit("y ~ 1 + (1|animal)", adata, cov={"animal": ped}, variances={"animal": 1.0 / alam, "residual": 1.0})
    at = ares.random_effects().set_index("level")
    bound = (1.0 / alam) * (1.0 + ped.inbreeding()[at.index].to_numpy())
    assert (at["pev"] >= 0).all() and (at["pev"].to_numpy() <= bound * (1 + 1e-9)).all()
    assert at["reliability"].between(0, 1).all()


@FAST
@given(designs(), st.permutations(list(range(40))))
def test_inv29_predict_training_data_equals_fitted(case, perm):
    data, lam = case
    data = data.set_index(pd.Index([f"r{perm[i % 40]}_{i}" for i in range(len(data))]))
    res = mb.fit("y ~ x + s + (1|g)", data, variances={"g": 1.0 / lam, "residual": 1.0})
    pred = res.predict(data)
    pred = pred if isinstance(pred, pd.Series) else pred.iloc[:, 0]
    assert list(pred.index) == list(data.index)
    np.testing.assert_allclose(pred.to_numpy(), res.fitted.to_numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ slow profile


@pytest.mark.slow
def test_invariants_many_examples():
    """Every property above again with many more examples (``pytest -m slow``)."""
    env = dict(os.environ, MIXEDBLUP_INVARIANT_EXAMPLES=str(SLOW_EXAMPLES))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", __file__],
        env=env, cwd=Path(__file__).parent.parent, capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stdout[-4000:]
