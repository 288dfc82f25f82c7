"""ComfyUI glue: the guard's detector (anisotropy norm and cosine terms, Wen's score) run on the probe sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import comfy.samplers
import torch

from ..common.comfy_glue import Progress
from . import anisotropy as an
from .mitigation import MitigationResult
from .mitigation_probe import MitigationSettings, gradient_model, mitigate_embeddings
from .probe import (
    ModelInfo,
    ProbeContext,
    check_conditioning,
    finish,
    model_info,
    run_probe,
    seeded_noise,
    sigma_at,
    tick,
)


@dataclass
class DetectorSettings:
    seed: int = 51  # run_detection.sh
    n_samples: int = 1
    width: int = 0  # 0 = the model's native size (768 for SD2-768-v, 1024 for SDXL, else 512)
    height: int = 0
    wen_steps: int = 1
    cfg: float = 7.5  # only moves the trajectory when wen_steps > 1 (Wen's default guidance)

    def latent_hw(self) -> tuple[int, int]:
        if self.width < 8 or self.height < 8:
            raise ValueError("width and height must be at least 8 pixels (0 = the model's native size, resolved by "
                             "resolve_size)")
        return self.height // 8, self.width // 8

    def resolve_size(self, native: int) -> DetectorSettings:
        """0 (auto) for width or height becomes the model's native size (``ModelInfo.native_size``)."""
        self.width = int(self.width) or int(native)
        self.height = int(self.height) or int(native)
        return self


@dataclass
class DetectionResult:
    """Per prompt (mean over the noise samples) and per sample (rows sample-major: j * n_prompts + i)."""

    norm: torch.Tensor
    cosine: torch.Tensor
    wen: torch.Tensor
    norm_samples: torch.Tensor
    cosine_samples: torch.Tensor
    wen_steps: list[torch.Tensor]
    n_prompts: int
    prediction: str
    sigma_norm: float
    sigma_cos: float
    unet_calls: int
    info: dict[str, Any] = field(default_factory=dict)

    def anisotropy(self, gamma_n: float, gamma_c: float) -> torch.Tensor:
        return an.combine(self.norm, self.cosine, gamma_n, gamma_c)


def _detect(ctx: ProbeContext, z_rows: torch.Tensor, n_prompts: int, settings: DetectorSettings, prediction: str,
            s_n: float, s_c: float | None, wen_sigmas: list[float], progress: Progress | None,
            positive=None) -> DetectionResult:
    """The norm term (and Wen's first step) at s_n, the cosine term at s_c (skipped when None), Wen's extra steps."""
    pos = positive if positive is not None else ctx.conds["positive"]
    neg = ctx.conds["negative"]
    calls0 = ctx.unet_calls
    x_n = z_rows * math.sqrt(s_n**2 + 1.0)
    c_n, u_n = ctx.cond_uncond(x_n, s_n, positive=pos)
    tick(progress)
    norm_s = an.norm_term(c_n, u_n, s_n, prediction)
    if s_c is not None:
        x_c = z_rows * math.sqrt(s_c**2 + 1.0)
        c_c, u_c = ctx.cond_uncond(x_c, s_c, positive=pos)
        tick(progress)
        cos_s = an.cosine_term(x_c, c_c, u_c, s_c, prediction)
    else:
        cos_s = torch.full_like(norm_s, float("nan"))
    wens = [an.wen_norm(c_n, u_n, s_n, prediction)]
    x, c, u, s = x_n, c_n, u_n, s_n
    for s_next in wen_sigmas[1:]:  # Wen over several DDIM steps: x_{k+1} = x0 + s_{k+1} (x - x0) / s_k
        sig = torch.full((x.shape[0],), s, device=x.device)
        x0 = comfy.samplers.cfg_function(ctx.model, c, u, settings.cfg, x, sig, model_options=ctx.model_options,
                                         cond=pos, uncond=neg)
        x = x0 + s_next * (x - x0) / s
        s = s_next
        c, u = ctx.cond_uncond(x, s, positive=pos)
        wens.append(an.wen_norm(c, u, s, prediction))
        tick(progress)
    wen_s = torch.stack(wens, dim=1).mean(dim=1)
    return DetectionResult(
        norm=an.per_prompt_mean(norm_s, n_prompts).cpu(), cosine=an.per_prompt_mean(cos_s, n_prompts).cpu(),
        wen=an.per_prompt_mean(wen_s, n_prompts).cpu(), norm_samples=norm_s.cpu(), cosine_samples=cos_s.cpu(),
        wen_steps=[w.cpu() for w in wens], n_prompts=n_prompts, prediction=prediction, sigma_norm=s_n,
        sigma_cos=s_c if s_c is not None else float("nan"), unet_calls=ctx.unet_calls - calls0)


def _rows(z: torch.Tensor, n_prompts: int, device) -> torch.Tensor:
    """Sample-major rows (row j * B + i = z_j) match ComfyUI's tiling of a batch-B conditioning over n * B rows."""
    return z.to(device).repeat_interleave(n_prompts, dim=0)


def wen_sigma_grid(model, steps: int) -> list[float]:
    ts = an.ddim_timesteps(50)
    if not 1 <= steps <= len(ts):
        raise ValueError(f"wen_steps must be in 1..{len(ts)} (steps of the DDIM-50 grid), got {steps}")
    return [sigma_at(model, t) for t in ts[:steps]]


