"""Memorization scores from conditional and unconditional predictions on pure noise (pure torch).

Asthana & Belagiannis, "Detecting and Mitigating Memorization in Diffusion Models through Anisotropy of the
Log-Probability" (ICLR 2026, arXiv 2601.20642), as their released code computes it (``local_model/pipe.py``,
mode ``"x,c|x"``; docs/methods.md §4.2), and Wen et al.'s first-step norm (ICLR 2024; §4.6).

Everything here takes *denoised* predictions (x0) in ComfyUI's k-diffusion form ``x = x0 + sigma * eps``
(the "VE" latent the sampler works on, ``x = x_VP * sqrt(1 + sigma^2)``), because that is what ComfyUI's
``calc_cond_batch`` returns for every prediction type; the model's raw output (eps or v) is rebuilt from x0:

- eps = (x - x0) / sigma, so eps_c - eps_u = (x0_u - x0_c) / sigma                       (docs/methods.md §4.8)
- v   = sqrt(abar) * eps - sqrt(1 - abar) * x0, with abar = 1 / (1 + sigma^2)             (v-prediction, SD 2.x)

Scores, per noise sample (average them over samples yourself, as the paper averages over generations):

- norm term N at t = 981: eps models ``||eps_c - eps_u||_2`` over the flattened latent; v models, as the code
  does it, on the "scores" ``(sqrt(abar) v - x) / (1 - abar)``: ``N = sqrt(abar) ||v_c - v_u|| / (1 - abar)``.
- cosine term C at t = 41: the cosine over the latent CHANNELS at each pixel between the unconditional output and
  the guidance vector, ``cos(out_u, out_c - out_u)``, averaged over pixels (``F.cosine_similarity(dim=1)`` then a
  mean; NOT one cosine of the flattened tensors, :func:`global_cosine`, which is a different number).
- M = gamma_n * N + gamma_c * C (SD1: 1, 2; SD2: 1, 0.1; Realistic Vision: 2, 1). Higher = more likely memorized.
- Wen: ``||out_c - out_u||_2`` of the model's raw output (eps, or v for v models, as Wen's code uses
  ``noise_pred``), per sample; over several sampling steps, the mean of the per-step values.

Code quirk, documented and kept (it only rescales N): for v models the released code's "score" is
``(sqrt(abar) v - x)/(1 - abar)``, whereas the score of a v model is ``-(sqrt(1-abar) x + sqrt(abar) v)/sqrt(1-abar)``;
the difference of two such "scores" is ``||eps_c - eps_u|| / (1 - abar)`` instead of ``/ sqrt(1 - abar)``: a constant
factor 1.0029 at t = 981, so rankings and AUCs are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

NORM_TIMESTEP = 981  # DDIM-50 (leading, steps_offset 1) timesteps[0]
COSINE_TIMESTEP = 41  # DDIM-50 timesteps[-3]
PREDICTIONS = ("eps", "v")

# (gamma_n, gamma_c) of detect_eval.py. "auto" picks by prediction type (eps -> SD1, v -> SD2).
WEIGHT_PRESETS: dict[str, tuple[float, float]] = {
    "SD1 (1, 2)": (1.0, 2.0),
    "SD2 (1, 0.1)": (1.0, 0.1),
    "Realistic Vision (2, 1)": (2.0, 1.0),
    "norm only (1, 0)": (1.0, 0.0),
    "cosine only (0, 1)": (0.0, 1.0),
}
AUTO_WEIGHTS = {"eps": "SD1 (1, 2)", "v": "SD2 (1, 0.1)"}


def ddim_timesteps(num_inference_steps: int = 50, num_train_timesteps: int = 1000, steps_offset: int = 1) -> list[int]:
    """diffusers DDIMScheduler "leading" timesteps, high noise first: 50 steps -> [981, 961, ..., 21, 1]."""
    if num_inference_steps < 1 or num_inference_steps > num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in 1..{num_train_timesteps}, got {num_inference_steps}")
    ratio = num_train_timesteps // num_inference_steps
    return [i * ratio + steps_offset for i in range(num_inference_steps)][::-1]


def weights_for(preset: str, prediction: str) -> tuple[float, float]:
    """(gamma_n, gamma_c) of a preset name, or of the paper's model family for ``"auto"``."""
    if preset == "auto":
        if prediction not in AUTO_WEIGHTS:
            raise ValueError(f"no paper weights for prediction type {prediction!r}; choose a preset explicitly")
        preset = AUTO_WEIGHTS[prediction]
    if preset not in WEIGHT_PRESETS:
        raise ValueError(f"unknown weight preset {preset!r}; one of {['auto', *WEIGHT_PRESETS]}")
    return WEIGHT_PRESETS[preset]


def _sigma_like(sigma, ref: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=ref.dtype, device=ref.device)
    if s.ndim == 0:
        s = s.expand(ref.shape[0])
    if s.shape[0] != ref.shape[0]:
        raise ValueError(f"sigma has {s.shape[0]} entries for a batch of {ref.shape[0]}")
    if not bool((s > 0).all()):
        raise ValueError("sigma must be > 0 (the scores are undefined at the end of the schedule, sigma = 0)")
    return s.view(-1, *([1] * (ref.ndim - 1)))


def alpha_bar(sigma: torch.Tensor) -> torch.Tensor:
    """VP abar_t of a k-diffusion sigma: abar = 1 / (1 + sigma^2)."""
    return 1.0 / (1.0 + sigma**2)


