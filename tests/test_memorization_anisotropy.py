"""The anisotropy and Wen terms against hand computations on synthetic eps / v (pure, no ComfyUI)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _memorization import hand_pixel_cosine_mean
from diffusion_sentinel.nodes.memorization import anisotropy as an


def _synthetic(seed=0, b=3, c=4, h=5, w=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, h, w, generator=g, dtype=dtype)  # VP noise the network sees
    out_c = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    out_u = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    return z, out_c, out_u


def _eps_x0(z, eps, sigma):
    """ComfyUI EPS: x = z * sqrt(sigma^2 + 1) (VE input), x0 = x - sigma * eps."""
    x = z * math.sqrt(sigma**2 + 1)
    return x, x - sigma * eps


def _v_x0(z, v, sigma):
    """ComfyUI V_PREDICTION (sigma_data 1): x0 = x / (sigma^2 + 1) - v * sigma / sqrt(sigma^2 + 1)."""
    x = z * math.sqrt(sigma**2 + 1)
    return x, x / (sigma**2 + 1) - v * sigma / math.sqrt(sigma**2 + 1)


def test_ddim_grid_gives_the_papers_timesteps():
    ts = an.ddim_timesteps(50)
    assert ts[:3] == [981, 961, 941] and ts[-1] == 1 and len(ts) == 50
    assert ts[0] == an.NORM_TIMESTEP and ts[-3] == an.COSINE_TIMESTEP
    with pytest.raises(ValueError):
        an.ddim_timesteps(0)


def test_eps_norm_term_and_wen_equal_the_norm_of_the_eps_difference():
    z, ec, eu = _synthetic(1)
    s = 13.1204
    x, x0c = _eps_x0(z, ec, s)
    _, x0u = _eps_x0(z, eu, s)
    hand = [math.sqrt(sum(float(v) ** 2 for v in (ec[i] - eu[i]).flatten())) for i in range(z.shape[0])]
    assert an.norm_term(x0c, x0u, s, "eps").tolist() == pytest.approx(hand, rel=1e-10)
    assert an.wen_norm(x0c, x0u, s, "eps").tolist() == pytest.approx(hand, rel=1e-10)
    assert torch.allclose(an.model_output(x, x0u, s, "eps"), eu, atol=1e-12)


def test_eps_cosine_term_is_the_per_pixel_channel_cosine_of_uncond_and_guidance():
    z, ec, eu = _synthetic(2)
    s = 0.2018
    x, x0c = _eps_x0(z, ec, s)
    _, x0u = _eps_x0(z, eu, s)
    hand = hand_pixel_cosine_mean(eu, ec - eu)
    got = an.cosine_term(x, x0c, x0u, s, "eps")
    assert got.tolist() == pytest.approx(hand, rel=1e-9, abs=1e-12)
    ref = F.cosine_similarity(eu, ec - eu, dim=1).flatten(1).mean(1)  # the official code's call
    assert torch.allclose(got, ref, atol=1e-12)
    # the global (flattened) cosine is a different number, and the term is NOT it
    glob = an.global_cosine(eu, ec - eu)
    assert (got - glob).abs().max() > 1e-3


def test_per_pixel_and_global_cosine_differ_on_a_constructed_case():
    # channel 0 only: one pixel agrees strongly (large magnitude), the other 8 disagree weakly
    a = torch.zeros(1, 4, 3, 3, dtype=torch.float64)
    a[:, 0] = 1.0
    b = torch.zeros_like(a)
    b[:, 0] = -0.1
    b[0, 0, 0, 0] = 10.0
    per_pixel = an.mean_channel_cosine(a, b)
    assert float(per_pixel) == pytest.approx((1.0 - 8.0) / 9.0)  # +1 at one pixel, -1 at eight
    g = float(an.global_cosine(a, b))
    assert g == pytest.approx((10.0 - 0.8) / (3.0 * math.sqrt(100.0 + 8 * 0.01)))  # positive
    assert g > 0 > float(per_pixel)


def test_v_prediction_terms_follow_the_official_code():
    z, vc, vu = _synthetic(3)
    for s in (13.1204, 0.2018):  # the norm and cosine timesteps
        x, x0c = _v_x0(z, vc, s)
        _, x0u = _v_x0(z, vu, s)
        ab = 1.0 / (1.0 + s**2)
        # pipe.py, sd_ver 2: score = (sqrt(abar) * v - x_VP) / (1 - abar); N = ||score_c - score_u||
        score_c = (math.sqrt(ab) * vc - z) / (1 - ab)
        score_u = (math.sqrt(ab) * vu - z) / (1 - ab)
        hand_n = (score_c - score_u).flatten(1).norm(dim=1)
        assert torch.allclose(an.norm_term(x0c, x0u, s, "v"), hand_n, rtol=1e-9)
        # cosine on the raw v outputs
        hand_c = hand_pixel_cosine_mean(vu, vc - vu)
        assert an.cosine_term(x, x0c, x0u, s, "v").tolist() == pytest.approx(hand_c, rel=1e-8, abs=1e-10)
        # Wen uses the raw network output (v) and the rebuilt output is v itself
        assert torch.allclose(an.wen_norm(x0c, x0u, s, "v"), (vc - vu).flatten(1).norm(dim=1), rtol=1e-9)
        assert torch.allclose(an.model_output(x, x0u, s, "v"), vu, atol=1e-10)
        # d_v = d_eps * sqrt(1 + sigma^2): the eps difference of a v model, scaled
        d_eps = (x0u - x0c) / s
        assert torch.allclose(an.output_difference(x0c, x0u, s, "v"), d_eps * math.sqrt(1 + s**2), rtol=1e-9)


def test_code_quirk_factor_for_v_models_is_tiny_at_981():
    ab = 1.0 / (1.0 + 13.1204**2)
    # code divides the eps difference by (1 - abar) instead of sqrt(1 - abar): factor 1/sqrt(1 - abar)
    assert 1 / math.sqrt(1 - ab) == pytest.approx(1.0029, abs=1e-4)


def test_combine_weights_and_presets():
    n, c = torch.tensor([2.0, 5.0]), torch.tensor([0.1, 0.9])
    assert an.combine(n, c, 1.0, 2.0).tolist() == pytest.approx([2.2, 6.8])
    assert an.weights_for("auto", "eps") == (1.0, 2.0)
    assert an.weights_for("auto", "v") == (1.0, 0.1)
    assert an.weights_for("Realistic Vision (2, 1)", "eps") == (2.0, 1.0)
    with pytest.raises(ValueError):
        an.weights_for("nope", "eps")
    with pytest.raises(ValueError):
        an.weights_for("auto", "flow")


def test_per_prompt_mean_uses_sample_major_rows():
    # rows j * B + i for B = 2 prompts, n = 3 samples
    vals = torch.tensor([1.0, 10.0, 2.0, 20.0, 3.0, 30.0])
    assert an.per_prompt_mean(vals, 2).tolist() == [2.0, 20.0]
    with pytest.raises(ValueError):
        an.per_prompt_mean(vals, 4)


def test_sigma_must_be_positive_and_match_the_batch():
    z, ec, eu = _synthetic(4)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        an.norm_term(ec, eu, 0.0, "eps")
    with pytest.raises(ValueError, match="entries"):
        an.norm_term(ec, eu, torch.ones(2), "eps")
    with pytest.raises(ValueError, match="prediction"):
        an.norm_term(ec, eu, 1.0, "flow")


def test_per_row_sigmas_are_supported():
    z, ec, eu = _synthetic(5)
    sig = torch.tensor([0.5, 2.0, 13.0], dtype=torch.float64)
    x = z * (sig**2 + 1).sqrt().view(-1, 1, 1, 1)
    x0c, x0u = x - sig.view(-1, 1, 1, 1) * ec, x - sig.view(-1, 1, 1, 1) * eu
    assert torch.allclose(an.wen_norm(x0c, x0u, sig, "eps"), (ec - eu).flatten(1).norm(dim=1), rtol=1e-10)


def test_wen_from_trajectory_is_the_mean_of_the_first_k_step_norms():
    g = torch.Generator().manual_seed(7)
    b, t = 2, 4
    sig = torch.tensor([14.6, 9.0, 5.0, 2.0])
    ec = torch.randn(b, t, 4, 3, 3, generator=g)
    eu = torch.randn(b, t, 4, 3, 3, generator=g)
    x = torch.randn(b, t, 4, 3, 3, generator=g)
    x0c = x - sig.view(1, -1, 1, 1, 1) * ec
    x0u = x - sig.view(1, -1, 1, 1, 1) * eu
    per_step = (ec - eu).flatten(2).norm(dim=2)  # [B, T]
    assert torch.allclose(an.wen_from_trajectory(x0c, x0u, sig, "eps", steps=1), per_step[:, 0], rtol=1e-5)
    assert torch.allclose(an.wen_from_trajectory(x0c, x0u, sig, "eps", steps=3), per_step[:, :3].mean(1), rtol=1e-5)
    with pytest.raises(ValueError, match="recorded only 4"):
        an.wen_from_trajectory(x0c, x0u, sig, "eps", steps=5)
    with pytest.raises(ValueError, match="sigmas"):
        an.wen_from_trajectory(x0c, x0u, sig[:3], "eps")
    with pytest.raises(ValueError, match="differ in shape"):
        an.wen_from_trajectory(x0c, x0u[:1], sig, "eps")


def test_cosine_term_needs_spatial_latents():
    with pytest.raises(ValueError, match="spatial"):
        an.cosine_term(torch.ones(2, 4), torch.ones(2, 4), torch.ones(2, 4), 1.0, "eps")
