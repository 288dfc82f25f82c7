"""ComfyUI glue: prompt-embedding mitigation on the probe sampler (gradients through a copied U-Net).

Mitigation needs gradients although ComfyUI executes nodes under ``torch.inference_mode()`` and loads weights as
inference tensors (docs/comfyui-internals.md §7.1): inside ``inference_mode(False)`` the loaded (LoRA-patched)
U-Net is deep-copied, swapped into the model for the optimisation only, and released afterwards (the original
module is put back in a ``finally`` block); every input tensor is cloned.
"""

from __future__ import annotations

import copy
import gc
import math
from dataclasses import dataclass

import comfy.conds
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


def _clone_model_conds(entry: dict) -> dict:
    mc = {}
    for k, v in entry.get("model_conds", {}).items():
        cond = getattr(v, "cond", None)
        mc[k] = v._copy_with(cond.detach().clone()) if isinstance(cond, torch.Tensor) else v
    return mc


def mitigate_embeddings(ctx: ProbeContext, rows: torch.Tensor, n_prompts: int, prediction: str, s_n: float, s_c: float,
              ms: MitigationSettings, progress: Progress | None) -> tuple[MitigationResult, list[dict]]:
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
            return [dict(e, model_conds=dict(e["model_conds"], c_crossattn=comfy.conds.CONDCrossAttn(p)))
                    for e, p in zip(base, params)]

        def score_fn(params):
            pos = with_embeddings(params)
            c_n, u_n = ctx.cond_uncond(x_n, s_n, positive=pos, negative=neg)
            tick(progress)
            if ms.score == "wen":
                return an.per_prompt_mean(an.wen_norm(c_n, u_n, s_n, prediction), n_prompts)
            c_c, u_c = ctx.cond_uncond(x_c, s_c, positive=pos, negative=neg)
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
        new_pos = [dict(e, model_conds=dict(e.get("model_conds", {}),
                                            c_crossattn=comfy.conds.CONDCrossAttn(emb.to(e["model_conds"]["c_crossattn"].cond.device))))
                   for e, emb in zip(pos_entries, res.embeddings)]
    return res, new_pos
