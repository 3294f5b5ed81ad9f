"""``fit(..., solver="pcg")``: the iterative path of the public API against the direct solver.

Every number is pinned to the direct solver (``solver="direct"``, the factorised
equations) on the same model and data; PCG runs at ``tol=1e-16`` so that its
solutions agree with the exact ones to about ``1e-7`` relative.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import mixedblup as mb
from mixedblup import iterative
from mixedblup.errors import (
    ConvergenceWarning,
    CovarianceError,
    EstimationError,
    RankDeficiencyWarning,
)
from mixedblup.iterative import PCGInferenceWarning, SolverInfo
from mixedblup.simulate import simulate_population

TIGHT = {"tol": 1e-16}


def rel_err(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / np.abs(b).max())


def fit_both(formula, data, **kw):
    """The direct fit and the PCG fit (PCG's expected warning silenced)."""
    direct = mb.fit(formula, data, solver="direct", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PCGInferenceWarning)
        pcg = mb.fit(formula, data, solver="pcg", solver_options=TIGHT, **kw)
    return direct, pcg


def assert_same_solutions(direct, pcg, tol=1e-6):
    fe_d = direct.fixed_effects["estimate"].dropna()
    fe_p = pcg.fixed_effects["estimate"].dropna()
    assert list(fe_d.index) == list(fe_p.index)
    assert rel_err(fe_p, fe_d) < tol
    re_d, re_p = direct.random_effects(), pcg.random_effects()
    pd.testing.assert_frame_equal(re_d[["group", "level", "term"]], re_p[["group", "level", "term"]])
    for name in direct.terms.index:  # per term: each term's BLUPs to 1e-6 of its largest
        sel = re_d["group"] == name
        assert rel_err(re_p.loc[sel, "estimate"], re_d.loc[sel, "estimate"]) < tol, name
    np.testing.assert_allclose(pcg.fitted, direct.fitted, rtol=0, atol=tol * np.abs(direct.fitted).max())


@pytest.fixture(scope="module")
def animal():
    pop = simulate_population(600, n_generations=4, n_herds=6, sires_per_generation=20, seed=5)
    ped = mb.Pedigree.from_frame(pop.pedigree[["id", "sire", "dam"]], id="id", sire="sire", dam="dam")
    records = pop.records.copy()
    records["w"] = np.random.default_rng(1).uniform(0.5, 2.0, len(records))
    return ped, records


@pytest.fixture(scope="module")
def animal_fits(animal):
    ped, records = animal
    return fit_both("y ~ 0 + herd_year + (1|id)", records, cov={"id": ped},
                    variances={"id": 0.3, "residual": 0.5})


def test_animal_model_equals_direct(animal_fits):
    direct, pcg = animal_fits
    assert_same_solutions(direct, pcg)
    assert pcg.solver_info.converged and direct.solver_info is None
    # animals without records get breeding values too (all pedigree IDs are levels)
    assert len(pcg.random_effects("id")) == len(direct.random_effects("id"))


def test_inverse_quantities_are_nan_with_a_warning(animal):
    ped, records = animal
    with pytest.warns(PCGInferenceWarning, match="need the inverse of the coefficient matrix"):
        res = mb.fit("y ~ 0 + herd_year + (1|id)", records, cov={"id": ped},
                     variances={"id": 0.3, "residual": 0.5}, solver="pcg")
    assert res.fixed_effects["estimate"].notna().all()
    assert res.fixed_effects[["std_error", "statistic", "p_value", "ci_lower"]].isna().all().all()
    assert res.vcov_fixed.isna().all().all()
    re = res.random_effects("id")
    assert re[["std_error", "pev", "reliability", "accuracy", "var_blup", "cond_sd"]].isna().all().all()
    assert np.isnan(res.loglik) and np.isnan(res.aic) and np.isnan(res.bic)


def test_approximate_reliabilities_track_exact_ones(animal_fits):
    direct, pcg = animal_fits
    exact = direct.random_effects("id")["reliability"].to_numpy()
    approx = pcg.random_effects("id")["reliability_approx"].to_numpy()
    assert "reliability_approx" not in direct.random_effects().columns
    assert np.isfinite(approx).all() and ((approx >= 0) & (approx <= 1)).all()
    assert np.corrcoef(approx, exact)[0, 1] > 0.95
    assert np.abs(approx - exact).mean() < 0.05
    assert "approximate" in pcg.solver_info.reliability


def test_solver_info(animal_fits):
    _, pcg = animal_fits
    info = pcg.solver_info
    assert isinstance(info, SolverInfo)
    assert info.solver == "pcg" and info.converged and not info.interrupted
    assert 0 < info.accuracy <= info.tol == 1e-16
    assert info.iterations == len(info.history) > 0
    assert info.preconditioner in ("diagonal", "block") and info.n_equations == pcg.random_effects().shape[0] + \
        pcg.fixed_effects["estimate"].notna().sum()
    assert info.seconds >= info.setup_seconds >= 0


def test_summary_and_results_methods(animal_fits, tmp_path):
    _, pcg = animal_fits
    text = str(pcg.summary())
    assert "PCG iterations" in text and "PCG accuracy" in text and "need the inverse" in text
    assert "reliability_approx" in text
    html = pcg.summary().as_html()
    assert "PCG converged" in html
    assert pcg.summary().as_markdown() and pcg.summary().as_latex()
    assert "MixedModelResults" in repr(pcg)
    tidy = pcg.tidy(effects=("fixed", "ran_pars", "ran_vals"))
    assert tidy["estimate"].notna().all()
    glance = pcg.glance()
    assert glance["nobs"].iloc[0] == pcg.nobs
    aug = pcg.augment()
    np.testing.assert_allclose(aug[".fitted"], pcg.fitted)
    np.testing.assert_allclose(pcg.predict(), pcg.fitted)
    np.testing.assert_allclose(pcg.residuals + pcg.fitted, aug["y"])
    assert pcg.blup["id"].shape[0] == len(pcg.random_effects("id"))
    with pytest.raises(EstimationError, match="solver='pcg'"):
        pcg.predict(se=True)
    with pytest.raises(EstimationError, match="solver='pcg'"):
        pcg.mme  # noqa: B018
    with pytest.raises(EstimationError, match="solver='pcg'"):
        pcg.save(tmp_path / "fit")
    with pytest.raises(Exception):  # noqa: B017 - frozen like every result
        pcg.loglik = 0.0


def test_weights(animal):
    ped, records = animal
    direct, pcg = fit_both("y ~ 0 + herd_year + (1|id)", records, cov={"id": ped},
                           variances={"id": 0.3, "residual": 0.5}, weights="w")
    assert_same_solutions(direct, pcg)


def test_two_crossed_iid_terms():
    data = mb.datasets.load("penicillin")
    direct, pcg = fit_both("diameter ~ 1 + (1|plate) + (1|sample)", data,
                           variances={"plate": 0.7, "sample": 3.7, "residual": 0.3})
    assert_same_solutions(direct, pcg)
    assert pcg.random_effects()["reliability_approx"].isna().all()  # no pedigree term


def test_correlated_random_slopes():
    data = mb.datasets.load("sleepstudy")
    direct, pcg = fit_both("Reaction ~ Days + (1 + Days|Subject)", data,
                           variances={"Subject": [[612.1, 9.6], [9.6, 35.1]], "residual": 654.9})
    assert_same_solutions(direct, pcg)
    assert pcg.solver_info.preconditioner == "block"


def test_joint_direct_maternal_term():
    pop = simulate_population(500, n_generations=4, n_herds=5, sires_per_generation=15, maternal=0.1,
                              cov_am=-0.03, seed=7)
    ped = mb.Pedigree.from_frame(pop.pedigree[["id", "sire", "dam"]], id="id", sire="sire", dam="dam")
    records = pop.records[pop.records["dam"].isin(ped.ids)]
    direct, pcg = fit_both("y ~ 0 + herd_year + (1|id) + (1|dam)", records, cov={("id", "dam"): ped},
                           variances={("id", "dam"): [[0.3, -0.03], [-0.03, 0.1]], "residual": 0.5})
    assert_same_solutions(direct, pcg)
    assert list(pcg.terms.index) == ["id,dam"]


def test_auto_selects_by_size_and_known_variances(animal, monkeypatch):
    ped, records = animal
    kw = {"cov": {"id": ped}, "variances": {"id": 0.3, "residual": 0.5}}
    assert mb.fit("y ~ 0 + herd_year + (1|id)", records, **kw).solver_info is None  # small: direct
    monkeypatch.setattr(iterative, "PCG_MIN_EQUATIONS", 100)
    with pytest.warns(PCGInferenceWarning):
        res = mb.fit("y ~ 0 + herd_year + (1|id)", records, **kw)
    assert res.solver_info.solver == "pcg"
    # estimating variances needs the factorisation: auto stays direct
    est = mb.fit("Reaction ~ Days + (1|Subject)", mb.datasets.load("sleepstudy"))
    assert est.solver_info is None and not est.variances_known
    # a singular covariance matrix: Henderson's equations need Sigma^-1, auto stays direct
    zero = mb.fit("y ~ 0 + herd_year + (1|id)", records, cov={"id": ped}, variances={"id": 0.0, "residual": 0.5})
    assert zero.solver_info is None


def test_pcg_without_variances_is_an_error():
    data = mb.datasets.load("sleepstudy")
    with pytest.raises(EstimationError, match="needs known variance components"):
        mb.fit("Reaction ~ Days + (1|Subject)", data, solver="pcg")
    with pytest.raises(ValueError, match="solver must be one of"):
        mb.fit("Reaction ~ Days + (1|Subject)", data, solver="cg")
    with pytest.raises(ValueError, match="unknown solver_options"):
        mb.fit("Reaction ~ Days + (1|Subject)", data, variances={"Subject": 1.0, "residual": 1.0},
               solver="pcg", solver_options={"tolerance": 1e-8})
    with pytest.raises(CovarianceError, match="solver='direct'"):
        mb.fit("Reaction ~ Days + (1|Subject)", data, variances={"Subject": 0.0, "residual": 1.0},
               solver="pcg")


def test_callback_stops_early_then_warm_start_continues(animal, animal_fits):
    ped, records = animal
    direct, _ = animal_fits
    seen = []

    def stop_at_5(progress):
        seen.append(progress.iteration)
        return progress.iteration >= 5

    kw = {"cov": {"id": ped}, "variances": {"id": 0.3, "residual": 0.5}, "solver": "pcg"}
    with pytest.warns(ConvergenceWarning, match="achieved accuracy"), pytest.warns(PCGInferenceWarning):
        partial = mb.fit("y ~ 0 + herd_year + (1|id)", records, solver_options={"callback": stop_at_5}, **kw)
    assert seen == [1, 2, 3, 4, 5]
    info = partial.solver_info
    assert info.interrupted and not info.converged and info.iterations == 5 and info.accuracy > info.tol
    assert partial.random_effects()["estimate"].notna().all()
    assert "stopped early" in str(partial.summary())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PCGInferenceWarning)
        done = mb.fit("y ~ 0 + herd_year + (1|id)", records, solver_options={"warm_start": partial, **TIGHT},
                      **kw)
    assert done.solver_info.converged
    assert_same_solutions(direct, done)


