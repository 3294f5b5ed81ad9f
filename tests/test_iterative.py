"""PCG solver: the matrix-free operator, agreement with the direct solver, control flow."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import mixedblup as mb
from mixedblup import iterative as it
from mixedblup.api import resolve_covariances
from mixedblup.design import build_design
from mixedblup.errors import CovarianceError
from mixedblup.formula import parse_formula
from mixedblup.mme import cross_products, relative_factor, solve_mme
from mixedblup.simulate import simulate_population
from mixedblup.variances import parse_variances

ROOT = Path(__file__).resolve().parents[1]


def stages(formula, data, cov, variances, weights=None):
    """The direct path of fit(), stage by stage."""
    spec = parse_formula(formula, data.columns)
    covs = resolve_covariances(spec, cov)
    structures = covs.structures
    design = build_design(spec, data, levels={n: s.labels for n, s in structures.items()}, weights=weights,
                          joint=covs.joint)
    bound = [structures[t.name].bind(t.levels) for t in design.terms]
    sigmas, residual = parse_variances(variances, design.terms)
    cp = cross_products(design, bound)
    sol = solve_mme(cp, [relative_factor(s, residual) for s in sigmas])
    return design, bound, structures, sigmas, residual, cp, sol


def henderson(cp, bound, sigmas, residual):
    """Henderson's coefficient matrix times sigma_e^2, assembled."""
    blocks = [sp.csr_matrix((cp.p, cp.p))]
    for b, s in zip(bound, sigmas):
        blocks.append(sp.kron(b.precision, residual * np.linalg.inv(np.atleast_2d(s))))
    return (cp.M + sp.block_diag(blocks)).toarray()


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module")
def animal_case():
    pop = simulate_population(1500, n_herds=8, seed=11)
    ped = mb.Pedigree.from_frame(pop.pedigree[["id", "sire", "dam"]], id="id", sire="sire", dam="dam")
    return ped, pop.records


@pytest.fixture(scope="module")
def animal_stages(animal_case):
    ped, rec = animal_case
    rec = rec.assign(w=np.linspace(0.5, 2.0, len(rec)))
    weighted = stages("y ~ 0 + herd_year + (1|id)", rec, {"id": ped}, {"id": 0.3, "residual": 0.5}, weights="w")
    plain = stages("y ~ 0 + herd_year + (1|id)", rec, {"id": ped}, {"id": 0.3, "residual": 0.5})
    return weighted, henderson(*[weighted[i] for i in (5, 1, 3, 4)]), plain


@pytest.fixture(scope="module")
def sleep():
    return mb.datasets.load("sleepstudy")


# ----------------------------------------------------------------------------- operator


