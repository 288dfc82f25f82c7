"""Batched vs one-prompt-at-a-time scoring of the memorization benchmark, measured side by side in one run.

The Memorization Benchmark (node and ``nodes/memorization/benchmark_cli.py``) scores its prompt lists with
``benchmark.score_conditionings``: ``--batch`` prompts per probe run, i.e. all of them in ONE U-Net call per noise
level (t=981 and t=41; cond and uncond rows together). This script scores the same ``--prompts`` random
conditionings with batches of 1 and of ``--batch``, after a warm-up, ``--reps`` times each, checks that both give
the same scores, and prints prompts per second, the speed-up and U-Net calls (counted by a DIFFUSION_MODEL
wrapper). Last line: ``RESULT batched_speedup=<x> prompts_per_second_batched=... prompts_per_second_single=...``.

    COMFYUI_PATH=... OMP_NUM_THREADS=1 python benchmarks/memorization_batching.py --model tiny --size 64  # 3.02x
    COMFYUI_PATH=... OMP_NUM_THREADS=1 python benchmarks/memorization_batching.py --model tiny --size 128 # 1.04x

On a CPU the ratio shows the per-call overhead that batching removes (large for small latents; at 128 px and more
a CPU is compute-bound and the ratio tends to 1). 512 px on a CPU takes tens of minutes (attention over 4096
tokens for 32 rows at once): use a GPU for full-size settings.
    COMFYUI_PATH=... python benchmarks/memorization_batching.py --model full --size 512 --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["full", "tiny"], default="tiny",
                    help="tiny: the 2-level test U-Net; full: a checkpoint (default sd15-random.safetensors, or "
                         "--checkpoint)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--size", type=int, default=512, help="noise image size in px (latent = size / 8)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16, help="prompts per batch in the batched run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: SENTINEL_TEST_DEVICE, else cpu)")
    return ap.parse_args()


def main() -> None:
    a = _parse()
    if a.device:
        os.environ["SENTINEL_TEST_DEVICE"] = a.device
    import conftest  # noqa: F401  (the package alias diffusion_sentinel)
    from _comfy import boot_comfy, conditioning
    from _memorization import UNetCalls, benchmark_model

    boot_comfy(os.environ["COMFYUI_PATH"])
    import comfy.model_management as mm
    import torch
    from diffusion_sentinel.nodes.memorization import benchmark as bm
    from diffusion_sentinel.nodes.memorization import detection

    device = mm.get_torch_device()
    if a.threads:
        torch.set_num_threads(a.threads)
    model, label = benchmark_model(a.model, a.checkpoint)
    counter = UNetCalls()
    m = counter.attach(model, key="benchmark.counter")
    conds = [conditioning(100 + i) for i in range(a.prompts)]
    neg = conditioning(7)
    settings = detection.DetectorSettings(width=a.size, height=a.size, seed=51)
    results = {}
    with torch.inference_mode():
        for batch in (1, a.batch):
            bm.score_conditionings(m, conds[: min(len(conds), max(batch, 2))], neg, settings, batch)  # warm-up
            counter.calls.clear()
            times, scores = [], None
            for _ in range(a.reps):
                s = bm.score_conditionings(m, conds, neg, settings, batch)
                times.append(s.seconds)
                scores = s
            results[batch] = (statistics.median(times), min(times), max(times), len(counter.calls) / a.reps,
                              sum(c["rows"] for c in counter.calls) / a.reps, scores)
    single, batched = results[1], results[a.batch]
    diff = float((single[5].features - batched[5].features).abs().max())
    rel = diff / float(single[5].features.abs().max())
    where = f"CUDA {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"model: {label}; noise {a.size}x{a.size} px (latent {a.size // 8}x{a.size // 8}); {a.prompts} prompts; "
          f"{a.reps} reps; torch {torch.__version__}; device {device} ({where}); dtype {model.model_dtype()}")
    print(f"{'prompts per batch':>18s} {'U-Net calls':>11s} {'image evals':>11s} {'median s':>9s} {'prompts/s':>10s}")
    for b, (med, lo, hi, calls, evals, _) in results.items():
        print(f"{b:18d} {calls:11.0f} {evals:11.0f} {med:9.3f} {a.prompts / med:10.2f}   (min {lo:.3f}, max {hi:.3f})")
    speedup = single[0] / batched[0]
    print(f"batched / one at a time: {speedup:.2f}x faster; largest score difference {diff:.2e} ({rel:.1e} relative; "
          "kernel rounding of different batch shapes)")
    print(f"RESULT batched_speedup={speedup:.3f} prompts_per_second_batched={a.prompts / batched[0]:.3f} "
          f"prompts_per_second_single={a.prompts / single[0]:.3f} device={device.type} model={a.model} size={a.size} "
          f"prompts={a.prompts} batch={a.batch}")


if __name__ == "__main__":
    main()
