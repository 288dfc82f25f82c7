"""ComfyUI glue: record a trajectory from ANY sampler that runs through CFGGuider.

A SAMPLER_SAMPLE wrapper (comfy/patcher_extension.py) sees the sigma schedule and the step callback of every
sampler node (KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced, third-party samplers built on
CFGGuider); a PREDICT_NOISE wrapper sees every model evaluation; an optional post-CFG function sees the cond and
uncond predictions. The original callback is always called, so previews, the progress bar and interrupt behave
as without capture. State lives in closures and a store object referenced by them, never in model_options
objects that ``ModelPatcher.clone()`` deep-copies (docs/comfyui-internals.md §7.8).

Checked against ComfyUI 0.3.64 and the newest source available (notes in README, "Current ComfyUI"): wrapper
types are feature-detected; the wrappers take ``*args, **kwargs`` and bind the arguments they need by name, so an
argument added later passes through untouched; runs in progress are keyed by the sampling call (its guider), so
samplings in several threads through one MODEL never share state; nested captures stack their wrappers.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import torch

from .recorder import CaptureOptions, RunRecorder, StopSampling, check_capture_memory
from .trajectory import Trajectory, check_meta

WRAPPER_KEY = "diffusion_sentinel.trajectory"  # every capture's wrappers, in attach order (nested captures stack)
log = logging.getLogger("diffusion_sentinel")

# The wrapper types' names, feature-detected: comfy.patcher_extension.WrappersMP.* where it exists (0.3.64 and the
# newest source read), else the string values ComfyUI has always used for them.
_WRAPPER_NAMES = {"SAMPLER_SAMPLE": "sampler_sample", "PREDICT_NOISE": "predict_noise"}
_SAMPLER_ARGS = ("guider", "sigmas", "extra_args", "callback", "noise", "latent_image", "denoise_mask",
                 "disable_pbar")


def wrapper_type(name: str) -> str:
    try:
        import comfy.patcher_extension as pe

        return getattr(pe.WrappersMP, name, _WRAPPER_NAMES[name])
    except ImportError:
        return _WRAPPER_NAMES[name]


class CaptureStore:
    """The runs recorded through one patched MODEL (newest last, bounded), and the runs in progress.

    Runs in progress are keyed by the call: the guider object of the sampling call (what ComfyUI hands the
    SAMPLER_SAMPLE wrapper and, as ``executor.class_obj``, the PREDICT_NOISE wrapper), so two samplings through the
    same MODEL in two threads never mix their steps. The post-CFG function finds its run through a thread-local set
    by the PREDICT_NOISE wrapper around the evaluation it belongs to. A lock guards the shared dicts and the deque.
    """

    def __init__(self, options: CaptureOptions, max_runs: int = 4, step_listener=None):
        self.options = options
        self.runs: deque[Trajectory] = deque(maxlen=max(1, int(max_runs)))
        self.step_listener = step_listener  # (recorder, step_index) -> None; may raise StopSampling
        self.key = WRAPPER_KEY
        self._lock = threading.Lock()
        self._by_call: dict[int, RunRecorder] = {}
        self._local = threading.local()
        self.warnings: deque[str] = deque(maxlen=8)  # memory warnings of the latest runs

    # ------------------------------------------------------------------ runs in progress
    @property
    def active(self) -> RunRecorder | None:
        """The run in progress in this thread (None if none)."""
        stack = getattr(self._local, "runs", None)
        return stack[-1] if stack else None

    @property
    def active_calls(self) -> int:
        with self._lock:
            return len(self._by_call)

    def begin(self, call, rec: RunRecorder) -> None:
        with self._lock:
            self._by_call[id(call)] = rec
        self._local.runs = [*getattr(self._local, "runs", []), rec]

    def end(self, call) -> None:
        with self._lock:
            self._by_call.pop(id(call), None)
        stack = getattr(self._local, "runs", [])
        self._local.runs = stack[:-1]

    def recorder_for(self, call) -> RunRecorder | None:
        """The run of this sampling call (by guider), else this thread's run."""
        if call is not None:
            with self._lock:
                rec = self._by_call.get(id(call))
            if rec is not None:
                return rec
        return self.active

    @property
    def evaluating(self) -> RunRecorder | None:
        return getattr(self._local, "evaluating", None)

    # ------------------------------------------------------------------ finished runs
    def add(self, traj: Trajectory) -> None:
        with self._lock:
            self.runs.append(traj)

    def pop_latest(self) -> Trajectory | None:
        with self._lock:
            return self.runs.pop() if self.runs else None

    def find_for_latent(self, samples: torch.Tensor) -> Trajectory | None:
        """The newest run whose returned latent (or last x0) is ``samples`` (a LATENT's samples, VAE space)."""
        if getattr(samples, "is_nested", False):
            raise ValueError("this LATENT holds several latents of different shapes (a nested latent); Get "
                             "Captured Trajectory needs a plain latent batch")
        samples = samples.detach().float().cpu()
        with self._lock:
            runs = list(self.runs)
        for traj in reversed(runs):
            for cand in (traj.final, traj.x0[:, -1] if traj.num_steps else None):
                if cand is None or tuple(cand.shape) != tuple(samples.shape):
                    continue
                out = latent_out(traj, cand.float())
                if torch.allclose(out, samples, rtol=1e-3, atol=1e-3):
                    return traj
        return None


