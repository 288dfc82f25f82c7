"""ComfyUI glue: KSampler (Auto-Reject). Sample seed, seed+1, ... until every item's P(artifact) < tau or
``max_tries``; optionally stop a doomed try early with a prefix classifier.

Per try t the seed is ``seed + t``. Only the items still without an accepted image are re-sampled, as a sub-batch
that keeps their ``batch_index``, so item i of try t gets exactly the noise a plain KSampler gives item i of the full
batch with seed + t. Each item keeps its best (lowest P) complete try.

Early rejection: a prefix classifier (trained on the first K of F similarity values) is asked after the matching
share of the steps; when every item of the sub-batch is judged doomed (P >= early threshold) the capture's step
listener raises StopSampling and ComfyUI ends that sampling call normally. The last try is never stopped early, so
every item ends with a complete image. Model evaluations are counted by the trajectory recorder.

Early rejection by a ranking signal (``signal`` cfg_asd or rank_average, :class:`RelativeEarlyCheck`): at the check
step a re-try is stopped when CFG-Rejection's score (and the prefix classifier, for rank_average) ranks every item
of it below that item's best complete try so far. Acceptance (P < tau) is always the classifier's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import comfy.sample
import comfy.utils
import torch

from ...classifiers import ArtifactModel
from ..common.comfy_glue import Progress
from ..trajectory.capture import attach_capture
from ..trajectory.frames import series_from_trajectory
from ..trajectory.recorder import CaptureOptions, StopSampling
from ..trajectory.trajectory import Trajectory
from .batch_filter import concat_trajectories
from .scoring import ArtifactScores, score_values

log = logging.getLogger("diffusion_sentinel")


@dataclass
class Judge:
    """Computes the similarity series a model needs from a trajectory and scores it."""

    model: ArtifactModel | None
    metric: str
    noise_frame: bool
    threshold: float = 0.5
    dmax_threshold: float = 0.0
    vae: Any = None

    @classmethod
    def for_model(cls, model: ArtifactModel | None, rule_metric: str = "latent_cosine", threshold: float = 0.5,
                  dmax_threshold: float = 0.0, vae=None) -> Judge:
        if model is None:
            return cls(None, rule_metric, True, threshold, dmax_threshold, vae)
        return cls(model, model.trained_for.metric, model.trained_for.noise_frame, threshold, dmax_threshold, vae)

    def score(self, traj: Trajectory, run_length: int | None = None) -> ArtifactScores:
        series = series_from_trajectory(traj, self.metric, noise_frame=self.noise_frame, vae=self.vae)
        return score_values(series.values, series.metric, series.noise_frame, series.finite, self.model,
                            self.threshold, self.dmax_threshold, run_length)

    def series_length(self, steps: int) -> int:
        """Values in the series of a run with ``steps`` recorded steps."""
        return steps if self.noise_frame else steps - 1


@dataclass
class EarlyCheck:
    judge: Judge
    threshold: float

    def __post_init__(self):
        m = self.judge.model
        if m is None or not m.trained_for.is_prefix:
            raise ValueError("early rejection needs a *prefix* classifier (one trained on the first steps only: "
                             "Train Artifact Classifier with prefix_steps > 0); "
                             f"'{getattr(m, 'name', 'none')}' judges complete runs")

    def check_step(self, steps: int) -> int:
        """After how many recorded steps the prefix classifier can judge a ``steps``-step run."""
        tf = self.judge.model.trained_for
        total = self.judge.series_length(steps)
        need = max(1, int(round(tf.length * total / tf.full_length)))
        k = need if self.judge.noise_frame else need + 1
        return max(1, min(k, steps))


@dataclass
class RelativeEarlyCheck:
    """Early rejection by a ranking signal (cfg_asd, or rank_average of cfg_asd and a prefix classifier): at step
    ``step`` a re-try is stopped when, for every item it re-samples, the signal ranks it below that item's best
    complete try so far (a try that has already failed tau). cfg_asd has no absolute scale (the paper thresholds
    by quantile per prompt), so it is only ever compared with the item's own earlier tries; the first try of an
    item is never stopped this way. rank_average: the mean of the two ranks of (this try, the reference try);
    stopped only when it is strictly worse, i.e. when both signals put it below."""

    signal: str
    step: int
    judge: Judge | None = None

    def values(self, snap: Trajectory, steps: int) -> list[dict]:
        from .signals import CFG1_MESSAGE, SignalUnavailable, accumulated_score_difference, cfg_score_differences

        if snap.x0_cond is None or snap.x0_uncond is None:
            raise SignalUnavailable(CFG1_MESSAGE)
        asd = accumulated_score_difference(cfg_score_differences(snap.x0_cond, snap.x0_uncond, snap.sigmas))
        out = [{"cfg_asd": float(v)} for v in asd]
        if self.signal == "rank_average":
            sc = self.judge.score(snap, run_length=self.judge.series_length(steps))
            for d, p in zip(out, sc.p):
                d["p_artifact"] = float(p)
        return out

    def worse(self, new: dict, ref: dict | None) -> bool:
        """True when ``new`` ranks strictly below ``ref`` (the item's best complete try)."""
        import math

        from .signals import HIGHER, LOWER, rank_average

        if ref is None:
            return False
        if self.signal == "cfg_asd":
            a, b = new["cfg_asd"], ref["cfg_asd"]
            return (not math.isfinite(a)) or (math.isfinite(b) and a < b)
        r = rank_average(([new["cfg_asd"], ref["cfg_asd"]], HIGHER), ([new["p_artifact"], ref["p_artifact"]], LOWER))
        return bool(r[0] > r[1])


@dataclass
class TryRecord:
    index: int
    seed: int
    items: list[int]
    p: list[float]
    complete: bool
    stopped_early_at: int | None = None
    p_early: list[float] | None = None
    early_values: list[dict] | None = None
    model_evals: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class AutoRejectResult:
    latent: dict
    seeds: list[int]
    p: list[float]
    accepted: list[bool]
    tries: list[TryRecord]
    trajectory: Trajectory | None
    trajectory_error: str = ""
    image_evals: int = 0
    image_evals_without_early: int = 0

    @property
    def tries_p(self) -> list[float]:
        return [p for t in self.tries for p in t.p]

    def report(self) -> dict[str, Any]:
        saved = self.image_evals_without_early - self.image_evals
        return {
            "seeds": self.seeds, "p_artifact": self.p, "accepted": self.accepted,
            "tries": [t.as_dict() for t in self.tries],
            "image_model_evaluations": self.image_evals,
            "image_model_evaluations_without_early_rejection": self.image_evals_without_early,
            "saved_ratio": (saved / self.image_evals_without_early) if self.image_evals_without_early else 0.0,
        }


def _sub_latent(latent: dict, items: list[int], batch: int) -> dict:
    if len(items) == batch:
        return dict(latent)  # the whole batch: exactly what KSampler would get
    from .batch_filter import take_latent

    base = dict(latent)
    if base.get("batch_index") is None:
        base["batch_index"] = list(range(batch))
    return take_latent(base, items, batch)


def _fix_empty_latent_channels(model, latent: dict):
    """comfy.sample.fix_empty_latent_channels, with the LATENT's downscale ratios where this ComfyUI takes them
    (newer versions: (model, samples, spatial, temporal); 0.3.64: (model, samples)). Feature-detected."""
    import inspect

    fn = comfy.sample.fix_empty_latent_channels
    try:
        n_params = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        n_params = 2
    if n_params >= 4:
        return fn(model, latent["samples"], latent.get("downscale_ratio_spacial"),
                  latent.get("downscale_ratio_temporal"))
    return fn(model, latent["samples"])


def _preview_fn(model):
    import latent_preview

    previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
    if previewer is None:
        return lambda x0: None
    return lambda x0: previewer.decode_latent_to_preview_image("JPEG", x0)


def auto_reject(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive, negative,
                latent: dict, judge: Judge, threshold: float, max_tries: int, denoise: float = 1.0,
                early: EarlyCheck | RelativeEarlyCheck | None = None) -> AutoRejectResult:
    """The sampling loop of KSampler (Auto-Reject); see the module docstring."""
    if max_tries < 1:
        raise ValueError("max_tries must be >= 1")
    samples_in = latent["samples"]
    batch = int(samples_in.shape[0])
    progress = Progress(max_tries * steps)
    preview = _preview_fn(model)
    relative = isinstance(early, RelativeEarlyCheck)
    opts = CaptureOptions(every_k=1, keep_x=False, keep_cond_uncond=relative)
    best: list[dict | None] = [None] * batch
    ref: list[dict | None] = [None] * batch  # relative early check: the signal of every item's best complete try
    pending = list(range(batch))
    tries: list[TryRecord] = []
    full_evals: int | None = None
    image_evals = image_evals_plain = 0
    if relative:
        k_step = early.step
    else:
        k_step = early.check_step(steps) if early is not None else None

    for t in range(max_tries):
        if not pending:
            break
        items = list(pending)
        seed_t = int(seed) + t
        state: dict[str, Any] = {}
        listener = None
        if relative and k_step is not None and k_step < steps:
            def listener(rec, idx, _items=items, _state=state, _t=t):
                if idx + 1 != k_step:
                    return
                vals = early.values(rec.snapshot(), steps)
                _state["early_values"] = vals
                if _t == max_tries - 1:  # the last try always completes
                    return
                if all(early.worse(v, ref[item]) for v, item in zip(vals, _items)):
                    raise StopSampling(f"{early.signal}: every item ranks below its best complete try after "
                                       f"{k_step} of {steps} steps")
        elif early is not None and t < max_tries - 1 and k_step is not None and k_step < steps:
            def listener(rec, idx, _items=items, _state=state):
                if idx + 1 != k_step:
                    return
                sc = early.judge.score(rec.snapshot(), run_length=early.judge.series_length(steps))
                _state["p_early"], _state["notes"] = sc.p, sc.notes
                if all(p >= early.threshold for p in sc.p):
                    raise StopSampling(f"prefix classifier: P(artifact) >= {early.threshold:g} for every item "
                                       f"after {k_step} of {steps} steps")

        m, store = attach_capture(model, opts, max_runs=1, step_listener=listener)
        sub = _sub_latent(latent, items, batch)
        start = progress.done

        def callback(step, x0, x, total_steps, _start=start):
            progress.update(1)
            img = preview(x0)
            if img is not None:
                progress.bar.update_absolute(progress.done, progress.total, img)

        lat = _fix_empty_latent_channels(m, sub)
        noise = comfy.sample.prepare_noise(lat, seed_t, sub.get("batch_index"))
        out = comfy.sample.sample(m, noise, steps, cfg, sampler_name, scheduler, positive, negative, lat,
                                  denoise=denoise, noise_mask=sub.get("noise_mask"), callback=callback,
                                  disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed_t)
        traj = store.pop_latest()
        if traj is None:
            raise RuntimeError("the sampler recorded no steps (is denoise 0?)")
        traj.meta.update({"seed": seed_t, "steps": int(steps), "cfg": float(cfg), "sampler": sampler_name,
                          "scheduler": scheduler, "denoise": float(denoise)})
        evals = int(traj.meta.get("model_evals_total", 0))
        stopped = traj.meta.get("stopped_early_at")
        rec = TryRecord(t, seed_t, items, [], complete=stopped is None, stopped_early_at=stopped,
                        p_early=state.get("p_early"), early_values=state.get("early_values"), model_evals=evals,
                        notes=list(state.get("notes", [])))
        if stopped is None:
            full_evals = evals
            scores = judge.score(traj)
            rec.p = list(scores.p)
            rec.notes += scores.notes
            for j, item in enumerate(items):
                cand = {"p": scores.p[j], "try": t, "seed": seed_t, "latent": out[j:j + 1],
                        "traj": traj.select([j])}
                if best[item] is None or cand["p"] < best[item]["p"]:
                    best[item] = cand
                    if rec.early_values is not None:
                        ref[item] = rec.early_values[j]
            plain = evals
        else:
            rec.p = list(state.get("p_early") or [float("nan")] * len(items))  # a ranking signal has no P
            plain = full_evals if full_evals is not None else int(round(evals * steps / (stopped + 1)))
            log.info("KSampler (Auto-Reject): try %d (seed %d) stopped early after step %d: P_early %s", t, seed_t,
                     stopped + 1, [round(p, 3) for p in rec.p])
        image_evals += evals * len(items)
        image_evals_plain += plain * len(items)
        tries.append(rec)
        pending = [i for i in pending if best[i] is None or best[i]["p"] >= threshold]
        if progress.done < (t + 1) * steps:
            progress.update((t + 1) * steps - progress.done)
    if progress.done < progress.total:
        progress.update(progress.total - progress.done)

    chosen = [b for b in best if b is not None]
    if len(chosen) != batch:  # cannot happen: the last try always completes
        raise RuntimeError("auto-reject ended without a complete image for every item")
    out_latent = dict(latent)
    for key in ("downscale_ratio_spacial", "downscale_ratio_temporal"):  # what KSampler drops from its output
        out_latent.pop(key, None)
    out_latent["samples"] = torch.cat([b["latent"] for b in chosen], dim=0)
    seeds = [int(b["seed"]) for b in chosen]
    traj_out, traj_err = None, ""
    try:
        traj_out = concat_trajectories([b["traj"] for b in chosen], {"seeds": seeds, "seed": seeds[0]})
    except ValueError as e:
        traj_err = str(e)
    p = [float(b["p"]) for b in chosen]
    return AutoRejectResult(out_latent, seeds, p, [v < threshold for v in p], tries, traj_out, traj_err,
                            image_evals, image_evals_plain)
