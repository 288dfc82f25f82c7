"""Image preparation for DiffSim: the paper's square Lanczos resize or an aspect-preserving centre crop,
content hashes for the feature cache, and per-image seeds. Pure (torch, numpy, Pillow).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

RESIZE_MODES = ("square (paper)", "crop (keep aspect)")


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE item [H, W, C] in 0..1 -> uint8 RGB [H, W, 3] (alpha dropped, grey repeated)."""
    if img.dim() != 3:
        raise ValueError(f"expected one image [H, W, C], got shape {tuple(img.shape)}")
    x = img.detach().float().cpu().clamp(0, 1)
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, 3)
    elif x.shape[-1] >= 3:
        x = x[..., :3]
    else:
        raise ValueError(f"an image needs 1, 3 or 4 channels, got {x.shape[-1]}")
    return (x * 255.0).round().to(torch.uint8).numpy()


def prepare(img: torch.Tensor, size: int, mode: str = RESIZE_MODES[0]) -> torch.Tensor:
    """[H, W, C] 0..1 -> [size, size, 3] float32 0..1.

    square: Lanczos resize to size x size, aspect ratio not kept (the paper's ``process_image``).
    crop: Lanczos resize of the shorter side to ``size``, then a centre crop.
    """
    from PIL import Image

    pil = Image.fromarray(to_uint8(img), "RGB")
    w, h = pil.size
    if mode.startswith("square"):
        pil = pil.resize((size, size), resample=Image.Resampling.LANCZOS)
    elif mode.startswith("crop"):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        pil = pil.resize((nw, nh), resample=Image.Resampling.LANCZOS)
        left, top = (nw - size) // 2, (nh - size) // 2
        pil = pil.crop((left, top, left + size, top + size))
    else:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {list(RESIZE_MODES)}")
    return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0)


def content_hash(img: torch.Tensor) -> str:
    """SHA-1 of an image's shape and float32 pixels: equal images (bit for bit) share features."""
    x = img.detach().float().cpu().contiguous()
    h = hashlib.sha1(repr(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from the user's seed and labels (e.g. an image hash and a purpose), stable across runs."""
    h = hashlib.sha256(repr((int(seed),) + tuple(str(p) for p in parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def seeded_normal(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise from a CPU generator (float32), independent of the global RNG."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=torch.float32)
