"""ComfyUI glue: read a U-Net's attention layout, capture Q/K/V at one block with a replace patch, stop the
U-Net right after it, and run single U-Net evaluations through ComfyUI's own sampling path.

- Capture: an ``attn1_replace`` (DiffSim-S, as comfy_extras/nodes_sag.py does) or ``attn2_replace``
  (DiffSim-C) patch at the chosen key on a clone of the MODEL; it receives the projected q, k, v and stores
  them per CFG chunk using ``cond_or_uncond`` (0 = positive, 1 = negative; ComfyUI batches the negative
  first). A replace another pack installed at the same key is wrapped, never overwritten.
- Early exit: the patch raises a private exception; a DIFFUSION_MODEL wrapper catches it and returns zeros,
  so calc_cond_batch goes on with the next chunk when ComfyUI splits cond and uncond into separate calls
  (memory pressure) and everything after the captured block is skipped.
- Probe: a ``comfy.samplers.Sampler`` run by a normal CFGGuider (docs/comfyui-internals.md §2.10), so model
  loading, LoRA/weight patches, hooks, object patches and cleanup are ComfyUI's.

State lives in closures and a store object they reference, never in objects ``clone()`` deep-copies, and never in
module globals. Each probe is one *run*: ``CaptureStore.begin()`` hands out a token that ``run_probe`` puts into the
sampling's ``transformer_options`` (under ``RUN_KEY``), so every attention call carries the token of the run it
belongs to and records under (token, cond index), under the store's lock. Newer ComfyUI evaluates cond and uncond
on several GPUs in threads (``_calc_cond_batch_multigpu``, with per-device model clones that share these patch
closures): both threads then record into the same run concurrently, each its own cond index, and a late call from
an abandoned run can never land in the next one. Checked against ComfyUI 0.3.64 and newer source (the attention
block still calls ``patches_replace`` with (q, k, v, extra_options); attention functions take ``transformer_options``,
which ``_base_attention`` passes on when the function accepts it, so another node's ``optimized_attention_override``
is honoured); see the README's "Current ComfyUI".
"""

from __future__ import annotations

import inspect
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .aas import split_heads
from .blocks import AttnSite, BlockError, UNetLayout

WRAPPER_KEY = "diffusion_sentinel.diffsim"
RUN_KEY = "diffusion_sentinel.diffsim.run"  # transformer_options entry: the token of the probe run a call belongs to


class EarlyExit(Exception):
    """Raised by the capture patch once the wanted block is captured (private; never reaches the user)."""

    __module__ = "sentinel"  # ComfyUI titles errors with module + class name: keep it short


# ----------------------------------------------------------------------------- layout
def model_family(model) -> str:
    try:
        return type(model.model.model_config).__name__
    except AttributeError:
        return "unknown"