def model_output(x: torch.Tensor, x0: torch.Tensor, sigma, prediction: str) -> torch.Tensor:
    """The raw network output (eps or v) that produced the denoised ``x0`` at the VE input ``x``."""
    s = _sigma_like(sigma, x0)
    eps = (x - x0) / s
    if prediction == "eps":
        return eps
    if prediction == "v":
        ab = alpha_bar(s)
        return ab.sqrt() * eps - (1.0 - ab).sqrt() * x0
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def output_difference(x0_cond: torch.Tensor, x0_uncond: torch.Tensor, sigma, prediction: str) -> torch.Tensor:
    """out_c - out_u of the raw network output, from the two denoised predictions at the same input x.

    eps: (x0_u - x0_c) / sigma; v: sqrt(abar) * d_eps - sqrt(1 - abar) * (x0_c - x0_u) (= d_eps * sqrt(1 + sigma^2)).
    """
    s = _sigma_like(sigma, x0_cond)
    d_eps = (x0_uncond - x0_cond) / s
    if prediction == "eps":
        return d_eps
    if prediction == "v":
        ab = alpha_bar(s)
        return ab.sqrt() * d_eps - (1.0 - ab).sqrt() * (x0_cond - x0_uncond)
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each batch item over all its other dims: [B, ...] -> [B]."""
    return t.flatten(1).norm(dim=1)


def channel_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine over dim 1 (latent channels) at every position: [B, C, *S] -> [B, *S] (as F.cosine_similarity)."""
    dot = (a * b).sum(dim=1)
    den = (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)
    return dot / den


def mean_channel_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The paper's cosine term: per-pixel channel cosine, averaged over pixels -> [B]."""
    return channel_cosine(a, b).flatten(1).mean(dim=1)


def global_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """One cosine of the flattened tensors per item (NOT the paper's term; kept to show the difference)."""
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)


def norm_term(x0_cond: torch.Tensor, x0_uncond: torch.Tensor, sigma, prediction: str) -> torch.Tensor:
    """N per sample at the high-noise timestep (see the module docstring for the v-prediction form)."""
    d = output_difference(x0_cond, x0_uncond, sigma, prediction)
    if prediction == "eps":
        return per_sample_norm(d)
    ab = alpha_bar(_sigma_like(sigma, x0_cond)).flatten()
    return ab.sqrt() * per_sample_norm(d) / (1.0 - ab)


def cosine_term(x: torch.Tensor, x0_cond: torch.Tensor, x0_uncond: torch.Tensor, sigma, prediction: str) -> torch.Tensor:
    """C per sample at the low-noise timestep: mean over pixels of cos_channels(out_u, out_c - out_u)."""
    if x0_cond.ndim < 3:
        raise ValueError(f"the cosine term needs spatial latents [B, C, H, W]; got shape {tuple(x0_cond.shape)}")
    out_u = model_output(x, x0_uncond, sigma, prediction)
    diff = output_difference(x0_cond, x0_uncond, sigma, prediction)
    return mean_channel_cosine(out_u, diff)


def wen_norm(x0_cond: torch.Tensor, x0_uncond: torch.Tensor, sigma, prediction: str) -> torch.Tensor:
    """Wen et al.'s per-sample ||out_c - out_u||_2 of the raw network output (eps, or v for v models)."""
    return per_sample_norm(output_difference(x0_cond, x0_uncond, sigma, prediction))


def combine(norm: torch.Tensor, cosine: torch.Tensor, gamma_n: float, gamma_c: float) -> torch.Tensor:
    """M = gamma_n * N + gamma_c * C."""
    return gamma_n * norm + gamma_c * cosine


def per_prompt_mean(values: torch.Tensor, n_prompts: int) -> torch.Tensor:
    """Rows laid out sample-major (row = j * n_prompts + i) -> mean over the samples j, one value per prompt i."""
    if values.shape[0] % n_prompts:
        raise ValueError(f"{values.shape[0]} rows are not a whole number of samples of {n_prompts} prompt(s)")
    return values.reshape(-1, n_prompts, *values.shape[1:]).mean(dim=0)


def wen_from_trajectory(
    x0_cond: torch.Tensor,
    x0_uncond: torch.Tensor,
    sigmas: torch.Tensor,
    prediction: str,
    steps: int = 1,
) -> torch.Tensor:
    """Wen's metric from recorded predictions: [B, T, *S] cond/uncond x0 and [T] sigmas -> [B].

    The mean over the first ``steps`` recorded steps of ``||out_c - out_u||`` (1 = Wen's first-step metric).
    """
    if x0_cond.shape != x0_uncond.shape:
        raise ValueError(f"cond and uncond predictions differ in shape: {tuple(x0_cond.shape)} vs "
                         f"{tuple(x0_uncond.shape)}")
    if x0_cond.ndim < 3 or sigmas.ndim != 1 or sigmas.shape[0] != x0_cond.shape[1]:
        raise ValueError(f"expected x0 [B, T, ...] and sigmas [T]; got {tuple(x0_cond.shape)} and "
                         f"{tuple(sigmas.shape)}")
    t = x0_cond.shape[1]
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps > t:
        raise ValueError(f"asked for the mean over {steps} steps but the trajectory recorded only {t}; lower "
                         "'steps' or record more steps (every_k_steps 1)")
    vals = []
    for k in range(steps):
        s = float(sigmas[k])
        if not math.isfinite(s) or s <= 0:
            raise ValueError(f"recorded step {k} has sigma {s}; Wen's metric needs sigma > 0")
        vals.append(wen_norm(x0_cond[:, k].float(), x0_uncond[:, k].float(), s, prediction))
    return torch.stack(vals, dim=1).mean(dim=1)


def format_values(values: Sequence[float], digits: int = 4) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)
