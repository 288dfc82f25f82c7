"""Fixtures of the diversity family: tiny CLIP vision models built with ComfyUI's own classes, test images.

ComfyUI's ``CLIPVisionLoader`` picks the model config from key names (``comfy.clip_vision.load_clipvision_from_sd``):
only ViT-L/H/bigG, SigLIP and DINOv2-L/g layouts are recognised; any other file returns None ("clip vision file is
invalid"). A small model can therefore only be built in-process from a JSON config (``tiny_clip_vision``); a file
that the loader detects must have the full ViT-L/14 shapes (``write_random_vit_l``: 304 M parameters, 610 MB in
fp16), because missing keys are left uninitialised (``load_state_dict(strict=False)``) and wrong shapes raise.
"""

from __future__ import annotations

import os
from pathlib import Path

from _comfy import tiny_clip_vision  # noqa: F401  (re-exported for the diversity tests)


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
