"""The device (and dtype) the integration tests run on, and tolerances that follow them.

Environment (all optional; see CONTRIBUTING.md, "Device-agnostic suite"):

``SENTINEL_TEST_DEVICE``
    ``cpu`` (default) or ``cuda`` (``cuda:N`` also works). On CUDA the in-process ComfyUI boots without ``--cpu``,
    servers start without it, and benchmarks run there. Tests build their inputs on the CPU with a seeded generator
    (values independent of the device) and move them with ``to_device``; they compare model outputs with ``tol()`` /
    ``approx()``, which loosen on CUDA (TF32, half precision) and stay strict on the CPU.
``SENTINEL_TEST_DTYPE``
    ``auto`` (default): the dtype ComfyUI's own model management picks for an SD1.5 UNet on that device - float32
    on the CPU, float16 on any recent NVIDIA GPU (what users run). ``fp32`` / ``fp16`` / ``bf16`` force it (the
    in-process ComfyUI gets ``--force-fp32`` / ``--fp16-unet`` / ``--bf16-unet``, and so do test servers).
``SENTINEL_TEST_TF32``
    ``1`` (default) keeps PyTorch's/ComfyUI's TF32 defaults (cuDNN convolutions in TF32 on Ampere and newer);
    ``0`` turns TF32 off for matmuls and convolutions, in process and in test servers (``NVIDIA_TF32_OVERRIDE=0``).

This module imports torch lazily: the pure test suite imports it without ComfyUI.
"""

from __future__ import annotations

import os

RAW = os.environ.get("SENTINEL_TEST_DEVICE", "cpu").strip().lower() or "cpu"
if not (RAW == "cpu" or RAW == "cuda" or RAW.startswith("cuda:")):
    raise RuntimeError(f"SENTINEL_TEST_DEVICE={RAW!r}: use 'cpu' or 'cuda' (or 'cuda:N')")
ON_CUDA = RAW.startswith("cuda")

_DTYPES = {"auto": None, "fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
           "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}
DTYPE_RAW = os.environ.get("SENTINEL_TEST_DTYPE", "auto").strip().lower() or "auto"
if DTYPE_RAW not in _DTYPES:
    raise RuntimeError(f"SENTINEL_TEST_DTYPE={DTYPE_RAW!r}: use auto, fp32, fp16 or bf16")
FORCED_DTYPE = _DTYPES[DTYPE_RAW]  # None = ComfyUI decides (auto)

TF32_RAW = os.environ.get("SENTINEL_TEST_TF32", "1").strip().lower()
if TF32_RAW not in ("0", "1", "true", "false", "on", "off", "yes", "no"):
    raise RuntimeError(f"SENTINEL_TEST_TF32={TF32_RAW!r}: use 1 (PyTorch defaults) or 0 (TF32 off)")
TF32_ALLOWED = TF32_RAW in ("1", "true", "on", "yes")


def device():
    """The torch.device the tests run models on (ComfyUI's torch device once booted)."""
    import torch

    return torch.device(RAW if RAW != "cuda" else "cuda:0")


def to_device(x, dtype=None):
    """Move a tensor (or a LATENT/CONDITIONING-like nested structure of tensors) to the test device.

    ``dtype`` (optional) casts floating-point tensors too, e.g. to feed a model's own ``get_dtype()`` directly.
    Build random inputs on the CPU with a seeded ``torch.Generator`` and move them here, so that the values do not
    depend on the device's random number generator.
    """
    import torch

    if isinstance(x, torch.Tensor):
        if dtype is not None and x.is_floating_point():
            return x.to(device=device(), dtype=dtype)
        return x.to(device())
    if isinstance(x, dict):
        return {k: to_device(v, dtype) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, dtype) for v in x)
    return x


def comfy_args() -> list[str]:
    """ComfyUI command-line flags that put a server on the test device with the test dtype."""
    flags = [] if ON_CUDA else ["--cpu"]
    if ON_CUDA and ":" in RAW:
        flags += ["--cuda-device", RAW.split(":", 1)[1]]
    flags += {None: [], "float32": ["--force-fp32"], "float16": ["--fp16-unet"],
              "bfloat16": ["--bf16-unet"]}[FORCED_DTYPE]
    return flags


def comfy_env() -> dict:
    """Extra environment for a test server (TF32 off when SENTINEL_TEST_TF32=0)."""
    return {} if TF32_ALLOWED else {"NVIDIA_TF32_OVERRIDE": "0"}


def apply_to_comfy_args(args) -> None:
    """Set ``comfy.cli_args.args`` for the test device and dtype (before comfy.model_management is imported)."""
    args.cpu = not ON_CUDA
    if ON_CUDA and ":" in RAW:  # ComfyUI uses torch.cuda.current_device()
        import torch

        torch.cuda.set_device(int(RAW.split(":", 1)[1]))
    if FORCED_DTYPE == "float32":
        args.force_fp32 = True
    elif FORCED_DTYPE == "float16":
        args.fp16_unet = True
    elif FORCED_DTYPE == "bfloat16":
        args.bf16_unet = True


