"""Feature cache (bounded, owner-checked), image preparation, seeds and the matrix rendering."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from diffusion_sentinel.nodes.diffsim.feature_cache import FeatureCache
from diffusion_sentinel.nodes.diffsim.heatmap import matrix_image, matrix_text, ramp
from diffusion_sentinel.nodes.diffsim.images import content_hash, derive_seed, prepare, seeded_normal, to_uint8


class Owner:
    pass


def test_cache_lru_by_bytes_and_entries():
    c = FeatureCache(max_bytes=100, max_entries=3)
    for i in range(3):
        c.put(i, f"v{i}", 30)
    assert len(c) == 3 and c.nbytes == 90
    assert c.get(0) == "v0"  # 0 becomes most recent
    c.put(3, "v3", 30)  # over 100 bytes: the least recently used (1) goes
    assert c.get(1) is None and c.get(0) == "v0" and c.get(3) == "v3"
    c.put(4, "big", 101)  # larger than the budget: not stored, nothing evicted
    assert c.get(4) is None and len(c) == 3
    c.put(5, "x", 1)  # entry cap
    assert len(c) == 3
    assert c.hits == 3 and c.misses == 2


def test_cache_entries_die_with_their_owner():
    c = FeatureCache()
    a, b = Owner(), Owner()
    c.put("k", 1, 8, owners=(a,))
    assert c.get("k", owners=(a,)) == 1
    assert c.get("k", owners=(b,)) is None  # same key, another object (e.g. a recycled id): a miss, entry dropped
    c.put("k", 2, 8, owners=(a,))
    del a
    gc.collect()
    assert c.get("k", owners=(Owner(),)) is None and len(c) == 0


def test_prepare_square_and_crop():
    img = torch.zeros(60, 120, 3)
    img[:, 30:90] = 1.0  # a white square in the middle of a wide image
    sq = prepare(img, 64, "square (paper)")
    cr = prepare(img, 64, "crop (keep aspect)")
    assert sq.shape == cr.shape == (64, 64, 3) and sq.dtype == torch.float32
    # square resize squeezes the white band to the middle half; the crop keeps the middle 60x60 -> all white
    assert sq[:, :10].mean() < 0.05 and sq[:, 28:36].mean() > 0.95
    assert cr[4:60, 4:60].mean() > 0.95
    with pytest.raises(ValueError):
        prepare(img, 64, "zoom")


def test_prepare_matches_pil_lanczos():
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    img = torch.rand(40, 50, 3, generator=g)
    ref = np.asarray(Image.fromarray(to_uint8(img)).resize((32, 32), Image.Resampling.LANCZOS), np.float32) / 255
    assert torch.equal(prepare(img, 32), torch.from_numpy(ref))


def test_grey_and_alpha_images():
    assert to_uint8(torch.ones(4, 4, 1)).shape == (4, 4, 3)
    assert to_uint8(torch.ones(4, 4, 4)).shape == (4, 4, 3)


def test_hashes_and_seeds():
    a = torch.rand(8, 8, 3)
    assert content_hash(a) == content_hash(a.clone())
    b = a.clone()
    b[0, 0, 0] += 1e-3
    assert content_hash(a) != content_hash(b)
    assert content_hash(a) != content_hash(a.reshape(8, 4, 6))
    assert derive_seed(1, "x") == derive_seed(1, "x") != derive_seed(2, "x")
    assert 0 <= derive_seed(5, "a", "b") < 2 ** 63
    assert torch.equal(seeded_normal((3, 2), 7), seeded_normal((3, 2), 7))


def test_matrix_rendering():
    m = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.9], [0.2, 0.9, 1.0]])
    img = matrix_image(m, title="t")
    assert img.ndim == 3 and img.shape[2] == 3 and 0 <= img.min() and img.max() <= 1
    txt = matrix_text(m)
    assert txt.splitlines()[2].split() == ["1", "0.5000", "1.0000", "0.9000"]
    assert ramp(0.0) == (68, 1, 84) and ramp(1.0) == (253, 231, 37) and ramp(float("nan")) == (128, 128, 128)
    with pytest.raises(ValueError):
        matrix_image(np.zeros((2, 3)))
