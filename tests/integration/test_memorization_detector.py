"""The detector in a real ComfyUI with tiny real U-Nets: terms vs the bare network, one batched U-Net call per
sigma, patches of other packs kept, batched prompts, v-prediction, and clear errors for models without a term."""

from __future__ import annotations

import math

import pytest
import torch
from _comfy import conditioning, run_v3, tiny_model
from _memorization import (
    UNetCalls,
    approx,
    flow_patched,
    guidance_distilled,
    hand_pixel_cosine_mean,
    model_tol,
    raw_outputs,
    sd_alpha_bar,
    tiny_v_model,
)

POS2 = conditioning(1, batch=2)
NEG = conditioning(2)
SIZE = dict(width=64, height=64)  # 8x8 latent


@pytest.fixture(scope="module")
def mem(comfy):
    from diffusion_sentinel.nodes.memorization import comfy_nodes

    return comfy_nodes


def _guard(mem, model, positive=POS2, negative=NEG, **kw):
    return run_v3(mem.MemorizationGuard, model=model, positive=positive, negative=negative, **{**SIZE, **kw}).args


def _z(seed=51, n=1):
    return torch.randn((n, 4, 8, 8), generator=torch.Generator().manual_seed(seed))


def test_terms_equal_the_bare_unet_on_vp_noise(mem, tiny):
    """N and C from the node = the same quantities from the bare UNetModel fed the VP noise z at t=981 / t=41."""
    out = _guard(mem, tiny, seed=51)
    z = _z(51)
    n_hand, c_hand = [], []
    for i in range(2):
        ctx = POS2[0][0][i:i + 1]
        ec = raw_outputs(tiny, z, 981, ctx)
        eu = raw_outputs(tiny, z, 981, NEG[0][0])
        n_hand.append(float((ec - eu).flatten().norm()))
        ec41 = raw_outputs(tiny, z, 41, ctx)
        eu41 = raw_outputs(tiny, z, 41, NEG[0][0])
        c_hand.append(hand_pixel_cosine_mean(eu41, ec41 - eu41)[0])
    anis, wen, flags, after, norm, cos, thr, report = out[1:9]
    assert norm == approx(n_hand, tiny, strict_rtol=1e-4)
    assert cos == approx(c_hand, tiny, strict_rtol=1e-4, strict_atol=1e-5)
    assert wen == approx(n_hand, tiny, strict_rtol=1e-4)  # Wen's first step at t=981 = N for eps models
    assert anis == approx([n + 2 * c for n, c in zip(n_hand, c_hand)], tiny, strict_rtol=1e-4)  # SD1 weights (1, 2)
    assert thr == 4.0 and flags == [a > 4.0 for a in anis] and after == anis
    assert "SD15 (eps)" in report and "prompt 1" in report


def test_wrong_input_scaling_would_not_match(tiny):
    """Guard against the pitfall of docs/methods.md 4.8: feeding z * sigma instead of z changes the numbers."""
    z = _z(51)
    s = 13.1204
    ec = raw_outputs(tiny, z, 981, POS2[0][0][:1])
    ec_wrong = raw_outputs(tiny, z * s / math.sqrt(s**2 + 1), 981, POS2[0][0][:1])
    assert (ec - ec_wrong).abs().max() > 100 * model_tol(tiny)["atol"]


def test_one_batched_unet_call_per_sigma_and_other_patches_kept(mem, tiny):
    counter = UNetCalls()
    patched = counter.attach(tiny)  # "another pack's" wrapper: must stay active while the guard scores
    before = (len(tiny.model_options.get("transformer_options", {})), dict(tiny.wrappers))
    out = _guard(mem, patched, n_samples=3)
    assert len(counter.calls) == 2  # t=981 and t=41, nothing else
    for call, t in zip(counter.calls, (981, 41)):
        assert call["rows"] == 2 * 3 * 2  # (cond + uncond) x 3 samples x 2 prompts, in ONE call
        assert sorted(set(call["cond_or_uncond"])) == [0, 1]
        assert set(call["t"]) == {t}
    assert (len(tiny.model_options.get("transformer_options", {})), dict(tiny.wrappers)) == before  # input untouched
    assert out[1] and len(out[1]) == 2


