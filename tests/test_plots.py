"""Plots render headless (Agg) when matplotlib is installed."""

from __future__ import annotations

import io

import pytest

import mixedblup as mb

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from mixedblup import plots


@pytest.fixture(scope="module")
def res():
    return mb.fit("Reaction ~ Days + (Days|Subject)", mb.datasets.load("sleepstudy"))


def _render(ax) -> bytes:
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png")
    plt.close(ax.figure)
    return buf.getvalue()


def test_caterpillar(res):
    ax = plots.caterpillar(res, "Subject", coefficient="Days")
    assert len(ax.get_yticklabels()) == 18
    assert _render(ax).startswith(b"\x89PNG")


def test_residuals_and_qq(res):
    assert _render(plots.residuals_vs_fitted(res))
    assert _render(plots.qq(res))
    assert _render(plots.qq(res, "blups", term="Subject"))
    with pytest.raises(ValueError):
        plots.qq(res, "fitted")


def test_profile_plot():
    fit = mb.fit("Yield ~ 1 + (1|Batch)", mb.datasets.load("dyestuff"))
    prof = fit.profile("Batch", n=5)
    assert _render(plots.profile_plot(prof, "var(Batch)"))


def test_draws_on_given_axes(res):
    fig, axes = plt.subplots(1, 2)
    assert plots.caterpillar(res, ax=axes[0]) is axes[0]
    assert plots.residuals_vs_fitted(res, ax=axes[1]) is axes[1]
    plt.close(fig)
