"""mixedblup.interop: BLUPF90 / ASReml files, lme4 code, polars input."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.errors import DataError
from mixedblup.interop import (
    Lme4ExportError,
    as_pandas,
    read_asreml_pedigree,
    read_blupf90_data,
    read_blupf90_pedigree,
    to_lme4,
)

# ----------------------------------------------------------------------------- BLUPF90 data


def test_blupf90_data_keeps_ids_as_strings_and_reads_numbers():
    text = "0012 H01 1 305.2 2.5\n0013 H01 2 0 3.0\n  \n0101 H02 1 280.0 -999\n"
    df = read_blupf90_data(io.StringIO(text), ["animal", "hy", "parity", "milk", "fat"],
                           numeric=["milk", "fat"], missing=[0, -999])
    assert df["animal"].tolist() == ["0012", "0013", "0101"]
    assert df["parity"].tolist() == ["1", "2", "1"]
    assert df["milk"].tolist()[0] == 305.2 and np.isnan(df["milk"][1])
    assert np.isnan(df["fat"][2]) and df["fat"][0] == 2.5
    assert df["milk"].dtype == float


def test_blupf90_data_missing_is_explicit():
    df = read_blupf90_data(io.StringIO("1 0\n2 5\n"), ["id", "y"], numeric=["y"])
    assert df["y"].tolist() == [0.0, 5.0]  # 0 is a value unless missing=0 is given
    df = read_blupf90_data(io.StringIO("1 0\n2 5\n"), ["id", "y"], numeric=["y"], missing=0)
    assert np.isnan(df["y"][0])
    df = read_blupf90_data(io.StringIO("1 0.0\n2 5\n"), ["id", "y"], numeric=["y"], missing=0)
    assert np.isnan(df["y"][0])  # "0.0" is the number 0


def test_blupf90_data_errors_name_the_line():
    with pytest.raises(DataError, match="line 2 .* 3 fields"):
        read_blupf90_data(io.StringIO("1 2\n1 2 3\n"), ["a", "b"])
    with pytest.raises(DataError, match="'y'.*line 1.*'x'"):
        read_blupf90_data(io.StringIO("1 x\n"), ["id", "y"], numeric=["y"])
    with pytest.raises(DataError, match="not in columns"):
        read_blupf90_data(io.StringIO("1 2\n"), ["id", "y"], numeric=["z"])


def test_blupf90_data_from_a_path(tmp_path):
    path = tmp_path / "renf90.dat"
    path.write_text("5.5 1 007\n6.5 2 008\n")
    df = read_blupf90_data(path, ["y", "hys", "animal"], numeric=["y"])
    assert df["animal"].tolist() == ["007", "008"] and df["y"].sum() == 12.0


# ----------------------------------------------------------------------------- pedigrees

RENADD = """\
1 5 4 1 0 2 1 0 0 1001
2 6 7 3 0 0 0 0 0 1002
3 1 2 1 1990 12 1 0 0 1003
4 0 0 3 0 0 0 0 1 0900
5 0 0 3 0 0 0 1 0 0800
"""


def test_renadd_file_maps_parents_and_groups():
    df = read_blupf90_pedigree(io.StringIO(RENADD))
    assert df["id"].tolist() == ["1", "2", "3", "4", "5"]
    assert df.loc[0, "sire"] == "5" and df.loc[0, "dam"] == "4"
    assert df.loc[0, "sire_original"] == "0800" and df.loc[0, "dam_original"] == "0900"
    # 6 and 7 are not animals: unknown parent groups
    assert df.loc[1, "sire"] is None and df.loc[1, "sire_group"] == "6" and df.loc[1, "dam_group"] == "7"
    assert df.loc[3, "sire"] is None and df.loc[3, "sire_group"] is None
    assert df["original_id"].tolist() == ["1001", "1002", "1003", "0900", "0800"]
    assert df.loc[2, "genotyped"] and not df.loc[0, "genotyped"]
    assert df.loc[2, "birth"] == 1990 and df.loc[2, "n_records"] == 1
    ped = mb.Pedigree.from_frame(df, id="id", sire="sire", dam="dam")
    assert len(ped) == 5


def test_plain_blupf90_pedigree_and_unknown_codes():
    df = read_blupf90_pedigree(io.StringIO("3 1 2\n1 0 0\n2 0 0\n4 1 -1 1995\n"), unknown=["0", "-1"])
    assert df["sire"].tolist() == ["1", None, None, "1"]
    assert df["dam"].tolist() == ["2", None, None, None]
    assert df["extra1"].tolist() == ["", "", "", "1995"]
    with pytest.raises(DataError, match="line 1 .* 2 fields"):
        read_blupf90_pedigree(io.StringIO("1 0\n"))
    with pytest.raises(DataError, match="10"):
        read_blupf90_pedigree(io.StringIO("1 0 0\n"), format="renadd")


def test_asreml_pedigree_separators_header_and_codes():
    text = "calf,sire,dam\nA1,*,*\nA2,0,.\nA3,A1,A2\nA4,A1,NA\nA5,A1,\n"
    df = read_asreml_pedigree(io.StringIO(text), skip=1)
    assert list(df.columns) == ["animal", "sire", "dam"]
    assert df["sire"].tolist() == [None, None, "A1", "A1", "A1"]
    assert df["dam"].tolist() == [None, None, "A2", None, None]
    spaced = read_asreml_pedigree(io.StringIO("007 0 0\n008 007 0\n"))
    assert spaced["animal"].tolist() == ["007", "008"] and spaced["sire"].tolist() == [None, "007"]
    tabbed = read_asreml_pedigree(io.StringIO("1\t0\t0\n2\t1\t0\n"), names=("id", "s", "d"))
    assert tabbed["s"].tolist() == [None, "1"]
    with pytest.raises(DataError, match="skip="):
        read_asreml_pedigree(io.StringIO("animal sire\n"))


def test_asreml_pedigree_feeds_a_pedigree(tmp_path):
    path = tmp_path / "ped.csv"
    path.write_text("animal,sire,dam\n1,0,0\n2,0,0\n3,1,2\n4,1,0\n5,4,3\n6,5,2\n")
    ped = mb.Pedigree.from_frame(read_asreml_pedigree(path, skip=1), id="animal", sire="sire", dam="dam")
    assert ped.inbreeding().loc[["5", "6"]].tolist() == [0.125, 0.125]


# ----------------------------------------------------------------------------- lme4 export


def test_to_lme4_estimated():
    res = mb.fit("Reaction ~ Days + (Days|Subject)", mb.datasets.load("sleepstudy"))
    code = to_lme4(res, data_file="sleep.csv")
    assert "lmer(Reaction ~ Days + (Days|Subject), data = data, REML = TRUE)" in code
    assert 'read.csv("sleep.csv", colClasses = c("Subject" = "character"))' in code
    assert "# mixedblup's numbers" in code


def test_to_lme4_ml_weights_and_translation():
    pastes = mb.datasets.load("pastes")
    res = mb.fit("strength ~ 1 + (1|batch/cask)", pastes, method="ML")
    code = to_lme4(res, weights="w")
    assert "REML = FALSE, weights = w" in code


def test_to_lme4_known_variances_uses_the_modular_api():
    res = mb.fit("weight ~ 0 + sex + (1|dam)", mb.datasets.load("pigs"),
                 variances={"dam": 0.016, "residual": 0.08})
    code = to_lme4(res)
    assert "mkLmerDevfun" in code and "mkMerMod" in code
    assert "sigma_e2 <- 0.08" in code and "matrix(c(0.016), 1, 1)" in code


def test_to_lme4_refuses_pedigree_terms():
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    res = mb.fit("wwg ~ 0 + sex + (1|calf)", mb.datasets.load("mrode_3_1"), cov={"calf": ped},
                 variances={"calf": 20, "residual": 40})
    with pytest.raises(Lme4ExportError, match="calf.*lme4qtl.*pedigreemm"):
        to_lme4(res)


def test_to_lme4_refuses_untranslated_functions():
    from mixedblup.interop import _translate_formula

    assert _translate_formula("y ~ I(x**2) + C(g) + (1|h)") == "y ~ I(x^2) + factor(g) + (1|h)"
    assert _translate_formula("y ~ center(x) + (1|h)") == "y ~ scale(x, scale = FALSE) + (1|h)"
    with pytest.raises(Lme4ExportError, match="poly"):
        _translate_formula("y ~ poly(x, 2) + (1|h)")
    with pytest.raises(Lme4ExportError, match="contrast"):
        _translate_formula('y ~ C(g, Treatment("b")) + (1|h)')


_R_OK = shutil.which("Rscript") is not None and subprocess.run(
    ["Rscript", "-e", "quit(status = !requireNamespace('lme4', quietly = TRUE))"], capture_output=True
).returncode == 0


@pytest.mark.skipif(not _R_OK, reason="Rscript with lme4 not installed")
@pytest.mark.parametrize("case", ["estimated", "known"])
def test_to_lme4_code_runs_in_r_and_agrees(case, tmp_path):
    """The generated code reproduces mixedblup's numbers in lme4 (run when R is present)."""
    if case == "estimated":
        data = mb.datasets.load("penicillin")
        res = mb.fit("diameter ~ 1 + (1|plate) + (1|sample)", data)
        check = "cat(sprintf('%.6f\\n', as.numeric(logLik(fit))))"
        expected = res.loglik
    else:
        data = mb.datasets.load("pigs")
        res = mb.fit("weight ~ 0 + sex + (1|dam)", data, variances={"dam": 0.016, "residual": 0.08})
        check = "cat(sprintf('%.6f\\n', fixef(fit)[['sexM']]))"
        expected = res.fixed_effects["estimate"].iloc[1]
    data.to_csv(tmp_path / "d.csv", index=False)
    code = to_lme4(res, data_file=str(tmp_path / "d.csv")) + check + "\n"
    (tmp_path / "run.R").write_text(code)
    out = subprocess.run(["Rscript", str(tmp_path / "run.R")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    value = float(out.stdout.strip().splitlines()[-1])
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-5)


# ----------------------------------------------------------------------------- data frames


def test_as_pandas_passes_pandas_through():
    df = pd.DataFrame({"a": [1]})
    assert as_pandas(df) is df


def test_as_pandas_rejects_other_objects():
    with pytest.raises(TypeError, match="data frame|DataFrame"):
        as_pandas([1, 2, 3])


def test_polars_frames_keep_categoricals_and_string_ids():
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({
        "id": ["007", "008", None],
        "x": [1, None, 3],
        "n": [1, 2, 3],
        "f": pl.Series(["b", "a", "b"], dtype=pl.Categorical),
        "e": pl.Series(["lo", "hi", "lo"], dtype=pl.Enum(["lo", "hi"])),
        "y": [1.0, None, 2.5],
        "ok": [True, None, False],
    })
    out = as_pandas(frame)
    assert out["id"].tolist() == ["007", "008", None]
    assert out["x"].dtype == float and np.isnan(out["x"][1])
    assert out["n"].tolist() == [1, 2, 3]
    assert isinstance(out["f"].dtype, pd.CategoricalDtype) and list(out["f"].cat.categories) == ["a", "b"]
    assert list(out["e"].cat.categories) == ["lo", "hi"] and out["e"].tolist() == ["lo", "hi", "lo"]
    assert np.isnan(out["y"][1]) and out["ok"].tolist() == [True, None, False]
    assert as_pandas(frame.lazy()).shape == (3, 7)


def test_polars_frame_fits_like_pandas():
    pl = pytest.importorskip("polars")
    pigs = mb.datasets.load("pigs")
    frame = pl.DataFrame({c: pigs[c].tolist() for c in pigs.columns})
    a = mb.fit("weight ~ 0 + sex + (1|dam)", frame, variances={"dam": 0.016, "residual": 0.08})  # fit converts
    b = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
    assert np.allclose(a.fixed_effects["estimate"], b.fixed_effects["estimate"])
    assert a.random_effects("dam")["level"].tolist() == ["474", "475"]


def test_narwhals_frames():
    pl = pytest.importorskip("polars")
    nw = pytest.importorskip("narwhals")
    frame = nw.from_native(pl.DataFrame({"id": ["01", "02"], "y": [1.0, 2.0]}))
    out = as_pandas(frame)
    assert out["id"].tolist() == ["01", "02"] and out["y"].tolist() == [1.0, 2.0]


def test_polars_pedigree_frame():
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({"animal": ["001", "002", "003"], "sire": ["0", "0", "001"], "dam": ["0", "0", "002"]})
    ped = mb.Pedigree.from_frame(frame, id="animal", sire="sire", dam="dam")
    assert list(ped.ids) == ["001", "002", "003"]


def test_fast_and_careful_parsers_agree():
    """Clean files take pandas' C parser, files with comments the line-by-line one: same result."""
    pop = mb.datasets.simulate(600, n_generations=4, seed=9)
    ped = pop.pedigree[["id", "sire", "dam"]]
    text = "\n".join(" ".join(r) for r in ped.astype(str).to_numpy())
    fast = read_blupf90_pedigree(io.StringIO(text))
    careful = read_blupf90_pedigree(io.StringIO("# exported pedigree\n" + text))
    pd.testing.assert_frame_equal(fast, careful)
    rec = pop.records[["id", "herd_year", "y"]]
    text = "\n".join(f"{a} {b} {c!r}" for a, b, c in rec.itertuples(index=False))
    fast = read_blupf90_data(io.StringIO(text), ["id", "hy", "y"], numeric=["y"])
    careful = read_blupf90_data(io.StringIO("# header comment\n" + text), ["id", "hy", "y"], numeric=["y"])
    pd.testing.assert_frame_equal(fast, careful)
    assert fast["y"].to_numpy() == pytest.approx(rec["y"].to_numpy())
