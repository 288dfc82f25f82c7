"""Geometry of a batch of L2-normalised image embeddings, and its comparison with a reference batch. Pure torch.

These are standard formulas, not taken from Marwood et al. ("Diversity and Diffusion", arXiv 2311.00056),
whose own CLIP-geometry finding could not be retrieved (docs/methods.md §5). With f_i = e_i/‖e_i‖ and
μ = mean_i f_i:

- pairwise cosine s_ij = f_iᵀ f_j over the n(n-1)/2 pairs i < j: mean, standard deviation (over pairs), min, max;
- centroid norm ‖μ‖ in [0, 1]; 1 means every embedding is the same. ‖μ‖² = (1 + (n-1)·mean s_ij)/n;
- conformity c_i = cos(f_i, μ) = f_iᵀμ/‖μ‖ (Levi & Gilboa, arXiv 2411.14517: a sample's mean cosine to the
  others is close to its cosine to the mean); low = atypical, high = typical;
- near-duplicate pairs: s_ij >= threshold;
- against a reference batch r_j (e.g. real images, same encoder): centroid distance ‖μ - μ_ref‖ (Euclidean,
  like the mean term of FID) and 1 - cos(μ, μ_ref); k-NN precision and recall (Kynkäänniemi et al., NeurIPS
  2019) and coverage (Naeem et al., ICML 2020), defined in ``knn_precision_recall``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from .vendi import DiversityInputError, as_embeddings


@dataclass
class PairwiseStats:
    mean: float
    std: float
    min: float
    max: float
    pairs: int

    def as_dict(self) -> dict:
        return asdict(self)


def cosine_matrix(f: torch.Tensor) -> torch.Tensor:
    """[n, n] cosine similarities of L2-normalised rows (float64, diagonal exactly 1, clamped to [-1, 1])."""
    s = (f @ f.T).clamp(-1.0, 1.0)
    s.fill_diagonal_(1.0)
    return s


def pairwise_stats(f: torch.Tensor) -> PairwiseStats:
    """Mean, population std, min and max of s_ij over the pairs i < j (needs n >= 2)."""
    n = f.shape[0]
    if n < 2:
        raise DiversityInputError(f"pairwise similarity needs at least 2 images, got {n}")
    iu = torch.triu_indices(n, n, offset=1)
    v = cosine_matrix(f)[iu[0], iu[1]]
    return PairwiseStats(mean=float(v.mean()), std=float(v.std(unbiased=False)), min=float(v.min()),
                         max=float(v.max()), pairs=int(v.numel()))


def centroid(f: torch.Tensor) -> torch.Tensor:
    return f.mean(dim=0)


def centroid_norm(f: torch.Tensor) -> float:
    """‖mean_i f_i‖ in [0, 1]: 1 for a collapsed batch (every embedding equal)."""
    return float(centroid(f).norm())


def conformity(f: torch.Tensor) -> torch.Tensor:
    """Per row cos(f_i, μ). If μ = 0 (a perfectly balanced batch, e.g. f and -f) every value is 0."""
    mu = centroid(f)
    nrm = mu.norm()
    if nrm <= 1e-12:
        return torch.zeros(f.shape[0], dtype=f.dtype)
    return (f @ mu) / nrm


def near_duplicates(f: torch.Tensor, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, s_ij) with i < j and s_ij >= threshold, most similar first (ties: by i, then j)."""
    if not -1.0 <= threshold <= 1.0:
        raise DiversityInputError(f"near-duplicate threshold must be a cosine in [-1, 1]; got {threshold}")
    n = f.shape[0]
    s = cosine_matrix(f)
    iu = torch.triu_indices(n, n, offset=1)
    vals = s[iu[0], iu[1]]
    keep = vals >= threshold
    pairs = [(int(i), int(j), float(v)) for i, j, v in zip(iu[0][keep], iu[1][keep], vals[keep])]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs


