"""Bookkeeping of one sampling run: which model evaluation produced which callback x0, and the copies to keep.

Pure torch (no ComfyUI import). The ComfyUI glue (capture.py) feeds it three events:

- ``on_cfg(cond_x0, uncond_x0)`` from a post-CFG function (only when cond/uncond capture is on),
- ``on_eval(x, sigma, x0)`` after every model evaluation (a PREDICT_NOISE wrapper),
- ``on_callback(i, x0, x)`` from the sampler's step callback,

and ``finish(samples)`` when the sampler returns. After the sampler's own callback has run, the glue calls
``after_step()``, which hands each recorded step to an optional ``step_listener(recorder, step_index)``; the
listener may look at the steps so far (``snapshot()``) and raise :class:`StopSampling` to end the run early (the
glue then returns the latest x0 as the result and records ``meta["stopped_early_at"]``). Several model evaluations can happen between two callbacks
(heun, dpm_2, dpmpp_2s/sde evaluate a second stage after calling back; dpm_fast/dpm_adaptive evaluate several
stages per step). The evaluation whose prediction the callback reports is found by identity (the callback's x0
is the very tensor the model returned: euler, heun, dpmpp_*, uni_pc, ...), else by value (dpm_fast and
dpm_adaptive rebuild x0 from eps, so it equals the stage-0 output up to rounding), else the most recent one
(inpainting blends x0 with the mask; flagged). x and sigma are then taken from that evaluation, i.e. the latent
the model really saw, not the callback's ``x`` (which uni_pc and dpm_adaptive pass *after* the update) nor
``sigmas[i]`` (whose ``i`` counts solver steps for dpm_fast/dpm_adaptive).

Hot path: per stored step, one copy per kept tensor into a host buffer, nothing else. On CUDA the copies are
asynchronous (``non_blocking`` into page-locked buffers, ordered on the sampler's stream after the kernels that
produce the tensors), so the host never waits for the device while sampling; :meth:`RunRecorder.sync` waits once,
when the run ends (``finish``) or before anything reads the data (``snapshot`` for step listeners). Sigmas stay
tensors until then too (``float()`` of a device tensor would synchronise every step). On the CPU the same buffers
are filled by ordinary copies. Memory for the buffers is estimated up front (:func:`estimate_capture_bytes`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .trajectory import Trajectory

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Capture memory bounds (host RAM for the stored steps of one run). Overridable for machines with more memory.
WARN_BYTES = int(float(os.environ.get("SENTINEL_CAPTURE_WARN_MB", 2048)) * 2**20)
MAX_BYTES = int(float(os.environ.get("SENTINEL_CAPTURE_MAX_MB", 16384)) * 2**20)


class StopSampling(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a step listener to stop the current sampling run after the step it was told about.

    Internal to the capture: the SAMPLER_SAMPLE wrapper catches it and returns ``latent`` (default: the latest
    x0), so ComfyUI's sampling ends normally and runs its cleanup. Never escapes a captured sampler call.
    """

    __module__ = "sentinel"

    def __init__(self, reason: str = "", latent: torch.Tensor | None = None):
        super().__init__(reason or "stopped by a step listener")
        self.reason = reason
        self.latent = latent


class CaptureTooLarge(ValueError):
    """The capture would store more than the memory bound; the message says what to change."""

    __module__ = "sentinel"


@dataclass
class CaptureOptions:
    """What to record. ``every_k`` keeps steps 0, k, 2k, ... and always the last one."""

    every_k: int = 1
    storage: str = "float32"
    keep_x: bool = True
    keep_cond_uncond: bool = False

    def __post_init__(self):
        if int(self.every_k) < 1:
            raise ValueError(f"every_k must be >= 1, got {self.every_k}")
        if self.storage not in STORAGE_DTYPES:
            raise ValueError(f"storage must be one of {sorted(STORAGE_DTYPES)}, got {self.storage!r}")
        self.every_k = int(self.every_k)

    @property
    def dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self.storage]

    def tensors_per_step(self) -> int:
        return 1 + int(bool(self.keep_x)) + 2 * int(bool(self.keep_cond_uncond))

    def recorded_steps(self, steps: int) -> int:
        """Steps stored of a ``steps``-step run: 0, k, 2k, ... and the last."""
        steps = max(0, int(steps))
        if steps == 0:
            return 0
        return (steps - 1) // self.every_k + 1 + (1 if (steps - 1) % self.every_k else 0)


