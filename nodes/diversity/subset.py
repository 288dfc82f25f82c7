"""Choose k of n images that are as diverse as possible, and keep latents and masks in step. Pure torch.

Two methods on L2-normalised embeddings (cosines s_ij in float64 on the CPU, whatever device made them):

- ``greedy_vendi``: start from the pair with the smallest s_ij² (for two unit vectors the Vendi score of every
  order decreases with |s_ij|, so this pair is the best 2-subset), then repeatedly add the image that gives the
  highest Vendi score of order q. Maximising the Vendi score exactly is a subset-selection problem with no known
  fast exact algorithm; greedy is the standard heuristic. Cost of the candidate scores per step (m chosen,
  n - m candidates):

  * q = 2: closed form VS_2 = m² / Σ_ij s_ij²; the sums are kept up to date (one column added per step), so a
    step costs O(n) and the whole selection O(n·k) (:func:`greedy_work` = 0).
  * q = ∞: VS_∞ = (m+1) / λ_max. In the eigenbasis of the chosen kernel K_S = V diag(d) Vᵀ the candidate's
    kernel is the arrowhead [[diag(d), w], [wᵀ, 1]] with w = Vᵀ s_S,c, and λ_max is the largest root of the
    secular function 1 - μ + Σ_j w_j² / (μ - d_j) (decreasing on (max d, ∞); bracketed by max(d_max, 1) and
    max(d_max, 1) + ‖w‖, Cauchy interlacing and Weyl), found by bisection to round-off: O(m³ + n·m) per step.
  * other orders (1, the default, and 0.5) need the whole spectrum of every candidate's (m+1)×(m+1) kernel: one
    batched eigvalsh per step, about (n - m)·(m+1)³ operations, n·k⁴/4 in all. This is bounded: past
    ``MAX_GREEDY_WORK`` (:func:`greedy_work`; k = 128 of 256 is about 1e10) the call is refused with a message
    naming the largest k that fits and the fast alternatives, instead of running for minutes. The eigvalsh
    calls run on one CPU thread: on matrices this small LAPACK's threads only synchronise (k = 64 of 256 at
    order 1 took 2.9 s with torch's 2 threads and 0.9 s with one on a busy 2-core machine; benchmarks/
    diversity_speed.py), and a machine whose cores are busy with other work made the threaded version 10-50x
    slower (the 75 s reported for k = 128 of 256).

- ``farthest_point``: Gonzalez's farthest-point traversal under the distance √(1 - s_ij²), the sine of the
  angle between the embedding lines (the geometry the linear-kernel Vendi score sees; for CLIP image embeddings,
  whose cosines are positive, it orders pairs exactly as the cosine distance does): start from the pair with
  the smallest s_ij², then repeatedly add the image whose largest s² to the chosen ones is smallest. O(n·k);
  a good cover of the batch, but it favours outliers.

An image is never chosen twice, and neither is its content: a candidate whose embedding repeats one already chosen
(|s_ij| >= ``SAME_IMAGE_COS``, equal at embedding precision: fp16 encoders give about 1 - 1e-7 for identical
pixels) is considered only when nothing else is left. The Vendi score of a multiset can prefer a second copy of an
image to a distinct image that lies between two chosen ones (three unit vectors at angles 0, θ/2, θ: the variance
across the line is 2θ²/9 for {0, 0, θ} and θ²/6 for {0, θ/2, θ}, so VS({a, a, c}) > VS({a, b, c})): that is the
Vendi score working as defined, but never what "keep a varied few" means. It is how a batch of three images, each
three times, gave groups [0, 0, 2] on CUDA: the fp16 embeddings of the tiny test encoder lie almost on one line.
Ties (scores equal within ``TIE_RTOL``, e.g. copies of one image) go to the lowest batch index, on every device.

k = 1 returns the medoid (the image with the highest conformity, the most typical one). Indices come back in
ascending order (the original batch order), with the order of choice kept separately.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .geometry import conformity, cosine_matrix
from .vendi import DiversityInputError, as_embeddings, hill_numbers, parse_order, vendi_score

METHODS = ("greedy_vendi", "farthest_point")
SAME_IMAGE_COS = 1.0 - 1e-6  # |cos| at or above this: the same image at embedding precision
TIE_RTOL = 1e-12  # candidate scores this close (relative) are a tie; the lowest index wins
# Operations (Σ (n - m)·(m+1)³ over the steps) allowed for greedy_vendi at orders without a closed form: about
# 1e9 per second on one busy CPU core, so about 20 s (k = 128 of 256 is 1.05e10, k = 32 of 256 6e7).
MAX_GREEDY_WORK = 2e10
EIG_BLOCK = 256  # candidates per batched eigvalsh (bounds memory: block·(m+1)² float64)


@dataclass
class Selection:
    indices: list[int]  # ascending
    order: list[int]  # in the order they were chosen
    score_before: float  # Vendi score of order q of the whole batch
    score_after: float  # of the chosen subset
    method: str
    q: float


def has_closed_form(q: float) -> bool:
    """Orders whose greedy step does not need every candidate's whole spectrum (2 and ∞)."""
    return q == 2.0 or math.isinf(q)


