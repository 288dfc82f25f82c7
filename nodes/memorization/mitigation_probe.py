"""ComfyUI glue: prompt-embedding mitigation on the probe sampler (gradients through a copied U-Net).

Mitigation needs gradients although ComfyUI executes nodes under ``torch.inference_mode()`` and loads weights as
inference tensors (docs/comfyui-internals.md §7.1): inside ``inference_mode(False)`` the loaded (LoRA-patched)
U-Net is deep-copied, swapped into the model for the optimisation only, and released afterwards (the original
module is put back in a ``finally`` block); every input tensor is cloned.

Newer ComfyUI (checked against its 2026 sources; see /work/notes/comfyui-newer-memo.md):

- dynamic VRAM (the default from 0.16, ``ModelPatcherDynamic``) streams weights per layer from host buffers, so
  there is no resident module to copy; ``gradient_model`` asks for ComfyUI's non-dynamic delegate
  (``clone(disable_dynamic=True)``, as its torch.compile node does) and says what to do when a loader cannot give
  one;
- cond and uncond may run on several GPUs in worker threads under ``no_grad`` (``_calc_cond_batch_multigpu``):
  every evaluation here passes ``single_device=True`` so the gradient stays on this thread and this copy.
"""

from __future__ import annotations

import copy
import gc
import math
from dataclasses import dataclass

import comfy.model_management
import torch

from ..common.comfy_glue import Progress
from . import anisotropy as an
from .mitigation import MitigationResult, optimise_embeddings
from .probe import ProbeContext, tick


@dataclass
class MitigationSettings:
    score: str = "anisotropy"  # or "wen"
    threshold: float = 4.0
    gamma_n: float = 1.0
    gamma_c: float = 2.0
    lr: float = 0.05
    max_iters: int = 10


def _with_cond(c, tensor: torch.Tensor):
    """A copy of a comfy.conds object (any subclass, every attribute kept) holding ``tensor``."""
    out = copy.copy(c)
    out.cond = tensor
    return out


def _clone_model_conds(entry: dict) -> dict:
    mc = {}
    for k, v in entry.get("model_conds", {}).items():
        cond = getattr(v, "cond", None)
        mc[k] = _with_cond(v, cond.detach().clone()) if isinstance(cond, torch.Tensor) else v
    return mc


def gradient_model(model):
    """``model``, or under dynamic VRAM its non-dynamic delegate, on which a copied U-Net can carry gradients."""
    is_dynamic = getattr(model, "is_dynamic", None)
    if not (callable(is_dynamic) and is_dynamic()):
        return model
    try:
        return model.clone(disable_dynamic=True)
    except (TypeError, RuntimeError) as e:
        raise RuntimeError(
            "prompt mitigation needs gradients through a resident copy of the U-Net, and under ComfyUI's dynamic "
            "VRAM this model's loader cannot give a non-dynamic copy. Load the checkpoint with a core loader (Load "
            "Checkpoint, Load Diffusion Model), or start ComfyUI with --disable-dynamic-vram, or use action "
            f"'block'. ({type(e).__name__}: {e})") from e


def mitigate_embeddings(ctx: ProbeContext, rows: torch.Tensor, n_prompts: int, prediction: str, s_n: float,
                        s_c: float, ms: MitigationSettings,
                        progress: Progress | None) -> tuple[MitigationResult, list[dict]]:
    """Optimise the positive c_crossattn embeddings on a deep copy of the loaded U-Net; returns the new conds."""
    pos_entries = ctx.conds["positive"]
    for e in pos_entries:
        if "c_crossattn" not in e.get("model_conds", {}):
            raise ValueError("mitigation optimises the cross-attention text embedding, and this model's positive "
                             "conditioning has none (c_crossattn)")
    model = ctx.model
    original = model.diffusion_model
    with torch.inference_mode(False):
        copied = copy.deepcopy(original)  # normal (non-inference) tensors, LoRA-patched weights included
        copied.requires_grad_(False)
        x_rows = rows.detach().clone()
        neg = [dict(e, model_conds=_clone_model_conds(e)) for e in ctx.conds["negative"]]
        base = [dict(e, model_conds=_clone_model_conds(e)) for e in pos_entries]
        embeddings = [e["model_conds"]["c_crossattn"].cond for e in base]
        x_n = x_rows * math.sqrt(s_n**2 + 1.0)
        x_c = x_rows * math.sqrt(s_c**2 + 1.0)

        def with_embeddings(params):
            return [dict(e, model_conds=dict(e["model_conds"], c_crossattn=_with_cond(e["model_conds"]["c_crossattn"], p)))
                    for e, p in zip(base, params)]

        def score_fn(params):
            pos = with_embeddings(params)
            c_n, u_n = ctx.cond_uncond(x_n, s_n, positive=pos, negative=neg, single_device=True)
            tick(progress)
            if ms.score == "wen":
                return an.per_prompt_mean(an.wen_norm(c_n, u_n, s_n, prediction), n_prompts)
            c_c, u_c = ctx.cond_uncond(x_c, s_c, positive=pos, negative=neg, single_device=True)
            tick(progress)
            n_ = an.norm_term(c_n, u_n, s_n, prediction)
            c_ = an.cosine_term(x_c, c_c, u_c, s_c, prediction)
            return an.per_prompt_mean(an.combine(n_, c_, ms.gamma_n, ms.gamma_c), n_prompts)

        model.diffusion_model = copied
        try:
            res = optimise_embeddings(embeddings, score_fn, ms.threshold, lr=ms.lr, max_iters=ms.max_iters)
        except RuntimeError as e:
            if "nference tensor" in str(e):
                raise RuntimeError(
                    "prompt mitigation could not differentiate through this model: a patch applied to it (e.g. an "
                    "IP-Adapter or another pack's attention patch) holds inference-mode tensors. Mitigate on the "
                    f"model without that patch, or use action 'block'. ({e})") from e
            raise
        finally:
            model.diffusion_model = original
            del copied
            gc.collect()
            comfy.model_management.soft_empty_cache()
        new_pos = []
        for e, emb in zip(pos_entries, res.embeddings):
            old = e["model_conds"]["c_crossattn"]
            new_pos.append(dict(e, model_conds=dict(e["model_conds"], c_crossattn=_with_cond(old, emb.to(old.cond.device)))))
    return res, new_pos
