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

Hot path: per step it keeps references until it decides to store, then makes one detached CPU copy per stored
tensor. Nothing else is computed per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .trajectory import Trajectory

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class StopSampling(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a step listener to stop the current sampling run after the step it was told about.

    Internal to the capture: the SAMPLER_SAMPLE wrapper catches it and returns ``latent`` (default: the latest
    x0), so ComfyUI's sampling ends normally and runs its cleanup. Never escapes a captured sampler call.
    """

    def __init__(self, reason: str = "", latent: torch.Tensor | None = None):
        super().__init__(reason or "stopped by a step listener")
        self.reason = reason
        self.latent = latent


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
    ):
        self.options = options
        self.schedule = [float(s) for s in sigmas.detach().float().cpu().reshape(-1)]
        self.meta = dict(meta or {})
        self.input_scaling = input_scaling
        self.n_evals = 0
        self.n_callbacks = 0
        self.flags: set[str] = set()
        self._cu: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
        self._evals: list[_Eval] = []
        self._pending: _Step | None = None
        self._stored: list[_Step] = []
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
            sigma = self.schedule[i] if 0 <= i < len(self.schedule) else float("nan")
        if self._noise_frame is None:
            nf = x_in
            if self.input_scaling is not None and isinstance(sigma, torch.Tensor):
                nf = self.input_scaling(sigma.reshape(-1)[:1].to(x_in.device), x_in)
            elif self.input_scaling is not None:
                nf = self.input_scaling(torch.tensor([float(sigma)], device=x_in.device, dtype=x_in.dtype), x_in)
            self._noise_frame = self._copy(nf, torch.float32)  # one frame per item: keep it exact
        step = _Step(index, int(i), sigma, x0, x_in, cond, uncond, has_cu, self.n_evals)
        self._latest_x0 = x0
        if index % self.options.every_k == 0:
            self._stored.append(self._materialise(step))
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

    def snapshot(self) -> Trajectory:
        """The steps recorded so far as a Trajectory (copies already made; no ``final``). For step listeners."""
        return self._assemble(list(self._stored), None, self.meta_now())

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

    # ------------------------------------------------------------------ results
    def finish(self, samples: torch.Tensor | None = None) -> Trajectory:
        if self._pending is not None:
            self._stored.append(self._materialise(self._pending))
            self._pending = None
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
        return self._assemble(self._stored, samples, meta)

    def meta_now(self) -> dict[str, Any]:
        """The run's metadata with the counters as they are now."""
        steps = self._stored
        return {
            **self.meta,
            "recorded_steps": len(steps),
            "callbacks": self.n_callbacks,
            "model_evals_total": self.n_evals,
            "every_k_steps": self.options.every_k,
            "storage_dtype": self.options.storage,
            "has_x": bool(self.options.keep_x),
            "schedule_sigmas": self.schedule,
            "flags": sorted(self.flags),
        }

    def _assemble(self, steps: list[_Step], samples: torch.Tensor | None, meta: dict[str, Any]) -> Trajectory:
        meta = dict(meta)
        if not steps:
            shape = tuple(samples.shape) if samples is not None else (0, 0)
            empty = torch.zeros((shape[0], 0, *shape[1:]), dtype=self.options.dtype)
            return Trajectory(x0=empty, sigmas=torch.zeros(0), meta=meta,
                              final=self._copy(samples, torch.float32) if samples is not None else None)
        x0 = torch.stack([s.x0 for s in steps], dim=1)
        x = torch.stack([s.x for s in steps], dim=1) if self.options.keep_x else None
        cond = uncond = None
        if self.options.keep_cond_uncond:
            if all(s.has_cu and s.cond is not None for s in steps):
                cond = torch.stack([s.cond for s in steps], dim=1)
            else:
                meta["flags"] = sorted(set(meta["flags"]) | {"cond_x0_unavailable"})
            if all(s.has_cu and s.uncond is not None for s in steps):
                uncond = torch.stack([s.uncond for s in steps], dim=1)
            else:
                meta["flags"] = sorted(set(meta["flags"]) | {"uncond_x0_unavailable"})
        meta["has_cond_uncond"] = cond is not None and uncond is not None
        sigmas = torch.tensor([_as_float(s.sigma) for s in steps], dtype=torch.float32)
        return Trajectory(
            x0=x0,
            x=x,
            x0_cond=cond,
            x0_uncond=uncond,
            sigmas=sigmas,
            steps=torch.tensor([s.index for s in steps], dtype=torch.long),
            model_evals=torch.tensor([s.evals for s in steps], dtype=torch.long),
            noise_frame=self._noise_frame,
            final=self._copy(samples, torch.float32) if samples is not None else None,
            meta=meta,
        )

    # ------------------------------------------------------------------ copies
    def _copy(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        return t.detach().to(device="cpu", dtype=dtype or self.options.dtype, copy=True)

    def _materialise(self, s: _Step) -> _Step:
        keep_cu = self.options.keep_cond_uncond
        return _Step(
            s.index, s.sampler_i, _as_float(s.sigma), self._copy(s.x0),
            self._copy(s.x) if (self.options.keep_x and s.x is not None) else None,
            self._copy(s.cond) if (keep_cu and s.cond is not None) else None,
            self._copy(s.uncond) if (keep_cu and s.uncond is not None) else None,
            s.has_cu, s.evals,
        )


def _as_float(sigma: Any) -> float:
    if isinstance(sigma, torch.Tensor):
        return float(sigma.reshape(-1)[0])
    try:
        return float(sigma)
    except (TypeError, ValueError):
        return math.nan
