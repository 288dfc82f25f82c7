"""Helpers for integration tests: start ComfyUI in-process, tiny real models with fixed seeds, run nodes.

Nothing here copies ComfyUI code: it imports the checkout at COMFYUI_PATH (docs/comfyui-internals.md §4.6, §5.3).

Device and dtype follow tests/_device.py (SENTINEL_TEST_DEVICE, SENTINEL_TEST_DTYPE, SENTINEL_TEST_TF32): ComfyUI
boots on that device, and the model builders here do what ComfyUI's own loaders do there - weights are drawn on
the CPU in float32 with a fixed seed (the same values on every device), the UNet is built in the dtype ComfyUI's
model management picks (float16 on a recent GPU) and handed to a ModelPatcher with ComfyUI's load/offload devices,
and ComfyUI moves it when a sampler or encoder runs. Inputs that ComfyUI's own nodes produce on the CPU
(conditioning, EmptyLatentImage latents) stay on the CPU here as well.
"""

from __future__ import annotations

import asyncio
import os
import sys

_READY = False


def boot_comfy(path: str | None = None):
    """Import ComfyUI from the checkout (CPU), load its extra nodes; return the ``nodes`` module."""
    global _READY
    path = path or os.environ["COMFYUI_PATH"]
    if _READY:
        import nodes

        return nodes
    if path not in sys.path:
        sys.path.insert(0, path)
    bad = sys.modules.get("nodes")
    if bad is not None and not str(getattr(bad, "__file__", "")).startswith(path):
        raise RuntimeError(f"a module named 'nodes' was imported from {bad.__file__} before ComfyUI's")
    os.chdir(path)
    import _device
    from comfy.cli_args import args

    _device.apply_to_comfy_args(args)  # device and dtype, before comfy.model_management is imported
    _device.apply_tf32()
    import utils.extra_config  # noqa: F401  (before `nodes`, which shadows `utils` with comfy/utils.py)

    yaml = os.path.join(path, "extra_model_paths.yaml")
    if os.path.isfile(yaml):
        utils.extra_config.load_extra_path_config(yaml)
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    import comfy.model_management as mm

    if mm.get_torch_device().type != _device.device().type:
        raise RuntimeError(f"ComfyUI booted on {mm.get_torch_device()}, but SENTINEL_TEST_DEVICE={_device.RAW}")
    _READY = True
    return nodes


def random_init_(module, seed: int = 0):
    """ComfyUI leaves layer weights uninitialised: use torch's default init (seeded) for every layer.

    The draw happens on the CPU (a module elsewhere is moved there and back), so a seed gives the same weights on
    every device."""
    import torch

    params = list(module.parameters())
    where = params[0].device if params else torch.device("cpu")
    if where.type != "cpu":
        module.to("cpu")
        try:
            return random_init_(module, seed)
        finally:
            module.to(where)
    torch.manual_seed(seed)
    covered = set()
    for m in module.modules():
        for base in type(m).__mro__:
            if base.__module__.startswith("torch.nn.modules") and "reset_parameters" in base.__dict__:
                base.reset_parameters(m)
                covered.update(id(p) for p in m.parameters(recurse=False))
                break
    with torch.no_grad():
        for p in module.parameters():
            if id(p) not in covered and p.dim() > 0:
                p.normal_(0.0, 0.02)
    return module


TINY_UNET = dict(
    use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1],
    channel_mult=[1, 2], transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1],
    transformer_depth_middle=1, context_dim=768, use_linear_in_transformer=False, use_spatial_transformer=True,
    legacy=False, adm_in_channels=None, use_temporal_attention=False, use_temporal_resblock=False,
)


def tiny_model(seed: int = 0, model_channels: int = 32, dtype=None):
    """A real SD1.5-family ModelPatcher (EPS, SD15 latent format) with a 2-level U-Net; runs in ms on CPU.

    See ``unet_patcher`` for where its weights live and in which dtype it runs."""
    return unet_patcher(dict(TINY_UNET, model_channels=model_channels), seed=seed, dtype=dtype)


