"""What the DiffSim nodes show on themselves and their batch-level figures. Pure (no ComfyUI import).

Every number in a panel is the value of an output (tests check it): per-pair / per-candidate scores, the matrix and
its per-image means, and the batch-level figures (mean, min, max, best and worst index, pass counts). DiffSim is in
[-1, 1], higher = more similar (1 = the same attention, e.g. the same image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..common.ui import col, panel

DIRECTION = "higher = more similar"
RANGE_NOTE = "DiffSim is in [-1, 1], higher = more similar (1: the same attention, e.g. the same image)"
MAX_MATRIX_COLUMNS = 16  # wider matrices are shown as per-image means only (the whole matrix is in the output)


def _finite(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def best_index(values: Sequence[float]) -> int:
    """Index of the highest finite value (ties: the lowest index); 0 if none is finite."""
    idx = [i for i, v in enumerate(values) if _finite(v)]
    return max(idx, key=lambda i: (values[i], -i)) if idx else 0


def worst_index(values: Sequence[float]) -> int:
    """Index of the lowest finite value (ties: the lowest index); 0 if none is finite."""
    idx = [i for i, v in enumerate(values) if _finite(v)]
    return min(idx, key=lambda i: (values[i], i)) if idx else 0


@dataclass(frozen=True)
class BatchFigures:
    """mean, min, max, best_index, worst_index of a list of scores (NaN-aware: NaN entries are skipped)."""

    mean: float
    min: float
    max: float
    best_index: int
    worst_index: int

    @classmethod
    def of(cls, values: Sequence[float]) -> BatchFigures:
        fin = [float(v) for v in values if _finite(v)]
        nan = float("nan")
        if not fin:
            return cls(nan, nan, nan, 0, 0)
        return cls(sum(fin) / len(fin), min(fin), max(fin), best_index(values), worst_index(values))


def run_note(det: dict) -> str:
    """One line: mode, block, t, noise level, passes and cache hits (from DiffSimExtractor.details())."""
    return (f"{det['mode']} at {det['block']} = {' '.join(str(x) for x in det['comfy_block'])}, t={det['t_paper']} "
            f"(noise step {det['noise_timestep']}, sigma {det['sigma']:.4f}), seed {det['seed']}; "
            f"{det['image_passes']} image pass(es), {det['cache_hits']} cached")


def pairs_panel(pairs: Sequence[tuple[int, int]], scores: Sequence[float], det: dict) -> dict:
    """DiffSim node: one row per pair (image_a index, image_b index, score), the best pair highlighted."""
    f = BatchFigures.of(scores)
    summary = (f"{len(scores)} pair(s): mean {f.mean:.4f}, min {f.min:.4f}, max {f.max:.4f}"
               if len(scores) > 1 else f"DiffSim {scores[0]:.4f}" if scores else "no pairs")
    return panel(
        "DiffSim", summary=summary,
        columns=[col("pair", "pair"), col("image_a", "a"), col("image_b", "b"),
                 col("similarity", "DiffSim", direction=DIRECTION, fmt=".4f")],
        rows=[[k, i, j, s] for k, ((i, j), s) in enumerate(zip(pairs, scores))],
        highlight=[f.best_index] if len(scores) > 1 else [],
        notes=[RANGE_NOTE, run_note(det)])


def matrix_panel(matrix: Sequence[Sequence[float]], per_image: Sequence[float], det: dict,
                 figures: BatchFigures | None = None) -> dict:
    """DiffSim Matrix: the matrix (rows × columns, up to 16 columns) and each image's mean similarity to the others;
    the most atypical image (lowest mean) highlighted. ``figures``: the node's off-diagonal mean/min/max (computed
    from the matrix if not given)."""
    n = len(matrix)
    f = figures or BatchFigures.of([v for i, r in enumerate(matrix) for j, v in enumerate(r) if i != j])
    odd = worst_index(per_image)
    wide = n > MAX_MATRIX_COLUMNS
    cols = [col("image", "image")]
    if not wide:
        cols += [col(f"m{j}", str(j), fmt=".3f") for j in range(n)]
    cols.append(col("per_image_mean", "mean to others", direction=DIRECTION, fmt=".4f"))
    rows = [[i, *([] if wide else list(matrix[i])), per_image[i]] for i in range(n)]
    notes = [RANGE_NOTE, "heatmap colours: fixed scale 0 (dark) .. 1 (bright), values printed in the cells",
             run_note(det)]
    if wide:
        notes.insert(0, f"{n} images: the table shows each image's mean; the whole matrix is in the 'matrix' output")
    return panel("DiffSim Matrix",
                 summary=f"{n} images: mean {f.mean:.4f} (off-diagonal), min {f.min:.4f}, max {f.max:.4f}; "
                         f"most atypical image {odd}",
                 columns=cols, rows=rows, highlight=[odd], notes=notes)


def gate_panel(scores: Sequence[float], passed: Sequence[bool], threshold: float, n_references: int,
               kept: Sequence[int], det: dict) -> dict:
    """Style Similarity Gate: one row per candidate (score, passed), the best highlighted."""
    best = best_index(scores)
    ref = "the reference" if n_references == 1 else f"the mean over {n_references} references"
    notes = [f"score = DiffSim to {ref}; a candidate passes at score >= {threshold:g}", RANGE_NOTE, run_note(det)]
    if not any(passed):
        notes.insert(0, "no candidate passed: the images output holds "
                        + (f"the best candidate ({best})" if kept else "nothing (empty batch)"))
    return panel(
        "Style Similarity Gate",
        summary=f"{sum(passed)} of {len(passed)} pass (threshold {threshold:g}); best {best} ({scores[best]:.4f})",
        columns=[col("candidate", "candidate"), col("score", "DiffSim", direction=DIRECTION, fmt=".4f"),
                 col("passed", "passed")],
        rows=[[i, s, p] for i, (s, p) in enumerate(zip(scores, passed))], highlight=[best], notes=notes)


def ipadapter_panel(name: str, spec) -> dict:
    """Load IP-Adapter Plus: what was loaded (file, model family, sizes, the CLIP vision width it needs)."""
    encoder = "CLIP ViT-H/14" if spec.embedding_dim == 1280 else f"an image encoder of width {spec.embedding_dim}"
    rows = [["file", name], ["model family", spec.family], ["cross-attention layers", len(spec.layer_widths)],
            ["image tokens", spec.num_queries], ["Resampler", f"{spec.depth} layers, width {spec.dim}, "
                                                              f"{spec.heads} heads"],
            ["needs CLIP vision", f"{encoder} (hidden width {spec.embedding_dim})"],
            ["output width", spec.output_dim]]
    return panel("IP-Adapter Plus", summary=f"{name}: {spec.family}, {len(spec.layer_widths)} layers",
                 columns=[col("what", "what"), col("value", "value")], rows=rows,
                 notes=["for DiffSim-C: connect it with the matching CLIP vision model to a DiffSim node"])
