"""Simulate the residual-groups test data (run from this directory: python make_data.py).

Writes ``data.csv``: 160 records, a random intercept ``a`` (12 levels), a covariate ``x``,
three residual classes ``g`` (variances 0.5, 1.5 and 4.0) and precision weights ``w``.
"""

import numpy as np
import pandas as pd

rng = np.random.default_rng(20261123)
n, levels = 160, 12
a = rng.integers(0, levels, n)
g = rng.choice(["A", "B", "C"], n, p=[0.4, 0.35, 0.25])
x = rng.normal(size=n)
w = rng.choice([1.0, 2.0, 0.5], n)
sd = np.sqrt(np.array([0.5, 1.5, 4.0])[pd.Index(["A", "B", "C"]).get_indexer(g)] / w)
y = 3.0 + 0.8 * x + rng.normal(0, 1.0, levels)[a] + rng.normal(0, 1.0, n) * sd
pd.DataFrame({"y": np.round(y, 6), "x": np.round(x, 6), "a": [f"a{i:02d}" for i in a], "g": g, "w": w}).to_csv(
    "data.csv", index=False)
