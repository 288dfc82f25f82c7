"""The forward-AD-safe attention (nodes/memorization/math_attention.py) against torch's SDPA, in every layout
ComfyUI passes, and its forward-mode tangent against torch.func.jvp of SDPA's math kernel (pure)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.autograd.forward_ad as fwad
import torch.nn.functional as F
from diffusion_sentinel.nodes.memorization.math_attention import attention


def _qkv(b=2, h=3, nq=5, nk=7, d=4, hk=None, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hk = hk or h
    return (torch.randn(b, h, nq, d, generator=g, dtype=dtype), torch.randn(b, hk, nk, d, generator=g, dtype=dtype),
            torch.randn(b, hk, nk, d, generator=g, dtype=dtype))


def _flat(t):  # [B, H, N, D] -> [B, N, H*D] (ComfyUI's default layout)
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)


@pytest.mark.parametrize("skip_reshape", [False, True])
@pytest.mark.parametrize("skip_output_reshape", [False, True])
def test_equals_sdpa_in_every_layout(skip_reshape, skip_output_reshape):
    q, k, v = _qkv()
    ref = F.scaled_dot_product_attention(q, k, v)  # [B, H, Nq, D]
    args = (q, k, v) if skip_reshape else (_flat(q), _flat(k), _flat(v))
    out = attention(*args, 3, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    want = ref if skip_output_reshape else _flat(ref)
    assert out.shape == want.shape
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


def test_masks_scale_gqa_and_chunking_equal_sdpa():
    q, k, v = _qkv(b=2, h=4, hk=2)
    g = torch.Generator().manual_seed(1)
    add = torch.randn(5, 7, generator=g, dtype=torch.float64)  # 2-D additive mask, broadcast over batch and heads
    keep = torch.rand(2, 1, 1, 7, generator=g) > 0.3  # key padding per batch item
    keep[..., 0] = True
    kr, vr = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    per_item = add[None].expand(2, 5, 7)  # 3-D masks are per batch item in ComfyUI (attention_pytorch unsqueezes dim 1)
    for mask, torch_mask in ((add, add), (keep, keep), (per_item, per_item[:, None])):
        ref = F.scaled_dot_product_attention(q, kr, vr, attn_mask=torch_mask, scale=0.3)
        out = attention(q, k, v, 4, mask=mask, skip_reshape=True, skip_output_reshape=True, scale=0.3, enable_gqa=True,
                        max_logits=2 * 5 * 7)  # 2 (batch, head) pairs per chunk: 4 chunks
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_low_precision_inputs_keep_their_dtype_and_softmax_in_float32():
    q, k, v = (t.to(torch.float16) for t in _qkv(dtype=torch.float32))
    out = attention(_flat(q), _flat(k), _flat(v), 3)
    assert out.dtype == torch.float16
    ref = _flat(F.scaled_dot_product_attention(q.float(), k.float(), v.float()))
    torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=2e-3)


def test_forward_mode_tangent_equals_the_jvp_of_sdpa_math():
    q, k, v = _qkv(seed=3)
    tq, tk, tv = _qkv(seed=4)
    _, ref = torch.func.jvp(lambda a, b_, c: torch.ops.aten._scaled_dot_product_attention_math(a, b_, c)[0],
                            (q, k, v), (tq, tk, tv))
    with fwad.dual_level():
        out = attention(fwad.make_dual(q, tq), fwad.make_dual(k, tk), fwad.make_dual(v, tv), 3, skip_reshape=True,
                        skip_output_reshape=True)
        tangent = fwad.unpack_dual(out).tangent
    torch.testing.assert_close(tangent, ref, rtol=1e-10, atol=1e-10)
    # and by central differences in float64
    h = 1e-6
    fd = (attention(q + h * tq, k + h * tk, v + h * tv, 3, skip_reshape=True, skip_output_reshape=True)
          - attention(q - h * tq, k - h * tk, v - h * tv, 3, skip_reshape=True, skip_output_reshape=True)) / (2 * h)
    torch.testing.assert_close(tangent, fd, rtol=1e-6, atol=1e-8)


def test_bad_shapes_are_clear_errors():
    q, k, v = _qkv(h=4, hk=3)
    with pytest.raises(ValueError, match="3 key/value heads for 4 query heads"):
        attention(q, k, v, 4, skip_reshape=True)
    with pytest.raises(ValueError, match="not a multiple of 5 heads"):
        attention(torch.zeros(1, 2, 12), torch.zeros(1, 2, 12), torch.zeros(1, 2, 12), 5)
    assert math.isfinite(float(attention(torch.zeros(1, 2, 12), torch.zeros(1, 2, 12), torch.ones(1, 2, 12), 3).sum()))
