"""Cost per prompt of the memorization scores, measured side by side in one run: U-Net calls and wall time of

- the anisotropy detector (norm at t=981 + cosine at t=41; Wen's first step comes free with it),
- Wen et al.'s first-step metric alone (one call at t=981),
- Wen et al.'s metric averaged over the first 10 steps of a DDIM-50 run with CFG 7.5 (10 calls),
- Wen's score read from a TRAJECTORY recorded during normal sampling (0 extra calls; not timed).

U-Net calls are counted with a DIFFUSION_MODEL wrapper (calls and batch rows = single-image evaluations). Each
measurement is repeated; the median is reported, with the ratio to the detector. Run it on the full-size random
SD1.5 U-Net at a small latent (default) under the heavy-job lock, or on the tiny one for a quick check:

    flock /tmp/sentinel-heavy.lock env COMFYUI_PATH=/tmp/sentinel-comfy/ComfyUI \\
        /tmp/sentinel-comfy/venv/bin/python benchmarks/memorization_cost.py --model full --size 256 --reps 5
    COMFYUI_PATH=... python benchmarks/memorization_cost.py --model tiny --size 512 --reps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["full", "tiny"], default="full",
                    help="full: sd15-random.safetensors (full-size SD1.5 U-Net, random weights); tiny: the 2-level test U-Net")
    ap.add_argument("--checkpoint", default=None, help="path of the full-size checkpoint (default: look it up)")
    ap.add_argument("--size", type=int, default=256, help="image size in pixels (latent = size / 8)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=1, help="prompts scored together (batched CONDITIONING)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = ap.parse_args()

    import conftest  # noqa: F401  (the package alias diffusion_sentinel)
    from _comfy import boot_comfy, conditioning, tiny_model
    from _memorization import UNetCalls

    boot_comfy(os.environ["COMFYUI_PATH"])
    import torch
    from diffusion_sentinel.nodes.memorization import detection

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.model == "tiny":
        model, label = tiny_model(0), "tiny 2-level SD15-layout U-Net (model_channels 32)"
    else:
        import comfy.sd
        from _server import find_checkpoint

        path = a.checkpoint or find_checkpoint("sd15-random.safetensors")
        if not path:
            sys.exit("sd15-random.safetensors not found: pass --checkpoint")
        model = comfy.sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=False)[0]
        label = f"full-size SD1.5 U-Net, random weights ({Path(path).name})"
    counter = UNetCalls()
    m = counter.attach(model, key="benchmark.counter")
    pos, neg = conditioning(1, batch=a.prompts), conditioning(2)

    def detector():
        return detection.detect(m, pos, neg, detection.DetectorSettings(width=a.size, height=a.size))

    def wen_first():
        return detection.detect_wen(m, pos, neg, detection.DetectorSettings(width=a.size, height=a.size, wen_steps=1))

    def wen_ten():
        return detection.detect_wen(m, pos, neg, detection.DetectorSettings(width=a.size, height=a.size, wen_steps=10))

    rows = []
    with torch.inference_mode():
        for name, fn in (("anisotropy detector (N@981 + C@41)", detector), ("Wen first step (@981)", wen_first),
                         ("Wen mean of 10 DDIM steps", wen_ten)):
            fn()  # warm-up (model load, allocator)
            counter.calls.clear()
            times = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            calls = len(counter.calls) / a.reps
            evals = sum(c["rows"] for c in counter.calls) / a.reps
            rows.append((name, calls, evals, statistics.median(times), min(times), max(times)))

    base = rows[0][3]
    print(f"model: {label}; latent {a.size // 8}x{a.size // 8}; {a.prompts} prompt(s); {a.reps} reps; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'method':38s} {'U-Net calls':>11s} {'image evals':>11s} {'median s':>9s} {'per prompt':>10s} "
          f"{'vs detector':>11s}")
    for name, calls, evals, med, lo, hi in rows:
        print(f"{name:38s} {calls / 1:11.0f} {evals:11.0f} {med:9.3f} {med / a.prompts:10.3f} {med / base:10.2f}x"
              f"   (min {lo:.3f}, max {hi:.3f})")
    print(f"{'Wen from a recorded TRAJECTORY':38s} {0:11d} {0:11d} {'-':>9s} {'-':>10s} {'-':>11s}   "
          "(read from KSampler (Trajectory) with keep_cond_uncond: no extra U-Net call)")
    print("paper (A100, SD1.4, per 10 prompts): Wen first step 0.40 s, anisotropy 1.10 s, SAIL 5.40 s")


if __name__ == "__main__":
    main()
