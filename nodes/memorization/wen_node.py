"""Wen Memorization Score (Trajectory) node: Wen et al.'s score read from a recorded sampling run."""

from __future__ import annotations

from comfy_api.latest import io

from ..common.comfy_types import Trajectory as TrajectoryType
from ..common.ui import col, panel, result_ui
from . import anisotropy as an
from .node_common import CATEGORY
from .node_common import fmt as _fmt

DEFAULT_THRESHOLD = 1.5  # Wen's target 3 is the norm over a batch of 4 generations: about 1.5 per generation
HIGHER = "higher = more likely memorized"
LIST = "List, one value per batch item (a node connected here runs once per item). "

class WenScoreFromTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelWenScoreTrajectory",
            display_name="Wen Memorization Score (Trajectory)",
            category=CATEGORY,
            description="Wen et al.'s memorization score read for free from a sampling run: the norm of the "
                        "difference between the conditional and unconditional predictions (eps, or v for v models) "
                        "at the first recorded step(s), per batch item; >= 0, higher = more likely memorized. Record "
                        "the run with KSampler (Trajectory) and keep_cond_uncond on, with cfg > 1.",
            inputs=[
                TrajectoryType.Input("trajectory", tooltip="From KSampler (Trajectory) / Get Captured Trajectory with "
                                                           "keep_cond_uncond on."),
                io.Int.Input("steps", default=1, min=1, max=1000,
                             tooltip="Mean over the first k recorded steps (1 = Wen's first-step metric)."),
                io.Float.Input("threshold", default=DEFAULT_THRESHOLD, min=-1e4, max=1e4, step=0.01,
                               tooltip="Flag an item when its score is above this. Uncalibrated guess: 1.5 per "
                                       "sample (Wen et al.'s mitigation target 3 is the norm over a batch of 4 "
                                       "generations, about 1.5 per generation); calibrate for your model."),
            ],
            outputs=[
                io.Float.Output("WEN", display_name="wen", is_output_list=True,
                                tooltip=LIST + "Wen's score, >= 0 (higher = more likely memorized)."),
                io.Boolean.Output("MEMORIZED", display_name="memorized", is_output_list=True,
                                  tooltip=LIST + "The score is above the threshold."),
                io.String.Output("REPORT", display_name="report", tooltip="A readable summary."),
                io.Boolean.Output("ANY_MEMORIZED", display_name="any_memorized",
                                  tooltip="One value for the batch: True if any item is flagged."),
                io.Int.Output("N_MEMORIZED", display_name="n_memorized",
                              tooltip="One value for the batch: how many items are flagged."),
                io.Float.Output("MAX_SCORE", display_name="max_score",
                                tooltip="One value for the batch: the highest score."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, trajectory, steps=1, threshold=DEFAULT_THRESHOLD) -> io.NodeOutput:
        t = trajectory
        if t.num_steps == 0:
            raise ValueError("this trajectory recorded no steps")
        if t.x0_cond is None:
            raise ValueError("this trajectory has no conditional/unconditional predictions: record it with "
                             "'KSampler (Trajectory)' (or Capture Trajectory) with keep_cond_uncond enabled")
        if t.x0_uncond is None:
            raise ValueError("this trajectory has no unconditional prediction: with cfg 1 ComfyUI skips the "
                             "unconditional pass, so Wen's score does not exist. Sample with cfg > 1 (e.g. 7.5).")
        pred = t.meta.get("prediction", "eps")
        if pred not in an.PREDICTIONS:
            raise ValueError(f"Wen's score is defined for eps- or v-prediction models; this trajectory's model uses "
                             f"{pred!r}")
        vals = an.wen_from_trajectory(t.x0_cond, t.x0_uncond, t.sigmas, pred, steps=int(steps))
        flags = [bool(v > threshold) for v in vals.tolist()]
        first = int(t.steps[0]) if t.steps is not None else 0
        lines = [f"Wen score over the first {steps} recorded step(s) ({pred}; sigma {_fmt(float(t.sigmas[0]), 3)}"
                 f"{'' if steps == 1 else '..' + _fmt(float(t.sigmas[steps - 1]), 3)}); flag when > {_fmt(threshold, 3)}"]
        lines += [f"item {i}: {_fmt(v)} -> {'MEMORIZED' if f else 'ok'}" for i, (v, f) in enumerate(zip(vals.tolist(), flags))]
        if first != 0:
            lines.append(f"note: the first recorded step is callback step {first}, not the sampler's first step")
        if t.meta.get("storage_dtype") in ("float16", "bfloat16"):
            lines.append("note: stored in reduced precision; record with storage float32 for exact values")
        report = "\n".join(lines)
        wen = [float(v) for v in vals]
        shown = panel("Wen Memorization Score", columns=[col("item"), col("wen", "Wen", direction=HIGHER, fmt=".3f"),
                                                          col("memorized", "memorized")],
                      rows=[[i, v, f] for i, (v, f) in enumerate(zip(wen, flags))],
                      summary=f"{sum(flags)} of {len(flags)} flagged: Wen > {_fmt(threshold, 3)} ({HIGHER})",
                      highlight=[i for i, f in enumerate(flags) if f], notes=lines[:1] + lines[1 + len(wen):])
        return io.NodeOutput(wen, flags, report, any(flags), int(sum(flags)), max(wen) if wen else float("nan"),
                             ui=result_ui(shown))