def test_an_attention_patch_changes_the_scores(mem, tiny):
    """Other packs' attention patches are applied while scoring (the scores are those of the patched model)."""
    m = tiny.clone()
    m.set_model_attn2_output_patch(lambda h, extra: h * 0.0)  # remove the prompt's influence through attn2
    out = _guard(mem, m)
    noise = 10 * model_tol(tiny, strict_atol=1e-5)["atol"]  # float32 (or fp16 on a GPU run) rounding of N
    assert max(out[5]) < noise  # N: no difference between cond and uncond once cross-attention is silenced
    ref = _guard(mem, tiny)
    assert min(ref[5]) > 100 * noise


def test_batched_prompts_equal_single_prompts_and_samples_average(mem, tiny):
    both = _guard(mem, tiny, n_samples=2, seed=7)
    for i in range(2):
        one = _guard(mem, tiny, positive=[[POS2[0][0][i:i + 1], {}]], n_samples=2, seed=7)
        assert one[5][0] == approx(both[5][i], tiny)  # batch of 1 vs 2 prompts: rounding of batched kernels
        assert one[6][0] == approx(both[6][i], tiny)
    # n samples = the mean of the per-sample values: sample 0 alone is the n=1 run with the same seed
    from diffusion_sentinel.nodes.memorization import detection

    run = detection.detect(tiny, POS2, NEG, detection.DetectorSettings(seed=7, n_samples=2, width=64, height=64))
    assert run.detection.norm_samples.shape == (4,)
    assert run.detection.norm.tolist() == pytest.approx(run.detection.norm_samples.view(2, 2).mean(0).tolist(), rel=1e-6)
    n1 = detection.detect(tiny, POS2, NEG, detection.DetectorSettings(seed=7, n_samples=1, width=64, height=64))
    assert n1.detection.norm.tolist() == approx(run.detection.norm_samples[:2].tolist(), tiny)


def test_same_noise_for_every_prompt_and_seed_reproducible(mem, tiny):
    a = _guard(mem, tiny, seed=3)
    b = _guard(mem, tiny, seed=3)
    c = _guard(mem, tiny, seed=4)
    assert a[1] == b[1] and a[1] != c[1]


def test_v_prediction_follows_the_papers_sd2_formulas(mem, comfy):
    vm = tiny_v_model(seed=1)
    out = _guard(mem, vm, positive=[[POS2[0][0][:1], {}]], seed=51)
    z = _z(51)
    ab = sd_alpha_bar(981)
    vc = raw_outputs(vm, z, 981, POS2[0][0][:1]).double()
    vu = raw_outputs(vm, z, 981, NEG[0][0]).double()
    n_hand = math.sqrt(ab) * float((vc - vu).flatten().norm()) / (1 - ab)
    vc41 = raw_outputs(vm, z, 41, POS2[0][0][:1])
    vu41 = raw_outputs(vm, z, 41, NEG[0][0])
    c_hand = hand_pixel_cosine_mean(vu41, vc41 - vu41)[0]
    assert out[5][0] == approx(n_hand, vm, strict_rtol=1e-4)
    assert out[6][0] == approx(c_hand, vm, strict_rtol=1e-4, strict_atol=1e-5)
    assert out[2][0] == approx(float((vc - vu).flatten().norm()), vm, strict_rtol=1e-4)  # Wen on raw v
    assert out[1][0] == approx(n_hand + 0.1 * c_hand, vm, strict_rtol=1e-4)  # auto -> SD2 weights (1, 0.1)
    assert "(v)" in out[8] and "SD2 (1, 0.1)" in out[8]


