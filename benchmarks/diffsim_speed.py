"""DiffSim speed: a full-forward implementation of the same score against ours (early exit + batching + cache),
measured side by side in one run on an SD1.5-shaped model.

    COMFYUI_PATH=/path/to/ComfyUI flock /tmp/sentinel-heavy.lock python benchmarks/diffsim_speed.py \
        --checkpoint /path/to/sd15.safetensors --resolution 256 --candidates 4 --reps 3

Both sides run the same pipeline code, so they compute the same score (checked, max |difference| printed):

- baseline ("full forward", the released code's cost model): every pair evaluates both images again, each with
  a whole U-Net forward at batch 2 (uncond + cond): 2 full passes per pair, 2N for one reference against N.
- ours: the U-Net stops right after the captured block (U_0 = output 5 on SD1.5), the images of a call are
  batched into one U-Net call, and per-image features are cached: N + 1 early-exit passes for one reference
  against N candidates, N once the reference is cached.

Every figure is the median of --reps repetitions, each with a fresh cache; the ratios are ours / baseline
(lower is faster). Without --checkpoint the script builds a full-size SD1.5 U-Net from its config with random
weights (ComfyUI's classes), a tiny random VAE and a random CLIP text stand-in: slower to set up, same U-Net.
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


def _boot(comfy_path: str):
    import conftest  # noqa: F401  (installs the diffusion_sentinel package alias)
    from _comfy import boot_comfy

    return boot_comfy(comfy_path)


def _load(checkpoint: str | None):
    import torch

    if checkpoint:
        import comfy.sd

        model, clip, vae = comfy.sd.load_checkpoint_guess_config(checkpoint, output_vae=True, output_clip=True)[:3]
        return model, vae, clip, os.path.basename(checkpoint)
    import _diffsim as D

    model = D.unet_model("sd15", context_dim=768, model_channels=320, num_res_blocks=[2, 2, 2, 2],
                         channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                         transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=torch.float32)

    class RandomClip:  # CLIP-L-shaped random text embeddings (the text encoder is not what is measured)
        def tokenize(self, text):
            return text

        def encode_from_tokens_scheduled(self, text):
            g = torch.Generator().manual_seed(len(text))
            return [[torch.randn(1, 77, 768, generator=g), {}]]

    return model, D.kl_vae(), RandomClip(), "SD1.5 U-Net from config (random weights)"


def _images(n: int, size: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return [im for im in img.movedim(1, -1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="an SD1.5 checkpoint (e.g. a full-size random one)")
    ap.add_argument("--resolution", type=int, default=256, help="DiffSim resolution in pixels (paper: 512)")
    ap.add_argument("--candidates", type=int, default=4, help="N for the one-reference-vs-N case")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--block", default="U_0")
    a = ap.parse_args()

    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout")
    _boot(comfy_path)
    import torch
    from diffusion_sentinel.nodes.diffsim import pipeline
    from diffusion_sentinel.nodes.diffsim.feature_cache import FeatureCache
    from diffusion_sentinel.nodes.diffsim.pipeline import DiffSimExtractor, Settings, score_pairs

    t0 = time.perf_counter()
    model, vae, clip, name = _load(a.checkpoint)
    print(f"model: {name} (loaded in {time.perf_counter() - t0:.1f} s); torch threads {torch.get_num_threads()}; "
          f"resolution {a.resolution}, block {a.block}, t=900; median of {a.reps}")
    s = Settings(block=a.block, resolution=a.resolution)
    n = a.candidates
    ref = _images(1, a.resolution, 0)[0]
    cands = _images(n, a.resolution, 1)

    unet = {}  # label -> U-Net seconds of the last repetition

    def baseline(pairs, label):
        """The released code's cost: per pair, both images, full forward each, nothing reused."""
        out, sec = [], 0.0
        for x, y in pairs:
            ex = DiffSimExtractor(model, vae, clip, s, cache=None, batch_size=1, early_exit=False)
            out += score_pairs(ex, [x], [y])
            sec += ex.seconds["unet"]
        unet[label] = sec
        return out

    def ours(pairs, cache=None, early_exit=True, label=None):
        """Ours with a fresh feature cache (and fresh prompt/latent caches: nothing carried between runs)."""
        pipeline.TEXT_CACHE.clear()
        pipeline.LATENT_CACHE.clear()
        ex = DiffSimExtractor(model, vae, clip, s, cache=cache if cache is not None else FeatureCache(),
                              batch_size=max(2, n + 1), early_exit=early_exit)
        out = score_pairs(ex, [p[0] for p in pairs], [p[1] for p in pairs])
        if label:
            unet[label] = ex.seconds["unet"]
        return out, ex

    def timed(fn):
        times, result = [], None
        for _ in range(a.reps):
            t = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times), times, result

    with torch.inference_mode():
        ours([(ref, cands[0])])  # warm-up (model load, kernels)
        one = [(ref, cands[0])]
        many = [(ref, c) for c in cands]
        tb1, tb1s, sb1 = timed(lambda: baseline(one, "b1"))
        to1, to1s, (so1, _) = timed(lambda: ours(one, label="o1"))
        te1, te1s, _ = timed(lambda: ours(one, early_exit=False, label="e1"))
        tbn, tbns, sbn = timed(lambda: baseline(many, "bn"))
        ton, tons, (son, exn) = timed(lambda: ours(many, label="on"))
        warm = FeatureCache()
        ours([(ref, ref)], cache=warm)
        fresh = _images(n, a.resolution, 2)

        def warm_run():
            pipeline.TEXT_CACHE.clear()
            pipeline.LATENT_CACHE.clear()
            ex = DiffSimExtractor(model, vae, clip, s, cache=_copy(warm), batch_size=max(2, n + 1))
            return score_pairs(ex, [ref] * n, fresh), ex

        tw, tws, (_, exw) = timed(warm_run)

    diff = max(abs(x - y) for x, y in zip(sb1 + sbn, so1 + son))
    rows = [
        ("per pair: full forward, 2 passes (baseline)", tb1, tb1s),
        ("per pair: ours (early exit, 1 batched call)", to1, to1s),
        ("per pair: ours without early exit (batching only)", te1, te1s),
        (f"1 ref vs {n}: full forward, {2 * n} passes (baseline)", tbn, tbns),
        (f"1 ref vs {n}: ours, {exn.passes} early-exit passes", ton, tons),
        (f"1 ref vs {n}: ours, reference cached, {exw.passes} passes", tw, tws),
    ]
    for label, med, ts in rows:
        print(f"  {label:<58s} {med:8.2f} s   ({', '.join(f'{t:.2f}' for t in ts)})")
    print(f"ratio per pair (ours / full forward):               {to1 / tb1:.3f}  (target <= 0.5)")
    print(f"  U-Net time only (last repetition):                {unet['o1'] / unet['b1']:.3f}")
    print(f"ratio per pair, early exit alone (ours / no exit):  {to1 / te1:.3f}  "
          f"(U-Net time only {unet['o1'] / unet['e1']:.3f})")
    print(f"ratio 1 ref vs {n} (ours / full forward):             {ton / tbn:.3f}  "
          f"(U-Net time only {unet['on'] / unet['bn']:.3f})")
    print(f"ratio 1 ref vs {n}, reference cached:                 {tw / tbn:.3f}")
    print(f"same score: max |ours - baseline| = {diff:.2e} over {len(so1) + len(son)} pairs")


def _copy(cache):
    """A fresh cache holding the warm entries (each repetition starts from the same state)."""
    from diffusion_sentinel.nodes.diffsim.feature_cache import FeatureCache

    c = FeatureCache(cache.max_bytes, cache.max_entries)
    c._data.update(cache._data)
    c._bytes = cache._bytes
    return c


if __name__ == "__main__":
    main()
