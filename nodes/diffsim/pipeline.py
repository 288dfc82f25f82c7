"""ComfyUI glue: the DiffSim pipeline (images -> per-image attention features -> scores), with the feature cache.

Per image (docs/methods.md §2.2): resize (square Lanczos, or crop) -> VAE encode -> posterior sample (seeded
per image) or mean -> noise to the paper's timestep with seeded noise -> one U-Net evaluation at batch [uncond
"", cond prompt] (or the uncond half only) -> Q, K, V of the chosen block, kept per image. Images are batched;
the U-Net stops right after the captured block; features are cached per (model, image, settings), so one
reference against N candidates costs N + 1 image passes and a repeated reference costs nothing.

DiffSim-C (§2.4): the image is also the IP-Adapter Plus image prompt of its own pass (IP-Adapter attention at
every cross-attention layer, weight 0.5 as released); at the chosen block we keep the image queries and the IP
keys/values. Only the conditional half is evaluated and compared: the released code also compares the
unconditional half, whose IP tokens come from the same zero image for both pictures, so half of each
flattened vector is identical in both attention outputs and the score is biased upward.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from .aas import AttentionFeatures, aas_matrix, aas_pairs
from .capture import (
    CaptureStore,
    context_width,
    model_family,
    patched_for_ip_capture,
    patched_for_self_capture,
    run_probe,
    unet_layout,
)
from .feature_cache import FeatureCache
from .images import content_hash, derive_seed, normalize_image, prepare, seeded_normal
from .timesteps import noise_timestep, resolve_convention

log = logging.getLogger("diffusion_sentinel")

MODES = ("DiffSim-S (self-attention)", "DiffSim-C (IP-Adapter cross-attention)")
TEXT_MODES = ("prompt + empty uncond (paper)", "unconditional only")
NOISE_MODES = ("independent per image (paper)", "shared")
LATENT_MODES = ("posterior sample (paper)", "posterior mean")
DEFAULT_PROMPT = "High quality image"
DEFAULT_SEED = 2334  # the released scripts' --seed

CACHE = FeatureCache(max_bytes=int(os.environ.get("SENTINEL_DIFFSIM_CACHE_MB", "1024")) << 20)
# Smaller caches used whenever the feature cache is on: encoded prompts (CLIP on CPU is slow) and VAE latents
# (the encoder costs more than a U-Net pass, and the latent does not depend on block, t, prompt or mode).
TEXT_CACHE = FeatureCache(max_bytes=64 << 20, max_entries=256)
LATENT_CACHE = FeatureCache(max_bytes=256 << 20)


@dataclass(frozen=True)
class Settings:
    mode: str = "S"  # "S" | "C"
    block: str = "U_0"
    t: int = 900
    t_convention: str = "auto"
    prompt: str = DEFAULT_PROMPT
    cfg_pair: bool = True  # [uncond "", cond prompt] in the features (paper) vs the empty prompt only
    seed: int = DEFAULT_SEED
    shared_noise: bool = False
    posterior_sample: bool = True
    resolution: int = 512
    resize: str = "square (paper)"
    ip_weight: float = 0.5

    def __post_init__(self):
        if self.mode not in ("S", "C"):
            raise ValueError(f"mode must be 'S' or 'C', got {self.mode!r}")
        if self.resolution % 64 or not 64 <= self.resolution <= 4096:
            raise ValueError(f"resolution must be a multiple of 64 between 64 and 4096, got {self.resolution}")

    @staticmethod
    def parse_mode(mode: str) -> str:
        m = mode.strip()
        if m.startswith("DiffSim-C") or m == "C":
            return "C"
        if m.startswith("DiffSim-S") or m == "S":
            return "S"
        raise ValueError(f"unknown DiffSim mode {mode!r}; choose one of {list(MODES)}")


# ----------------------------------------------------------------------------- identity of the inputs
def _fingerprint(obj, depth: int = 0):
    """A hashable summary of model_options / object patches: values, and identities of callables and objects."""
    if depth > 6:
        return ("...",)
    if isinstance(obj, dict):
        return tuple(sorted((repr(k), _fingerprint(v, depth + 1)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return tuple(_fingerprint(v, depth + 1) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return ("tensor", tuple(obj.shape), str(obj.dtype), obj.data_ptr() if obj.device.type != "meta" else 0)
    return (type(obj).__qualname__, id(obj))


def model_identity(model) -> tuple:
    """(patcher object, its weight-patch uuid, model_options, object patches, hook patches)."""
    return (id(model), str(getattr(model, "patches_uuid", "")), _fingerprint(getattr(model, "model_options", {})),
            _fingerprint(getattr(model, "object_patches", {})), _fingerprint(getattr(model, "hook_patches", {})))


def _cond_hash(cond) -> str:
    import hashlib

    h = hashlib.sha1()
    for c in cond:
        t = c[0].detach().float().cpu().contiguous()
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
        p = c[1].get("pooled_output")
        if isinstance(p, torch.Tensor):
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def encode_text(clip, text: str, model, resolution: int, cache: FeatureCache | None = None):
    """CONDITIONING of ``text``; SDXL-family models also get the size conditioning of a square image."""
    if clip is None:
        raise ValueError("DiffSim needs the CLIP text encoder of the checkpoint (connect CheckpointLoader's CLIP) "
                         "to encode the prompt and the empty unconditional prompt")
    patcher = getattr(clip, "patcher", None)
    key = (id(clip), str(getattr(patcher, "patches_uuid", "")), _fingerprint(getattr(patcher, "model_options", {})),
           text)
    cond = cache.get(key, (clip,)) if cache is not None else None
    if cond is None:
        cond = clip.encode_from_tokens_scheduled(clip.tokenize(text))
        if cache is not None:
            size = sum(c[0].element_size() * c[0].nelement() for c in cond)
            cache.put(key, cond, size, (clip,))
    if getattr(model.model, "adm_channels", 0):
        extra = {"width": resolution, "height": resolution, "target_width": resolution,
                 "target_height": resolution, "crop_w": 0, "crop_h": 0}
        cond = [[c[0], {**c[1], **extra}] for c in cond]
    return cond


# ----------------------------------------------------------------------------- the extractor
class DiffSimExtractor:
    """Per-image attention features of DiffSim for one (MODEL, VAE, CLIP, settings); cached and batched."""

    def __init__(self, model, vae, clip, settings: Settings, ip_adapter=None, clip_vision=None,
                 cache: FeatureCache | None = CACHE, batch_size: int = 4, early_exit: bool = True,
                 on_pass: Callable[[int], None] | None = None):
        if vae is None:
            raise ValueError("DiffSim needs the VAE of the checkpoint to encode the images into latents")
        self.model, self.vae, self.clip, self.s = model, vae, clip, settings
        self.ip_adapter, self.clip_vision = ip_adapter, clip_vision
        self.cache, self.batch_size, self.early_exit, self.on_pass = cache, max(1, int(batch_size)), early_exit, on_pass
        self.layout = unet_layout(model, settings.block)
        self.site = self.layout.resolve(settings.block, need="cross" if settings.mode == "C" else "self")
        self.family = model_family(model)
        if settings.mode == "C":
            if ip_adapter is None or clip_vision is None:
                raise ValueError("DiffSim-C needs an IP-Adapter Plus (connect 'Load IP-Adapter Plus (DiffSim)') and "
                                 "the CLIP vision model it was trained with (CLIPVisionLoader, ViT-H for the Plus "
                                 "models); or switch the mode to DiffSim-S")
            width = context_width(model, self.site)
            if ip_adapter.spec.output_dim != width:
                raise ValueError(f"{ip_adapter.name} is an IP-Adapter Plus for {ip_adapter.spec.family} (context "
                                 f"width {ip_adapter.spec.output_dim}) but this {self.family} model's cross-attention "
                                 f"takes width {width}: load the IP-Adapter Plus made for this model family")
            ip_adapter.check_layers([s.width for s in self.layout.cross_attention_sites()], self.layout.model_name)
        self.convention = resolve_convention(settings.t_convention, self.family)
        self.noise_t = noise_timestep(settings.t, self.convention)
        ms = model.get_model_object("model_sampling")
        self.sigma = float(ms.sigma(torch.tensor(float(self.noise_t))))
        pos_text = settings.prompt if settings.cfg_pair else ""
        text_cache = TEXT_CACHE if cache is not None else None
        self.positive = encode_text(clip, pos_text, model, settings.resolution, text_cache)
        self.negative = encode_text(clip, "", model, settings.resolution, text_cache)
        self.latent_cache = LATENT_CACHE if cache is not None else None
        if settings.mode == "C":  # the conditional (IP-conditioned) half only; see the module docstring
            self.run_positive, self.run_negative, self.halves = True, False, [0]
        elif settings.cfg_pair:
            self.run_positive, self.run_negative, self.halves = True, True, [1, 0]  # [uncond, cond], as released
        else:
            self.run_positive, self.run_negative, self.halves = False, True, [1]
        self.store = CaptureStore(early_exit=early_exit, ip_weight=float(settings.ip_weight))
        if settings.mode == "C":
            self.patched = patched_for_ip_capture(model, self.layout, self.site, self.store, ip_adapter)
        else:
            self.patched = patched_for_self_capture(model, self.site, self.store)
        self._key_prefix = (model_identity(model), id(vae), id(ip_adapter), id(clip_vision),
                            _cond_hash(self.positive), _cond_hash(self.negative), tuple(sorted(asdict(settings).items())),
                            self.site.key, self.noise_t, self.sigma, tuple(self.halves))
        self._owners = tuple(o for o in (model, vae, ip_adapter, clip_vision) if o is not None)
        self.passes = 0  # images run through the U-Net by this extractor
        self.unet_calls = 0
        self.hits = 0
        self.seconds = {"vae": 0.0, "unet": 0.0}  # time spent encoding images and in U-Net passes
        self.latent_used = "posterior sample" if settings.posterior_sample else "posterior mean"

    # ------------------------------------------------------------------ public
    def features(self, images: Sequence[torch.Tensor]) -> list[AttentionFeatures]:
        """Features of each image ([H, W, C] tensors, C = 1, 3 or 4); equal images are computed once. Each image is
        first brought to what the model sees (RGB, alpha dropped): hash, seeds, VAE and CLIP vision all use that."""
        images = [normalize_image(im) for im in images]
        hashes = [content_hash(im) for im in images]
        found: dict[str, AttentionFeatures] = {}
        todo: list[tuple[str, torch.Tensor]] = []
        for h, im in zip(hashes, images):
            if h in found or any(h == t[0] for t in todo):
                continue
            f = self.cache.get(self._key_prefix + (h,), self._owners) if self.cache is not None else None
            if f is not None:
                found[h] = f
                self.hits += 1
            else:
                todo.append((h, im))
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            feats = self._compute([h for h, _ in chunk], [im for _, im in chunk])
            for (h, _), f in zip(chunk, feats):
                found[h] = f
                if self.cache is not None:
                    self.cache.put(self._key_prefix + (h,), f, f.nbytes, self._owners)
            if self.on_pass is not None:
                self.on_pass(len(chunk))
        return [found[h] for h in hashes]

    def details(self) -> dict:
        return {
            "mode": f"DiffSim-{self.s.mode}", "model_family": self.family, "block": self.s.block,
            "comfy_block": list(self.site.key), "heads": self.site.heads, "dim_head": self.site.dim_head,
            "t_paper": self.s.t, "t_convention": self.convention, "noise_timestep": self.noise_t,
            "sigma": round(self.sigma, 6), "halves": ["cond" if h == 0 else "uncond" for h in self.halves],
            "prompt": self.s.prompt if (self.s.cfg_pair or self.s.mode == "C") else "",
            "seed": self.s.seed, "noise": "shared" if self.s.shared_noise else "independent per image",
            "latent": self.latent_used, "resolution": self.s.resolution, "resize": self.s.resize,
            "ip_weight": self.s.ip_weight if self.s.mode == "C" else None,
            "image_passes": self.passes, "unet_calls": self.unet_calls, "cache_hits": self.hits,
            "early_exit": self.early_exit, "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }

    # ------------------------------------------------------------------ internals
    def _encode(self, pixels: torch.Tensor, hashes: list[str]) -> torch.Tensor:
        """VAE latents (unscaled, ComfyUI LATENT space): posterior sample seeded per image, or the mean."""
        moments: list[torch.Tensor] = []
        handle = None
        reg = getattr(getattr(self.vae, "first_stage_model", None), "regularization", None)
        if self.s.posterior_sample and type(reg).__name__ == "DiagonalGaussianRegularizer":
            handle = reg.register_forward_hook(lambda mod, inp, out: moments.append(inp[0].detach().float().cpu()))
        try:
            mean = self.vae.encode(pixels).float().cpu()
        finally:
            if handle is not None:
                handle.remove()
        if not self.s.posterior_sample:
            return mean
        mom = torch.cat(moments) if moments else None
        if mom is None or mom.shape[0] != mean.shape[0] or mom.shape[1] != 2 * mean.shape[1] or \
                mom.shape[2:] != mean.shape[2:]:
            self.latent_used = "posterior mean (this VAE has no Gaussian posterior to sample)"
            return mean
        mu, logvar = mom.chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        eps = torch.stack([seeded_normal(tuple(mu.shape[1:]), derive_seed(self.s.seed, h, "vae")) for h in hashes])
        return mu + std * eps

    def _latents(self, hashes: list[str], images: list[torch.Tensor]) -> torch.Tensor:
        """VAE latents of the images, from the latent cache where possible (they depend on the VAE, the image,
        resolution, resize, posterior sample or mean, and the seed of the sample)."""
        s = self.s
        keys = [(id(self.vae), h, s.resolution, s.resize, s.posterior_sample, s.seed if s.posterior_sample else None)
                for h in hashes]
        got = [self.latent_cache.get(k, (self.vae,)) if self.latent_cache is not None else None for k in keys]
        todo = [i for i, g in enumerate(got) if g is None]
        if todo:
            t0 = time.perf_counter()
            pixels = torch.stack([prepare(images[i], s.resolution, s.resize) for i in todo])
            fresh = self._encode(pixels, [hashes[i] for i in todo])
            self.seconds["vae"] += time.perf_counter() - t0
            for j, i in enumerate(todo):
                got[i] = (fresh[j], self.latent_used)
                if self.latent_cache is not None:
                    self.latent_cache.put(keys[i], got[i], fresh[j].element_size() * fresh[j].nelement(), (self.vae,))
        self.latent_used = got[-1][1]
        return torch.stack([g[0] for g in got])

    def _noise(self, shape: tuple[int, ...], hashes: list[str]) -> torch.Tensor:
        if self.s.shared_noise:
            return seeded_normal(shape[1:], self.s.seed).unsqueeze(0).expand(shape[0], *shape[1:]).contiguous()
        return torch.stack([seeded_normal(tuple(shape[1:]), derive_seed(self.s.seed, h, "noise")) for h in hashes])

    def _ip_tokens(self, images: list[torch.Tensor]) -> torch.Tensor:
        toks = []
        for im in images:
            out = self.clip_vision.encode_image(im[None], crop=True)
            toks.append(self.ip_adapter.project(out["penultimate_hidden_states"].float().cpu()))
        return torch.cat(toks)

    def _compute(self, hashes: list[str], images: list[torch.Tensor]) -> list[AttentionFeatures]:
        latent = self._latents(hashes, images)
        noise = self._noise(tuple(latent.shape), hashes)
        token = self.store.begin(ip_cond=self._ip_tokens(images) if self.s.mode == "C" else None)
        t0 = time.perf_counter()
        try:
            run_probe(self.patched, self.positive, self.negative, latent, noise, self.sigma, self.run_positive,
                      self.run_negative, seed=self.s.seed, run_token=token)
        finally:
            run = self.store.finish(token)
        self.seconds["unet"] += time.perf_counter() - t0
        self.passes += len(images)
        self.unet_calls += run.calls
        missing = [h for h in self.halves if h not in run.captured]
        if missing:
            raise RuntimeError(
                f"DiffSim: the capture patch at {self.site.describe()} did not run for the "
                f"{'cond' if missing[0] == 0 else 'uncond'} pass. Another node may replace this model's forward "
                "or attention in a way that skips ComfyUI's attention patches (e.g. a compiled or fused model): "
                "feed DiffSim the plain checkpoint MODEL.")
        b = len(images)
        for h in self.halves:
            got = run.captured[h][0].shape[0]
            if got != b:
                raise RuntimeError(f"DiffSim captured {got} rows for {b} images at {self.site.describe()}; "
                                   "another patch changed the batch layout")
        out = []
        for i in range(b):
            q, k, v = (torch.cat([run.captured[h][j][i:i + 1] for h in self.halves]) for j in range(3))
            out.append(AttentionFeatures(q, k, v))
        return out


def aas_device(model):
    """Where to compute the attention of the scores: the model's device (the GPU when there is one)."""
    try:
        return model.load_device
    except AttributeError:
        return None


