"""ComfyUI glue: the probe sampler every memorization score runs through, and the model checks.

Every model evaluation goes through a normal ``CFGGuider`` with a custom ``Sampler`` (docs/comfyui-internals.md
§2.10): ComfyUI loads the model, applies LoRAs and other packs' patches and wrappers, processes the conditioning
(SDXL's pooled/size embeddings included) and cleans up as for sampling; inside, ``calc_cond_batch`` evaluates the
positive and negative conditioning batched in one U-Net call per sigma (ComfyUI splits the batch only under
memory pressure). Inputs are given in the model's own k-diffusion form: the network must see the VP noise z, so
``x = z * sqrt(sigma^2 + 1)`` (EPS and V_PREDICTION divide by that in ``calculate_input``; docs/methods.md §4.8).

The drivers that use it: ``detection.py`` (the guard's scores and Wen's), ``mitigation_probe.py`` (prompt-embedding
optimisation) and ``volume_probe.py`` (the volume growth rate).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import comfy.model_sampling
import comfy.patcher_extension
import comfy.samplers
import torch

from ..common.comfy_glue import Progress
from ..trajectory.capture import WRAPPER_KEY as TRAJECTORY_WRAPPER_KEY
from ..trajectory.capture import prediction_type
from . import anisotropy as an

log = logging.getLogger("diffusion_sentinel")
MULTIGPU_KEY = "multigpu_clones"  # model_options key of ComfyUI's multi-GPU cond splitting (2026)


class UnsupportedModelError(ValueError):
    """The model has no term the score needs (flow matching, guidance-distilled, no discrete schedule)."""


UnsupportedModelError.__module__ = "sentinel"  # ComfyUI titles errors with the class's module path


# ----------------------------------------------------------------------------- model checks
@dataclass
class ModelInfo:
    prediction: str
    family: str
    latent_channels: int
    num_timesteps: int
    dtype: str
    native_size: int = 512  # image side (px) the family was trained at; the detector's default noise size

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
                     num_timesteps=n_t, dtype=str(model.model_dtype()).replace("torch.", ""),
                     native_size=native_image_size(mc, pred))


def native_image_size(model_config, prediction: str) -> int:
    """The side in pixels a family was trained at: 768 for v-prediction SD2.x (SD2-768-v, as the anisotropy
    paper's SD2 runs and their weights 1 / 0.1), 1024 for SDXL, 512 otherwise (SD1.x, SD2-base)."""
    import comfy.supported_models as sm

    def is_a(name: str) -> bool:
        cls = getattr(sm, name, None)
        return isinstance(cls, type) and isinstance(model_config, cls)

    if is_a("SDXL") or is_a("SDXLRefiner"):
        return 1024
    if is_a("SD20") and prediction == "v":
        return 768
    return 512


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

    def predict(self, conds_lists: list, x: torch.Tensor, sigma: float, single_device: bool = False) -> list[torch.Tensor]:
        """Denoised predictions for each list of conds, batched into one calc_cond_batch (one U-Net call).

        ``single_device``: keep every evaluation on the main device and thread. Newer ComfyUI spreads conds over
        several GPUs in worker threads (``_calc_cond_batch_multigpu``, chosen when the model options hold
        ``multigpu_clones``), which run under ``no_grad`` on other model copies: gradients (mitigation) and
        forward-mode tangents (the volume JVP) must not go there.
        """
        sig = torch.full((x.shape[0],), float(sigma), device=x.device, dtype=torch.float32)
        self.unet_calls += 1
        return comfy.samplers.calc_cond_batch(self.model, conds_lists, x, sig, self.options(single_device))

    def options(self, single_device: bool = False) -> dict:
        if single_device and MULTIGPU_KEY in self.model_options:
            return {k: v for k, v in self.model_options.items() if k != MULTIGPU_KEY}
        return self.model_options

    def cond_uncond(self, x: torch.Tensor, sigma: float, positive=None, negative=None, single_device: bool = False):
        c, u = self.predict([positive if positive is not None else self.conds["positive"],
                             negative if negative is not None else self.conds["negative"]], x, sigma,
                            single_device=single_device)
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


def tick(progress: Progress | None) -> None:
    if progress is not None:
        progress.update()


def finish(progress: Progress | None) -> None:
    """Show 100 % when a loop ends early (mitigation that converged before its last step)."""
    if progress is None:
        return
    done = getattr(progress, "finish", None)
    if callable(done):
        done()
    elif progress.done < progress.total:
        progress.update(progress.total - progress.done)
