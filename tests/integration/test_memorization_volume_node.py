"""Volume Growth Rate in a real ComfyUI: JVP equals finite differences through the tiny real U-Net, per-image
scores that do not depend on the batch, an independent computation with the bare network, the JVP through attention
kernels without forward AD (the CUDA failure of issue 9, reproduced on the CPU), the precision of the finite
differences on an fp16 model, and clear errors."""

from __future__ import annotations

import math

import _device
import pytest
import torch
import torch.autograd.forward_ad as fwad
from _comfy import TINY_UNET, conditioning, random_init_, run_v3, tiny_vae
from _memorization import flow_patched, module_device_dtype

COND = conditioning(21)
EFFICIENT_SDPA_ERROR = ("Trying to use forward AD with _scaled_dot_product_efficient_attention that does not support "
                        "it because it has not been implemented yet.")


@pytest.fixture(scope="module")
def mem(comfy):
    from diffusion_sentinel.nodes.memorization import comfy_nodes

    return comfy_nodes


@pytest.fixture(scope="module")
def vae(comfy):
    return tiny_vae(0)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))  # node inputs live on the CPU


def _vgr(mem, tiny, vae, image, **kw):
    kw = {"mode": "directions", "directions": 2, "steps": 1, "method": "jvp", "seed": 0, **kw}
    return run_v3(mem.VolumeGrowthRate, model=tiny, vae=vae, image=image, conditioning=COND, **kw).args


def _jvp_fd_tol(values) -> float:
    """JVP (float32, TF32 on CUDA) vs central differences (float64 evaluations, step 1e-3 of ||x||): the
    difference's truncation error and the float32 rounding of ComfyUI's output stay under 1e-3 in the log-stretch
    (0.1 % of ||J u||) here; under TF32 the JVP itself carries about 1e-3."""
    return max(2e-3, 2 * _device.tol("float32")["rtol"]) * max(1.0, max(abs(v) for v in values))


@pytest.mark.parametrize("mode", ["directions", "single_axis", "volume"])
def test_jvp_equals_finite_differences_on_the_tiny_unet(mem, tiny, vae, images, mode):
    a = _vgr(mem, tiny, vae, images, mode=mode, method="jvp")[0]
    b = _vgr(mem, tiny, vae, images, mode=mode, method="finite_difference")[0]
    assert len(a) == 2 and all(math.isfinite(v) for v in a)
    assert a == pytest.approx(b, abs=_jvp_fd_tol(a))


def test_jvp_of_the_denoiser_equals_central_differences_directly(comfy, tiny):
    """The raw check: forward-mode AD through ComfyUI's calc_cond_batch vs central differences in fp32."""
    from diffusion_sentinel.nodes.memorization import probe
    from diffusion_sentinel.nodes.memorization import volume as vol

    x_cpu = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3)) * 0.5
    u = vol.random_directions(1, (4, 4, 4), seed=1)
    res = {}

    def fn(ctx):
        x = x_cpu.to(ctx.noise.device)  # the loaded model's device

        def denoise(xx):
            return ctx.predict([ctx.conds["positive"]], xx, 0.2018)[0]

        res["jvp"] = vol.jvp(denoise, x, u.to(x.device), method="jvp")[1].cpu()
        res["fd"] = vol.jvp(denoise, x, u.to(x.device), method="finite_difference", rel_step=1e-3)[1].cpu()
        return None

    with torch.inference_mode():
        probe.run_probe(tiny, COND, None, fn, torch.zeros(2, 4, 4, 4), sigmas=[0.2018], cfg=1.0)
    rel = (res["jvp"] - res["fd"]).norm() / res["jvp"].norm()
    assert float(rel) < max(1e-3, 5 * _device.tol("float32")["rtol"])  # fp32 differences: rounding / 1e-3


