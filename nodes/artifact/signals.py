"""Signals that rank partial sampling runs (the Seed Tournament's checks, Auto-Reject's early check). Pure torch/numpy.

A signal turns what the capture recorded up to a check step into one number per candidate. Each has a direction;
:func:`badness_ranks` turns any of them into ranks (1 = best) so that they can be combined and compared.

``cfg_asd`` -- CFG-Rejection's Accumulated Score Difference (Wang, Tang, Chang, "Diffusion Sampling Path Tells
More: An Efficient Plug-and-Play Strategy for Sample Filtering", arXiv 2505.23343). The paper defines the score
difference of step t, G_t(c) = || S(x_t; sigma_t, c) - S(x_t; sigma_t, {}) ||_2 (conditional minus unconditional
score), and the partial accumulation over the first tau denoising steps E_{tau:T}(c) = sum_{t=T-tau}^{T} G_t(c)^2;
trajectories with a LOW accumulation are rejected early (high ASD goes with high-density regions and better
samples; quantile thresholds per prompt, not a fixed gamma). What is computed here, and where it deviates:

- G_t is measured in noise-prediction (epsilon) space, G_t = || x0_cond - x0_uncond ||_2 / sigma_t, which for an
  epsilon model in ComfyUI's k-diffusion form (x = x0 + sigma eps) equals || eps_cond - eps_uncond ||_2, exactly the
  quantity of the authors' SD1.5 code (``noise_pred_text - noise_pred_uncond``, flattened, L2 norm). The paper's
  S is the score, S = -eps / sigma, so its G_t would carry another 1/sigma_t; the authors' SD1.5 code does not use
  it (their paper normalises per step "to remove the timestep imbalance"), and neither does this.
- The accumulation is the MEAN of G_t (not the sum of squares) over the recorded steps before the check, as in the
  authors' SD1.5 selection code (``torch.mean`` over the chosen steps). For ranking candidates that share a
  schedule, mean and sum give the same order; squaring changes the weights of the steps.
- x0_cond / x0_uncond are the denoised predictions the capture records per step (``keep_cond_uncond``); for
  non-epsilon models (v-prediction, flow) G_t is the epsilon-equivalent difference ||delta x0|| / sigma of the
  k-diffusion form, not the model's native output.
- Normalisation: none across the batch; candidates are only ranked against each other (the paper's per-prompt
  quantile). With cfg = 1 there is no unconditional prediction: the signal does not exist (cfg_asd_unavailable).

``classifier`` -- P(artifact) of a prefix classifier on the similarity series so far (lower is better).

``rank_average`` -- the mean of the ranks of cfg_asd (high = good) and of the classifier's P (low = good); ties
share the mean of their ranks; a lower mean rank is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

HIGHER = "higher is better"
LOWER = "lower is better"


@dataclass(frozen=True)
class SignalInfo:
    name: str
    label: str
    direction: str
    cost: str
    source: str
    needs_cfg: bool = False
    needs_classifier: bool = False
    short: str = ""  # a column heading


SIGNALS = {
    "cfg_asd": SignalInfo(
        "cfg_asd", "CFG score difference (ASD)", HIGHER,
        "free: no extra model evaluation (the cond/uncond predictions CFG already computes), one norm per step",
        "CFG-Rejection, Wang, Tang, Chang, arXiv 2505.23343 (mean ||eps_cond - eps_uncond|| over the steps so far)",
        needs_cfg=True, short="ASD"),
    "classifier": SignalInfo(
        "classifier", "P(artifact) of the prefix classifier", LOWER,
        "the similarity series so far (latent_cosine: free; pixel_ssim/dreamsim: one VAE decode per step)",
        "Similarity Trajectories (Menn et al., arXiv 2412.17109) + a prefix classifier you trained",
        needs_classifier=True, short="P(artifact)"),
    "rank_average": SignalInfo(
        "rank_average", "mean rank (cfg_asd, classifier)", LOWER,
        "both of the above",
        "the mean of the two ranks (1 = best); ties share their mean rank",
        needs_cfg=True, needs_classifier=True, short="mean rank"),
}
SIGNAL_NAMES = tuple(SIGNALS)


class SignalUnavailable(ValueError):
    """The chosen signal cannot be computed for this run; the message says why and what to do."""

    __module__ = "sentinel"


CFG1_MESSAGE = ("the cfg_asd signal (CFG-Rejection) needs classifier-free guidance: it compares the conditional and "
                "the unconditional prediction, and with cfg = 1 ComfyUI computes no unconditional prediction. Set cfg "
                "above 1, or pick the 'classifier' signal (a prefix classifier on the similarity series)")


def cfg_score_differences(x0_cond: torch.Tensor, x0_uncond: torch.Tensor, sigmas) -> torch.Tensor:
    """G_t per item and recorded step [B, T] (float64): || x0_cond - x0_uncond ||_2 / sigma_t, the L2 norm over the
    whole latent of each item (= || eps_cond - eps_uncond ||_2 for an epsilon model)."""
    if x0_cond is None or x0_uncond is None:
        raise SignalUnavailable(CFG1_MESSAGE)
    if x0_cond.shape != x0_uncond.shape or x0_cond.ndim < 3:
        raise ValueError(f"cond/uncond predictions must be [batch, steps, ...] of one shape, got "
                         f"{tuple(x0_cond.shape)} and {tuple(x0_uncond.shape)}")
    s = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if s.shape[0] != x0_cond.shape[1]:
        raise ValueError(f"{s.shape[0]} sigmas for {x0_cond.shape[1]} recorded steps")
    d = (x0_cond.double() - x0_uncond.double()).flatten(2)
    norm = torch.linalg.vector_norm(d, dim=2)
    return norm / s.clamp_min(torch.finfo(torch.float64).tiny)[None, :]


def accumulated_score_difference(g: torch.Tensor, upto: int | None = None) -> np.ndarray:
    """The ASD of every item: the mean of G_t over the first ``upto`` recorded steps (all by default). Items whose
    G is not finite (NaN/inf in sampling) get NaN, which ranks last."""
    g = torch.as_tensor(g, dtype=torch.float64)
    if g.ndim != 2 or g.shape[1] == 0:
        raise ValueError(f"G must be [batch, steps] with at least one step, got {tuple(g.shape)}")
    n = g.shape[1] if upto is None else int(upto)
    if not 1 <= n <= g.shape[1]:
        raise ValueError(f"upto must be in 1..{g.shape[1]}, got {upto}")
    return g[:, :n].mean(dim=1).numpy()


def badness_ranks(values, direction: str) -> np.ndarray:
    """Ranks 1..n with 1 = best for ``direction`` ("higher is better" / "lower is better"); ties share the mean of
    their ranks; NaN ranks after every finite value (NaNs tie among themselves)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if direction not in (HIGHER, LOWER):
        raise ValueError(f"direction must be {HIGHER!r} or {LOWER!r}, got {direction!r}")
    key = -v if direction == HIGHER else v.copy()
    key = np.where(np.isfinite(key), key, np.inf)  # NaN/inf-bad: last
    order = np.argsort(key, kind="stable")
    ranks = np.empty(v.shape[0], dtype=np.float64)
    i = 0
    while i < order.shape[0]:
        j = i
        while j + 1 < order.shape[0] and key[order[j + 1]] == key[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def rank_average(*columns: tuple) -> np.ndarray:
    """Mean of the ranks (:func:`badness_ranks`) of several (values, direction) columns; lower is better."""
    if not columns:
        raise ValueError("rank_average needs at least one column")
    return np.mean([badness_ranks(v, d) for v, d in columns], axis=0)


def keep_best(values, direction: str, n: int) -> list[int]:
    """Positions of the ``n`` best values (best first); ties go to the earlier position; NaN is worst."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not 0 <= int(n) <= v.shape[0]:
        raise ValueError(f"cannot keep {n} of {v.shape[0]}")
    key = -v if direction == HIGHER else v.copy()
    key = np.where(np.isfinite(key), key, np.inf)
    return [int(i) for i in np.argsort(key, kind="stable")[: int(n)]]


def finite_or_nan(values) -> list[float]:
    return [float(x) if math.isfinite(float(x)) else float("nan") for x in np.asarray(values, dtype=np.float64)]
