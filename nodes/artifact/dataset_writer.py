"""Writing labelled samples into a dataset folder (layout: classifiers/data.py). Pure (torch, Pillow for PNGs).

One sample per batch item: ``trajectories/<id>.safetensors`` (the item's TRAJECTORY, optional), ``images/<id>.png``
(optional) and ``samples/<id>.json`` with the label and the similarity series, which is all training needs.
Everything is checked before the first byte is written (labels, batch sizes, images, the folder's metric and
layout), so a refused input leaves the folder exactly as it was. Each file is written under a temporary name and
renamed into place, and the sample file comes last, so a reader (or another ComfyUI worker writing the same folder)
sees a sample completely or not at all.
"""

from __future__ import annotations

import datetime
import io
import os
import re
from collections.abc import Sequence

import numpy as np
import torch

from ...classifiers.data import (
    DatasetError,
    atomic_write_bytes,
    check_layout,
    claim_layout,
    label_name,
    new_batch_key,
    new_sample_id,
    parse_label,
    write_sample,
)
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


def png_bytes(image: torch.Tensor) -> bytes:
    """One IMAGE item [H, W, C] (C = 1, 3 or 4; values 0..1) as PNG bytes."""
    from PIL import Image

    arr = (image.detach().float().cpu().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def save_png(image: torch.Tensor, path: str) -> None:
    atomic_write_bytes(path, png_bytes(image))


def _check_images(images: torch.Tensor | None, b: int) -> None:
    if images is None:
        return
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"IMAGE must be a batch [n, height, width, channels] with 1, 3 or 4 channels; got {shape}")
    if images.shape[0] != b:
        raise ValueError(f"IMAGE has {images.shape[0]} image(s) for {b} series: connect the decoded images of the "
                         "same batch")


def write_samples(folder: str, series: SimilaritySeries, labels: Sequence[int], trajectory: Trajectory | None = None,
                  images: torch.Tensor | None = None, group: str = "",
                  batch_items: Sequence[int] | None = None) -> list[dict]:
    """Write one sample per batch item; returns the sample rows written. Validates everything first.
    ``batch_items``: the items' positions in the original batch when these are a selection of it (default 0..n-1)."""
    b = series.batch_size
    if len(labels) != b:
        raise ValueError(f"{len(labels)} labels for {b} series")
    if batch_items is not None and len(batch_items) != b:
        raise ValueError(f"{len(batch_items)} batch positions for {b} series")
    labels = [int(v) for v in labels]
    if any(v not in (0, 1) for v in labels):
        raise ValueError(f"labels must be 0 (natural) or 1 (artifact), got {labels}")
    if trajectory is not None and trajectory.batch_size != b:
        raise ValueError(f"the TRAJECTORY has {trajectory.batch_size} item(s) but the series has {b}")
    _check_images(images, b)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise DatasetError(f"{folder} exists and is not a folder; choose another dataset name")
    check_layout(folder, series.metric, bool(series.noise_frame))  # reads only: refuse before writing anything
    src = series.source or {}
    seeds = (trajectory.meta.get("seeds") if trajectory is not None else None) or []
    created = datetime.datetime.now().isoformat(timespec="seconds")
    rows = []
    key = new_batch_key()
    for i in range(b):
        sid = new_sample_id(i, key)
        seed = seeds[i] if i < len(seeds) else src.get("seed")
        rows.append({
            "id": sid, "naturalness": label_name(labels[i]), "next": [float(v) for v in series.values[i].tolist()],
            "metric": series.metric, "noise_frame": bool(series.noise_frame), "steps": src.get("steps"),
            "group": group, "sampler": src.get("sampler"), "scheduler": src.get("scheduler"), "cfg": src.get("cfg"),
            "seed": seed, "batch_item": int(batch_items[i]) if batch_items is not None else i,
            "model_family": src.get("model_family"),
            "trajectory": os.path.join("trajectories", f"{sid}.safetensors") if trajectory is not None else "",
            "image": os.path.join("images", f"{sid}.png") if images is not None else "", "created": created,
        })
    # ---- writing: the folder's layout first (once, atomically), then per item its files and last its sample
    claim_layout(folder, series.metric, bool(series.noise_frame))
    for i, row in enumerate(rows):
        if trajectory is not None:
            trajectory.item(i).save(os.path.join(folder, row["trajectory"]),
                                    extra_meta={"label": label_name(labels[i])})
        if images is not None:
            save_png(images[i], os.path.join(folder, row["image"]))
        write_sample(folder, row)
    return rows