@pytest.mark.parametrize("method", ["jvp", "finite_difference"])
def test_scores_do_not_depend_on_the_batch(mem, tiny, vae, images, method):
    """Image i scored in a batch of 2 = image i alone, to float32 rounding of the batched convolutions (relative;
    TF32 on CUDA). Finite differences run in float64, so their 1/step amplification acts on float32 output
    rounding only (the 3.11154 vs 3.11168 of float32 differences is gone)."""
    both = _vgr(mem, tiny, vae, images, mode="directions", method=method)[0]
    t = _device.tol("float32")
    for i in range(2):
        one = _vgr(mem, tiny, vae, images[i:i + 1], mode="directions", method=method)[0]
        assert one[0] == pytest.approx(both[i], rel=t["rtol"], abs=t["atol"])


def test_one_step_stretch_by_hand_with_the_bare_network(mem, tiny, vae, images):
    """single_axis, one step t=1 -> t=21: ||J e_i|| of the DDIM step written with the bare U-Net (VP input, eps
    output) and differentiated by reverse-mode autograd (torch.autograd.functional.jvp, the double-backward trick):
    an implementation independent of ComfyUI's sampling code, of its attention and of forward-mode AD."""
    from _memorization import sd_alpha_bar
    from diffusion_sentinel.nodes.memorization import volume as vol

    score, report = _vgr(mem, tiny, vae, images[:1], mode="single_axis", method="jvp", seed=5)[:2]
    with torch.inference_mode():
        lat = vae.encode(images[:1]).float().cpu() * 0.18215  # SD15 latent scale
    e, _ = vol.axis_direction(tuple(lat.shape[1:]), seed=5)
    a0, a1 = sd_alpha_bar(1), sd_alpha_bar(21)
    dm = tiny.model.diffusion_model
    dev, dt = module_device_dtype(dm)
    ctx = COND[0][0].to(dev, dt)

    def step(x):  # x1 = sqrt(a1) x0_hat + sqrt(1 - a1) eps, x0_hat = (x - sqrt(1 - a0) eps) / sqrt(a0)
        eps = dm(x, torch.ones(1, device=dev), context=ctx, transformer_options={})
        x0 = (x - math.sqrt(1 - a0) * eps) / math.sqrt(a0)
        return math.sqrt(a1) * x0 + math.sqrt(1 - a1) * eps

    _, ju = torch.autograd.functional.jvp(step, lat.to(dev, dt).clone(), e.to(dev, dt).clone())
    t = _device.tol("float32", strict_rtol=1e-4, strict_atol=1e-4)
    assert score[0] == pytest.approx(math.log(float(ju.float().norm())), rel=t["rtol"], abs=t["atol"])
    assert "axis" in report


def test_flow_model_and_bad_inputs_are_clear_errors(mem, tiny, vae, images):
    with pytest.raises(ValueError, match="volume growth rate.*flow matching"):
        _vgr(mem, flow_patched(tiny), vae, images)
    with pytest.raises(ValueError, match="CONDITIONING has a batch of 3"):
        run_v3(mem.VolumeGrowthRate, model=tiny, vae=vae, image=images, conditioning=conditioning(1, batch=3),
               mode="directions", directions=1, steps=1, method="jvp", seed=0)
    with pytest.raises(ValueError, match="leaves the model's 0..999"):
        _vgr(mem, tiny, vae, images, steps=49, start_timestep=100)


# ----------------------------------------------------------------------------- the JVP through ComfyUI's attention
def _raises_under_forward_ad(inner):
    """An attention entry point that fails as PyTorch's memory-efficient SDPA kernel does when it meets a dual
    tensor, and computes normally otherwise."""

    def fn(q, k, v, *args, **kwargs):
        if fwad.unpack_dual(q).tangent is not None:
            raise NotImplementedError(EFFICIENT_SDPA_ERROR)
        return inner(q, k, v, *args, **kwargs)

    return fn


def _sdp_flags():
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled())


