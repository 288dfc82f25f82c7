"""DiffSim's capture in a real ComfyUI with tiny real models: block mapping, early exit, the CFG halves,
the feature cache, seeds and options, patch wrapping, split cond/uncond calls, SDXL, clear errors."""

from __future__ import annotations

import math

import _diffsim as D
import pytest
import torch
from _comfy import tiny_vae
from diffusion_sentinel.nodes.diffsim.blocks import BlockError
from diffusion_sentinel.nodes.diffsim.capture import transformer_block, unet_layout
from diffusion_sentinel.nodes.diffsim.feature_cache import FeatureCache
from diffusion_sentinel.nodes.diffsim.images import content_hash
from diffusion_sentinel.nodes.diffsim.pipeline import DiffSimExtractor, Settings, score_matrix, score_pairs

RES = 64  # 8x8 latents


@pytest.fixture(scope="module")
def parts(comfy):
    return D.unet_model(seed=0), D.kl_vae(seed=0), D.tiny_clip(seed=0)


def make(parts, cache=None, early_exit=True, batch_size=4, model=None, vae=None, clip=None, **settings):
    m, v, c = parts
    s = Settings(**{"resolution": RES, **settings})
    with torch.inference_mode():
        return DiffSimExtractor(model or m, vae or v, clip or c, s, cache=cache, batch_size=batch_size,
                                early_exit=early_exit)


def feats(ex, imgs):
    with torch.inference_mode():
        return ex.features(list(imgs))


# ----------------------------------------------------------------------------- block mapping
def test_block_mapping_on_real_sd15_and_sdxl_configs(comfy):
    sd15 = unet_layout(D.unet_model("sd15", device="meta", **D.SD15_FULL))
    assert {p: sd15.resolve(p).key for p in sd15.available_presets()} == {
        "U_0": ("output", 5, 0), "U_1": ("output", 8, 0), "U_2": ("output", 11, 0), "D_0": ("input", 2, 0),
        "D_1": ("input", 5, 0), "D_2": ("input", 8, 0), "mid": ("middle", 0, 0)}
    u0 = sd15.resolve("U_0")
    assert (u0.heads, u0.dim_head, u0.level) == (8, 160, 2)  # 1280 channels, 16x16 tokens at 512 px
    assert [s.width for s in sd15.cross_attention_sites()] == D.SD15_LAYER_WIDTHS
    sdxl = unet_layout(D.unet_model("sdxl", device="meta", **D.SDXL_FULL))
    assert {p: sdxl.resolve(p).key for p in sdxl.available_presets()} == {
        "U_0": ("output", 2, 9), "U_1": ("output", 5, 1), "D_0": ("input", 5, 1), "D_1": ("input", 8, 9),
        "mid": ("middle", 0, 9)}
    assert (sdxl.resolve("U_0").heads, sdxl.resolve("U_0").dim_head) == (20, 64)
    assert len(sdxl.cross_attention_sites()) == 70


def test_sd15_shaped_tiny_model_captures_at_output_5(comfy, parts):
    m = D.unet_model("sd15", **D.SD15_SHAPED)
    ex = make(parts, model=m, resolution=128)
    assert ex.site.key == ("output", 5, 0)
    f = feats(ex, D.images(2, 96))
    # 128 px -> 16x16 latent -> U_0 works at 1/4: 4x4 = 16 tokens; 64 channels / 8 heads
    assert f[0].q.shape == f[0].k.shape == (2, 8, 16, 8)


def test_non_unet_and_missing_blocks_get_clear_errors(comfy, parts):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    dit = MMDiT(input_size=8, depth=1, device="meta", operations=comfy.ops.disable_weight_init)
    m = parts[0].clone()
    m.add_object_patch("diffusion_model", dit)
    with pytest.raises(BlockError, match=r"needs a U-Net with self-attention at block U_0.*this model is a MMDiT"):
        make(parts, model=m)
    no_up_attn = D.unet_model(transformer_depth_output=[0, 0, 1, 1])
    with pytest.raises(BlockError, match=r"at block U_1; in this SD15 U-Net its up path has 1 level.*U_0, D_0, D_1"):
        make(parts, model=no_up_attn, block="U_1")
    with pytest.raises(BlockError, match="no attention"):
        make(parts, block="output 9 0")
    with pytest.raises(ValueError, match="DiffSim-C needs an IP-Adapter Plus"):
        make(parts, mode="C")