def unet_patcher(unet_config: dict, seed: int = 0, dtype=None, model_type=None, config_class=None, model_class=None):
    """A ModelPatcher around a random UNet, built the way ``comfy.sd.load_state_dict_guess_config`` builds a
    checkpoint's UNet on the test device.

    Weights are drawn in float32 on the CPU (``random_init_``, seeded: the same values on every device); the model
    is then built in ``dtype`` (default ``_device.model_dtype()``: SENTINEL_TEST_DTYPE, else ComfyUI's choice for
    the device - float32 on the CPU, float16 on a recent GPU) with ComfyUI's manual-cast rule, on ComfyUI's initial
    load device, in a ModelPatcher with ComfyUI's load and offload devices, and loaded to the GPU right away when the
    initial load device is the GPU, as ComfyUI's loader does. ``model_type`` (default EPS), ``config_class``
    (default ``comfy.supported_models.SD15``) and ``model_class`` (default ``comfy.model_base.BaseModel``, e.g.
    ``comfy.model_base.SDXL``) select other families. Any ``dtype`` key in ``unet_config`` is ignored.
    """
    import _device
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    config_class = config_class or comfy.supported_models.SD15
    model_class = model_class or comfy.model_base.BaseModel
    model_type = model_type or comfy.model_base.ModelType.EPS
    cfg = {k: v for k, v in unet_config.items() if k != "dtype"}
    dtype = dtype or _device.model_dtype()
    init_mc = config_class(dict(cfg, dtype=torch.float32))
    init = model_class(init_mc, model_type=model_type, device=torch.device("cpu"))
    random_init_(init.diffusion_model, seed)
    load_device = mm.get_torch_device()
    if dtype == torch.float32 and load_device.type == "cpu":
        model = init  # the CPU default: exactly the initialised float32 model
    else:
        mc = config_class(dict(cfg))
        mc.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, mc.supported_inference_dtypes))
        n_params = sum(p.numel() for p in init.diffusion_model.parameters())
        model = model_class(mc, model_type=model_type, device=mm.unet_inital_load_device(n_params, dtype))
        missing, unexpected = model.diffusion_model.load_state_dict(init.diffusion_model.state_dict(), strict=True)
        assert not missing and not unexpected
        del init
    patcher = comfy.model_patcher.ModelPatcher(model, load_device, mm.unet_offload_device())
    if next(model.diffusion_model.parameters()).device.type != "cpu":
        mm.load_models_gpu([patcher], force_full_load=True)
    return patcher


def warm_up(patcher) -> None:
    """One short KSampler run: the first sampling call in a fresh CUDA process can differ from later ones (kernel
    selection), so fixtures run this once before tests compare runs bit for bit. No-op on the CPU."""
    import _device

    if not _device.ON_CUDA:
        return
    run_node("KSampler", model=patcher, seed=0, steps=2, cfg=2.0, sampler_name="euler", scheduler="normal",
             positive=conditioning(0), negative=conditioning(1), latent_image=empty_latent(1))


def tiny_vae(seed: int = 0):
    """A TAESD VAE with random weights, built with ComfyUI's classes (comfy.sd.VAE detects it by its keys)."""
    import comfy.sd
    import comfy.taesd.taesd

    ae = random_init_(comfy.taesd.taesd.TAESD(latent_channels=4), seed)
    return comfy.sd.VAE(sd=ae.state_dict())  # keys taesd_encoder.* / taesd_decoder.* select TAESD


def conditioning(seed: int, batch: int = 1):
    """CONDITIONING as CLIPTextEncode returns it: on the CPU (ComfyUI's intermediate device), float32, seeded."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 77, 768, generator=g), {}]]


def empty_latent(batch: int = 1, size: int = 8, seed: int | None = None):
    """LATENT as EmptyLatentImage returns it (CPU); with ``seed``, seeded noise drawn on the CPU. Feed it to nodes
    and samplers as is; to call a model directly, move it with ``_device.to_device(x, model.model.get_dtype())``."""
    import torch

    if seed is None:
        return {"samples": torch.zeros(batch, 4, size, size)}
    g = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(batch, 4, size, size, generator=g)}


def run_node(class_type: str, **kwargs):
    """Execute a node class from nodes.NODE_CLASS_MAPPINGS like the executor would; returns the result tuple."""
    import torch

    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS[class_type]
    with torch.inference_mode():
        if hasattr(cls, "PREPARE_CLASS_CLONE"):
            c = cls.PREPARE_CLASS_CLONE({})
            out = getattr(c, c.FUNCTION)(**kwargs)
        else:
            inst = cls()
            out = getattr(inst, cls.FUNCTION)(**kwargs)
    if hasattr(out, "args"):
        return tuple(out.args)
    if isinstance(out, dict):
        return tuple(out["result"])
    return tuple(out)


def run_v3(node_cls, **kwargs):
    """Execute one of the pack's V3 node classes directly (as the executor does, in inference mode)."""
    import torch

    with torch.inference_mode():
        c = node_cls.PREPARE_CLASS_CLONE({})
        out = c.EXECUTE_NORMALIZED(**kwargs)
    return out


