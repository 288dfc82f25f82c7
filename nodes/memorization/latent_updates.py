"""Memorization from a recorded sampling run: latent-update norms against a data-free stability bound (pure torch).

After Huang et al., "Broken Memories: Detecting and Mitigating Memorization in Diffusion Models with Degraded
Generations" (KDD 2026, arXiv 2605.22050): memorized generations are numerically unstable, and the norms of the
*latent updates* along the sampling trajectory leave an empirical *stability region* that ordinary generations
stay in; the check needs no model call beyond sampling. **Only the paper's abstract and the opening of its
introduction could be read here** (the stored copy of the HTML ends there), so its equations could not be copied;
what follows is this pack's formulation of the two named quantities, with every choice stated.

Notation: a recorded run gives, per batch item and recorded step k, the noise level sigma_k and the latent x_k the
model was evaluated on (ComfyUI's k-diffusion form; ``Trajectory.x``), plus the sampler's final latent.

(1) The model's own latent. For eps / v / x0 / EDM models ComfyUI samples ``x = x0 + sigma * eps`` (VE), while the
    network (and the paper's DDIM on Stable Diffusion, diffusers' ``latents``) works on the VP latent
    ``z = x / sqrt(1 + sigma^2) = alpha x0 + beta eps`` with ``alpha = 1/sqrt(1+sigma^2)``,
    ``beta = sigma/sqrt(1+sigma^2)``. Flow models (``prediction == "flow"``) sample ``z = x = (1-sigma) x0 + sigma
    eps`` directly: ``alpha = 1 - sigma``, ``beta = sigma``.

(2) Latent update of recorded step k (the paper's quantity, for ANY sampler): the change of that latent between
    two consecutive recorded evaluations, RMS-normalised over the D latent elements,

        u_k = || z_{k+1} - z_k ||_2 / sqrt(D),

    the last update ending at the sampler's returned latent (noise level = the schedule's last sigma). When the
    recorder kept every k-th step only, an update spans several sampler steps; it is still compared with the
    reference of the same (sigma_a, sigma_b) below, which is exact for any gap.

(3) Data-free stability bound (where the paper uses bounds measured on non-memorized generations, which a user
    does not have for their model): the update that the exact probability-flow ODE makes between the same two
    noise levels for a generation whose clean image and noise are independent and have the training data's
    per-element scale s (s = 1 for latents scaled to unit variance, which is what SD's latent scale factor does):
    z(sigma) = alpha(sigma) x0 + beta(sigma) eps moves by

        r_k = sqrt( (alpha_b - alpha_a)^2 s^2 + (beta_b - beta_a)^2 )          (per element, RMS)

    The **update ratio** rho_k = u_k / r_k is 1 for such a step. Early in sampling the update is almost all
    ``(alpha_b - alpha_a) x0_hat``: an ordinary prompt's prediction is still a blurry mean (rho < 1), a memorized
    prompt commits to one training image at once and classifier-free guidance amplifies it (rho >= 1, the early
    "overestimation" of Kim et al., arXiv 2509.25705). The stability region is ``rho_k <= 1``.

(4) Score of an item: ``U = max_k rho_k`` over the updates that START in the noise-dominated phase,
    SNR = (alpha/beta)^2 <= snr_max (default 1, i.e. sigma >= 1 for eps/v models, sigma >= 0.5 for flow), where an
    ordinary generation has not yet decided what it draws. U >= 0, higher = more likely memorized; U > 1 means
    the run left the data-free stability region. Deviations from the paper (by construction, since its text was
    not available): one data-free bound instead of per-step bounds fitted on reference generations; the RMS
    normalisation (comparable across resolutions); the maximum over the noise phase as the one score.

Limits: stochastic samplers (ancestral, SDE, DDPM, LCM) add fresh noise inside a step, which the recorded update
contains but the ODE reference does not (the node says so); a run that starts below the noise phase (img2img
with a low denoise) has no update to score (NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FORMS = {"eps": "vp", "v": "vp", "x0": "vp", "edm": "vp", "flow": "flow"}
STOCHASTIC_HINTS = ("ancestral", "sde", "ddpm", "lcm", "euler_a", "restart")
DEFAULT_THRESHOLD = 1.0  # rho = 1: a step as large as an exact ODE step with data-scale predictions
DEFAULT_SNR_MAX = 1.0


def latent_form(prediction: str) -> str:
    """"vp" or "flow": how the sampler's x relates to the model's own latent (see the module docstring)."""
    if prediction not in FORMS:
        raise ValueError(f"latent updates are defined for eps, v, x0, EDM and flow models; this trajectory's model "
                         f"uses {prediction!r}")
    return FORMS[prediction]


def coefficients(sigma: torch.Tensor | float, form: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta) with z = alpha x0 + beta eps at noise level sigma (float64)."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    if form == "vp":
        den = torch.sqrt(1.0 + s * s)
        return 1.0 / den, s / den
    if form == "flow":
        return 1.0 - s, s
    raise ValueError(f"form must be 'vp' or 'flow', got {form!r}")


def model_latent(x: torch.Tensor, sigma: torch.Tensor | float, form: str) -> torch.Tensor:
    """z from the sampler's x: x / sqrt(1 + sigma^2) (vp) or x itself (flow); sigma broadcast over the batch."""
    if form == "flow":
        return x
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return x / torch.sqrt(1.0 + s * s)


