"""Data checks with lme4-style switches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.checks import CHECKS, resolve_checks


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"y": rng.normal(size=12), "x": rng.normal(size=12),
                         "g": list("aabbccddeeff"), "one": ["k"] * 12, "obs": [str(i) for i in range(12)]})


def test_single_level_grouping_is_an_error_naming_it(data):
    with pytest.raises(mb.DataError, match=r"'one' has a single observed level 'k'"):
        mb.fit("y ~ x + (1|one)", data, variances={"one": 1.0, "residual": 1.0})
    with pytest.warns(mb.DataWarning, match="single observed level"):
        res = mb.fit("y ~ x + (1|one)", data, variances={"one": 1.0, "residual": 1.0},
                     checks={"nlev_gt_1": "warn"})
    assert list(res.diagnostics["check"]) == ["nlev_gt_1"]


def test_levels_equal_to_observations_when_estimating(data):
    with pytest.raises(mb.DataError, match="'obs'.*confounded with the residual"):
        mb.fit("y ~ x + (1|obs)", data)
    # with known variances the BLUP is well defined: no identifiability check
    mb.fit("y ~ x + (1|obs)", data, variances={"obs": 1.0, "residual": 1.0})


def test_random_effects_not_fewer_than_observations(data):
    with pytest.raises(mb.DataError, match="probably unidentifiable"):
        mb.fit("y ~ x + (x|g)", data)


def test_few_levels_noted_only_when_enabled(data):
    with pytest.warns(mb.DataWarning, match="only 2 observed levels"):
        res = mb.fit("y ~ x + (1|g2)", data.assign(g2=list("ab" * 6)), variances={"g2": 1.0, "residual": 1.0},
                     checks={"nlev_gte_5": "warn"})
    assert "nlev_gte_5" in set(res.diagnostics["check"])


def test_scale_warning_names_columns(data):
    with pytest.warns(mb.ScaleWarning, match=r"x \(sd .*\), z \(sd"):
        mb.fit("y ~ x + z + (1|g)", data.assign(z=data.x * 1e6 + np.arange(12)),
               variances={"g": 1.0, "residual": 1.0})


def test_switches_are_validated():
    with pytest.raises(ValueError, match="unknown check 'nope'"):
        resolve_checks({"nope": "warn"})
    with pytest.raises(ValueError, match="invalid level 'stop'"):
        resolve_checks({"nlev_gt_1": "stop"})
    assert set(resolve_checks(None)) == set(CHECKS)
