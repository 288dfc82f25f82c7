"""Encode an IMAGE batch with ComfyUI's CLIP vision model in chunks, and name the encoder.

Glue around ``comfy.clip_vision.ClipVisionModel`` (docs/comfyui-internals.md §3.7), duck-typed so that it imports
no ComfyUI module: ``encode_image(image[B,H,W,C], crop)`` resizes the shortest side to the model's size, centre-crops
(or squashes with crop off), quantises to 8 bits and normalises; it runs the whole batch at once, so large batches
are split here. We use ``image_embeds``: the projected pooled embedding for CLIP, the CLS token after the final
layer norm for DINOv2, and for SigLIP, where ComfyUI has no pooling head and returns every token, the mean over the
tokens (noted in the encoder name; it is not SigLIP's official attention-pooled embedding).

The encoder name describes the architecture, the input size, the embedding, the crop mode and a fingerprint of
the weights, e.g. ``CLIP ViT-L/14 224px image_embeds[768] crop=center #3fa2c1d0``: figures computed with different
names are not comparable.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .vendi import DiversityInputError

KNOWN = {
    # (family, width, layers, patch) -> name
    ("CLIP", 768, 12, 32): "CLIP ViT-B/32",
    ("CLIP", 768, 12, 16): "CLIP ViT-B/16",
    ("CLIP", 1024, 24, 14): "CLIP ViT-L/14",
    ("CLIP", 1280, 32, 14): "CLIP ViT-H/14",
    ("CLIP", 1664, 48, 14): "CLIP ViT-bigG/14",
    ("SigLIP", 1152, 27, 14): "SigLIP so400m/14",
    ("SigLIP", 1152, 27, 16): "SigLIP so400m/16",
    ("DINOv2", 1024, 24, 14): "DINOv2 ViT-L/14",
    ("DINOv2", 1536, 40, 14): "DINOv2 ViT-g/14",
}


@dataclass(frozen=True)
class EncoderInfo:
    family: str  # CLIP, SigLIP, DINOv2 or the model class name
    width: int | None
    layers: int | None
    patch: int | None
    image_size: int | None
    fingerprint: str  # 8 hex digits of a hash of a sample of the weights

    @property
    def arch(self) -> str:
        name = KNOWN.get((self.family, self.width, self.layers, self.patch))
        if name:
            return name
        parts = [f"width {self.width}" if self.width else None, f"{self.layers} layers" if self.layers else None,
                 f"patch {self.patch}" if self.patch else None]
        inner = ", ".join(p for p in parts if p)
        return f"{self.family} ViT ({inner})" if inner else self.family

    def name(self, dim: int, crop: bool, pooling: str = "image_embeds") -> str:
        size = f" {self.image_size}px" if self.image_size else ""
        return f"{self.arch}{size} {pooling}[{dim}] crop={'center' if crop else 'none'} #{self.fingerprint}"


def _module(clip_vision):
    model = getattr(clip_vision, "model", None)
    if model is None or not callable(getattr(clip_vision, "encode_image", None)):
        raise DiversityInputError("clip_vision must be a CLIP_VISION model: connect the output of 'Load CLIP Vision' "
                                  "(CLIPVisionLoader)")
    return model


def fingerprint(module: torch.nn.Module, per_tensor: int = 4096) -> str:
    """blake2b of an evenly strided sample of the first and last two weight tensors, rounded to float16.

    Rounding to float16 makes it the same whether ComfyUI keeps the weights in fp16 or fp32.
    """
    params = [p for _, p in module.named_parameters()]
    if not params:
        return "noweights"
    h = hashlib.blake2b(digest_size=4)
    for p in params[:2] + params[-2:]:
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // per_tensor)
        sample = flat[::step][:per_tensor].to(device="cpu", dtype=torch.float32).to(torch.float16)
        h.update(str(tuple(p.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


def describe_encoder(clip_vision) -> EncoderInfo:
    """Architecture and weight fingerprint of a ComfyUI CLIP_VISION (ClipVisionModel) object."""
    model = _module(clip_vision)
    vm = getattr(model, "vision_model", None)
    image_size = getattr(clip_vision, "image_size", None)
    if vm is not None:  # comfy.clip_model.CLIPVisionModelProjection (CLIP and SigLIP)
        emb = vm.embeddings
        family = "SigLIP" if getattr(emb, "class_embedding", 0) is None else "CLIP"
        conv = emb.patch_embedding
        layers = len(vm.encoder.layers)
    elif hasattr(model, "embeddings") and hasattr(model.embeddings, "patch_embeddings"):  # DINOv2
        family = "DINOv2"
        conv = model.embeddings.patch_embeddings.projection
        layers = len(model.encoder.layer)
    else:
        family, conv, layers = type(model).__name__, None, None
    width = getattr(conv, "out_channels", None)
    ks = getattr(conv, "kernel_size", None)
    patch = ks[0] if isinstance(ks, tuple) else ks
    return EncoderInfo(family=family, width=width, layers=layers, patch=patch,
                       image_size=int(image_size) if image_size else None, fingerprint=fingerprint(model))


def check_images(images, what: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DiversityInputError(f"{what} must be a ComfyUI IMAGE batch [B, H, W, 3]; got {shape}")
    if images.shape[0] == 0:
        raise DiversityInputError(f"{what} is an empty batch")
    if images.shape[-1] == 1:
        images = images.expand(-1, -1, -1, 3)
    return images


# One entry per (encoder object, image tensor object, crop): Batch Diversity and Select Diverse Subset fed the
# same IMAGE output encode it once. Entries hold weak references, so a freed tensor or model never matches, and a
# strided sample of the pixels guards against a tensor changed in place.
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 8


def _probe(images: torch.Tensor) -> tuple:
    flat = images.reshape(-1)
    sample = flat[:: max(1, flat.numel() // 65536)].double()
    return (tuple(images.shape), str(images.dtype), float(sample.sum()), float((sample * sample).sum()))


def _cache_get(clip_vision, images, crop):
    key = (id(clip_vision), id(images), bool(crop))
    hit = _CACHE.get(key)
    if hit is None:
        return None, key
    cv_ref, img_ref, probe, emb = hit
    if cv_ref() is clip_vision and img_ref() is images and probe == _probe(images):
        _CACHE.move_to_end(key)
        return emb, key
    del _CACHE[key]
    return None, key


def clear_cache() -> None:
    _CACHE.clear()


def pool(embeds: torch.Tensor) -> tuple[torch.Tensor, str]:
    """[B, D] as is; a token sequence [B, T, D] (SigLIP in ComfyUI) averaged over tokens."""
    if embeds.dim() == 2:
        return embeds, "image_embeds"
    if embeds.dim() == 3:
        return embeds.mean(dim=1), "image_embeds_token_mean"
    raise DiversityInputError(f"unexpected image_embeds shape {tuple(embeds.shape)} from the CLIP vision model")


def encode_images(clip_vision, images: torch.Tensor, crop: bool = True, chunk_size: int = 16,
                  on_chunk: Callable[[int, int], None] | None = None, use_cache: bool = True
                  ) -> tuple[torch.Tensor, str]:
    """Embeddings [B, D] (float32, CPU, not normalised) of an IMAGE batch, ``chunk_size`` images per forward pass.

    Returns (embeddings, pooling label). ``on_chunk(done_images, total_images)`` is called after every chunk
    (ComfyUI progress bar + cancel check); on a cache hit it is called once with (B, B).
    """
    _module(clip_vision)
    original = images
    images = check_images(images)
    if chunk_size < 1:
        raise DiversityInputError(f"chunk_size must be at least 1; got {chunk_size}")
    n = images.shape[0]
    if use_cache:
        hit, key = _cache_get(clip_vision, original, crop)
        if hit is not None:
            if on_chunk:
                on_chunk(n, n)
            return hit[0].clone(), hit[1]
    parts, label = [], "image_embeds"
    for i in range(0, n, chunk_size):
        out = clip_vision.encode_image(images[i:i + chunk_size], crop=crop)
        emb = out["image_embeds"] if not isinstance(out, dict) else out.get("image_embeds")
        if emb is None:
            raise DiversityInputError("this CLIP vision model returned no image_embeds; use a CLIP, SigLIP or DINOv2 "
                                      "vision model")
        emb, label = pool(emb.detach())
        parts.append(emb.to(device="cpu", dtype=torch.float32))
        if on_chunk:
            on_chunk(min(n, i + chunk_size), n)
    embs = torch.cat(parts, dim=0)
    if use_cache:
        try:
            _CACHE[key] = (weakref.ref(clip_vision), weakref.ref(original), _probe(original), (embs.clone(), label))
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        except TypeError:  # an object without weak-reference support: just do not cache
            pass
    return embs, label
