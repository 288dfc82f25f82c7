"""Capture overhead: KSampler (Trajectory) wall time / plain KSampler wall time, same model, seed and settings.

The two are alternated in one process (plain, capture, plain, capture, ...) after a warm-up run of each, and
the median of the per-repetition ratios is printed, with the trajectory's memory per step and item.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/capture_overhead.py                    # full SD1.5, 20 steps
    COMFYUI_PATH=... python benchmarks/capture_overhead.py --ckpt sd15-tiny-random.safetensors --size 512

The checkpoint is looked up in ComfyUI's checkpoint folders (extra_model_paths.yaml is honoured) or given as a
path. Random weights are fine: the cost of a step does not depend on the weights' values.
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
    ap.add_argument("--ckpt", default="sd15-random.safetensors")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=256, help="image size in pixels (latent = size/8)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--keep-cond-uncond", action="store_true")
    a = ap.parse_args()

    import conftest  # noqa: F401  (makes `diffusion_sentinel` importable)
    from _comfy import boot_comfy

    nodes = boot_comfy()
    import comfy.model_management as mm
    import torch
    from diffusion_sentinel.nodes.trajectory.comfy_nodes import KSamplerTrajectory

    ckpt = a.ckpt if os.path.isfile(a.ckpt) else a.ckpt
    with torch.inference_mode():
        if os.path.isfile(ckpt):
            import comfy.sd

            model, clip, _vae = comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=False)[:3]
        else:
            model, clip, _vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)[:3]
        (pos,) = nodes.CLIPTextEncode().encode(clip, "a lighthouse on a cliff at dusk, oil painting")
        (neg,) = nodes.CLIPTextEncode().encode(clip, "blurry")
        (lat,) = nodes.EmptyLatentImage().generate(a.size, a.size, a.batch)
        mm.load_models_gpu([model], force_full_load=True)

    common = dict(model=model, seed=123, steps=a.steps, cfg=7.0, sampler_name=a.sampler, scheduler="normal",
                  positive=pos, negative=neg, latent_image=lat, denoise=1.0)

    def plain():
        with torch.inference_mode():
            return nodes.KSampler().sample(**common)[0]

    def capture():
        with torch.inference_mode():
            c = KSamplerTrajectory.PREPARE_CLASS_CLONE({})
            return c.EXECUTE_NORMALIZED(**common, keep_cond_uncond=a.keep_cond_uncond).args

    def timed(fn):
        """(wall seconds, process CPU seconds, result). CPU time is what to read on a shared, loaded machine."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0, out

    print(f"device={mm.get_torch_device()} ckpt={a.ckpt} size={a.size} batch={a.batch} steps={a.steps} "
          f"sampler={a.sampler} reps={a.reps}", flush=True)
    _, _, ref = timed(plain)  # warm-up (first-run set-up costs)
    _, _, (lat_c, traj) = timed(capture)
    assert torch.equal(ref["samples"], lat_c["samples"]), "capture changed the latent"
    ratios, cpu_ratios, tp, tc = [], [], [], []
    for r in range(a.reps):
        t_plain, c_plain, _ = timed(plain)
        t_cap, c_cap, _ = timed(capture)
        tp.append(t_plain)
        tc.append(t_cap)
        ratios.append(t_cap / t_plain)
        cpu_ratios.append(c_cap / c_plain)
        print(f"rep {r}: plain {t_plain:.3f}s (cpu {c_plain:.3f}s)  capture {t_cap:.3f}s (cpu {c_cap:.3f}s)  "
              f"ratio wall {t_cap / t_plain:.4f} cpu {c_cap / c_plain:.4f}", flush=True)
    per = traj.bytes_per_step_item()
    print(f"ratio of the fastest runs (min capture / min plain, robust to other load): {min(tc) / min(tp):.4f}")
    step_us = recorder_cost_per_step(mm.get_torch_device(), a.batch)
    step_s = statistics.median(tp) / a.steps
    print(f"capture bookkeeping per step (recorder events + CPU copies, {a.batch}x4x64x64 latents as at 512 px): "
          f"{step_us:.0f} us = {step_us * 1e-6 / step_s:.2e} of a {step_s:.2f} s sampler step here")
    print(f"median plain {statistics.median(tp):.3f}s, median capture {statistics.median(tc):.3f}s")
    print(f"capture overhead ratio, wall time (median of {a.reps}): {statistics.median(ratios):.4f}  "
          f"(target <= 1.02)")
    print(f"capture overhead ratio, process CPU time (median of {a.reps}): {statistics.median(cpu_ratios):.4f}")
    print(f"trajectory memory: {per / 1024:.1f} KiB per step and item (x0 + x, {traj.x0.dtype}); "
          f"{traj.nbytes() / 2**20:.2f} MiB for this run ({traj.batch_size} item(s) x {traj.num_steps} steps); "
          f"at 512 px SD1.5 that is {per * (512 / a.size) ** 2 / 1024:.0f} KiB per step and item")


def recorder_cost_per_step(device, batch: int, steps: int = 50, reps: int = 20) -> float:
    """Microseconds per step spent in the capture path itself (no model): what capture adds to any step."""
    import torch
    from diffusion_sentinel.nodes.trajectory.recorder import CaptureOptions, RunRecorder

    sig = torch.linspace(14.6, 0.0, steps + 1)
    x = torch.randn(batch, 4, 64, 64, device=device)
    x0s = [torch.randn(batch, 4, 64, 64, device=device) for _ in range(steps)]
    best = float("inf")
    for _ in range(reps):
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
