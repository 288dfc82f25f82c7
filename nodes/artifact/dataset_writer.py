"""Writing labelled samples into a dataset folder (layout: classifiers/data.py). Pure (torch, Pillow for PNGs).

One sample per batch item: ``trajectories/<id>.safetensors`` (the item's TRAJECTORY, optional), ``images/<id>.png``
(optional) and one row in ``index.csv`` with the label and the similarity series, which is all training needs.
"""

from __future__ import annotations

import datetime
import os
import re
import uuid
from collections.abc import Sequence

import numpy as np
import torch

from ...classifiers.data import append_index_rows, format_series, label_name, parse_label
from ..trajectory.similarity import SimilaritySeries
from ..trajectory.trajectory import Trajectory

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, what: str = "dataset name") -> str:
    """A relative folder path of plain names (sub/folder allowed); no absolute paths, no '..'."""
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or os.path.isabs(str(name)):
        raise ValueError(f"{what} {name!r} must be a plain relative name such as 'my_artifacts' or 'sd15/hands'")
    return os.path.join(*[_SAFE.sub("_", p) for p in parts])


def parse_labels(labels: str, default: str, batch: int) -> list[int]:
    """Per-item labels from "1,0,artifact,natural" (or one label for all items if empty)."""
    if not labels.strip():
        return [parse_label(default)] * batch
    items = [s for s in re.split(r"[,\s;]+", labels.strip()) if s]
    if len(items) == 1:
        return [parse_label(items[0])] * batch
    if len(items) != batch:
        raise ValueError(f"'labels' lists {len(items)} labels for a batch of {batch}: give one per item "
                         "(e.g. '1,0,0,1' with 1 = artifact) or a single label for all")
    return [parse_label(s, f" (item {i})") for i, s in enumerate(items)]


def save_png(image: torch.Tensor, path: str) -> None:
    from PIL import Image

    arr = (image.detach().float().cpu().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def write_samples(folder: str, series: SimilaritySeries, labels: Sequence[int], trajectory: Trajectory | None = None,
                  images: torch.Tensor | None = None, group: str = "") -> list[dict]:
    """Write one sample per batch item; returns the index rows written."""
    b = series.batch_size
    if len(labels) != b:
        raise ValueError(f"{len(labels)} labels for {b} series")
    if trajectory is not None and trajectory.batch_size != b:
        raise ValueError(f"the TRAJECTORY has {trajectory.batch_size} item(s) but the series has {b}")
    if images is not None and images.shape[0] != b:
        raise ValueError(f"IMAGE has {images.shape[0]} image(s) for {b} series: connect the decoded images of the "
                         "same batch")
    os.makedirs(folder, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    src = series.source or {}
    seeds = (trajectory.meta.get("seeds") if trajectory is not None else None) or []
    rows = []
    for i in range(b):
        sid = f"{stamp}-{uuid.uuid4().hex[:8]}_{i}"
        traj_rel = img_rel = ""
        if trajectory is not None:
            traj_rel = os.path.join("trajectories", f"{sid}.safetensors")
            trajectory.item(i).save(os.path.join(folder, traj_rel), extra_meta={"label": label_name(labels[i])})
        if images is not None:
            img_rel = os.path.join("images", f"{sid}.png")
            save_png(images[i], os.path.join(folder, img_rel))
        seed = seeds[i] if i < len(seeds) else src.get("seed")
        rows.append({
            "id": sid, "naturalness": label_name(labels[i]), "next": format_series(series.values[i].tolist()),
            "metric": series.metric, "noise_frame": str(bool(series.noise_frame)).lower(), "steps": src.get("steps"),
            "group": group, "sampler": src.get("sampler"), "scheduler": src.get("scheduler"), "cfg": src.get("cfg"),
            "seed": seed, "batch_item": i, "model_family": src.get("model_family"), "trajectory": traj_rel,
            "image": img_rel, "created": datetime.datetime.now().isoformat(timespec="seconds"),
        })
    append_index_rows(folder, rows)
    return rows