def greedy_work(n: int, k: int, q=1.0) -> float:
    """Operations of greedy_vendi's candidate scoring, Σ_{m=2}^{k-1} (n - m)·(m+1)³ (0 for orders 2 and ∞, whose
    steps are O(n) and O(m³ + n·m), and when k < 3 or k >= n)."""
    q = parse_order(q)
    if has_closed_form(q) or k >= n or k < 3:
        return 0.0
    return float(sum((n - m) * (m + 1) ** 3 for m in range(2, k)))


def max_greedy_k(n: int, q=1.0, budget: float = MAX_GREEDY_WORK) -> int:
    """The largest k whose greedy_vendi work fits ``budget`` for a batch of n (n when every k fits)."""
    k, work = 2, 0.0
    while k < n:
        work += (n - k) * (k + 1) ** 3
        if work > budget:
            return k
        k += 1
    return n


def check_greedy_budget(n: int, k: int, q=1.0, budget: float = MAX_GREEDY_WORK) -> None:
    """Refuse a greedy_vendi selection that would take minutes (orders without a closed form), saying what fits."""
    q = parse_order(q)
    work = greedy_work(n, k, q)
    if work > budget:
        raise DiversityInputError(
            f"greedy_vendi at Vendi order {_order_text(q)} for k={k} of {n} images needs about {work:.1e} operations "
            f"(every candidate's spectrum at every step grows like n·k⁴; the limit is {budget:.0e}, tens of seconds "
            f"on a CPU). Use k <= {max_greedy_k(n, q, budget)}, or vendi_order 2 or inf (closed forms, fast at any "
            "k), or method farthest_point (fast, favours outliers).")


def _order_text(q: float) -> str:
    return "inf" if math.isinf(q) else f"{q:g}"


def pick_best(scores: torch.Tensor, largest: bool = True, rtol: float = TIE_RTOL) -> int:
    """Position of the best score; scores within ``rtol`` of the best tie and the first of them wins. NaN never
    wins (all NaN: a DiversityInputError, the embeddings are broken)."""
    x = scores.detach().to(dtype=torch.float64, device="cpu").flatten()
    if not largest:
        x = -x
    finite = ~torch.isnan(x)
    if not bool(finite.any()):
        raise DiversityInputError("every candidate's diversity score is NaN: the embeddings contain NaN/inf")
    x = torch.where(finite, x, torch.full_like(x, -math.inf))
    best = float(x.max())
    if math.isinf(best):
        return int(torch.nonzero(x == best)[0])
    tol = rtol * max(1.0, abs(best))
    return int(torch.nonzero(x >= best - tol)[0])


def _start_pair(s2: torch.Tensor) -> list[int]:
    """The pair with the smallest s_ij² (the best 2-subset for the Vendi score of every order); ties: the first in
    row-major order (smallest i, then j)."""
    n = s2.shape[0]
    v = s2.clone()
    v.fill_diagonal_(float("inf"))
    flat = pick_best(v.flatten(), largest=False)
    i, j = divmod(flat, n)
    return sorted((i, j))


@contextlib.contextmanager
def one_thread():
    """Run small-tensor loops on one torch thread (restores the thread count afterwards)."""
    old = torch.get_num_threads()
    if old == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _eig_scores(s: torch.Tensor, chosen: list[int], cand: torch.Tensor, q: float, block: int = EIG_BLOCK
                ) -> torch.Tensor:
    """Vendi score of order q of chosen ∪ {c} for every candidate c (batched eigvalsh of the (m+1)² kernels)."""
    m = len(chosen)
    ch = torch.tensor(chosen)
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


def largest_arrowhead_eigenvalue(d: torch.Tensor, w: torch.Tensor, alpha: float = 1.0, iters: int = 200
                                 ) -> torch.Tensor:
    """λ_max of [[diag(d), w], [wᵀ, alpha]] for each row of ``w`` ([b, m]; d [m]), float64, by bisection on the
    secular function h(μ) = alpha - μ + Σ_j w_j² / (μ - d_j), which decreases on (max d, ∞) and changes sign once
    there; λ_max lies in [max(d_max, alpha), max(d_max, alpha) + ‖w‖] (interlacing, Weyl)."""
    d = d.to(torch.float64)
    w2 = w.to(torch.float64) ** 2
    base = max(float(d.max()) if d.numel() else -math.inf, float(alpha))
    lo = torch.full((w.shape[0],), base, dtype=torch.float64)
    hi = lo + w2.sum(dim=1).sqrt()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if bool(((mid <= lo) | (mid >= hi)).all()):  # converged to adjacent floats everywhere
            break
        h = alpha - mid + (w2 / (mid[:, None] - d[None, :])).sum(dim=1)
        pos = h > 0  # the root is above mid
        lo = torch.where(pos, mid, lo)
        hi = torch.where(pos, hi, mid)
    return hi