def latent_out(traj: Trajectory, latent: torch.Tensor) -> torch.Tensor:
    """Model latent space -> the LATENT space sampler nodes return (latent_format.process_out).

    The metadata is checked first (a trajectory may come from an edited file): a TrajectoryError, not a TypeError
    from ComfyUI or a division by zero, if latent_format or the scale factors are not what a capture writes."""
    check_meta(traj.meta)
    fmt = _latent_format_object(traj.meta.get("latent_format"))
    if fmt is not None:
        return fmt.process_out(latent)
    return traj.latent_to_vae_space(latent)


def _latent_format_object(name: str | None):
    if not name:
        return None
    try:
        import comfy.latent_formats as lf
    except ImportError:
        return None
    cls = getattr(lf, name, None)
    base = getattr(lf, "LatentFormat", None)
    if not (isinstance(cls, type) and (base is None or issubclass(cls, base))):
        return None
    try:
        return cls()
    except Exception:  # a latent format that needs arguments: fall back to the stored scale/shift
        return None


def attach_capture(model, options: CaptureOptions, max_runs: int = 4, step_listener=None):
    """Return (patched clone of ``model``, its CaptureStore). The input MODEL is never modified.

    Every call appends its wrappers to the list under ``WRAPPER_KEY`` (it never removes earlier ones), so a capture
    of an already captured MODEL (Capture Trajectory -> KSampler (Trajectory)) leaves the outer one in place: both
    record the run. ``model.remove_wrappers_with_key(kind, WRAPPER_KEY)`` on a clone removes every capture (what a
    probe that is not a sampling run does).

    ``step_listener(recorder, step_index)``, if given, is called after every recorded step (after the sampler's
    own callback, so previews and the progress bar are up to date). It may raise
    :class:`~.recorder.StopSampling` to end the run there: the sampler then returns the latest x0 (or the
    exception's ``latent``), ComfyUI finishes the sampling call normally, and the recorded trajectory carries
    ``meta["stopped_early_at"]`` (the step index) and the flag ``stopped_early``.
    """
    m = model.clone()
    store = CaptureStore(options, max_runs, step_listener=step_listener)
    sampler_wrapper = _make_sampler_wrapper(store)
    m.add_wrapper_with_key(wrapper_type("SAMPLER_SAMPLE"), store.key, sampler_wrapper)
    m.add_wrapper_with_key(wrapper_type("PREDICT_NOISE"), store.key, _make_predict_wrapper(store))
    if options.keep_cond_uncond:
        m.set_model_sampler_post_cfg_function(_make_post_cfg(store))
    return m, store


def find_stores(model) -> list[CaptureStore]:
    """Every CaptureStore of a MODEL patched by :func:`attach_capture`, innermost (last attached) first."""
    out = []
    for fn in reversed(list(model.get_wrappers(wrapper_type("SAMPLER_SAMPLE"), WRAPPER_KEY))):
        store = getattr(fn, "sentinel_store", None)
        if store is not None and store not in out:
            out.append(store)
    return out


def find_store(model) -> CaptureStore | None:
    """The CaptureStore of a MODEL patched by :func:`attach_capture` (also after later clones/patches)."""
    stores = find_stores(model)
    return stores[0] if stores else None


def _make_predict_wrapper(store: CaptureStore):
    def predict_noise_wrapper(executor, *args, **kwargs):
        rec = store.recorder_for(getattr(executor, "class_obj", None))
        if rec is None:
            return executor(*args, **kwargs)
        local = store._local
        outer, local.evaluating = getattr(local, "evaluating", None), rec  # for the post-CFG function
        try:
            out = executor(*args, **kwargs)
        finally:
            local.evaluating = outer
        x = args[0] if args else kwargs.get("x")
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        rec.on_eval(x, timestep, out)
        return out

    return predict_noise_wrapper


def _make_post_cfg(store: CaptureStore):
    def post_cfg(args):
        rec = store.evaluating
        if rec is not None:
            uncond = args.get("uncond_denoised") if args.get("uncond") is not None else None  # cfg 1 skips uncond
            rec.on_cfg(args.get("cond_denoised"), uncond)
        return args["denoised"]

    return post_cfg


def _bind_sampler_args(args: tuple, kwargs: dict) -> dict:
    bound = dict(zip(_SAMPLER_ARGS, args))
    for k in _SAMPLER_ARGS:
        if k in kwargs:
            bound[k] = kwargs[k]
    return bound


