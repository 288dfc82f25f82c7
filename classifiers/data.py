"""Labelled similarity series: reading the CSV format and dataset folders, writing dataset index rows.

CSV format (the Similarity-Trajectory authors' ``dataset.csv`` and this pack's dataset index): one row per image,
columns ``naturalness`` (``unnatural`` = artifact, ``natural`` = none; also accepted: artifact/clean, 1/0,
true/false, yes/no) and ``next`` (a JSON list: the similarity series), optional ``id``, ``group`` (e.g. the prompt,
for grouped CV), ``metric`` and ``noise_frame`` (what produced the series; the authors' file has neither: it is
DreamSim with the noise frame first, the defaults here).

Dataset folder (written by the "Save Labelled Trajectory" node)::

    <folder>/index.csv                 the CSV above, one row per sample, plus columns listed in INDEX_COLUMNS
    <folder>/trajectories/<id>.safetensors   the sample's TRAJECTORY (x0 per step, ...), a regular trajectory file
    <folder>/images/<id>.png           the decoded image, when one was given

Reading a folder only needs index.csv, so training needs neither ComfyUI nor the trajectory files.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .features import resample_series

ARTIFACT_WORDS = {"unnatural", "artifact", "artifacts", "1", "true", "yes", "bad", "reject"}
NATURAL_WORDS = {"natural", "clean", "none", "0", "false", "no", "good", "ok", "accept"}
INDEX_FILE = "index.csv"
INDEX_COLUMNS = ("id", "naturalness", "next", "metric", "noise_frame", "steps", "group", "sampler", "scheduler",
                 "cfg", "seed", "batch_item", "model_family", "trajectory", "image", "created")
PAPER_DEFAULTS = {"metric": "dreamsim", "noise_frame": True}


class DatasetError(ValueError):
    """A dataset file or folder cannot be used; the message says what is wrong and what to do."""


def parse_label(value: str, where: str = "") -> int:
    """1 = artifact, 0 = natural."""
    v = str(value).strip().lower()
    if v in ARTIFACT_WORDS:
        return 1
    if v in NATURAL_WORDS:
        return 0
    raise DatasetError(f"unknown label {value!r}{where}; use 'unnatural' (artifact) or 'natural'")


def label_name(label: int) -> str:
    return "unnatural" if int(label) == 1 else "natural"


def _parse_bool(value: str) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Dataset:
    """Series X [n, L] (float64), labels y [n] (1 = artifact), ids, groups, and the series' metric/layout."""

    X: np.ndarray
    y: np.ndarray
    ids: list[str]
    metric: str
    noise_frame: bool
    groups: list[str] = field(default_factory=list)
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def length(self) -> int:
        return int(self.X.shape[1])

    def summary(self) -> str:
        return (f"{self.n} series of {self.length} values ({int(self.y.sum())} artifact, {int((self.y == 0).sum())} "
                f"natural), metric {self.metric}, noise_frame {self.noise_frame}")

    def prefix(self, k: int) -> Dataset:
        """The first k values of every series (for prefix / early-rejection classifiers)."""
        if not 1 <= k <= self.length:
            raise DatasetError(f"prefix {k} is outside 1..{self.length}, the series length")
        return Dataset(self.X[:, :k].copy(), self.y, self.ids, self.metric, self.noise_frame, self.groups,
                       self.source, list(self.notes))

    def training_info(self) -> dict:
        return {"n": self.n, "n_artifact": int(self.y.sum()), "n_natural": int((self.y == 0).sum()),
                "source": os.path.basename(self.source.rstrip(os.sep)) if self.source else "", "length": self.length}


