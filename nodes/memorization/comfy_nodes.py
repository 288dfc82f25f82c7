"""Memorization nodes: the guard (anisotropy + Wen scores, report / mitigate / block), Wen's score from a recorded
TRAJECTORY, calibration from two prompt lists, and the volume growth rate of images."""

from __future__ import annotations

import logging
import math
import os
import re

import folder_paths
import torch
from comfy_api.latest import io, ui
from comfy_execution.graph_utils import ExecutionBlocker

from ..common.comfy_glue import register_folder
from ..common.comfy_types import Trajectory as TrajectoryType
from . import anisotropy as an
from . import probe
from .calibration import Calibration, CalibrationError, calibrate, load_calibration, save_calibration
from .volume import METHODS as VOLUME_METHODS
from .volume import MODES as VOLUME_MODES

log = logging.getLogger("diffusion_sentinel")
CATEGORY = "Sentinel/memorization"
CAL_DIR = "memorization_calibrations"
NO_CALIBRATION = "none"
ACTIONS = ["report", "mitigate", "block"]
SCORES = ["anisotropy", "wen"]
DEFAULT_THRESHOLD = 4.0

register_folder(CAL_DIR, [os.path.join(folder_paths.models_dir, CAL_DIR)], {".json"})


def calibration_names() -> list[str]:
    try:
        return [NO_CALIBRATION] + sorted(folder_paths.get_filename_list(CAL_DIR))
    except KeyError:
        return [NO_CALIBRATION]


def load_named_calibration(name: str) -> Calibration | None:
    if not name or name == NO_CALIBRATION:
        return None
    path = folder_paths.get_full_path(CAL_DIR, name)
    if path is None:
        raise ValueError(f"calibration {name!r} not found in models/{CAL_DIR}; run 'Calibrate Memorization Guard' "
                         "or pick 'none'")
    try:
        return load_calibration(path)
    except CalibrationError as e:
        raise ValueError(f"calibration {name!r}: {e}") from e


def _fmt(v: float, d: int = 4) -> str:
    return "nan" if v is None or not math.isfinite(float(v)) else f"{float(v):.{d}f}"


