"""Simulated auto-reject runs: what early rejection saves, measured on labelled trajectories. Pure numpy.

One simulated run draws up to ``max_tries`` images (indices into a pool of labelled runs with held-out
probabilities) and plays the KSampler (Auto-Reject) policy on them twice, with the same draws:

- plain: every try runs all ``steps`` model evaluations; accept the first try with P_full < tau; if none, keep
  the lowest P_full.
- early: a try whose prefix probability P_prefix >= early_tau is stopped after ``check_step`` evaluations (never
  on the last try); the others run to the end and are judged like plain.

Costs are model evaluations (one per step: a first-order sampler).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SimulationResult:
    runs: int
    evals_plain: float          # mean model evaluations per run without early rejection
    evals_early: float          # ... with early rejection
    artifact_rate_plain: float  # share of delivered images that are artifacts
    artifact_rate_early: float
    artifact_rate_single: float  # one plain KSampler run per image (no rejection at all)
    tries_plain: float
    tries_early: float
    stopped_share: float        # share of tries stopped early

    @property
    def saved_ratio(self) -> float:
        """Model evaluations saved by early rejection, as a share of the plain auto-reject cost."""
        return 1.0 - self.evals_early / self.evals_plain

    def as_dict(self) -> dict:
        return {**self.__dict__, "saved_ratio": self.saved_ratio}


def simulate_auto_reject(p_full: np.ndarray, p_prefix: np.ndarray, is_artifact: np.ndarray, steps: int,
                         check_step: int, tau: float = 0.5, early_tau: float = 0.8, max_tries: int = 4,
                         runs: int = 20000, seed: int = 0) -> SimulationResult:
    p_full = np.asarray(p_full, dtype=np.float64)
    p_prefix = np.asarray(p_prefix, dtype=np.float64)
    art = np.asarray(is_artifact).astype(bool)
    if not (p_full.shape == p_prefix.shape == art.shape):
        raise ValueError("p_full, p_prefix and is_artifact must have one entry per pooled run")
    if not 1 <= check_step < steps:
        raise ValueError(f"check_step must be in 1..{steps - 1}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, p_full.shape[0], size=(runs, max_tries))
    cost_p = np.zeros(runs)
    cost_e = np.zeros(runs)
    got_p = np.zeros(runs, dtype=np.int64)
    got_e = np.zeros(runs, dtype=np.int64)
    tries_p = np.zeros(runs)
    tries_e = np.zeros(runs)
    stopped = 0
    for r in range(runs):
        d = draws[r]
        best = None
        for i in d:  # plain
            cost_p[r] += steps
            tries_p[r] += 1
            if best is None or p_full[i] < p_full[best]:
                best = i
            if p_full[i] < tau:
                break
        got_p[r] = best
        best = None
        for t, i in enumerate(d):  # early
            tries_e[r] += 1
            if t < max_tries - 1 and p_prefix[i] >= early_tau:
                cost_e[r] += check_step
                stopped += 1
                continue
            cost_e[r] += steps
            if best is None or p_full[i] < p_full[best]:
                best = i
            if p_full[i] < tau:
                break
        got_e[r] = best
    return SimulationResult(runs, float(cost_p.mean()), float(cost_e.mean()), float(art[got_p].mean()),
                            float(art[got_e].mean()), float(art[draws[:, 0]].mean()), float(tries_p.mean()),
                            float(tries_e.mean()), stopped / float(tries_e.sum()))