def read_dataset(path: str | os.PathLike, metric: str | None = None, noise_frame: bool | None = None,
                 series_column: str = "next", label_column: str = "naturalness") -> Dataset:
    """Read a CSV file or a dataset folder (its index.csv). ``metric``/``noise_frame`` are used where the file
    does not say (default: the paper's DreamSim layout); a file that says otherwise wins, with a note."""
    path = os.fspath(path)
    csv_path = os.path.join(path, INDEX_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(csv_path):
        if os.path.isdir(path):
            raise DatasetError(f"{path} has no {INDEX_FILE}: it is not a dataset folder written by 'Save Labelled "
                               "Trajectory' (or the folder is empty)")
        raise DatasetError(f"dataset not found: {path}")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for c in (series_column, label_column):
            if c not in cols:
                raise DatasetError(f"{csv_path} has no '{c}' column (columns: {cols}); expected the similarity "
                                   f"series in '{series_column}' and the label in '{label_column}'")
        rows = list(reader)
    if not rows:
        raise DatasetError(f"{csv_path} holds no rows")
    series, labels, ids, groups, metrics, layouts = [], [], [], [], [], []
    notes: list[str] = []
    dropped = 0
    for i, r in enumerate(rows):
        where = f" in row {i + 2} of {os.path.basename(csv_path)}"
        try:
            vals = json.loads(r[series_column])
        except (json.JSONDecodeError, TypeError) as e:
            raise DatasetError(f"the '{series_column}' value{where} is not a JSON list ({e})") from e
        if not isinstance(vals, list) or not vals:
            raise DatasetError(f"the '{series_column}' value{where} must be a non-empty JSON list of numbers")
        try:
            v = np.array([float("nan") if x is None else float(x) for x in vals], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"the '{series_column}' list{where} holds a non-number ({e})") from e
        if not np.isfinite(v).all():
            dropped += 1
            continue
        series.append(v)
        labels.append(parse_label(r[label_column], where))
        rid = (r.get("id") or "").strip() or str(i)
        ids.append(rid)
        groups.append((r.get("group") or "").strip() or rid.rsplit("_", 1)[0])
        metrics.append((r.get("metric") or "").strip() or None)
        layouts.append(_parse_bool(r["noise_frame"]) if (r.get("noise_frame") or "").strip() else None)
    if dropped:
        notes.append(f"{dropped} row(s) with non-finite values (NaN/inf in sampling) were left out")
    if not series:
        raise DatasetError(f"{csv_path}: no usable rows")
    found_metrics = {m for m in metrics if m}
    if len(found_metrics) > 1:
        raise DatasetError(f"{csv_path} mixes similarity metrics {sorted(found_metrics)}; a classifier is trained on "
                           "one metric: split the dataset")
    found_layouts = {x for x in layouts if x is not None}
    if len(found_layouts) > 1:
        raise DatasetError(f"{csv_path} mixes series with and without the noise frame; use one layout")
    file_metric = found_metrics.pop() if found_metrics else None
    file_layout = found_layouts.pop() if found_layouts else None
    if file_metric and metric and metric != file_metric:
        notes.append(f"the file says metric {file_metric}; '{metric}' was ignored")
    if file_layout is not None and noise_frame is not None and noise_frame != file_layout:
        notes.append(f"the file says noise_frame {file_layout}; {noise_frame} was ignored")
    use_metric = file_metric or metric or PAPER_DEFAULTS["metric"]
    use_layout = file_layout if file_layout is not None else (
        noise_frame if noise_frame is not None else PAPER_DEFAULTS["noise_frame"])
    lengths = Counter(len(v) for v in series)
    length = lengths.most_common(1)[0][0]
    if len(lengths) > 1:
        notes.append(f"series lengths differ ({dict(lengths)}); all were resampled to {length} values")
        series = [v if len(v) == length else resample_series(v[None], length, keep_first=use_layout)[0]
                  for v in series]
    y = np.array(labels, dtype=np.int64)
    return Dataset(np.vstack(series), y, ids, use_metric, bool(use_layout), groups, path, notes)


# ----------------------------------------------------------------------------------------------- writing
def format_series(values) -> str:
    """JSON list of a series (non-finite values -> null)."""
    return json.dumps([float(v) if math.isfinite(float(v)) else None for v in values])


def append_index_rows(folder: str | os.PathLike, rows: list[dict]) -> str:
    """Append rows (dicts with INDEX_COLUMNS keys) to <folder>/index.csv, writing the header for a new file."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, INDEX_FILE)
    new = not os.path.isfile(path) or os.path.getsize(path) == 0
    if not new:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if header != list(INDEX_COLUMNS):
            raise DatasetError(f"{path} has columns {header}, not those of a Diffusion Sentinel dataset; choose "
                               "another dataset name")
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(INDEX_COLUMNS), extrasaction="raise")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in INDEX_COLUMNS})
    return path


def existing_ids(folder: str | os.PathLike) -> set[str]:
    path = os.path.join(os.fspath(folder), INDEX_FILE)
    if not os.path.isfile(path):
        return set()
    with open(path, newline="", encoding="utf-8") as f:
        return {r.get("id", "") for r in csv.DictReader(f)}
