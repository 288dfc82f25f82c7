"""Labels for Label Artifacts (click): the typed form, the editor's answer, and what the node shows. Pure.

A batch's labels are one value per item: 1 = artifact, 0 = natural, None = left out (not written to the dataset;
for images the user is unsure about). Typed as "1,0,x,1" (also artifact/natural words, '-' or '?' or 'skip' to
leave an item out; a single value labels every item).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from ...classifiers.data import DatasetError, parse_label
from ..common.ui import LOWER_IS_BETTER, col, panel
from .active_learning import agreement, binary_entropy

LEAVE_OUT_WORDS = {"x", "-", "?", "skip", "unsure", "leave_out", "left_out", "omit"}
ACTIONS = ("save", "skip", "cancel")
Labels = list  # list[int | None]


def parse_one(value: Any, where: str = "") -> int | None:
    """1 (artifact), 0 (natural) or None (leave out) from a word, a number, a bool or JSON null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value in (0, 1):
            return int(value)
        raise ValueError(f"label {value!r}{where} must be 1 (artifact), 0 (natural) or x (leave out)")
    s = str(value).strip().lower()
    if s in LEAVE_OUT_WORDS:
        return None
    try:
        return parse_label(s, where)
    except DatasetError:
        raise ValueError(f"unknown label {value!r}{where}: use 1 or 'artifact', 0 or 'natural', x to leave the "
                         "item out") from None


def parse_label_string(text: str | None, batch: int) -> Labels | None:
    """The typed labels of a batch of ``batch`` items; None when the text is empty (then the editor asks)."""
    if text is None or not str(text).strip():
        return None
    items = [s for s in re.split(r"[,\s;]+", str(text).strip()) if s]
    if len(items) == 1:
        return [parse_one(items[0], " (for every item)")] * batch
    if len(items) != batch:
        raise ValueError(f"'labels' lists {len(items)} values for a batch of {batch} images: give one per image, "
                         "e.g. '1,0,x,0' (1 = artifact, 0 = natural, x = leave out), or a single value for all, or "
                         "leave it empty to label by clicking in the editor")
    return [parse_one(s, f" (item {i})") for i, s in enumerate(items)]


def labels_string(labels: Sequence[int | None]) -> str:
    """The typed form of labels, e.g. '1,0,x,1' (what 'labels' accepts)."""
    return ",".join("x" if v is None else str(int(v)) for v in labels)


def parse_response(payload: Any, batch: int) -> tuple[str, Labels]:
    """The editor's answer {"action": "save"|"skip"|"cancel", "labels": [1, 0, null, ...]} checked against the
    batch; ValueError saying what is wrong (the request stays open)."""
    if not isinstance(payload, dict):
        raise ValueError("the answer must be a JSON object with 'action' and 'labels'")
    action = payload.get("action")
    if action not in ACTIONS:
        raise ValueError(f"'action' must be one of {list(ACTIONS)}, got {action!r}")
    labels = payload.get("labels")
    if action == "cancel" and labels is None:
        return action, [None] * batch
    if not isinstance(labels, list):
        raise ValueError("'labels' must be a list with one value per image (1, 0 or null)")
    if len(labels) != batch:
        raise ValueError(f"'labels' has {len(labels)} values for a batch of {batch} images")
    return action, [parse_one(v, f" (item {i})") for i, v in enumerate(labels)]


def counts(labels: Sequence[int | None]) -> dict[str, int]:
    return {"artifact": sum(1 for v in labels if v == 1), "natural": sum(1 for v in labels if v == 0),
            "left_out": sum(1 for v in labels if v is None)}


def label_panel(labels: Sequence[int | None], p: Sequence[float], marked: Sequence[int], threshold: float,
                model: str, outcome: str, folder_rel: str = "", size: int | None = None, notes=()) -> dict:
    """What the node shows after the batch was answered: one row per image (label, P(artifact), the classifier's
    certainty and whether it agrees), the least-sure items highlighted."""
    c = counts(labels)
    agree = agreement(p, labels, threshold)
    rank = {i: r + 1 for r, i in enumerate(marked)}
    rows = []
    for i, lab in enumerate(labels):
        pi = float(p[i])
        flagged = pi >= threshold if math.isfinite(pi) else True
        rows.append([i, {1: "artifact", 0: "natural", None: "left out"}[lab], pi, binary_entropy(pi),
                     rank.get(i), None if lab is None else bool(flagged) == bool(lab)])
    if outcome == "save":
        summary = (f"saved {c['artifact'] + c['natural']} ({c['artifact']} artifact, {c['natural']} natural"
                   + (f", {c['left_out']} left out" if c["left_out"] else "") + f") to {folder_rel}"
                   + (f": {size} samples in the dataset" if size is not None else ""))
    else:
        summary = f"skipped: nothing written to {folder_rel}"
    notes = [f"classifier: {model}; it agreed with the labels on {agree['tp'] + agree['tn']} of {agree['n']} "
             f"labelled images (P >= {threshold:g} = artifact)" if agree["n"] else f"classifier: {model}",
             *[str(n) for n in notes]]
    return panel("Label Artifacts", summary=summary,
                 columns=[col("item"), col("label"),
                          col("p_artifact", "P(artifact)", direction=LOWER_IS_BETTER, fmt=".3f"),
                          col("entropy", "uncertainty (bits)", fmt=".2f",
                              tooltip="binary entropy of P: 1 = the classifier cannot tell, 0 = sure"),
                          col("least_sure", "least sure #", tooltip="rank among the items marked for a close look"),
                          col("agrees", "classifier agrees")],
                 rows=rows, highlight=list(marked), notes=notes)
