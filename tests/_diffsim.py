"""Builders for the DiffSim tests: tiny real models made with ComfyUI's own classes (random, seeded weights),
a generated IP-Adapter Plus file with the real key layout, a tiny CLIP vision model and a tiny CLIP text model.

Pure builders (``ip_adapter_state_dict``, ``save_ip_adapter``) need only torch/safetensors; the others need
ComfyUI booted (tests/_comfy.boot_comfy).
"""

from __future__ import annotations

import hashlib
import os

import torch

# ----------------------------------------------------------------------------- IP-Adapter Plus files (pure)
SD15_PLUS = dict(dim=768, depth=4, heads=12, num_queries=16, embedding_dim=1280, output_dim=768)
SDXL_PLUS = dict(dim=1280, depth=4, heads=20, num_queries=16, embedding_dim=1280, output_dim=2048)
# Widths of SD1.5's 16 cross-attention layers in IP-Adapter order (down, up, mid): k = 1, 3, ..., 31
SD15_LAYER_WIDTHS = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 1280]


def ip_adapter_state_dict(dim, depth, heads, num_queries, embedding_dim, output_dim, layer_widths, ff_mult=4,
                          seed=0, dtype=torch.float16, device="cpu", dim_head=64) -> dict[str, torch.Tensor]:
    """A random IP-Adapter Plus state dict with the released key names ('image_proj.*', 'ip_adapter.<k>.*')."""
    g = torch.Generator().manual_seed(seed)
    meta = str(device) == "meta"

    def rnd(*shape, std=0.02):
        if meta:
            return torch.empty(shape, device="meta", dtype=dtype)
        return (torch.randn(shape, generator=g) * std).to(dtype)

    def ones(n):
        return torch.empty(n, device="meta", dtype=dtype) if meta else (1 + 0.1 * torch.randn(n, generator=g)).to(dtype)

    inner = heads * dim_head
    sd = {"image_proj.latents": rnd(1, num_queries, dim, std=dim ** -0.5),
          "image_proj.proj_in.weight": rnd(dim, embedding_dim), "image_proj.proj_in.bias": rnd(dim),
          "image_proj.proj_out.weight": rnd(output_dim, dim), "image_proj.proj_out.bias": rnd(output_dim),
          "image_proj.norm_out.weight": ones(output_dim), "image_proj.norm_out.bias": rnd(output_dim)}
    for i in range(depth):
        p = f"image_proj.layers.{i}."
        sd.update({p + "0.norm1.weight": ones(dim), p + "0.norm1.bias": rnd(dim),
                   p + "0.norm2.weight": ones(dim), p + "0.norm2.bias": rnd(dim),
                   p + "0.to_q.weight": rnd(inner, dim), p + "0.to_kv.weight": rnd(2 * inner, dim),
                   p + "0.to_out.weight": rnd(dim, inner),
                   p + "1.0.weight": ones(dim), p + "1.0.bias": rnd(dim),
                   p + "1.1.weight": rnd(dim * ff_mult, dim), p + "1.3.weight": rnd(dim, dim * ff_mult)})
    for i, w in enumerate(layer_widths):
        k = 2 * i + 1
        sd[f"ip_adapter.{k}.to_k_ip.weight"] = rnd(w, output_dim, std=0.05)
        sd[f"ip_adapter.{k}.to_v_ip.weight"] = rnd(w, output_dim, std=0.05)
    return sd


def save_ip_adapter(path: str | os.PathLike, sd: dict[str, torch.Tensor]) -> str:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return str(path)


# ----------------------------------------------------------------------------- ComfyUI models
TINY_CONTEXT = 64  # text width of the tiny CLIP; the tiny U-Nets' cross-attention takes it


def _unet_cfg(**over):
    base = dict(use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=32,
                num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[1, 1],
                transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, context_dim=TINY_CONTEXT,
                use_linear_in_transformer=False, use_spatial_transformer=True, legacy=False, adm_in_channels=None,
                use_temporal_attention=False, use_temporal_resblock=False, dtype=torch.float32)
    base.update(over)
    return base


# SD1.5's block structure (12 input / 12 output blocks, attention on the 3 upper levels, depth 1), tiny widths
SD15_SHAPED = dict(num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 2, 2], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                   transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
# SDXL's block structure (9 input / 9 output blocks, no attention on the top level, depths 2 and 10 -> 2 and 3)
SDXL_SHAPED = dict(num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 2], transformer_depth=[0, 0, 2, 2, 3, 3],
                   transformer_depth_output=[0, 0, 0, 2, 2, 2, 3, 3, 3], transformer_depth_middle=3,
                   use_linear_in_transformer=True, adm_in_channels=2816, num_classes="sequential")
# The real configs (docs/comfyui-internals.md §3.3), to instantiate on the meta device
SD15_FULL = dict(model_channels=320, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                 transformer_depth_middle=1, context_dim=768, num_heads=8)
SDXL_FULL = dict(model_channels=320, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4],
                 transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
                 transformer_depth_middle=10, context_dim=2048, use_linear_in_transformer=True,
                 adm_in_channels=2816, num_classes="sequential", num_head_channels=64)