# --------------------------------------------------------------------------------------------------- memory
def estimate_capture_bytes(options: CaptureOptions, steps: int, batch: int, latent_shape: tuple[int, ...]) -> int:
    """Host memory a capture will hold: recorded steps x batch x latent size x tensors per step x storage bytes,
    plus the float32 noise frame and returned latent per item."""
    per_latent = int(math.prod(int(d) for d in latent_shape)) * int(batch)
    elem = torch.empty((), dtype=options.dtype).element_size()
    return options.recorded_steps(steps) * per_latent * options.tensors_per_step() * elem + 2 * per_latent * 4


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def check_capture_memory(options: CaptureOptions, steps: int, batch: int, latent_shape: tuple[int, ...],
                         warn_bytes: int | None = None, max_bytes: int | None = None) -> str:
    """Raise :class:`CaptureTooLarge` past ``max_bytes``; return a warning text past ``warn_bytes`` (else "").
    Both messages say how much each setting would save."""
    warn_bytes = WARN_BYTES if warn_bytes is None else int(warn_bytes)
    max_bytes = MAX_BYTES if max_bytes is None else int(max_bytes)
    need = estimate_capture_bytes(options, steps, batch, latent_shape)
    if need <= warn_bytes:
        return ""
    shape = "x".join(str(int(d)) for d in latent_shape)
    what = (f"capturing this run stores about {_gib(need)} in RAM ({options.recorded_steps(steps)} recorded steps x "
            f"{batch} item(s) x latent {shape} x {options.tensors_per_step()} tensor(s) per step x "
            f"{torch.empty((), dtype=options.dtype).element_size()} bytes)")
    fixes = []
    k = max(2, options.every_k * 2)
    alt = CaptureOptions(k, options.storage, options.keep_x, options.keep_cond_uncond)
    fixes.append(f"every_k_steps {k} ({_gib(estimate_capture_bytes(alt, steps, batch, latent_shape))})")
    if options.storage == "float32":
        alt = CaptureOptions(options.every_k, "float16", options.keep_x, options.keep_cond_uncond)
        fixes.append(f"storage float16 ({_gib(estimate_capture_bytes(alt, steps, batch, latent_shape))})")
    if options.keep_x:
        alt = CaptureOptions(options.every_k, options.storage, False, options.keep_cond_uncond)
        fixes.append(f"keep_x off ({_gib(estimate_capture_bytes(alt, steps, batch, latent_shape))})")
    if options.keep_cond_uncond:
        alt = CaptureOptions(options.every_k, options.storage, options.keep_x, False)
        fixes.append(f"keep_cond_uncond off ({_gib(estimate_capture_bytes(alt, steps, batch, latent_shape))})")
    fixes.append("fewer steps or a smaller batch")
    if need > max_bytes:
        raise CaptureTooLarge(f"{what}, more than the limit of {_gib(max_bytes)} (SENTINEL_CAPTURE_MAX_MB). Change "
                              f"the capture settings: {'; '.join(fixes)}.")
    return f"{what}. To use less: {'; '.join(fixes)}."