def apply_tf32() -> None:
    """Apply SENTINEL_TEST_TF32 to this process (no-op with the default)."""
    if TF32_ALLOWED:
        return
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def tf32_state() -> dict:
    """Whether TF32 is allowed for matmuls / cuDNN convolutions in this process (and NVIDIA_TF32_OVERRIDE)."""
    import torch

    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "cudnn": bool(torch.backends.cudnn.allow_tf32),
            "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE")}


def tf32_enabled() -> bool:
    """True when float32 model outputs on the test device may carry TF32 error (~1e-3 relative)."""
    if not ON_CUDA or os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":
        return False
    s = tf32_state()
    return s["matmul"] or s["cudnn"]


def model_dtype():
    """The torch dtype the tiny SD1.5 test UNet runs in: SENTINEL_TEST_DTYPE, else ComfyUI's choice for the device.

    Needs ComfyUI booted (``_comfy.boot_comfy``) unless the dtype is forced or the device is the CPU.
    """
    import torch

    if FORCED_DTYPE is not None:
        return getattr(torch, FORCED_DTYPE)
    if not ON_CUDA:
        return torch.float32
    import comfy.model_management as mm
    import comfy.supported_models

    # same call as comfy.sd.load_state_dict_guess_config for an SD1.5 checkpoint (fp16 weights, 860M params)
    return mm.unet_dtype(model_params=859_520_964, supported_dtypes=list(comfy.supported_models.SD15.supported_inference_dtypes),
                         weight_dtype=torch.float16)


def dtype_kind(dtype) -> str:
    """The ``tol`` kind for a torch dtype."""
    name = str(dtype).replace("torch.", "")
    return name if name in ("float16", "bfloat16") else "float32"


def tol(kind: str = "float32", *, strict_rtol: float = 1e-5, strict_atol: float = 1e-6) -> dict:
    """``dict(rtol=..., atol=...)`` for torch.testing.assert_close / pytest.approx-style comparisons.

    ``kind``: "float32" (model outputs computed in float32), "float16"/"bfloat16" (half-precision models), "model"
    (whatever dtype the tiny test UNet runs in: ``model_dtype()``), or "exact_math" (pure float64/float32 arithmetic
    on the CPU side, never loosened). On the CPU the strict values are used for float32; on CUDA float32 becomes
    2e-3 relative with TF32 (1e-4 without), half precision 1e-2 (float16) / 2e-2 (bfloat16).
    """
    if kind == "model":
        kind = dtype_kind(model_dtype())
    if kind not in ("float32", "float16", "bfloat16", "exact_math"):
        raise ValueError(f"unknown tolerance kind {kind!r}")
    if kind in ("float16", "bfloat16"):
        return {"rtol": 1e-2, "atol": 1e-3} if kind == "float16" else {"rtol": 2e-2, "atol": 2e-3}
    if kind == "exact_math" or not ON_CUDA:
        return {"rtol": strict_rtol, "atol": strict_atol}
    return {"rtol": 2e-3, "atol": 1e-4} if tf32_enabled() else {"rtol": 1e-4, "atol": 1e-5}


def approx(expected, kind: str = "float32", **kw):
    """pytest.approx with ``tol(kind)``."""
    import pytest

    t = tol(kind, **kw)
    return pytest.approx(expected, rel=t["rtol"], abs=t["atol"])


def assert_close(actual, expected, kind: str = "float32", **kw) -> None:
    """torch.testing.assert_close with ``tol(kind)``; both sides are compared on the CPU in float32 or wider."""
    import torch

    def _cpu(t):
        t = torch.as_tensor(t).detach().cpu()
        return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t

    t = tol(kind, **kw)
    a, e = _cpu(actual), _cpu(expected)
    torch.testing.assert_close(a, e.to(a.dtype), rtol=t["rtol"], atol=t["atol"])


def describe() -> str:
    """One line for the pytest header: device, dtype, TF32, torch and CUDA versions."""
    import torch

    parts = [f"SENTINEL_TEST_DEVICE={RAW}", f"dtype={DTYPE_RAW}" + ("" if FORCED_DTYPE else
                                                                   (" (float32 on CPU)" if not ON_CUDA else
                                                                    " (ComfyUI's choice, float16 on recent GPUs)"))]
    parts.append(f"torch {torch.__version__}")
    parts.append(f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only torch build")
    if ON_CUDA:
        if torch.cuda.is_available():
            idx = device().index or 0
            parts.append(f"GPU {torch.cuda.get_device_name(idx)}")
        else:
            parts.append("NO CUDA DEVICE VISIBLE")
        s = tf32_state()
        parts.append(f"TF32 matmul={s['matmul']} cudnn={s['cudnn']} (SENTINEL_TEST_TF32={TF32_RAW}"
                     + (f", NVIDIA_TF32_OVERRIDE={s['NVIDIA_TF32_OVERRIDE']}" if s['NVIDIA_TF32_OVERRIDE'] else "")
                     + ")")
    else:
        parts.append("TF32 n/a on CPU")
    return "test device: " + ", ".join(parts)
