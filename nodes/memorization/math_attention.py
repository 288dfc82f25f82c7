"""Scaled dot-product attention written with matmul and softmax only (pure torch), for forward-mode AD.

Forward-mode AD (``torch.autograd.forward_ad``, used by the volume growth rate's JVPs) has no rule for the fused
attention kernels: PyTorch's flash and memory-efficient SDPA kernels raise ``NotImplementedError: Trying to use
forward AD with _scaled_dot_product_efficient_attention``, and xformers, sage or flash-attn have none either.
Restricting SDPA to its math kernel from outside does not hold inside ComfyUI, whose own SDPA entry point sets its
kernel priority on every call. This function is the same attention built from differentiable primitives, so
forward AD (and double precision) work through it whatever the user's attention backend is.

It follows the calling convention of ComfyUI's attention functions (``comfy/ldm/modules/attention.py``):
``attention(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False, scale=None, enable_gqa=False)``
with q, k, v as ``[B, N, heads * dim_head]`` (or ``[B, heads, N, dim_head]`` with ``skip_reshape``), the output as
``[B, N, heads * dim_head]`` (or ``[B, heads, N, dim_head]`` with ``skip_output_reshape``), a mask broadcast like
torch's ``attn_mask`` (boolean: True takes part; floating: added to the logits). The softmax is computed in at least
float32, in chunks of batch x heads that keep the logits under ``max_logits`` elements.
"""

from __future__ import annotations

import math

import torch

MAX_LOGITS = 2**26  # elements of one chunk of attention logits (256 MiB in float32, 512 MiB in float64)


def _heads_first(t: torch.Tensor, heads: int, dim_head: int) -> torch.Tensor:
    """[B, N, heads * dim_head] -> [B, heads, N, dim_head]."""
    b, n, _ = t.shape
    return t.reshape(b, n, heads, dim_head).transpose(1, 2)


def _mask4(mask: torch.Tensor) -> torch.Tensor:
    """A mask of 2, 3 or 4 dims as [B or 1, heads or 1, Nq or 1, Nk] (torch attn_mask broadcasting)."""
    if mask.ndim == 2:
        return mask[None, None]
    if mask.ndim == 3:
        return mask[:, None]
    if mask.ndim == 4:
        return mask
    raise ValueError(f"attention mask must have 2 to 4 dims, got shape {tuple(mask.shape)}")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None,
              skip_reshape: bool = False, skip_output_reshape: bool = False, scale: float | None = None,
              enable_gqa: bool = False, max_logits: int = MAX_LOGITS, **_ignored) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v per head; see the module docstring for the layouts."""
    if skip_reshape:
        b, h, _, dim_head = q.shape
    else:
        b, _, inner = q.shape
        if inner % heads:
            raise ValueError(f"query width {inner} is not a multiple of {heads} heads")
        h, dim_head = heads, inner // heads
        q = _heads_first(q, h, dim_head)
        k = _heads_first(k, k.shape[-1] // dim_head, dim_head)
        v = _heads_first(v, v.shape[-1] // dim_head, dim_head)
    if k.shape[1] != h:
        if not enable_gqa or h % k.shape[1]:
            raise ValueError(f"{k.shape[1]} key/value heads for {h} query heads")
        k = k.repeat_interleave(h // k.shape[1], dim=1)
        v = v.repeat_interleave(h // v.shape[1], dim=1)
    out_dtype = q.dtype
    acc = torch.promote_types(q.dtype, torch.float32)
    scale = dim_head ** -0.5 if scale is None else float(scale)
    m = _mask4(mask) if mask is not None else None
    nq, nk = q.shape[2], k.shape[2]
    # chunk over the flattened (batch, head) pairs so one chunk of logits stays under max_logits elements
    per_pair = max(1, nq * nk)
    chunk = max(1, min(b * h, max_logits // per_pair))
    qf, kf, vf = (t.reshape(b * h, t.shape[2], dim_head) for t in (q, k, v))
    if m is not None:
        m = m.expand(b, h, nq, nk).reshape(b * h, nq, nk)
    outs = []
    for s in range(0, b * h, chunk):
        e = min(b * h, s + chunk)
        logits = torch.matmul(qf[s:e].to(acc), kf[s:e].to(acc).transpose(1, 2)) * scale
        if m is not None:
            ms = m[s:e]
            if ms.dtype == torch.bool:
                logits = logits.masked_fill(~ms, -math.inf)
            else:
                logits = logits + ms.to(acc)
        outs.append(torch.matmul(torch.softmax(logits, dim=-1), vf[s:e].to(acc)))
    out = torch.cat(outs).reshape(b, h, nq, dim_head).to(out_dtype)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(b, nq, h * dim_head)
