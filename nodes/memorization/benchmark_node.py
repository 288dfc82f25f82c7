"""Memorization Benchmark node: the anisotropy paper's table (AUC, TPR at 1 % FPR of M, N, C and Wen) on the user's
model from two prompt lists, prompts per second, and a calibration the Guard can select."""

from __future__ import annotations

import os
import time

import folder_paths
from comfy_api.latest import io

from ..common.comfy_glue import Progress
from ..common.ui import col, panel, result_ui
from . import anisotropy as an
from . import benchmark as bm
from . import detection, probe
from .benchmark_report import PromptFileError, check_lists, format_table, parse_prompt_lines, read_prompt_file
from .calibrate_node import PAPER_SEED, _safe_name
from .node_common import CAL_DIR, CATEGORY
from .node_common import fmt as _fmt

TEXT_BELOW = "(prompts typed below)"
HIGHER = "higher is better"


def prompt_files() -> list[str]:
    """Text files in ComfyUI's input folder and its direct subfolders (relative paths), for the prompt-list combos."""
    root = folder_paths.get_input_directory()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = os.path.relpath(dirpath, root).count(os.sep) + (dirpath != root)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < 1 else []
        for f in filenames:
            if f.lower().endswith(".txt") and not f.startswith("."):
                found.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(found)


def _resolve_list(choice: str, text: str, what: str) -> tuple[list[str], str]:
    """The prompts of a list given as a file of the input folder or as text (exactly one of the two)."""
    typed, _ = parse_prompt_lines(text or "")
    if choice and choice != TEXT_BELOW:
        if typed:
            raise ValueError(f"the {what} prompts are given twice (file {choice!r} and text): clear the text or pick "
                             f"{TEXT_BELOW!r}")
        root = os.path.realpath(folder_paths.get_input_directory())
        path = os.path.realpath(os.path.join(root, choice))
        if os.path.commonpath([root, path]) != root:
            raise ValueError(f"{choice!r} is outside ComfyUI's input folder")
        return read_prompt_file(path, f"{what} prompt list"), f"input/{choice}"
    if not typed:
        raise PromptFileError(f"no {what} prompts: pick a .txt file from ComfyUI's input folder (one prompt per line; "
                              "the paper's lists are prompts/sd1_mem.txt etc. of rohanasthana/memorization-anisotropy) "
                              "or type them, one per line")
    return typed, "typed text"


