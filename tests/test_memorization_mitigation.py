"""The embedding optimisation loop on toy scores: AdamW steps by hand, early stop, frozen BOS and finished prompts."""

from __future__ import annotations

import pytest
import torch
from diffusion_sentinel.nodes.memorization.mitigation import frozen_token_mask, optimise_embeddings


def _toy(b=2, tokens=77, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, tokens, dim, generator=g)
    target = torch.randn(b, tokens, dim, generator=g)

    def score(params):
        return ((params[0] - target) ** 2).flatten(1).sum(1)  # one score per prompt

    return emb, target, score


def test_first_step_is_adamw_with_lr_005_and_the_bos_token_kept():
    emb, target, score = _toy(b=1)
    first = float(score([emb]))
    res = optimise_embeddings([emb], score, threshold=-1.0, lr=0.05, max_iters=1)
    assert res.steps == 1 and not res.converged
    new = res.embeddings[0]
    # AdamW, first step: m_hat = g, v_hat = g^2 -> p - lr * (g / (|g| + 1e-8) + wd * p)
    grad = 2 * (emb - target)
    hand = emb - 0.05 * (grad / (grad.abs() + 1e-8) + 0.01 * emb)
    assert torch.allclose(new[:, 1:], hand[:, 1:], atol=1e-6)
    assert torch.equal(new[:, 0], emb[:, 0])  # BOS exactly as encoded (no weight decay either)
    assert res.initial_scores == pytest.approx([first])
    assert res.final_scores[0] == pytest.approx(float(score([new])), rel=1e-6)
    assert res.final_scores[0] < first


def test_stops_as_soon_as_every_prompt_is_under_the_threshold():
    emb, target, score = _toy(b=1, dim=4)
    s0 = float(score([emb]))
    res = optimise_embeddings([emb], score, threshold=s0 + 1.0, max_iters=10)
    assert res.steps == 0 and res.converged and torch.equal(res.embeddings[0], emb)
    # a threshold reachable in a few steps: stops early, at or below it
    s = [s0]
    for _ in range(3):
        s.append(optimise_embeddings([emb], score, threshold=-1, max_iters=len(s)).final_scores[0])
    res = optimise_embeddings([emb], score, threshold=s[2] + 1e-3, max_iters=10)
    assert res.converged and res.steps == 2 and res.final_scores[0] <= s[2] + 1e-3
    assert len(res.history) == 3


def test_at_most_max_iters_steps_and_the_last_iterate_is_scored():
    emb, target, score = _toy(b=1, dim=4)
    res = optimise_embeddings([emb], score, threshold=-1.0, max_iters=4)
    assert res.steps == 4 and len(res.history) == 5 and not res.converged
    assert res.final_scores[0] == pytest.approx(float(score(res.embeddings)), rel=1e-6)
    assert all(a > b for a, b in zip([h[0] for h in res.history], [h[0] for h in res.history[1:]]))


def test_a_prompt_under_the_threshold_is_frozen_while_others_continue():
    emb, target, score = _toy(b=2, dim=4)
    s = score([emb])
    thr = float((s[0] + s[1]) / 2)
    lo = int(torch.argmin(s))
    res = optimise_embeddings([emb], score, threshold=thr, max_iters=3)
    assert torch.equal(res.embeddings[0][lo], emb[lo])  # already under: untouched
    assert not torch.equal(res.embeddings[0][1 - lo], emb[1 - lo])


def test_long_prompts_keep_the_bos_of_every_chunk():
    m = frozen_token_mask(154)
    assert m.nonzero().flatten().tolist() == [0, 77]
    assert frozen_token_mask(77).nonzero().flatten().tolist() == [0]
    assert frozen_token_mask(80).nonzero().flatten().tolist() == [0]
    emb, target, score = _toy(b=1, tokens=154, dim=4)
    res = optimise_embeddings([emb], score, threshold=-1, max_iters=2)
    assert torch.equal(res.embeddings[0][:, [0, 77]], emb[:, [0, 77]])


def test_no_grad_state_is_left_and_inference_mode_is_refused():
    emb, target, score = _toy(b=1, dim=4)
    res = optimise_embeddings([emb], score, threshold=-1, max_iters=2)
    assert not res.embeddings[0].requires_grad and res.embeddings[0].grad is None
    assert not emb.requires_grad
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference mode"):
        optimise_embeddings([emb], score, threshold=-1)


def test_score_shape_is_checked():
    emb = torch.zeros(1, 77, 4)
    with pytest.raises(ValueError, match="one score per prompt"):
        optimise_embeddings([emb], lambda p: p[0].sum(), threshold=-1)