def unet_layout(model, block: str = "U_0") -> UNetLayout:
    """The attention sites of the MODEL's U-Net (respecting object patches). A non-U-Net gets a clear error."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, UNetModel, Upsample

    dm = model.get_model_object("diffusion_model")
    fam = model_family(model)
    if not isinstance(dm, UNetModel):
        raise BlockError(
            f"DiffSim needs a U-Net with self-attention at block {block} (DiffSim is defined on the U-Net "
            f"blocks of SD1.5/SDXL); this model is a {type(dm).__name__} ({fam}), which has no such blocks. "
            "Use an SD1.x, SD2.x or SDXL checkpoint.")

    def resamples(layers, kind) -> bool:  # a Downsample/Upsample layer, or a ResBlock with resblock_updown
        return any(isinstance(m, kind) or isinstance(getattr(m, "h_upd", None), kind) for m in layers)

    def scan(name: str, blocks, start_level: int) -> tuple[list[AttnSite], list[int]]:
        sites, levels, level = [], [], start_level
        for number, module in enumerate(blocks):
            layers = list(module) if isinstance(module, torch.nn.Sequential) else [module]
            if name == "input" and resamples(layers, Downsample):
                level += 1  # a down block works at (and hands on) the next, deeper level
            levels.append(level)
            for layer in layers:
                if isinstance(layer, SpatialTransformer):
                    for idx, tb in enumerate(layer.transformer_blocks):
                        sites.append(AttnSite(name, number, idx, level, int(tb.n_heads), int(tb.d_head),
                                              self_attn=not getattr(tb, "disable_self_attn", False),
                                              cross_attn=getattr(tb, "attn2", None) is not None))
            if name == "output" and resamples(layers, Upsample):
                level -= 1  # the block that upsamples ends its level
        return sites, levels

    in_sites, in_levels = scan("input", dm.input_blocks, 0)
    deepest = max(in_levels) if in_levels else 0
    mid_sites = []
    if getattr(dm, "middle_block", None) is not None:
        for layer in dm.middle_block:
            if isinstance(layer, SpatialTransformer):
                for idx, tb in enumerate(layer.transformer_blocks):
                    mid_sites.append(AttnSite("middle", 0, idx, deepest, int(tb.n_heads), int(tb.d_head),
                                              self_attn=not getattr(tb, "disable_self_attn", False),
                                              cross_attn=getattr(tb, "attn2", None) is not None))
    out_sites, out_levels = scan("output", dm.output_blocks, deepest)
    return UNetLayout(in_sites + mid_sites + out_sites, in_levels, out_levels, model_name=f"{fam} U-Net")


def transformer_block(model, site: AttnSite):
    """The BasicTransformerBlock module at a site (for tests and for reading layer widths)."""
    from comfy.ldm.modules.attention import SpatialTransformer

    dm = model.get_model_object("diffusion_model")
    container = {"input": dm.input_blocks, "output": dm.output_blocks}.get(site.name)
    module = dm.middle_block if site.name == "middle" else container[site.number]
    sts = [m for m in module if isinstance(m, SpatialTransformer)]
    return sts[0].transformer_blocks[site.index]


def context_width(model, site: AttnSite) -> int:
    """The width of the text context the cross-attention at ``site`` expects (768 SD1.5, 2048 SDXL)."""
    return int(transformer_block(model, site).attn2.to_k.weight.shape[1])


# ----------------------------------------------------------------------------- capture patches
@dataclass
class CaptureRun:
    """What one probe run captured: per cond index (0 positive, 1 negative) the [B, H, N, d] q, k, v."""

    captured: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    calls: int = 0
    ip_cond: torch.Tensor | None = None  # DiffSim-C: the image tokens of this run's images [B, Q, D]


@dataclass
class CaptureStore:
    """Capture state shared by the patch closures of one extractor: the runs in flight (keyed by their token) and,
    for DiffSim-C, the image tokens of the current images. Thread-safe: records happen under ``lock``."""

    early_exit: bool = True
    # DiffSim-C: the IP tokens of the uncond chunk (the positive chunk's are per run: CaptureRun.ip_cond)
    ip_uncond: torch.Tensor | None = None  # [1, Q, D]
    ip_weight: float = 0.5
    runs: dict[object, CaptureRun] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1), repr=False, compare=False)

    def begin(self, ip_cond: torch.Tensor | None = None) -> int:
        """Open a run (with its images' IP tokens for DiffSim-C); pass the token to ``run_probe(run_token=...)``."""
        with self.lock:
            token = next(self._ids)
            self.runs[token] = CaptureRun(ip_cond=ip_cond)
        return token

    def ip_tokens(self, token, cond_index: int) -> torch.Tensor | None:
        if int(cond_index) != 0:
            return self.ip_uncond
        with self.lock:
            run = self.runs.get(token)
        return run.ip_cond if run is not None else None

    def finish(self, token) -> CaptureRun:
        """Close a run and return what it captured (an empty run if nothing was recorded)."""
        with self.lock:
            return self.runs.pop(token, CaptureRun())

    def record(self, token, cond_index: int, tensors: tuple[torch.Tensor, ...]) -> bool:
        """Store one chunk's tensors for a run; False (ignored) if the run is not open (a late call)."""
        with self.lock:
            run = self.runs.get(token)
            if run is None:
                return False
            run.captured[int(cond_index)] = tensors
            return True

    def count_call(self, token) -> None:
        with self.lock:
            run = self.runs.get(token)
            if run is not None:
                run.calls += 1


def _existing_replace(model, kind: str, key: tuple[str, int, int]):
    """The replace patch ComfyUI would call at ``key`` right now (3-tuple first, then (name, number))."""
    table = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get(kind, {})
    return table.get(tuple(key), table.get(tuple(key[:2])))


def takes_transformer_options(fn) -> bool:
    """Whether an attention function accepts ``transformer_options=`` (ComfyUI's attention functions take **kwargs
    and read it in ``wrap_attn``, 0.3.64 and newer; an older or replaced function may not)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "transformer_options" for p in params)


def _base_attention(prev, q, k, v, eo):
    if prev is not None:
        return prev(q, k, v, eo)
    from comfy.ldm.modules.attention import optimized_attention

    kw = {"attn_precision": eo.get("attn_precision")}
    if takes_transformer_options(optimized_attention):  # honours another node's optimized_attention_override
        kw["transformer_options"] = eo
    return optimized_attention(q, k, v, eo["n_heads"], **kw)


def _plain_attention(q, k, v, heads: int, eo: dict):
    """ComfyUI's optimized attention (with this call's transformer_options where the function takes them)."""
    from comfy.ldm.modules.attention import optimized_attention

    if takes_transformer_options(optimized_attention):
        return optimized_attention(q, k, v, heads, transformer_options=eo)
    return optimized_attention(q, k, v, heads)


def _record(store: CaptureStore, tensors: tuple[torch.Tensor, ...], eo: dict) -> None:
    """Split a call's q/k/v into its CFG chunks (``cond_or_uncond``) and record them for the call's run."""
    token = eo.get(RUN_KEY)
    cu = list(eo.get("cond_or_uncond") or [0])
    heads = int(eo["n_heads"])
    rows = tensors[0].shape[0] // len(cu)
    for i, c in enumerate(cu):
        part = []
        for t in tensors:
            chunk = t[i * rows:(i + 1) * rows] if t.shape[0] == tensors[0].shape[0] else t
            part.append(split_heads(chunk, heads).detach().to("cpu", copy=True))
        store.record(token, int(c), tuple(part))
    store.count_call(token)


def make_self_capture(store: CaptureStore, prev=None) -> Callable:
    """attn1 replace: record q, k, v (projected, before attention) then exit early or attend as usual."""

    def diffsim_attn1_capture(q, k, v, extra_options):
        _record(store, (q, k, v), extra_options)
        if store.early_exit:
            raise EarlyExit()
        return _base_attention(prev, q, k, v, extra_options)

    diffsim_attn1_capture.sentinel_prev = prev
    return diffsim_attn1_capture


def _ip_tokens(store: CaptureStore, eo: dict, rows: int, like: torch.Tensor) -> torch.Tensor:
    chunks = []
    for c in eo.get("cond_or_uncond") or [0]:
        t = store.ip_tokens(eo.get(RUN_KEY), int(c))
        if t is None:
            raise RuntimeError("DiffSim-C image tokens were not set before the U-Net ran")
        chunks.append(t.expand(rows, -1, -1) if t.shape[0] == 1 else t)
    return torch.cat(chunks).to(device=like.device, dtype=like.dtype)


def make_ip_attention(store: CaptureStore, w_k: torch.Tensor, w_v: torch.Tensor, prev=None,
                      capture: bool = False) -> Callable:
    """attn2 replace for IP-Adapter Plus decoupled cross-attention:
    out = attn(q, k_text, v_text) + weight · attn(q, to_k_ip(tokens), to_v_ip(tokens)).
    With ``capture`` it also records (q, K_ip, V_ip) of this layer and may exit early."""

    def diffsim_ip_attn2(q, k, v, extra_options):
        heads = int(extra_options["n_heads"])
        rows = q.shape[0] // len(extra_options.get("cond_or_uncond") or [0])
        tokens = _ip_tokens(store, extra_options, rows, q)
        k_ip = tokens @ w_k.to(device=q.device, dtype=q.dtype).T
        v_ip = tokens @ w_v.to(device=q.device, dtype=q.dtype).T
        if capture:
            _record(store, (q, k_ip, v_ip), extra_options)
            if store.early_exit:
                raise EarlyExit()
        out = _base_attention(prev, q, k, v, extra_options)
        if store.ip_weight:
            out = out + store.ip_weight * _plain_attention(q, k_ip, v_ip, heads, extra_options)
        return out

    diffsim_ip_attn2.sentinel_prev = prev
    return diffsim_ip_attn2


def early_exit_wrapper(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: an EarlyExit from the capture patch ends this U-Net call with zeros."""
    try:
        return executor(*args, **kwargs)
    except EarlyExit:
        x = args[0] if args else kwargs["x"]
        out_ch = int(getattr(executor.class_obj, "out_channels", x.shape[1]))
        return torch.zeros((x.shape[0], out_ch, *x.shape[2:]), dtype=x.dtype, device=x.device)


