"""The TRAJECTORY container: per batch item and per recorded sampler step, sigma, x and x0.

Pure torch + safetensors (no ComfyUI import), so it can be saved, loaded and tested anywhere.

Layout (B = batch items, T = recorded steps, ``*S`` = latent shape without the batch dim, e.g. C,H,W):

- ``x0``        [B, T, *S]  the CFG-combined denoised prediction the sampler's callback saw (model latent space)
- ``x``         [B, T, *S]  the latent the model was evaluated on for that prediction (optional)
- ``x0_cond``   [B, T, *S]  the conditional denoised prediction (optional)
- ``x0_uncond`` [B, T, *S]  the unconditional denoised prediction (optional; absent when cfg == 1 skips it)
- ``sigmas``    [T]         noise level of each recorded step
- ``steps``     [T]         index of the recorded step in the callback sequence (0 = first callback)
- ``model_evals`` [T]       model evaluations made up to and including that step (sampler cost so far)
- ``noise_frame`` [B, *S]   the starting latent as the network saw it (unit variance noise for txt2img)
- ``final``     [B, *S]     the sampler's returned latent, model space (optional)

Latents are stored in the model's internal latent space (``latent_format.process_in`` applied, e.g. x 0.18215
for SD1.5), exactly as ComfyUI's sampler callback delivers them. ``meta["latent_scale_factor"]`` and
``meta["latent_shift_factor"]`` undo that; ComfyUI glue uses ``meta["latent_format"]`` to decode with a VAE.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ...classifiers.safefile import HeaderError, check_entries, loads_bounded, read_header

FORMAT_NAME = "diffusion-sentinel/trajectory"
FORMAT_VERSION = 1
_META_KEY = "diffusion_sentinel"

_PER_STEP = ("x0", "x", "x0_cond", "x0_uncond")
_PER_ITEM = ("noise_frame", "final")
_SCHEDULE = ("sigmas", "steps", "model_evals")


class TrajectoryError(ValueError):
    """A trajectory is malformed, or a file is not a trajectory. The message says what to do."""

    __module__ = "sentinel"  # ComfyUI titles errors with module + name: keep it short


_LATENT_FORMAT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def latent_scaling(meta: dict[str, Any]) -> tuple[float, float]:
    """(scale, shift) of a trajectory's latent space from its metadata, checked: a tampered or damaged value
    (not a number, 0, negative, NaN/inf) is a TrajectoryError, never a silent division by zero."""
    out = []
    for key, default in (("latent_scale_factor", 1.0), ("latent_shift_factor", 0.0)):
        v = meta.get(key, default)
        if v is None:
            v = default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TrajectoryError(f"the trajectory's metadata has {key} = {str(v)[:40]!r}, not a number (the file "
                                  "was damaged or edited): record the run again")
        v = float(v)
        if not math.isfinite(v) or (key == "latent_scale_factor" and v <= 0):
            raise TrajectoryError(f"the trajectory's metadata has {key} = {v!r}, which cannot be a latent scale "
                                  "(the file was damaged or edited): record the run again")
        out.append(v)
    return out[0], out[1]


def check_meta(meta: Any, where: str = "the trajectory") -> dict[str, Any]:
    """The metadata a trajectory needs to be decoded, type-checked (a dict; latent_format a class name; scale and
    shift numbers with scale > 0). Returns the dict."""
    if not isinstance(meta, dict):
        raise TrajectoryError(f"{where}: the metadata must be a JSON object, got {type(meta).__name__}")
    fmt = meta.get("latent_format")
    if fmt is not None and not (isinstance(fmt, str) and _LATENT_FORMAT_NAME.match(fmt)):
        raise TrajectoryError(f"{where}: latent_format = {str(fmt)[:40]!r} is not a latent format name (the file "
                              "was damaged or edited): record the run again")
    try:
        latent_scaling(meta)
    except TrajectoryError as e:
        raise TrajectoryError(f"{where}: {e}") from None
    return meta


@dataclass
class Trajectory:
    """Per-step sampler record for a batch. See the module docstring for the tensor layout."""

    x0: torch.Tensor
    sigmas: torch.Tensor
    steps: torch.Tensor | None = None
    x: torch.Tensor | None = None
    x0_cond: torch.Tensor | None = None
    x0_uncond: torch.Tensor | None = None
    noise_frame: torch.Tensor | None = None
    final: torch.Tensor | None = None
    model_evals: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.steps is None and isinstance(self.sigmas, torch.Tensor):
            self.steps = torch.arange(self.sigmas.shape[0], dtype=torch.long)
        self.validate()

    # ------------------------------------------------------------------ shape
    @property
    def batch_size(self) -> int:
        return int(self.x0.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.x0.shape[1])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.x0.shape[2:])

    def validate(self) -> None:
        """Check shapes and dtypes; raise TrajectoryError with a message that says what is wrong."""
        if not isinstance(self.x0, torch.Tensor):
            raise TrajectoryError("trajectory x0 must be a tensor [batch, steps, *latent]")
        if self.x0.ndim < 3:
            raise TrajectoryError(
                f"trajectory x0 must be [batch, steps, *latent] (at least 3 dims); got shape {tuple(self.x0.shape)}"
            )
        if not self.x0.is_floating_point():
            raise TrajectoryError(f"trajectory x0 must be floating point, got {self.x0.dtype}")
        b, t = self.x0.shape[:2]
        if not isinstance(self.sigmas, torch.Tensor) or self.sigmas.ndim != 1 or self.sigmas.shape[0] != t:
            shape = tuple(self.sigmas.shape) if isinstance(self.sigmas, torch.Tensor) else type(self.sigmas).__name__
            raise TrajectoryError(f"trajectory has {t} recorded steps in x0 but sigmas has shape {shape}")
        for name in ("steps", "model_evals"):
            v = getattr(self, name)
            if v is not None and (v.ndim != 1 or v.shape[0] != t):
                raise TrajectoryError(f"trajectory {name} must have one entry per recorded step ({t}), got {tuple(v.shape)}")
        for name in _PER_STEP[1:]:
            v = getattr(self, name)
            if v is not None and tuple(v.shape) != tuple(self.x0.shape):
                raise TrajectoryError(
                    f"trajectory {name} has shape {tuple(v.shape)} but x0 has {tuple(self.x0.shape)}: "
                    "batch sizes or step counts do not match"
                )
        for name in _PER_ITEM:
            v = getattr(self, name)
            if v is not None and (tuple(v.shape) != (b, *self.x0.shape[2:])):
                raise TrajectoryError(
                    f"trajectory {name} has shape {tuple(v.shape)}, expected {(b, *self.x0.shape[2:])} "
                    "(one latent per batch item): batch sizes do not match"
                )

    def require_steps(self, minimum: int = 2) -> None:
        if self.num_steps < minimum:
            raise TrajectoryError(
                f"this trajectory recorded {self.num_steps} step(s); at least {minimum} are needed. "
                "Sample with more steps, or lower 'every_k_steps' on the capture node."
            )

    # ------------------------------------------------------------------ views
    def select(self, indices: Sequence[int]) -> Trajectory:
        """A trajectory holding only the given batch items, in that order (for filtering batches)."""
        idx = [int(i) for i in indices]
        for i in idx:
            if not -self.batch_size <= i < self.batch_size:
                raise TrajectoryError(f"batch index {i} out of range for a trajectory of {self.batch_size} item(s)")
        it = torch.tensor(idx, dtype=torch.long)
        kw = {n: (getattr(self, n).index_select(0, it) if getattr(self, n) is not None else None)
              for n in _PER_STEP + _PER_ITEM}
        meta = dict(self.meta)
        if "seeds" in meta and isinstance(meta["seeds"], list) and len(meta["seeds"]) == self.batch_size:
            meta["seeds"] = [meta["seeds"][i] for i in idx]
        return replace(self, meta=meta, **kw)

    def item(self, index: int) -> Trajectory:
        return self.select([index])

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.tensors().values())

    def bytes_per_step_item(self) -> float:
        per_step = sum(getattr(self, n).numel() * getattr(self, n).element_size()
                       for n in _PER_STEP if getattr(self, n) is not None)
        return per_step / max(1, self.batch_size * self.num_steps)

    def latent_to_vae_space(self, latent: torch.Tensor) -> torch.Tensor:
        """Undo the model's latent scaling (``process_out`` for scale/shift latent formats)."""
        scale, shift = latent_scaling(self.meta)
        return latent / scale + shift

    # --------------------------------------------------------------- storage
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for n in _PER_STEP + _PER_ITEM + _SCHEDULE:
            v = getattr(self, n)
            if v is not None:
                out[n] = v
        return out

    def to_dtype(self, dtype: torch.dtype) -> Trajectory:
        """Latent tensors cast to dtype (e.g. float16 to halve storage); schedule tensors unchanged."""
        kw = {n: (getattr(self, n).to(dtype) if getattr(self, n) is not None else None) for n in _PER_STEP + _PER_ITEM}
        return replace(self, meta={**self.meta, "storage_dtype": str(dtype).replace("torch.", "")}, **kw)

    def save(self, path: str | os.PathLike, extra_meta: dict[str, Any] | None = None) -> str:
        """Write safetensors with the metadata as JSON. Returns the path written."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.tensors().items()}
        meta = {**_jsonable(self.meta), **_jsonable(extra_meta or {})}
        header = {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            _META_KEY: json.dumps(meta, sort_keys=True),
        }
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                           f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:12]}.partial")
        try:
            save_file(tensors, tmp, metadata=header)
            os.replace(tmp, path)  # never leave a half-written file under the real name
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trajectory:
        """Read a trajectory written by :meth:`save`. Never unpickles; refuses foreign, corrupt or tampered files.

        The header is checked first (size, format marker, version, metadata JSON, tensor names and dtypes), so a
        wrong file costs a few bytes of reading; only then are the tensors read.
        """
        path = os.fspath(path)
        base = os.path.basename(path)
        if not os.path.isfile(path):
            raise TrajectoryError(f"trajectory file not found: {path}")
        header, entries = _checked_header(path)
        if header.get("format") != FORMAT_NAME:
            raise TrajectoryError(
                f"{base} is a safetensors file but not a Diffusion Sentinel trajectory "
                f"(format={str(header.get('format'))[:60]!r}). Save trajectories with the 'Save Trajectory' node."
            )
        try:
            version = int(header.get("format_version", "0") or 0)
        except (TypeError, ValueError):
            raise TrajectoryError(f"{base}: invalid format_version {str(header.get('format_version'))[:40]!r} (the "
                                  "file was damaged or edited); save the trajectory again") from None
        if version < 1:
            raise TrajectoryError(f"{base}: invalid format_version {version}; save the trajectory again")
        if version > FORMAT_VERSION:
            raise TrajectoryError(
                f"{base} was written by a newer Diffusion Sentinel (format {version}); update the pack"
            )
        try:
            meta = loads_bounded(header.get(_META_KEY, "{}"), "its trajectory metadata")
        except HeaderError as e:
            raise TrajectoryError(f"{base}: {e} (the file was damaged or edited); save the trajectory again") from e
        check_meta(meta, base)
        tensors = _read_tensors(path, entries)
        return cls(meta=meta, **tensors)


_ALL_TENSORS = frozenset(_PER_STEP + _PER_ITEM + _SCHEDULE)


def _checked_header(path: str) -> tuple[dict[str, str], dict[str, dict]]:
    base = os.path.basename(path)
    try:
        header, entries = read_header(path, max_tensors=len(_ALL_TENSORS))
        check_entries(entries, _ALL_TENSORS, {"x0", "sigmas"})
    except HeaderError as e:
        raise TrajectoryError(
            f"{base} is not a Diffusion Sentinel trajectory: {e}. Pickled files (.pt/.ckpt/.pkl) are never loaded; "
            "save trajectories with the 'Save Trajectory' node.") from e
    return header, entries


def _read_tensors(path: str, names) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in names}
    except Exception as e:  # safetensors raises its own error types for corrupt data
        raise TrajectoryError(
            f"{os.path.basename(path)} is not a readable safetensors file ({type(e).__name__}: {e}). "
            "It may be truncated or damaged; save the trajectory again."
        ) from e


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """Metadata made JSON-safe (floats that are not finite become strings, tensors become lists)."""
    def conv(v):
        if isinstance(v, torch.Tensor):
            return conv(v.tolist())
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, (str, int, float, bool)) or v is None:
            return v
        return str(v)
    return conv(d)
