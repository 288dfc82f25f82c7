"""Memorization Scores (Trajectory) node: the latent-update score (after Broken Memories, arXiv 2605.22050) and Wen's
score, both read from a recorded sampling run with no extra model call."""

from __future__ import annotations

import math

from comfy_api.latest import io

from ..common.comfy_types import Trajectory as TrajectoryType
from ..common.ui import col, panel, result_ui
from . import anisotropy as an
from . import latent_updates as lu
from .node_common import CATEGORY
from .node_common import fmt as _fmt
from .wen_node import DEFAULT_THRESHOLD as WEN_THRESHOLD

HIGHER = "higher = more likely memorized"
LIST = "List, one value per batch item (a node connected here runs once per item). "


def _final_sigma(t) -> float:
    sched = t.meta.get("schedule_sigmas")
    if isinstance(sched, (list, tuple)) and sched:
        try:
            v = float(sched[-1])
            return v if math.isfinite(v) and v >= 0 else 0.0
        except (TypeError, ValueError):
            return 0.0
    return 0.0


def score_trajectory(t, data_std: float = 1.0, snr_max: float = lu.DEFAULT_SNR_MAX) -> tuple[lu.UpdateNorms, list[str]]:
    """The update norms of a TRAJECTORY and the notes the report should carry; a clear ValueError when the
    recording cannot give them."""
    if t.num_steps == 0:
        raise ValueError("this trajectory recorded no steps")
    if t.x is None:
        raise ValueError("this trajectory has no latents x (recorded with keep_x off): the latent updates are the "
                         "differences of consecutive x. Record with 'KSampler (Trajectory)' / Capture Trajectory "
                         "with keep_x on.")
    pred = str(t.meta.get("prediction", "eps"))
    flags = set(t.meta.get("flags", []) or [])
    final = t.final
    notes: list[str] = []
    if "stopped_early" in flags:
        final = None  # a stopped run returns a prediction, not a sampler step
        notes.append("note: the run was stopped early; the last update (to the returned latent) is left out")
    if final is None and t.num_steps < 2:
        raise ValueError("this trajectory has one recorded step and no final latent: there is no update to measure. "
                         "Record every step (every_k_steps 1) of a run with at least 2 steps.")
    if t.meta.get("inpaint"):
        notes.append("note: inpainting run: the masked-out area is pinned to the input, which shrinks the updates")
    try:
        res = lu.latent_updates(t.x, t.sigmas, pred, final=final, final_sigma=_final_sigma(t), data_std=data_std,
                                snr_max=snr_max)
    except ValueError as e:
        raise ValueError(f"latent-update score: {e}") from e
    every = int(t.meta.get("every_k_steps", 1) or 1)
    if every > 1:
        notes.append(f"note: every {every}th step recorded: each update spans up to {every} sampler steps (compared "
                     "with the reference over the same noise levels)")
    if lu.is_stochastic(t.meta.get("sampler")):
        notes.append(f"note: {t.meta.get('sampler')} adds fresh noise inside its steps; the updates include it but "
                     "the reference (an ODE step) does not, so scores run high: use a deterministic sampler (euler, "
                     "ddim, dpmpp_2m, uni_pc) to compare with the threshold")
    if t.meta.get("storage_dtype") in ("float16", "bfloat16"):
        notes.append("note: stored in reduced precision; record with storage float32 for exact values")
    if not bool(res.in_phase.any()):
        notes.append(f"warning: no update starts in the noise phase (SNR <= {snr_max:g}, sigma >= "
                     f"{_phase_sigma(res.form, snr_max):.3g}): img2img with a low denoise? The score is NaN")
    return res, notes


def _phase_sigma(form: str, snr_max: float) -> float:
    """The sigma at which SNR = snr_max (the phase starts above it)."""
    k = math.sqrt(snr_max)
    return 1.0 / k if form == "vp" else 1.0 / (1.0 + k)


def _wen(t, steps: int) -> tuple[list[float] | None, str]:
    if t.x0_cond is None or t.x0_uncond is None:
        why = ("no cond/uncond predictions recorded (keep_cond_uncond off)" if t.x0_cond is None else
               "no unconditional prediction (cfg 1 skips it)")
        return None, f"Wen: not available, {why}"
    pred = t.meta.get("prediction", "eps")
    if pred not in an.PREDICTIONS:
        return None, f"Wen: not defined for {pred!r} models"
    steps = min(int(steps), t.num_steps)
    vals = an.wen_from_trajectory(t.x0_cond, t.x0_uncond, t.sigmas, pred, steps=steps)
    return [float(v) for v in vals], f"Wen over the first {steps} recorded step(s)"


class MemorizationScoresTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelMemorizationTrajectory",
            display_name="Memorization Scores (Trajectory)",
            category=CATEGORY,
            description="Memorization scores read for free from a recorded sampling run (no model call). Latent-"
                        "update score (after Broken Memories, Huang et al., KDD 2026): the size of each step of the "
                        "sampler's latent, relative to the step an exact ODE makes between the same noise levels "
                        "for data-scale predictions, maximised over the noise-dominated phase; >= 0, higher = more "
                        "likely memorized, > 1 = left the data-free stability region. Beside it, Wen et al.'s "
                        "first-step norm when the run recorded cond/uncond predictions.",
            inputs=[
                TrajectoryType.Input("trajectory", tooltip="From KSampler (Trajectory) / Get Captured Trajectory with "
                                                           "keep_x on (the default). keep_cond_uncond adds Wen's score."),
                io.Float.Input("threshold", default=lu.DEFAULT_THRESHOLD, min=0.0, max=100.0, step=0.01,
                               tooltip="Flag an item when its update score is above this. 1 = the data-free "
                                       "stability bound (a step as large as an exact ODE step with data-scale "
                                       "predictions); not calibrated on real memorized prompts: measure your model "
                                       "(benchmarks/memorization_lab.py shows how)."),
                io.Float.Input("snr_max", default=lu.DEFAULT_SNR_MAX, min=1e-4, max=1e4, step=0.01,
                               tooltip="The score looks at updates that start at a signal-to-noise ratio <= this "
                                       "(1 = sigma >= 1 for eps/v models): the phase where an ordinary prompt has "
                                       "not yet decided what it draws."),
                io.Float.Input("data_std", default=1.0, min=1e-3, max=100.0, step=0.01,
                               tooltip="Per-element standard deviation of the model's training latents (1 for SD "
                                       "latents after their scale factor); sets the reference step size."),
                io.Int.Input("wen_steps", default=1, min=1, max=1000,
                             tooltip="Wen's score: mean over the first k recorded steps (1 = Wen's first-step metric)."),
                io.Float.Input("wen_threshold", default=WEN_THRESHOLD, min=-1e4, max=1e4, step=0.01,
                               tooltip="Wen's flag threshold (uncalibrated guess 1.5 per sample, as the Wen node)."),
            ],
            outputs=[
                io.Float.Output("UPDATE_SCORE", display_name="update_score", is_output_list=True,
                                tooltip=LIST + "Latent-update score U >= 0 (higher = more likely memorized; > 1 = "
                                               "outside the data-free stability region; NaN if no update starts in "
                                               "the noise phase)."),
                io.Boolean.Output("MEMORIZED", display_name="memorized", is_output_list=True,
                                  tooltip=LIST + "The update score is above the threshold."),
                io.Float.Output("WEN", display_name="wen", is_output_list=True,
                                tooltip=LIST + "Wen's score >= 0 (higher = more likely memorized); NaN when the run did "
                                               "not record cond/uncond predictions."),
                io.Boolean.Output("WEN_MEMORIZED", display_name="wen_memorized", is_output_list=True,
                                  tooltip=LIST + "Wen's score is above wen_threshold (False when it is NaN)."),
                io.String.Output("REPORT", display_name="report", tooltip="A readable summary."),
                io.Boolean.Output("ANY_MEMORIZED", display_name="any_memorized",
                                  tooltip="One value for the batch: True if any item's update score is flagged."),
                io.Int.Output("N_MEMORIZED", display_name="n_memorized",
                              tooltip="One value for the batch: how many items the update score flags."),
                io.Float.Output("MAX_SCORE", display_name="max_score",
                                tooltip="One value for the batch: the highest update score."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, trajectory, threshold=lu.DEFAULT_THRESHOLD, snr_max=lu.DEFAULT_SNR_MAX, data_std=1.0,
                wen_steps=1, wen_threshold=WEN_THRESHOLD) -> io.NodeOutput:
        t = trajectory
        res, notes = score_trajectory(t, data_std=float(data_std), snr_max=float(snr_max))
        scores = [float(v) for v in res.score()]
        peaks = res.peak_index().tolist()
        flags = [bool(math.isfinite(v) and v > threshold) for v in scores]
        wen, wen_note = _wen(t, int(wen_steps))
        wen_vals = wen if wen is not None else [float("nan")] * len(scores)
        wen_flags = [bool(math.isfinite(v) and v > wen_threshold) for v in wen_vals]
        peak_sigma = [float(res.sigma_from[p]) if p >= 0 else float("nan") for p in peaks]
        head = (f"latent-update score U = max rho over {int(res.in_phase.sum())} of {res.rho.shape[1]} updates "
                f"starting at SNR <= {snr_max:g} (sigma >= {_phase_sigma(res.form, float(snr_max)):.3g}); flag when "
                f"U > {_fmt(threshold, 3)} (1 = data-free stability bound); {wen_note}")
        lines = [head]
        for i, (u, f, w, ps) in enumerate(zip(scores, flags, wen_vals, peak_sigma)):
            lines.append(f"item {i}: U {_fmt(u, 3)} (peak at sigma {_fmt(ps, 3)}) -> {'MEMORIZED' if f else 'ok'}; "
                         f"Wen {_fmt(w, 3)}{' (flagged)' if wen_flags[i] else ''}")
        lines += notes
        report = "\n".join(lines)
        series = [[float(v) for v in row] for row in res.rho]
        shown = panel("Memorization Scores (Trajectory)",
                      columns=[col("item"), col("update_score", "U", direction=HIGHER, fmt=".3f"),
                               col("peak_sigma", "peak sigma", fmt=".3g"), col("memorized", "memorized"),
                               col("wen", "Wen", direction=HIGHER, fmt=".3f")],
                      rows=[[i, scores[i], peak_sigma[i], flags[i], wen_vals[i]] for i in range(len(scores))],
                      summary=f"{sum(flags)} of {len(flags)} flagged: U > {_fmt(threshold, 3)} ({HIGHER})",
                      highlight=[i for i, f in enumerate(flags) if f], series=series,
                      series_label="update / reference per step (rho)", notes=[head, *notes])
        finite = [v for v in scores if math.isfinite(v)]
        return io.NodeOutput(scores, flags, wen_vals, wen_flags, report, any(flags), int(sum(flags)),
                             max(finite) if finite else float("nan"), ui=result_ui(shown))