def patched_for_self_capture(model, site: AttnSite, store: CaptureStore):
    """A clone of ``model`` whose attn1 at ``site`` records into ``store`` (the input MODEL is untouched)."""
    import comfy.patcher_extension as pe

    m = model.clone()
    prev = _existing_replace(m, "attn1", site.key)
    m.set_model_attn1_replace(make_self_capture(store, prev), site.name, site.number, site.index)
    m.remove_wrappers_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, early_exit_wrapper)
    return m


def patched_for_ip_capture(model, layout: UNetLayout, target: AttnSite, store: CaptureStore, ip_adapter):
    """A clone with IP-Adapter Plus attention on every cross-attention layer (wrapping existing attn2
    replaces) that also records (q, K_ip, V_ip) at ``target``."""
    import comfy.patcher_extension as pe

    m = model.clone()
    sites = layout.cross_attention_sites()
    ip_adapter.check_layers([s.width for s in sites], layout.model_name)
    for i, s in enumerate(sites):
        w_k, w_v = ip_adapter.kv(2 * i + 1)
        prev = _existing_replace(m, "attn2", s.key)
        patch = make_ip_attention(store, w_k, w_v, prev, capture=(s.key == target.key))
        m.set_model_attn2_replace(patch, s.name, s.number, s.index)
    m.remove_wrappers_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, early_exit_wrapper)
    return m


