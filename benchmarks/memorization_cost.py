"""Cost per prompt of the memorization scores, measured side by side in one run: U-Net calls and wall time of

- the anisotropy detector (norm at t=981 + cosine at t=41; Wen's first step comes free with it),
- Wen et al.'s first-step metric alone (one call at t=981),
- Wen et al.'s metric averaged over the first 10 steps of a DDIM-50 run with CFG 7.5 (10 calls),
- Wen's score read from a TRAJECTORY recorded during normal sampling (0 extra calls; not timed),
- the volume growth rate of one image (one direction, one step) by JVP (float32, math attention) and by finite
  differences (float64 evaluations).

U-Net calls are counted with a DIFFUSION_MODEL wrapper (calls and batch rows = single-image evaluations). Each
measurement is repeated after a warm-up; on CUDA the device is synchronised before and after every timed run. The
median is reported with the ratio to the detector, and the last line is ``RESULT ...`` with the ratios. The device
is ``--device`` (cpu, cuda, cuda:N), else SENTINEL_TEST_DEVICE, else cpu. Run it under the heavy-job lock:

    flock /tmp/sentinel-heavy.lock env COMFYUI_PATH=/tmp/sentinel-comfy/ComfyUI \\
        /tmp/sentinel-comfy/venv/bin/python benchmarks/memorization_cost.py --model full --size 256 --reps 5
    COMFYUI_PATH=... python benchmarks/memorization_cost.py --model tiny --size 512 --reps 5 --device cuda
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


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["full", "tiny"], default="full",
                    help="full: a checkpoint (default sd15-random.safetensors, the full-size SD1.5 U-Net with random "
                         "weights; --checkpoint for another); tiny: the 2-level test U-Net")
    ap.add_argument("--checkpoint", default=None, help="path of the full-size checkpoint (default: look it up)")
    ap.add_argument("--size", type=int, default=256, help="image size in pixels (latent = size / 8)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=1, help="prompts scored together (batched CONDITIONING)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: SENTINEL_TEST_DEVICE, else cpu)")
    ap.add_argument("--no-volume", action="store_true", help="skip the volume growth rate rows")
    return ap.parse_args()


def main() -> None:
    a = _parse()
    if a.device:
        os.environ["SENTINEL_TEST_DEVICE"] = a.device  # read by tests/_device.py when the harness boots ComfyUI
    import conftest  # noqa: F401  (the package alias diffusion_sentinel)
    from _comfy import boot_comfy, conditioning, tiny_vae
    from _memorization import UNetCalls, benchmark_model

    boot_comfy(os.environ["COMFYUI_PATH"])
    import comfy.model_management as mm
    import torch
    from diffusion_sentinel.nodes.memorization import detection, volume_probe

    device = mm.get_torch_device()
    want = os.environ.get("SENTINEL_TEST_DEVICE", "cpu")
    if want.startswith("cuda") != (device.type == "cuda"):
        sys.exit(f"asked for {want} but ComfyUI runs on {device}")
    if a.threads:
        torch.set_num_threads(a.threads)
    model, label = benchmark_model(a.model, a.checkpoint)
    counter = UNetCalls()
    m = counter.attach(model, key="benchmark.counter")
    pos, neg = conditioning(1, batch=a.prompts), conditioning(2)
    vae = tiny_vae(0)
    image = torch.rand(1, a.size, a.size, 3, generator=torch.Generator().manual_seed(0))

    def settings(**kw):
        return detection.DetectorSettings(width=a.size, height=a.size, **kw)

    def volume(method):
        s = volume_probe.VolumeSettings(mode="directions", directions=1, steps=1, method=method, seed=0)
        return volume_probe.volume_growth(m, vae, image, neg, s)

    cases = [("anisotropy detector (N@981 + C@41)", lambda: detection.detect(m, pos, neg, settings()), a.prompts),
             ("Wen first step (@981)", lambda: detection.detect_wen(m, pos, neg, settings(wen_steps=1)), a.prompts),
             ("Wen mean of 10 DDIM steps", lambda: detection.detect_wen(m, pos, neg, settings(wen_steps=10)), a.prompts)]
    if not a.no_volume:
        cases += [("volume growth, jvp (1 direction)", lambda: volume("jvp"), 1),
                  ("volume growth, finite diff. (float64)", lambda: volume("finite_difference"), 1)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows = []
    with torch.inference_mode():
        for name, fn, per in cases:
            fn()  # warm-up (model load, allocator, kernel selection)
            sync()
            counter.calls.clear()
            times = []
            for _ in range(a.reps):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times.append(time.perf_counter() - t0)
            calls = len(counter.calls) / a.reps
            evals = sum(c["rows"] for c in counter.calls) / a.reps
            rows.append((name, calls, evals, statistics.median(times), min(times), max(times), per))

    base = rows[0][3]
    where = f"CUDA {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"model: {label}; latent {a.size // 8}x{a.size // 8}; {a.prompts} prompt(s); {a.reps} reps; "
          f"torch {torch.__version__}; device {device} ({where}); U-Net dtype {model.model_dtype()}")
    print(f"{'method':38s} {'U-Net calls':>11s} {'image evals':>11s} {'median s':>9s} {'per item':>9s} "
          f"{'vs detector':>11s}")
    for name, calls, evals, med, lo, hi, per in rows:
        print(f"{name:38s} {calls:11.0f} {evals:11.0f} {med:9.3f} {med / per:9.3f} {med / base:10.2f}x"
              f"   (min {lo:.3f}, max {hi:.3f})")
    print(f"{'Wen from a recorded TRAJECTORY':38s} {0:11d} {0:11d} {'-':>9s} {'-':>9s} {'-':>11s}   "
          "(read from KSampler (Trajectory) with keep_cond_uncond: no extra U-Net call)")
    print("paper (A100, SD1.4, per 10 prompts): Wen first step 0.40 s, anisotropy 1.10 s, SAIL 5.40 s")
    keys = ["wen_first_over_detector", "wen10_over_detector", "volume_jvp_over_detector", "volume_fd_over_jvp"]
    ratios = [rows[1][3] / base, rows[2][3] / base]
    if not a.no_volume:
        ratios += [rows[3][3] / base, rows[4][3] / rows[3][3]]
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in zip(keys, ratios))
          + f" device={device.type} model={a.model} size={a.size} prompts={a.prompts}")


if __name__ == "__main__":
    main()
