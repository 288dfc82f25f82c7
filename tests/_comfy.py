"""Helpers for integration tests: start ComfyUI in-process, tiny real models with fixed seeds, run nodes.

Nothing here copies ComfyUI code: it imports the checkout at COMFYUI_PATH (docs/comfyui-internals.md §4.6, §5.3).
"""

from __future__ import annotations

import asyncio
import os
import sys

_READY = False


def boot_comfy(path: str | None = None):
    """Import ComfyUI from the checkout (CPU), load its extra nodes; return the ``nodes`` module."""
    global _READY
    path = path or os.environ["COMFYUI_PATH"]
    if _READY:
        import nodes

        return nodes
    if path not in sys.path:
        sys.path.insert(0, path)
    bad = sys.modules.get("nodes")
    if bad is not None and not str(getattr(bad, "__file__", "")).startswith(path):
        raise RuntimeError(f"a module named 'nodes' was imported from {bad.__file__} before ComfyUI's")
    os.chdir(path)
    import _device
    from comfy.cli_args import args

    args.cpu = not _device.ON_CUDA  # before comfy.model_management is imported (SENTINEL_TEST_DEVICE)
    import utils.extra_config  # noqa: F401  (before `nodes`, which shadows `utils` with comfy/utils.py)

    yaml = os.path.join(path, "extra_model_paths.yaml")
    if os.path.isfile(yaml):
        utils.extra_config.load_extra_path_config(yaml)
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    _READY = True
    return nodes


def random_init_(module, seed: int = 0):
    """ComfyUI leaves layer weights uninitialised: use torch's default init (seeded) for every layer."""
    import torch

    torch.manual_seed(seed)
    covered = set()
    for m in module.modules():
        for base in type(m).__mro__:
            if base.__module__.startswith("torch.nn.modules") and "reset_parameters" in base.__dict__:
                base.reset_parameters(m)
                covered.update(id(p) for p in m.parameters(recurse=False))
                break
    with torch.no_grad():
        for p in module.parameters():
            if id(p) not in covered and p.dim() > 0:
                p.normal_(0.0, 0.02)
    return module


TINY_UNET = dict(
    use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1],
    channel_mult=[1, 2], transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1],
    transformer_depth_middle=1, context_dim=768, use_linear_in_transformer=False, use_spatial_transformer=True,
    legacy=False, adm_in_channels=None, use_temporal_attention=False, use_temporal_resblock=False,
)


def tiny_model(seed: int = 0, model_channels: int = 32):
    """A real SD1.5-family ModelPatcher (EPS, SD15 latent format) with a 2-level U-Net; runs in ms on CPU."""
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    cfg = dict(TINY_UNET, model_channels=model_channels, dtype=torch.float32)
    mc = comfy.supported_models.SD15(cfg)
    model = comfy.model_base.BaseModel(mc, device=torch.device("cpu"))
    random_init_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())


def tiny_vae(seed: int = 0):
    """A TAESD VAE with random weights, built with ComfyUI's classes (comfy.sd.VAE detects it by its keys)."""
    import comfy.sd
    import comfy.taesd.taesd

    ae = random_init_(comfy.taesd.taesd.TAESD(latent_channels=4), seed)
    return comfy.sd.VAE(sd=ae.state_dict())  # keys taesd_encoder.* / taesd_decoder.* select TAESD


def conditioning(seed: int, batch: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 77, 768, generator=g), {}]]


def empty_latent(batch: int = 1, size: int = 8, seed: int | None = None):
    import torch

    if seed is None:
        return {"samples": torch.zeros(batch, 4, size, size)}
    g = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(batch, 4, size, size, generator=g)}


