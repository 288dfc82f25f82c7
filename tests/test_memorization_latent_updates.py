"""The latent-update score (after Broken Memories) against hand computations on small constructed trajectories
(pure torch, no ComfyUI)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusion_sentinel.nodes.memorization import latent_updates as lu


def _vp_x(x0, eps, sigma):
    """ComfyUI's sampler latent for an eps/v model on the exact ODE path: x = x0 + sigma * eps."""
    return x0 + sigma * eps


def test_two_element_trajectory_by_hand():
    # One item, D = 2, x0 = (1, 0), eps = (0, 1); two recorded steps sigma 3 and 1, final at sigma 0.
    x0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    eps = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    sig = torch.tensor([3.0, 1.0], dtype=torch.float64)
    x = torch.stack([_vp_x(x0, eps, 3.0), _vp_x(x0, eps, 1.0)], dim=1)  # [1, 2, 2]
    res = lu.latent_updates(x, sig, "eps", final=x0, final_sigma=0.0)
    # z = x / sqrt(1 + s^2): z(3) = (1, 3)/sqrt(10), z(1) = (1, 1)/sqrt(2), z(0) = (1, 0)
    z3 = [1 / math.sqrt(10), 3 / math.sqrt(10)]
    z1 = [1 / math.sqrt(2), 1 / math.sqrt(2)]
    z0 = [1.0, 0.0]
    u01 = math.hypot(z1[0] - z3[0], z1[1] - z3[1]) / math.sqrt(2)
    u12 = math.hypot(z0[0] - z1[0], z0[1] - z1[1]) / math.sqrt(2)
    assert res.u[0].tolist() == pytest.approx([u01, u12], rel=1e-12)
    # reference with s = 1: alpha = 1/sqrt(1+s^2), beta = s/sqrt(1+s^2)
    r01 = math.hypot(1 / math.sqrt(2) - 1 / math.sqrt(10), 1 / math.sqrt(2) - 3 / math.sqrt(10))
    r12 = math.hypot(1 - 1 / math.sqrt(2), 0 - 1 / math.sqrt(2))
    assert res.r.tolist() == pytest.approx([r01, r12], rel=1e-12)
    # x0 and eps have RMS 1/sqrt(2) each here, so every update is exactly 1/sqrt(2) of the data-scale step
    assert res.rho[0].tolist() == pytest.approx([1 / math.sqrt(2)] * 2, rel=1e-12)
    # noise phase: SNR = 1/s^2 <= 1 for s = 3 and s = 1 (both updates start in it)
    assert res.in_phase.tolist() == [True, True]
    assert res.score().tolist() == pytest.approx([1 / math.sqrt(2)], rel=1e-12)
    assert res.sigma_from.tolist() == [3.0, 1.0] and res.sigma_to.tolist() == [1.0, 0.0]


