"""ComfyUI glue: the memorization detector, its mitigation and the volume growth rate, run as probe samplers.

Every model evaluation goes through a normal ``CFGGuider`` with a custom ``Sampler`` (docs/comfyui-internals.md
§2.10): ComfyUI loads the model, applies LoRAs and other packs' patches and wrappers, processes the conditioning
(SDXL's pooled/size embeddings included) and cleans up as for sampling; inside, ``calc_cond_batch`` evaluates the
positive and negative conditioning batched in one U-Net call per sigma (ComfyUI splits the batch only under
memory pressure). Inputs are given in the model's own k-diffusion form: the network must see the VP noise z, so
``x = z * sqrt(sigma^2 + 1)`` (EPS and V_PREDICTION divide by that in ``calculate_input``; docs/methods.md §4.8).

Mitigation needs gradients although ComfyUI executes nodes under ``torch.inference_mode()`` and loads weights as
inference tensors (docs/comfyui-internals.md §7.1): inside ``inference_mode(False)`` the loaded (LoRA-patched)
U-Net is deep-copied, swapped into the model for the optimisation only, and released afterwards (the original
module is put back in a ``finally`` block); every input tensor is cloned.
"""

from __future__ import annotations

import copy
import gc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import comfy.conds
import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension
import comfy.samplers
import torch

from ..common.comfy_glue import Progress
from ..trajectory.capture import WRAPPER_KEY as TRAJECTORY_WRAPPER_KEY
from ..trajectory.capture import prediction_type
from . import anisotropy as an
from . import volume as vol
from .mitigation import MitigationResult, optimise_embeddings

log = logging.getLogger("diffusion_sentinel")


class UnsupportedModelError(ValueError):
    """The model has no term the score needs (flow matching, guidance-distilled, no discrete schedule)."""


# ----------------------------------------------------------------------------- model checks
@dataclass
class ModelInfo:
    prediction: str
    family: str
    latent_channels: int
    num_timesteps: int
    dtype: str

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, "prediction": self.prediction, "latent_channels": self.latent_channels}


def model_info(model, what: str = "the memorization scores") -> ModelInfo:
    """Check that the model has the terms the scores need; a clear UnsupportedModelError otherwise."""
    mc = getattr(model.model, "model_config", None)
    family = type(mc).__name__ if mc is not None else type(model.model).__name__
    unet_config = getattr(mc, "unet_config", {}) or {}
    if unet_config.get("guidance_embed"):
        raise UnsupportedModelError(
            f"{family} is guidance-distilled (the guidance scale is an input of the network): it has no separate "
            f"unconditional prediction, so {what} (which compare conditional and unconditional predictions) do not "
            "apply. Use an SD1.x, SD2.x or SDXL checkpoint.")
    ms = model.get_model_object("model_sampling")
    pred = prediction_type(ms)
    discrete = isinstance(ms, comfy.model_sampling.ModelSamplingDiscrete) and not isinstance(
        ms, (comfy.model_sampling.ModelSamplingDiscreteEDM, comfy.model_sampling.StableCascadeSampling))
    n_t = len(getattr(ms, "sigmas", [])) if discrete else 0
    if pred not in an.PREDICTIONS or not discrete or n_t != 1000:
        kind = {"flow": "flow matching", "edm": "EDM (continuous sigma)", "x0": "x0-prediction"}.get(pred, pred)
        if pred in an.PREDICTIONS and discrete:
            kind = f"a distilled {n_t}-step schedule (e.g. LCM)"
        elif pred in an.PREDICTIONS:
            kind = f"{kind}-prediction with a continuous noise schedule"
        raise UnsupportedModelError(
            f"{what} are defined on the 1000-step discrete noise schedule of eps- or v-prediction diffusion models "
            f"(SD1.x, SD2.x, SDXL, PixArt); this model ({family}) uses {kind}, so the timesteps 981 and 41 of the "
            "norm and cosine terms do not exist for it. Use an SD1.x/SD2.x/SDXL checkpoint without a sampling patch.")
    lf = model.get_model_object("latent_format")
    if int(getattr(lf, "latent_dimensions", 2)) != 2:
        raise UnsupportedModelError(f"{family} has {lf.latent_dimensions}-D latents (video/audio); the per-pixel "
                                    "cosine term is defined for image latents [B, C, H, W] only")
    return ModelInfo(prediction=pred, family=family, latent_channels=int(getattr(lf, "latent_channels", 4)),
                     num_timesteps=n_t, dtype=str(model.model_dtype()).replace("torch.", ""))