def run_node(class_type: str, **kwargs):
    """Execute a node class from nodes.NODE_CLASS_MAPPINGS like the executor would; returns the result tuple."""
    import torch

    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS[class_type]
    with torch.inference_mode():
        if hasattr(cls, "PREPARE_CLASS_CLONE"):
            c = cls.PREPARE_CLASS_CLONE({})
            out = getattr(c, c.FUNCTION)(**kwargs)
        else:
            inst = cls()
            out = getattr(inst, cls.FUNCTION)(**kwargs)
    if hasattr(out, "args"):
        return tuple(out.args)
    if isinstance(out, dict):
        return tuple(out["result"])
    return tuple(out)


def run_v3(node_cls, **kwargs):
    """Execute one of the pack's V3 node classes directly (as the executor does, in inference mode)."""
    import torch

    with torch.inference_mode():
        c = node_cls.PREPARE_CLASS_CLONE({})
        out = c.EXECUTE_NORMALIZED(**kwargs)
    return out


TINY_CLIP_VISION = {
    "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu", "hidden_size": 32, "image_size": 224,
    "intermediate_size": 64, "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 2,
    "num_channels": 3, "num_hidden_layers": 2, "patch_size": 14, "projection_dim": 16,
}


def init_clip_vision_(model, seed: int) -> None:
    """torch's default init (seeded), then CLIP-like small position/class embeddings so images matter."""
    import torch

    random_init_(model, seed)
    emb = getattr(getattr(model, "vision_model", None), "embeddings", None)
    if emb is not None:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            w = emb.position_embedding.weight
            w.copy_((0.02 * torch.randn(w.shape, generator=g)).to(w.dtype))
            if emb.class_embedding is not None:
                emb.class_embedding.copy_((0.02 * torch.randn(emb.class_embedding.shape, generator=g))
                                          .to(emb.class_embedding.dtype))


def tiny_clip_vision(tmp_dir, seed: int = 0, **overrides):
    """A real ``comfy.clip_vision.ClipVisionModel`` from a small JSON config (CLIP layout, width 32, 2 layers,
    224 px, 16-d projection by default; override any config key), seeded. ComfyUI's CLIPVisionLoader cannot load
    such a small file (it detects only full-size layouts), so it is built in-process."""
    import hashlib
    import json
    from pathlib import Path

    import comfy.clip_vision

    cfg = dict(TINY_CLIP_VISION, **overrides)
    tag = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]
    path = Path(tmp_dir) / f"tiny_clip_vision_{seed}_{tag}.json"
    path.write_text(json.dumps(cfg))
    cv = comfy.clip_vision.ClipVisionModel(str(path))
    init_clip_vision_(cv.model, seed)
    return cv


def write_random_vit_l(path, seed: int = 0) -> str:
    """A random-weight CLIP ViT-L/14 vision model (fp16, HF key layout) that ComfyUI's CLIPVisionLoader detects.

    The loader picks its config from key names and knows only full-size layouts (ViT-L/H/bigG, SigLIP, DINOv2),
    so a loadable file must have ViT-L's full shapes: 304 M parameters, about 610 MB.
    """
    import json

    import comfy.clip_model
    import comfy.clip_vision
    import comfy.ops
    import torch
    from safetensors.torch import save_file

    cfg_path = os.path.join(os.path.dirname(comfy.clip_vision.__file__), "clip_vision_config_vitl.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    meta = comfy.clip_model.CLIPVisionModelProjection(cfg, torch.float16, "meta", comfy.ops.manual_cast)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, p in meta.state_dict().items():
        if "norm" in k and k.endswith("weight"):
            sd[k] = torch.ones(p.shape, dtype=torch.float16)
        elif k.endswith("bias"):
            sd[k] = torch.zeros(p.shape, dtype=torch.float16)
        else:
            sd[k] = (torch.randn(p.shape, generator=g) * 0.02).to(torch.float16)
    tmp = str(path) + ".partial"
    save_file(sd, tmp, metadata={"sentinel_test": f"random CLIP ViT-L/14 vision, seed {seed}"})
    os.replace(tmp, path)
    return str(path)
