"""Which items of a batch to label first: uncertainty sampling for a binary artifact classifier. Pure (no torch).

For a binary classifier with probability p = P(artifact), the usual uncertainty measures -- least confidence
1 - max(p, 1 - p), margin |2p - 1| and entropy H(p) = -p log2 p - (1 - p) log2(1 - p) -- all order items the same
way, by |p - 0.5| (Settles, "Active Learning Literature Survey", 2009, section 3.1). A user who decides at another
threshold t (e.g. Auto-Reject's tau) is least sure where p is nearest t, so the ranking here is by |p - t|, ties by
batch index. Non-finite p (a run that produced NaN/inf) carries no information for the classifier and is ranked
last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _finite(v: float) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def margin(p: float, threshold: float = 0.5) -> float:
    """Distance of p from the decision threshold, |p - t|: 0 = as unsure as it gets. inf for a non-finite p."""
    return abs(float(p) - float(threshold)) if _finite(p) else math.inf


def binary_entropy(p: float) -> float:
    """H(p) in bits (0 for p in {0, 1}, 1 at p = 0.5); NaN for a non-finite p."""
    if not _finite(p):
        return math.nan
    p = min(1.0, max(0.0, float(p)))
    return -sum(q * math.log2(q) for q in (p, 1.0 - p) if q > 0.0)


def uncertainty_order(p: Sequence[float], threshold: float = 0.5) -> list[int]:
    """Every batch index, least sure first (smallest |p - t|; ties: lower index; non-finite p last)."""
    return sorted(range(len(p)), key=lambda i: (margin(p[i], threshold), i))


def least_sure(p: Sequence[float], k: int, threshold: float = 0.5) -> list[int]:
    """The k items the classifier is least sure about, least sure first (at most the finite ones)."""
    k = max(0, int(k))
    return [i for i in uncertainty_order(p, threshold) if _finite(p[i])][:k]


def display_order(p: Sequence[float], order: str, threshold: float = 0.5) -> list[int]:
    """The order the thumbnails are shown in: "batch order" or "least sure first"."""
    if order == "batch order":
        return list(range(len(p)))
    if order == "least sure first":
        return uncertainty_order(p, threshold)
    raise ValueError(f"unknown order {order!r}; use 'batch order' or 'least sure first'")


def agreement(p: Sequence[float], labels: Sequence[int | None], threshold: float = 0.5) -> dict:
    """How the classifier's decisions (p >= t) compare with the user's labels (1 artifact, 0 natural, None left
    out): counts tp/fp/fn/tn over the labelled items and the accuracy (NaN if nothing was labelled)."""
    if len(p) != len(labels):
        raise ValueError(f"{len(p)} probabilities for {len(labels)} labels")
    c = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for pi, lab in zip(p, labels):
        if lab is None:
            continue
        flagged = (float(pi) >= threshold) if _finite(pi) else True  # a NaN/inf run counts as flagged
        c[("t" if bool(flagged) == bool(lab) else "f") + ("p" if flagged else "n")] += 1
    n = sum(c.values())
    c["n"] = n
    c["accuracy"] = (c["tp"] + c["tn"]) / n if n else math.nan
    return c
