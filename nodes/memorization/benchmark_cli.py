"""Memorization benchmark from the shell: the anisotropy paper's table on a checkpoint of yours, and a calibration.

Run it with ComfyUI's Python, from anywhere (COMFYUI_PATH = your ComfyUI folder; the checkpoint's own CLIP encodes
the prompts):

    COMFYUI_PATH=/path/to/ComfyUI python custom_nodes/diffusion-sentinel/nodes/memorization/benchmark_cli.py \\
        --checkpoint models/checkpoints/v1-4.safetensors --memorized sd1_mem.txt --normal sd1_nmem.txt --name sd14

Prompt files: one prompt per line. The paper's lists (MIT licence) are in github.com/rohanasthana/
memorization-anisotropy, folder prompts/: sd1_mem.txt (499) / sd1_nmem.txt (499) for SD1.x, sd2_mem.txt (218) /
sd2_nmem.txt (499) for SD2.x. It prints the table (AUC and TPR at 1 % FPR of the anisotropy metric, its norm and
cosine terms and Wen's first-step norm), the prompts per second, and writes the calibration to
<ComfyUI>/models/memorization_calibrations/<name>.json (or --out), where the Memorization Guard finds it. An
existing file is never replaced without --overwrite; a refused input writes nothing. The last line is
``RESULT auc_anisotropy=... tpr_anisotropy=... auc_wen=... prompts_per_second=...``.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

PACK = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="benchmark_cli.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="checkpoint file (.safetensors) with its CLIP")
    ap.add_argument("--memorized", required=True, help="text file of memorized prompts, one per line")
    ap.add_argument("--normal", required=True, help="text file of ordinary prompts, one per line")
    ap.add_argument("--name", default=None, help="calibration name (default: the --out file's name, else the checkpoint's)")
    ap.add_argument("--out", default=None, help="calibration path (default: <ComfyUI>/models/memorization_calibrations/"
                                               "<name>.json)")
    ap.add_argument("--no-save", action="store_true", help="measure only; write no calibration")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing calibration file")
    ap.add_argument("--negative", default="", help="unconditional prompt (default empty, as the papers)")
    ap.add_argument("--weights", default="auto", help="table weights: auto (paper's, by prediction type) or a preset name")
    ap.add_argument("--seed", type=int, default=51, help="noise seed (the paper's 51)")
    ap.add_argument("--samples", type=int, default=1, help="noise samples per prompt (paper: 1)")
    ap.add_argument("--width", type=int, default=0, help="noise width in px (0 = the model's native size)")
    ap.add_argument("--height", type=int, default=0, help="noise height in px (0 = native)")
    ap.add_argument("--batch", type=int, default=16, help="prompts per U-Net batch")
    ap.add_argument("--threshold-rule", choices=["logistic", "fpr"], default="logistic")
    ap.add_argument("--target-fpr", type=float, default=0.01)
    ap.add_argument("--max-prompts", type=int, default=0, help="use the first N prompts of each list (0 = all)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--json-out", default=None, help="also write the table and timings as JSON here")
    ap.add_argument("--comfyui", default=None, help="ComfyUI folder (default: $COMFYUI_PATH)")
    return ap


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def boot(comfy_path: str, device: str):
    """Import ComfyUI from its folder (as tests/_comfy.py does) and the pack as the package ``diffusion_sentinel``."""
    if not os.path.isfile(os.path.join(comfy_path, "comfy", "model_management.py")):
        _fail(f"{comfy_path} is not a ComfyUI folder (no comfy/model_management.py); set COMFYUI_PATH or --comfyui")
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in (here, str(PACK))]
    sys.path.insert(0, comfy_path)
    if "diffusion_sentinel" not in sys.modules:
        spec = importlib.machinery.ModuleSpec("diffusion_sentinel", None, is_package=True)
        mod = importlib.util.module_from_spec(spec)
        mod.__path__ = [str(PACK)]
        sys.modules["diffusion_sentinel"] = mod
    os.chdir(comfy_path)
    import torch
    from comfy.cli_args import args

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        args.cpu = True
    import utils.extra_config  # noqa: F401  (ComfyUI's own, before anything shadows `utils`)

    yaml = os.path.join(comfy_path, "extra_model_paths.yaml")
    if os.path.isfile(yaml):
        utils.extra_config.load_extra_path_config(yaml)
    import comfy.utils

    def hook(value, total, preview=None, node_id=None):  # ComfyUI's progress bar, printed
        print(f"\r  {value}/{total}", end="" if value < total else "\n", file=sys.stderr, flush=True)

    comfy.utils.set_progress_bar_global_hook(hook)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    comfy_path = os.path.abspath(a.comfyui or os.environ.get("COMFYUI_PATH", ""))
    if not comfy_path or comfy_path == os.path.abspath(""):
        _fail("set COMFYUI_PATH (or --comfyui) to your ComfyUI folder")
    ckpt = os.path.abspath(a.checkpoint)
    paths = {k: os.path.abspath(v) for k, v in (("memorized", a.memorized), ("normal", a.normal))}
    if a.json_out:
        a.json_out = os.path.abspath(a.json_out)
    if a.out:
        a.out = os.path.abspath(a.out)
    boot(comfy_path, a.device)
    if a.threads > 0:
        import torch

        torch.set_num_threads(a.threads)

    import folder_paths
    from diffusion_sentinel.nodes.common.ui import json_safe
    from diffusion_sentinel.nodes.memorization import anisotropy as an
    from diffusion_sentinel.nodes.memorization import benchmark as bm
    from diffusion_sentinel.nodes.memorization import detection
    from diffusion_sentinel.nodes.memorization.benchmark_report import (
        PromptFileError,
        check_lists,
        format_table,
        read_prompt_file,
    )
    from diffusion_sentinel.nodes.memorization.calibrate_node import _safe_name
    from diffusion_sentinel.nodes.memorization.node_common import CAL_DIR

    # every input is checked before the checkpoint is loaded; nothing is written on a refusal
    try:
        mem = read_prompt_file(paths["memorized"], "memorized prompt list")
        non = read_prompt_file(paths["normal"], "ordinary prompt list")
        if a.max_prompts > 0:
            mem, non = mem[: a.max_prompts], non[: a.max_prompts]
        notes = check_lists(mem, non)
    except PromptFileError as e:
        _fail(str(e))
    if not os.path.isfile(ckpt):
        _fail(f"checkpoint not found: {ckpt}")
    if a.weights != "auto" and a.weights not in an.WEIGHT_PRESETS:
        _fail(f"--weights must be auto or one of {list(an.WEIGHT_PRESETS)}")
    if a.batch < 1 or a.samples < 1 or not 0.0 <= a.target_fpr <= 0.5:
        _fail("--batch and --samples must be >= 1 and --target-fpr in [0, 0.5]")
    out = name = None
    if not a.no_save:
        try:
            name = _safe_name(a.name or (Path(a.out).stem if a.out else Path(ckpt).stem))[:-5]
            if a.out:
                out = a.out
            else:
                folders = folder_paths.get_folder_paths(CAL_DIR)
                out = os.path.join(folders[0] if folders else os.path.join(folder_paths.models_dir, CAL_DIR),
                                   name + ".json")
            out = bm.check_output_path(out, a.overwrite)
        except (ValueError, OSError) as e:
            _fail(str(e))

    import comfy.sd

    print(f"loading {ckpt}", file=sys.stderr)
    try:
        model, clip = comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=False, output_clip=True,
                                                            embedding_directory=folder_paths.get_folder_paths(
                                                                "embeddings"))[:2]
    except Exception as e:  # safetensors/ComfyUI raise many types for a file that is not a checkpoint
        _fail(f"could not load {ckpt} as a checkpoint ({type(e).__name__}: {e})")
    if clip is None:
        _fail(f"{Path(ckpt).name} holds no text encoder (CLIP); the benchmark needs the checkpoint's own CLIP")
    settings = bm.BenchmarkSettings(
        detector=detection.DetectorSettings(seed=a.seed, n_samples=a.samples, width=a.width, height=a.height),
        batch_size=a.batch, weights=a.weights, threshold_rule=a.threshold_rule, target_fpr=a.target_fpr,
        negative_prompt=a.negative)
    import torch

    with torch.inference_mode():
        try:
            print(f"encoding {len(mem) + len(non)} prompts", file=sys.stderr)
            t0 = time.perf_counter()
            neg = bm.encode_prompts(clip, [a.negative])[0]
            conds = bm.encode_prompts(clip, mem + non)
            enc_s = time.perf_counter() - t0
            print(f"scoring ({a.batch} prompts per batch)", file=sys.stderr)
            res = bm.run_benchmark(model, conds[: len(mem)], conds[len(mem):], neg, settings)
        except ValueError as e:
            _fail(str(e))
    res.encode_seconds = enc_s
    cal = res.calibration
    print(f"\n{res.n_memorized} memorized ({Path(paths['memorized']).name}) vs {res.n_normal} ordinary "
          f"({Path(paths['normal']).name}) prompts; {Path(ckpt).name}: {res.info.family} ({res.info.prediction}); "
          f"noise {cal.settings['width']}x{cal.settings['height']} px, seed {a.seed}, {a.samples} sample(s)")
    print(format_table(res.rows, a.target_fpr))
    print(bm.timing_line(res))
    for n in notes:
        print(n)
    if out is not None:
        bm.save(res, out, name)
        print(f"calibration written: {out} (M = {cal.gamma_norm:.4g} N + {cal.gamma_cos:.4g} C, flag when M > "
              f"{cal.threshold:.4g}); select '{Path(out).name}' in the Memorization Guard")
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(json_safe({**bm.summary(res), "checkpoint": Path(ckpt).name, "calibration": out}), f, indent=1)
    print(res.result_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
