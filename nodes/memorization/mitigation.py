"""Inference-time mitigation: optimise the prompt embedding until the memorization score is under a threshold.

Wen et al. (ICLR 2024), ``aug_prompt`` in their ``local_sd_pipeline.py`` (docs/methods.md §4.6): AdamW, lr 0.05,
at most 10 iterations, the loss evaluated on the current embedding and the loop stopped as soon as it is at or
below the target, the gradient of the first (BOS) token zeroed. The anisotropy paper optimises the prompt
embedding with its metric M as the loss (§4.5) but publishes no hyper-parameters; Wen's are used. Pure torch: the score function is any differentiable map from embeddings to one
score per prompt (the ComfyUI glue builds it from calc_cond_batch on a copied U-Net).

Differences from Wen's code, on purpose:
- the BOS token (and, for prompts longer than 77 tokens, the BOS of every 77-token chunk) is kept exactly: Wen
  zeroes its gradient but AdamW's weight decay still shrinks it by lr * 0.01 per step;
- several prompts (a batched CONDITIONING) are optimised together, the loss is the sum of the scores of the prompts
  still above the threshold, and a prompt that got under it is frozen (its rows restored after every step);
- the scores of the last iterate are evaluated and returned (Wen's loop leaves the final step unchecked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

WEN_LR = 0.05
WEN_MAX_ITERS = 10
TOKENS_PER_CHUNK = 77


@dataclass
class MitigationResult:
    embeddings: list[torch.Tensor]
    initial_scores: list[float]
    final_scores: list[float]
    steps: int
    converged: bool  # every prompt ended at or below the threshold
    history: list[list[float]] = field(default_factory=list)


def frozen_token_mask(length: int, chunk: int = TOKENS_PER_CHUNK) -> torch.Tensor:
    """True at the BOS position of every CLIP chunk (position 0, and 77, 154, ... for long prompts)."""
    m = torch.zeros(length, dtype=torch.bool)
    if length % chunk == 0:
        m[::chunk] = True
    else:
        m[0] = True
    return m


def optimise_embeddings(
    embeddings: Sequence[torch.Tensor],
    score_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    threshold: float,
    lr: float = WEN_LR,
    max_iters: int = WEN_MAX_ITERS,
    weight_decay: float = 0.01,
    on_iteration: Callable[[int, list[float]], None] | None = None,
) -> MitigationResult:
    """Minimise the per-prompt scores of ``score_fn`` over ``embeddings`` ([b, tokens, dim] each, b = 1 or B).

    ``score_fn(params)`` returns a [B] tensor (one score per prompt, differentiable in ``params``); a prompt counts
    as mitigated when its score is <= ``threshold``. Must run with autograd enabled (outside inference mode).
    """
    if max_iters < 0:
        raise ValueError(f"max_iters must be >= 0, got {max_iters}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("prompt optimisation cannot run in inference mode; wrap it in torch.inference_mode(False)")
    params = [e.detach().clone().requires_grad_(True) for e in embeddings]
    masks = [frozen_token_mask(p.shape[1]).to(p.device) for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    history: list[list[float]] = []
    steps = 0
    under = False
    try:
        for it in range(max_iters + 1):
            last = it == max_iters
            with torch.enable_grad() if not last else torch.no_grad():
                scores = score_fn(params)
            if scores.ndim != 1:
                raise ValueError(f"score_fn must return one score per prompt ([B]); got shape {tuple(scores.shape)}")
            vals = [float(v) for v in scores.detach().float().cpu()]
            history.append(vals)
            if on_iteration is not None:
                on_iteration(it, vals)
            active = scores.detach() > threshold
            if not bool(active.any()):
                under = True
                break
            if last:
                break
            loss = scores[active].sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            before = [p.detach().clone() for p in params]
            opt.step()
            steps += 1
            with torch.no_grad():
                for p, b0, m in zip(params, before, masks):
                    p[:, m] = b0[:, m]  # BOS tokens stay exactly as encoded
                    if p.shape[0] == active.shape[0] and p.shape[0] > 1:
                        done = ~active.to(p.device)
                        p[done] = b0[done]  # prompts already under the threshold are frozen
            del loss, scores
    finally:
        opt.zero_grad(set_to_none=True)
        out = [p.detach().clone() for p in params]
        for p in params:
            p.requires_grad_(False)
        del opt, params
    return MitigationResult(embeddings=out, initial_scores=history[0], final_scores=history[-1], steps=steps,
                            converged=under, history=history)
