"""Fixtures of the memorization tests: tiny eps/v/flow models, a TAESD VAE, a fake CLIP, a U-Net call counter, and
an independent raw-output path (the bare UNetModel, no ComfyUI sampling code) to check the scores against."""

from __future__ import annotations

import hashlib
import math

import torch


def tiny_v_model(seed: int = 0):
    """A tiny SD15-layout U-Net wrapped as a v-prediction model (as SD 2.x-768); built by the harness's
    ``unet_patcher`` (test device and dtype) where the harness has it."""
    import _comfy
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    from _comfy import TINY_UNET, random_init_

    if hasattr(_comfy, "unet_patcher"):
        return _comfy.unet_patcher(TINY_UNET, seed, model_type=comfy.model_base.ModelType.V_PREDICTION)
    mc = comfy.supported_models.SD15(dict(TINY_UNET, dtype=torch.float32))
    model = comfy.model_base.BaseModel(mc, model_type=comfy.model_base.ModelType.V_PREDICTION, device=torch.device("cpu"))
    random_init_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())


def tiny_sd2_v_model(seed: int = 0):
    """A tiny U-Net with the SD 2.x model config (SD20) as v-prediction, i.e. an SD2-768-v checkpoint in miniature
    (model_channels 64: SD20 fixes 64 channels per head)."""
    import _comfy
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    from _comfy import TINY_UNET, random_init_

    cfg = dict(TINY_UNET, model_channels=64)
    v = comfy.model_base.ModelType.V_PREDICTION
    if hasattr(_comfy, "unet_patcher"):
        return _comfy.unet_patcher(cfg, seed, model_type=v, config_class=comfy.supported_models.SD20)
    mc = comfy.supported_models.SD20(dict(cfg, dtype=torch.float32))
    model = comfy.model_base.BaseModel(mc, model_type=v, device=torch.device("cpu"))
    random_init_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())


def flow_patched(model):
    """The model with a flow-matching (CONST) sampling object, as ComfyUI's ModelSamplingSD3 node makes it."""
    import comfy.model_sampling

    class FlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    m = model.clone()
    m.add_object_patch("model_sampling", FlowSampling(model.model.model_config))
    return m


def guidance_distilled(seed: int = 5):
    """A fresh tiny model whose config says the guidance is embedded (as Flux dev)."""
    from _comfy import tiny_model

    m = tiny_model(seed)
    m.model.model_config.unet_config = dict(m.model.model_config.unet_config, guidance_embed=True)
    return m


class FakeClip:
    """tokenize/encode_from_tokens_scheduled with a fixed random embedding per text (no text encoder needed)."""

    def __init__(self, dim: int = 768, shift: dict[str, float] | None = None):
        self.dim = dim
        self.shift = shift or {}

    def tokenize(self, text: str):
        return {"text": text}

    def encode_from_tokens_scheduled(self, tokens):
        text = tokens["text"]
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        g = torch.Generator().manual_seed(seed)
        t = torch.randn(1, 77, self.dim, generator=g) * (1.0 + self.shift.get(text, 0.0))
        return [[t, {"pooled_output": t[:, -1].clone()}]]


class UNetCalls:
    """A DIFFUSION_MODEL wrapper that records every U-Net call: batch rows and ComfyUI's cond_or_uncond layout."""

    def __init__(self):
        self.calls: list[dict] = []

    def attach(self, model, key: str = "other_pack.counter"):
        import comfy.patcher_extension as pe

        m = model.clone()

        def wrapper(executor, x, timesteps, context, y, control, transformer_options, **kw):
            self.calls.append({"rows": int(x.shape[0]), "cond_or_uncond": list(transformer_options.get("cond_or_uncond", [])),
                               "t": [int(v) for v in timesteps.round().tolist()]})
            return executor(x, timesteps, context, y, control, transformer_options, **kw)

        m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, key, wrapper)
        return m


def module_device_dtype(module) -> tuple[torch.device, torch.dtype]:
    """Where the bare network's weights are now (the test device once ComfyUI loaded it) and their dtype."""
    p = next(module.parameters())
    return p.device, p.dtype


def raw_outputs(model, z: torch.Tensor, timestep: int, context: torch.Tensor) -> torch.Tensor:
    """The bare network output (eps or v) for VP input z at an integer timestep: no sampler, no conversions.

    Runs wherever the weights are (CPU, or the CUDA device of SENTINEL_TEST_DEVICE) in their dtype; returns float32
    on the CPU."""
    import _comfy

    if hasattr(_comfy, "unet_call"):  # the harness's loader-faithful direct call
        with torch.inference_mode():
            return _comfy.unet_call(model, z, timestep, context.expand(z.shape[0], -1, -1))
    dm = model.model.diffusion_model
    dev, dt = module_device_dtype(dm)
    with torch.inference_mode():
        t = torch.full((z.shape[0],), float(timestep), device=dev)
        ctx = context.to(dev, dt).expand(z.shape[0], -1, -1)
        return dm(z.to(dev, dt), t, context=ctx, transformer_options={}).float().cpu()


def model_tol(model, **kw) -> dict:
    """``_device.tol`` for outputs of ``model`` (its weights' dtype: float32 here, half precision where a GPU run
    builds half-precision models)."""
    import _device

    kind = str(model.model_dtype()).replace("torch.", "")
    return _device.tol(kind if kind in ("float16", "bfloat16") else "float32", **kw)


def approx(expected, model=None, **kw):
    """pytest.approx with the tolerance of ``model``'s outputs (float32 by default) on the test device."""
    import _device
    import pytest

    t = model_tol(model, **kw) if model is not None else _device.tol("float32", **kw)
    return pytest.approx(expected, rel=t["rtol"], abs=t["atol"])


def sd_alpha_bar(t: int) -> float:
    """abar_t of the SD scaled-linear schedule (0.00085..0.012, 1000 steps), in float64."""
    b = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return float(torch.cumprod(1 - b, 0)[t])


def hand_pixel_cosine_mean(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per item, the mean over pixels of the channel cosine, with Python floats (an independent loop)."""
    out = []
    for i in range(a.shape[0]):
        vals = []
        for h in range(a.shape[2]):
            for w in range(a.shape[3]):
                va = [float(v) for v in a[i, :, h, w]]
                vb = [float(v) for v in b[i, :, h, w]]
                dot = sum(p * q for p, q in zip(va, vb))
                na = math.sqrt(sum(p * p for p in va))
                nb = math.sqrt(sum(q * q for q in vb))
                vals.append(dot / max(na * nb, 1e-8))
        out.append(sum(vals) / len(vals))
    return out


def benchmark_model(kind: str, checkpoint: str | None = None):
    """(ModelPatcher, label) for the memorization benchmarks: ``tiny`` (the harness's 2-level SD15-layout U-Net) or
    ``full`` (the U-Net of ``checkpoint``, default the harness's random full-size sd15-random.safetensors).
    ComfyUI must be booted. Exits with a message when the checkpoint is missing."""
    import sys
    from pathlib import Path

    if kind == "tiny":
        from _comfy import tiny_model

        return tiny_model(0), "tiny 2-level SD15-layout U-Net (model_channels 32)"
    import comfy.sd
    from _server import find_checkpoint

    path = checkpoint or find_checkpoint("sd15-random.safetensors")
    if not path:
        sys.exit("sd15-random.safetensors not found: pass --checkpoint")
    model = comfy.sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=False)[0]
    return model, f"U-Net of {Path(path).name}"
