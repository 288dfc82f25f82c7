"""Similarity Trajectory maths against hand computations and independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusion_sentinel.nodes.trajectory.similarity import (
    SimilaritySeries,
    consecutive_cosine,
    cosine_rows,
    frame_steps,
    gaussian_window,
    max_drawdown,
    ssim,
    summarize,
)


def test_consecutive_cosine_against_numpy_loop():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, 6, 4, 5, 5, generator=g)
    got = consecutive_cosine(f)
    a = f.numpy().astype(np.float64)
    for b in range(3):
        for k in range(5):
            u, v = a[b, k].ravel(), a[b, k + 1].ravel()
            assert got[b, k].item() == pytest.approx(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), abs=1e-12)
    assert got.dtype == torch.float64 and got.shape == (3, 5)


def test_consecutive_cosine_hand_values():
    f = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, -2.0]]])  # [1, 4 frames, 2]
    z = consecutive_cosine(f)
    assert z[0].tolist() == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2), -1.0])


def test_consecutive_cosine_zero_frame_is_nan_and_errors():
    f = torch.zeros(1, 3, 2)
    f[0, 0] = 1
    z = consecutive_cosine(f)
    assert math.isnan(z[0, 0]) and math.isnan(z[0, 1])
    with pytest.raises(ValueError, match="at least 2 frames"):
        consecutive_cosine(torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match=r"\[batch, frames"):
        consecutive_cosine(torch.zeros(4, 4))


def test_cosine_rows():
    a = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 2.0], [6.0, 8.0]])
    assert cosine_rows(a, b).tolist() == pytest.approx([0.0, 1.0])


def _ssim_reference(x: np.ndarray, y: np.ndarray, win=11, sigma=1.5, data_range=1.0) -> float:
    """Independent SSIM: explicit loops over every valid window position, per channel, then the mean."""
    r = np.arange(win) - (win - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for ch in range(x.shape[0]):
        for i in range(x.shape[1] - win + 1):
            for j in range(x.shape[2] - win + 1):
                px, py = x[ch, i:i + win, j:j + win], y[ch, i:i + win, j:j + win]
                mx, my = (w * px).sum(), (w * py).sum()
                vx = (w * px * px).sum() - mx * mx
                vy = (w * py * py).sum() - my * my
                cxy = (w * px * py).sum() - mx * my
                vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_against_independent_loop_implementation():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 16, 14))
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    got = ssim(torch.from_numpy(x), torch.from_numpy(y))
    for n in range(2):
        assert got[n].item() == pytest.approx(_ssim_reference(x[n], y[n]), abs=1e-10)


def test_ssim_identity_small_images_and_errors():
    x = torch.rand(1, 3, 7, 9, dtype=torch.float64)
    assert ssim(x, x).item() == pytest.approx(1.0)
    # window shrinks to 7 (largest odd size that fits)
    ref = _ssim_reference(x[0].numpy(), (1 - x[0]).numpy(), win=7)
    assert ssim(x, 1 - x).item() == pytest.approx(ref, abs=1e-10)
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, x[:, :2])


def test_gaussian_window_normalised():
    w = gaussian_window(11, 1.5)
    assert w.sum().item() == pytest.approx(1.0) and torch.allclose(w, w.T)


def test_max_drawdown_hand_values():
    assert max_drawdown(torch.tensor([0.9, 0.95, 0.7, 0.99, 0.8, 0.98])) == pytest.approx(0.25)
    assert max_drawdown(torch.tensor([0.1, 0.2, 0.3])) == 0.0
    assert max_drawdown(torch.tensor([0.9, float("nan"), 0.5])) == pytest.approx(0.4)
    assert math.isnan(max_drawdown(torch.tensor([float("nan")])))


def test_summarize_paper_layout_skips_noise_value():
    z = torch.tensor([0.25, 0.90, 0.95, 0.80, 0.97, 0.99, 0.93, 0.995])
    s = summarize(z, steps=list(range(8)), skip_first=True)
    assert s.minimum == pytest.approx(0.80) and s.argmin_step == 3
    # D_max is the drop over the last 60 % (values 3..7: 0.80, 0.97, 0.99, 0.93, 0.995): 0.99 -> 0.93, not the
    # whole series' 0.95 -> 0.80 (that one is not predictive of artifacts)
    assert s.d_max == pytest.approx(0.06) and max_drawdown(z[1:]) == pytest.approx(0.15)
    assert s.d_max_relative == pytest.approx(0.06 / (0.995 - 0.80))  # range of the values after the noise value
    # last half of the 7 values after the noise value: from index 7 // 2 = 3 on
    assert s.mean_last_half == pytest.approx((0.97 + 0.99 + 0.93 + 0.995) / 4)
    s2 = summarize(z, steps=list(range(8)), skip_first=False)
    assert s2.minimum == pytest.approx(0.25) and s2.argmin_step == 0
    assert s2.d_max == pytest.approx(0.06) and s2.d_max_relative == pytest.approx(0.06 / (0.995 - 0.25))


def test_summarize_nan_and_steps():
    z = torch.tensor([0.5, float("nan"), 0.4, 0.9])
    s = summarize(z, steps=[10, 20, 30, 40], skip_first=False)
    assert s.minimum == pytest.approx(0.4) and s.argmin_step == 30
    allnan = summarize(torch.full((3,), float("nan")), steps=[0, 1, 2], skip_first=False)
    assert math.isnan(allnan.minimum) and allnan.argmin_step == -1
    with pytest.raises(ValueError):
        summarize(z, steps=[1, 2], skip_first=False)


def test_frame_steps_layouts():
    assert frame_steps([0, 2, 4, 5], noise_frame=True) == [0, 2, 4, 5]
    assert frame_steps([0, 2, 4, 5], noise_frame=False) == [2, 4, 5]


def test_similarity_series_container():
    v = torch.tensor([[0.2, 0.9, 0.8], [0.3, float("nan"), 0.99]], dtype=torch.float64)
    s = SimilaritySeries(v, [0, 1, 2], "latent_cosine", True)
    assert s.finite.tolist() == [True, False]
    assert s.as_lists()[1] == [0.3, None, 0.99]
    sub = s.select([1])
    assert sub.batch_size == 1 and sub.finite.tolist() == [False]
    sums = s.summaries()
    assert sums[0].minimum == pytest.approx(0.8) and sums[0].argmin_step == 2
    with pytest.raises(ValueError, match="unknown similarity metric"):
        SimilaritySeries(v, [0, 1, 2], "lpips", True)
    with pytest.raises(ValueError, match="step labels"):
        SimilaritySeries(v, [0, 1], "latent_cosine", True)
