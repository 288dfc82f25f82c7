"""The Vendi score of a batch of embeddings (Friedman & Dieng, "The Vendi Score", TMLR 2023). Pure torch.

With L2-normalised embeddings f_1..f_n (rows of F) and the cosine kernel K = F Fᵀ (K_ii = 1), the eigenvalues
λ of K/n are non-negative and sum to 1. The Vendi score of order q is the exponential of their Rényi entropy,
the Hill number of the spectrum:

    VS_q = (Σ λ_i^q)^(1/(1-q))        q ∉ {0, 1, ∞}
    VS_1 = exp(-Σ λ_i log λ_i)        (0 log 0 = 0; the default, "effective number of distinct images")
    VS_∞ = 1 / max λ_i
    VS_0 = number of non-zero λ_i    (the numerical rank of F)

Range 1 ≤ VS_q ≤ rank(F) ≤ min(n, d): 1 when every embedding is the same, n when they are orthogonal. Higher
means more diverse. VS_q does not increase with q. Because K = F Fᵀ, the sign of an embedding does not matter
(f and -f span the same line); CLIP image embeddings are almost never anti-correlated, so this is harmless.

F Fᵀ/n (n×n, "primal") and Fᵀ F/n (d×d, "dual") have the same non-zero eigenvalues; the dual is cheaper
when n > d. Eigenvalues are computed in float64, clipped at 0 (round-off makes tiny ones negative); those at or
below max(n, d)·ε·λ_max (ε = float64 epsilon, the numpy matrix_rank convention) count as 0, for every order;
the rest are renormalised to sum to 1.

Differences from the ``vendi_score`` package (vertaix/Vendi-Score c791c30, MIT; not used or copied here):
``score_X`` ignores its ``q`` argument (always order 1); ``q=float('inf')`` gives NaN there (only the string
``"inf"`` works); order 0 counts round-off eigenvalues above 0 (``score_K`` gives 4, not 1, for six identical vectors);
the sparse path keeps only the 6 largest eigenvalues (``eigsh`` default k=6: 2.46 instead of 20 for a 20×20
identity); ``intdiv_X`` raises TypeError. Checked by running that file on CPU; see the README.
"""

from __future__ import annotations

import math

import torch

ORDERS = ("1", "0.5", "2", "inf")  # the orders the nodes offer (any q >= 0 works here)


class DiversityInputError(ValueError):
    """Input that the diversity maths cannot use; the message says what to change."""

    __module__ = "sentinel"  # ComfyUI titles errors with module + class name: keep it short


def parse_order(q) -> float:
    """Accept 1, 0.5, "2", "inf", math.inf ...; return a float q >= 0."""
    if isinstance(q, str):
        s = q.strip().lower()
        q = math.inf if s in ("inf", "infinity", "∞") else float(s)
    q = float(q)
    if math.isnan(q) or q < 0:
        raise DiversityInputError(f"Vendi order q must be >= 0 (0, 0.5, 1, 2 or inf); got {q}")
    return q


def as_embeddings(f, name: str = "embeddings", min_rows: int = 2) -> torch.Tensor:
    """Check a [n, d] embedding matrix and return it L2-normalised in float64."""
    if not isinstance(f, torch.Tensor):
        f = torch.as_tensor(f)
    if f.dim() != 2:
        raise DiversityInputError(f"{name} must be a 2-D [n, d] tensor (one embedding per image); got shape "
                                  f"{tuple(f.shape)}")
    n, d = f.shape
    if n < min_rows:
        raise DiversityInputError(
            f"{name}: diversity needs at least {min_rows} images, got a batch of {n}. Feed a batch (e.g. "
            "EmptyLatentImage with batch_size >= 2, or join images with 'Image Batch').")
    if d < 1:
        raise DiversityInputError(f"{name} have no dimensions (shape {tuple(f.shape)})")
    f = f.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(f).all():
        bad = torch.nonzero(~torch.isfinite(f).all(dim=1)).flatten().tolist()
        raise DiversityInputError(f"{name} contain NaN/inf (rows {bad[:10]}); the encoder or the images are "
                                  "broken (check the images for NaN)")
    norms = f.norm(dim=1)
    if (norms <= 1e-12).any():
        bad = torch.nonzero(norms <= 1e-12).flatten().tolist()
        raise DiversityInputError(f"{name}: rows {bad[:10]} are zero vectors and cannot be normalised")
    return f / norms[:, None]