def sigma_at(model, timestep: int) -> float:
    ms = model.get_model_object("model_sampling")
    return float(ms.sigma(torch.tensor(float(timestep))))


def check_conditioning(positive, negative, name_pos: str = "positive", name_neg: str = "negative") -> int:
    """Number of prompts (batch of the positive conditioning); the negative must be present and match."""
    if not positive:
        raise ValueError(f"the {name_pos} CONDITIONING is empty: connect the prompt to score (a CLIPTextEncode)")
    if negative is None or len(negative) == 0:
        raise ValueError(
            f"the {name_neg} CONDITIONING is missing: the memorization scores compare the conditional and the "
            "unconditional prediction. Connect a CLIPTextEncode with an EMPTY prompt (the papers' setting) or the "
            "negative prompt you sample with (then calibrate with the same negative).")
    b = max(int(c[0].shape[0]) for c in positive)
    for c in positive:
        if int(c[0].shape[0]) not in (1, b):
            raise ValueError(f"the {name_pos} CONDITIONING mixes batch sizes {int(c[0].shape[0])} and {b}")
    for c in negative:
        nb = int(c[0].shape[0])
        if nb not in (1, b):
            raise ValueError(f"the {name_neg} CONDITIONING has a batch of {nb} but the {name_pos} one holds {b} "
                             f"prompt(s); give one negative for all, or one per prompt")
    return b


def seeded_noise(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The detector's pure-noise inputs z_j (VP, unit variance): the same for every prompt (paper: set_seed per prompt)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((n, *shape), generator=g, dtype=torch.float32)


# ----------------------------------------------------------------------------- probe sampler plumbing
class _FnSampler(comfy.samplers.Sampler):
    """A Sampler that runs ``fn(ProbeContext)`` instead of sampling and returns zeros (its result is kept)."""

    def __init__(self, fn: Callable[[ProbeContext], Any]):
        self.fn = fn
        self.result = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        ctx = ProbeContext(model=model_wrap.inner_model, conds=model_wrap.conds,
                           model_options=extra_args["model_options"], noise=noise, latent=latent_image, sigmas=sigmas,
                           guider=model_wrap)
        self.result = self.fn(ctx)
        return torch.zeros_like(noise)


@dataclass
class ProbeContext:
    model: Any  # comfy BaseModel (loaded, patched)
    conds: dict[str, list[dict]]
    model_options: dict
    noise: torch.Tensor
    latent: torch.Tensor | None
    sigmas: torch.Tensor
    guider: Any
    unet_calls: int = 0

    def predict(self, conds_lists: list, x: torch.Tensor, sigma: float) -> list[torch.Tensor]:
        """Denoised predictions for each list of conds, batched into one calc_cond_batch (one U-Net call)."""
        sig = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=torch.float32)
        self.unet_calls += 1
        return comfy.samplers.calc_cond_batch(self.model, conds_lists, x, sig, self.model_options)

    def cond_uncond(self, x: torch.Tensor, sigma: float, positive=None, negative=None):
        c, u = self.predict([positive if positive is not None else self.conds["positive"],
                             negative if negative is not None else self.conds["negative"]], x, sigma)
        return c, u


def _probe_clone(model):
    m = model.clone()
    for wt in (comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, comfy.patcher_extension.WrappersMP.PREDICT_NOISE):
        m.remove_wrappers_with_key(wt, TRAJECTORY_WRAPPER_KEY)  # a probe is not a sampling run to record
    return m


def run_probe(model, positive, negative, fn: Callable[[ProbeContext], Any], noise: torch.Tensor,
              latent: torch.Tensor | None = None, sigmas: list[float] | None = None, cfg: float = 7.5, seed: int = 0):
    """Run ``fn`` inside CFGGuider.sample on a clone of ``model`` (the input MODEL is never modified)."""
    m = _probe_clone(model)
    guider = comfy.samplers.CFGGuider(m)
    if negative is None:
        guider.inner_set_conds({"positive": positive})
    else:
        guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    sampler = _FnSampler(fn)
    sig = torch.tensor(sigmas if sigmas else [1.0], dtype=torch.float32)
    with torch.no_grad():  # only mitigation needs gradients, and it enables them itself
        guider.sample(noise, latent if latent is not None else torch.zeros_like(noise), sampler, sig, seed=seed)
    return sampler.result


