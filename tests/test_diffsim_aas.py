"""The code-exact Aligned Attention Score against an independent loop-over-heads computation and by hand."""

from __future__ import annotations

import math

import pytest
import torch
from diffusion_sentinel.nodes.diffsim.aas import (
    AttentionFeatures,
    aas_matrix,
    aas_pairs,
    aligned_attention_score,
    attention_output,
    directed_matrix,
    flat_cosine,
    split_heads,
)


def feats(seed, c=2, h=4, n=24, d=8, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return AttentionFeatures(*(scale * torch.randn(c, h, n, d, generator=g) for _ in range(3)))


def reference_aas(fa, fb):
    """Independent: float64, explicit softmax, one head and one CFG half at a time, Python-level cosine."""

    def attend(q, k, v):  # q [N, d], k [M, d], v [M, d]
        s = (q @ k.T) / math.sqrt(q.shape[-1])
        w = torch.exp(s - s.max(dim=-1, keepdim=True).values)
        return (w / w.sum(dim=-1, keepdim=True)) @ v

    def directed(x, y):
        cross, own = [], []
        for c in range(x.q.shape[0]):
            for h in range(x.q.shape[1]):
                q = x.q[c, h].double()
                cross.append(attend(q, y.k[c, h].double(), y.v[c, h].double()).reshape(-1))
                own.append(attend(q, x.k[c, h].double(), x.v[c, h].double()).reshape(-1))
        a, b = torch.cat(cross).tolist(), torch.cat(own).tolist()
        dot = sum(p * r for p, r in zip(a, b))
        return dot / (math.sqrt(sum(p * p for p in a)) * math.sqrt(sum(r * r for r in b)))

    return 0.5 * (directed(fa, fb) + directed(fb, fa))


@pytest.mark.parametrize("shape", [dict(c=2, h=8, n=16, d=20), dict(c=1, h=3, n=40, d=5), dict(c=2, h=1, n=7, d=64)])
def test_code_exact_matches_loop_over_heads(shape):
    fa, fb = feats(1, **shape), feats(2, **shape)
    ours = aligned_attention_score(fa, fb)
    ref = reference_aas(fa, fb)
    assert abs(ours - ref) < 1e-5, (ours, ref)
    assert -1.0 <= ours <= 1.0


def test_self_similarity_is_one_and_symmetry():
    fa, fb = feats(3), feats(4)
    assert aligned_attention_score(fa, fa) == pytest.approx(1.0, abs=1e-9)
    assert aligned_attention_score(fa, fb) == pytest.approx(aligned_attention_score(fb, fa), abs=1e-12)


def test_one_key_token_reduces_to_cosine_of_values_by_hand():
    """With one key token the softmax is 1, so O(q, k, v) = v for every query and s_AB = cos(v_B, v_A)."""
    q = torch.randn(1, 1, 5, 3)
    va, vb = torch.tensor([1.0, 2.0, 2.0]), torch.tensor([2.0, 0.0, 1.0])
    fa = AttentionFeatures(q, torch.randn(1, 1, 1, 3), va.view(1, 1, 1, 3))
    fb = AttentionFeatures(q.flip(2), torch.randn(1, 1, 1, 3), vb.view(1, 1, 1, 3))
    expected = (1 * 2 + 2 * 0 + 2 * 1) / (3 * math.sqrt(5))  # cos(va, vb) = 4 / (3·√5)
    assert aligned_attention_score(fa, fb) == pytest.approx(expected, abs=1e-6)


def test_different_token_counts_and_chunked_attention():
    fa, fb = feats(5, n=33), feats(6, n=17)
    ref = reference_aas(fa, fb)
    assert aligned_attention_score(fa, fb) == pytest.approx(ref, abs=1e-5)
    assert aligned_attention_score(fa, fb, query_chunk=4) == pytest.approx(ref, abs=1e-5)
    q, k, v = fa
    assert torch.allclose(attention_output(q, k, v, query_chunk=5), attention_output(q, k, v), atol=1e-6)


def test_features_of_different_layers_are_refused():
    with pytest.raises(ValueError, match="same model, block and settings"):
        aligned_attention_score(feats(1, h=4), feats(2, h=8))


def test_split_heads_is_comfyui_layout():
    x = torch.arange(2 * 3 * 12, dtype=torch.float32).reshape(2, 3, 12)
    y = split_heads(x, 4)
    assert y.shape == (2, 4, 3, 3)
    # head h, token n = x[b, n, h*d:(h+1)*d] (ComfyUI: reshape(b, -1, heads, d).permute(0, 2, 1, 3))
    assert torch.equal(y[1, 2, 0], x[1, 0, 6:9])
    with pytest.raises(ValueError):
        split_heads(x, 5)


def test_matrix_and_pairs_agree_with_single_scores():
    fs = [feats(s) for s in range(4)]
    m = aas_matrix(fs)
    assert m.shape == (4, 4) and torch.allclose(m, m.T) and torch.all(m.diagonal() == 1)
    d = directed_matrix(fs)
    for i in range(4):
        for j in range(4):
            if i != j:
                assert float(m[i, j]) == pytest.approx(aligned_attention_score(fs[i], fs[j]), abs=1e-12)
                assert float(m[i, j]) == pytest.approx(float(0.5 * (d[i, j] + d[j, i])), abs=1e-15)
    pairs = aas_pairs([fs[0]] * 3, fs[1:])
    assert pairs == pytest.approx([float(m[0, j]) for j in (1, 2, 3)], abs=1e-12)
    with pytest.raises(ValueError):
        aas_pairs(fs[:2], fs[:3])


def test_flat_cosine_handles_scale_and_zero():
    a = torch.randn(3, 4)
    assert flat_cosine(a, 7 * a) == pytest.approx(1.0, abs=1e-12)
    assert flat_cosine(a, -a) == pytest.approx(-1.0, abs=1e-12)
    assert flat_cosine(torch.zeros(3), torch.ones(3)) == 0.0


def test_fp16_features_are_scored_in_fp32():
    fa, fb = feats(7), feats(8)
    half = aligned_attention_score(AttentionFeatures(*(t.half() for t in fa)), AttentionFeatures(*(t.half() for t in fb)))
    assert half == pytest.approx(aligned_attention_score(fa, fb), abs=2e-3)


def test_identical_uncond_halves_bias_the_score_up():
    """Why DiffSim-C compares the conditional half only: the released code's uncond half uses the same zero-image
    IP tokens for A and B, so that half of both attention outputs is identical and pulls the cosine toward 1."""
    ga, gb = feats(1, c=1, n=16), feats(2, c=1, n=16)
    shared = feats(3, c=1, n=4)  # uncond K, V (zero-image IP tokens): the same for A and B
    qa_u, qb_u = feats(4, c=1, n=16).q, feats(5, c=1, n=16).q

    def with_uncond(f, q_u):
        return AttentionFeatures(torch.cat([q_u, f.q]), torch.cat([shared.k, f.k[:, :, :4]]),
                                 torch.cat([shared.v, f.v[:, :, :4]]))

    cond_only = aligned_attention_score(AttentionFeatures(ga.q, ga.k[:, :, :4], ga.v[:, :, :4]),
                                        AttentionFeatures(gb.q, gb.k[:, :, :4], gb.v[:, :, :4]))
    both = aligned_attention_score(with_uncond(ga, qa_u), with_uncond(gb, qb_u))
    assert both > cond_only + 0.05, (both, cond_only)