@pytest.mark.parametrize("backend", ["pytorch_sdpa_with_priority", "wrapped_backend_without_forward_ad"])
def test_jvp_runs_through_attention_kernels_without_forward_ad(mem, tiny, vae, images, monkeypatch, backend):
    """Issue 9: on CUDA, ComfyUI's SDPA entry point (comfy.ops.scaled_dot_product_attention) sets its own kernel
    priority on every call, so a MATH-only restriction around the JVP did not hold and the efficient kernel raised.
    Reproduced here by making that entry point (or the whole attention backend, as xformers or sage would) raise
    under forward AD; the volume probe must not reach it, and must touch no global to get there."""
    import comfy.ldm.modules.attention as attn
    import comfy.ops

    ref = _vgr(mem, tiny, vae, images, method="finite_difference")[0]  # before patching the backend
    if backend == "pytorch_sdpa_with_priority":
        monkeypatch.setattr(attn, "optimized_attention", attn.attention_pytorch)
        monkeypatch.setattr(comfy.ops, "scaled_dot_product_attention",
                            _raises_under_forward_ad(comfy.ops.scaled_dot_product_attention))
    else:
        monkeypatch.setattr(attn, "optimized_attention", attn.wrap_attn(_raises_under_forward_ad(attn.attention_basic)))
    patched_backend = attn.optimized_attention
    flags = _sdp_flags()
    got = _vgr(mem, tiny, vae, images, method="jvp")[0]
    assert got == pytest.approx(ref, abs=_jvp_fd_tol(ref))
    assert attn.optimized_attention is patched_backend and _sdp_flags() == flags  # no global was changed
    q = torch.randn(1, 2, 4, 8)  # the trap is armed: a dual tensor reaching the patched entry point raises
    with fwad.dual_level(), pytest.raises(NotImplementedError, match="forward AD"):
        if backend == "pytorch_sdpa_with_priority":
            comfy.ops.scaled_dot_product_attention(fwad.make_dual(q, q), q, q)
        else:
            patched_backend(fwad.make_dual(q, q), q, q, 2, skip_reshape=True)


def test_without_the_override_older_comfyui_gets_replace_patches(mem, tiny, vae, images, monkeypatch):
    """A ComfyUI without transformer_options' optimized_attention_override: attn1/attn2 replace patches on every
    transformer block carry the math attention (the backend itself, not wrap_attn-decorated, has no forward AD)."""
    import comfy.ldm.modules.attention as attn
    from diffusion_sentinel.nodes.memorization import safe_attention

    ref = _vgr(mem, tiny, vae, images, method="finite_difference")[0]
    monkeypatch.setattr(safe_attention, "override_supported", lambda: False)
    monkeypatch.setattr(attn, "optimized_attention", _raises_under_forward_ad(attn.attention_basic))
    m = safe_attention.with_math_attention(tiny)
    replace = m.model_options["transformer_options"]["patches_replace"]
    keys = safe_attention._transformer_keys(tiny.model.diffusion_model)
    n_blocks = sum(len(mod.transformer_blocks) for mod in tiny.model.diffusion_model.modules()
                   if type(mod).__name__ == "SpatialTransformer")
    assert len(keys) == n_blocks > 0 and set(replace["attn1"]) == set(keys) == set(replace["attn2"])
    assert "patches_replace" not in tiny.model_options.get("transformer_options", {})  # the input is untouched
    got = _vgr(mem, tiny, vae, images, method="jvp")[0]
    assert got == pytest.approx(ref, abs=_jvp_fd_tol(ref))


