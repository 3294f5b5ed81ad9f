"""Approximate reliabilities against exact PEV-based ones on small pedigrees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.errors import PedigreeError
from mixedblup.iterative import MMEOperator, design_from_codes
from mixedblup.reliability import METHOD, approximate_reliability
from mixedblup.simulate import simulate_population

SA, SE = 0.3, 0.5


def exact_reliability(ped, records, group, pe=None):
    """1 - PEV / ((1 + F) sigma_a^2) from the dense inverse of Henderson's matrix."""
    random = {"id": ped.ids} if pe is None else {"id": ped.ids, "pe": None}
    d = design_from_codes(records, "y", fixed=[group], random=random)
    sigmas = [np.array([[SA]])] + ([] if pe is None else [np.array([[pe]])])
    precisions = [ped] + ([] if pe is None else [np.eye(d.terms[1].Z.shape[1])])
    op = MMEOperator(d.X, [t.Z for t in d.terms], [1] * len(d.terms), precisions, sigmas, SE, reorder=False)
    cinv_diag = np.diag(np.linalg.inv(op.to_sparse().toarray()))
    pev = SE * cinv_diag[op.p: op.p + len(ped)]
    F = ped.inbreeding().to_numpy()
    return pd.Series(1 - pev / ((1 + F) * SA), index=ped.ids)


def compare(approx, exact):
    a = approx["approx_reliability"].reindex(exact.index).to_numpy()
    e = exact.to_numpy()
    diff = a - e
    return {"corr": float(np.corrcoef(a, e)[0, 1]), "mae": float(np.abs(diff).mean()),
            "bias": float(diff.mean()), "max": float(np.abs(diff).max())}


@pytest.mark.parametrize(
    "n_herds, pe, corr_min, mae_max",
    [
        (2, None, 0.995, 0.03),   # contemporary groups of ~30 records
        (5, None, 0.99, 0.04),    # ~12 records
        (15, None, 0.96, 0.05),   # ~3 records, many groups of 1-2: the approximation degrades
        (3, 0.1, 0.99, 0.04),     # repeated records with a permanent environment
    ],
)
def test_approximation_error_against_exact_pev(n_herds, pe, corr_min, mae_max, record_property):
    kw = dict(records_per_animal=2, pe=pe) if pe else {}
    pop = simulate_population(1200, n_herds=n_herds, seed=3, years_per_generation=1, **kw)
    ped = mb.Pedigree.from_frame(pop.pedigree[["id", "sire", "dam"]], id="id", sire="sire", dam="dam")
    rec = pop.records
    exact = exact_reliability(ped, rec, "herd_year", pe)
    approx = approximate_reliability(ped, rec, animal="id", group="herd_year", additive=SA, residual=SE, pe=pe)
    stats = compare(approx, exact)
    for k, v in stats.items():
        record_property(k, round(v, 4))
    print(f"n_herds={n_herds} pe={pe}: " + ", ".join(f"{k} {v:.4f}" for k, v in stats.items()))
    # measured (seed 3): CG ~30: corr 0.997, MAE 0.015; CG ~12: 0.996, 0.018; CG ~3: 0.982, 0.027;
    # repeated records: 0.999, 0.017.  The approximation errs upwards (bias = MAE), as usual.
    assert stats["corr"] > corr_min, stats
    assert stats["mae"] < mae_max, stats
    assert abs(stats["bias"]) < mae_max, stats


def test_classic_progeny_test_formula():
    """A sire with n daughters (unknown dams, big groups): n / (n + (4 - h2) / h2)."""
    n = 40
    ped = mb.Pedigree.from_frame(
        pd.DataFrame({"id": ["S"] + [f"D{i}" for i in range(n)], "sire": ["0"] + ["S"] * n, "dam": ["0"] * (n + 1)}),
        id="id", sire="sire", dam="dam")
    rec = pd.DataFrame({"id": [f"D{i}" for i in range(n)], "y": 0.0})
    out = approximate_reliability(ped, rec, animal="id", additive=SA, residual=SE)
    h2 = SA / (SA + SE)
    assert out.loc["S", "approx_reliability"] == pytest.approx(n / (n + (4 - h2) / h2))
    # a daughter: own record and her sire's information excluding her own contribution
    assert 0 < out.loc["D0", "approx_reliability"] < 1
    assert out.loc["S", "n_records"] == 0 and out.loc["D0", "n_records"] == 1


def test_output_is_labelled_approximate_and_sane():
    pop = simulate_population(500, n_herds=3, seed=1, records_per_animal=2, pe=0.1)
    ped = mb.Pedigree.from_frame(pop.pedigree[["id", "sire", "dam"]], id="id", sire="sire", dam="dam")
    out = approximate_reliability(ped, pop.records, animal="id", group="herd_year", additive=SA, residual=SE)
    assert out.attrs["approximate"] is True and out.attrs["method"] == METHOD
    assert "approx" in out.columns[0] and out.index.equals(ped.ids)
    assert out["approx_reliability"].between(0, 1).all()
    np.testing.assert_allclose(out["approx_pev"],
                               (1 - out["approx_reliability"]) * (1 + ped.inbreeding().to_numpy()) * SA)
    with_pe = approximate_reliability(ped, pop.records, animal="id", group="herd_year", additive=SA,
                                      residual=SE, pe=0.1)
    recorded = out["n_records"] > 0
    assert (with_pe["record_information"][recorded] < out["record_information"][recorded]).all()
    random_group = approximate_reliability(ped, pop.records, animal="id", group="herd_year", additive=SA,
                                           residual=SE, group_variance=0.2)
    assert (random_group["record_information"] >= out["record_information"] - 1e-12).all()


def test_kernel_compiled_and_pure_python_agree():
    from mixedblup import reliability

    pop = simulate_population(400, n_herds=2, seed=4)
    ped = mb.Pedigree.from_frame(pop.pedigree[["id", "sire", "dam"]], id="id", sire="sire", dam="dam")
    sire = np.ascontiguousarray(ped.sire_pos, dtype=np.int64)
    dam = np.ascontiguousarray(ped.dam_pos, dtype=np.int64)
    own = np.random.default_rng(0).random(len(ped))
    args = (sire, dam, ped.mendelian_variances(), own, own * 0.9, own * 0.8, SE / SA, 3)
    kernel = reliability._accumulate
    pure = getattr(kernel, "py_func", kernel)
    for a, b in zip(kernel(*args), pure(*args)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_errors():
    ped = mb.Pedigree.from_frame(pd.DataFrame({"id": ["a", "b"], "sire": ["0", "0"], "dam": ["0", "0"]}),
                                 id="id", sire="sire", dam="dam")
    with pytest.raises(PedigreeError):
        approximate_reliability(ped, pd.DataFrame({"id": ["c"]}), animal="id", additive=1, residual=1)
    with pytest.raises(ValueError):
        approximate_reliability(ped, pd.DataFrame({"id": ["a"]}), animal="id", additive=0, residual=1)