def _orthonormal_pair(d, seed=0):
    """x0, eps of RMS exactly 1 and exactly orthogonal (Gram-Schmidt, rescaled)."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, d, generator=g, dtype=torch.float64)
    b = b - (a @ b) / (a @ a) * a
    return a / a.norm() * math.sqrt(d), b / b.norm() * math.sqrt(d)


def test_exact_ode_path_with_data_scale_predictions_has_ratio_one_and_scaled_x0_follows_the_formula():
    d = 4 * 3 * 3
    x0, eps = _orthonormal_pair(d, 1)
    sig = [14.6, 6.0, 2.5, 0.9, 0.2]
    x = torch.stack([_vp_x(x0, eps, s) for s in sig]).reshape(1, len(sig), 4, 3, 3)
    res = lu.latent_updates(x, torch.tensor(sig, dtype=torch.float64), "eps", final=x0.reshape(1, 4, 3, 3), final_sigma=0.0)
    assert res.rho[0].tolist() == pytest.approx([1.0] * 5, rel=1e-10)
    assert res.in_phase.tolist() == [True, True, True, False, False]  # SNR = 1/sigma^2 <= 1
    # an x0 twice the data scale: u = sqrt(4 da^2 + db^2), r = sqrt(da^2 + db^2)
    x2 = torch.stack([_vp_x(2 * x0, eps, s) for s in sig]).reshape(1, len(sig), 4, 3, 3)
    res2 = lu.latent_updates(x2, torch.tensor(sig, dtype=torch.float64), "eps")
    for k in range(len(sig) - 1):
        a0, a1 = 1 / math.sqrt(1 + sig[k] ** 2), 1 / math.sqrt(1 + sig[k + 1] ** 2)
        b0, b1 = sig[k] * a0, sig[k + 1] * a1
        hand = math.sqrt(4 * (a1 - a0) ** 2 + (b1 - b0) ** 2) / math.sqrt((a1 - a0) ** 2 + (b1 - b0) ** 2)
        assert float(res2.rho[0, k]) == pytest.approx(hand, rel=1e-10)
    assert float(res2.score()[0]) == pytest.approx(float(res2.rho[0, :3].max()), rel=1e-12)
    # data_std 2 makes the doubled x0 the data scale again
    res3 = lu.latent_updates(x2, torch.tensor(sig, dtype=torch.float64), "eps", data_std=2.0)
    assert res3.rho[0].tolist() == pytest.approx([1.0] * 4, rel=1e-10)


def test_every_kth_recording_compares_chords_with_the_reference_over_the_same_noise_levels():
    d = 16
    x0, eps = _orthonormal_pair(d, 2)
    full = [10.0, 5.0, 2.0, 1.0, 0.5]
    kept = [10.0, 2.0, 0.5]  # every 2nd step
    x = torch.stack([_vp_x(1.5 * x0, eps, s) for s in kept]).reshape(1, 3, d)
    res = lu.latent_updates(x, torch.tensor(kept, dtype=torch.float64), "v")
    # on the exact path the chord from 10 to 2 is (alpha_2 - alpha_10) 1.5 x0 + (beta_2 - beta_10) eps
    a = [1 / math.sqrt(1 + s * s) for s in kept]
    b = [s * v for s, v in zip(kept, a)]
    for k in range(2):
        da, db = a[k + 1] - a[k], b[k + 1] - b[k]
        assert float(res.rho[0, k]) == pytest.approx(math.sqrt(2.25 * da**2 + db**2) / math.hypot(da, db), rel=1e-10)
    assert len(full) == 5  # (the skipped levels play no part)


def test_flow_models_use_the_interpolation_latent():
    d = 8
    x0, eps = _orthonormal_pair(d, 3)
    sig = [1.0, 0.75, 0.4]
    x = torch.stack([(1 - s) * x0 + s * eps for s in sig]).reshape(1, 3, d)
    res = lu.latent_updates(x, torch.tensor(sig, dtype=torch.float64), "flow", final=x0.reshape(1, d), final_sigma=0.0)
    assert res.form == "flow"
    assert res.rho[0].tolist() == pytest.approx([1.0, 1.0, 1.0], rel=1e-10)
    # reference by hand: alpha = 1 - s, beta = s -> r = sqrt(2) |ds|
    assert res.r.tolist() == pytest.approx([math.sqrt(2) * 0.25, math.sqrt(2) * 0.35, math.sqrt(2) * 0.4], rel=1e-12)
    # flow SNR = ((1-s)/s)^2 <= 1 for s >= 0.5
    assert res.in_phase.tolist() == [True, True, False]


def test_batch_items_are_scored_independently_and_peak_index_points_at_the_max():
    d = 9
    x0, eps = _orthonormal_pair(d, 4)
    sig = [8.0, 3.0, 1.2, 0.3]
    items = []
    for scale in (0.5, 1.0, 3.0):
        items.append(torch.stack([_vp_x(scale * x0, eps, s) for s in sig]))
    x = torch.stack(items)  # [3, 4, d]
    res = lu.latent_updates(x, torch.tensor(sig, dtype=torch.float64), "eps")
    sc = res.score()
    assert sc[0] < 1.0 < sc[2] and float(sc[1]) == pytest.approx(1.0, rel=1e-10)
    for i in range(3):
        p = int(res.peak_index()[i])
        assert bool(res.in_phase[p]) and float(res.rho[i, p]) == float(sc[i])


def test_no_update_in_the_noise_phase_gives_nan_and_bad_inputs_say_what_is_wrong():
    x = torch.randn(2, 3, 4)
    res = lu.latent_updates(x, torch.tensor([0.8, 0.5, 0.2]), "eps")
    assert not bool(res.in_phase.any())
    assert torch.isnan(res.score()).all() and res.peak_index().tolist() == [-1, -1]
    with pytest.raises(ValueError, match="does not decrease"):
        lu.latent_updates(x, torch.tensor([1.0, 2.0, 0.5]), "eps")
    with pytest.raises(ValueError, match="sigmas has shape"):
        lu.latent_updates(x, torch.tensor([1.0, 0.5]), "eps")
    with pytest.raises(ValueError, match="no update"):
        lu.latent_updates(x[:, :1], torch.tensor([1.0]), "eps")
    with pytest.raises(ValueError, match="flow models"):
        lu.latent_updates(x, torch.tensor([3.0, 2.0, 1.0]), "cosmos_rflow")
    with pytest.raises(ValueError, match="final latent has shape"):
        lu.latent_updates(x, torch.tensor([3.0, 2.0, 1.0]), "eps", final=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="data_std"):
        lu.latent_updates(x, torch.tensor([3.0, 2.0, 1.0]), "eps", data_std=0.0)
    with pytest.raises(ValueError, match="finite"):
        lu.latent_updates(x, torch.tensor([3.0, float("nan"), 1.0]), "eps")


def test_stochastic_sampler_names():
    assert lu.is_stochastic("euler_ancestral") and lu.is_stochastic("dpmpp_2m_sde") and lu.is_stochastic("ddpm")
    assert not lu.is_stochastic("euler") and not lu.is_stochastic("dpmpp_2m") and not lu.is_stochastic(None)