# ----------------------------------------------------------------------------- guard
class MemorizationGuard(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelMemorizationGuard",
            display_name="Memorization Guard",
            category=CATEGORY,
            description="Before sampling, scores each prompt for training-data copying: the anisotropy metric of "
                        "Asthana & Belagiannis (ICLR 2026: norm of the guidance vector at t=981 plus its alignment "
                        "with the unconditional prediction at t=41, on seeded pure noise; 2 U-Net calls) and Wen et "
                        "al.'s first-step norm. Reports, rewrites the prompt embedding until the score is under the "
                        "threshold (mitigate), or blocks everything downstream of the conditioning (block).",
            inputs=[
                io.Model.Input("model", tooltip="The model you will sample with (SD1.x, SD2.x, SDXL; eps or v). "
                                                "Its LoRAs and patches are applied while scoring; it is not modified."),
                io.Conditioning.Input("positive", tooltip="The prompt(s) to check. A batched CONDITIONING scores "
                                                          "every prompt of the batch."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="The unconditional prompt: a CLIPTextEncode with EMPTY text, as in "
                                              "the papers (the scores compare conditional and unconditional "
                                              "predictions, so it is required)."),
                io.Combo.Input("action", options=ACTIONS, default="report",
                               tooltip="report: pass the prompt through and output the scores. mitigate: optimise "
                                       "the embedding of flagged prompts (AdamW, as Wen et al.) until the score is "
                                       "under the threshold; output the new CONDITIONING. block: if a prompt is "
                                       "flagged, the CONDITIONING output blocks every node after it (with a message)."),
                io.Float.Input("threshold", default=DEFAULT_THRESHOLD, min=-1e4, max=1e4, step=0.01,
                               tooltip="Flag a prompt when its score is ABOVE this. Ignored when a calibration is "
                                       "selected (its fitted threshold is used). Uncalibrated starting points "
                                       "(guesses, not measured): anisotropy ~4 for SD1 weights, wen ~3 (Wen et "
                                       "al.'s mitigation target). Calibrate for your model."),
                io.Combo.Input("score", options=SCORES, default="anisotropy",
                               tooltip="Which score the threshold applies to. anisotropy: M = g_n*N + g_c*C (the "
                                       "paper; AUC 0.994 on SD1.4 vs 0.976 for Wen at one sample). wen: Wen et al.'s "
                                       "first-step norm ||eps_c - eps_u|| (v models: ||v_c - v_u||)."),
                io.Combo.Input("calibration", options=calibration_names(), default=NO_CALIBRATION,
                               tooltip="A calibration made by 'Calibrate Memorization Guard' for this model "
                                       f"(models/{CAL_DIR}/*.json): its weights and threshold replace the 'weights' "
                                       "and 'threshold' inputs. 'none' uses the paper's weights."),
                io.Combo.Input("weights", options=["auto", *an.WEIGHT_PRESETS], default="auto",
                               tooltip="(g_n, g_c) of M without a calibration. auto: the paper's weights by "
                                       "prediction type, SD1 (1, 2) for eps models, SD2 (1, 0.1) for v models."),
                io.Int.Input("seed", default=51, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the pure-noise inputs (the same noise for every prompt, as in the "
                                     "paper; its detection script uses 51). Calibrate with the same seed."),
                io.Int.Input("n_samples", default=1, min=1, max=64,
                             tooltip="Noise samples per prompt; the scores are averaged. 1 is the paper's default; "
                                     "4 raised its AUC on SD1.4 from 0.994 to 0.999. Cost grows linearly."),
                io.Int.Input("width", default=512, min=64, max=4096, step=8,
                             tooltip="Image width of the noise latent (SD1: 512, SD2-768: 768). Use the size you "
                                     "calibrated with."),
                io.Int.Input("height", default=512, min=64, max=4096, step=8,
                             tooltip="Image height of the noise latent."),
                io.Int.Input("wen_steps", default=1, min=1, max=50, optional=True,
                             tooltip="Wen's score over the first k steps of a DDIM-50 sampling with guidance 'cfg' "
                                     "(1 = first step, free: it reuses the detector's t=981 call; k costs k-1 more "
                                     "U-Net calls)."),
                io.Float.Input("cfg", default=7.5, min=1.0, max=30.0, step=0.1, optional=True,
                               tooltip="Guidance scale of that DDIM run (Wen's default 7.5); only used when "
                                       "wen_steps > 1."),
                io.Int.Input("mitigation_steps", default=10, min=1, max=200, optional=True,
                             tooltip="mitigate: at most this many AdamW steps on the prompt embedding (Wen: 10). "
                                     "Each costs a forward and a backward pass per timestep of the score."),
                io.Float.Input("learning_rate", default=0.05, min=1e-4, max=1.0, step=0.001, optional=True,
                               tooltip="mitigate: AdamW learning rate on the embedding (Wen: 0.05)."),
            ],
            outputs=[
                io.Conditioning.Output("POSITIVE", display_name="positive",
                                       tooltip="report: the input unchanged. mitigate: the optimised embedding (the "
                                               "input if nothing was flagged). block: blocks every node after it "
                                               "when a prompt is flagged."),
                io.Float.Output("ANISOTROPY", display_name="anisotropy", is_output_list=True,
                                tooltip="M = g_n*N + g_c*C per prompt (higher = more likely memorized)."),
                io.Float.Output("WEN", display_name="wen", is_output_list=True,
                                tooltip="Wen et al.'s first-step (or k-step) norm per prompt."),
                io.Boolean.Output("MEMORIZED", display_name="memorized", is_output_list=True,
                                  tooltip="Per prompt: the selected score is above the threshold (before mitigation)."),
                io.Float.Output("SCORE_AFTER", display_name="score_after", is_output_list=True,
                                tooltip="The selected score of the output CONDITIONING (after mitigation; otherwise "
                                        "the same as before)."),
                io.Float.Output("NORM", display_name="norm_term", is_output_list=True,
                                tooltip="N: norm of the guidance vector at t=981 per prompt."),
                io.Float.Output("COSINE", display_name="cosine_term", is_output_list=True,
                                tooltip="C: per-pixel channel cosine of the unconditional prediction and the "
                                        "guidance vector at t=41, averaged over pixels."),
                io.Float.Output("THRESHOLD", display_name="threshold",
                                tooltip="The threshold actually used (from the calibration if one is selected)."),
                io.String.Output("REPORT", display_name="report", tooltip="A readable summary of the scores."),
            ],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, calibration=NO_CALIBRATION, **kw):
        path = folder_paths.get_full_path(CAL_DIR, calibration) if calibration not in (None, NO_CALIBRATION) else None
        return f"{calibration}:{os.path.getmtime(path) if path and os.path.isfile(path) else 0}"

    @classmethod
    def execute(cls, model, positive, negative=None, action="report", threshold=DEFAULT_THRESHOLD, score="anisotropy",
                calibration=NO_CALIBRATION, weights="auto", seed=51, n_samples=1, width=512, height=512, wen_steps=1,
                cfg=7.5, mitigation_steps=10, learning_rate=0.05) -> io.NodeOutput:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        info = probe.model_info(model)
        probe.check_conditioning(positive, negative)
        cal = load_named_calibration(calibration)
        notes: list[str] = []
        if cal is not None:
            want = {k: cal.model.get(k) for k in ("family", "prediction") if cal.model.get(k)}
            have = {"family": info.family, "prediction": info.prediction}
            if any(have[k] != v for k, v in want.items()):
                raise ValueError(f"calibration {calibration!r} was made for {want} but this model is {have}; "
                                 "calibrate this model or select 'none'")
            gn, gc = cal.gamma_norm, cal.gamma_cos
            thr = cal.threshold if score == "anisotropy" else cal.wen_threshold
            if not math.isfinite(thr):
                raise ValueError(f"calibration {calibration!r} has no threshold for the '{score}' score; re-run the "
                                 "calibration or use score 'anisotropy'")
            source = f"calibration {cal.name or calibration}"
            for k, v in (("seed", seed), ("n_samples", n_samples), ("width", width), ("height", height)):
                if k in cal.settings and cal.settings[k] != v:
                    notes.append(f"note: calibrated with {k}={cal.settings[k]}, run with {k}={v}: the threshold may "
                                 "not transfer")
        else:
            gn, gc = an.weights_for(weights, info.prediction)
            thr = float(threshold)
            source = f"weights {weights}" + (f" -> {an.AUTO_WEIGHTS[info.prediction]}" if weights == "auto" else "")
        settings = probe.DetectorSettings(seed=int(seed), n_samples=int(n_samples), width=int(width),
                                          height=int(height), wen_steps=int(wen_steps), cfg=float(cfg))
        mit = None
        if action == "mitigate":
            mit = probe.MitigationSettings(score=score, threshold=thr, gamma_n=gn, gamma_c=gc, lr=float(learning_rate),
                                           max_iters=int(mitigation_steps))
        run = probe.detect(model, positive, negative, settings, mit)
        det = run.detection
        m = det.anisotropy(gn, gc)
        sel = m if score == "anisotropy" else det.wen
        flags = [bool(v > thr) for v in sel.tolist()]
        after = sel
        out_pos = positive
        if run.after is not None:
            after = run.after.anisotropy(gn, gc) if score == "anisotropy" else run.after.wen
            out_pos = probe.conditioning_with_embeddings(positive, run.embeddings)
        if det.norm.abs().max() == 0:
            notes.append("warning: the conditional and unconditional predictions are identical (positive == "
                         "negative?): every score is 0")
        report = _guard_report(info, det, m, sel, after, flags, thr, score, gn, gc, source, settings, action, run, notes)
        if action == "block" and any(flags):
            bad = [i for i, f in enumerate(flags) if f]
            msg = (f"Memorization Guard blocked the prompt: {len(bad)} of {len(flags)} prompt(s) scored above the "
                   f"threshold {_fmt(thr, 3)} on '{score}' ("
                   + ", ".join(f"prompt {i}: {_fmt(float(sel[i]), 3)}" for i in bad[:8])
                   + "). Such prompts tend to reproduce training images. Rephrase the prompt or set action to "
                     "'mitigate'.")
            out_pos = ExecutionBlocker(msg)
        return io.NodeOutput(out_pos, [float(v) for v in m], [float(v) for v in det.wen], flags,
                             [float(v) for v in after], [float(v) for v in det.norm], [float(v) for v in det.cosine],
                             float(thr), report, ui=ui.PreviewText(report))


def _guard_report(info, det, m, sel, after, flags, thr, score, gn, gc, source, settings, action, run, notes) -> str:
    h, w = settings.latent_hw()
    lines = [f"Memorization Guard - {info.family} ({info.prediction}); {det.n_prompts} prompt(s) x "
             f"{settings.n_samples} noise sample(s), latent {info.latent_channels}x{h}x{w}, seed {settings.seed}",
             f"M = {_fmt(gn, 3)}*N + {_fmt(gc, 3)}*C ({source}); flag when {score} > {_fmt(thr, 3)}"]
    for i in range(det.n_prompts):
        lines.append(f"prompt {i}: M={_fmt(float(m[i]))} (N={_fmt(float(det.norm[i]))}, C={_fmt(float(det.cosine[i]))})"
                     f" wen={_fmt(float(det.wen[i]))} -> {'MEMORIZED' if flags[i] else 'ok'}")
    if action == "mitigate":
        if run.mitigation is None:
            lines.append("mitigate: nothing flagged, the conditioning is passed through unchanged")
        else:
            r = run.mitigation
            lines.append(f"mitigate: {r.steps} AdamW step(s); {score} "
                         + ", ".join(f"{_fmt(a, 3)} -> {_fmt(b, 3)}" for a, b in zip(sel.tolist(), after.tolist()))
                         + (" (all under the threshold)" if all(v <= thr for v in after.tolist())
                            else " (NOT all under the threshold: raise mitigation_steps or block)"))
    calls = det.unet_calls + (run.after.unet_calls if run.after is not None else 0)
    lines.append(f"U-Net calls for detection: {det.unet_calls} (cond+uncond batched); sigma(981)="
                 f"{_fmt(det.sigma_norm, 3)}, sigma(41)={_fmt(det.sigma_cos, 4)}" + ("" if calls == det.unet_calls else
                                                                                     f"; {calls} incl. re-scoring"))
    return "\n".join(lines + notes)


# ----------------------------------------------------------------------------- Wen from a trajectory
class WenScoreFromTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelWenScoreTrajectory",
            display_name="Wen Memorization Score (Trajectory)",
            category=CATEGORY,
            description="Wen et al.'s memorization score read for free from a sampling run: the norm of the "
                        "difference between the conditional and unconditional predictions (eps, or v for v models) "
                        "at the first recorded step(s). Record the run with KSampler (Trajectory) and "
                        "keep_cond_uncond on, with cfg > 1.",
            inputs=[
                TrajectoryType.Input("trajectory", tooltip="From KSampler (Trajectory) / Get Captured Trajectory with "
                                                           "keep_cond_uncond on."),
                io.Int.Input("steps", default=1, min=1, max=1000,
                             tooltip="Mean over the first k recorded steps (1 = Wen's first-step metric)."),
                io.Float.Input("threshold", default=3.0, min=-1e4, max=1e4, step=0.01,
                               tooltip="Flag an item when its score is above this (uncalibrated guess: 3, Wen's "
                                       "mitigation target; calibrate for your model)."),
            ],
            outputs=[
                io.Float.Output("WEN", display_name="wen", is_output_list=True, tooltip="Wen's score per batch item."),
                io.Boolean.Output("MEMORIZED", display_name="memorized", is_output_list=True,
                                  tooltip="Per batch item: the score is above the threshold."),
                io.String.Output("REPORT", display_name="report", tooltip="A readable summary."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, trajectory, steps=1, threshold=3.0) -> io.NodeOutput:
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
        return io.NodeOutput([float(v) for v in vals], flags, report, ui=ui.PreviewText(report))


# ----------------------------------------------------------------------------- calibration
def _prompts(text: str) -> list[str]:
    return [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _safe_name(name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", (name or "").strip()).strip("._")
    if not base:
        raise ValueError("give the calibration a name (letters, digits, '-', '_', '.')")
    return base if base.endswith(".json") else base + ".json"


def _stack_batches(conds: list, max_batch: int) -> list[tuple[list[int], list]]:
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


def score_prompt_list(model, clip, prompts: list[str], negative_prompt: str, settings: probe.DetectorSettings,
                      prompts_per_batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt: [N, C] features and Wen's score, scoring compatible prompts together in batches."""
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(negative_prompt))
    conds = [clip.encode_from_tokens_scheduled(clip.tokenize(p)) for p in prompts]
    feats = torch.zeros(len(conds), 2)
    wen = torch.zeros(len(conds))
    for idx, cond in _stack_batches(conds, prompts_per_batch):
        det = probe.detect(model, cond, neg, settings).detection
        feats[idx, 0], feats[idx, 1], wen[idx] = det.norm, det.cosine, det.wen
    return feats, wen


class CalibrateMemorizationGuard(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelCalibrateMemorizationGuard",
            display_name="Calibrate Memorization Guard",
            category=CATEGORY,
            description="Fits the guard's weights (g_n, g_c) and threshold by logistic regression on the detector's "
                        "scores of two prompt lists you give (known memorized prompts, e.g. Webster's extraction "
                        "list, and ordinary prompts); reports AUC and TPR at 1% FPR and saves the calibration for "
                        f"this model in models/{CAL_DIR}/, where the guard can select it.",
            inputs=[
                io.Model.Input("model", tooltip="The model to calibrate (the same one the guard will check)."),
                io.Clip.Input("clip", tooltip="The text encoder of that checkpoint, to encode the prompt lists."),
                io.String.Input("memorized_prompts", multiline=True, default="",
                                tooltip="Known memorized prompts, one per line (lines starting with # are ignored). "
                                        "The paper fitted its weights on 20."),
                io.String.Input("normal_prompts", multiline=True, default="",
                                tooltip="Ordinary (non-memorized) prompts, one per line. More prompts give a "
                                        "better false-positive estimate."),
                io.String.Input("name", default="my-model",
                                tooltip=f"File name of the calibration in models/{CAL_DIR}/ (.json added; an "
                                        "existing file of that name is replaced)."),
                io.String.Input("negative_prompt", default="", optional=True,
                                tooltip="Text of the unconditional prompt (empty, as in the papers). Use the same "
                                        "negative in the guard."),
                io.Combo.Input("threshold_rule", options=["logistic", "fpr"], default="logistic", optional=True,
                               tooltip="logistic: the p=0.5 boundary of the fit (classes weighted equally). fpr: "
                                       "the lowest threshold that flags at most 'target_fpr' of your normal prompts."),
                io.Float.Input("target_fpr", default=0.01, min=0.0, max=0.5, step=0.001, optional=True,
                               tooltip="False-positive rate for the 'fpr' rule and for the reported TPR (paper: 1%)."),
                io.Int.Input("seed", default=51, min=0, max=0xFFFFFFFFFFFFFFFF, optional=True,
                             tooltip="Noise seed; the guard should use the same."),
                io.Int.Input("n_samples", default=1, min=1, max=64, optional=True,
                             tooltip="Noise samples per prompt (the guard should use the same)."),
                io.Int.Input("width", default=512, min=64, max=4096, step=8, optional=True,
                             tooltip="Noise latent width in pixels (the guard should use the same)."),
                io.Int.Input("height", default=512, min=64, max=4096, step=8, optional=True,
                             tooltip="Noise latent height in pixels (the guard should use the same)."),
                io.Int.Input("prompts_per_batch", default=8, min=1, max=256, optional=True,
                             tooltip="Prompts scored together in one U-Net batch (lower it if you run out of memory)."),
            ],
            outputs=[
                io.Float.Output("AUC", display_name="auc", tooltip="ROC AUC of the fitted score on your lists "
                                                                   "(in-sample; the report also gives a cross-validated AUC)."),
                io.Float.Output("TPR", display_name="tpr_at_fpr", tooltip="Best TPR with FPR <= target_fpr."),
                io.Float.Output("GAMMA_N", display_name="gamma_norm", tooltip="Fitted weight of the norm term."),
                io.Float.Output("GAMMA_C", display_name="gamma_cos", tooltip="Fitted weight of the cosine term."),
                io.Float.Output("THRESHOLD", display_name="threshold", tooltip="Fitted threshold on M."),
                io.String.Output("CALIBRATION", display_name="calibration", tooltip="File name to select in the guard."),
                io.String.Output("REPORT", display_name="report", tooltip="Metrics and per-prompt scores."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, clip, memorized_prompts, normal_prompts, name, negative_prompt="", threshold_rule="logistic",
                target_fpr=0.01, seed=51, n_samples=1, width=512, height=512, prompts_per_batch=8) -> io.NodeOutput:
        mem, non = _prompts(memorized_prompts), _prompts(normal_prompts)
        if len(mem) < 2 or len(non) < 2:
            raise ValueError(f"give at least 2 memorized and 2 normal prompts, one per line (got {len(mem)} and "
                             f"{len(non)}); the paper fitted on 20 memorized prompts")
        fname = _safe_name(name)
        info = probe.model_info(model)
        if clip is None:
            raise ValueError("connect the CLIP of the checkpoint: the prompt lists must be encoded")
        settings = probe.DetectorSettings(seed=int(seed), n_samples=int(n_samples), width=int(width), height=int(height))
        feats, wen = score_prompt_list(model, clip, mem + non, negative_prompt or "", settings, int(prompts_per_batch))
        k = len(mem)
        try:
            cal = calibrate(feats[:k].numpy(), feats[k:].numpy(), wen[:k].numpy(), wen[k:].numpy(),
                            threshold_rule=threshold_rule, target_fpr=float(target_fpr))
        except CalibrationError as e:
            raise ValueError(f"calibration failed: {e}") from e
        cal.name = fname[:-5]
        cal.model = info.as_dict()
        cal.settings = {"seed": int(seed), "n_samples": int(n_samples), "width": int(width), "height": int(height),
                        "negative_prompt": negative_prompt or ""}
        folder = os.path.join(folder_paths.models_dir, CAL_DIR)
        paths = folder_paths.get_folder_paths(CAL_DIR)
        folder = paths[0] if paths else folder
        save_calibration(cal, os.path.join(folder, fname))
        report = _calibration_report(cal, mem, non, feats, wen, fname)
        mt = cal.metrics
        return io.NodeOutput(float(mt["auc"]), float(mt["tpr_at_fpr"]), cal.gamma_norm, cal.gamma_cos, cal.threshold,
                             fname, report, ui=ui.PreviewText(report))


def _calibration_report(cal: Calibration, mem, non, feats, wen, fname) -> str:
    mt = cal.metrics
    pct = f"{100 * cal.target_fpr:g}%"
    lines = [f"Calibration {fname} for {cal.model.get('family')} ({cal.model.get('prediction')}): "
             f"{mt['n_memorized']} memorized vs {mt['n_normal']} normal prompts",
             f"M = {_fmt(cal.gamma_norm, 4)}*N + {_fmt(cal.gamma_cos, 4)}*C, flag when M > {_fmt(cal.threshold, 4)} "
             f"(rule: {cal.threshold_rule}); Wen threshold {_fmt(cal.wen_threshold, 4)}",
             f"AUC {_fmt(mt['auc'], 3)} (in-sample; cross-validated {_fmt(mt.get('auc_cv', float('nan')), 3)}), "
             f"TPR@{pct} FPR {_fmt(mt['tpr_at_fpr'], 3)} (paper's closest-point rule {_fmt(mt['tpr_at_fpr_closest'], 3)})",
             f"flagged: {mt['flagged_memorized']}/{mt['n_memorized']} memorized, {mt['flagged_normal']}/{mt['n_normal']} normal",
             f"AUC norm only {_fmt(mt['auc_norm_only'], 3)}, cosine only {_fmt(mt['auc_cosine_only'], 3)}, paper SD1 "
             f"weights {_fmt(mt['auc_paper_sd1_weights'], 3)}, Wen {_fmt(mt.get('wen_auc', float('nan')), 3)}"]
    m = cal.score(feats[:, 0].numpy(), feats[:, 1].numpy())
    for label, prompts, off in (("memorized", mem, 0), ("normal", non, len(mem))):
        for i, p in enumerate(prompts[:50]):
            j = off + i
            lines.append(f"  [{label}] M={_fmt(float(m[j]), 3)} N={_fmt(float(feats[j, 0]), 3)} "
                         f"C={_fmt(float(feats[j, 1]), 3)} wen={_fmt(float(wen[j]), 3)}  {p[:70]}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- volume growth rate
class VolumeGrowthRate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelVolumeGrowthRate",
            display_name="Volume Growth Rate",
            category=CATEGORY,
            description="Ease of reproduction of each image (Hasegawa & Yasuda 2025): how much the probability-flow "
                        "ODE that maps the image's latent towards noise (DDIM inversion from low noise) stretches its "
                        "neighbourhood. Higher = easier for the model to reproduce (memorized images score higher). "
                        "A ranking score within one model and image size.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (eps or v, discrete schedule)."),
                io.Vae.Input("vae", tooltip="The VAE that encodes the images into the model's latent space."),
                io.Image.Input("image", tooltip="The images to score (a batch gives one score per image)."),
                io.Conditioning.Input("conditioning",
                                      tooltip="Prompt conditioning of the ODE. The paper's setting is unconditional: "
                                              "connect a CLIPTextEncode with EMPTY text (no CFG is used)."),
                io.Combo.Input("mode", options=list(VOLUME_MODES), default="directions",
                               tooltip="directions: mean log-stretch log(||J u||/||u||) over K random unit directions. "
                                       "single_axis: along one coordinate axis (the paper's 'single axis, one step'). "
                                       "volume: log|det J| by Liouville's formula with Hutchinson's trace (K "
                                       "Rademacher probes per step), in nats."),
                io.Int.Input("directions", default=4, min=1, max=256,
                             tooltip="K: random directions (directions mode) or Hutchinson probes (volume mode). "
                                     "Ignored by single_axis."),
                io.Int.Input("steps", default=1, min=1, max=49,
                             tooltip="Inversion steps of the DDIM-50 grid from the first timestep (1 = one step, the "
                                     "paper's finding; use several for the volume mode)."),
                io.Combo.Input("method", options=list(VOLUME_METHODS), default="jvp",
                               tooltip="jvp: forward-mode AD (exact; attention on the math kernel). "
                                       "finite_difference: central differences in fp32 (works with any attention)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the directions / probes / axis (the same for every image)."),
                io.Int.Input("start_timestep", default=1, min=0, max=998, optional=True,
                             tooltip="Timestep the clean latent is placed at (1 = the last DDIM-50 grid point)."),
                io.Int.Input("timestep_stride", default=20, min=1, max=500, optional=True,
                             tooltip="Timesteps per inversion step (20 = the DDIM-50 grid)."),
            ],
            outputs=[
                io.Float.Output("SCORE", display_name="log_growth", is_output_list=True,
                                tooltip="Per image: the mean log-stretch (directions/single_axis) or log-volume "
                                        "(volume), in nats. Higher = easier to reproduce."),
                io.String.Output("REPORT", display_name="report", tooltip="A readable summary."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, vae, image, conditioning, mode="directions", directions=4, steps=1, method="jvp", seed=0,
                start_timestep=1, timestep_stride=20) -> io.NodeOutput:
        settings = probe.VolumeSettings(mode=mode, directions=int(directions), steps=int(steps), method=method,
                                        seed=int(seed), start_timestep=int(start_timestep),
                                        timestep_stride=int(timestep_stride))
        res = probe.volume_growth(model, vae, image, conditioning, settings)
        vals = [float(v) for v in res.score]
        unit = "log|det J| (nats)" if mode == "volume" else "mean log ||J u||/||u||"
        lines = [f"Volume growth rate ({mode}, {method}): {unit} over timesteps {res.timesteps} "
                 f"(sigma {_fmt(res.sigmas[0], 4)} -> {_fmt(res.sigmas[-1], 4)}), latent dim {res.latent_dim}"
                 + (f", axis {res.axis_index}" if res.axis_index is not None else "")
                 + (f", {directions} direction(s)" if mode != "single_axis" else "")]
        for i, v in enumerate(vals):
            extra = f" ({_fmt(v / res.latent_dim, 5)} per dimension)" if mode == "volume" else ""
            lines.append(f"image {i}: {_fmt(v)}{extra}")
        lines.append(f"U-Net calls: {res.unet_calls}")
        report = "\n".join(lines)
        return io.NodeOutput(vals, report, ui=ui.PreviewText(report))


NODES = [MemorizationGuard, WenScoreFromTrajectory, CalibrateMemorizationGuard, VolumeGrowthRate]