def test_other_packs_attention_patches_are_kept(mem, tiny, vae, images):
    """An attn2 replace patch (as IP-Adapter's) stays in force, and an optimized_attention_override another pack
    set is wrapped: it is called, with the math attention as the backend function it delegates to."""
    from diffusion_sentinel.nodes.memorization import safe_attention

    seen = []

    def other_override(func, *args, **kwargs):
        seen.append(func.__name__)
        return func(*args, **kwargs)

    m = tiny.clone()
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = other_override
    m.set_model_attn2_replace(lambda q, k, v, extra: q * 0.0, "input", 1)  # silences one cross-attention
    plain = _vgr(mem, tiny, vae, images, method="jvp")[0]
    got = _vgr(mem, m, vae, images, method="jvp")[0]
    fd = _vgr(mem, m, vae, images, method="finite_difference")[0]
    assert seen and set(seen) == {"_math_backend"}
    assert got == pytest.approx(fd, abs=_jvp_fd_tol(fd))  # both methods see the replace patch
    assert min(abs(a - b) for a, b in zip(got, plain)) > 1e-3  # and it changes the model
    assert m.model_options["transformer_options"]["optimized_attention_override"] is other_override
    assert getattr(safe_attention.with_math_attention(m).model_options["transformer_options"][
        "optimized_attention_override"], "sentinel_math_attention", False)


# ----------------------------------------------------------------------------- precision on an fp16 model
def _tiny_fp16(seed=0):
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    mc = comfy.supported_models.SD15(dict(TINY_UNET, dtype=torch.float16))
    model = comfy.model_base.BaseModel(mc, device=torch.device("cpu"))
    random_init_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())


def test_finite_differences_on_an_fp16_model_agree_with_the_jvp(comfy, vae):
    """Issue 9: on an fp16 SD1.5 on an H100, finite differences gave growth rates ~50 % above the JVP's (0.184 vs
    0.120). Differences of low-precision evaluations are not a derivative: rounding of about 2^-11 (fp16, and TF32,
    in which CUDA runs float32 convolutions by default, has the same 10-bit mantissa) divided by a step of 1e-3 of
    ||x|| is noise as large as the signal, and noise only adds to ||J u||. Evaluating in fp16 reproduces it here (the
    log-stretch rises by about 1); the probe's float64 evaluations agree with the JVP to 1e-3."""
    from diffusion_sentinel.nodes.memorization import volume_probe as vp

    model = _tiny_fp16()
    assert model.model_dtype() == torch.float16
    img = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        def run(method, fd_dtype=vp.FD_DTYPE):
            s = vp.VolumeSettings(mode="directions", directions=4, steps=1, method=method, seed=0, fd_dtype=fd_dtype)
            r = vp.volume_growth(model, vae, img, COND, s)
            return r.score.tolist(), r.compute_dtype

        jvp, jvp_dt = run("jvp")
        fd, fd_dt = run("finite_difference")
        fd16, fd16_dt = run("finite_difference", torch.float16)
    assert (jvp_dt, fd_dt, fd16_dt) == ("float32", "float64", "float16")
    assert fd == pytest.approx(jvp, abs=_jvp_fd_tol(jvp))
    assert all(b - a > 0.2 for a, b in zip(jvp, fd16))  # the failure mode: biased upwards, far outside


def test_the_panel_shows_each_image_and_the_batch_level_outputs(mem, tiny, vae, images):
    from diffusion_sentinel.nodes.common.ui import RESULT_KEY

    out = run_v3(mem.VolumeGrowthRate, model=tiny, vae=vae, image=images, conditioning=COND, mode="directions",
                 directions=2, steps=1, method="jvp", seed=0)
    vals, report, top, mean = out.args
    p = out.ui[RESULT_KEY][0]
    assert [r[0] for r in p["rows"]] == [0, 1] and [r[1] for r in p["rows"]] == vals
    assert p["columns"][1]["direction"] == "higher = easier to reproduce"
    assert p["highlight"] == [vals.index(max(vals))]
    assert top == max(vals) and mean == pytest.approx(sum(vals) / 2, rel=1e-12)
    assert "0 = no stretch" in " ".join(p["notes"]) and "computed in float32" in " ".join(p["notes"])
    assert out.ui["text"][0].startswith("Volume Growth Rate: directions, jvp")
