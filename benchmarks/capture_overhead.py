"""Capture overhead: KSampler (Trajectory) wall time / plain KSampler wall time, same model, seed and settings,
at batch 1 and batch 4 in one run.

Per batch size the two are alternated in one process (plain, capture, plain, capture, ...) after a warm-up run of
each; on CUDA every timed run is bracketed by torch.cuda.synchronize(), so the time includes all queued kernels
(and any stall the capture's copies cause). Printed per batch: the median of the per-repetition ratios and the
ratio of the fastest runs (min capture / min plain, robust to other load on a shared machine). The last line is

    RESULT capture_ratio_b1=<median ratio, batch 1> capture_ratio_b4=<median ratio, batch 4>

Target: <= 1.02 at both on a GPU.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/capture_overhead.py --device cuda          # full SD1.5, 512 px
    COMFYUI_PATH=... python benchmarks/capture_overhead.py --device cpu --ckpt sd15-tiny-random.safetensors \\
        --size 64 --steps 10 --reps 5

The device is --device, else SENTINEL_TEST_DEVICE, else cpu. The checkpoint is looked up in ComfyUI's checkpoint
folders (extra_model_paths.yaml is honoured) or given as a path. Random weights are fine: the cost of a step does
not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: SENTINEL_TEST_DEVICE, else cpu)")
    ap.add_argument("--ckpt", default="sd15-random.safetensors")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=512, help="image size in pixels (latent = size/8)")
    ap.add_argument("--batches", default="1,4", help="batch sizes to time, comma separated (RESULT needs 1 and 4)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--keep-cond-uncond", action="store_true")
    a = ap.parse_args()
    if a.device:
        os.environ["SENTINEL_TEST_DEVICE"] = a.device  # before _device / ComfyUI are imported

    import conftest  # noqa: F401  (makes `diffusion_sentinel` importable)
    from _comfy import boot_comfy

    nodes = boot_comfy()
    import comfy.model_management as mm
    import torch
    from diffusion_sentinel.nodes.trajectory.comfy_nodes import KSamplerTrajectory

    dev = mm.get_torch_device()
    on_cuda = dev.type == "cuda"
    ckpt = a.ckpt
    with torch.inference_mode():
        if os.path.isfile(ckpt):
            import comfy.sd

            model, clip, _vae = comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=False)[:3]
        else:
            model, clip, _vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)[:3]
        (pos,) = nodes.CLIPTextEncode().encode(clip, "a lighthouse on a cliff at dusk, oil painting")
        (neg,) = nodes.CLIPTextEncode().encode(clip, "blurry")
        mm.load_models_gpu([model], force_full_load=True)

    def sync():
        if on_cuda:
            torch.cuda.synchronize(dev)

    def timed(fn):
        """(wall seconds, process CPU seconds, result), the device drained before and after."""
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        sync()
        return time.perf_counter() - t0, time.process_time() - c0, out

    gpu = torch.cuda.get_device_name(dev) if on_cuda else "CPU"
    print(f"device={dev} ({gpu}) ckpt={a.ckpt} size={a.size} steps={a.steps} sampler={a.sampler} reps={a.reps} "
          f"torch={torch.__version__}", flush=True)
    results = {}
    for batch in [int(b) for b in a.batches.split(",") if b.strip()]:
        with torch.inference_mode():
            (lat,) = nodes.EmptyLatentImage().generate(a.size, a.size, batch)
        common = dict(model=model, seed=123, steps=a.steps, cfg=7.0, sampler_name=a.sampler, scheduler="normal",
                      positive=pos, negative=neg, latent_image=lat, denoise=1.0)

        def plain(common=common):
            with torch.inference_mode():
                return nodes.KSampler().sample(**common)[0]

        def capture(common=common):
            with torch.inference_mode():
                c = KSamplerTrajectory.PREPARE_CLASS_CLONE({})
                return c.EXECUTE_NORMALIZED(**common, keep_cond_uncond=a.keep_cond_uncond).args

        _, _, ref = timed(plain)  # warm-up (first-run set-up costs, kernel selection)
        _, _, (lat_c, traj) = timed(capture)
        assert torch.equal(ref["samples"], lat_c["samples"]), "capture changed the latent"
        ratios, cpu_ratios, tp, tc = [], [], [], []
        for r in range(a.reps):
            t_plain, c_plain, _ = timed(plain)
            t_cap, c_cap, _ = timed(capture)
            tp.append(t_plain)
            tc.append(t_cap)
            ratios.append(t_cap / t_plain)
            cpu_ratios.append(c_cap / c_plain if c_plain > 0 else float("nan"))
            print(f"  batch {batch} rep {r}: plain {t_plain:.4f}s capture {t_cap:.4f}s ratio {t_cap / t_plain:.4f}",
                  flush=True)
        med, fast = statistics.median(ratios), min(tc) / min(tp)
        results[batch] = med
        per = traj.bytes_per_step_item()
        print(f"batch {batch}: median plain {statistics.median(tp):.4f}s, median capture {statistics.median(tc):.4f}s; "
              f"ratio median {med:.4f}, fastest runs {fast:.4f}, process CPU time median "
              f"{statistics.median(cpu_ratios):.4f}; trajectory {per / 1024:.1f} KiB per step and item, "
              f"{traj.nbytes() / 2**20:.2f} MiB per run", flush=True)
    step_us = recorder_cost_per_step(dev, 1)
    print(f"capture bookkeeping per step alone (recorder events + host copies, 1x4x64x64 latents as at 512 px, "
          f"{dev}): {step_us:.0f} us")
    parts = " ".join(f"capture_ratio_b{b}={r:.4f}" for b, r in sorted(results.items()))
    print(f"RESULT {parts}")


def recorder_cost_per_step(device, batch: int, steps: int = 50, reps: int = 20) -> float:
    """Microseconds per step spent in the capture path itself (no model), with the run's one sync at the end."""
    import torch
    from diffusion_sentinel.nodes.trajectory.recorder import CaptureOptions, RunRecorder

    sig = torch.linspace(14.6, 0.0, steps + 1, device=device)
    x = torch.randn(batch, 4, 64, 64, device=device)
    x0s = [torch.randn(batch, 4, 64, 64, device=device) for _ in range(steps)]
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rec = RunRecorder(CaptureOptions(), sig, {})
        t0 = time.perf_counter()
        for i in range(steps):
            rec.on_eval(x, sig[i:i + 1], x0s[i])
            rec.on_callback(i, x0s[i], x)
        rec.finish(x)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best * 1e6


if __name__ == "__main__":
    main()
