"""Fixtures of the diversity family: tiny CLIP vision models built with ComfyUI's own classes, test images.

ComfyUI's ``CLIPVisionLoader`` picks the model config from key names (``comfy.clip_vision.load_clipvision_from_sd``):
only ViT-L/H/bigG, SigLIP and DINOv2-L/g layouts are recognised; any other file returns None ("clip vision file is
invalid"). A small model can therefore only be built in-process from a JSON config (``tiny_clip_vision``); a file
that the loader detects must have the full ViT-L/14 shapes (``write_random_vit_l``: 304 M parameters, 610 MB in
fp16), because missing keys are left uninitialised (``load_state_dict(strict=False)``) and wrong shapes raise.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

TINY_CLIP_VISION = {
    "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu", "hidden_size": 32, "image_size": 224,
    "intermediate_size": 64, "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 2,
    "num_channels": 3, "num_hidden_layers": 2, "patch_size": 14, "projection_dim": 16,
}


def _init_clip_vision_(model, seed: int) -> None:
    """torch's default init (seeded), then CLIP-like small position/class embeddings so images matter."""
    import torch
    from _comfy import random_init_

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


def tiny_clip_vision(tmp_dir: str | os.PathLike, seed: int = 0, **overrides):
    """A real ``comfy.clip_vision.ClipVisionModel`` (CLIP layout, width 32, 2 layers, 16-d projection), seeded."""
    import comfy.clip_vision

    cfg = dict(TINY_CLIP_VISION, **overrides)
    tag = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]
    path = Path(tmp_dir) / f"tiny_clip_vision_{seed}_{tag}.json"
    path.write_text(json.dumps(cfg))
    cv = comfy.clip_vision.ClipVisionModel(str(path))
    _init_clip_vision_(cv.model, seed)
    return cv


def write_random_vit_l(path: str | os.PathLike, seed: int = 0) -> str:
    """Write a random-weight CLIP ViT-L/14 vision model (HF key layout, fp16) that CLIPVisionLoader detects."""
    import comfy.clip_vision
    import comfy.utils

    cfg = os.path.join(os.path.dirname(comfy.clip_vision.__file__), "clip_vision_config_vitl.json")
    cv = comfy.clip_vision.ClipVisionModel(cfg)
    _init_clip_vision_(cv.model, seed)
    sd = {k: v.half().contiguous() for k, v in cv.model.state_dict().items()}
    tmp = str(path) + ".partial"
    comfy.utils.save_torch_file(sd, tmp, metadata={"sentinel_test": f"random CLIP ViT-L/14 vision, seed {seed}"})
    os.replace(tmp, path)
    return str(path)


def write_tiny_clip_vision_file(path: str | os.PathLike, seed: int = 0) -> str:
    """The tiny model saved as safetensors: ComfyUI's loader does NOT recognise it (returns None)."""
    import comfy.utils

    cv = tiny_clip_vision(Path(path).parent, seed)
    comfy.utils.save_torch_file({k: v.contiguous() for k, v in cv.model.state_dict().items()}, str(path))
    return str(path)


def make_images(kind: str = "distinct", n: int = 6, size: int = 32, seed: int = 0):
    """IMAGE batches [n, size, size, 3] in 0..1 whose content differs in obvious ways.

    distinct: solid colours, gradients, stripes, checkerboards, noise (cycled); noise: uniform noise.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return torch.rand(n, size, size, 3, generator=g)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    makers = [
        lambda: torch.stack([torch.full_like(xs, 0.9), torch.full_like(xs, 0.1), torch.full_like(xs, 0.1)], -1),
        lambda: torch.stack([xs, ys, 1 - xs], -1),
        lambda: ((torch.arange(size)[None, :].expand(size, size) // 4) % 2).float()[..., None].expand(size, size, 3),
        lambda: (((torch.arange(size)[:, None] // 8) + (torch.arange(size)[None, :] // 8)) % 2).float()[..., None]
        .expand(size, size, 3),
        lambda: torch.stack([torch.full_like(xs, 0.1), torch.full_like(xs, 0.2), torch.full_like(xs, 0.9)], -1),
        lambda: torch.rand(size, size, 3, generator=g),
        lambda: torch.stack([ys, ys * 0.5, 1 - ys], -1),
        lambda: torch.full((size, size, 3), 0.5),
    ]
    return torch.stack([makers[i % len(makers)]().contiguous() for i in range(n)]).clamp(0, 1).float()