@pytest.mark.parametrize("engine", ["numba", "scipy"])
@pytest.mark.parametrize("reorder", [True, False])
def test_operator_is_hendersons_matrix_animal_model(animal_case, animal_stages, engine, reorder):
    ped, _ = animal_case
    (design, bound, structures, sigmas, residual, cp, _), C, _ = animal_stages
    for cov in (ped, bound[0]):
        op = it.MMEOperator(design.X, [design.terms[0].Z], [1], [cov], sigmas, residual, design.weights,
                            engine=engine, reorder=reorder)
        np.testing.assert_allclose(op.to_sparse().toarray(), C, atol=1e-12)
        v = np.random.default_rng(0).normal(size=op.N)
        got = op.to_external(op.matvec(op.to_internal(v)))
        np.testing.assert_allclose(got, C @ v, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(op.to_external(op.diagonal()), np.diag(C), rtol=1e-12)
        np.testing.assert_allclose(op.to_external(op.rhs(design.y)),
                                   np.concatenate([cp.Xty, cp.Zty]), rtol=1e-12)


@pytest.mark.parametrize("engine", ["numba", "scipy"])
def test_operator_correlated_terms(sleep, engine):
    design, bound, structures, sigmas, residual, cp, _ = stages(
        "Reaction ~ Days + (Days|Subject)", sleep, None,
        {"Subject": [[600.0, 10.0], [10.0, 35.0]], "residual": 650.0})
    C = henderson(cp, bound, sigmas, residual)
    op = it.MMEOperator(design.X, [design.terms[0].Z], [2], [bound[0]], sigmas, residual, engine=engine)
    v = np.random.default_rng(1).normal(size=op.N)
    np.testing.assert_allclose(op.to_external(op.matvec(op.to_internal(v))), C @ v, rtol=1e-10)


@pytest.mark.parametrize("engine", ["numba", "scipy"])
def test_pedigree_operator_with_two_coefficients(engine):
    """A random regression on a pedigree: (1 + x | animal), pedigree form with k = 2."""
    pop = simulate_population(300, n_herds=4, seed=3)
    ped = mb.Pedigree.from_frame(pop.pedigree[["id", "sire", "dam"]], id="id", sire="sire", dam="dam")
    rec = pop.records.assign(x=np.random.default_rng(2).normal(size=len(pop.records)))
    design, bound, structures, sigmas, residual, cp, sol = stages(
        "y ~ x + (1 + x|id)", rec, {"id": ped}, {"id": [[0.3, 0.05], [0.05, 0.1]], "residual": 0.5})
    C = henderson(cp, bound, sigmas, residual)
    op = it.MMEOperator(design.X, [design.terms[0].Z], [2], [ped], sigmas, residual, engine=engine)
    v = np.random.default_rng(1).normal(size=op.N)
    np.testing.assert_allclose(op.to_external(op.matvec(op.to_internal(v))), C @ v, rtol=1e-10, atol=1e-12)
    res = it.solve_pcg(design, [ped], sigmas, residual, tol=1e-18, engine=engine)
    assert res.preconditioner == "block" and res.converged
    assert rel_err(res.u, sol.u) < 1e-6
    assert rel_err(res.beta, sol.beta) < 1e-6


def test_pedigree_precision_matches_a_inverse(animal_case):
    ped, _ = animal_case
    prec = it.PedigreePrecision.from_pedigree(ped)
    ainv = ped.a_inverse()
    assert abs(prec.to_sparse() - ainv).max() < 1e-12
    np.testing.assert_allclose(prec.diagonal(), ainv.diagonal(), rtol=1e-12)
    order = prec.locality_order()
    assert sorted(order.tolist()) == list(range(len(ped)))
    perm = prec.permuted(order)
    assert abs(perm.to_sparse() - ainv[order][:, order]).max() < 1e-12


def test_other_structures_with_a_pedigree_are_bound_not_read_as_a():
    """Structures holding a pedigree (genetic groups, single-step H^-1) use their own precision."""
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")

    class Modified:  # like SingleStep: has .pedigree, but another precision
        pedigree = ped

        def bind(self, levels):
            from mixedblup.covariance import PedigreeCovariance

            bound = PedigreeCovariance(ped).bind(levels)
            return dataclasses.replace(bound, precision=bound.precision * 2.0)

    prec = it.as_precision(Modified(), ped.ids)
    assert isinstance(prec, it.SparsePrecision)
    assert abs(prec.to_sparse() - 2.0 * ped.a_inverse()).max() < 1e-12
    with pytest.raises(CovarianceError, match="bound"):
        it.as_precision(Modified())
    assert isinstance(it.as_precision(ped), it.PedigreePrecision)


def test_pedigree_precision_selfing_diagonal():
    # animal 2 is selfed from 0; animal 3 has parents 1 and 2
    prec = it.PedigreePrecision.from_parents(np.array([-1, -1, 0, 1]), np.array([-1, -1, 0, 2]),
                                             np.array([1.0, 1.0, 0.5, 0.5]))
    np.testing.assert_allclose(prec.diagonal(), prec.to_sparse().diagonal())


# ----------------------------------------------------------------------------- solutions


@pytest.mark.parametrize("engine", ["numba", "scipy"])
def test_pcg_equals_direct_animal_model(animal_case, animal_stages, engine):
    """PCG solutions equal the direct ones to 1e-6 relative (tolerance 1e-16)."""
    ped, _ = animal_case
    design, bound, structures, sigmas, residual, cp, sol = animal_stages[2]
    tight = it.solve_pcg(design, [ped], sigmas, residual, tol=1e-16, engine=engine)
    assert tight.converged and tight.accuracy <= 1e-16
    assert rel_err(tight.u, sol.u) < 1e-6
    assert rel_err(tight.beta, sol.beta) < 1e-6
    # the default rule of the field, 1e-12: accurate to about 1e-5, accuracy reported
    default = it.solve_pcg(design, [bound[0]], sigmas, residual, engine=engine)
    assert default.converged and default.accuracy <= 1e-12 and default.tol == 1e-12
    assert rel_err(default.u, sol.u) < 1e-4
    assert len(default.history) == default.iterations
    assert default.n_equations == cp.size


def test_pcg_equals_direct_textbook_and_lme4_examples(pigs, sleep):
    cases = [
        ("weight ~ 0 + sex + (1|dam)", pigs, None, {"dam": 0.016, "residual": 0.08}),
        ("Reaction ~ Days + (Days|Subject)", sleep, None,
         {"Subject": [[612.1, 9.6], [9.6, 35.1]], "residual": 654.9}),
        ("Reaction ~ Days + (1|Subject) + (0 + Days|Subject)", sleep, None,
         {"Subject": 627.6, "Subject.1": 35.9, "residual": 653.6}),
    ]
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    cases.append(("wwg ~ 0 + sex + (1|calf)", mb.datasets.load("mrode_3_1"), {"calf": ped},
                  {"calf": 20.0, "residual": 40.0}))
    for formula, data, cov, variances in cases:
        design, bound, structures, sigmas, residual, cp, sol = stages(formula, data, cov, variances)
        res = it.solve_pcg(design, bound, sigmas, residual, tol=1e-20)
        assert res.converged, formula
        assert rel_err(res.u, sol.u) < 1e-6, formula
        assert rel_err(res.beta, sol.beta) < 1e-6, formula
        for kind in ("diagonal", "block"):
            alt = it.solve_pcg(design, bound, sigmas, residual, tol=1e-20, preconditioner=kind)
            assert alt.preconditioner == kind and rel_err(alt.u, sol.u) < 1e-6


def test_mrode_example_breeding_values():
    """Mrode (2005) Example 3.1: the published BLUPs."""
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    data = mb.datasets.load("mrode_3_1")
    d = it.design_from_codes(data, "wwg", fixed=["sex"], random={"calf": ped.ids})
    res = it.solve_pcg(d, [ped], [np.array([[20.0]])], 40.0, tol=1e-20)
    np.testing.assert_allclose(res.beta, [3.404, 4.358], atol=1e-3)  # F, M
    np.testing.assert_allclose(res.u, [0.098, -0.019, -0.041, -0.009, -0.186, 0.177, -0.249, 0.183],
                               atol=1e-3)


def test_design_from_codes_matches_build_design(animal_case, animal_stages):
    ped, rec = animal_case
    design = animal_stages[2][0]
    d = it.design_from_codes(rec, "y", fixed=["herd_year"], random={"id": ped.ids})
    assert sp.issparse(d.X)
    np.testing.assert_array_equal(d.X.toarray(), design.X)
    assert list(d.fixed_names) == list(design.fixed_names)
    assert abs(d.terms[0].Z - design.terms[0].Z).max() == 0
    assert d.terms[0].levels.equals(design.terms[0].levels)


# ----------------------------------------------------------------------------- control flow


def test_warm_start(animal_case):
    ped, rec = animal_case
    d = it.design_from_codes(rec, "y", fixed=["herd_year"], random={"id": ped.ids})
    first = it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5)
    again = it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5, x0=first)
    assert again.converged and again.iterations == 0
    cold = it.solve_pcg(d, [ped], [np.array([[0.32]])], 0.5)
    warm = it.solve_pcg(d, [ped], [np.array([[0.32]])], 0.5, x0=first.x)
    assert warm.converged and warm.iterations < cold.iterations
    assert rel_err(warm.u, cold.u) < 1e-4
    with pytest.raises(ValueError, match="x0"):
        it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5, x0=np.zeros(3))