def reference_update(sigma_from, sigma_to, form: str, data_std: float = 1.0) -> torch.Tensor:
    """r: RMS size of the exact ODE update between two noise levels for independent data-scale x0 and unit eps."""
    if not (math.isfinite(data_std) and data_std > 0):
        raise ValueError(f"data_std must be a positive number, got {data_std}")
    a0, b0 = coefficients(sigma_from, form)
    a1, b1 = coefficients(sigma_to, form)
    return torch.sqrt((a1 - a0) ** 2 * data_std**2 + (b1 - b0) ** 2)


def snr(sigma, form: str) -> torch.Tensor:
    a, b = coefficients(sigma, form)
    return (a / b) ** 2


@dataclass
class UpdateNorms:
    """Per item and update: u (RMS update of the model latent), r (reference), rho = u / r; per update the noise
    levels it spans and whether it starts in the noise-dominated phase."""

    u: torch.Tensor  # [B, U]
    r: torch.Tensor  # [U]
    rho: torch.Tensor  # [B, U]
    sigma_from: torch.Tensor  # [U]
    sigma_to: torch.Tensor  # [U]
    in_phase: torch.Tensor  # [U] bool
    form: str

    def score(self) -> torch.Tensor:
        """U per item: the largest rho among updates that start in the noise phase (NaN when there is none)."""
        if not bool(self.in_phase.any()):
            return torch.full((self.rho.shape[0],), float("nan"), dtype=torch.float64)
        return self.rho[:, self.in_phase].max(dim=1).values

    def peak_index(self) -> torch.Tensor:
        """Index (into the updates) of the rho that gave each item's score; -1 when there is none."""
        if not bool(self.in_phase.any()):
            return torch.full((self.rho.shape[0],), -1, dtype=torch.long)
        masked = self.rho.masked_fill(~self.in_phase.unsqueeze(0), float("-inf"))
        return masked.argmax(dim=1)


def latent_updates(x: torch.Tensor, sigmas: torch.Tensor, prediction: str, final: torch.Tensor | None = None,
                   final_sigma: float | None = None, data_std: float = 1.0,
                   snr_max: float = DEFAULT_SNR_MAX) -> UpdateNorms:
    """Update norms of a recorded run: x [B, T, *S] (the latents the model saw), sigmas [T], optionally the final
    latent [B, *S] at noise level ``final_sigma`` (the schedule's last sigma, 0 for a full denoise)."""
    if x.ndim < 3:
        raise ValueError(f"expected x [batch, steps, *latent]; got shape {tuple(x.shape)}")
    if sigmas.ndim != 1 or sigmas.shape[0] != x.shape[1]:
        raise ValueError(f"sigmas has shape {tuple(sigmas.shape)} for {x.shape[1]} recorded steps")
    if not (math.isfinite(snr_max) and snr_max > 0):
        raise ValueError(f"snr_max must be a positive number, got {snr_max}")
    form = latent_form(prediction)
    sig = sigmas.detach().to(torch.float64).cpu()
    if not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()):
        raise ValueError(f"recorded sigmas must be finite and >= 0, got {sig.tolist()}")
    xs = x.detach().to(torch.float64).cpu()
    zs = [model_latent(xs[:, k], sig[k], form) for k in range(xs.shape[1])]
    ends = list(sig.tolist())
    if final is not None:
        if tuple(final.shape) != (x.shape[0], *x.shape[2:]):
            raise ValueError(f"final latent has shape {tuple(final.shape)}, expected {(x.shape[0], *x.shape[2:])}")
        fs = 0.0 if final_sigma is None else float(final_sigma)
        if not (math.isfinite(fs) and fs >= 0):
            raise ValueError(f"final_sigma must be finite and >= 0, got {final_sigma}")
        zs.append(model_latent(final.detach().to(torch.float64).cpu(), fs, form))
        ends.append(fs)
    if len(zs) < 2:
        raise ValueError("one recorded latent and no final latent: there is no update to measure; record more than "
                         "one step or keep the final latent")
    d = math.prod(x.shape[2:])
    u = torch.stack([(zs[k + 1] - zs[k]).flatten(1).norm(dim=1) / math.sqrt(d) for k in range(len(zs) - 1)], dim=1)
    s_from = torch.tensor(ends[:-1], dtype=torch.float64)
    s_to = torch.tensor(ends[1:], dtype=torch.float64)
    if bool((s_to >= s_from).any()):
        bad = int(torch.nonzero(s_to >= s_from)[0, 0])
        raise ValueError(f"the noise level does not decrease between recorded steps {bad} and {bad + 1} "
                         f"({float(s_from[bad]):.4g} -> {float(s_to[bad]):.4g}); latent updates need a denoising run")
    r = reference_update(s_from, s_to, form, data_std)
    in_phase = snr(s_from.clamp_min(1e-12), form) <= snr_max * (1 + 1e-12)
    return UpdateNorms(u=u, r=r, rho=u / r, sigma_from=s_from, sigma_to=s_to, in_phase=in_phase, form=form)


def is_stochastic(sampler_name: str | None) -> bool:
    name = (sampler_name or "").lower()
    return any(h in name for h in STOCHASTIC_HINTS)