def test_max_iter_nonconvergence_warns(animal):
    ped, records = animal
    with pytest.warns(ConvergenceWarning, match="did not converge in 3 iterations"), \
            pytest.warns(PCGInferenceWarning):
        res = mb.fit("y ~ 0 + herd_year + (1|id)", records, cov={"id": ped},
                     variances={"id": 0.3, "residual": 0.5}, solver="pcg", solver_options={"max_iter": 3})
    assert not res.solver_info.converged and not res.solver_info.interrupted


@pytest.mark.parametrize("sparse_x", [False, True])
def test_rank_deficient_fixed_effects_like_direct(animal, monkeypatch, sparse_x):
    """Confounded fixed effects are dropped with the same warning on both paths (dense and sparse X)."""
    ped, records = animal
    if sparse_x:  # the sparse-X rank certificate of design.py
        monkeypatch.setattr(mb.design, "DENSE_X_MAX", 10)
    data = records.assign(hy2=records["herd_year"])
    formula = "y ~ 1 + herd_year + hy2 + (1|id)"
    kw = {"cov": {"id": ped}, "variances": {"id": 0.3, "residual": 0.5}}
    with pytest.warns(RankDeficiencyWarning):
        direct = mb.fit(formula, data, solver="direct", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PCGInferenceWarning)
        with pytest.warns(RankDeficiencyWarning):
            # an intercept beside the herd-years conditions the system worse: a tighter rule for 1e-6
            pcg = mb.fit(formula, data, solver="pcg", solver_options={"tol": 1e-18}, **kw)
    assert pcg._design.X.shape == direct._design.X.shape
    assert sp.issparse(pcg._design.X) == sparse_x
    assert (pcg.fixed_effects["dropped"] == direct.fixed_effects["dropped"]).all()
    assert pcg.fixed_effects["dropped"].sum() > 0
    assert_same_solutions(direct, pcg)


