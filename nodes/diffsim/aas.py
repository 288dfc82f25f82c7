"""The Aligned Attention Score of DiffSim, code-exact (docs/methods.md §2.1). Pure torch.

For images A and B with the Q, K, V of one attention layer (shape [C, H, N, d]: C = CFG halves, H heads,
N query tokens, d head dim):

    O(Q, K, V) = softmax(Q Kᵀ / √d) V                 per head, no output projection
    s_AB = cos( vec O(Q_A, K_B, V_B), vec O(Q_A, K_A, V_A) )   one cosine over the flattened C·H·N·d tensor
    s_BA = cos( vec O(Q_B, K_A, V_A), vec O(Q_B, K_B, V_B) )
    DiffSim(A, B) = (s_AB + s_BA) / 2                 in [-1, 1], higher = more similar

The paper writes the sum of the two terms; the released code takes the mean, as here. A and B may have
different token counts N (the attention of A's queries on B's keys has A's shape); C, H, d must agree.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class AttentionFeatures(NamedTuple):
    """Q, K, V of one image at one attention layer, each [C, H, N, d] (C = CFG halves in a fixed order)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self)

    def to(self, device=None, dtype=None) -> AttentionFeatures:
        return AttentionFeatures(*(t.to(device=device, dtype=dtype) for t in self))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, H·d] (ComfyUI's projected q/k/v layout) -> [B, H, N, d]."""
    if x.dim() != 3 or x.shape[-1] % heads:
        raise ValueError(f"expected [batch, tokens, heads*dim] with a width divisible by {heads}, got {tuple(x.shape)}")
    b, n, hd = x.shape
    return x.reshape(b, n, heads, hd // heads).transpose(1, 2)


def attention_output(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_chunk: int = 1024) -> torch.Tensor:
    """softmax(q kᵀ / √d) v in float32, per leading index (heads), chunked over queries to bound memory.

    q [..., Nq, d], k [..., Nk, d], v [..., Nk, dv] -> [..., Nq, dv].
    """
    q, k, v = q.float(), k.float(), v.float()
    if q.shape[-2] <= query_chunk:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.cat([F.scaled_dot_product_attention(q[..., i:i + query_chunk, :], k, v)
                      for i in range(0, q.shape[-2], query_chunk)], dim=-2)


def flat_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> float:
    """Cosine similarity of two tensors flattened to vectors (dot products accumulated in float64)."""
    if a.shape != b.shape:
        raise ValueError(f"cosine of tensors with different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    den = float(torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    return float(torch.dot(a, b)) / max(den, eps)


def _check_pair(fa: AttentionFeatures, fb: AttentionFeatures) -> None:
    for name, x, y in (("q", fa.q, fb.q), ("k", fa.k, fb.k), ("v", fa.v, fb.v)):
        if x.dim() != 4 or y.dim() != 4:
            raise ValueError(f"{name} must be [C, H, N, d]; got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.shape[0] != y.shape[0] or x.shape[1] != y.shape[1] or x.shape[3] != y.shape[3]:
            raise ValueError(f"features of the two images do not match ({name}: {tuple(x.shape)} vs {tuple(y.shape)}):"
                             " compute both with the same model, block and settings")


def self_output(f: AttentionFeatures, query_chunk: int = 1024) -> torch.Tensor:
    """O(Q, K, V) of one image with its own keys and values."""
    return attention_output(f.q, f.k, f.v, query_chunk)


def directed_score(fa: AttentionFeatures, fb: AttentionFeatures, self_a: torch.Tensor | None = None,
                   query_chunk: int = 1024) -> float:
    """s_AB = cos(vec O(Q_A, K_B, V_B), vec O(Q_A, K_A, V_A)): A's queries read B's keys/values vs its own."""
    _check_pair(fa, fb)
    if self_a is None:
        self_a = self_output(fa, query_chunk)
    return flat_cosine(attention_output(fa.q, fb.k, fb.v, query_chunk), self_a)


def aligned_attention_score(fa: AttentionFeatures, fb: AttentionFeatures, query_chunk: int = 1024) -> float:
    """DiffSim(A, B) = (s_AB + s_BA) / 2 in [-1, 1]; higher = more similar; symmetric; 1 for identical features."""
    return 0.5 * (directed_score(fa, fb, query_chunk=query_chunk) + directed_score(fb, fa, query_chunk=query_chunk))


def directed_matrix(feats: list[AttentionFeatures], query_chunk: int = 1024, device=None,
                    on_row=None) -> torch.Tensor:
    """D[i, j] = s_ij (image i's queries on image j's keys/values); diagonal 1. float64 [N, N].

    ``device`` moves the features there for the attention (e.g. the GPU the model lives on);
    ``on_row(i)`` is called after each row (progress / cancel).
    """
    n = len(feats)
    feats = [f.to(device) for f in feats] if device is not None else feats
    out = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        self_i = self_output(feats[i], query_chunk)
        for j in range(n):
            if i != j:
                out[i, j] = directed_score(feats[i], feats[j], self_i, query_chunk)
        if on_row is not None:
            on_row(i)
    return out


def aas_matrix(feats: list[AttentionFeatures], query_chunk: int = 1024, device=None, on_row=None) -> torch.Tensor:
    """Symmetric N×N DiffSim matrix, M = (D + Dᵀ) / 2 with D from :func:`directed_matrix`; diagonal 1."""
    d = directed_matrix(feats, query_chunk, device, on_row)
    return 0.5 * (d + d.T)


def aas_pairs(feats_a: list[AttentionFeatures], feats_b: list[AttentionFeatures], query_chunk: int = 1024,
              device=None, on_pair=None) -> list[float]:
    """DiffSim of (a[i], b[i]) for each i. Reuses each image's self-attention output when it repeats."""
    if len(feats_a) != len(feats_b):
        raise ValueError(f"{len(feats_a)} and {len(feats_b)} images cannot be paired one to one")
    cache: dict[int, tuple[AttentionFeatures, torch.Tensor]] = {}

    def own(f: AttentionFeatures) -> tuple[AttentionFeatures, torch.Tensor]:
        if id(f) not in cache:
            g = f.to(device) if device is not None else f
            cache[id(f)] = (g, self_output(g, query_chunk))
        return cache[id(f)]

    scores = []
    for i, (fa, fb) in enumerate(zip(feats_a, feats_b)):
        ga, sa = own(fa)
        gb, sb = own(fb)
        scores.append(0.5 * (directed_score(ga, gb, sa, query_chunk) + directed_score(gb, ga, sb, query_chunk)))
        if on_pair is not None:
            on_pair(i)
    return scores
