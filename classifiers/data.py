"""Labelled similarity series: reading the CSV format and dataset folders, writing dataset index rows.

CSV format (the Similarity-Trajectory authors' ``dataset.csv`` and this pack's dataset index): one row per image,
columns ``naturalness`` (``unnatural`` = artifact, ``natural`` = none; also accepted: artifact/clean, 1/0,
true/false, yes/no) and ``next`` (a JSON list: the similarity series), optional ``id``, ``group`` (e.g. the prompt,
for grouped CV), ``metric`` and ``noise_frame`` (what produced the series; the authors' file has neither: it is
DreamSim with the noise frame first, the defaults here).

Dataset folder (written by the "Save Labelled Trajectory" node), one file per sample so that several ComfyUI
workers can add to one folder at the same time without losing or corrupting anything::

    <folder>/dataset.json                    the folder's similarity metric and layout (created once, atomically)
    <folder>/samples/<id>.json               one sample: label, series and the INDEX_COLUMNS fields
    <folder>/trajectories/<id>.safetensors   the sample's TRAJECTORY (x0 per step, ...), a regular trajectory file
    <folder>/images/<id>.png                 the decoded image, when one was given

Every file is written under a temporary name and renamed into place (``os.replace``), and ids are unique
(time + random), so a reader sees a sample completely or not at all. The index is generated on read: reading a
folder lists ``samples/``. Folders written by earlier versions kept every row in ``<folder>/index.csv``; those rows
are still read (and merged with ``samples/``), and that file is never written again. Reading a folder only needs
the sample files, so training needs neither ComfyUI nor the trajectory files.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .features import resample_series
from .safefile import HeaderError, loads_bounded

ARTIFACT_WORDS = {"unnatural", "artifact", "artifacts", "1", "true", "yes", "bad", "reject"}
NATURAL_WORDS = {"natural", "clean", "none", "0", "false", "no", "good", "ok", "accept"}
INDEX_FILE = "index.csv"  # the single-file index of folders written by earlier versions (read, never written)
SAMPLES_DIR = "samples"
DATASET_FILE = "dataset.json"
SAMPLE_FORMAT = "diffusion-sentinel/labelled-sample"
DATASET_FORMAT = "diffusion-sentinel/artifact-dataset"
MAX_SAMPLE_BYTES = 4 * 1024 * 1024
INDEX_COLUMNS = ("id", "naturalness", "next", "metric", "noise_frame", "steps", "group", "sampler", "scheduler",
                 "cfg", "seed", "batch_item", "model_family", "trajectory", "image", "created")
PAPER_DEFAULTS = {"metric": "dreamsim", "noise_frame": True}


class DatasetError(ValueError):
    """A dataset file or folder cannot be used; the message says what is wrong and what to do."""

    __module__ = "sentinel"


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
    """Read a CSV file or a dataset folder (its samples, and an earlier version's index.csv). ``metric``/
    ``noise_frame`` are used where the file does not say (default: the paper's DreamSim layout); a file that says otherwise wins, with a note."""
    path = os.fspath(path)
    if os.path.isdir(path):
        rows, csv_path = folder_rows(path), path
        if not rows:
            raise DatasetError(f"{path} holds no samples: it is not a dataset folder written by 'Save Labelled "
                               "Trajectory' (or nothing was saved into it yet)")
    else:
        csv_path = path
        if not os.path.isfile(path):
            raise DatasetError(f"dataset not found: {path}")
        rows = _csv_rows(path, series_column, label_column)
    if not rows:
        raise DatasetError(f"{csv_path} holds no rows")
    series, labels, ids, groups, metrics, layouts = [], [], [], [], [], []
    notes: list[str] = []
    dropped = 0
    for i, r in enumerate(rows):
        where = r.get("_where") or f" in row {i + 2} of {os.path.basename(csv_path)}"
        vals = r.get(series_column)
        if isinstance(vals, str):
            try:
                vals = loads_bounded(vals, f"the '{series_column}' value{where}", max_depth=2)
            except HeaderError as e:
                raise DatasetError(str(e)) from e
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
        labels.append(parse_label(r.get(label_column), where))
        rid = str(r.get("id") or "").strip() or str(i)
        ids.append(rid)
        groups.append(str(r.get("group") or "").strip() or rid.rsplit("_", 1)[0])
        metrics.append(str(r.get("metric") or "").strip() or None)
        nf = r.get("noise_frame")
        layouts.append(nf if isinstance(nf, bool) else (_parse_bool(nf) if str(nf or "").strip() else None))
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


def _csv_rows(path: str, series_column: str = "next", label_column: str = "naturalness") -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for c in (series_column, label_column):
            if c not in cols:
                raise DatasetError(f"{path} has no '{c}' column (columns: {cols}); expected the similarity "
                                   f"series in '{series_column}' and the label in '{label_column}'")
        rows = list(reader)
    if not rows:
        raise DatasetError(f"{path} holds no rows")
    return rows


def legacy_rows(folder: str | os.PathLike) -> list[dict]:
    """The rows of an earlier version's ``index.csv`` (empty if there is none); refuses a foreign index.csv."""
    path = os.path.join(os.fspath(folder), INDEX_FILE)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return []
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    if header != list(INDEX_COLUMNS):
        raise DatasetError(f"{path} has columns {header}, not those of a Diffusion Sentinel dataset; choose "
                           "another dataset name")
    rows = _csv_rows(path)
    for i, r in enumerate(rows):
        r["_where"] = f" in row {i + 2} of {path}"
    return rows


def read_sample(path: str) -> dict:
    """One ``samples/<id>.json`` file as a row dict; DatasetError naming the file if it is not one."""
    base = os.path.basename(path)
    if os.path.getsize(path) > MAX_SAMPLE_BYTES:
        raise DatasetError(f"{path} is too large to be a sample file; remove it from the dataset folder")
    try:
        with open(path, encoding="utf-8") as f:
            row = loads_bounded(f.read(), f"sample file {base}", max_depth=3)
    except (HeaderError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: {e}; remove or fix that file") from e
    if not isinstance(row, dict) or row.get("format") != SAMPLE_FORMAT:
        raise DatasetError(f"{path} is not a Diffusion Sentinel sample file; remove it from {SAMPLES_DIR}/")
    row["_where"] = f" in {path}"
    return row


def folder_rows(folder: str | os.PathLike) -> list[dict]:
    """Every sample of a dataset folder: an earlier version's index.csv rows, then ``samples/*.json`` (sorted by
    name, i.e. by time of writing). An id present in both counts once (the sample file wins)."""
    folder = os.fspath(folder)
    sdir = os.path.join(folder, SAMPLES_DIR)
    new = []
    if os.path.isdir(sdir):
        for name in sorted(os.listdir(sdir)):
            if name.endswith(".json") and not name.startswith("."):
                new.append(read_sample(os.path.join(sdir, name)))
    ids = {str(r.get("id")) for r in new}
    return [r for r in legacy_rows(folder) if str(r.get("id")) not in ids] + new


def dataset_layout(folder: str | os.PathLike) -> tuple[str | None, bool | None]:
    """(metric, noise_frame) the folder's samples use, or (None, None) for an empty or new folder.

    Read from ``dataset.json``; for a folder of an earlier version, from its index.csv rows.
    """
    folder = os.fspath(folder)
    path = os.path.join(folder, DATASET_FILE)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                d = loads_bounded(f.read(), DATASET_FILE, max_depth=2)
        except (HeaderError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: {e}; this is not a usable dataset folder, choose another name") from e
        if not isinstance(d, dict) or d.get("format") != DATASET_FORMAT:
            raise DatasetError(f"{path} is not a Diffusion Sentinel dataset description; choose another name")
        return d.get("metric"), d.get("noise_frame")
    rows = folder_rows(folder)
    metrics = {str(r.get("metric") or "").strip() for r in rows} - {""}
    layouts = {(r["noise_frame"] if isinstance(r.get("noise_frame"), bool) else _parse_bool(r["noise_frame"]))
               for r in rows if str(r.get("noise_frame") or "").strip()}
    if len(metrics) > 1 or len(layouts) > 1:
        raise DatasetError(f"{folder} already mixes metrics {sorted(metrics)} / layouts {sorted(layouts)}; split it")
    return (metrics.pop() if metrics else None), (layouts.pop() if layouts else None)


def check_layout(folder: str | os.PathLike, metric: str, noise_frame: bool) -> None:
    """Refuse (before anything is written) samples whose metric or layout differ from the folder's."""
    have_metric, have_nf = dataset_layout(folder)
    problems = []
    if have_metric is not None and have_metric != metric:
        problems.append(f"its series use the {have_metric} metric, these use {metric}")
    if have_nf is not None and bool(have_nf) != bool(noise_frame):
        problems.append(f"its series have noise_frame {'on' if have_nf else 'off'}, these have it "
                        f"{'on' if noise_frame else 'off'}")
    if problems:
        raise DatasetError(
            f"the dataset {os.path.basename(os.path.normpath(os.fspath(folder)))} cannot take these samples: "
            f"{'; '.join(problems)}. A classifier is trained on one metric and layout: save them under another "
            f"dataset name, or compute the series with metric {have_metric or metric} and noise_frame "
            f"{'on' if (noise_frame if have_nf is None else have_nf) else 'off'}. Nothing was written.")


def atomic_write_bytes(path: str, data: bytes, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` through a unique temporary file and a rename, so readers and other writers
    never see a partial file. ``exclusive``: only create ``path`` if it does not exist (atomic hard link);
    returns False when it already existed."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if path exists: exactly one creator wins
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: best effort
            if os.path.exists(path):
                return False
            os.replace(tmp, path)
            return True
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def claim_layout(folder: str | os.PathLike, metric: str, noise_frame: bool) -> None:
    """Create ``dataset.json`` (once, atomically) or check it against this metric/layout."""
    folder = os.fspath(folder)
    doc = {"format": DATASET_FORMAT, "version": 1, "metric": metric, "noise_frame": bool(noise_frame)}
    atomic_write_bytes(os.path.join(folder, DATASET_FILE), json.dumps(doc, indent=1).encode(), exclusive=True)
    check_layout(folder, metric, noise_frame)  # another worker may have claimed the folder first


def new_batch_key() -> str:
    """A unique, time-ordered key for one write: 20260102-030405-<nanoseconds>-<12 hex>."""
    import time

    ns = time.time_ns()
    stamp = datetime.datetime.fromtimestamp(ns // 10**9).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{ns % 10**9:09d}-{uuid.uuid4().hex[:12]}"


def new_sample_id(item: int = 0, batch_key: str | None = None) -> str:
    """The id of batch item ``item`` of one write: <batch key>_<item, 3 digits> (sorts in writing order; the part
    before the last '_' groups a batch for grouped CV when no group is given)."""
    return f"{batch_key or new_batch_key()}_{int(item):03d}"


def write_sample(folder: str | os.PathLike, row: dict[str, Any]) -> str:
    """Write one sample row (INDEX_COLUMNS keys; ``next`` a list of floats) as ``samples/<id>.json``."""
    doc = {"format": SAMPLE_FORMAT, "version": 1}
    for k in INDEX_COLUMNS:
        v = row.get(k)
        doc[k] = v.tolist() if hasattr(v, "tolist") else v
    if isinstance(doc["next"], str):
        doc["next"] = json.loads(doc["next"])
    doc["next"] = [float(v) if v is not None and math.isfinite(float(v)) else None for v in doc["next"]]
    path = os.path.join(os.fspath(folder), SAMPLES_DIR, f"{row['id']}.json")
    if os.path.exists(path):
        raise DatasetError(f"sample id {row['id']} exists already in {folder}")
    atomic_write_bytes(path, json.dumps(doc, allow_nan=False).encode())
    return path


def export_index_csv(folder: str | os.PathLike, out: str | os.PathLike) -> str:
    """Write every sample of a folder as one CSV in the paper's format (plus the INDEX_COLUMNS), atomically."""
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(INDEX_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in folder_rows(folder):
        row = {k: ("" if r.get(k) is None else r.get(k)) for k in INDEX_COLUMNS}
        if isinstance(row["next"], list):
            row["next"] = format_series([math.nan if v is None else v for v in row["next"]])
        if isinstance(row["noise_frame"], bool):
            row["noise_frame"] = str(row["noise_frame"]).lower()
        w.writerow(row)
    atomic_write_bytes(os.fspath(out), buf.getvalue().encode("utf-8"))
    return os.fspath(out)