def test_callback_stop_and_keyboard_interrupt_leave_a_usable_state(animal_case):
    ped, rec = animal_case
    d = it.design_from_codes(rec, "y", fixed=["herd_year"], random={"id": ped.ids})
    seen = []

    def stop_at_5(progress):
        seen.append((progress.iteration, progress.accuracy, progress.seconds))
        return progress.iteration >= 5

    res = it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5, callback=stop_at_5)
    assert res.iterations == 5 and res.interrupted and not res.converged
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5]
    assert res.accuracy > 1e-12 and np.isfinite(res.u).all()

    def interrupt(progress):
        if progress.iteration == 3:
            raise KeyboardInterrupt

    part = it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5, callback=interrupt)
    assert part.interrupted and not part.converged and part.iterations == 3
    # the partial state is a warm start
    rest = it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5, x0=part)
    full = it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5)
    assert rest.converged and rest.iterations <= full.iterations
    # max_seconds
    timed = it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5, max_seconds=0.0)
    assert timed.interrupted and timed.iterations == 1


def test_progress_is_logged(animal_case, caplog):
    ped, rec = animal_case
    d = it.design_from_codes(rec, "y", fixed=["herd_year"], random={"id": ped.ids})
    with caplog.at_level(logging.INFO, logger="mixedblup.iterative"):
        res = it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5, log_interval=0.0)
    text = caplog.text
    assert "PCG iteration 1: accuracy" in text and "PCG finished" in text and "equations" in text
    assert res.converged