def duplicate_flags(n: int, pairs: list[tuple[int, int, float]]) -> list[bool]:
    """Per image: True if it is a near-duplicate of an EARLIER image (dropping these keeps one of each group)."""
    flags = [False] * n
    for _i, j, _s in pairs:
        flags[j] = True
    return flags


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the Euclidean distance to its k-th nearest OTHER row (duplicates count as neighbours at 0)."""
    n = x.shape[0]
    if not 1 <= k < n:
        raise DiversityInputError(f"k-NN radius with k={k} needs at least k+1={k + 1} embeddings; got {n}")
    d = torch.cdist(x, x)
    d.fill_diagonal_(math.inf)
    return torch.kthvalue(d, k, dim=1).values


@dataclass
class ReferenceFigures:
    """How a generated batch relates to a reference batch (same encoder). See ``compare_to_reference``."""
    n_reference: int
    k: int
    centroid_distance: float  # ‖μ - μ_ref‖, Euclidean between the centroids of the normalised embeddings
    centroid_cosine_distance: float  # 1 - cos(μ, μ_ref)
    precision: float  # fraction of generated images inside the reference manifold
    recall: float  # fraction of reference images inside the generated manifold
    coverage: float  # fraction of reference images whose k-NN ball holds a generated image
    reference_vendi: float | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def knn_precision_recall(gen: torch.Tensor, ref: torch.Tensor, k: int = 3) -> tuple[float, float, float]:
    """k-NN precision, recall (Kynkäänniemi et al. 2019) and coverage (Naeem et al. 2020) in embedding space.

    Distances are Euclidean between L2-normalised embeddings (a monotone function of the cosine, so a ball of
    radius ρ is a cosine cap). ρ_j = distance of reference r_j to its k-th nearest other reference embedding,
    γ_i = distance of generated g_i to its k-th nearest other generated embedding. Then

        precision = (1/n) Σ_i [∃ j: ‖g_i - r_j‖ <= ρ_j]   (generated images that look like the reference set)
        recall    = (1/m) Σ_j [∃ i: ‖r_j - g_i‖ <= γ_i]   (reference images the generated set reaches)
        coverage  = (1/m) Σ_j [∃ i: ‖g_i - r_j‖ <= ρ_j]   (reference neighbourhoods holding a generated image)

    "<=" as in the official precision/recall code. Needs n > k and m > k. Small sets make these coarse (steps
    of 1/n and 1/m); the paper used k = 3 with 50k images.
    """
    n, m = gen.shape[0], ref.shape[0]
    if k < 1:
        raise DiversityInputError(f"k must be >= 1; got {k}")
    if m <= k:
        raise DiversityInputError(f"k-NN precision/recall with k={k} needs more than {k} reference images; the "
                                  f"reference batch has {m}. Add reference images or lower k.")
    if n <= k:
        raise DiversityInputError(f"k-NN precision/recall with k={k} needs more than {k} generated images; the "
                                  f"batch has {n}. Use a larger batch or lower k.")
    rho = knn_radii(ref, k)
    gamma = knn_radii(gen, k)
    d = torch.cdist(gen, ref)  # [n, m]
    inside_ref = d <= rho[None, :]
    precision = float(inside_ref.any(dim=1).double().mean())
    coverage = float(inside_ref.any(dim=0).double().mean())
    recall = float((d <= gamma[:, None]).any(dim=0).double().mean())
    return precision, recall, coverage


def compare_to_reference(gen: torch.Tensor, ref: torch.Tensor, k: int = 3) -> ReferenceFigures:
    """Centroid distances and k-NN precision/recall/coverage of generated vs reference embeddings.

    Both are [n, d] / [m, d]; they are L2-normalised here. Different d (embeddings from different encoders)
    is an error: figures from different encoders are not comparable.
    """
    if not isinstance(gen, torch.Tensor) or not isinstance(ref, torch.Tensor) or gen.dim() != 2 or ref.dim() != 2:
        raise DiversityInputError("generated and reference embeddings must both be 2-D [n, d] tensors")
    if gen.shape[1] != ref.shape[1]:
        raise DiversityInputError(
            f"reference embeddings have {ref.shape[1]} dimensions but the batch's have {gen.shape[1]}: encode both "
            "with the same CLIP vision model (figures from different encoders cannot be compared)")
    g = as_embeddings(gen, "generated embeddings", min_rows=1)
    r = as_embeddings(ref, "reference embeddings", min_rows=1)
    mu, mu_r = centroid(g), centroid(r)
    cos_c = float(torch.nn.functional.cosine_similarity(mu[None], mu_r[None]).clamp(-1, 1)) \
        if mu.norm() > 1e-12 and mu_r.norm() > 1e-12 else 0.0
    p, rc, cov = knn_precision_recall(g, r, k)
    return ReferenceFigures(n_reference=r.shape[0], k=int(k), centroid_distance=float((mu - mu_r).norm()),
                            centroid_cosine_distance=1.0 - cos_c, precision=p, recall=rc, coverage=cov)
