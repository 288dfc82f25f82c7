"""The device the integration tests run on, and tolerances that follow it.

``SENTINEL_TEST_DEVICE`` = ``cpu`` (default) or ``cuda`` (``cuda:N`` also works). On CUDA the in-process ComfyUI
boots without ``--cpu`` and servers start without it; tests build their tensors with ``device()`` (or move them
with ``to_device``) and compare with ``tol()``, which loosens on CUDA, where TF32 matmuls and convolutions (on by
default in ComfyUI for Ampere and newer) and other kernels give about 1e-3 relative error instead of float32's 1e-6.
"""

from __future__ import annotations

import os

RAW = os.environ.get("SENTINEL_TEST_DEVICE", "cpu").strip().lower() or "cpu"
if not (RAW == "cpu" or RAW == "cuda" or RAW.startswith("cuda:")):
    raise RuntimeError(f"SENTINEL_TEST_DEVICE={RAW!r}: use 'cpu' or 'cuda' (or 'cuda:N')")
ON_CUDA = RAW.startswith("cuda")


def device():
    """The torch.device the tests run models on (ComfyUI's torch device once booted)."""
    import torch

    return torch.device(RAW if RAW != "cuda" else "cuda:0")


def to_device(x):
    """Move a tensor (or a LATENT/CONDITIONING-like nested structure of tensors) to the test device."""
    import torch

    if isinstance(x, torch.Tensor):
        return x.to(device())
    if isinstance(x, dict):
        return {k: to_device(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v) for v in x)
    return x


def tf32_enabled() -> bool:
    import torch

    return bool(ON_CUDA and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32))


def tol(kind: str = "float32", *, strict_rtol: float = 1e-5, strict_atol: float = 1e-6) -> dict:
    """``dict(rtol=..., atol=...)`` for torch.testing.assert_close / pytest.approx-style comparisons.

    ``kind``: "float32" (model outputs computed in float32), "float16"/"bfloat16" (half-precision models), or
    "exact_math" (pure float64/float32 arithmetic on the CPU side, never loosened). On the CPU the strict values
    are used; on CUDA float32 becomes 2e-3 relative (TF32), half precision 1e-2 / 2e-2.
    """
    if kind == "exact_math" or not ON_CUDA:
        if kind in ("float16", "bfloat16"):
            return {"rtol": 1e-2 if kind == "float16" else 2e-2, "atol": 1e-3}
        return {"rtol": strict_rtol, "atol": strict_atol}
    if kind == "float32":
        return {"rtol": 2e-3, "atol": 1e-4} if tf32_enabled() else {"rtol": 1e-4, "atol": 1e-5}
    if kind == "float16":
        return {"rtol": 1e-2, "atol": 1e-3}
    if kind == "bfloat16":
        return {"rtol": 2e-2, "atol": 2e-3}
    raise ValueError(f"unknown tolerance kind {kind!r}")


def approx(expected, kind: str = "float32", **kw):
    """pytest.approx with ``tol(kind)``."""
    import pytest

    t = tol(kind, **kw)
    return pytest.approx(expected, rel=t["rtol"], abs=t["atol"])