class MemorizationBenchmark(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        files = [TEXT_BELOW, *prompt_files()]
        return io.Schema(
            node_id="SentinelMemorizationBenchmark",
            display_name="Memorization Benchmark",
            category=CATEGORY,
            description="The anisotropy paper's benchmark on YOUR model: scores a list of known memorized prompts and "
                        "a list of ordinary ones in batches (all prompts of a batch in one U-Net call per noise "
                        "level), shows AUC and TPR at 1% FPR of the anisotropy metric, of its norm and cosine terms "
                        "and of Wen's first-step norm, the prompts per second, and saves a calibration for this "
                        f"model in models/{CAL_DIR}/ that the Memorization Guard can select. Get the paper's lists "
                        "from github.com/rohanasthana/memorization-anisotropy (folder prompts/) into ComfyUI's input "
                        "folder.",
            inputs=[
                io.Model.Input("model", tooltip="The model to measure (SD1.x, SD2.x, SDXL; eps or v)."),
                io.Clip.Input("clip", tooltip="The checkpoint's CLIP: encodes the prompt lists."),
                io.Combo.Input("memorized_file", options=files, default=TEXT_BELOW,
                               tooltip="Known memorized prompts: a .txt file in ComfyUI's input folder, one prompt per "
                                       "line (e.g. sd1_mem.txt for SD1.x, sd2_mem.txt for SD2.x), or type them below."),
                io.Combo.Input("normal_file", options=files, default=TEXT_BELOW,
                               tooltip="Ordinary prompts, same format (e.g. sd1_nmem.txt / sd2_nmem.txt)."),
                io.String.Input("memorized_prompts", multiline=True, default="",
                                tooltip="Memorized prompts typed here, one per line (used when no file is picked)."),
                io.String.Input("normal_prompts", multiline=True, default="",
                                tooltip="Ordinary prompts typed here, one per line (used when no file is picked)."),
                io.String.Input("calibration_name", default="",
                                tooltip=f"Save the fitted calibration as models/{CAL_DIR}/<name>.json for the Guard. "
                                        "Empty: measure only, write nothing."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing calibration of that name (off: the node stops and the "
                                         "file stays as it was)."),
                io.String.Input("negative_prompt", default="", optional=True,
                                tooltip="Text of the unconditional prompt (empty, as in the papers)."),
                io.Combo.Input("weights", options=["auto", *an.WEIGHT_PRESETS], default="auto", optional=True,
                               tooltip="(g_n, g_c) of the table's first row. auto: the paper's SD1 (1, 2) for eps "
                                       "models, SD2 (1, 0.1) for v models. The fitted weights get their own row."),
                io.Int.Input("seed", default=PAPER_SEED, min=0, max=0xFFFFFFFFFFFFFFFF, optional=True,
                             control_after_generate=False,
                             tooltip="Noise seed, part of the score's definition (the paper's 51); fixed."),
                io.Int.Input("n_samples", default=1, min=1, max=64, optional=True,
                             tooltip="Noise samples per prompt (paper: 1; 4 raised its SD1.4 AUC to 0.999)."),
                io.Int.Input("width", default=0, min=0, max=4096, step=8, optional=True,
                             tooltip="Noise latent width in pixels; 0 = the model's native size."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8, optional=True,
                             tooltip="Noise latent height in pixels; 0 = the model's native size."),
                io.Int.Input("prompts_per_batch", default=16, min=1, max=512, optional=True,
                             tooltip="Prompts scored together in one U-Net call per noise level (lower it if you "
                                     "run out of memory)."),
                io.Combo.Input("threshold_rule", options=["logistic", "fpr"], default="logistic", optional=True,
                               tooltip="Threshold saved in the calibration: the p=0.5 boundary of the logistic fit, or "
                                       "the lowest threshold flagging at most target_fpr of the ordinary prompts."),
                io.Float.Input("target_fpr", default=0.01, min=0.0, max=0.5, step=0.001, optional=True,
                               tooltip="FPR of the table's TPR column and of the 'fpr' rule (paper: 1%)."),
                io.Int.Input("max_prompts", default=0, min=0, max=100000, optional=True,
                             tooltip="Use only the first N prompts of each list (0 = all): a quick trial."),
            ],
            outputs=[
                io.Float.Output("AUC", display_name="auc_anisotropy",
                                tooltip="AUC of the anisotropy metric with the table's weights, in [0, 1] (higher is "
                                        "better; 0.5 = chance)."),
                io.Float.Output("TPR", display_name="tpr_anisotropy",
                                tooltip="Its best TPR with FPR <= target_fpr, in [0, 1]."),
                io.Float.Output("AUC_WEN", display_name="auc_wen", tooltip="AUC of Wen's first-step norm."),
                io.Float.Output("TPR_WEN", display_name="tpr_wen", tooltip="Its TPR at the target FPR."),
                io.Float.Output("PROMPTS_PER_SECOND", display_name="prompts_per_second",
                                tooltip="Scoring speed (U-Net work only, text encoding excluded)."),
                io.String.Output("CALIBRATION", display_name="calibration",
                                 tooltip="File name of the saved calibration (select it in the Guard); empty if none."),
                io.String.Output("REPORT", display_name="report", tooltip="The table and the timing as text."),
            ],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, memorized_file=TEXT_BELOW, normal_file=TEXT_BELOW, **kw):
        """Re-run when a chosen prompt file changes on disk (same name, new content)."""
        root = folder_paths.get_input_directory()
        stamps = []
        for f in (memorized_file, normal_file):
            p = os.path.join(root, f) if f and f != TEXT_BELOW else None
            stamps.append(f"{f}:{os.path.getmtime(p) if p and os.path.isfile(p) else 0}")
        return "|".join(stamps)

    @classmethod
    def execute(cls, model, clip, memorized_file=TEXT_BELOW, normal_file=TEXT_BELOW, memorized_prompts="",
                normal_prompts="", calibration_name="", overwrite=False, negative_prompt="", weights="auto",
                seed=PAPER_SEED, n_samples=1, width=0, height=0, prompts_per_batch=16, threshold_rule="logistic",
                target_fpr=0.01, max_prompts=0) -> io.NodeOutput:
        # everything is checked before the first model call, and nothing is written unless the run succeeds
        mem, mem_src = _resolve_list(memorized_file, memorized_prompts, "memorized")
        non, non_src = _resolve_list(normal_file, normal_prompts, "ordinary")
        if int(max_prompts) > 0:
            mem, non = mem[: int(max_prompts)], non[: int(max_prompts)]
        notes = check_lists(mem, non)
        info = probe.model_info(model, what="the memorization benchmark")
        if clip is None:
            raise ValueError("connect the CLIP of the checkpoint: the prompt lists must be encoded")
        an.weights_for(weights, info.prediction)
        fname = path = None
        if (calibration_name or "").strip():
            fname = _safe_name(calibration_name)
            paths = folder_paths.get_folder_paths(CAL_DIR)
            folder = paths[0] if paths else os.path.join(folder_paths.models_dir, CAL_DIR)
            path = bm.check_output_path(os.path.join(folder, fname), bool(overwrite))
        settings = bm.BenchmarkSettings(
            detector=detection.DetectorSettings(seed=int(seed), n_samples=int(n_samples), width=int(width),
                                                height=int(height)),
            batch_size=int(prompts_per_batch), weights=weights, threshold_rule=threshold_rule,
            target_fpr=float(target_fpr), negative_prompt=negative_prompt or "")
        t0 = time.perf_counter()
        enc = Progress(len(mem) + len(non) + 1)
        neg = bm.encode_prompts(clip, [negative_prompt or ""], enc)
        neg = neg[0]
        conds = bm.encode_prompts(clip, mem + non, enc)
        enc_s = time.perf_counter() - t0
        res = bm.run_benchmark(model, conds[: len(mem)], conds[len(mem):], neg, settings)
        res.encode_seconds = enc_s
        res.notes = notes
        if path is not None:
            bm.save(res, path, fname[:-5])
        return _outputs(res, mem_src, non_src, fname, path)


def _outputs(res: bm.BenchmarkResult, mem_src: str, non_src: str, fname: str | None, path: str | None):
    rows = res.rows
    a, w = rows[0], rows[3]
    fpr = res.calibration.target_fpr
    table = format_table(rows, fpr)
    cal = res.calibration
    saved = (f"calibration saved: models/{CAL_DIR}/{fname} (M = {cal.gamma_norm:.4g} N + {cal.gamma_cos:.4g} C, flag "
             f"when M > {cal.threshold:.4g}, rule {cal.threshold_rule}); select it in the Memorization Guard"
             if fname else "no calibration written (calibration_name is empty)")
    head = (f"{res.n_memorized} memorized ({mem_src}) vs {res.n_normal} ordinary ({non_src}) prompts on "
            f"{res.info.family} ({res.info.prediction}), noise {cal.settings.get('width')}x{cal.settings.get('height')} "
            f"px, seed {cal.settings.get('seed')}, {cal.settings.get('n_samples')} sample(s)")
    lines = [head, table, bm.timing_line(res), saved, *res.notes]
    report = "\n".join(lines)
    pct = f"{100 * fpr:g}%"
    shown = panel("Memorization Benchmark",
                  summary=f"anisotropy AUC {_fmt(a.auc, 3)}, TPR@{pct} FPR {_fmt(a.tpr, 3)}; Wen AUC {_fmt(w.auc, 3)}; "
                          f"{res.prompts_per_second:.2f} prompts/s",
                  columns=[col("score"), col("auc", "AUC", direction=HIGHER, fmt=".3f"),
                           col("tpr", f"TPR@{pct}FPR", direction=HIGHER, fmt=".3f"),
                           col("tpr_closest", "TPR (paper rule)", fmt=".3f"), col("note")],
                  rows=[[r.score, r.auc, r.tpr, r.tpr_closest, r.note] for r in rows],
                  highlight=[0],
                  notes=[head, bm.timing_line(res), saved,
                         "AUC and TPR in [0, 1]; 0.5 AUC = chance. Paper (SD1.4, n=1): anisotropy 0.994 / 0.935, "
                         "Wen 0.976 / 0.896", *res.notes])
    return io.NodeOutput(float(a.auc), float(a.tpr), float(w.auc), float(w.tpr), float(res.prompts_per_second),
                         fname or "", report, ui=result_ui(shown))