class _Scorer:
    """Candidate scores for greedy_vendi with the cost described in the module docstring."""

    def __init__(self, s: torch.Tensor, s2: torch.Tensor, q: float, chosen: list[int]):
        self.s, self.s2, self.q = s, s2, q
        self.chosen = list(chosen)
        if q == 2.0:  # running sums: Σ_{i,j in S} s_ij² and, per image, Σ_{j in S} s_cj²
            ch = torch.tensor(self.chosen)
            self.total = float(s2[ch][:, ch].sum())
            self.row = s2[:, ch].sum(dim=1)

    def add(self, c: int) -> None:
        if self.q == 2.0:
            self.total += 2.0 * float(self.row[c]) + 1.0
            self.row = self.row + self.s2[:, c]
        self.chosen.append(c)

    def scores(self, cand: torch.Tensor) -> torch.Tensor:
        m = len(self.chosen)
        if self.q == 2.0:  # VS_2 = (m+1)² / Σ s² over all ordered pairs of chosen ∪ {c}, diagonal included
            return (m + 1) ** 2 / (self.total + 2.0 * self.row[cand] + 1.0)
        if math.isinf(self.q):
            ch = torch.tensor(self.chosen)
            d, v = torch.linalg.eigh(self.s[ch][:, ch])
            w = self.s[cand][:, ch] @ v
            return (m + 1) / largest_arrowhead_eigenvalue(d.clamp_min(0.0), w)
        return _eig_scores(self.s, self.chosen, cand, self.q)


def select_diverse(f, k: int, method: str = "greedy_vendi", q=1.0,
                   on_step: Callable[[int, int], None] | None = None,
                   work_budget: float | None = MAX_GREEDY_WORK) -> Selection:
    """Pick ``k`` of the n rows of ``f`` ([n, d] embeddings) that are as diverse as possible.

    ``on_step(done, total)`` is called after each chosen image (progress bars, cancel checks); the last call is
    always (total, total) with total = min(k, n). k >= n returns every index. ``work_budget`` bounds greedy_vendi
    at orders without a closed form (None: no bound). Raises DiversityInputError for bad input (n < 2, k < 1,
    unknown method) and for a greedy selection past the budget.
    """
    q = parse_order(q)
    if method not in METHODS:
        raise DiversityInputError(f"unknown selection method {method!r}; use one of {', '.join(METHODS)}")
    f = as_embeddings(f)
    n = f.shape[0]
    if k < 1:
        raise DiversityInputError(f"k must be at least 1; got {k}")
    if method == "greedy_vendi" and work_budget is not None:
        check_greedy_budget(n, k, q, work_budget)
    before = vendi_score(f, q, normalized=True)
    if k >= n:
        order = list(range(n))
        if on_step:
            on_step(n, n)
        return Selection(order, list(order), before, before, method, q)
    s = cosine_matrix(f)
    s2 = s * s
    order = [pick_best(conformity(f))] if k == 1 else _start_pair(s2)
    if on_step:
        on_step(len(order), k)
    with one_thread():
        _grow(order, k, s, s2, q, method, on_step)
    idx = sorted(order)
    after = vendi_score(f[idx], q, normalized=True)
    return Selection(idx, order, before, after, method, q)


def _grow(order: list[int], k: int, s: torch.Tensor, s2: torch.Tensor, q: float, method: str,
          on_step: Callable[[int, int], None] | None) -> None:
    """Add images to ``order`` (in place) until it holds k."""
    n = s.shape[0]
    same = SAME_IMAGE_COS ** 2
    nearest = s2[:, order].max(dim=1).values  # largest s² to a chosen image, per image
    taken = torch.zeros(n, dtype=torch.bool)
    taken[order] = True
    scorer = _Scorer(s, s2, q, order) if method == "greedy_vendi" else None
    while len(order) < k:
        fresh = ~taken & (nearest < same)
        cand = torch.nonzero(fresh if bool(fresh.any()) else ~taken).flatten()
        if scorer is not None:
            nxt = int(cand[pick_best(scorer.scores(cand))])
            scorer.add(nxt)
        else:
            nxt = int(cand[pick_best(nearest[cand], largest=False)])
        if taken[nxt]:  # cannot happen (candidates exclude taken rows); a guard against any future change
            raise RuntimeError(f"Select Diverse Subset chose image {nxt} twice")
        taken[nxt] = True
        order.append(nxt)
        nearest = torch.maximum(nearest, s2[:, nxt])
        if on_step:
            on_step(len(order), k)


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