# --------------------------------------------------------------------------------------------------- host copies
class HostCopier:
    """Copies device tensors into host buffers without making the host wait (CUDA), or synchronously (CPU).

    On CUDA, destination buffers are page-locked and copies are ``non_blocking`` on the source's current stream,
    after which an event is recorded; :meth:`sync` waits for the latest event. Page-locked buffers come from
    PyTorch's caching host allocator, so a run's buffers are reused by the next run once freed.
    """

    def __init__(self, use_async: bool | None = None):
        self.use_async = use_async  # None: decide per tensor (async for CUDA sources)
        self._event = None

    def is_async(self, t: torch.Tensor) -> bool:
        if self.use_async is not None:
            return bool(self.use_async) and t.is_cuda
        return bool(t.is_cuda)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, like: torch.Tensor) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, pin_memory=self.is_async(like))

    def copy_into(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        src = src.detach()
        if self.is_async(src):
            if src.dtype != dst.dtype:
                src = src.to(dst.dtype)  # convert on the device, then one small transfer
            dst.copy_(src, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(torch.cuda.current_stream(src.device))
            self._event = ev
        else:
            dst.copy_(src)

    def copy(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        dst = self.empty(tuple(t.shape), dtype, t)
        self.copy_into(dst, t)
        return dst

    def sync(self) -> None:
        """Wait for every copy made so far (a no-op when none was asynchronous)."""
        ev, self._event = self._event, None
        if ev is not None:
            ev.synchronize()


class StepBuffer:
    """Host storage of one per-step tensor of a run, time-major ([T, B, *S]) so that each step is one contiguous
    block. Grows by chunks of ``chunk`` steps (adaptive samplers may take more steps than planned)."""

    def __init__(self, copier: HostCopier, dtype: torch.dtype, chunk: int):
        self.copier = copier
        self.dtype = dtype
        self.chunk = max(1, int(chunk))
        self._chunks: list[torch.Tensor] = []
        self.n = 0

    def append(self, t: torch.Tensor) -> None:
        cap = sum(c.shape[0] for c in self._chunks)
        if self.n >= cap:
            self._chunks.append(self.copier.empty((self.chunk, *t.shape), self.dtype, t))
            cap += self.chunk
        row = self.n - (cap - self._chunks[-1].shape[0])
        self.copier.copy_into(self._chunks[-1][row], t)
        self.n += 1

    def batch_major(self, upto: int | None = None) -> torch.Tensor:
        """[B, T, *S] (a new pageable tensor; call after the copier's sync)."""
        n = self.n if upto is None else min(self.n, int(upto))
        if not self._chunks:
            raise ValueError("no step stored")
        full = self._chunks[0] if len(self._chunks) == 1 else torch.cat(self._chunks, dim=0)
        return full[:n].transpose(0, 1).contiguous()


@dataclass
class _Eval:
    x: torch.Tensor
    sigma: Any
    x0: torch.Tensor
    cond: torch.Tensor | None
    uncond: torch.Tensor | None
    has_cu: bool


@dataclass
class _Step:
    index: int
    sampler_i: int
    sigma: Any
    x0: torch.Tensor
    x: torch.Tensor | None
    cond: torch.Tensor | None
    uncond: torch.Tensor | None
    has_cu: bool
    evals: int


class RunRecorder:
    """Records one sampler run; see the module docstring for the event protocol."""

    def __init__(
        self,
        options: CaptureOptions,
        sigmas: torch.Tensor,
        meta: dict[str, Any] | None = None,
        input_scaling: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        step_listener: Callable[[RunRecorder, int], None] | None = None,
        copier: HostCopier | None = None,
    ):
        self.options = options
        self.copier = copier or HostCopier()
        sig = sigmas.detach().reshape(-1)
        self._schedule_host = self.copier.copy(sig, torch.float32)  # no sync: read after sync()
        self._schedule: list[float] | None = None
        self.meta = dict(meta or {})
        self.input_scaling = input_scaling
        self.n_evals = 0
        self.n_callbacks = 0
        self.flags: set[str] = set()
        self._cu: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
        self._evals: list[_Eval] = []
        self._pending: _Step | None = None
        self._chunk = options.recorded_steps(max(1, sig.shape[0] - 1)) + 1
        self._buffers: dict[str, StepBuffer] = {}
        self._incomplete: set[str] = set()  # per-step tensors missing at some stored step (cond/uncond)
        self._steps: list[int] = []       # callback index of every stored step
        self._evals_at: list[int] = []    # model evaluations so far at every stored step
        self._has_cu: list[bool] = []
        self._sigma_from_schedule: dict[int, int] = {}  # stored position -> schedule index (no evaluation)
        self._noise_frame: torch.Tensor | None = None
        self.step_listener = step_listener
        self._notify: int | None = None
        self._latest_x0: torch.Tensor | None = None
        self.stopped_at: int | None = None
        self.stop_reason: str = ""

    # ------------------------------------------------------------------ events
    def on_cfg(self, cond_x0: torch.Tensor | None, uncond_x0: torch.Tensor | None) -> None:
        self._cu = (cond_x0, uncond_x0)

    def on_eval(self, x: torch.Tensor, sigma: Any, x0: torch.Tensor) -> None:
        self.n_evals += 1
        cu, self._cu = self._cu, None
        self._evals.append(_Eval(x, sigma, x0, cu[0] if cu else None, cu[1] if cu else None, cu is not None))

    def on_callback(self, i: int, x0: torch.Tensor, x: torch.Tensor) -> None:
        ev = self._match(x0)
        self._evals = []
        index = self.n_callbacks
        self.n_callbacks += 1
        if ev is not None:
            x_in, sigma, cond, uncond, has_cu = ev.x, ev.sigma, ev.cond, ev.uncond, ev.has_cu
        else:  # a callback with no model evaluation since the previous one: fall back to what it reports
            self.flags.add("callback_without_model_evaluation")
            x_in, cond, uncond, has_cu = x, None, None, False
            sigma = ("schedule", int(i))
        if self._noise_frame is None:
            nf = x_in
            if self.input_scaling is not None and isinstance(sigma, torch.Tensor):
                nf = self.input_scaling(sigma.reshape(-1)[:1].to(x_in.device), x_in)
            elif self.input_scaling is not None and isinstance(sigma, (int, float)):
                nf = self.input_scaling(torch.tensor([float(sigma)], device=x_in.device, dtype=x_in.dtype), x_in)
            self._noise_frame = self.copier.copy(nf, torch.float32)  # one frame per item: keep it exact
        step = _Step(index, int(i), sigma, x0, x_in, cond, uncond, has_cu, self.n_evals)
        self._latest_x0 = x0
        if index % self.options.every_k == 0:
            self._store(step)
            self._pending = None
            self._notify = index
        else:
            self._pending = step  # references only; copied at finish() if it turns out to be the last step

    def after_step(self) -> None:
        """Hand the step recorded by the last callback to the step listener (which may raise StopSampling)."""
        idx, self._notify = self._notify, None
        if idx is not None and self.step_listener is not None:
            self.step_listener(self, idx)

    def mark_stopped(self, reason: str = "") -> None:
        """Record that the run was stopped early after the latest callback."""
        self.stopped_at = self.n_callbacks - 1
        self.stop_reason = reason

    @property
    def latest_x0(self) -> torch.Tensor | None:
        """The x0 the sampler reported last (live tensor, model space): what a stopped run returns."""
        return self._latest_x0

    @property
    def schedule(self) -> list[float]:
        """The run's sigma schedule as floats (waits for the pending copies once)."""
        if self._schedule is None:
            self.sync()
            self._schedule = [float(s) for s in self._schedule_host.tolist()]
        return self._schedule

    def sync(self) -> None:
        """Wait until every copy made so far has landed in host memory (one device synchronisation)."""
        self.copier.sync()

    def snapshot(self) -> Trajectory:
        """The steps recorded so far as a Trajectory (no ``final``). For step listeners; synchronises once."""
        self.sync()
        return self._assemble(len(self._steps), None, self.meta_now())

    def _match(self, x0: torch.Tensor) -> _Eval | None:
        if len(self._evals) <= 1:
            return self._evals[0] if self._evals else None
        for ev in reversed(self._evals):
            if ev.x0 is x0:
                return ev
        for ev in self._evals:
            if ev.x0.shape == x0.shape and torch.allclose(ev.x0, x0, rtol=1e-4, atol=1e-5):
                return ev
        if not self.meta.get("inpaint"):
            self.flags.add("x0_matched_to_last_evaluation")
        return self._evals[-1]

    # ------------------------------------------------------------------ storing
    def _buffer(self, name: str, like: torch.Tensor) -> StepBuffer:
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = StepBuffer(self.copier, self.options.dtype, self._chunk)
            # steps stored before this tensor first appeared (cond/uncond missing at first): keep positions aligned
            for _ in range(len(self._steps)):
                buf.append(torch.zeros_like(like))
                self._incomplete.add(name)
        return buf

    def _store(self, s: _Step) -> None:
        pos = len(self._steps)
        self._buffer("x0", s.x0).append(s.x0)
        if self.options.keep_x and s.x is not None:
            self._buffer("x", s.x).append(s.x)
        if self.options.keep_cond_uncond:
            for name, t in (("x0_cond", s.cond), ("x0_uncond", s.uncond)):
                if t is not None:
                    self._buffer(name, t).append(t)
                else:
                    self._incomplete.add(name)
                    if name in self._buffers:
                        self._buffers[name].append(torch.zeros_like(s.x0))
        if isinstance(s.sigma, tuple):  # no model evaluation: the schedule's sigma, resolved after sync
            self._sigma_from_schedule[pos] = s.sigma[1]
            sig = torch.zeros(1, dtype=torch.float32)
        elif isinstance(s.sigma, torch.Tensor):
            sig = s.sigma.detach().reshape(-1)[:1]
        else:
            sig = torch.tensor([_as_float(s.sigma)], dtype=torch.float32)
        self._buffers.setdefault("sigmas", StepBuffer(self.copier, torch.float32, self._chunk)).append(sig)
        self._steps.append(s.index)
        self._evals_at.append(s.evals)
        self._has_cu.append(bool(s.has_cu))

    # ------------------------------------------------------------------ results
    def finish(self, samples: torch.Tensor | None = None) -> Trajectory:
        if self._pending is not None:
            self._store(self._pending)
            self._pending = None
        final = self.copier.copy(samples, torch.float32) if samples is not None else None
        self.sync()  # the one wait of the run
        final = _pageable(final)
        self._noise_frame = _pageable(self._noise_frame)
        sched_steps = len(self.schedule) - 1
        if self.n_callbacks and self.n_evals > self.n_callbacks:
            self.flags.add("several_model_evaluations_per_step")
        if self.n_callbacks and self.n_callbacks != sched_steps and self.stopped_at is None:
            self.flags.add("steps_do_not_follow_schedule")
        meta = self.meta_now()
        if self.stopped_at is not None:
            meta["stopped_early_at"] = self.stopped_at
            meta["stopped_early_reason"] = self.stop_reason
            meta["flags"] = sorted(set(meta["flags"]) | {"stopped_early"})
        return self._assemble(len(self._steps), final, meta, samples_shape=None if samples is None else samples.shape)

    def meta_now(self) -> dict[str, Any]:
        """The run's metadata with the counters as they are now."""
        return {
            **self.meta,
            "recorded_steps": len(self._steps),
            "callbacks": self.n_callbacks,
            "model_evals_total": self.n_evals,
            "every_k_steps": self.options.every_k,
            "storage_dtype": self.options.storage,
            "has_x": bool(self.options.keep_x),
            "schedule_sigmas": self.schedule,
            "flags": sorted(self.flags),
        }

    def _assemble(self, n: int, final: torch.Tensor | None, meta: dict[str, Any],
                  samples_shape: tuple[int, ...] | None = None) -> Trajectory:
        meta = dict(meta)
        if n == 0:
            shape = tuple(samples_shape) if samples_shape is not None else (0, 0)
            empty = torch.zeros((shape[0], 0, *shape[1:]), dtype=self.options.dtype)
            return Trajectory(x0=empty, sigmas=torch.zeros(0), meta=meta, final=final)
        b = self._buffers
        x0 = b["x0"].batch_major(n)
        x = b["x"].batch_major(n) if (self.options.keep_x and "x" in b and b["x"].n >= n) else None
        cond = uncond = None
        if self.options.keep_cond_uncond:
            ok = all(self._has_cu[:n])
            for name in ("x0_cond", "x0_uncond"):
                if ok and name in b and b[name].n >= n and name not in self._incomplete:
                    if name == "x0_cond":
                        cond = b[name].batch_major(n)
                    else:
                        uncond = b[name].batch_major(n)
                else:
                    flag = "cond_x0_unavailable" if name == "x0_cond" else "uncond_x0_unavailable"
                    meta["flags"] = sorted(set(meta["flags"]) | {flag})
        meta["has_cond_uncond"] = cond is not None and uncond is not None
        sigmas = b["sigmas"].batch_major(n).reshape(-1).clone()
        sched = self.schedule if self._sigma_from_schedule else []
        for pos, i in self._sigma_from_schedule.items():
            if pos < n:
                sigmas[pos] = sched[i] if 0 <= i < len(sched) else float("nan")
        return Trajectory(
            x0=x0,
            x=x,
            x0_cond=cond,
            x0_uncond=uncond,
            sigmas=sigmas,
            steps=torch.tensor(self._steps[:n], dtype=torch.long),
            model_evals=torch.tensor(self._evals_at[:n], dtype=torch.long),
            noise_frame=self._noise_frame,
            final=final,
            meta=meta,
        )


def _pageable(t: torch.Tensor | None) -> torch.Tensor | None:
    """A page-locked host tensor as an ordinary one (its pinned block goes back to the caching allocator)."""
    if t is not None and t.is_pinned():
        return t.clone()
    return t


def _as_float(sigma: Any) -> float:
    if isinstance(sigma, torch.Tensor):
        return float(sigma.reshape(-1)[0])
    try:
        return float(sigma)
    except (TypeError, ValueError):
        return math.nan