# ----------------------------------------------------------------------------- early exit and the CFG halves
def test_early_exit_captures_the_same_qkv_as_a_full_forward(comfy, parts):
    imgs = D.images(3)
    early, full = make(parts), make(parts, early_exit=False)
    fe, ff = feats(early, imgs), feats(full, imgs)
    import _device

    for a, b in zip(fe, ff):  # bit for bit on the CPU; on CUDA kernels chosen per call may differ in the last bits
        if _device.ON_CUDA:
            D.assert_features_close(a, b, parts[0])
        else:
            assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert fe[0].q.shape == (2, 8, 16, 8)  # [uncond, cond] x heads x 4x4 tokens x dim_head


def test_capture_equals_module_hooks_on_an_unpatched_forward(comfy, parts):
    """Independent check: forward hooks on attn1.to_q/to_k/to_v during a plain (unpatched) U-Net evaluation
    of the same noisy latents; ComfyUI batches [uncond, cond], so the first half is the empty prompt."""
    from diffusion_sentinel.nodes.diffsim.capture import run_probe

    model = parts[0]
    ex = make(parts)
    imgs = D.images(2, seed=5)
    ours = feats(ex, imgs)
    hashes = [content_hash(i) for i in imgs]
    from diffusion_sentinel.nodes.diffsim.images import prepare

    pixels = torch.stack([prepare(i, RES) for i in imgs])
    attn1 = transformer_block(model, ex.site).attn1
    got = {}
    hooks = [getattr(attn1, n).register_forward_hook(lambda mod, inp, out, n=n: got.setdefault(n, out.detach().clone()))
             for n in ("to_q", "to_k", "to_v")]
    try:
        with torch.inference_mode():
            latent = ex._encode(pixels, hashes)
            noise = ex._noise(tuple(latent.shape), hashes)
            run_probe(model, ex.positive, ex.negative, latent, noise, ex.sigma, True, True)
    finally:
        for h in hooks:
            h.remove()
    b = len(imgs)
    t = D.feature_tol(model)
    for j, name in enumerate(("to_q", "to_k", "to_v")):
        full = got[name].float().cpu()  # [2B, N, 64]: rows 0..B-1 uncond, B..2B-1 cond (on the model's device)
        for i in range(b):
            exp = torch.stack([full[i], full[b + i]]).reshape(2, -1, 8, 8).transpose(1, 2)
            torch.testing.assert_close(ours[i][j].float(), exp, rtol=t["rtol"], atol=t["atol"], msg=name)


def test_early_exit_skips_everything_after_the_block(comfy, parts):
    dm = parts[0].model.diffusion_model
    calls = []
    h1 = dm.out.register_forward_hook(lambda *a: calls.append("out"))
    h2 = dm.output_blocks[2][0].register_forward_hook(lambda *a: calls.append("output 2"))
    try:
        feats(make(parts), D.images(2, seed=9))
        assert calls == []  # U_0 is output 1 in the tiny U-Net
        feats(make(parts, early_exit=False), D.images(2, seed=9))
        assert calls == ["output 2", "out"]
    finally:
        h1.remove()
        h2.remove()


def test_uncond_only_is_the_first_half_of_the_pair(comfy, parts):
    imgs = D.images(2, seed=2)
    pair = feats(make(parts), imgs)
    unc = feats(make(parts, cfg_pair=False), imgs)
    assert unc[0].q.shape[0] == 1
    t = D.feature_tol(parts[0])
    for p, u in zip(pair, unc):
        torch.testing.assert_close(p.q[:1].float(), u.q.float(), rtol=t["rtol"], atol=t["atol"])
        torch.testing.assert_close(p.v[:1].float(), u.v.float(), rtol=t["rtol"], atol=t["atol"])
        # the prompt changes the cond half, by far more than the numerical noise
        assert float((p.q[1:].float() - u.q.float()).abs().max()) > 20 * (t["atol"] + t["rtol"] * float(u.q.abs().max()))


def test_split_cond_and_uncond_calls_are_both_captured(comfy, parts, monkeypatch):
    """Under memory pressure ComfyUI runs cond and uncond in separate U-Net calls; both must be captured."""
    imgs = D.images(2, seed=4)
    batched = make(parts)
    ref = feats(batched, imgs)
    assert batched.unet_calls == 1
    import comfy.model_management as mm
    import comfy.samplers

    class LowMemory:  # what calc_cond_batch sees: no room to batch cond with uncond
        def __getattr__(self, name):
            return getattr(mm, name)

        def get_free_memory(self, *a, **k):
            return 1

    monkeypatch.setattr(comfy.samplers, "model_management", LowMemory())
    split = make(parts)
    got = feats(split, imgs)
    assert split.unet_calls == 2
    for a, b in zip(ref, got):
        D.assert_features_close(a, b, parts[0])


