"""Memorization Guard node: anisotropy and Wen scores per prompt before sampling; report, mitigate or block."""

from __future__ import annotations

import logging
import math
import os

import folder_paths
from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker

from ..common.ui import result_ui
from . import anisotropy as an
from . import detection, probe
from .guard_report import guard_panel, guard_report
from .negative_check import negative_notes
from .node_common import CAL_DIR, CATEGORY, NO_CALIBRATION, calibration_names, load_named_calibration
from .node_common import fmt as _fmt

log = logging.getLogger("diffusion_sentinel")
ACTIONS = ["report", "mitigate", "block"]
SCORES = ["anisotropy", "wen"]
DEFAULT_THRESHOLD = 4.0
PAPER_SEED = 51  # the anisotropy paper's run_detection.sh
LIST = "List, one value per prompt (a node connected here runs once per prompt). "


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
                        "al.'s first-step norm. Higher = more likely memorized. Reports, rewrites the prompt "
                        "embedding until the score is under the threshold (mitigate), or blocks everything "
                        "downstream of the conditioning (block).",
            inputs=[
                io.Model.Input("model", tooltip="The model you will sample with (SD1.x, SD2.x, SDXL; eps or v). "
                                                "Its LoRAs and patches are applied while scoring; it is not modified."),
                io.Conditioning.Input("positive", tooltip="The prompt(s) to check. A batched CONDITIONING scores "
                                                          "every prompt of the batch."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="The unconditional prompt: a CLIPTextEncode with EMPTY text, as in "
                                              "the papers (the scores compare conditional and unconditional "
                                              "predictions, so it is required). A non-empty negative gets a warning."),
                io.Combo.Input("action", options=ACTIONS, default="report",
                               tooltip="report: pass the prompt through and output the scores. mitigate: optimise "
                                       "the embedding of flagged prompts (AdamW, as Wen et al.) until the score is "
                                       "under the threshold; output the new CONDITIONING. block: if a prompt is "
                                       "flagged, the CONDITIONING output blocks every node after it (with a message)."),
                io.Float.Input("threshold", default=DEFAULT_THRESHOLD, min=-1e4, max=1e4, step=0.01,
                               tooltip="Flag a prompt when its score is ABOVE this. Ignored when a calibration is "
                                       "selected (its fitted threshold is used). Uncalibrated starting points "
                                       "(guesses, not measured): anisotropy ~4 for SD1 weights; wen ~1.5 per sample "
                                       "(Wen et al.'s mitigation target 3 is the norm over a batch of 4 generations). "
                                       "Calibrate for your model."),
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
                io.Int.Input("seed", default=PAPER_SEED, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the pure-noise inputs, part of the score's definition (the same noise "
                                     "for every prompt, as in the paper; its detection script uses 51). Fixed: it "
                                     "does not change between runs. Calibrate with the same seed."),
                io.Int.Input("n_samples", default=1, min=1, max=64,
                             tooltip="Noise samples per prompt; the scores are averaged. 1 is the paper's default; "
                                     "4 raised its AUC on SD1.4 from 0.994 to 0.999. Cost grows linearly."),
                io.Int.Input("width", default=0, min=0, max=4096, step=8,
                             tooltip="Image width of the noise latent. 0 = auto: the selected calibration's size, "
                                     "else the model's native size (768 for v-prediction SD2.x, as the paper's SD2 "
                                     "runs; 1024 for SDXL; 512 otherwise)."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8,
                             tooltip="Image height of the noise latent (0 = auto, as width)."),
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
                io.Clip.Input("clip", optional=True,
                              tooltip="Optional: the checkpoint's CLIP, used only to check that the negative is the "
                                      "empty prompt when the graph does not show it (e.g. a combined negative)."),
            ],
            outputs=[
                io.Conditioning.Output("POSITIVE", display_name="positive",
                                       tooltip="report: the input unchanged. mitigate: the optimised embedding (the "
                                               "input if nothing was flagged). block: blocks every node after it "
                                               "when a prompt is flagged."),
                io.Float.Output("ANISOTROPY", display_name="anisotropy", is_output_list=True,
                                tooltip=LIST + "M = g_n*N + g_c*C (higher = more likely memorized)."),
                io.Float.Output("WEN", display_name="wen", is_output_list=True,
                                tooltip=LIST + "Wen et al.'s first-step (or k-step) norm, >= 0 (higher = more likely "
                                               "memorized)."),
                io.Boolean.Output("MEMORIZED", display_name="memorized", is_output_list=True,
                                  tooltip=LIST + "The selected score is above the threshold (before mitigation)."),
                io.Float.Output("SCORE_AFTER", display_name="score_after", is_output_list=True,
                                tooltip=LIST + "The selected score of the output CONDITIONING (after mitigation; "
                                               "otherwise the same as before)."),
                io.Float.Output("NORM", display_name="norm_term", is_output_list=True,
                                tooltip=LIST + "N: norm of the guidance vector at t=981, >= 0."),
                io.Float.Output("COSINE", display_name="cosine_term", is_output_list=True,
                                tooltip=LIST + "C: per-pixel channel cosine of the unconditional prediction and the "
                                               "guidance vector at t=41, averaged over pixels, in [-1, 1]."),
                io.Float.Output("THRESHOLD", display_name="threshold",
                                tooltip="The threshold actually used (from the calibration if one is selected)."),
                io.String.Output("REPORT", display_name="report", tooltip="A readable summary of the scores."),
                io.Boolean.Output("ANY_MEMORIZED", display_name="any_memorized",
                                  tooltip="One value for the batch: True if any prompt is flagged (a switch or "
                                          "logic node connected here runs once)."),
                io.Int.Output("N_MEMORIZED", display_name="n_memorized",
                              tooltip="One value for the batch: how many prompts are flagged."),
                io.Float.Output("MAX_SCORE", display_name="max_score",
                                tooltip="One value for the batch: the highest selected score (before mitigation)."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.dynprompt, io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, calibration=NO_CALIBRATION, **kw):
        path = folder_paths.get_full_path(CAL_DIR, calibration) if calibration not in (None, NO_CALIBRATION) else None
        return f"{calibration}:{os.path.getmtime(path) if path and os.path.isfile(path) else 0}"

    @classmethod
    def execute(cls, model, positive, negative=None, action="report", threshold=DEFAULT_THRESHOLD, score="anisotropy",
                calibration=NO_CALIBRATION, weights="auto", seed=PAPER_SEED, n_samples=1, width=0, height=0,
                wen_steps=1, cfg=7.5, mitigation_steps=10, learning_rate=0.05, clip=None) -> io.NodeOutput:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        info = probe.model_info(model)
        probe.check_conditioning(positive, negative)
        cal = load_named_calibration(calibration)
        notes: list[str] = []
        auto = {"width": not int(width), "height": not int(height)}
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
            width = int(width) or _int_setting(cal.settings, "width")
            height = int(height) or _int_setting(cal.settings, "height")
        else:
            gn, gc = an.weights_for(weights, info.prediction)
            thr = float(threshold)
            source = f"weights {weights}" + (f" -> {an.AUTO_WEIGHTS[info.prediction]}" if weights == "auto" else "")
        settings = detection.DetectorSettings(seed=int(seed), n_samples=int(n_samples), width=int(width),
                                              height=int(height), wen_steps=int(wen_steps), cfg=float(cfg))
        settings.resolve_size(info.native_size)
        if any(auto.values()):
            notes.append(f"noise latent {settings.width}x{settings.height} px (auto: "
                         + ("the calibration's size" if cal is not None and "width" in cal.settings else
                            f"native size of {info.family} {info.prediction}") + ")")
        if cal is not None:
            for k, v in (("seed", settings.seed), ("n_samples", settings.n_samples), ("width", settings.width),
                         ("height", settings.height)):
                if k in cal.settings and cal.settings[k] != v:
                    notes.append(f"note: calibrated with {k}={cal.settings[k]}, run with {k}={v}: the threshold may "
                                 "not transfer")
        notes += _negative_notes(cls, negative, clip, cal)
        mit = None
        if action == "mitigate":
            mit = detection.MitigationSettings(score=score, threshold=thr, gamma_n=gn, gamma_c=gc,
                                               lr=float(learning_rate), max_iters=int(mitigation_steps))
        run = detection.detect(model, positive, negative, settings, mit)
        det = run.detection
        m = det.anisotropy(gn, gc)
        sel = m if score == "anisotropy" else det.wen
        flags = [bool(v > thr) for v in sel.tolist()]
        after = sel
        out_pos = positive
        if run.after is not None:
            after = run.after.anisotropy(gn, gc) if score == "anisotropy" else run.after.wen
            out_pos = detection.conditioning_with_embeddings(positive, run.embeddings)
        if det.norm.abs().max() == 0:
            notes.append("warning: the conditional and unconditional predictions are identical (positive == "
                         "negative?): every score is 0")
        for n in notes:
            if n.startswith("warning"):
                log.warning("Memorization Guard: %s", n)
        values = {"anisotropy": [float(v) for v in m], "wen": [float(v) for v in det.wen], "memorized": flags,
                  "score_after": [float(v) for v in after], "norm": [float(v) for v in det.norm],
                  "cosine": [float(v) for v in det.cosine]}
        report = guard_report(info, det, m, sel, after, flags, thr, score, gn, gc, source, settings, action, run, notes)
        shown = guard_panel(values, thr, score, action, source, gn, gc, settings, run, notes)
        if action == "block" and any(flags):
            bad = [i for i, f in enumerate(flags) if f]
            msg = (f"Memorization Guard blocked the prompt: {len(bad)} of {len(flags)} prompt(s) scored above the "
                   f"threshold {_fmt(thr, 3)} on '{score}' ("
                   + ", ".join(f"prompt {i}: {_fmt(float(sel[i]), 3)}" for i in bad[:8])
                   + "). Such prompts tend to reproduce training images. Rephrase the prompt or set action to "
                     "'mitigate'.")
            out_pos = ExecutionBlocker(msg)
        sel_list = [float(v) for v in sel]
        return io.NodeOutput(out_pos, values["anisotropy"], values["wen"], flags, values["score_after"], values["norm"],
                             values["cosine"], float(thr), report, any(flags), int(sum(flags)),
                             float(max(sel_list)) if sel_list else float("nan"), ui=result_ui(shown))


def _int_setting(settings: dict, key: str) -> int:
    v = settings.get(key, 0)
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _negative_notes(cls, negative, clip, cal) -> list[str]:
    hidden = getattr(cls, "hidden", None)
    prompt = getattr(hidden, "dynprompt", None) or getattr(hidden, "prompt", None)
    node_id = getattr(hidden, "unique_id", None)
    encode_empty = None
    if clip is not None:
        def encode_empty():
            return clip.encode_from_tokens_scheduled(clip.tokenize(""))
    notes = negative_notes(negative, prompt=prompt, node_id=node_id, encode_empty=encode_empty)
    if notes and cal is not None and cal.settings.get("negative_prompt"):
        notes.append(f"note: the selected calibration was made with the negative prompt "
                     f"\"{str(cal.settings['negative_prompt'])[:60]}\"")
    return notes