def score_pairs(ex: DiffSimExtractor, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor],
                on_pair: Callable[[int], None] | None = None) -> list[float]:
    """DiffSim(a[i], b[i]) for each i (both lists as long); every distinct image is evaluated once."""
    feats = ex.features(list(a) + list(b))  # one batched pass over every distinct image
    return aas_pairs(feats[:len(a)], feats[len(a):], device=aas_device(ex.model), on_pair=on_pair)


def score_matrix(ex: DiffSimExtractor, images: Sequence[torch.Tensor],
                 on_row: Callable[[int], None] | None = None) -> torch.Tensor:
    return aas_matrix(ex.features(list(images)), device=aas_device(ex.model), on_row=on_row)


def pair_up(n_a: int, n_b: int) -> list[tuple[int, int]]:
    """Index pairs for batches of n_a and n_b images: one against many, many against one, or one to one."""
    if n_a == 0 or n_b == 0:
        raise ValueError("DiffSim got an empty image batch")
    if n_a == 1:
        return [(0, j) for j in range(n_b)]
    if n_b == 1:
        return [(i, 0) for i in range(n_a)]
    if n_a == n_b:
        return [(i, i) for i in range(n_a)]
    raise ValueError(f"image_a has {n_a} images and image_b has {n_b}: give one image on either side (it is compared "
                     "with every image of the other), or two batches of the same size (compared item by item)")