def test_pcg_path_assembles_neither_a_inverse_nor_cross_products(animal, monkeypatch):
    """Memory stays close to the data: no A^-1, no cross products, no factorisation."""
    ped, records = animal
    from mixedblup import api, pcg_fit
    from mixedblup.pedigree import Pedigree

    def forbidden(*args, **kwargs):
        raise AssertionError("the PCG path must not assemble this")

    monkeypatch.setattr(Pedigree, "a_inverse", forbidden)
    monkeypatch.setattr(api, "cross_products", forbidden)
    monkeypatch.setattr(api, "solve_mme", forbidden)
    monkeypatch.setattr(pcg_fit, "VCOV_MAX", 5)  # beyond it var(beta_hat) is an empty table, not p x p NaN
    with pytest.warns(PCGInferenceWarning):
        res = mb.fit("y ~ 0 + herd_year + (1|id)", records, cov={"id": ped},
                     variances={"id": 0.3, "residual": 0.5}, solver="pcg")
    assert res.solver_info.converged
    assert res.vcov_fixed.shape == (0, 0)
    with pytest.raises(EstimationError, match="solver='pcg'"):
        res.anova(type="I")


def test_warm_start_from_a_direct_fit_and_progress_log(animal, animal_fits, capsys):
    ped, records = animal
    direct, _ = animal_fits
    kw = {"cov": {"id": ped}, "variances": {"id": 0.3, "residual": 0.5}, "solver": "pcg"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PCGInferenceWarning)
        res = mb.fit("y ~ 0 + herd_year + (1|id)", records, verbose=True,
                     solver_options={"warm_start": direct, "log_interval": 0.0}, **kw)
    assert res.solver_info.converged and res.solver_info.iterations <= 2  # starts at the exact solution
    assert "PCG finished" in capsys.readouterr().err
    with pytest.raises(ValueError, match="warm_start has 3 values"):
        mb.fit("y ~ 0 + herd_year + (1|id)", records, solver_options={"warm_start": [1.0, 2.0, 3.0]}, **kw)


def test_relationship_matrix_term():
    """A user G (through its bound precision) and an iid term, against the direct solver."""
    data = mb.datasets.load("penicillin")
    plates = sorted(data["plate"].astype(str).unique())
    rng = np.random.default_rng(3)
    B = rng.normal(size=(len(plates), 4))
    G = 0.5 * np.eye(len(plates)) + 0.5 * B @ B.T / 4
    rel = mb.Relationship(G, labels=plates)
    direct, pcg = fit_both("diameter ~ 1 + (1|plate) + (1|sample)", data, cov={"plate": rel},
                           variances={"plate": 0.7, "sample": 3.7, "residual": 0.3})
    assert_same_solutions(direct, pcg)
    assert pcg.terms.loc["plate", "covariance"] == direct.terms.loc["plate", "covariance"]
