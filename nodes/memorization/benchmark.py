"""ComfyUI glue: the anisotropy paper's benchmark on the user's model (shared by the Memorization Benchmark node, the
command line ``benchmark_cli.py`` and ``benchmarks/memorization_lab.py``).

Two prompt lists (memorized / not memorized) are encoded with the checkpoint's CLIP, scored in batches (all prompts
of a batch in one U-Net call per noise level: ``detection.detect`` runs the probe sampler, whose
``calc_cond_batch`` evaluates every prompt's conditional row and the unconditional rows together), tabulated as in
the paper (``benchmark_report``) and fitted into a calibration in the format the Guard reads (``calibration``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import comfy.model_management
import numpy as np
import torch

from ..common.comfy_glue import Progress
from . import anisotropy as an
from . import detection, probe
from .benchmark_report import Row, detection_table
from .calibration import Calibration, CalibrationError, calibrate, save_calibration


def stack_batches(conds: list, max_batch: int) -> list[tuple[list[int], list]]:
    """Group single-entry CONDITIONINGs that can be batched (same shapes and extras) into one CONDITIONING each."""
    groups: list[tuple[list[int], list]] = []
    cur_idx: list[int] = []
    cur: list = []

    def key(c):
        if len(c) != 1:
            return None
        t, extras = c[0]
        ek = []
        for k, v in sorted(extras.items()):
            if isinstance(v, torch.Tensor):
                if v.shape[0] != 1:
                    return None
                ek.append((k, tuple(v.shape)))
            else:
                ek.append((k, repr(v)))
        return (tuple(t.shape), tuple(ek))

    def flush():
        if not cur:
            return
        if len(cur) == 1:
            groups.append((list(cur_idx), cur[0]))
        else:
            t = torch.cat([c[0][0] for c in cur])
            extras = {}
            for k, v in cur[0][0][1].items():
                extras[k] = torch.cat([c[0][1][k] for c in cur]) if isinstance(v, torch.Tensor) else v
            groups.append((list(cur_idx), [[t, extras]]))
        cur_idx.clear()
        cur.clear()

    cur_key = None
    for i, c in enumerate(conds):
        k = key(c)
        if k is None:  # several entries or per-prompt extras: score it on its own
            flush()
            groups.append(([i], c))
            continue
        if cur and (k != cur_key or len(cur) >= max_batch):
            flush()
        cur_key = k
        cur_idx.append(i)
        cur.append(c)
    flush()
    return groups


def encode_prompts(clip, prompts: list[str], progress: Progress | None = None) -> list:
    """One CONDITIONING per prompt, encoded by ComfyUI's CLIP (the same call CLIPTextEncode makes)."""
    if clip is None:
        raise ValueError("connect the CLIP of the checkpoint: the prompt lists must be encoded")
    out = []
    for p in prompts:
        out.append(clip.encode_from_tokens_scheduled(clip.tokenize(p)))
        if progress is not None:
            progress.update()
    return out


@dataclass
class Scores:
    """Per prompt: the norm term N, the cosine term C, Wen's first-step norm; the scoring time and its U-Net calls."""

    norm: torch.Tensor
    cosine: torch.Tensor
    wen: torch.Tensor
    seconds: float
    batches: int
    unet_calls: int

    @property
    def features(self) -> torch.Tensor:
        return torch.stack([self.norm, self.cosine], dim=1)


def score_conditionings(model, conds: list, negative, settings: detection.DetectorSettings, batch_size: int,
                        progress: Progress | None = None) -> Scores:
    """Score every CONDITIONING, ``batch_size`` prompts per probe run (one U-Net call per noise level each)."""
    if batch_size < 1:
        raise ValueError(f"prompts per batch must be >= 1, got {batch_size}")
    n = len(conds)
    norm, cos, wen = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    groups = stack_batches(conds, batch_size)
    if progress is None:
        progress = Progress(len(groups) * detection.calls_per_detection(settings))
    calls = 0
    comfy.model_management.load_models_gpu([model])  # loading is not scoring: keep it out of the timing
    sync(model)
    t0 = time.perf_counter()
    for idx, cond in groups:
        det = detection.detect(model, cond, negative, settings, progress=progress).detection
        norm[idx], cos[idx], wen[idx] = det.norm.double(), det.cosine.double(), det.wen.double()
        calls += det.unet_calls
    sync(model)
    return Scores(norm=norm, cosine=cos, wen=wen, seconds=time.perf_counter() - t0, batches=len(groups),
                  unet_calls=calls)


def sync(model) -> None:
    """Wait for the device so that timings are honest (CUDA runs asynchronously)."""
    try:
        dev = model.load_device
    except AttributeError:
        return
    if isinstance(dev, torch.device) and dev.type == "cuda":
        torch.cuda.synchronize(dev)


def score_prompt_list(model, clip, prompts: list[str], negative_prompt: str, settings: detection.DetectorSettings,
                      prompts_per_batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt: [N, C] features and Wen's score (float32), scoring compatible prompts together in batches."""
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(negative_prompt))
    conds = encode_prompts(clip, prompts)
    s = score_conditionings(model, conds, neg, settings, prompts_per_batch)
    return s.features.float(), s.wen.float()