def spectrum(f: torch.Tensor, form: str = "auto", normalized: bool = False) -> torch.Tensor:
    """Eigenvalues of K/n (K = F Fᵀ on L2-normalised rows), float64, clipped at 0, summing to 1, descending.

    ``form``: "primal" (n×n), "dual" (d×d, Fᵀ F / n; same non-zero spectrum), or "auto" (dual when n > d).
    The primal form returns n values, the dual d; the extra ones are zeros either way.
    """
    if not normalized:
        f = as_embeddings(f)
    n, d = f.shape
    if form == "auto":
        form = "dual" if n > d else "primal"
    if form == "primal":
        m = f @ f.T
    elif form == "dual":
        m = f.T @ f
    else:
        raise DiversityInputError(f"form must be 'auto', 'primal' or 'dual'; got {form!r}")
    m = (m + m.T) / (2.0 * n)  # exact symmetry for eigvalsh
    lam = torch.linalg.eigvalsh(m).clamp_min(0.0)
    total = lam.sum()
    if total <= 0:
        raise DiversityInputError("the similarity matrix has no positive eigenvalue (all-zero embeddings?)")
    return torch.flip(lam / total, dims=[0])


def rank_tolerance(lam: torch.Tensor, size: int) -> float:
    """Eigenvalues at or below this are round-off: size · ε(float64) · λ_max (cf. numpy.linalg.matrix_rank)."""
    return float(size * torch.finfo(torch.float64).eps * lam.max())


def hill_numbers(lam: torch.Tensor, q=1.0, rank_tol: float | None = None) -> torch.Tensor:
    """exp(Rényi entropy of order q) of each probability vector along the last dim (zeros allowed, 0 log 0 = 0).

    Each row is clipped at 0 and normalised to sum 1; values at or below the round-off level (``rank_tol``,
    default ``rank_tolerance`` of the row) are set to 0 for every order, so that order 0 counts the numerical
    rank and orders < 1 are not inflated by the square roots of round-off. Returns float64 of the leading shape.
    """
    q = parse_order(q)
    lam = torch.as_tensor(lam, dtype=torch.float64).clamp_min(0.0)
    lam = lam / lam.sum(dim=-1, keepdim=True)
    if rank_tol is None:
        tol = lam.shape[-1] * torch.finfo(torch.float64).eps * lam.amax(dim=-1, keepdim=True)
    else:
        tol = torch.as_tensor(float(rank_tol), dtype=torch.float64)
    lam = torch.where(lam > tol, lam, torch.zeros_like(lam))
    lam = lam / lam.sum(dim=-1, keepdim=True)
    if q == 0:
        return (lam > 0).sum(dim=-1).to(torch.float64)
    if math.isinf(q):
        return 1.0 / lam.amax(dim=-1)
    if abs(q - 1.0) < 1e-9:  # Shannon; xlogy(0, 0) = 0
        return torch.exp(-torch.special.xlogy(lam, lam).sum(dim=-1))
    powered = torch.where(lam > 0, torch.pow(lam, q), torch.zeros_like(lam))
    return torch.exp(torch.log(powered.sum(dim=-1)) / (1.0 - q))


def hill_number(lam: torch.Tensor, q=1.0, rank_tol: float | None = None) -> float:
    """exp(Rényi entropy of order q) of one probability vector ``lam`` (zeros allowed; 0 log 0 = 0)."""
    return float(hill_numbers(torch.as_tensor(lam, dtype=torch.float64).flatten(), q, rank_tol))


def vendi_score(f, q=1.0, form: str = "auto", normalized: bool = False) -> float:
    """Vendi score of order q of the rows of ``f`` ([n, d] embeddings; L2-normalised here unless ``normalized``).

    In [1, min(n, d)]; higher = more diverse. Raises DiversityInputError for fewer than 2 rows, NaN or zero rows.
    """
    if not normalized:
        f = as_embeddings(f)
    lam = spectrum(f, form=form, normalized=True)
    return hill_number(lam, q, rank_tol=rank_tolerance(lam, max(f.shape)))  # same cut for primal and dual


def vendi_from_kernel(k: torch.Tensor, q=1.0) -> float:
    """Vendi score of order q from a precomputed similarity matrix with unit diagonal (symmetric, PSD)."""
    k = torch.as_tensor(k, dtype=torch.float64)
    if k.dim() != 2 or k.shape[0] != k.shape[1] or k.shape[0] < 1:
        raise DiversityInputError(f"kernel must be a square [n, n] matrix; got {tuple(k.shape)}")
    if not torch.allclose(torch.diagonal(k), torch.ones(k.shape[0], dtype=torch.float64), atol=1e-6):
        raise DiversityInputError("kernel must have ones on its diagonal (k(x, x) = 1); normalise it first")
    if not torch.allclose(k, k.T, atol=1e-8):
        raise DiversityInputError("kernel must be symmetric")
    n = k.shape[0]
    lam = torch.linalg.eigvalsh((k + k.T) / (2.0 * n)).clamp_min(0.0)
    return hill_number(lam, q, rank_tol=rank_tolerance(lam / lam.sum(), n))
