"""ComfyUI glue: the volume growth rate of images (Hasegawa & Yasuda) on the probe sampler.

The U-Net runs on a clone with two changes, both per model and undone with the clone:

- attention: the forward-AD-safe math attention (``safe_attention.with_math_attention``) for both methods, so the
  JVP works whatever attention backend the user runs (PyTorch SDPA's flash/efficient kernels, xformers, sage have
  no forward-mode derivative) and both methods differentiate the same function;
- precision: the JVP computes in float32 at least (fp16/bf16 weights are cast per layer), finite differences in
  float64. A central difference with a step of ``rel_step`` (1e-3) of the latent's norm amplifies the rounding of
  each evaluation by about 1 / rel_step: fine in IEEE float32 on a CPU (about 1e-4 in the log-stretch), but NVIDIA
  GPUs run float32 convolutions in TF32 by default (``torch.backends.cudnn.allow_tf32``), whose 10-bit mantissa
  rounds each evaluation to about 5e-4 relative, and the difference then carries noise of the size of the signal,
  which always inflates ||J u|| (noise adds in quadrature). TF32 does not apply to float64, and the switch is a
  process-wide flag we do not touch, so the differences are taken in float64 (only the U-Net's output is rounded
  to float32 by ComfyUI, an error of about 1e-4 after the division by the step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..common.comfy_glue import Progress
from . import volume as vol
from .probe import ProbeContext, model_info, run_probe, sigma_at, tick
from .safe_attention import with_math_attention

JVP_DTYPE = torch.float32  # at least: JVPs run in float32 (or the model's dtype when it is wider)
FD_DTYPE = torch.float64  # finite differences (see the module docstring)


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
    fd_dtype: torch.dtype = FD_DTYPE  # compute dtype of the finite-difference evaluations (tests emulate TF32 with fp16)

    def compute_dtype(self, model_dtype: torch.dtype | None) -> torch.dtype:
        """The U-Net's compute dtype for these passes."""
        if self.method == "finite_difference":
            return self.fd_dtype
        if model_dtype is not None and model_dtype.is_floating_point and torch.finfo(model_dtype).bits >= 32:
            return model_dtype
        return JVP_DTYPE

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
    compute_dtype: str = "float32"


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
    m = with_math_attention(model)
    compute = settings.compute_dtype(m.model_dtype())
    if m.model_dtype() != compute:
        m.set_model_compute_dtype(compute)

    def fn(ctx: ProbeContext) -> VolumeResult:
        x0 = ctx.latent.float()  # model latent space (process_latent_in applied by the guider)
        pos = ctx.conds["positive"]

        def denoise(x_ve: torch.Tensor, sigma: float) -> torch.Tensor:
            return ctx.predict([pos], x_ve, sigma, single_device=True)[0]

        try:
            if settings.mode == "volume":
                score = vol.log_volume(denoise, x0, sigmas, dirs, method=settings.method, rel_step=settings.rel_step,
                                       on_probe=lambda k: tick(progress))
            else:
                phi = vol.inversion_map(denoise, sigmas)
                score = vol.log_stretch(phi, x0, dirs, method=settings.method, rel_step=settings.rel_step,
                                        on_direction=lambda k: progress.update(calls_per))
        except (NotImplementedError, RuntimeError) as e:
            if settings.method == "jvp" and ("forward AD" in str(e) or "forward-mode" in str(e) or "derivative for" in str(e)
                                             or isinstance(e, NotImplementedError)):
                raise RuntimeError(
                    "forward-mode AD (method 'jvp') failed inside the model although its attention runs on a math "
                    "kernel here: a patch applied to the model (another pack's attention replace patch with its own "
                    "kernel, or a custom operation) has no forward derivative. Set method to 'finite_difference'. "
                    f"({type(e).__name__}: {e})") from e
            raise
        return VolumeResult(score=score.detach().float().cpu(), sigmas=sigmas, timesteps=ts,
                            latent_dim=math.prod(shape), axis_index=axis_index, unet_calls=ctx.unet_calls,
                            compute_dtype=str(compute).replace("torch.", ""))

    noise = torch.zeros_like(latent)
    return run_probe(m, conditioning, None, fn, noise, latent=latent, sigmas=sigmas, cfg=1.0, seed=settings.seed)