# ----------------------------------------------------------------------------- probe
def _probe_sampler_class():
    import comfy.samplers

    class DiffSimProbe(comfy.samplers.Sampler):
        """Evaluates the U-Net once at sigmas[0] on latent + sigma·noise for the chosen conds; returns zeros."""

        def __init__(self, run_positive: bool, run_negative: bool):
            self.run_positive, self.run_negative = run_positive, run_negative

        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            model = model_wrap.inner_model
            conds = model_wrap.conds
            sigma = sigmas[0]
            x = model.model_sampling.noise_scaling(sigma, noise, latent_image, max_denoise=False)
            ts = sigma.reshape(1).expand(x.shape[0]).to(x)
            use = [conds.get("positive") if self.run_positive else None,
                   conds.get("negative") if self.run_negative else None]
            try:
                comfy.samplers.calc_cond_batch(model, use, x, ts, extra_args["model_options"])
            except EarlyExit:  # only if the U-Net did not run through its DIFFUSION_MODEL wrappers
                pass
            return torch.zeros_like(noise)

    return DiffSimProbe


def run_probe(model, positive, negative, latent: torch.Tensor, noise: torch.Tensor, sigma: float,
              run_positive: bool, run_negative: bool, seed: int = 0, run_token=None) -> None:
    """One U-Net evaluation of ``latent`` (VAE latent space, unscaled) noised to ``sigma`` with all patches.
    ``run_token`` (from ``CaptureStore.begin``) goes into this evaluation's ``transformer_options``."""
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(model)
    if run_token is not None:
        opts = getattr(guider, "model_options", None)
        if not isinstance(opts, dict):
            raise RuntimeError("DiffSim: this ComfyUI's CFGGuider has no model_options dict to carry the capture run; "
                               "update ComfyUI or report the version")
        opts = dict(opts)  # the guider's own copy: the MODEL's options stay untouched
        opts["transformer_options"] = {**opts.get("transformer_options", {}), RUN_KEY: run_token}
        guider.model_options = opts
    guider.set_conds(positive, negative)
    guider.set_cfg(7.5)  # the paper's guidance scale; no CFG combination is computed here
    sampler = _probe_sampler_class()(run_positive, run_negative)
    guider.sample(noise, latent, sampler, torch.tensor([float(sigma)], dtype=torch.float32), seed=seed,
                  disable_pbar=True)
