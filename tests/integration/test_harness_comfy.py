"""The harness's model builders on the pinned ComfyUI (tests/_comfy.py): the tiny UNet in another dtype goes
through ComfyUI's own dtype rules (the path every GPU run takes), weights do not depend on the dtype or device they
are built for, and the direct-call helpers give the bare UNet's output."""

from __future__ import annotations

import _comfy
import _device
import pytest
import torch


def test_weights_are_drawn_on_the_cpu_and_only_cast(comfy):
    a = _comfy.tiny_model(seed=3, dtype=torch.float32)
    b = _comfy.tiny_model(seed=3, dtype=torch.float16)
    c = _comfy.tiny_model(seed=4, dtype=torch.float32)
    sa, sb, sc = (m.model.diffusion_model.state_dict() for m in (a, b, c))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sb[k].dtype == torch.float16 and torch.equal(sb[k].cpu(), sa[k].cpu().half()), k
    assert any(not torch.equal(sa[k].cpu(), sc[k].cpu()) for k in sa if sa[k].is_floating_point())
    assert b.model.get_dtype() == torch.float16 and a.model.get_dtype() == torch.float32
    assert a.load_device.type == b.load_device.type == _device.device().type


def test_half_precision_model_samples_close_to_float32(comfy):
    pos, neg = _comfy.conditioning(1), _comfy.conditioning(2)

    def sample(m):
        return _comfy.run_node("KSampler", model=m, seed=7, steps=4, cfg=4.0, sampler_name="euler",
                               scheduler="normal", positive=pos, negative=neg,
                               latent_image=_comfy.empty_latent(1))[0]["samples"]

    full = sample(_comfy.tiny_model(seed=0, dtype=torch.float32))
    half = sample(_comfy.tiny_model(seed=0, dtype=torch.float16))
    assert half.dtype == torch.float32 and torch.isfinite(half).all()  # latents stay float32, as in ComfyUI
    err = float((half - full).abs().max() / full.abs().max())
    assert 0 < err < 2e-2, err  # fp16 weights change the result a little, not a lot
    with pytest.raises(AssertionError):
        _device.assert_close(half, full, "float32")


def test_unet_call_is_the_bare_unet(comfy, tiny):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    ctx = _comfy.conditioning(5)[0][0]
    out = _comfy.unet_call(tiny, x, 981, ctx.expand(2, -1, -1))
    assert out.device.type == "cpu" and out.dtype == torch.float32 and out.shape == x.shape
    xd, cd = _comfy.on_model_device(tiny, x, ctx.expand(2, -1, -1))
    assert xd.device.type == _device.device().type and xd.dtype == tiny.model.get_dtype()
    with torch.inference_mode():
        ref = tiny.model.diffusion_model(xd, torch.full((2,), 981.0, device=xd.device), context=cd,
                                         transformer_options={}).float().cpu()
    assert torch.equal(out, ref)
    assert not torch.allclose(out, _comfy.unet_call(tiny, x, 41, ctx.expand(2, -1, -1)))  # t matters