# ----------------------------------------------------------------------------- detection
@dataclass
class DetectorSettings:
    seed: int = 51  # run_detection.sh
    n_samples: int = 1
    width: int = 512
    height: int = 512
    wen_steps: int = 1
    cfg: float = 7.5  # only moves the trajectory when wen_steps > 1 (Wen's default guidance)

    def latent_hw(self) -> tuple[int, int]:
        if self.width < 8 or self.height < 8:
            raise ValueError("width and height must be at least 8 pixels")
        return self.height // 8, self.width // 8


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
    _tick(progress)
    norm_s = an.norm_term(c_n, u_n, s_n, prediction)
    if s_c is not None:
        x_c = z_rows * math.sqrt(s_c**2 + 1.0)
        c_c, u_c = ctx.cond_uncond(x_c, s_c, positive=pos)
        _tick(progress)
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
        _tick(progress)
    wen_s = torch.stack(wens, dim=1).mean(dim=1)
    return DetectionResult(
        norm=an.per_prompt_mean(norm_s, n_prompts).cpu(), cosine=an.per_prompt_mean(cos_s, n_prompts).cpu(),
        wen=an.per_prompt_mean(wen_s, n_prompts).cpu(), norm_samples=norm_s.cpu(), cosine_samples=cos_s.cpu(),
        wen_steps=[w.cpu() for w in wens], n_prompts=n_prompts, prediction=prediction, sigma_norm=s_n,
        sigma_cos=s_c if s_c is not None else float("nan"), unet_calls=ctx.unet_calls - calls0)


def _tick(progress: Progress | None) -> None:
    if progress is not None:
        progress.update()


def _rows(z: torch.Tensor, n_prompts: int, device) -> torch.Tensor:
    """Sample-major rows (row j * B + i = z_j) match ComfyUI's tiling of a batch-B conditioning over n * B rows."""
    return z.to(device).repeat_interleave(n_prompts, dim=0)


def wen_sigma_grid(model, steps: int) -> list[float]:
    ts = an.ddim_timesteps(50)
    if not 1 <= steps <= len(ts):
        raise ValueError(f"wen_steps must be in 1..{len(ts)} (steps of the DDIM-50 grid), got {steps}")
    return [sigma_at(model, t) for t in ts[:steps]]


@dataclass
class MitigationSettings:
    score: str = "anisotropy"  # or "wen"
    threshold: float = 4.0
    gamma_n: float = 1.0
    gamma_c: float = 2.0
    lr: float = 0.05
    max_iters: int = 10


@dataclass
class GuardRun:
    detection: DetectionResult
    mitigation: MitigationResult | None = None
    after: DetectionResult | None = None
    embeddings: list[torch.Tensor] | None = None
    info: ModelInfo | None = None


def detect(model, positive, negative, settings: DetectorSettings,
           mitigation: MitigationSettings | None = None) -> GuardRun:
    """Score every prompt of ``positive``; with ``mitigation``, also optimise the embeddings of flagged prompts."""
    info = model_info(model)
    n_prompts = check_conditioning(positive, negative)
    if settings.n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {settings.n_samples}")
    h, w = settings.latent_hw()
    z = seeded_noise(settings.n_samples, (info.latent_channels, h, w), settings.seed)
    s_n, s_c = sigma_at(model, an.NORM_TIMESTEP), sigma_at(model, an.COSINE_TIMESTEP)
    wen_sig = wen_sigma_grid(model, settings.wen_steps)
    per_detect = 2 + len(wen_sig) - 1
    total = per_detect
    if mitigation is not None:
        total += (mitigation.max_iters + 1) * (2 if mitigation.score == "anisotropy" else 1) + per_detect
    progress = Progress(total)
    noise = z.repeat_interleave(n_prompts, dim=0)

    def fn(ctx: ProbeContext) -> GuardRun:
        rows = _rows(z, n_prompts, ctx.noise.device)
        det = _detect(ctx, rows, n_prompts, settings, info.prediction, s_n, s_c, wen_sig, progress)
        run = GuardRun(detection=det, info=info)
        if mitigation is None:
            return run
        score0 = det.anisotropy(mitigation.gamma_n, mitigation.gamma_c) if mitigation.score == "anisotropy" else det.wen
        if not bool((score0 > mitigation.threshold).any()):
            return run  # nothing to mitigate
        res, new_pos = _mitigate(ctx, rows, n_prompts, info.prediction, s_n, s_c, mitigation, progress)
        run.mitigation = res
        run.embeddings = res.embeddings
        with torch.no_grad():
            run.after = _detect(ctx, rows, n_prompts, settings, info.prediction, s_n, s_c, wen_sig, progress,
                                positive=new_pos)
        return run

    return run_probe(model, positive, negative, fn, noise, sigmas=[s_n, s_c], cfg=settings.cfg, seed=settings.seed)


