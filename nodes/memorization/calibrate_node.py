"""Calibrate Memorization Guard node: weights and threshold fitted on two prompt lists, saved for the guard."""

from __future__ import annotations

import os
import re

import folder_paths
from comfy_api.latest import io

from ..common.ui import col, panel, result_ui
from . import detection, probe
from .benchmark import score_prompt_list, stack_batches
from .calibration import Calibration, CalibrationError, calibrate, save_calibration
from .node_common import CAL_DIR, CATEGORY
from .node_common import fmt as _fmt

PAPER_SEED = 51
HIGHER = "higher is better"


def _prompts(text: str) -> list[str]:
    return [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _safe_name(name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", (name or "").strip()).strip("._")
    if not base:
        raise ValueError("give the calibration a name (letters, digits, '-', '_', '.')")
    return base if base.endswith(".json") else base + ".json"


_stack_batches = stack_batches  # kept under its old name (tests, comfy_nodes.__all__)


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
                io.Int.Input("seed", default=PAPER_SEED, min=0, max=0xFFFFFFFFFFFFFFFF, optional=True,
                             control_after_generate=False,
                             tooltip="Noise seed, part of the score's definition (the paper's 51); fixed between "
                                     "runs. The guard should use the same."),
                io.Int.Input("n_samples", default=1, min=1, max=64, optional=True,
                             tooltip="Noise samples per prompt (the guard should use the same)."),
                io.Int.Input("width", default=0, min=0, max=4096, step=8, optional=True,
                             tooltip="Noise latent width in pixels; 0 = the model's native size (768 for "
                                     "v-prediction SD2.x, 1024 for SDXL, else 512). Stored in the calibration; the "
                                     "guard's auto size then uses it."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8, optional=True,
                             tooltip="Noise latent height in pixels (0 = native size, as width)."),
                io.Int.Input("prompts_per_batch", default=8, min=1, max=256, optional=True,
                             tooltip="Prompts scored together in one U-Net batch (lower it if you run out of memory)."),
            ],
            outputs=[
                io.Float.Output("AUC", display_name="auc", tooltip="ROC AUC of the fitted score on your lists, in [0, 1] "
                                                                   "(higher is better; in-sample, the report also "
                                                                   "gives a cross-validated AUC)."),
                io.Float.Output("TPR", display_name="tpr_at_fpr", tooltip="Best TPR with FPR <= target_fpr, in [0, 1]."),
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
                target_fpr=0.01, seed=PAPER_SEED, n_samples=1, width=0, height=0, prompts_per_batch=8) -> io.NodeOutput:
        mem, non = _prompts(memorized_prompts), _prompts(normal_prompts)
        if len(mem) < 2 or len(non) < 2:
            raise ValueError(f"give at least 2 memorized and 2 normal prompts, one per line (got {len(mem)} and "
                             f"{len(non)}); the paper fitted on 20 memorized prompts")
        fname = _safe_name(name)
        info = probe.model_info(model)
        if clip is None:
            raise ValueError("connect the CLIP of the checkpoint: the prompt lists must be encoded")
        settings = detection.DetectorSettings(seed=int(seed), n_samples=int(n_samples), width=int(width),
                                              height=int(height)).resolve_size(info.native_size)
        feats, wen = score_prompt_list(model, clip, mem + non, negative_prompt or "", settings, int(prompts_per_batch))
        k = len(mem)
        try:
            cal = calibrate(feats[:k].numpy(), feats[k:].numpy(), wen[:k].numpy(), wen[k:].numpy(),
                            threshold_rule=threshold_rule, target_fpr=float(target_fpr))
        except CalibrationError as e:
            raise ValueError(f"calibration failed: {e}") from e
        cal.name = fname[:-5]
        cal.model = info.as_dict()
        cal.settings = {"seed": settings.seed, "n_samples": settings.n_samples, "width": settings.width,
                        "height": settings.height, "negative_prompt": negative_prompt or ""}
        folder = os.path.join(folder_paths.models_dir, CAL_DIR)
        paths = folder_paths.get_folder_paths(CAL_DIR)
        folder = paths[0] if paths else folder
        path = save_calibration(cal, os.path.join(folder, fname))
        report = _calibration_report(cal, mem, non, feats, wen, fname)
        mt = cal.metrics
        return io.NodeOutput(float(mt["auc"]), float(mt["tpr_at_fpr"]), cal.gamma_norm, cal.gamma_cos, cal.threshold,
                             fname, report, ui=result_ui(*_calibration_panels(cal, mem, non, feats, wen, fname, path)))


def _calibration_panels(cal: Calibration, mem, non, feats, wen, fname, path) -> tuple[dict, dict]:
    """The metrics (AUC, TPR at the target FPR, the chosen threshold, the file written) and the per-prompt scores."""
    mt = cal.metrics
    pct = f"{100 * cal.target_fpr:g}%"
    rows = [["AUC (in-sample)", mt["auc"]], ["AUC (cross-validated)", mt.get("auc_cv", float("nan"))],
            [f"TPR at {pct} FPR", mt["tpr_at_fpr"]], [f"threshold on M ({cal.threshold_rule})", cal.threshold],
            ["gamma_n", cal.gamma_norm], ["gamma_c", cal.gamma_cos], ["Wen threshold", cal.wen_threshold],
            ["Wen AUC", mt.get("wen_auc", float("nan"))]]
    metrics = panel("Calibrate Memorization Guard", kind="table",
                    summary=f"AUC {_fmt(mt['auc'], 3)}, TPR@{pct} FPR {_fmt(mt['tpr_at_fpr'], 3)}, flag when "
                            f"M > {_fmt(cal.threshold, 3)}; wrote {fname}",
                    columns=[col("metric"), col("value", fmt=".4f")], rows=rows,
                    notes=[f"file: models/{CAL_DIR}/{fname} (select it in the guard's 'calibration')",
                           f"flagged: {mt['flagged_memorized']}/{mt['n_memorized']} memorized, "
                           f"{mt['flagged_normal']}/{mt['n_normal']} normal; AUC and TPR: higher is better, in [0, 1]",
                           f"written to {os.path.dirname(path)}"])
    m = cal.score(feats[:, 0].numpy(), feats[:, 1].numpy())
    labels = ["memorized"] * len(mem) + ["normal"] * len(non)
    texts = mem + non
    per = panel("Calibration prompts", summary="M, N, C and Wen per prompt (higher = more likely memorized)",
                columns=[col("list"), col("M", direction="higher = more likely memorized", fmt=".3f"),
                         col("N", fmt=".3f"), col("C", fmt=".3f"), col("wen", "Wen", fmt=".3f"), col("prompt")],
                rows=[[labels[j], float(m[j]), float(feats[j, 0]), float(feats[j, 1]), float(wen[j]), texts[j][:70]]
                      for j in range(len(texts))],
                highlight=[j for j in range(len(texts)) if float(m[j]) > cal.threshold])
    return metrics, per


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
