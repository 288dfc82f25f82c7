"""Helpers for the artifact tests: synthetic similarity series with a known, learnable artifact signal."""

from __future__ import annotations

import numpy as np


def synthetic_series(n: int = 120, length: int = 50, seed: int = 0, separation: float = 1.0):
    """(X [n, length], y [n]) shaped like real trajectories: z_j = 1 - exp(u_j) with u falling from ~-1.5 to
    ~-8; artifacts (y = 1, about 40 %) keep changing longer in the middle of the run (u higher there) and start
    with a slightly higher similarity. Value 0 mimics the noise-frame comparison (~0.25)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    t = np.linspace(0.0, 1.0, length)
    base = -1.5 - 6.5 * t
    mid = np.exp(-((t - 0.5) ** 2) / 0.05)
    u = base[None, :] + separation * 0.9 * y[:, None] * mid[None, :] + rng.normal(0, 0.45, (n, length))
    u += rng.normal(0, 0.4, (n, 1))  # a per-image level, like prompts do
    X = 1.0 - np.exp(u)
    X[:, 0] = 0.25 + 0.03 * y + rng.normal(0, 0.02, n)
    return X, y


def write_csv(path, X, y, ids=None, extra: dict | None = None):
    """A CSV in the Similarity-Trajectory format (id, naturalness, next [, extra columns])."""
    import csv
    import json

    cols = ["id", "naturalness", "next"] + list((extra or {}).keys())
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i, (x, lab) in enumerate(zip(X, y)):
            row = [ids[i] if ids else f"{i // 3}_{i % 3}", "unnatural" if lab else "natural", json.dumps(list(map(float, x)))]
            row += [v[i] if isinstance(v, list) else v for v in (extra or {}).values()]
            w.writerow(row)
    return path
