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

Every figure is the median of --reps repetitions run round-robin, each with a fresh cache; the ratios are ours / baseline
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
    ap.add_argument("--pairs-only", action="store_true", help="only the single-pair case (e.g. at 512 px)")
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

    def baseline(pairs):
        """The released code's cost: per pair, both images, full forward each, nothing reused."""
        out, st = [], {"unet": 0.0, "vae": 0.0, "passes": 0}
        for x, y in pairs:
            ex = DiffSimExtractor(model, vae, clip, s, cache=None, batch_size=1, early_exit=False)
            out += score_pairs(ex, [x], [y])
            st["unet"] += ex.seconds["unet"]
            st["vae"] += ex.seconds["vae"]
            st["passes"] += ex.passes
        return out, st

    def ours(pairs, cache=None, early_exit=True):
        """Ours, starting cold: fresh feature cache, no cached prompts or latents (unless ``cache`` is given)."""
        pipeline.TEXT_CACHE.clear()
        pipeline.LATENT_CACHE.clear()
        ex = DiffSimExtractor(model, vae, clip, s, cache=_copy(cache) if cache is not None else FeatureCache(),
                              batch_size=max(2, n + 1), early_exit=early_exit)
        out = score_pairs(ex, [p[0] for p in pairs], [p[1] for p in pairs])
        return out, {"unet": ex.seconds["unet"], "vae": ex.seconds["vae"], "passes": ex.passes}

    def measure(cases: dict) -> dict:
        """Run the cases round-robin (a slow spell on a shared machine then hits every case alike);
        per case the median total time and the medians of its U-Net and VAE time."""
        runs = {k: [] for k in cases}
        for _ in range(a.reps):
            for k, fn in cases.items():
                t = time.perf_counter()
                scores, st = fn()
                runs[k].append((time.perf_counter() - t, st, scores))
        out = {}
        for k, rs in runs.items():
            out[k] = {"total": statistics.median(r[0] for r in rs), "all": [r[0] for r in rs],
                      "unet": statistics.median(r[1]["unet"] for r in rs),
                      "vae": statistics.median(r[1]["vae"] for r in rs),
                      "passes": rs[-1][1]["passes"], "scores": rs[-1][2]}
        return out

    with torch.inference_mode():
        ours([(ref, cands[0])])  # warm-up (model load, kernels)
        one = [(ref, cands[0])]
        many = [(ref, c) for c in cands]
        res = measure({"b1": lambda: baseline(one), "o1": lambda: ours(one),
                       "e1": lambda: ours(one, early_exit=False)})
        if not a.pairs_only:
            warm = FeatureCache()  # holds the reference's features only; each repetition starts from a copy
            DiffSimExtractor(model, vae, clip, s, cache=warm).features([ref])
            fresh = _images(n, a.resolution, 2)
            res.update(measure({"bn": lambda: baseline(many), "on": lambda: ours(many),
                                "wn": lambda: ours([(ref, c) for c in fresh], cache=warm)}))

    labels = {"b1": "per pair: full forward (baseline)", "o1": "per pair: ours (early exit, 1 batched call)",
              "e1": "per pair: ours without early exit", "bn": f"1 ref vs {n}: full forward (baseline)",
              "on": f"1 ref vs {n}: ours", "wn": f"1 ref vs {n}: ours, reference cached"}
    print(f"  {'case':<46s} {'passes':>6s} {'total s':>8s} {'U-Net s':>8s} {'VAE s':>7s}   (total per repetition)")
    for k, r in res.items():
        print(f"  {labels[k]:<46s} {r['passes']:>6d} {r['total']:>8.2f} {r['unet']:>8.2f} {r['vae']:>7.2f}   "
              f"({', '.join(f'{t:.2f}' for t in r['all'])})")

    def ratio(x, y, what="total"):
        return res[x][what] / res[y][what]

    print(f"ratio per pair, ours / full forward:      {ratio('o1', 'b1'):.3f} end to end, "
          f"{ratio('o1', 'b1', 'unet'):.3f} U-Net time   (target <= 0.5)")
    print(f"ratio per pair, early exit alone:         {ratio('o1', 'e1'):.3f} end to end, "
          f"{ratio('o1', 'e1', 'unet'):.3f} U-Net time")
    if not a.pairs_only:
        print(f"ratio 1 ref vs {n}, ours / full forward:    {ratio('on', 'bn'):.3f} end to end, "
              f"{ratio('on', 'bn', 'unet'):.3f} U-Net time")
        print(f"ratio 1 ref vs {n}, reference cached:       {ratio('wn', 'bn'):.3f} end to end, "
              f"{ratio('wn', 'bn', 'unet'):.3f} U-Net time")
    ours_scores = res["o1"]["scores"] + (res["on"]["scores"] if "on" in res else [])
    base_scores = res["b1"]["scores"] + (res["bn"]["scores"] if "bn" in res else [])
    diff = max(abs(x - y) for x, y in zip(ours_scores, base_scores))
    print(f"same score: max |ours - baseline| = {diff:.2e} over {len(ours_scores)} pairs")


def _copy(cache):
    """A fresh cache holding the warm entries (each repetition starts from the same state)."""
    from diffusion_sentinel.nodes.diffsim.feature_cache import FeatureCache

    c = FeatureCache(cache.max_bytes, cache.max_entries)
    c._data.update(cache._data)
    c._bytes = cache._bytes
    return c


if __name__ == "__main__":
    main()
