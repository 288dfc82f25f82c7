"""What the artifact nodes show on themselves (panels of nodes/common/ui.py). Pure: no ComfyUI import.

Each panel mirrors the node's outputs (the tests compare them value by value).
"""

from __future__ import annotations

from ..common.ui import HIGHER_IS_BETTER, LOWER_IS_BETTER, col, panel
from .scoring import ArtifactScores

P_COL = col("p_artifact", "P(artifact)", direction=LOWER_IS_BETTER, fmt=".3f",
            tooltip="probability that the image has artifacts (0..1)")


def predict_panel(scores: ArtifactScores) -> dict:
    b = scores.batch_summary()
    flagged = [i for i, f in enumerate(scores.is_artifact) if f]
    rows = [[i, scores.p[i], scores.is_artifact[i], scores.d_max[i] if i < len(scores.d_max) else None,
             scores.d_max_relative[i] if i < len(scores.d_max_relative) else None] for i in range(len(scores.p))]
    summary = (f"{b['n_artifacts']} of {len(scores.p)} flagged (P >= {scores.threshold:g}); best item "
               f"{b['best_index']}")
    notes = [f"model: {scores.model} on {scores.metric} series"] + list(scores.notes)
    return panel("Artifact Predict", summary=summary,
                 columns=[col("item"), P_COL, col("is_artifact", "artifact"),
                          col("d_max", "D_max (last 60%)", direction=LOWER_IS_BETTER, fmt=".4f"),
                          col("d_max_relative", "D_max / range", direction=LOWER_IS_BETTER, fmt=".3f")],
                 rows=rows, highlight=flagged, notes=notes)


def filter_panel(p: list[float], kept: list[int], threshold: float, mode: str, note: str = "") -> dict:
    rows = [[i, p[i], i in kept] for i in range(len(p))]
    return panel("Filter Batch by Artifact",
                 summary=f"kept {len(kept)} of {len(p)}: [{','.join(str(i) for i in kept)}] ({mode}"
                         + (f", P < {threshold:g}" if mode == "below threshold" else "") + ")",
                 columns=[col("item"), col("p", "score", direction=LOWER_IS_BETTER, fmt=".3f"), col("kept")],
                 rows=rows, highlight=kept, notes=[note] if note else [])


def autoreject_panel(seeds: list[int], p: list[float], accepted: list[bool], tries_per_item: list[int],
                     tries_used: int, tau: float, evals: int, evals_plain: int, notes=()) -> dict:
    rows = [[i, seeds[i], tries_per_item[i], p[i], accepted[i]] for i in range(len(p))]
    saved = (1 - evals / evals_plain) if evals_plain else 0.0
    summary = (f"{sum(accepted)} of {len(p)} accepted (P < {tau:g}) after {tries_used} tr{'y' if tries_used == 1 else 'ies'}; "
               f"{evals} image model evaluations" + (f" ({saved:.0%} saved by early rejection)" if saved > 0 else ""))
    return panel("KSampler (Auto-Reject)", summary=summary,
                 columns=[col("item"), col("seed_used", "seed"), col("tries"), P_COL, col("accepted")],
                 rows=rows, highlight=[i for i, a in enumerate(accepted) if not a], notes=[str(n) for n in notes])


def train_panel(fname: str, path: str, acc: float, auc: float, data_summary: str, describe: str,
                notes=()) -> dict:
    return panel("Train Artifact Classifier", summary=f"wrote {path}",
                 columns=[col("file"), col("cv_accuracy", "CV accuracy", direction=HIGHER_IS_BETTER, fmt=".3f"),
                          col("cv_auc", "CV ROC AUC", direction=HIGHER_IS_BETTER, fmt=".3f")],
                 rows=[[fname, acc, auc]],
                 notes=[f"data: {data_summary}", describe,
                        "refresh the node list (R) to pick it in the classifier combos", *[str(n) for n in notes]])


def save_labelled_panel(folder_rel: str, folder: str, rows: list[dict], size: int) -> dict:
    n_art = sum(1 for r in rows if r["naturalness"] == "unnatural")
    return panel("Save Labelled Trajectory",
                 summary=f"{folder_rel}: +{len(rows)} ({n_art} artifact), {size} samples in the dataset",
                 columns=[col("item"), col("label"), col("id"), col("trajectory"), col("image")],
                 rows=[[r["batch_item"], "artifact" if r["naturalness"] == "unnatural" else "natural", r["id"],
                        r["trajectory"] or "-", r["image"] or "-"] for r in rows],
                 notes=[f"written to {folder} (one file per sample in samples/)"])
