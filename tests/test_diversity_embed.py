"""Encoding glue with stand-in CLIP vision objects (no ComfyUI): chunking, the encode cache, token pooling,
encoder names and weight fingerprints. The real ComfyUI model is exercised in tests/integration."""

from __future__ import annotations

import pytest
import torch
from diffusion_sentinel.nodes.diversity import clip_embed
from diffusion_sentinel.nodes.diversity.clip_embed import (
    check_images,
    describe_encoder,
    encode_images,
    fingerprint,
    pool,
)
from diffusion_sentinel.nodes.diversity.vendi import DiversityInputError


class _Vision(torch.nn.Module):
    """The attribute layout of comfy.clip_model.CLIPVisionModelProjection (what describe_encoder reads)."""

    def __init__(self, width, layers, patch, proj, siglip=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.vision_model = torch.nn.Module()
        self.vision_model.embeddings = torch.nn.Module()
        self.vision_model.embeddings.patch_embedding = torch.nn.Conv2d(3, width, patch, patch, bias=False)
        self.vision_model.embeddings.class_embedding = None if siglip else torch.nn.Parameter(torch.randn(width))
        self.vision_model.encoder = torch.nn.Module()
        self.vision_model.encoder.layers = torch.nn.ModuleList(torch.nn.Identity() for _ in range(layers))
        self.visual_projection = torch.nn.Linear(width, proj, bias=False) if proj else None


class FakeClipVision:
    """encode_image(image[B,H,W,C], crop) -> {'image_embeds': ...}; the embedding is a fixed function of the image."""

    def __init__(self, model, image_size=224, tokens=0, dim=8):
        self.model = model
        self.image_size = image_size
        self.tokens = tokens
        self.dim = dim
        self.calls: list[tuple[int, bool]] = []
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(3 * 4, dim, generator=g)

    def encode_image(self, image, crop=True):
        self.calls.append((image.shape[0], crop))
        x = image[..., :3].permute(0, 3, 1, 2)
        feat = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)  # [B, 12]
        emb = feat @ self.w + (0.0 if crop else 1.0)
        if self.tokens:
            emb = emb[:, None, :].repeat(1, self.tokens, 1) + torch.arange(self.tokens)[None, :, None] * 0.01
        return {"image_embeds": emb}


@pytest.fixture(autouse=True)
def _fresh_cache():
    clip_embed.clear_cache()
    yield
    clip_embed.clear_cache()


def images(n=8, seed=0, size=16):
    return torch.rand(n, size, size, 3, generator=torch.Generator().manual_seed(seed))


def small_fake(**kw):
    return FakeClipVision(_Vision(width=16, layers=2, patch=14, proj=8), **kw)


def test_chunks_give_the_same_embeddings_and_report_progress():
    cv = small_fake()
    x = images(8)
    full, label = encode_images(cv, x, chunk_size=64, use_cache=False)
    seen = []
    chunked, _ = encode_images(cv, x, chunk_size=3, on_chunk=lambda d, t: seen.append((d, t)), use_cache=False)
    assert label == "image_embeds" and full.shape == (8, 8) and full.dtype == torch.float32
    assert torch.allclose(full, chunked, atol=1e-6)
    assert [c[0] for c in cv.calls] == [8, 3, 3, 2]
    assert seen == [(3, 8), (6, 8), (8, 8)]


def test_the_cache_encodes_the_same_tensor_once():
    cv = small_fake()
    x = images(6)
    a, _ = encode_images(cv, x, chunk_size=4)
    seen = []
    b, _ = encode_images(cv, x, chunk_size=4, on_chunk=lambda d, t: seen.append((d, t)))
    assert torch.equal(a, b) and len(cv.calls) == 2 and seen == [(6, 6)]
    b += 1.0  # callers get a copy: changing it does not poison the cache
    assert torch.equal(encode_images(cv, x)[0], a)
    encode_images(cv, x, crop=False)  # another crop mode is another encoding
    assert len(cv.calls) == 3
    encode_images(cv, x.clone())  # another tensor object (same pixels) is encoded again
    assert len(cv.calls) == 4
    x[0, 0, 0, 0] += 0.5  # changed in place: the pixel probe notices
    encode_images(cv, x)
    assert len(cv.calls) == 5
    encode_images(small_fake(), x)  # another model
    assert len(cv.calls) == 5


def test_token_sequences_are_mean_pooled():
    cv = FakeClipVision(_Vision(width=16, layers=2, patch=14, proj=0, siglip=True), tokens=5)
    emb, label = encode_images(cv, images(3))
    assert label == "image_embeds_token_mean" and emb.shape == (3, 8)
    tok = cv.encode_image(images(3))["image_embeds"]
    assert torch.allclose(emb, tok.mean(dim=1))
    with pytest.raises(DiversityInputError, match="image_embeds shape"):
        pool(torch.zeros(2, 3, 4, 5))


def test_known_architectures_are_named():
    cv = FakeClipVision(_Vision(width=1024, layers=24, patch=14, proj=768))
    info = describe_encoder(cv)
    assert (info.family, info.width, info.layers, info.patch, info.image_size) == ("CLIP", 1024, 24, 14, 224)
    name = info.name(768, crop=True)
    assert name.startswith("CLIP ViT-L/14 224px image_embeds[768] crop=center #") and len(info.fingerprint) == 8
    sig = describe_encoder(FakeClipVision(_Vision(width=1152, layers=27, patch=14, proj=0, siglip=True),
                                          image_size=384))
    assert sig.name(1152, crop=False, pooling="image_embeds_token_mean").startswith(
        "SigLIP so400m/14 384px image_embeds_token_mean[1152] crop=none #")


def test_dinov2_and_unknown_layouts():
    dino = torch.nn.Module()
    dino.embeddings = torch.nn.Module()
    dino.embeddings.patch_embeddings = torch.nn.Module()
    dino.embeddings.patch_embeddings.projection = torch.nn.Conv2d(3, 1024, 14, 14)
    dino.encoder = torch.nn.Module()
    dino.encoder.layer = torch.nn.ModuleList(torch.nn.Identity() for _ in range(24))
    assert describe_encoder(FakeClipVision(dino, image_size=518)).arch == "DINOv2 ViT-L/14"
    tiny = describe_encoder(small_fake())
    assert tiny.arch == "CLIP ViT (width 16, 2 layers, patch 14)"
    odd = describe_encoder(FakeClipVision(torch.nn.Linear(2, 2)))
    assert odd.arch == "Linear" and odd.width is None


def test_fingerprint_follows_the_weights_not_their_storage_dtype():
    a, b = _Vision(16, 2, 14, 8, seed=1), _Vision(16, 2, 14, 8, seed=2)
    assert fingerprint(a) != fingerprint(b)
    stored_fp16 = _Vision(16, 2, 14, 8, seed=1).half()  # ComfyUI keeps CLIP vision weights in fp16 by default
    assert fingerprint(stored_fp16) == fingerprint(a)  # fp32 weights are rounded to fp16 before hashing
    assert fingerprint(torch.nn.Identity()) == "noweights"


def test_bad_inputs_are_clear_errors():
    with pytest.raises(DiversityInputError, match="Load CLIP Vision"):
        encode_images(object(), images(2))
    with pytest.raises(DiversityInputError, match="IMAGE batch"):
        encode_images(small_fake(), torch.rand(8, 8, 3))
    with pytest.raises(DiversityInputError, match="chunk_size"):
        encode_images(small_fake(), images(2), chunk_size=0)
    assert check_images(torch.rand(2, 4, 4, 1)).shape == (2, 4, 4, 3)  # grey is expanded
