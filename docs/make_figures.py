"""Regenerate the figures of docs/inference.md: ``python docs/make_figures.py``.

Needs the ``plot`` extra (matplotlib); renders headless with the Agg backend.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import mixedblup as mb  # noqa: E402
from mixedblup import plots  # noqa: E402

OUT = Path(__file__).parent / "img"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    sleep = mb.datasets.load("sleepstudy")
    res = mb.fit("Reaction ~ Days + (Days|Subject)", sleep)

    fig, axes = plt.subplots(1, 2, figsize=(9, 5))
    plots.caterpillar(res, "Subject", coefficient="(Intercept)", ax=axes[0])
    plots.caterpillar(res, "Subject", coefficient="Days", ax=axes[1])
    fig.tight_layout()
    fig.savefig(OUT / "caterpillar.png", dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    plots.residuals_vs_fitted(res, ax=axes[0])
    plots.qq(res, "residuals", ax=axes[1])
    plots.qq(res, "blups", term="Subject", coefficient="Days", ax=axes[2])
    fig.tight_layout()
    fig.savefig(OUT / "diagnostics.png", dpi=80)
    plt.close(fig)

    dye = mb.fit("Yield ~ 1 + (1|Batch)", mb.datasets.load("dyestuff"))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    plots.profile_plot(dye, "Batch", ax=axes[0], n=15)
    plots.profile_plot(dye, "h2:Batch", ax=axes[1], n=15)
    fig.tight_layout()
    fig.savefig(OUT / "profile.png", dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
