"""Choosing batch items by a score and taking them out of LATENT / IMAGE / MASK consistently. Pure torch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

MODES = ("below threshold", "best k")
ORDERS = ("original", "best first")


def clean_scores(p: Sequence[float]) -> list[float]:
    """Scores as floats; NaN/None (an item that could not be scored) counts as the worst score, 1."""
    out = []
    for v in p:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        out.append(f if math.isfinite(f) else 1.0)
    return out


def choose(p: Sequence[float], mode: str = "below threshold", threshold: float = 0.5, k: int = 1,
           order: str = "original") -> list[int]:
    """Indices to keep. "below threshold": items with p < threshold; "best k": the k lowest p (ties: lower index).

    ``order``: "original" keeps batch order, "best first" sorts the kept items by p (ties: lower index).
    """
    s = clean_scores(p)
    ranked = sorted(range(len(s)), key=lambda i: (s[i], i))
    if mode == "below threshold":
        keep = [i for i in ranked if s[i] < threshold]
    elif mode == "best k":
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        keep = ranked[:k]
    else:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if order == "original":
        return sorted(keep)
    if order == "best first":
        return keep
    raise ValueError(f"unknown order {order!r}; choose one of {ORDERS}")


def indices_string(idx: Sequence[int]) -> str:
    """"0,2,3": the pick_list format of cg-image-filter."""
    return ",".join(str(int(i)) for i in idx)


def _take(t: torch.Tensor, idx: list[int], batch: int, what: str, allow_single: bool = True) -> torch.Tensor:
    if t.shape[0] == batch:
        return t.index_select(0, torch.tensor(idx, dtype=torch.long, device=t.device))
    if allow_single and t.shape[0] == 1:
        return t  # one entry shared by every item (broadcast): stays as it is
    raise ValueError(f"{what} has batch size {t.shape[0]} but the scores are for {batch} item(s): connect the "
                     f"{what} that belongs to the scored batch")


def take_latent(latent: dict, idx: list[int], batch: int) -> dict:
    """A LATENT holding only the kept items, in ``idx`` order (samples, noise_mask, batch_index in step)."""
    samples = latent["samples"]
    out = dict(latent)
    out["samples"] = _take(samples, idx, batch, "LATENT", allow_single=False)
    if latent.get("noise_mask") is not None:
        nm = latent["noise_mask"]
        out["noise_mask"] = _take(nm, idx, batch, "LATENT noise_mask") if nm.ndim >= 3 else nm
    if latent.get("batch_index") is not None:
        bi = list(latent["batch_index"])
        if len(bi) != batch:
            raise ValueError(f"LATENT batch_index has {len(bi)} entries for {batch} item(s)")
        out["batch_index"] = [bi[i] for i in idx]
    return out


def take_image(image: torch.Tensor, idx: list[int], batch: int) -> torch.Tensor:
    return _take(image, idx, batch, "IMAGE", allow_single=False)


def take_mask(mask: torch.Tensor, idx: list[int], batch: int) -> torch.Tensor:
    if mask.ndim == 2:  # one [H, W] mask for the whole batch
        return mask
    return _take(mask, idx, batch, "MASK")


def concat_trajectories(items: Sequence, meta_update: dict | None = None):
    """One TRAJECTORY from single-run trajectories with the same steps (e.g. the chosen tries of every item).

    Raises ValueError if their step counts or latent shapes differ (adaptive samplers pick their own steps).
    """
    from dataclasses import replace

    from ..trajectory.trajectory import Trajectory

    items = list(items)
    if not items:
        raise ValueError("no trajectories to concatenate")
    first = items[0]
    for t in items[1:]:
        if t.x0.shape[1:] != first.x0.shape[1:] or not torch.allclose(t.sigmas, first.sigmas, rtol=1e-5, atol=1e-7):
            raise ValueError("the chosen tries recorded different steps (an adaptive sampler?), so their "
                             "trajectories cannot be put in one batch")

    def cat(name):
        vals = [getattr(t, name) for t in items]
        if any(v is None for v in vals):
            return None
        return torch.cat(vals, dim=0)

    names = ("x0", "x", "x0_cond", "x0_uncond", "noise_frame", "final")
    kw = {n: cat(n) for n in names}
    out: Trajectory = replace(first, meta={**first.meta, **(meta_update or {})}, **kw)
    return out