def _make_sampler_wrapper(store: CaptureStore):
    def sampler_sample_wrapper(executor, *args, **kwargs):
        a = _bind_sampler_args(args, kwargs)
        guider, sigmas, callback = a.get("guider"), a.get("sigmas"), a.get("callback")
        if store.active is not None or guider is None or sigmas is None:
            # a sampler nested inside a captured run of this store (same thread): record the outer run only
            return executor(*args, **kwargs)
        noise = a.get("noise")
        steps = int(sigmas.shape[-1]) - 1
        if isinstance(noise, torch.Tensor) and not getattr(noise, "is_nested", False) and noise.ndim >= 2:
            warning = check_capture_memory(store.options, steps, int(noise.shape[0]), tuple(noise.shape[1:]))
            if warning:
                log.warning("Diffusion Sentinel: %s", warning)
                store.warnings.append(warning)
        mp = guider.model_patcher
        ms = mp.get_model_object("model_sampling")
        meta = describe_run(guider, getattr(executor, "class_obj", None), sigmas, a.get("extra_args"),
                            a.get("denoise_mask"))
        rec = RunRecorder(store.options, sigmas, meta, input_scaling=getattr(ms, "calculate_input", None),
                          step_listener=store.step_listener)

        def callback_with_capture(i, x0, x, total_steps):
            rec.on_callback(i, x0, x)
            result = callback(i, x0, x, total_steps) if callback is not None else None
            rec.after_step()  # the step listener may raise StopSampling here
            return result

        if "callback" in kwargs or len(args) <= 3:
            kwargs = {**kwargs, "callback": callback_with_capture}
        else:
            args = (*args[:3], callback_with_capture, *args[4:])
        store.begin(guider, rec)
        try:
            out = executor(*args, **kwargs)
        except StopSampling as stop:
            latent = stop.latent if stop.latent is not None else rec.latest_x0
            if latent is None:
                raise RuntimeError("a step listener stopped sampling before any step was recorded") from stop
            # what KSAMPLER.sample does with the sampler's result on a normal return
            out = ms.inverse_noise_scaling(sigmas[-1], latent)
            rec.mark_stopped(stop.reason)
            log.info("Diffusion Sentinel: sampling stopped after step %d of %d (%s)", rec.stopped_at + 1,
                     len(sigmas) - 1, stop.reason or "step listener")
        finally:
            store.end(guider)
        store.add(rec.finish(out))
        return out

    sampler_sample_wrapper.sentinel_store = store
    return sampler_sample_wrapper


def prediction_type(ms) -> str:
    try:
        import comfy.model_sampling as cms
    except ImportError:  # outside ComfyUI (tests with stand-in models)
        return type(ms).__name__

    for name, cls in (("edm", "EDM"), ("v", "V_PREDICTION"), ("x0", "X0"), ("flow", "CONST"),
                      ("cosmos_rflow", "COSMOS_RFLOW"), ("eps", "EPS")):
        c = getattr(cms, cls, None)
        if c is not None and isinstance(ms, c):
            return name
    return type(ms).__name__


def describe_model(model) -> dict[str, Any]:
    """Metadata of a MODEL that a trajectory needs to be decoded and compared later."""
    meta: dict[str, Any] = {}
    try:
        meta["model_family"] = type(model.model.model_config).__name__
    except AttributeError:
        meta["model_family"] = "unknown"
    lf = model.get_model_object("latent_format")
    meta["latent_format"] = type(lf).__name__
    meta["latent_scale_factor"] = float(getattr(lf, "scale_factor", 1.0))
    shift = getattr(lf, "shift_factor", None)
    meta["latent_shift_factor"] = float(shift) if isinstance(shift, (int, float)) else 0.0
    meta["latent_channels"] = int(getattr(lf, "latent_channels", 0) or 0)
    meta["prediction"] = prediction_type(model.get_model_object("model_sampling"))
    return meta


def sampler_name_of(sampler) -> str:
    fn = getattr(sampler, "sampler_function", None)
    if fn is not None:
        name = getattr(fn, "__name__", "unknown")
        for prefix, suffix in (("sample_", ""), ("", "_function")):
            if prefix and name.startswith(prefix):
                name = name[len(prefix):]
            if suffix and name.endswith(suffix):
                name = name[: -len(suffix)]
        return name
    return type(sampler).__name__


def describe_run(guider, sampler, sigmas, extra_args, denoise_mask) -> dict[str, Any]:
    meta = describe_model(guider.model_patcher)
    cfg = getattr(guider, "cfg", None)
    meta.update({
        "sampler": sampler_name_of(sampler),
        "scheduler": "custom",
        "steps": int(sigmas.shape[-1]) - 1,
        "cfg": float(cfg) if isinstance(cfg, (int, float)) else None,
        "guider": type(guider).__name__,
        "seed": extra_args.get("seed") if isinstance(extra_args, dict) else None,
        "inpaint": denoise_mask is not None,
        "space": "model",
    })
    return meta
