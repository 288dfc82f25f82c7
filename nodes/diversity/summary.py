"""Every figure of one batch in one object, and its text report and UI payload. Pure torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .geometry import (
    PairwiseStats,
    ReferenceFigures,
    centroid_norm,
    compare_to_reference,
    conformity,
    duplicate_flags,
    near_duplicates,
    pairwise_stats,
)
from .vendi import as_embeddings, parse_order, vendi_score

SMALL_BATCH = 8  # below this the Vendi score and the spread are noisy (docs/methods.md §5.1)
MAX_LISTED_PAIRS = 100  # near-duplicate pairs written into the text output


@dataclass
class DiversitySummary:
    encoder: str
    n: int
    dim: int
    q: float
    vendi: float
    pairwise: PairwiseStats
    centroid_norm: float
    conformity: list[float]
    duplicate_threshold: float
    duplicates: list[tuple[int, int, float]]
    is_duplicate: list[bool]
    reference: ReferenceFigures | None = None

    @property
    def warnings(self) -> list[str]:
        w = []
        if self.n < SMALL_BATCH:
            w.append(f"only {self.n} images: the Vendi score and the similarity spread are noisy below "
                     f"{SMALL_BATCH}")
        return w

    def payload(self) -> dict:
        """JSON-safe dict for the node's ui data (no NaN/inf: missing values are None)."""
        ref = None
        if self.reference is not None:
            ref = {k: _finite(v) for k, v in self.reference.as_dict().items() if k != "extra"}
        return {
            "encoder": self.encoder, "n": self.n, "dim": self.dim, "order": _order_text(self.q),
            "vendi": _finite(self.vendi), "pairwise": {k: _finite(v) for k, v in self.pairwise.as_dict().items()},
            "centroid_norm": _finite(self.centroid_norm), "conformity": [_finite(c) for c in self.conformity],
            "duplicate_threshold": self.duplicate_threshold,
            "duplicates": [[i, j, round(s, 6)] for i, j, s in self.duplicates[:MAX_LISTED_PAIRS]],
            "duplicate_count": len(self.duplicates), "reference": ref, "warnings": self.warnings,
        }

    def text(self) -> str:
        p = self.pairwise
        lo = min(range(self.n), key=lambda i: self.conformity[i])
        hi = max(range(self.n), key=lambda i: self.conformity[i])
        lines = [
            f"encoder: {self.encoder}",
            f"images: {self.n} (embedding dim {self.dim})",
            f"Vendi score (order {_order_text(self.q)}): {self.vendi:.4f} of at most {min(self.n, self.dim)} "
            "(effective number of distinct images)",
            f"pairwise cosine: mean {p.mean:.4f}, std {p.std:.4f}, min {p.min:.4f}, max {p.max:.4f} "
            f"({p.pairs} pairs)",
            f"centroid norm: {self.centroid_norm:.4f} (1 = every image the same)",
            f"conformity cos(f_i, centroid): lowest {self.conformity[lo]:.4f} (image {lo}), highest "
            f"{self.conformity[hi]:.4f} (image {hi})",
            f"near-duplicates (cosine >= {self.duplicate_threshold:g}): "
            + (format_pairs(self.duplicates) if self.duplicates else "none"),
        ]
        r = self.reference
        if r is not None:
            lines.append(
                f"reference ({r.n_reference} images): centroid distance {r.centroid_distance:.4f} (cosine distance "
                f"{r.centroid_cosine_distance:.4f}); k-NN (k={r.k}) precision {r.precision:.3f}, recall "
                f"{r.recall:.3f}, coverage {r.coverage:.3f}"
                + (f"; reference Vendi {r.reference_vendi:.4f}" if r.reference_vendi is not None else ""))
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _order_text(q: float) -> str:
    return "inf" if math.isinf(q) else f"{q:g}"


def format_pairs(pairs: list[tuple[int, int, float]], limit: int = MAX_LISTED_PAIRS) -> str:
    """'0-3 (0.9812), 2-5 (0.9620)' for at most ``limit`` pairs, then '... (+N more)'."""
    txt = ", ".join(f"{i}-{j} ({s:.4f})" for i, j, s in pairs[:limit])
    if len(pairs) > limit:
        txt += f", ... (+{len(pairs) - limit} more)"
    return txt


def summarize(emb: torch.Tensor, encoder: str, q=1.0, duplicate_threshold: float = 0.95,
              reference: torch.Tensor | None = None, k: int = 3) -> DiversitySummary:
    """All batch figures from raw [n, d] embeddings (normalised here), optionally against reference embeddings."""
    q = parse_order(q)
    f = as_embeddings(emb, "batch embeddings")
    n, d = f.shape
    pairs = near_duplicates(f, duplicate_threshold)
    ref = None
    if reference is not None:
        ref = compare_to_reference(f, reference, k)
        ref.reference_vendi = vendi_score(reference, q) if reference.shape[0] >= 2 else None
    return DiversitySummary(
        encoder=encoder, n=n, dim=d, q=q, vendi=vendi_score(f, q, normalized=True), pairwise=pairwise_stats(f),
        centroid_norm=centroid_norm(f), conformity=[float(c) for c in conformity(f)],
        duplicate_threshold=float(duplicate_threshold), duplicates=pairs, is_duplicate=duplicate_flags(n, pairs),
        reference=ref)