def detect_wen(model, positive, negative, settings: DetectorSettings) -> DetectionResult:
    """Wen et al.'s score alone: ``settings.wen_steps`` U-Net calls (DDIM-50 from t=981 with CFG), no cosine term."""
    info = model_info(model, what="Wen's score")
    n_prompts = check_conditioning(positive, negative)
    h, w = settings.latent_hw()
    z = seeded_noise(settings.n_samples, (info.latent_channels, h, w), settings.seed)
    wen_sig = wen_sigma_grid(model, settings.wen_steps)
    progress = Progress(len(wen_sig))

    def fn(ctx: ProbeContext) -> DetectionResult:
        rows = _rows(z, n_prompts, ctx.noise.device)
        return _detect(ctx, rows, n_prompts, settings, info.prediction, wen_sig[0], None, wen_sig, progress)

    return run_probe(model, positive, negative, fn, z.repeat_interleave(n_prompts, dim=0), sigmas=wen_sig,
                     cfg=settings.cfg, seed=settings.seed)


def _clone_model_conds(entry: dict) -> dict:
    mc = {}
    for k, v in entry.get("model_conds", {}).items():
        cond = getattr(v, "cond", None)
        mc[k] = v._copy_with(cond.detach().clone()) if isinstance(cond, torch.Tensor) else v
    return mc


def _mitigate(ctx: ProbeContext, rows: torch.Tensor, n_prompts: int, prediction: str, s_n: float, s_c: float,
              ms: MitigationSettings, progress: Progress | None) -> tuple[MitigationResult, list[dict]]:
    """Optimise the positive c_crossattn embeddings on a deep copy of the loaded U-Net; returns the new conds."""
    pos_entries = ctx.conds["positive"]
    for e in pos_entries:
        if "c_crossattn" not in e.get("model_conds", {}):
            raise ValueError("mitigation optimises the cross-attention text embedding, and this model's positive "
                             "conditioning has none (c_crossattn)")
    model = ctx.model
    original = model.diffusion_model
    with torch.inference_mode(False):
        copied = copy.deepcopy(original)  # normal (non-inference) tensors, LoRA-patched weights included
        copied.requires_grad_(False)
        x_rows = rows.detach().clone()
        neg = [dict(e, model_conds=_clone_model_conds(e)) for e in ctx.conds["negative"]]
        base = [dict(e, model_conds=_clone_model_conds(e)) for e in pos_entries]
        embeddings = [e["model_conds"]["c_crossattn"].cond for e in base]
        x_n = x_rows * math.sqrt(s_n**2 + 1.0)
        x_c = x_rows * math.sqrt(s_c**2 + 1.0)

        def with_embeddings(params):
            return [dict(e, model_conds=dict(e["model_conds"], c_crossattn=comfy.conds.CONDCrossAttn(p)))
                    for e, p in zip(base, params)]

        def score_fn(params):
            pos = with_embeddings(params)
            c_n, u_n = ctx.cond_uncond(x_n, s_n, positive=pos, negative=neg)
            _tick(progress)
            if ms.score == "wen":
                return an.per_prompt_mean(an.wen_norm(c_n, u_n, s_n, prediction), n_prompts)
            c_c, u_c = ctx.cond_uncond(x_c, s_c, positive=pos, negative=neg)
            _tick(progress)
            n_ = an.norm_term(c_n, u_n, s_n, prediction)
            c_ = an.cosine_term(x_c, c_c, u_c, s_c, prediction)
            return an.per_prompt_mean(an.combine(n_, c_, ms.gamma_n, ms.gamma_c), n_prompts)

        model.diffusion_model = copied
        try:
            res = optimise_embeddings(embeddings, score_fn, ms.threshold, lr=ms.lr, max_iters=ms.max_iters)
        except RuntimeError as e:
            if "nference tensor" in str(e):
                raise RuntimeError(
                    "prompt mitigation could not differentiate through this model: a patch applied to it (e.g. an "
                    "IP-Adapter or another pack's attention patch) holds inference-mode tensors. Mitigate on the "
                    f"model without that patch, or use action 'block'. ({e})") from e
            raise
        finally:
            model.diffusion_model = original
            del copied
            gc.collect()
            comfy.model_management.soft_empty_cache()
        new_pos = [dict(e, model_conds=dict(e.get("model_conds", {}),
                                            c_crossattn=comfy.conds.CONDCrossAttn(emb.to(e["model_conds"]["c_crossattn"].cond.device))))
                   for e, emb in zip(pos_entries, res.embeddings)]
    return res, new_pos


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


