"""The Seed Tournament's plan: when to check, how many candidates survive each check, and what it costs. Pure.

N candidates are sampled as one batch. At each check step K_j (after K_j sampler steps) the survivors are ranked
by a signal and the best n_j go on; after the last check exactly ``keep`` candidates run to the end. One check is
the plain tournament (cost N K + k (S - K) model evaluations per image instead of N S); several checks are
successive halving (each intermediate check keeps half of the field, never fewer than ``keep``, unless a count is
given explicitly as ``K:n``).

``check_at`` text: comma-separated checks, each a fraction of the steps (``0.3``: a number with a decimal point,
between 0 and 1) or a step (``15``: a whole number >= 1), optionally ``:n`` survivors (``5:4,15:2,25:1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    step: int   # the check happens after this many sampler steps (1..S-1)
    keep: int   # survivors after the check

    def as_dict(self) -> dict:
        return {"step": self.step, "keep": self.keep}


def _check_step(token: str, steps: int) -> int:
    t = token.strip()
    if not t:
        raise ValueError("check_at has an empty entry (two commas in a row?)")
    try:
        v = float(t)
    except ValueError:
        raise ValueError(f"check_at entry {t!r} is not a number: write a fraction of the steps (0.3) or a step "
                         "(15), several separated by commas") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"check_at entry {t!r} must be positive")
    if "." in t or "e" in t.lower() or v < 1:
        if v >= 1:
            raise ValueError(f"check_at entry {t!r}: a fraction must be below 1 (write a step as a whole number, "
                             "e.g. 15)")
        return max(1, int(round(v * steps)))
    return int(v)


def single_check_step(text: str, steps: int) -> int:
    """One check step (Auto-Reject's early check): a fraction (0.3) or a step (15) in 1..steps-1."""
    t = str(text).strip()
    if "," in t or ":" in t:
        raise ValueError(f"check_at {t!r}: this node checks once; give one fraction (0.3) or one step (15)")
    if int(steps) < 2:
        raise ValueError(f"an early check needs at least 2 steps, got {steps}")
    k = _check_step(t, int(steps))
    if not 1 <= k <= int(steps) - 1:
        raise ValueError(f"check_at {t!r} is step {k}; it must lie in 1..{int(steps) - 1}")
    return k


def parse_check_at(text: str, steps: int, candidates: int, keep: int) -> list[Check]:
    """The checks of a tournament with ``candidates`` N, ``keep`` k and ``steps`` S (see the module docstring)."""
    steps, candidates, keep = int(steps), int(candidates), int(keep)
    if candidates < 2:
        raise ValueError(f"a tournament needs at least 2 candidates, got {candidates}")
    if not 1 <= keep < candidates:
        raise ValueError(f"keep must be between 1 and candidates - 1 ({candidates - 1}), got {keep}: with keep = "
                         "candidates every seed runs to the end (use a plain KSampler with a batch)")
    if steps < 2:
        raise ValueError(f"a tournament needs at least 2 steps (a check before the last step), got {steps}")
    parts = [p for p in str(text).split(",")]
    if not str(text).strip():
        raise ValueError("check_at is empty: give a fraction of the steps (0.3) or a step (15)")
    raw = []
    for p in parts:
        step_txt, _, n_txt = p.partition(":")
        k = _check_step(step_txt, steps)
        n = None
        if n_txt.strip():
            try:
                n = int(n_txt)
            except ValueError:
                raise ValueError(f"check_at entry {p.strip()!r}: the survivors after ':' must be a whole number") from None
        raw.append((p.strip(), k, n))
    out: list[Check] = []
    alive, prev = candidates, 0
    for i, (txt, k, n) in enumerate(raw):
        last = i == len(raw) - 1
        if not prev < k <= steps - 1:
            where = ", ".join(f"{t} -> step {s}" for t, s, _ in raw)
            raise ValueError(f"check steps must increase strictly and lie in 1..{steps - 1} (the last step cannot be "
                             f"checked: nothing would be saved); got {where} for {steps} steps")
        if n is None:
            n = keep if last else max(keep, math.ceil(alive / 2))
        if last and n != keep:
            raise ValueError(f"the last check must leave keep = {keep} candidates, '{txt}' leaves {n}")
        if not keep <= n <= alive:
            raise ValueError(f"check '{txt}' keeps {n}: survivors must stay between keep ({keep}) and the "
                             f"candidates still running ({alive})")
        out.append(Check(k, n))
        alive, prev = n, k
    return out


def planned_cost(candidates: int, checks: list[Check], steps: int, evals_per_step: float = 1.0) -> float:
    """Model evaluations per image of the whole tournament: sum_j n_(j-1) (K_j - K_(j-1)) + k (S - K_m), times the
    sampler's evaluations per step (1 for euler/ddim/dpmpp_2m/uni_pc/..., about 2 for heun/dpm_2/dpmpp_sde)."""
    alive, prev, cost = int(candidates), 0, 0
    for c in checks:
        cost += alive * (c.step - prev)
        alive, prev = c.keep, c.step
    cost += alive * (int(steps) - prev)
    return cost * float(evals_per_step)


def schedule_text(checks: list[Check]) -> str:
    return ",".join(f"{c.step}:{c.keep}" for c in checks)