def test_not_converged_is_reported(animal_case, caplog):
    ped, rec = animal_case
    d = it.design_from_codes(rec, "y", fixed=["herd_year"], random={"id": ped.ids})
    with caplog.at_level(logging.WARNING, logger="mixedblup.iterative"):
        res = it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5, max_iter=3)
    assert not res.converged and not res.interrupted and res.iterations == 3
    assert "did not reach" in caplog.text


def test_errors(sleep):
    design, bound, structures, sigmas, residual, cp, _ = stages(
        "Reaction ~ Days + (Days|Subject)", sleep, None, {"Subject": [[1.0, 1.0], [1.0, 1.0]], "residual": 1.0})
    with pytest.raises(CovarianceError, match="not positive definite"):
        it.solve_pcg(design, bound, sigmas, residual)
    with pytest.raises(ValueError, match="engine"):
        it.solve_pcg(design, bound, [np.eye(2)], 1.0, engine="gpu")
    with pytest.raises(ValueError, match="preconditioner"):
        it.solve_pcg(design, bound, [np.eye(2)], 1.0, preconditioner="ilu")
    with pytest.raises(CovarianceError, match="residual"):
        it.solve_pcg(design, bound, [np.eye(2)], 0.0)


def test_choose_solver():
    assert it.choose_solver(10) == "direct"
    assert it.choose_solver(it.PCG_MIN_EQUATIONS) == "pcg"
    assert it.choose_solver(10, requested="pcg") == "pcg"
    with pytest.raises(ValueError):
        it.choose_solver(10, requested="cg")


# ----------------------------------------------------------------------------- kernels uncompiled

SCRIPT = textwrap.dedent(
    """
    import json, numpy as np, mixedblup as mb
    from mixedblup import iterative as it
    from mixedblup._accel import NUMBA
    from mixedblup.simulate import simulate_population
    pop = simulate_population(400, n_herds=3, seed=7)
    ped = mb.Pedigree.from_frame(pop.pedigree[["id", "sire", "dam"]], id="id", sire="sire", dam="dam")
    rec = pop.records.assign(x=np.linspace(-1, 1, len(pop.records)))
    d = it.design_from_codes(rec, "y", fixed=["herd_year"], random={"id": ped.ids})
    r1 = it.solve_pcg(d, [ped], [np.array([[0.3]])], 0.5, tol=1e-18, engine="numba")
    from mixedblup.design import build_design
    from mixedblup.formula import parse_formula
    from mixedblup.api import resolve_covariances
    spec = parse_formula("y ~ x + (1 + x|id)", rec.columns)
    st = resolve_covariances(spec, {"id": ped}).structures
    d2 = build_design(spec, rec, levels={n: s.labels for n, s in st.items()})
    r2 = it.solve_pcg(d2, [ped], [np.array([[0.3, 0.05], [0.05, 0.1]])], 0.5, tol=1e-18, engine="numba")
    ainv = ped.a_inverse()  # sparse precision: the CSR kernels (k = 1 and k = 2)
    r3 = it.solve_pcg(d, [ainv], [np.array([[0.3]])], 0.5, tol=1e-18, engine="numba")
    r4 = it.solve_pcg(d2, [ainv], [np.array([[0.3, 0.05], [0.05, 0.1]])], 0.5, tol=1e-18, engine="numba")
    result = {"numba": NUMBA, "u1": r1.u.tolist(), "u2": r2.u.tolist(), "b2": r2.beta.tolist(),
              "u3": r3.u.tolist(), "u4": r4.u.tolist()}
    if __name__ == "__main__":
        print(json.dumps(result))
    """
)


def _run(env_extra):
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kernels_compiled_and_pure_python_agree():
    """The same kernels with numba and as plain Python (MIXEDBLUP_NO_NUMBA=1)."""
    pure = _run({"MIXEDBLUP_NO_NUMBA": "1"})
    namespace: dict = {"__name__": "in_process"}
    exec(SCRIPT, namespace)  # this process: compiled when numba is available
    compiled = namespace["result"]
    assert pure["numba"] is False
    for key in ("u1", "u2", "b2", "u3", "u4"):
        np.testing.assert_allclose(pure[key], compiled[key], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(compiled["u3"], compiled["u1"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(compiled["u4"], compiled["u2"], rtol=1e-6, atol=1e-9)