# ----------------------------------------------------------------------------- volume growth rate
@dataclass
class VolumeSettings:
    mode: str = "directions"
    directions: int = 4
    steps: int = 1
    start_timestep: int = 1
    timestep_stride: int = 20
    method: str = "jvp"
    seed: int = 0
    rel_step: float = 1e-3

    def timesteps(self) -> list[int]:
        ts = [self.start_timestep + k * self.timestep_stride for k in range(self.steps + 1)]
        if self.start_timestep < 0 or ts[-1] > 999:
            raise ValueError(f"the inversion grid {ts[0]}..{ts[-1]} leaves the model's 0..999 timesteps; lower "
                             "steps or timestep_stride")
        return ts


@dataclass
class VolumeResult:
    score: torch.Tensor
    sigmas: list[float]
    timesteps: list[int]
    latent_dim: int
    axis_index: int | None
    unet_calls: int


def volume_growth(model, vae, image: torch.Tensor, conditioning, settings: VolumeSettings) -> VolumeResult:
    """Per image, the log-stretch (directions / single_axis) or log-volume (volume) of the DDIM inversion map."""
    if settings.mode not in vol.MODES:
        raise ValueError(f"mode must be one of {vol.MODES}, got {settings.mode!r}")
    if settings.method not in vol.METHODS:
        raise ValueError(f"method must be one of {vol.METHODS}, got {settings.method!r}")
    if settings.directions < 1 or settings.steps < 1:
        raise ValueError("directions and steps must be >= 1")
    model_info(model, what="the volume growth rate")
    if not conditioning:
        raise ValueError("connect a CONDITIONING (an empty-prompt CLIPTextEncode reproduces the paper's "
                         "unconditional setting)")
    if image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"expected an IMAGE batch [B, H, W, 3]; got shape {tuple(image.shape)}")
    n_img = int(image.shape[0])
    for c in conditioning:
        if int(c[0].shape[0]) not in (1, n_img):
            raise ValueError(f"the CONDITIONING has a batch of {int(c[0].shape[0])} for {n_img} image(s); use one "
                             "conditioning for all images or one per image")
    ts = settings.timesteps()
    sigmas = [sigma_at(model, t) for t in ts]
    latent = vae.encode(image[:, :, :, :3])
    shape = tuple(latent.shape[1:])
    axis_index = None
    if settings.mode == "directions":
        dirs = vol.random_directions(settings.directions, shape, settings.seed)
    elif settings.mode == "single_axis":
        dirs, axis_index = vol.axis_direction(shape, settings.seed)
    else:
        dirs = vol.rademacher(settings.directions, shape, settings.seed)
    n_dir = dirs.shape[0]
    calls_per = settings.steps if settings.mode != "volume" else 1
    progress = Progress(n_dir * calls_per * (settings.steps if settings.mode == "volume" else 1))
    m = model.clone()
    if m.model_dtype() != torch.float32:
        m.set_model_compute_dtype(torch.float32)  # JVPs and finite differences need fp32 (fp16 is too coarse)

    def fn(ctx: ProbeContext) -> VolumeResult:
        x0 = ctx.latent.float()  # model latent space (process_latent_in applied by the guider)
        pos = ctx.conds["positive"]

        def denoise(x_ve: torch.Tensor, sigma: float) -> torch.Tensor:
            return ctx.predict([pos], x_ve, sigma)[0]

        try:
            if settings.mode == "volume":
                score = vol.log_volume(denoise, x0, sigmas, dirs, method=settings.method, rel_step=settings.rel_step,
                                       on_probe=lambda k: _tick(progress))
            else:
                phi = vol.inversion_map(denoise, sigmas)
                score = vol.log_stretch(phi, x0, dirs, method=settings.method, rel_step=settings.rel_step,
                                        on_direction=lambda k: progress.update(calls_per))
        except (NotImplementedError, RuntimeError) as e:
            if settings.method == "jvp" and ("forward AD" in str(e) or "forward-mode" in str(e) or "derivative for" in str(e)
                                             or isinstance(e, NotImplementedError)):
                raise RuntimeError(
                    "forward-mode AD (method 'jvp') is not available through this model's attention (xformers, "
                    "sage/flash attention or a patched attention have no forward derivative). Set method to "
                    f"'finite_difference'. ({type(e).__name__}: {e})") from e
            raise
        return VolumeResult(score=score.detach().float().cpu(), sigmas=sigmas, timesteps=ts,
                            latent_dim=math.prod(shape), axis_index=axis_index, unet_calls=ctx.unet_calls)

    noise = torch.zeros_like(latent)
    return run_probe(m, conditioning, None, fn, noise, latent=latent, sigmas=sigmas, cfg=1.0, seed=settings.seed)
