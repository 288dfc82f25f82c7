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


def write_legacy_index(folder, rows):
    """A dataset folder as earlier versions wrote it: every row in one index.csv (INDEX_COLUMNS)."""
    import csv
    import os

    from diffusion_sentinel.classifiers.data import INDEX_COLUMNS

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "index.csv")
    new = not os.path.isfile(path)
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(INDEX_COLUMNS))
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in INDEX_COLUMNS})
    return path


def install_package_alias() -> None:
    """Make ``import diffusion_sentinel.<sub>`` work in a fresh process (what tests/conftest.py does for pytest;
    ``import conftest`` there may find tests/integration/conftest.py first)."""
    import importlib.machinery
    import importlib.util
    import sys
    from pathlib import Path

    if "diffusion_sentinel" in sys.modules:
        return
    spec = importlib.machinery.ModuleSpec("diffusion_sentinel", None, is_package=True)
    mod = importlib.util.module_from_spec(spec)
    mod.__path__ = [str(Path(__file__).resolve().parents[1])]
    sys.modules["diffusion_sentinel"] = mod


def dataset_writer_process(folder, worker, batches):
    """One ComfyUI worker's share of a concurrent-writing test: ``batches`` writes of 3 samples into ``folder``
    (spawned as its own process; value 0 of each series tells the writes apart)."""
    install_package_alias()
    import torch
    from diffusion_sentinel.nodes.artifact.dataset_writer import write_samples
    from diffusion_sentinel.nodes.trajectory.similarity import SimilaritySeries
    from diffusion_sentinel.nodes.trajectory.trajectory import Trajectory

    for k in range(batches):
        v = torch.full((3, 4), 0.5, dtype=torch.float64) + 0.01 * torch.arange(4)
        v[:, 0] = worker + k / 100
        traj = Trajectory(x0=torch.randn(3, 4, 4, 2, 2), sigmas=torch.linspace(10, 1, 4))
        write_samples(folder, SimilaritySeries(v, [0, 1, 2, 3], "latent_cosine", True, source={"steps": 4}),
                      [1, 0, 1], traj, torch.rand(3, 4, 4, 3), group=f"w{worker}")
