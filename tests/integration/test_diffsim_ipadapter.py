"""DiffSim-C in a real ComfyUI: a generated IP-Adapter Plus file (real key layout) on a tiny U-Net, a tiny CLIP
vision model built with comfy.clip_vision, image queries and IP keys/values at the target cross-attention."""

from __future__ import annotations

import _diffsim as D
import pytest
import torch
from diffusion_sentinel.nodes.diffsim.aas import split_heads
from diffusion_sentinel.nodes.diffsim.capture import unet_layout
from diffusion_sentinel.nodes.diffsim.ip_adapter import IPAdapterError, IPAdapterPlus
from diffusion_sentinel.nodes.diffsim.pipeline import DiffSimExtractor, Settings, score_pairs

RES = 64


@pytest.fixture(scope="module")
def kit(comfy, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diffsim_c")
    model, vae, clip = D.unet_model(seed=0), D.kl_vae(seed=0), D.tiny_clip(seed=0)
    cv = D.clip_vision(tmp, hidden=32)
    ip = IPAdapterPlus.load(D.tiny_ip_adapter_file(tmp / "ip-adapter-plus_tiny.safetensors", model, embedding_dim=32))
    return dict(model=model, vae=vae, clip=clip, cv=cv, ip=ip, tmp=tmp)


def make(kit, model=None, early_exit=True, ip=None, cv=None, **settings):
    s = Settings(**{"mode": "C", "resolution": RES, **settings})
    with torch.inference_mode():
        return DiffSimExtractor(model or kit["model"], kit["vae"], kit["clip"], s, ip_adapter=ip or kit["ip"],
                                clip_vision=cv or kit["cv"], cache=None, early_exit=early_exit)


def feats(ex, imgs):
    with torch.inference_mode():
        return ex.features(list(imgs))


def test_queries_and_ip_keys_values_at_the_target(kit):
    imgs = D.images(2, seed=1)
    ex = make(kit)
    assert ex.site.key == ("output", 1, 0) and ex.halves == [0]  # the conditional half only
    f = feats(ex, imgs)
    assert f[0].q.shape == (1, 8, 16, 8) and f[0].k.shape == f[0].v.shape == (1, 8, 4, 8)  # 4 IP tokens
    # IP keys/values independently: CLIP vision penultimate states -> Resampler -> to_k_ip / to_v_ip of U_0
    k_index = 2 * [s.key for s in unet_layout(kit["model"]).cross_attention_sites()].index(ex.site.key) + 1
    w_k, w_v = kit["ip"].kv(k_index)
    t = D.feature_tol(kit["model"])  # the node computes k/v on the model's device in its dtype
    with torch.inference_mode():
        for i, im in enumerate(imgs):
            hs = kit["cv"].encode_image(im[None], crop=True)["penultimate_hidden_states"]
            tok = kit["ip"].project(hs.float()).float().cpu()
            for got, w in ((f[i].k, w_k), (f[i].v, w_v)):
                torch.testing.assert_close(got.float(), split_heads(tok @ w.float().cpu().T, 8), rtol=t["rtol"],
                                           atol=t["atol"])
    full = feats(make(kit, early_exit=False), imgs)
    for a, b in zip(f, full):  # the early exit changes nothing before the block (bit for bit on the CPU)
        D.assert_features_close(a, b, kit["model"])


def test_scores_identity_symmetry_and_ip_weight(kit):
    a, b = D.images(2, seed=3)
    with torch.inference_mode():
        ex = make(kit)
        s_ab = score_pairs(ex, [a], [b])[0]
        s_ba = score_pairs(make(kit), [b], [a])[0]
        assert score_pairs(make(kit), [a], [a.clone()])[0] == pytest.approx(1.0, abs=1e-9)
    assert s_ab == pytest.approx(s_ba, abs=D.score_tol(kit["model"])) and -1 <= s_ab < 1
    # the IP-Adapter acts in every cross-attention layer before the target, so its weight changes the queries
    q0 = feats(make(kit, ip_weight=0.0), [a])[0].q
    q5 = feats(make(kit, ip_weight=0.5), [a])[0].q
    t = D.feature_tol(kit["model"])
    assert float((q0.float() - q5.float()).abs().max()) > 20 * (t["atol"] + t["rtol"] * float(q0.abs().max()))


def test_an_existing_attn2_patch_is_wrapped(kit):
    from comfy.ldm.modules.attention import optimized_attention

    calls = []

    def other_pack(q, k, v, eo):  # e.g. another IP-Adapter pack: here plain attention, counted
        calls.append(eo["block"])
        return optimized_attention(q, k, v, eo["n_heads"])

    other = kit["model"].clone()
    for s in unet_layout(other).cross_attention_sites():
        other.set_model_attn2_replace(other_pack, s.name, s.number)
    imgs = D.images(2, seed=5)
    mine = feats(make(kit, model=other, early_exit=False), imgs)
    assert len(calls) >= 5 and ("output", 1) in calls
    for name, table in other.model_options["transformer_options"]["patches_replace"].items():
        assert all(p is other_pack for p in table.values()), name  # the input MODEL keeps its own patches
    plain = feats(make(kit, early_exit=False), imgs)
    for a, b in zip(mine, plain):
        D.assert_features_close(a, b, kit["model"])


def test_mismatches_are_explained(kit):
    other_layout = D.unet_model("sd15", **D.SD15_SHAPED)
    with pytest.raises(IPAdapterError, match="does not fit this SD15 U-Net"):
        make(kit, model=other_layout)
    big_cv = D.clip_vision(kit["tmp"], hidden=64)
    ex = make(kit, cv=big_cv)
    with pytest.raises(IPAdapterError, match="features of width 32"):
        feats(ex, D.images(1))
    with pytest.raises(ValueError, match="needs an IP-Adapter Plus"):
        Settings(mode="C", resolution=RES) and DiffSimExtractor(kit["model"], kit["vae"], kit["clip"],
                                                                Settings(mode="C", resolution=RES), cache=None)


def test_sdxl_shaped_model_with_an_sdxl_layout_file(kit):
    """SDXL layout: depth-2/3 transformers, k = 2i + 1 over every transformer block (down, up, mid)."""
    m = D.unet_model("sdxl", **D.SDXL_SHAPED)
    sites = unet_layout(m).cross_attention_sites()
    assert len(sites) == 4 + 6 + 9 + 6 + 3  # input 4,5 (x2), input 7,8 (x3), output 0-2 (x3), 3-5 (x2), mid (x3)
    ip = IPAdapterPlus.load(D.tiny_ip_adapter_file(kit["tmp"] / "ip-adapter-plus_sdxl_tiny.safetensors", m,
                                                   embedding_dim=32))
    s = Settings(mode="C", resolution=128)
    with torch.inference_mode():
        ex = DiffSimExtractor(m, kit["vae"], D.FakeSDXLClip(), s, ip_adapter=ip, clip_vision=kit["cv"], cache=None)
        f = ex.features(list(D.images(2, seed=7)))
        score = score_pairs(ex, [D.images(1, seed=7)[0]], [D.images(1, seed=8)[0]])[0]
    assert ex.site.key == ("output", 2, 2) and f[0].q.shape == (1, 1, 16, 64) and f[0].k.shape == (1, 1, 4, 64)
    assert -1 <= score <= 1
    with pytest.raises(IPAdapterError, match="does not fit"):
        make(kit, model=m)  # the SD1.5-layout tiny file on the SDXL-shaped U-Net
