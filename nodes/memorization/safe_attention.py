"""ComfyUI glue: a MODEL clone whose attention runs ``math_attention.attention`` (forward-AD safe, any precision).

Why not ``torch.nn.attention.sdpa_kernel([SDPBackend.MATH])`` around the calls: ComfyUI's own SDPA entry point
(``comfy.ops.scaled_dot_product_attention`` on CUDA) enters ``sdpa_kernel(priority, set_priority=True)`` on every
call, which enables the flash and memory-efficient kernels again inside any outer restriction, and xformers, sage
or flash-attn never go through SDPA at all. Both context managers also set process-wide backend flags that other
threads (ComfyUI runs cond and uncond on several GPUs in threads since 2026) would see.

So the attention is replaced on a clone, through ComfyUI's per-model mechanisms, with no module global touched:

- ``transformer_options["optimized_attention_override"]`` where this ComfyUI honours it (every attention function
  decorated with ``wrap_attn``, ComfyUI >= 0.3.6x; the override receives the backend function and its arguments).
  An override another pack set is kept and wrapped: it is called with the math attention as the backend function.
- otherwise ``attn1``/``attn2`` replace patches on every transformer block of the U-Net, except where a replace
  patch already exists (IP-Adapter's, for instance), which stays as it is.

Attention computed inside another pack's own replace patch (it calls its own kernel) is not reached; a JVP that
fails there is reported with the way out (method 'finite_difference').
"""

from __future__ import annotations

import logging

import comfy.ldm.modules.attention as comfy_attention

from .math_attention import attention

log = logging.getLogger("diffusion_sentinel")
OVERRIDE_KEY = "optimized_attention_override"


def override_supported() -> bool:
    """Whether this ComfyUI routes its attention functions through ``transformer_options``' override."""
    return callable(getattr(comfy_attention, "wrap_attn", None))


def _math_backend(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                  **kwargs):
    """Same signature as ComfyUI's attention functions (extra keywords such as transformer_options are ignored)."""
    return attention(q, k, v, heads, mask=mask, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape,
                     scale=kwargs.get("scale"), enable_gqa=bool(kwargs.get("enable_gqa", False)))


def _make_override(previous=None):
    if previous is None:
        def override(func, *args, **kwargs):
            return _math_backend(*args, **kwargs)
    else:
        def override(func, *args, **kwargs):
            return previous(_math_backend, *args, **kwargs)
    override.sentinel_math_attention = True
    return override


def _transformer_keys(diffusion_model) -> list[tuple[str, int, int]]:
    """(block name, block number, depth index) of every transformer block of a U-Net (SD1/SD2/SDXL layout)."""
    keys = []
    for name, attr in (("input", "input_blocks"), ("middle", "middle_block"), ("output", "output_blocks")):
        blocks = getattr(diffusion_model, attr, None)
        if blocks is None:
            continue
        if name == "middle":
            blocks = [blocks]
        for number, block in enumerate(blocks):
            for module in block.modules():
                tb = getattr(module, "transformer_blocks", None)
                if tb is not None and hasattr(module, "proj_in"):
                    keys.extend((name, number, d) for d in range(len(tb)))
    return keys


def _replace_patch(q, k, v, extra_options):
    return attention(q, k, v, int(extra_options["n_heads"]))


def with_math_attention(model):
    """A clone of the ModelPatcher ``model`` whose attention runs the math attention; ``model`` is not modified."""
    m = model.clone()
    to = m.model_options.setdefault("transformer_options", {})
    if override_supported():
        previous = to.get(OVERRIDE_KEY)
        if not getattr(previous, "sentinel_math_attention", False):
            to[OVERRIDE_KEY] = _make_override(previous)
        return m
    existing = to.get("patches_replace", {})
    kept = 0
    for key in _transformer_keys(m.get_model_object("diffusion_model")):
        for kind in ("attn1", "attn2"):
            have = existing.get(kind, {})
            if key in have or key[:2] in have:
                kept += 1
                continue
            m.set_model_patch_replace(_replace_patch, kind, key[0], key[1], key[2])
    if kept:
        log.info("Diffusion Sentinel: %d attention replace patch(es) of other packs kept as they are", kept)
    return m