# ----------------------------------------------------------------------------- scores, cache, options
def test_cache_one_reference_against_n_candidates(comfy, parts):
    cache = FeatureCache()
    ref, cands = D.images(1, seed=11), D.images(5, seed=12)
    ex = make(parts, cache=cache, batch_size=3)
    with torch.inference_mode():
        s1 = score_pairs(ex, [ref[0]] * 5, list(cands))
    assert ex.passes == 6 and ex.unet_calls == 2  # N + 1 image passes, batched by 3 (not 2N = 10)
    again = make(parts, cache=cache)
    with torch.inference_mode():
        s2 = score_pairs(again, [ref[0]] * 5, list(cands))
    assert s2 == s1 and again.passes == 0 and again.hits == 6  # identical scores from the cache
    more = make(parts, cache=cache)
    with torch.inference_mode():
        score_pairs(more, [ref[0]] * 2, list(D.images(2, seed=13)))
    assert more.passes == 2 and more.hits == 1  # the reference is cached
    other_seed = make(parts, cache=cache, seed=1)
    feats(other_seed, ref)
    assert other_seed.passes == 1  # settings are part of the key
    lora = parts[0].clone()
    key = next(k for k in lora.model.state_dict() if k.endswith("attn1.to_q.weight"))
    lora.add_patches({key: (torch.zeros_like(lora.model.state_dict()[key]),)}, 1.0)
    patched = make(parts, cache=cache, model=lora)
    feats(patched, ref)
    assert patched.passes == 1  # a weight-patched model is another model


def test_full_forward_per_pair_gives_the_same_scores(comfy, parts):
    """The benchmark's baseline (no early exit, no cache, 2 passes per pair) computes the same score."""
    ref, cands = D.images(1, seed=21), D.images(3, seed=22)
    fast = make(parts, cache=FeatureCache())
    with torch.inference_mode():
        ours = score_pairs(fast, [ref[0]] * 3, list(cands))
        slow = []
        for c in cands:
            base = make(parts, early_exit=False, batch_size=1)
            slow += score_pairs(base, [ref[0]], [c])
    assert ours == pytest.approx(slow, abs=D.score_tol(parts[0]))


def test_identity_symmetry_and_order_independence(comfy, parts):
    a, b, c = D.images(3, seed=31)
    ex = make(parts)
    with torch.inference_mode():
        m = score_matrix(ex, [a, b, c])
        alone = make(parts)
        s_ba = score_pairs(alone, [b], [a])[0]
    assert torch.allclose(m.diagonal(), torch.ones(3, dtype=torch.float64))
    assert float(m[0, 1]) == pytest.approx(s_ba, abs=D.score_tol(parts[0]))  # b's features ignore its batch neighbours
    with torch.inference_mode():
        assert score_pairs(make(parts), [a], [a.clone()])[0] == pytest.approx(1.0, abs=1e-9)
    assert all(-1 <= float(v) <= 1 for v in m.flatten())


def test_noise_latent_and_resize_options_change_the_score(comfy, parts):
    a, b = D.images(2, seed=41, size=80)[:, :, :56]  # 80 x 56: crop and square resize differ

    def score(**kw):
        with torch.inference_mode():
            ex = make(parts, **kw)
            return score_pairs(ex, [a], [b])[0], ex

    base, ex = score()
    assert ex.details()["latent"] == "posterior sample"
    import _device

    noise = 2 * D.score_tol(parts[0]) if _device.ON_CUDA else 1e-7  # each option moves it by more than the noise
    for kw in (dict(shared_noise=True), dict(posterior_sample=False), dict(resize="crop (keep aspect)"),
               dict(seed=7), dict(t=500), dict(block="U_1"), dict(prompt="a photo")):
        assert abs(score(**kw)[0] - base) > noise, kw
    _, taesd = score(vae=tiny_vae())
    assert taesd.details()["latent"].startswith("posterior mean (this VAE has no Gaussian posterior")


def test_sigma_from_the_models_schedule(comfy, parts):
    ex = make(parts)
    assert ex.noise_t == 101 and ex.sigma == pytest.approx(0.3462, abs=1e-4)
    ex = make(parts, t=750, t_convention="leading (1000 - t)")
    ms = parts[0].get_model_object("model_sampling")
    assert ex.noise_t == 250 and ex.sigma == pytest.approx(float(ms.sigmas[250]), abs=1e-6)