@dataclass
class GuardRun:
    detection: DetectionResult
    mitigation: MitigationResult | None = None
    after: DetectionResult | None = None
    embeddings: list[torch.Tensor] | None = None
    info: ModelInfo | None = None


def calls_per_detection(settings: DetectorSettings) -> int:
    """U-Net calls (progress steps) of one detection: t=981, t=41 and Wen's extra DDIM steps."""
    return 2 + max(0, int(settings.wen_steps) - 1)


def detect(model, positive, negative, settings: DetectorSettings,
           mitigation: MitigationSettings | None = None, progress: Progress | None = None) -> GuardRun:
    """Score every prompt of ``positive``; with ``mitigation``, also optimise the embeddings of flagged prompts.

    Detection is one probe run; when a prompt is flagged and mitigation is asked for, the optimisation and the
    re-scoring of its result are a second probe run on a model that can carry gradients
    (``mitigation_probe.gradient_model``: the same model, or its non-dynamic delegate under dynamic VRAM)."""
    info = model_info(model)
    n_prompts = check_conditioning(positive, negative)
    if settings.n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {settings.n_samples}")
    h, w = settings.resolve_size(info.native_size).latent_hw()
    z = seeded_noise(settings.n_samples, (info.latent_channels, h, w), settings.seed)
    s_n, s_c = sigma_at(model, an.NORM_TIMESTEP), sigma_at(model, an.COSINE_TIMESTEP)
    wen_sig = wen_sigma_grid(model, settings.wen_steps)
    per_detect = calls_per_detection(settings)
    progress = progress if progress is not None else Progress(per_detect)
    noise = z.repeat_interleave(n_prompts, dim=0)

    def fn(ctx: ProbeContext) -> DetectionResult:
        rows = _rows(z, n_prompts, ctx.noise.device)
        return _detect(ctx, rows, n_prompts, settings, info.prediction, s_n, s_c, wen_sig, progress)

    det = run_probe(model, positive, negative, fn, noise, sigmas=[s_n, s_c], cfg=settings.cfg, seed=settings.seed)
    run = GuardRun(detection=det, info=info)
    if mitigation is None:
        return run
    score0 = det.anisotropy(mitigation.gamma_n, mitigation.gamma_c) if mitigation.score == "anisotropy" else det.wen
    if not bool((score0 > mitigation.threshold).any()):
        return run  # nothing to mitigate
    per_eval = 2 if mitigation.score == "anisotropy" else 1
    progress = Progress((mitigation.max_iters + 1) * per_eval + per_detect)

    def fn_mitigate(ctx: ProbeContext) -> GuardRun:
        rows = _rows(z, n_prompts, ctx.noise.device)
        res, new_pos = mitigate_embeddings(ctx, rows, n_prompts, info.prediction, s_n, s_c, mitigation, progress)
        run.mitigation = res
        run.embeddings = res.embeddings
        with torch.no_grad():
            run.after = _detect(ctx, rows, n_prompts, settings, info.prediction, s_n, s_c, wen_sig, progress,
                                positive=new_pos)
        finish(progress)  # the optimisation stops as soon as every prompt is under the threshold
        return run

    return run_probe(gradient_model(model), positive, negative, fn_mitigate, noise, sigmas=[s_n, s_c],
                     cfg=settings.cfg, seed=settings.seed)


def detect_wen(model, positive, negative, settings: DetectorSettings) -> DetectionResult:
    """Wen et al.'s score alone: ``settings.wen_steps`` U-Net calls (DDIM-50 from t=981 with CFG), no cosine term."""
    info = model_info(model, what="Wen's score")
    n_prompts = check_conditioning(positive, negative)
    h, w = settings.resolve_size(info.native_size).latent_hw()
    z = seeded_noise(settings.n_samples, (info.latent_channels, h, w), settings.seed)
    wen_sig = wen_sigma_grid(model, settings.wen_steps)
    progress = Progress(len(wen_sig))

    def fn(ctx: ProbeContext) -> DetectionResult:
        rows = _rows(z, n_prompts, ctx.noise.device)
        return _detect(ctx, rows, n_prompts, settings, info.prediction, wen_sig[0], None, wen_sig, progress)

    return run_probe(model, positive, negative, fn, z.repeat_interleave(n_prompts, dim=0), sigmas=wen_sig,
                     cfg=settings.cfg, seed=settings.seed)


def conditioning_with_embeddings(positive, embeddings: list[torch.Tensor]):
    """A CONDITIONING like ``positive`` whose cross-attention tensors are replaced (same devices and dtypes)."""
    if len(embeddings) != len(positive):
        raise ValueError(
            f"mitigation produced {len(embeddings)} embedding(s) for a CONDITIONING of {len(positive)} entries; "
            "this happens with area or masked conditioning, which mitigation does not support. Mitigate the plain "
            "prompt CONDITIONING and apply areas afterwards.")
    out = []
    for (t, extras), e in zip(positive, embeddings):
        out.append([e.detach().to(device=t.device, dtype=t.dtype).clone(), dict(extras)])
    return out
