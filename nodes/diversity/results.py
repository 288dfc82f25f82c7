"""What the diversity nodes show on themselves, and their batch-level figures. Pure (no ComfyUI import).

Each panel's numbers are the values of the node's outputs (tests check it). The machine-readable summary that API
users read from /history (the former ``sentinel_diversity`` / ``sentinel_subset`` ui keys) is kept in the panel's
``data`` entry: ``ui["sentinel_result"][0]["data"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common.ui import col, json_safe, panel
from .subset import Selection
from .summary import DiversitySummary, _order_text

VENDI_NOTE = "Vendi score: effective number of distinct images, 1 (all alike) .. n; higher = more diverse"


@dataclass(frozen=True)
class DuplicateFigures:
    """Batch-level near-duplicate figures: how many images repeat an earlier one, whether any does, and the most
    atypical image (lowest conformity; ties: the first)."""

    n_near_duplicates: int
    any_near_duplicate: bool
    most_atypical_index: int

    @classmethod
    def of(cls, s: DiversitySummary) -> DuplicateFigures:
        n_dup = sum(bool(x) for x in s.is_duplicate)
        odd = min(range(s.n), key=lambda i: (s.conformity[i], i))
        return cls(n_dup, n_dup > 0, odd)


def duplicate_of(s: DiversitySummary) -> list[int | None]:
    """Per image: the earliest image it is a near-duplicate of (None if it is not a repeat)."""
    first: list[int | None] = [None] * s.n
    for i, j, _ in sorted(s.duplicates, key=lambda p: (p[1], p[0])):
        if first[j] is None or i < first[j]:
            first[j] = i
    return [first[i] if s.is_duplicate[i] else None for i in range(s.n)]


def diversity_panel(s: DiversitySummary) -> dict:
    """Batch Diversity: Vendi, mean similarity, centroid norm in the summary; per image its conformity and whether
    it repeats an earlier image (highlighted)."""
    d = DuplicateFigures.of(s)
    dup_of = duplicate_of(s)
    notes = [VENDI_NOTE, "conformity = cosine to the batch mean: low = atypical (an outlier), high = typical",
             f"most atypical image: {d.most_atypical_index}", f"encoder: {s.encoder}"]
    if s.reference is not None:
        r = s.reference
        notes.append(f"reference ({r.n_reference} images): centroid distance {r.centroid_distance:.4f} (lower = "
                     f"closer), k-NN precision {r.precision:.3f}, recall {r.recall:.3f} (higher = better, k={r.k})")
    notes += [f"warning: {w}" for w in s.warnings]
    p = panel(
        "Batch Diversity",
        summary=(f"Vendi {s.vendi:.3f} of at most {min(s.n, s.dim)} (order {_order_text(s.q)}); mean similarity "
                 f"{s.pairwise.mean:.3f}; centroid norm {s.centroid_norm:.3f}; {d.n_near_duplicates} near-duplicate(s)"),
        columns=[col("image", "image"),
                 col("conformity", "conformity", direction="low = atypical", fmt=".4f"),
                 col("is_near_duplicate", "near-duplicate"),
                 col("duplicate_of", "of image")],
        rows=[[i, s.conformity[i], bool(s.is_duplicate[i]), dup_of[i] if dup_of[i] is not None else ""]
              for i in range(s.n)],
        highlight=[i for i in range(s.n) if s.is_duplicate[i]], notes=notes)
    p["data"] = json_safe({**s.payload(), **d.__dict__})
    return p


def subset_panel(sel: Selection, n: int, method: str, vendi_order: str, encoder: str) -> dict:
    """Select Diverse Subset: every image of the batch, the kept ones highlighted, with the order they were chosen
    in; Vendi before/after in the summary."""
    rank = {i: r + 1 for r, i in enumerate(sel.order)}
    kept = set(sel.indices)
    p = panel(
        "Select Diverse Subset",
        summary=(f"kept {len(sel.indices)} of {n} ({method}): Vendi {sel.score_before:.3f} -> "
                 f"{sel.score_after:.3f} (higher = more diverse)"),
        columns=[col("image", "image"), col("kept", "kept"), col("chosen_as", "chosen as #")],
        rows=[[i, i in kept, rank.get(i, "")] for i in range(n)],
        highlight=sorted(kept),
        notes=[VENDI_NOTE + f" (order {vendi_order}); before = the whole batch, after = the kept images",
               f"kept indices: {','.join(map(str, sel.indices))}", f"encoder: {encoder}"])
    p["data"] = json_safe({"indices": sel.indices, "order": sel.order, "vendi_before": sel.score_before,
                           "vendi_after": sel.score_after, "method": method, "vendi_order": vendi_order, "n": n,
                           "encoder": encoder})
    return p
