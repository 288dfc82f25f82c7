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


# ================================================================================================ seed tournament
# Best-of-N against a seed tournament, on labelled runs with held-out probabilities (benchmarks/seed_tournament.py).
# A draw is N indices into the pool (with replacement). Costs are in sampler steps (one model evaluation per step).
#
# - best-of-N: every run goes to the end; keep the lowest full P. Cost N * S.
# - tournament(N, schedule): at each check (K_j, n_j) rank the survivors by their prefix P at K_j and keep the n_j
#   lowest (ties: the earlier candidate); the last n_m survivors run to the end; keep the lowest full P among them.
#   Cost sum_j n_{j-1} (K_j - K_{j-1}) + n_m (S - K_m), with n_0 = N and K_0 = 0 (N K + k (S - K) for one check).


def tournament_cost(n: int, schedule, steps: int) -> int:
    """Model evaluations of one tournament (one per step): ``schedule`` = [(K_1, n_1), ..., (K_m, n_m)]."""
    alive, prev, cost = int(n), 0, 0
    for k, keep in schedule:
        if not (prev < int(k) < int(steps)):
            raise ValueError(f"check steps must increase strictly inside 1..{steps - 1}, got {list(schedule)}")
        if not (1 <= int(keep) <= alive):
            raise ValueError(f"each check keeps 1..(survivors so far) candidates, got {list(schedule)} for N={n}")
        cost += alive * (int(k) - prev)
        alive, prev = int(keep), int(k)
    return cost + alive * (int(steps) - prev)


def _pick_lowest(d: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per row of candidate indices ``d`` [R, n], the candidate with the lowest p (ties: the earlier one)."""
    return d[np.arange(d.shape[0]), np.argmin(p[d], axis=1)]


def best_of_n_rates(p_full: np.ndarray, is_artifact: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """r(N) for N = 1..draws.shape[1]: the artifact rate of the lowest-P run among the first N of every draw."""
    p = np.asarray(p_full, dtype=np.float64)
    art = np.asarray(is_artifact).astype(bool)
    return np.array([art[_pick_lowest(draws[:, :n], p)].mean() for n in range(1, draws.shape[1] + 1)])


def tournament_rate(p_full: np.ndarray, p_prefix: dict, is_artifact: np.ndarray, n: int, schedule,
                    draws: np.ndarray) -> float:
    """Artifact rate of tournament(n, schedule) on the first n candidates of every draw. ``p_prefix[K]``: the
    prefix P of every pooled run at check step K."""
    art = np.asarray(is_artifact).astype(bool)
    d = draws[:, :n]
    for k, keep in schedule:
        order = np.argsort(np.asarray(p_prefix[int(k)], dtype=np.float64)[d], axis=1, kind="stable")[:, :int(keep)]
        d = np.take_along_axis(d, np.sort(order, axis=1), axis=1)  # keep the survivors in candidate order
    return float(art[_pick_lowest(d, np.asarray(p_full, dtype=np.float64))].mean())


def equivalent_n(rates: np.ndarray, rate: float) -> float:
    """N* = the smallest best-of-N whose artifact rate is no higher than ``rate``, interpolated linearly between
    N - 1 and N (``rates[i]`` = r(i + 1)). 1 if one run already does as well; inf beyond the largest N given."""
    r = np.asarray(rates, dtype=np.float64)
    if r[0] <= rate:
        return 1.0
    for i in range(1, r.shape[0]):
        if r[i] <= rate:
            a, b = r[i - 1], r[i]
            return float(i + (a - rate) / (a - b))  # N - 1 = i, N = i + 1
    return float("inf")


def saved_at_equal_rate(cost: float, n_star: float, steps: int) -> float:
    """1 - cost / (N* S): the share of best-of-N*'s model evaluations a tournament of equal artifact rate saves."""
    return 1.0 - float(cost) / (float(n_star) * float(steps))