def test_wen_over_several_ddim_steps(mem, tiny):
    """wen_steps=k: mean over the first k steps of a DDIM-50 run with CFG; step 1 reuses the t=981 call."""
    counter = UNetCalls()
    m = counter.attach(tiny)
    one = _guard(mem, m, positive=[[POS2[0][0][:1], {}]])
    counter.calls.clear()
    three = _guard(mem, m, positive=[[POS2[0][0][:1], {}]], wen_steps=3, cfg=7.5)
    assert len(counter.calls) == 4 and [c["t"][0] for c in counter.calls] == [981, 41, 961, 941]
    # by hand with the bare network: DDIM (eta 0) in VP form with CFG on eps
    z = _z(51)
    ctx, neg = POS2[0][0][:1], NEG[0][0]
    x, norms = z.double(), []
    ts = [981, 961, 941]
    for k, t in enumerate(ts):
        ec, eu = raw_outputs(tiny, x.float(), t, ctx).double(), raw_outputs(tiny, x.float(), t, neg).double()
        norms.append(float((ec - eu).flatten().norm()))
        if k + 1 < len(ts):
            e = eu + 7.5 * (ec - eu)
            a0, a1 = sd_alpha_bar(t), sd_alpha_bar(ts[k + 1])
            x0 = (x - math.sqrt(1 - a0) * e) / math.sqrt(a0)
            x = math.sqrt(a1) * x0 + math.sqrt(1 - a1) * e
    assert one[2][0] == approx(norms[0], tiny, strict_rtol=1e-4)
    assert three[2][0] == approx(sum(norms) / 3, tiny, strict_rtol=1e-3)
    assert three[1] == one[1]  # the anisotropy score does not change


def test_wen_alone_costs_one_call_per_step_and_matches_the_guard(mem, tiny):
    from diffusion_sentinel.nodes.memorization import detection

    counter = UNetCalls()
    m = counter.attach(tiny)
    pos = [[POS2[0][0][:1], {}]]
    guard = _guard(mem, tiny, positive=pos, wen_steps=3)
    res = detection.detect_wen(m, pos, NEG, detection.DetectorSettings(seed=51, width=64, height=64, wen_steps=3))
    assert [c["t"][0] for c in counter.calls] == [981, 961, 941] and all(c["rows"] == 2 for c in counter.calls)
    assert res.wen.tolist() == approx(guard[2], tiny)
    assert math.isnan(float(res.cosine[0])) and res.unet_calls == 3


@pytest.mark.parametrize("negative", [None, []])
def test_missing_negative_is_a_clear_error(mem, tiny, negative):
    with pytest.raises(ValueError, match="negative CONDITIONING is missing"):
        _guard(mem, tiny, negative=negative)


def test_negative_batch_must_match(mem, tiny):
    with pytest.raises(ValueError, match="batch of 3"):
        _guard(mem, tiny, negative=conditioning(2, batch=3))


def test_flow_matching_model_is_a_clear_error(mem, tiny):
    with pytest.raises(ValueError, match="flow matching.*timesteps 981 and 41"):
        _guard(mem, flow_patched(tiny))


def test_lcm_schedule_is_a_clear_error_and_a_v_patch_is_accepted(mem, tiny):
    from _comfy import run_node

    (lcm,) = run_node("ModelSamplingDiscrete", model=tiny, sampling="lcm", zsnr=False)
    with pytest.raises(ValueError, match="distilled 50-step schedule"):
        _guard(mem, lcm)
    (v,) = run_node("ModelSamplingDiscrete", model=tiny, sampling="v_prediction", zsnr=False)
    assert "(v)" in _guard(mem, v)[8]


def test_guidance_distilled_model_is_a_clear_error(mem, comfy):
    with pytest.raises(ValueError, match="guidance-distilled.*no separate unconditional"):
        _guard(mem, guidance_distilled())


def test_identical_positive_and_negative_warns(mem, tiny):
    out = _guard(mem, tiny, positive=NEG, negative=NEG)
    assert out[5] == [0.0] and "identical" in out[8]


def test_tiny_model_fixture_is_not_shared_state(comfy):
    """The guidance-distilled helper builds its own model: the session's tiny model keeps its config."""
    m = tiny_model(0)
    assert not m.model.model_config.unet_config.get("guidance_embed")