@dataclass
class BenchmarkSettings:
    detector: detection.DetectorSettings
    batch_size: int = 16
    weights: str = "auto"
    threshold_rule: str = "logistic"
    target_fpr: float = 0.01
    negative_prompt: str = ""


@dataclass
class BenchmarkResult:
    n_memorized: int
    n_normal: int
    scores: Scores
    rows: list[Row]
    calibration: Calibration
    info: probe.ModelInfo
    encode_seconds: float = float("nan")
    notes: list[str] = field(default_factory=list)

    @property
    def prompts_per_second(self) -> float:
        n = self.n_memorized + self.n_normal
        return n / self.scores.seconds if self.scores.seconds > 0 else float("inf")

    def result_line(self) -> str:
        a, nr, cr, w = self.rows[:4]
        return (f"RESULT auc_anisotropy={a.auc:.4f} tpr_anisotropy={a.tpr:.4f} auc_norm={nr.auc:.4f} "
                f"auc_cosine={cr.auc:.4f} auc_wen={w.auc:.4f} tpr_wen={w.tpr:.4f} "
                f"prompts_per_second={self.prompts_per_second:.3f} memorized={self.n_memorized} normal={self.n_normal}")


def run_benchmark(model, mem_conds: list, normal_conds: list, negative, settings: BenchmarkSettings,
                  progress: Progress | None = None) -> BenchmarkResult:
    """Score both lists (memorized first), tabulate, and fit a calibration (not written: see :func:`save`)."""
    info = probe.model_info(model, what="the memorization benchmark")
    settings.detector.resolve_size(info.native_size)
    gn, gc = an.weights_for(settings.weights, info.prediction)
    label = an.AUTO_WEIGHTS[info.prediction] if settings.weights == "auto" else settings.weights
    conds = list(mem_conds) + list(normal_conds)
    k = len(mem_conds)
    scores = score_conditionings(model, conds, negative, settings.detector, settings.batch_size, progress)
    feats, wen = scores.features.numpy(), scores.wen.numpy()
    if not (np.isfinite(feats).all() and np.isfinite(wen).all()):
        raise ValueError("some scores are NaN or infinite: the model's predictions are not finite (broken weights, or "
                         "fp16 overflow); nothing was written")
    try:
        cal = calibrate(feats[:k], feats[k:], wen[:k], wen[k:], threshold_rule=settings.threshold_rule,
                        target_fpr=settings.target_fpr)
    except CalibrationError as e:
        raise ValueError(f"the calibration could not be fitted, nothing was written: {e}") from e
    rows = detection_table(k, scores.norm, scores.cosine, scores.wen, gn, gc, label,
                           fitted=(cal.gamma_norm, cal.gamma_cos), target_fpr=settings.target_fpr)
    d = settings.detector
    cal.model = info.as_dict()
    cal.settings = {"seed": d.seed, "n_samples": d.n_samples, "width": d.width, "height": d.height,
                    "negative_prompt": settings.negative_prompt}
    cal.metrics["benchmark"] = [{"score": r.score, "auc": r.auc, "tpr_at_fpr": r.tpr, "tpr_closest": r.tpr_closest}
                                for r in rows]
    cal.metrics["prompts_per_second"] = len(conds) / scores.seconds if scores.seconds > 0 else None
    return BenchmarkResult(n_memorized=k, n_normal=len(conds) - k, scores=scores, rows=rows, calibration=cal,
                           info=info)


def check_output_path(path: str, overwrite: bool) -> str:
    """Validate where the calibration goes BEFORE any scoring (a refused input writes nothing)."""
    path = os.path.abspath(path)
    if not path.endswith(".json"):
        raise ValueError(f"the calibration file must end in .json: {path}")
    folder = os.path.dirname(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; choose another name or allow overwriting it (the file was left as it "
                              "was)")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a file name")
    probe_dir = folder
    while not os.path.exists(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    if not os.access(probe_dir, os.W_OK):
        raise PermissionError(f"cannot write into {probe_dir}: choose another place for the calibration")
    return path


def save(result: BenchmarkResult, path: str, name: str) -> str:
    result.calibration.name = name
    return save_calibration(result.calibration, path)


def timing_line(result: BenchmarkResult) -> str:
    s = result.scores
    n = result.n_memorized + result.n_normal
    enc = "" if not math.isfinite(result.encode_seconds) else f"; text encoding {result.encode_seconds:.2f} s"
    return (f"{n} prompts scored in {s.seconds:.2f} s = {result.prompts_per_second:.2f} prompts/s "
            f"({s.batches} batch(es), {s.unet_calls} U-Net calls{enc})")


def summary(result: BenchmarkResult) -> dict[str, Any]:
    return {"n_memorized": result.n_memorized, "n_normal": result.n_normal,
            "prompts_per_second": result.prompts_per_second,
            "rows": [{"score": r.score, "auc": r.auc, "tpr": r.tpr, "tpr_closest": r.tpr_closest} for r in result.rows]}