def unet_model(kind: str = "sd15", seed: int = 0, device: str = "cpu", **over):
    """A real ComfyUI ModelPatcher: ``sd15`` (SD15 class) or ``sdxl`` (SDXL class), with ``over`` config keys.
    Weights are random and seeded, drawn in float32 on the CPU (the same values on every device); ``device='meta'``
    builds shapes only. With the harness's ``_comfy.unet_patcher`` (SENTINEL_TEST_DEVICE) the model is built the
    way ComfyUI's loader builds a checkpoint on the test device, in its dtype (float16 on a recent GPU); without
    it, in float32 with ComfyUI's load device (the CPU run is the same either way)."""
    import _comfy
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    cfg = _unet_cfg(**over)
    config_class = comfy.supported_models.SDXL if kind == "sdxl" else comfy.supported_models.SD15
    model_class = comfy.model_base.SDXL if kind == "sdxl" else comfy.model_base.BaseModel
    builder = getattr(_comfy, "unet_patcher", None)
    if device != "meta" and builder is not None:
        return builder(cfg, seed=seed, config_class=config_class, model_class=model_class)
    model = model_class(config_class(cfg), device=torch.device(device))
    if device != "meta":
        _comfy.random_init_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())


def model_kind(model) -> str:
    """The ``_device.tol`` kind of a ModelPatcher's compute dtype ("float32", "float16", "bfloat16")."""
    dtype = model.model.get_dtype() if hasattr(model.model, "get_dtype") else torch.float32
    name = str(dtype).replace("torch.", "")
    return name if name in ("float16", "bfloat16") else "float32"


def feature_tol(model) -> dict:
    """rtol/atol for attention features (q, k, v) of ``model`` computed in two different ways (batch layout, split
    calls, wrapped patches): strict on the CPU, following the model's dtype and TF32 on CUDA."""
    import _device

    return _device.tol(model_kind(model))


def score_tol(model) -> float:
    """Absolute tolerance for DiffSim scores (cosines in [-1, 1]) of one pair computed two ways with ``model``: 1e-5
    on the CPU (float32 features); on CUDA about the relative error of the features (fp16 ~1e-3, TF32 ~1e-3)."""
    import _device

    if not _device.ON_CUDA:
        return 1e-5
    return {"float16": 2e-3, "bfloat16": 1e-2}.get(model_kind(model), 2e-3 if _device.tf32_enabled() else 2e-4)


def assert_features_close(a, b, model) -> None:
    """Every tensor of two AttentionFeatures (CPU tensors) equal within ``feature_tol(model)``."""
    t = feature_tol(model)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.float().cpu(), y.float().cpu(), rtol=t["rtol"], atol=t["atol"])


def kl_vae(seed: int = 0):
    """A small KL VAE (AutoencoderKL with a Gaussian posterior, 8x downscale) with ComfyUI's classes."""
    import _comfy
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    params = {"ddconfig": {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3,
                           "ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [],
                           "dropout": 0.0}, "embed_dim": 4}
    ae = _comfy.random_init_(AutoencoderKL(**params), seed)
    return comfy.sd.VAE(sd=ae.state_dict(), config={"params": params})


def tiny_clip(seed: int = 0, width: int = TINY_CONTEXT):
    """A real SD1 CLIP text encoder (ComfyUI's tokenizer and CLIPTextModel) with 2 layers of width ``width``."""
    import _comfy
    import comfy.sd
    import comfy.supported_models

    target = comfy.supported_models.SD15(_unet_cfg()).clip_target()
    over = {"hidden_size": width, "intermediate_size": 2 * width, "num_attention_heads": 2, "num_hidden_layers": 2,
            "projection_dim": width}
    clip = comfy.sd.CLIP(target=target, model_options={"clip_l_model_config": over})
    _comfy.random_init_(clip.cond_stage_model, seed)
    return clip


class FakeSDXLClip:
    """tokenize/encode_from_tokens_scheduled like comfy.sd.CLIP, deterministic per text, with SDXL's pooled output."""

    def __init__(self, width: int = TINY_CONTEXT, pooled: int = 1280):
        self.width, self.pooled = width, pooled

    def tokenize(self, text):
        return text

    def encode_from_tokens_scheduled(self, text):
        g = torch.Generator().manual_seed(int(hashlib.sha1(text.encode()).hexdigest()[:8], 16))
        cond = torch.randn(1, 77, self.width, generator=g)
        return [[cond, {"pooled_output": torch.randn(1, self.pooled, generator=g)}]]


def clip_vision(tmp_dir: str | os.PathLike, hidden: int = 32, layers: int = 3, image_size: int = 32, patch: int = 8,
                seed: int = 0):
    """comfy.clip_vision.ClipVisionModel built from a small config written to ``tmp_dir``; random weights."""
    import _comfy

    return _comfy.tiny_clip_vision(tmp_dir, seed, hidden_size=hidden, intermediate_size=2 * hidden,
                                   num_hidden_layers=layers, image_size=image_size, patch_size=patch,
                                   hidden_act="gelu")


def cross_widths(model) -> list[int]:
    """Widths of a ComfyUI U-Net's cross-attention layers in IP-Adapter order."""
    from diffusion_sentinel.nodes.diffsim.capture import unet_layout

    return [s.width for s in unet_layout(model).cross_attention_sites()]


def tiny_ip_adapter_file(path, model, embedding_dim: int = 32, seed: int = 0, context: int = TINY_CONTEXT):
    """An IP-Adapter Plus file (real key layout) sized for a tiny U-Net and the tiny CLIP vision."""
    sd = ip_adapter_state_dict(dim=context, depth=2, heads=max(1, context // 64), num_queries=4,
                               embedding_dim=embedding_dim, output_dim=context, layer_widths=cross_widths(model),
                               seed=seed, dtype=torch.float32)
    return save_ip_adapter(path, sd)


def images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """n smooth random RGB images [n, size, size, 3] in 0..1 (ComfyUI IMAGE)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    img = (img + 0.05 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
    return img.movedim(1, -1).contiguous()
