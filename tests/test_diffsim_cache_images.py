"""Feature cache (bounded, owner-checked), image preparation, seeds and the matrix rendering."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from diffusion_sentinel.nodes.diffsim.feature_cache import FeatureCache
from diffusion_sentinel.nodes.diffsim.heatmap import SCALE, color_range, matrix_image, matrix_text, ramp
from diffusion_sentinel.nodes.diffsim.images import (
    content_hash,
    derive_seed,
    normalize_image,
    prepare,
    seeded_normal,
    to_uint8,
)


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


def test_rgba_and_grey_are_the_image_the_model_sees():
    """Issue 9: an RGBA image scored 0.87-0.90 against its own RGB pixels because its noise seed came from a hash
    taken before the alpha channel was dropped. The hash (and every seed derived from it) is now taken of the
    normalised RGB image: RGBA with any alpha == its RGB; grey == its 3-channel replica; RGB hashes as before."""
    import hashlib

    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(12, 10, 3, generator=g)
    alpha = torch.rand(12, 10, 1, generator=g)
    rgba = torch.cat([rgb, alpha], dim=-1)
    assert torch.equal(normalize_image(rgba), rgb)
    assert content_hash(rgba) == content_hash(rgb) == content_hash(torch.cat([rgb, 1 - alpha], dim=-1))
    h = hashlib.sha1(repr((12, 10, 3)).encode())
    h.update(rgb.numpy().tobytes())
    assert content_hash(rgb) == h.hexdigest()  # RGB images keep the released hash (and their scores)
    assert derive_seed(2334, content_hash(rgba), "noise") == derive_seed(2334, content_hash(rgb), "noise")
    assert torch.equal(prepare(rgba, 16), prepare(rgb, 16))
    grey = torch.rand(6, 6, 1, generator=g)
    assert content_hash(grey) == content_hash(grey.expand(-1, -1, 3))
    assert content_hash(rgb.double()) == content_hash(rgb) and content_hash(rgb.half()) == content_hash(rgb.half().float())
    over = rgb.clone()
    over[0, 0, 0] = 1.5  # out of range: the model sees 1.0
    clipped = over.clamp(0, 1)
    assert content_hash(over) == content_hash(clipped)
    with pytest.raises(ValueError, match="1 \\(grey\\), 3 \\(RGB\\) or 4 \\(RGBA\\) channels, got 2"):
        normalize_image(torch.zeros(4, 4, 2))
    with pytest.raises(ValueError, match="one image"):
        normalize_image(torch.zeros(1, 4, 4, 3))


def test_hashes_and_seeds():
    a = torch.rand(8, 8, 3)
    assert content_hash(a) == content_hash(a.clone())
    b = a.clone()
    b[0, 0, 0] += 1e-3
    assert content_hash(a) != content_hash(b)
    assert content_hash(a) != content_hash(a.reshape(4, 16, 3))  # same bytes, other shape
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


def _cell(img: np.ndarray, n: int, i: int, j: int, title: bool = True) -> np.ndarray:
    """The pixels of cell (i, j) of a matrix_image with default sizes."""
    cell = max(40 if n <= 16 else 12, min(64, 704 // n))
    left, top = 36, 28 + (14 if title else 0)
    return img[top + i * cell: top + (i + 1) * cell, left + j * cell: left + (j + 1) * cell]


def test_heatmap_colours_follow_a_fixed_scale():
    """Issue 12: a spread of 0.0002 was stretched over full contrast. The colours now follow the fixed [0, 1]
    scale: two matrices whose values differ by 0.0002 look the same, 0.2 and 0.9 are far apart on the ramp."""
    assert SCALE == (0.0, 1.0) and color_range(np.eye(3)) == (0.0, 1.0)
    tiny = np.array([[1.0, 0.5001], [0.5001, 1.0]])
    tinier = np.array([[1.0, 0.5003], [0.5003, 1.0]])
    bg = tuple(int(round(c)) for c in ramp(0.5))
    for m in (tiny, tinier):
        px = np.round(_cell(matrix_image(m, title="t"), 2, 0, 1) * 255).astype(int)
        colours = {tuple(p) for p in px.reshape(-1, 3)}
        assert bg in colours  # the cell's fill is the ramp's middle colour
    spread = np.array([[1.0, 0.5001, 0.5003], [0.5001, 1.0, 0.5002], [0.5003, 0.5002, 1.0]])  # range 0.0002
    img = matrix_image(spread, title="t")
    fills = [tuple(int(v) for v in np.round(_cell(img, 3, 0, j)[2, 2] * 255)) for j in (1, 2)]
    assert fills == [ramp(0.5001), ramp(0.5003)] and ramp(0.5001) == ramp(0.5003)  # not dark vs bright
    far = np.array([[1.0, 0.2, 0.9], [0.2, 1.0, 0.5], [0.9, 0.5, 1.0]])
    img = matrix_image(far, title="t")
    fill = [tuple(int(v) for v in np.round(_cell(img, 3, 0, j)[2, 2] * 255)) for j in (1, 2)]
    assert fill == [ramp(0.2), ramp(0.9)]
    assert color_range(tiny, scale=None) == pytest.approx((0.4501, 0.5501))  # auto: floor of 0.1 on the spread
    assert color_range(far, scale=None) == pytest.approx((0.2, 0.9))
    with pytest.raises(ValueError, match="hi > lo"):
        color_range(far, scale=(1.0, 1.0))


def test_heatmap_prints_every_value_up_to_16_images():
    """Each cell holds its value as text (pixels of the text colour on the fill) for n <= 16; bigger matrices drop
    the text (the values are in the node's table)."""
    for n in (2, 5, 16):
        m = np.full((n, n), 0.5)
        np.fill_diagonal(m, 1.0)
        img = matrix_image(m, title="t")
        for i, j in ((0, n - 1), (n - 1, 0), (n // 2, n // 2)):
            px = np.round(_cell(img, n, i, j) * 255).astype(int).reshape(-1, 3)
            fill = tuple(px[0])
            assert (np.abs(px - np.array(fill)).sum(axis=1) > 100).sum() > 10, (n, i, j)  # text drawn
    m = np.full((20, 20), 0.5)
    px = np.round(_cell(matrix_image(m, title="t"), 20, 0, 1) * 255).astype(int).reshape(-1, 3)
    assert len({tuple(p) for p in px}) == 1  # 20 images: 35 px cells, no text
