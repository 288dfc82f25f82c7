"""Choose k of n images that are as diverse as possible, and keep latents and masks in step. Pure torch.

Two methods on L2-normalised embeddings:

- ``greedy_vendi``: start from the pair with the smallest s_ij² (for two unit vectors the Vendi score of every
  order decreases with |s_ij|, so this pair is the best 2-subset), then repeatedly add the image that gives the
  highest Vendi score of order q. Each step scores every remaining candidate with one batched eigvalsh of
  (m+1)×(m+1) matrices: about n·k⁴/4 flops in all (n = 256, k = 32: well under a second on a CPU). Maximising
  the Vendi score exactly is a subset-selection problem with no known fast exact algorithm; greedy is the
  standard heuristic. For q = 2 the step has a closed form (VS_2 = m² / Σ_ij s_ij²) and is used.
- ``farthest_point``: Gonzalez's farthest-point traversal under the distance √(1 - s_ij²), the sine of the
  angle between the embedding lines (the geometry the linear-kernel Vendi score sees; for CLIP image embeddings,
  whose cosines are positive, it orders pairs exactly as the cosine distance does): start from the pair with
  the smallest s_ij², then repeatedly add the image whose largest s² to the chosen ones is smallest. O(n·k);
  a good cover of the batch, but it favours outliers.

k = 1 returns the medoid (the image with the highest conformity, the most typical one). Indices come back in
ascending order (the original batch order), with the order of choice kept separately.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .geometry import conformity, cosine_matrix
from .vendi import DiversityInputError, as_embeddings, hill_numbers, parse_order, vendi_score

METHODS = ("greedy_vendi", "farthest_point")


@dataclass
class Selection:
    indices: list[int]  # ascending
    order: list[int]  # in the order they were chosen
    score_before: float  # Vendi score of order q of the whole batch
    score_after: float  # of the chosen subset
    method: str
    q: float


def _start_pair(s: torch.Tensor) -> list[int]:
    """The pair with the smallest s_ij² (the best 2-subset for the Vendi score of every order)."""
    n = s.shape[0]
    v = s * s
    v.fill_diagonal_(float("inf"))
    flat = int(torch.argmin(v))  # first minimum in row-major order: smallest i, then j
    i, j = divmod(flat, n)
    return sorted((i, j))


def _candidate_scores(s: torch.Tensor, chosen: list[int], cand: torch.Tensor, q: float,
                      block: int = 256) -> torch.Tensor:
    """Vendi score of order q of chosen ∪ {c} for every candidate c (batched eigvalsh)."""
    m = len(chosen)
    ch = torch.tensor(chosen)
    if q == 2.0:  # closed form: VS_2 = (m+1)² / Σ s², the sum over all ordered pairs incl. the diagonal
        base = float((s[ch][:, ch] ** 2).sum())
        add = 2.0 * (s[cand][:, ch] ** 2).sum(dim=1) + 1.0
        return (m + 1) ** 2 / (base + add)
    out = torch.empty(cand.numel(), dtype=torch.float64)
    k_ss = s[ch][:, ch]
    for b0 in range(0, cand.numel(), block):
        c = cand[b0:b0 + block]
        kk = torch.empty(c.numel(), m + 1, m + 1, dtype=torch.float64)
        kk[:, :m, :m] = k_ss
        cross = s[c][:, ch]  # [b, m]
        kk[:, m, :m] = cross
        kk[:, :m, m] = cross
        kk[:, m, m] = 1.0
        lam = torch.linalg.eigvalsh(kk / (m + 1)).clamp_min(0.0)
        out[b0:b0 + block] = hill_numbers(lam, q)
    return out


def select_diverse(f, k: int, method: str = "greedy_vendi", q=1.0,
                   on_step: Callable[[int, int], None] | None = None) -> Selection:
    """Pick ``k`` of the n rows of ``f`` ([n, d] embeddings) that are as diverse as possible.

    ``on_step(done, total)`` is called after each chosen image (progress bars, cancel checks).
    k >= n returns every index. Raises DiversityInputError for bad input (n < 2, k < 1, unknown method).
    """
    q = parse_order(q)
    if method not in METHODS:
        raise DiversityInputError(f"unknown selection method {method!r}; use one of {', '.join(METHODS)}")
    f = as_embeddings(f)
    n = f.shape[0]
    if k < 1:
        raise DiversityInputError(f"k must be at least 1; got {k}")
    before = vendi_score(f, q, normalized=True)
    if k >= n:
        order = list(range(n))
        if on_step:
            on_step(n, n)
        return Selection(order, list(order), before, before, method, q)
    s = cosine_matrix(f)
    if k == 1:
        order = [int(torch.argmax(conformity(f)))]
    else:
        order = _start_pair(s)
    if on_step:
        on_step(len(order), k)
    s2 = s * s
    nearest = s2[:, order].max(dim=1).values if method == "farthest_point" else None
    while len(order) < k:
        taken = torch.zeros(n, dtype=torch.bool)
        taken[order] = True
        cand = torch.nonzero(~taken).flatten()
        if method == "greedy_vendi":
            nxt = int(cand[int(torch.argmax(_candidate_scores(s, order, cand, q)))])
        else:
            nxt = int(cand[int(torch.argmin(nearest[cand]))])
            nearest = torch.maximum(nearest, s2[:, nxt])
        order.append(nxt)
        if on_step:
            on_step(len(order), k)
    idx = sorted(order)
    after = vendi_score(f[idx], q, normalized=True)
    return Selection(idx, order, before, after, method, q)


# ----------------------------------------------------------------------------- keeping batches in step
def take_batch(x: torch.Tensor, idx: list[int], n: int, what: str) -> torch.Tensor:
    """Rows ``idx`` of a batched tensor whose first dimension is n; a batch of 1 (broadcast) is kept as is."""
    if x.shape[0] == n:
        return x[idx]
    if x.shape[0] == 1:
        return x
    raise DiversityInputError(f"{what} has a batch of {x.shape[0]} but the images have {n}: connect the {what} "
                              "that belongs to these images (same batch size, same order)")


def take_latent(latent: dict, idx: list[int], n: int) -> dict:
    """The LATENT dict restricted to ``idx`` (samples, noise_mask, batch_index), other entries copied."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise DiversityInputError("latent must be a ComfyUI LATENT (a dict with 'samples')")
    samples = latent["samples"]
    if samples.shape[0] != n:
        raise DiversityInputError(f"the latent has a batch of {samples.shape[0]} but the images have {n}: connect "
                                  "the latent these images were decoded from (same batch, same order)")
    out = dict(latent)
    out["samples"] = samples[idx]
    if isinstance(latent.get("noise_mask"), torch.Tensor):
        nm = latent["noise_mask"]
        out["noise_mask"] = nm[idx] if nm.shape[0] == n else nm
    if latent.get("batch_index") is not None:
        bi = list(latent["batch_index"])
        out["batch_index"] = [bi[i] for i in idx] if len(bi) == n else bi
    return out


def take_mask(mask: torch.Tensor, idx: list[int], n: int) -> torch.Tensor:
    """A MASK ([B, H, W] or [H, W]) restricted to ``idx``; a single mask applies to every image and is kept."""
    if mask.dim() == 2:
        return mask
    return take_batch(mask, idx, n, "mask")