TINY_CLIP_VISION = {
    "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu", "hidden_size": 32, "image_size": 224,
    "intermediate_size": 64, "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 2,
    "num_channels": 3, "num_hidden_layers": 2, "patch_size": 14, "projection_dim": 16,
}


def init_clip_vision_(model, seed: int) -> None:
    """torch's default init (seeded), then CLIP-like small position/class embeddings so images matter."""
    import torch

    random_init_(model, seed)
    emb = getattr(getattr(model, "vision_model", None), "embeddings", None)
    if emb is not None:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            w = emb.position_embedding.weight
            w.copy_((0.02 * torch.randn(w.shape, generator=g)).to(w.dtype))
            if emb.class_embedding is not None:
                emb.class_embedding.copy_((0.02 * torch.randn(emb.class_embedding.shape, generator=g))
                                          .to(emb.class_embedding.dtype))


def tiny_clip_vision(tmp_dir, seed: int = 0, **overrides):
    """A real ``comfy.clip_vision.ClipVisionModel`` from a small JSON config (CLIP layout, width 32, 2 layers,
    224 px, 16-d projection by default; override any config key), seeded. ComfyUI's CLIPVisionLoader cannot load
    such a small file (it detects only full-size layouts), so it is built in-process."""
    import hashlib
    import json
    from pathlib import Path

    import comfy.clip_vision

    cfg = dict(TINY_CLIP_VISION, **overrides)
    tag = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]
    path = Path(tmp_dir) / f"tiny_clip_vision_{seed}_{tag}.json"
    path.write_text(json.dumps(cfg))
    cv = comfy.clip_vision.ClipVisionModel(str(path))
    init_clip_vision_(cv.model, seed)
    return cv


def write_random_vit_l(path, seed: int = 0) -> str:
    """A random-weight CLIP ViT-L/14 vision model (fp16, HF key layout) that ComfyUI's CLIPVisionLoader detects.

    The loader picks its config from key names and knows only full-size layouts (ViT-L/H/bigG, SigLIP, DINOv2),
    so a loadable file must have ViT-L's full shapes: 304 M parameters, about 610 MB.
    """
    import json

    import comfy.clip_model
    import comfy.clip_vision
    import comfy.ops
    import torch
    from safetensors.torch import save_file

    cfg_path = os.path.join(os.path.dirname(comfy.clip_vision.__file__), "clip_vision_config_vitl.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    meta = comfy.clip_model.CLIPVisionModelProjection(cfg, torch.float16, "meta", comfy.ops.manual_cast)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, p in meta.state_dict().items():
        if "norm" in k and k.endswith("weight"):
            sd[k] = torch.ones(p.shape, dtype=torch.float16)
        elif k.endswith("bias"):
            sd[k] = torch.zeros(p.shape, dtype=torch.float16)
        else:
            sd[k] = (torch.randn(p.shape, generator=g) * 0.02).to(torch.float16)
    tmp = str(path) + ".partial"
    save_file(sd, tmp, metadata={"sentinel_test": f"random CLIP ViT-L/14 vision, seed {seed}"})
    os.replace(tmp, path)
    return str(path)


def on_model_device(patcher, *tensors):
    """Load ``patcher`` where ComfyUI runs it (``mm.load_models_gpu``, as a sampler would) and return ``tensors``
    moved to that device in the model's dtype (floating-point tensors only): the inputs for a direct call of
    ``patcher.model.diffusion_model`` on any test device. Build the tensors on the CPU (seeded) first."""
    import comfy.model_management as mm

    mm.load_models_gpu([patcher])
    dev, dtype = patcher.load_device, patcher.model.get_dtype()
    out = tuple(t.to(device=dev, dtype=dtype) if t.is_floating_point() else t.to(dev) for t in tensors)
    return out[0] if len(out) == 1 else out


def unet_call(patcher, x, timestep, context, **kw):
    """The bare UNet output for ``x`` at ``timestep`` (a float or a tensor of one per item) and ``context``, computed
    on the model's device in its dtype and returned on the CPU in float32 (no sampler, no conversions)."""
    import torch

    t = timestep if isinstance(timestep, torch.Tensor) else torch.full((x.shape[0],), float(timestep))
    x, context = on_model_device(patcher, x, context)
    t = t.float().to(x.device)  # timesteps stay float32, as ComfyUI's apply_model passes them
    kw.setdefault("transformer_options", {})
    with torch.no_grad():
        return patcher.model.diffusion_model(x, t, context=context, **kw).float().cpu()