def test_an_existing_attn1_replace_is_wrapped_not_overwritten(comfy, parts):
    from comfy.ldm.modules.attention import optimized_attention

    calls = []

    def other_pack(q, k, v, eo):
        calls.append(eo["block"])
        return optimized_attention(q, k, v, eo["n_heads"])

    other = parts[0].clone()
    other.set_model_attn1_replace(other_pack, "output", 1)  # U_0 of the tiny U-Net, 2-tuple key
    before = dict(other.model_options["transformer_options"]["patches_replace"]["attn1"])
    imgs = D.images(2, seed=51)
    full = make(parts, model=other, early_exit=False)
    f_other = feats(full, imgs)
    assert calls, "the other pack's patch must still run"
    assert other.model_options["transformer_options"]["patches_replace"]["attn1"] == before  # input untouched
    plain = feats(make(parts, early_exit=False), imgs)
    for a, b in zip(f_other, plain):  # the wrapped patch computes plain attention: same features
        D.assert_features_close(a, b, parts[0])


def test_sdxl_shaped_model(comfy, parts):
    m = D.unet_model("sdxl", **D.SDXL_SHAPED)
    ex = make(parts, model=m, clip=D.FakeSDXLClip(), resolution=128)
    assert ex.family == "SDXL" and ex.convention == "leading" and ex.noise_t == 100
    assert ex.site.key == ("output", 2, 2)  # last attention, last transformer of the deepest up level
    f = feats(ex, D.images(2, seed=61))
    assert f[0].q.shape == (2, 1, 16, 64)  # SDXL heads = channels / 64 (64 here); 128 px -> 16x16 latent -> 4x4
    with torch.inference_mode():
        s = score_pairs(ex, [D.images(1, seed=61)[0]], [D.images(1, seed=62)[0]])[0]
    assert math.isfinite(s) and -1 <= s <= 1


def test_latents_and_prompts_are_reused_across_settings(comfy, parts, monkeypatch):
    """Changing t, block or prompt recomputes the U-Net pass but not the VAE encode (cached latents)."""
    from diffusion_sentinel.nodes.diffsim import pipeline

    vae = D.kl_vae(seed=3)
    calls = {"vae": 0}
    real = vae.encode

    def counting(x):
        calls["vae"] += 1
        return real(x)

    monkeypatch.setattr(vae, "encode", counting)
    img = D.images(1, seed=71)
    cache = FeatureCache()
    a = make(parts, vae=vae, cache=cache)
    fa = feats(a, img)
    b = make(parts, vae=vae, cache=cache, t=600, block="U_1")
    feats(b, img)
    assert calls["vae"] == 1 and b.passes == 1  # new features, same latent
    assert b.details()["latent"] == "posterior sample"
    c = make(parts, vae=vae, cache=cache, posterior_sample=False)
    feats(c, img)
    assert calls["vae"] == 2  # the mean is another latent
    uncached = make(parts, vae=vae)  # cache off: everything recomputed, same features
    assert torch.equal(feats(uncached, img)[0].q, fa[0].q) and calls["vae"] == 3
    assert len(pipeline.TEXT_CACHE) >= 2


def test_cond_and_uncond_in_threads_as_newer_comfyui_runs_them(comfy, parts):
    """Newer ComfyUI evaluates cond and uncond on several GPUs in worker threads (_calc_cond_batch_multigpu), so
    the capture patch runs concurrently. Emulated here with a CALC_COND_BATCH wrapper that runs each cond in its own
    thread, both released together by a barrier: the same features as the ordinary batched call, two U-Net calls."""
    import threading

    import comfy.patcher_extension as pe

    imgs = D.images(2, seed=4)
    ref = feats(make(parts), imgs)
    threads_seen = set()

    def in_threads(executor, model, conds, x_in, timestep, model_options):
        barrier = threading.Barrier(len(conds))
        outs, errors = [None] * len(conds), []

        def one(i):
            try:
                only = [c if j == i else None for j, c in enumerate(conds)]
                barrier.wait()
                threads_seen.add(threading.get_ident())
                outs[i] = executor(model, only, x_in, timestep, model_options)[i]
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(e)

        workers = [threading.Thread(target=one, args=(i,)) for i in range(len(conds))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if errors:
            raise errors[0]
        return outs

    ex = make(parts)
    ex.patched.add_wrapper_with_key(pe.WrappersMP.CALC_COND_BATCH, "sentinel-test-threads", in_threads)
    got = feats(ex, imgs)
    assert len(threads_seen) == 2 and ex.unet_calls == 2
    for a, b in zip(ref, got):
        D.assert_features_close(a, b, parts[0])
