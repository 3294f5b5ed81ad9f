"""Dask path: the same solutions as the in-memory PCG on a LocalCluster with two workers."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")

import mixedblup as mb  # noqa: E402
from mixedblup.distributed import solve_pcg_dask  # noqa: E402
from mixedblup.errors import PedigreeError  # noqa: E402
from mixedblup.iterative import PedigreePrecision, design_from_codes, solve_pcg  # noqa: E402
from mixedblup.simulate import simulate_population  # noqa: E402

VAR = {"id": 0.3, "residual": 0.5}


def _cluster(processes: bool):
    from distributed import Client, LocalCluster

    for name in ("distributed", "distributed.shuffle"):
        logging.getLogger(name).setLevel(logging.ERROR)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=processes, dashboard_address=":0")
    return cluster, Client(cluster)


@pytest.fixture(scope="module")
def client():
    cluster, client = _cluster(processes=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def case():
    pop = simulate_population(600, n_herds=4, seed=5, years_per_generation=1)
    ped = mb.Pedigree.from_frame(pop.pedigree[["id", "sire", "dam"]], id="id", sire="sire", dam="dam")
    rec = pop.records.assign(x=np.random.default_rng(0).normal(size=len(pop.records)))
    frame = pop.pedigree[["id", "sire", "dam"]].copy()
    frame["F"] = ped.inbreeding().reindex(frame["id"]).to_numpy()
    design = design_from_codes(rec, "y", fixed=["herd_year"], covariates=["x"], random={"id": ped.ids})
    mem = solve_pcg(design, [ped], [np.array([[0.3]])], 0.5, tol=1e-18)
    return ped, rec, frame, design, mem


def _compare(res, design, mem, ped, rtol=1e-6):
    u = res.animal.reindex(ped.ids).to_numpy()
    assert np.abs(u - mem.u[: len(ped)]).max() < rtol * np.abs(mem.u).max()
    fe = res.fixed.reindex(list(design.fixed_names)).to_numpy()
    assert np.abs(fe - mem.beta).max() < rtol * np.abs(mem.beta).max()


def test_dask_equals_in_memory_with_a_pedigree_object(client, case):
    ped, rec, frame, design, mem = case
    res = solve_pcg_dask(dd.from_pandas(rec, npartitions=3), ped, response="y", animal="id",
                         fixed=["herd_year"], covariates=["x"], variances=VAR, client=client, tol=1e-18)
    assert res.converged and res.accuracy <= 1e-18 and res.n_blocks == 6
    assert res.seconds_in_products <= res.seconds and res.setup_seconds > 0
    _compare(res, design, mem, ped)


def test_dask_pedigree_frame_with_and_without_inbreeding(client, case):
    ped, rec, frame, design, mem = case
    records = dd.from_pandas(rec, npartitions=2)
    pedigree = dd.from_pandas(frame.sample(frac=1.0, random_state=1), npartitions=2)  # any order
    res = solve_pcg_dask(records, pedigree, response="y", animal="id", fixed=["herd_year"],
                         covariates=["x"], variances=VAR, client=client, inbreeding="F", tol=1e-16)
    _compare(res, design, mem, ped, rtol=1e-5)
    # without F: inbreeding ignored, as PedigreePrecision(inbreeding=False) in memory
    plain = solve_pcg_dask(records, pedigree, response="y", animal="id", fixed=["herd_year"],
                           covariates=["x"], variances=VAR, client=client)
    assert plain.converged and plain.accuracy <= 1e-12
    mem0 = solve_pcg(design, [PedigreePrecision.from_pedigree(ped, inbreeding=False)], [np.array([[0.3]])],
                     0.5, tol=1e-18)
    _compare(plain, design, mem0, ped, rtol=1e-4)  # default tolerance: ~1e-5 relative


def test_dask_iid_random_factor_and_interruption(client):
    pop = simulate_population(200, n_herds=2, seed=8, records_per_animal=2, pe=0.1, years_per_generation=1)
    ped = mb.Pedigree.from_frame(pop.pedigree[["id", "sire", "dam"]], id="id", sire="sire", dam="dam")
    rec = pop.records
    design = design_from_codes(rec, "y", fixed=["herd_year"], random={"id": ped.ids, "pe": None})
    mem = solve_pcg(design, [ped, None], [np.array([[0.3]]), np.array([[0.1]])], 0.5, tol=1e-20)
    records = dd.from_pandas(rec, npartitions=2)
    res = solve_pcg_dask(records, ped, response="y", animal="id", fixed=["herd_year"], random=["pe"],
                         variances={"id": 0.3, "pe": 0.1, "residual": 0.5}, client=client, tol=1e-16)
    pe = pd.Series(mem.u[len(ped):], index=design.terms[1].levels)
    np.testing.assert_allclose(res.random["pe"].reindex(pe.index), pe, atol=1e-5 * np.abs(pe).max())
    np.testing.assert_allclose(res.animal.reindex(ped.ids), mem.u[: len(ped)], atol=1e-5 * np.abs(mem.u).max())
    part = solve_pcg_dask(records, ped, response="y", animal="id", fixed=["herd_year"], random=["pe"],
                          variances={"id": 0.3, "pe": 0.1, "residual": 0.5}, client=client,
                          callback=lambda p: p.iteration >= 4)
    assert part.interrupted and not part.converged and part.iterations == 4


def test_dask_errors(client, case):
    ped, rec, frame, design, mem = case
    stranger = pd.concat([rec.head(5), rec.head(1).assign(id="nobody")], ignore_index=True)
    with pytest.raises(PedigreeError, match="not in the pedigree"):
        solve_pcg_dask(dd.from_pandas(stranger, npartitions=1), ped, response="y", animal="id",
                       fixed=["herd_year"], variances=VAR, client=client)
    orphan = pd.concat([frame, pd.DataFrame({"id": ["x1"], "sire": ["ghost"], "dam": ["0"], "F": [0.0]})])
    with pytest.raises(PedigreeError, match="neither an animal"):
        solve_pcg_dask(dd.from_pandas(rec, npartitions=1), dd.from_pandas(orphan, npartitions=1),
                       response="y", animal="id", fixed=["herd_year"], variances=VAR, client=client)
    with pytest.raises(ValueError, match="variances"):
        solve_pcg_dask(dd.from_pandas(rec, npartitions=1), ped, response="y", animal="id",
                       variances={"residual": 1.0}, client=client)


@pytest.mark.slow
def test_dask_worker_processes(case):
    """Separate worker processes: everything shipped to the workers pickles."""
    ped, rec, frame, design, mem = case
    cluster, client = _cluster(processes=True)
    try:
        res = solve_pcg_dask(dd.from_pandas(rec, npartitions=2), dd.from_pandas(frame, npartitions=2),
                             response="y", animal="id", fixed=["herd_year"], covariates=["x"],
                             variances=VAR, client=client, inbreeding="F", tol=1e-18)
        _compare(res, design, mem, ped)
    finally:
        client.close()
        cluster.close()
