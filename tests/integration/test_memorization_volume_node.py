"""Volume Growth Rate in a real ComfyUI: JVP equals finite differences through the tiny real U-Net, per-image
scores that do not depend on the batch, an independent computation with the bare network, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from _comfy import conditioning, run_v3, tiny_vae
from _memorization import flow_patched

COND = conditioning(21)


@pytest.fixture(scope="module")
def mem(comfy):
    from diffusion_sentinel.nodes.memorization import comfy_nodes

    return comfy_nodes


@pytest.fixture(scope="module")
def vae(comfy):
    return tiny_vae(0)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))


def _vgr(mem, tiny, vae, image, **kw):
    kw = {"mode": "directions", "directions": 2, "steps": 1, "method": "jvp", "seed": 0, **kw}
    return run_v3(mem.VolumeGrowthRate, model=tiny, vae=vae, image=image, conditioning=COND, **kw).args


@pytest.mark.parametrize("mode", ["directions", "single_axis", "volume"])
def test_jvp_equals_finite_differences_on_the_tiny_unet(mem, tiny, vae, images, mode):
    a = _vgr(mem, tiny, vae, images, mode=mode, method="jvp")[0]
    b = _vgr(mem, tiny, vae, images, mode=mode, method="finite_difference")[0]
    assert len(a) == 2 and all(math.isfinite(v) for v in a)
    tol = 2e-3 * max(1.0, max(abs(v) for v in a))
    assert a == pytest.approx(b, abs=tol)


def test_jvp_of_the_denoiser_equals_central_differences_directly(comfy, tiny):
    """The raw check: forward-mode AD through ComfyUI's calc_cond_batch vs central differences in fp32."""
    from diffusion_sentinel.nodes.memorization import probe
    from diffusion_sentinel.nodes.memorization import volume as vol

    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3)) * 0.5
    u = vol.random_directions(1, (4, 4, 4), seed=1)
    res = {}

    def fn(ctx):
        def denoise(xx):
            return ctx.predict([ctx.conds["positive"]], xx, 0.2018)[0]

        res["jvp"] = vol.jvp(denoise, x, u, method="jvp")[1]
        res["fd"] = vol.jvp(denoise, x, u, method="finite_difference", rel_step=1e-3)[1]
        return None

    with torch.inference_mode():
        probe.run_probe(tiny, COND, None, fn, torch.zeros(2, 4, 4, 4), sigmas=[0.2018], cfg=1.0)
    rel = (res["jvp"] - res["fd"]).norm() / res["jvp"].norm()
    assert float(rel) < 1e-3


def test_scores_do_not_depend_on_the_batch(mem, tiny, vae, images):
    both = _vgr(mem, tiny, vae, images, mode="directions", method="finite_difference")[0]
    for i in range(2):
        one = _vgr(mem, tiny, vae, images[i:i + 1], mode="directions", method="finite_difference")[0]
        assert one[0] == pytest.approx(both[i], abs=1e-4)


def test_one_step_stretch_by_hand_with_the_bare_network(mem, tiny, vae, images):
    """single_axis, one step t=1 -> t=21: ||J e_i|| of the DDIM step written with the bare U-Net (VP input, eps
    output) and differentiated by reverse-mode autograd (torch.autograd.functional.jvp, the double-backward trick):
    an implementation independent of ComfyUI's sampling code and of forward-mode AD."""
    from _memorization import sd_alpha_bar
    from diffusion_sentinel.nodes.memorization import volume as vol

    score, report = _vgr(mem, tiny, vae, images[:1], mode="single_axis", method="jvp", seed=5)
    with torch.inference_mode():
        lat = vae.encode(images[:1]) * 0.18215  # SD15 latent scale
    e, _ = vol.axis_direction(tuple(lat.shape[1:]), seed=5)
    a0, a1 = sd_alpha_bar(1), sd_alpha_bar(21)
    dm = tiny.model.diffusion_model
    ctx = COND[0][0].clone()

    def step(x):  # x1 = sqrt(a1) x0_hat + sqrt(1 - a1) eps, x0_hat = (x - sqrt(1 - a0) eps) / sqrt(a0)
        eps = dm(x, torch.ones(1), context=ctx, transformer_options={})
        x0 = (x - math.sqrt(1 - a0) * eps) / math.sqrt(a0)
        return math.sqrt(a1) * x0 + math.sqrt(1 - a1) * eps

    _, ju = torch.autograd.functional.jvp(step, lat.clone(), e.clone())
    assert score[0] == pytest.approx(math.log(float(ju.norm())), abs=1e-4)
    assert "axis" in report


def test_flow_model_and_bad_inputs_are_clear_errors(mem, tiny, vae, images):
    with pytest.raises(ValueError, match="volume growth rate.*flow matching"):
        _vgr(mem, flow_patched(tiny), vae, images)
    with pytest.raises(ValueError, match="CONDITIONING has a batch of 3"):
        run_v3(mem.VolumeGrowthRate, model=tiny, vae=vae, image=images, conditioning=conditioning(1, batch=3),
               mode="directions", directions=1, steps=1, method="jvp", seed=0)
    with pytest.raises(ValueError, match="leaves the model's 0..999"):
        _vgr(mem, tiny, vae, images, steps=49, start_timestep=100)
