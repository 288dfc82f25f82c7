"""Image preparation for DiffSim: the paper's square Lanczos resize or an aspect-preserving centre crop,
content hashes for the feature cache, and per-image seeds. Pure (torch, numpy, Pillow).

Every image is first brought to what the model sees (:func:`normalize_image`: RGB, alpha dropped as VAEEncode drops
it, grey repeated, values clamped to 0..1); the content hash, and with it the per-image noise and posterior seeds,
is taken of that, so an RGBA image and its RGB pixels are the same image to DiffSim (score exactly 1).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

RESIZE_MODES = ("square (paper)", "crop (keep aspect)")


def normalize_image(img: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE item [H, W, C] -> what the model sees: float32 RGB [H, W, 3] on the CPU, clamped to 0..1.

    C = 4 (RGBA): alpha is dropped (VAEEncode and CLIP vision drop it too; transparent pixels keep their colour);
    C = 1 (grey): repeated to 3 channels; C = 3: unchanged (bit for bit, so an RGB image hashes as it always did).
    """
    if not isinstance(img, torch.Tensor) or img.dim() != 3:
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"expected one image [H, W, C], got {shape}")
    x = img.detach().to(device="cpu", dtype=torch.float32)
    c = x.shape[-1]
    if c == 1:
        x = x.expand(-1, -1, 3)
    elif c == 4:
        x = x[..., :3]
    elif c != 3:
        raise ValueError(f"an image needs 1 (grey), 3 (RGB) or 4 (RGBA) channels, got {c}")
    return x.clamp(0, 1).contiguous()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE item [H, W, C] in 0..1 -> uint8 RGB [H, W, 3] (alpha dropped, grey repeated)."""
    return (normalize_image(img) * 255.0).round().to(torch.uint8).numpy()


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
    """SHA-1 of the normalised image's shape and float32 pixels (:func:`normalize_image`): images the model sees
    as equal (bit for bit) share features and seeds; an RGBA image hashes as its RGB pixels."""
    x = normalize_image(img)
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
