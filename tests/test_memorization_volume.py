"""Volume growth rate maths: JVP vs finite differences vs exact Jacobians, and a Gaussian data model where the
inversion map, its stretch and its log-volume are known in closed form (pure)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusion_sentinel.nodes.memorization import volume as vol

SHAPE = (2, 3, 3)
D = 18


def _linear(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(D, D, generator=g) / math.sqrt(D)

    def fn(x):
        return (x.flatten(1) @ a.T).view_as(x)

    return a, fn


def test_jvp_and_finite_differences_equal_the_exact_product_for_a_linear_map():
    a, fn = _linear()
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    u = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(2))
    exact = (u.flatten(1) @ a.T).view(1, *SHAPE).expand_as(x)
    p, t = vol.jvp(fn, x, u, method="jvp", need_primal=True)
    assert torch.allclose(t, exact, atol=1e-6) and torch.allclose(p, fn(x), atol=1e-6)
    p2, t2 = vol.jvp(fn, x, u, method="finite_difference", need_primal=True)
    assert torch.allclose(t2, exact, atol=5e-4) and torch.allclose(p2, fn(x), atol=1e-6)  # fp32 rounding / h
    assert vol.jvp(fn, x, u, method="jvp")[0] is None


def test_jvp_matches_central_differences_on_a_nonlinear_map():
    a, lin = _linear(3)

    def fn(x):
        return torch.tanh(lin(x)) + 0.3 * x**2

    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(4))
    u = vol.random_directions(1, SHAPE, seed=5)
    _, t = vol.jvp(fn, x, u, method="jvp")
    _, t2 = vol.jvp(fn, x, u, method="finite_difference", rel_step=1e-3)
    assert torch.allclose(t, t2, rtol=1e-3, atol=1e-4)
    # by hand: J u = (1 - tanh^2(Ax)) * (A u) + 0.6 x u
    hand = (1 - torch.tanh(lin(x)) ** 2) * lin(u.expand_as(x)) + 0.6 * x * u
    assert torch.allclose(t, hand, atol=1e-5)


def test_jvp_runs_under_inference_mode():
    a, fn = _linear()
    with torch.inference_mode():
        x = torch.randn(1, *SHAPE)
        u = torch.randn(1, *SHAPE)
        _, t = vol.jvp(fn, x, u, method="jvp")
    assert torch.allclose(t, fn(u), atol=1e-6)


def test_log_stretch_is_the_mean_log_ratio_over_directions():
    a, fn = _linear(6)
    x = torch.randn(2, *SHAPE)
    dirs = vol.random_directions(5, SHAPE, seed=7)
    got = vol.log_stretch(fn, x, dirs, method="jvp")
    hand = sum(math.log(float((a @ dirs[k].flatten()).norm())) for k in range(5)) / 5  # ||u|| = 1
    assert got.tolist() == pytest.approx([hand, hand], abs=1e-6)


def test_directions_probes_and_axis_are_reproducible():
    d = vol.random_directions(3, SHAPE, seed=1)
    assert torch.allclose(d.flatten(1).norm(dim=1), torch.ones(3))
    assert torch.equal(d, vol.random_directions(3, SHAPE, seed=1))
    assert not torch.equal(d, vol.random_directions(3, SHAPE, seed=2))
    e, i = vol.axis_direction(SHAPE, seed=3)
    assert e.sum() == 1 and e.flatten()[i] == 1 and vol.axis_direction(SHAPE, seed=3)[1] == i
    r = vol.rademacher(4, SHAPE, seed=0)
    assert set(r.unique().tolist()) == {-1.0, 1.0}


# --- Gaussian data x0 ~ N(0, s_d^2 I): the exact denoiser is linear, D(x, sigma) = s_d^2 / (s_d^2 + sigma^2) x
S_D = 0.8


def _gauss_denoiser(x, sigma):
    return x * (S_D**2 / (S_D**2 + sigma**2))


def _step_scale(s0, s1):
    """One DDIM inversion step maps x_VP to c * x_VP (derived by hand from the step formula)."""
    k0 = S_D**2 / (S_D**2 + s0**2)
    c0, c1 = math.sqrt(1 + s0**2), math.sqrt(1 + s1**2)
    return c0 / c1 * (k0 + s1 * (1 - k0) / s0)


SIGMAS = [0.0413, 0.1415, 0.2018]  # SD timesteps 1, 21, 41


def test_inversion_step_and_stretch_on_the_gaussian_model():
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    c = _step_scale(SIGMAS[0], SIGMAS[1])
    assert torch.allclose(vol.inversion_step(_gauss_denoiser, x, SIGMAS[0], SIGMAS[1]), c * x, atol=1e-6)
    phi = vol.inversion_map(_gauss_denoiser, SIGMAS)
    c2 = c * _step_scale(SIGMAS[1], SIGMAS[2])
    for method in vol.METHODS:
        got = vol.log_stretch(phi, x, vol.random_directions(3, SHAPE, 0), method=method)
        assert got.tolist() == pytest.approx([math.log(c2)] * 2, abs=1e-4)
        ax, _ = vol.axis_direction(SHAPE, seed=0)
        assert vol.log_stretch(phi, x, ax, method=method).tolist() == pytest.approx([math.log(c2)] * 2, abs=1e-4)


def test_log_volume_on_the_gaussian_model_by_hand_and_against_the_continuous_value():
    x = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(1))
    probes = vol.rademacher(2, SHAPE, seed=0)  # z^T (c I) z = c D exactly: Hutchinson is exact here
    hand = 0.0
    for s0, s1 in zip(SIGMAS[:-1], SIGMAS[1:]):
        hand += (s1 - s0) * D * s0 / (S_D**2 + s0**2)  # tr(d eps / d x_VE) = D (1 - k) / sigma = D sigma / (s_d^2 + sigma^2)
    hand -= D * math.log(math.sqrt(1 + SIGMAS[-1] ** 2) / math.sqrt(1 + SIGMAS[0] ** 2))
    assert float(vol.log_volume(_gauss_denoiser, x, SIGMAS, probes, method="jvp")) == pytest.approx(hand, abs=2e-6)
    # fp32 central differences of eps = (x - D) / sigma at sigma 0.04: rounding ~1e-4 on terms of ~0.1
    fd = float(vol.log_volume(_gauss_denoiser, x, SIGMAS, probes, method="finite_difference"))
    assert fd == pytest.approx(hand, abs=2e-4)
    # with many small steps the Euler rule converges to the exact log-det of the continuous flow (Liouville)
    fine = [SIGMAS[0] + (SIGMAS[-1] - SIGMAS[0]) * k / 400 for k in range(401)]
    exact = D * (0.5 * math.log((S_D**2 + fine[-1] ** 2) / (S_D**2 + fine[0] ** 2))
                 - math.log(math.sqrt(1 + fine[-1] ** 2) / math.sqrt(1 + fine[0] ** 2)))
    assert float(vol.log_volume(_gauss_denoiser, x, fine, probes[:1])) == pytest.approx(exact, rel=1e-2)


def test_bad_arguments():
    a, fn = _linear()
    with pytest.raises(ValueError, match="method"):
        vol.jvp(fn, torch.zeros(1, *SHAPE), torch.zeros(1, *SHAPE), method="magic")
    with pytest.raises(ValueError, match="do not match"):
        vol.log_stretch(fn, torch.zeros(1, *SHAPE), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="two sigmas"):
        vol.inversion_map(_gauss_denoiser, [0.1])
