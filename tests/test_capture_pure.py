"""The capture glue with stand-in ComfyUI objects (no ComfyUI needed): per-call state when two samplings run
through one captured MODEL in two threads at the same time, nested captures, arguments passed by name, and the
memory refusal before sampling. The executor chain is built the way comfy/patcher_extension.py runs wrappers:
each wrapper gets an executor whose ``class_obj`` is the guider (PREDICT_NOISE) or the sampler (SAMPLER_SAMPLE)."""

from __future__ import annotations

import threading

import pytest
import torch
from diffusion_sentinel.nodes.trajectory.capture import WRAPPER_KEY, attach_capture, find_stores
from diffusion_sentinel.nodes.trajectory.recorder import CaptureOptions, CaptureTooLarge


class FakeLatentFormat:
    scale_factor = 0.5
    shift_factor = 0.0
    latent_channels = 4


class FakeSampling:
    def calculate_input(self, sigma, x):
        return x / (sigma.reshape(-1, 1, 1, 1) ** 2 + 1) ** 0.5

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class FakePatcher:
    """The parts of comfy.model_patcher.ModelPatcher the capture touches."""

    def __init__(self):
        self.wrappers: dict[str, dict[str, list]] = {}
        self.post_cfg: list = []

    def clone(self):
        c = FakePatcher()
        c.wrappers = {k: {kk: list(v) for kk, v in d.items()} for k, d in self.wrappers.items()}
        c.post_cfg = list(self.post_cfg)
        return c

    def add_wrapper_with_key(self, kind, key, fn):
        self.wrappers.setdefault(kind, {}).setdefault(key, []).append(fn)

    def remove_wrappers_with_key(self, kind, key):
        self.wrappers.get(kind, {}).pop(key, None)

    def get_wrappers(self, kind, key):
        return self.wrappers.get(kind, {}).get(key, [])

    def all_wrappers(self, kind):
        return [fn for fns in self.wrappers.get(kind, {}).values() for fn in fns]

    def set_model_sampler_post_cfg_function(self, fn):
        self.post_cfg.append(fn)

    def get_model_object(self, name):
        return {"model_sampling": FakeSampling(), "latent_format": FakeLatentFormat()}[name]


class Executor:
    """comfy.patcher_extension.WrapperExecutor in miniature: wrappers[0] runs first, then the next, then the
    original; ``class_obj`` is the object the wrapped method belongs to."""

    def __init__(self, original, class_obj, wrappers, idx=0):
        self.original, self.class_obj, self.wrappers, self.idx = original, class_obj, wrappers, idx

    def __call__(self, *args, **kwargs):
        if self.idx >= len(self.wrappers):
            return self.original(*args, **kwargs)
        nxt = Executor(self.original, self.class_obj, self.wrappers, self.idx + 1)
        return self.wrappers[self.idx](nxt, *args, **kwargs)


class FakeGuider:
    """A CFGGuider stand-in: predict_noise goes through the PREDICT_NOISE wrappers and the post-CFG functions."""

    def __init__(self, patcher, offset):
        self.model_patcher, self.offset, self.cfg = patcher, offset, 2.0

    def predict(self, x, sigma, model_options=None, seed=None):
        def original(x, sigma, model_options, seed):
            cond, uncond = x * 0.5 + self.offset, x * 0.25 + self.offset
            out = uncond + self.cfg * (cond - uncond)
            for fn in self.model_patcher.post_cfg:
                out = fn({"denoised": out, "cond_denoised": cond, "uncond_denoised": uncond, "uncond": "u"})
            return out

        wr = self.model_patcher.all_wrappers("predict_noise")
        return Executor(original, self, wr)(x, sigma, model_options or {}, seed)


def euler_sampler(guider, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                  disable_pbar=False, pace=None):
    x = noise * sigmas[0]
    for i in range(len(sigmas) - 1):
        if pace is not None:
            pace(i)
        x0 = guider.predict(x, sigmas[i:i + 1])
        callback(i, x0, x, len(sigmas) - 1)
        x = x + (x - x0) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def sample(patcher, guider, sigmas, noise, pace=None, by_name=False):
    wr = patcher.all_wrappers("sampler_sample")

    def original(guider, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                 disable_pbar=False):
        return euler_sampler(guider, sigmas, extra_args, callback, noise, pace=pace)

    ex = Executor(original, object(), wr)
    cb = lambda *a: None  # noqa: E731
    if by_name:  # a newer ComfyUI might pass arguments by name: they are bound by name
        return ex(guider, sigmas, {"seed": 1}, callback=cb, noise=noise, latent_image=noise, denoise_mask=None,
                  disable_pbar=True)
    return ex(guider, sigmas, {"seed": 1}, cb, noise, noise, None, True)


SIG = torch.linspace(5.0, 0.0, 7)


def reference(offset, noise, keep_cu=True):
    m, store = attach_capture(FakePatcher(), CaptureOptions(keep_cond_uncond=keep_cu), max_runs=4)
    out = sample(m, FakeGuider(m, offset), SIG, noise)
    return out, store.pop_latest()


def test_two_threads_through_one_captured_model_keep_their_own_steps():
    """Two samplings interleaved step by step (barriers) in two threads: each run records only its own
    evaluations, cond/uncond and callbacks, exactly as when it runs alone."""
    m, store = attach_capture(FakePatcher(), CaptureOptions(keep_cond_uncond=True), max_runs=8)
    barrier = threading.Barrier(2)
    noises = {0: torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1)),
              1: torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(2))}
    outs, errors = {}, []

    def run(k):
        try:
            outs[k] = sample(m, FakeGuider(m, offset=10.0 * (k + 1)), SIG, noises[k], pace=lambda i: barrier.wait(5))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and store.active_calls == 0 and store.active is None
    runs = list(store.runs)
    assert len(runs) == 2
    for k in (0, 1):
        ref_out, ref = reference(10.0 * (k + 1), noises[k])
        mine = [t for t in runs if torch.equal(t.final, ref.final)]
        assert len(mine) == 1 and torch.equal(outs[k], ref_out)
        t = mine[0]
        assert torch.equal(t.x0, ref.x0) and torch.equal(t.x, ref.x) and t.meta["model_evals_total"] == 6
        assert torch.equal(t.x0_cond, ref.x0_cond) and torch.equal(t.x0_uncond, ref.x0_uncond)


def test_nested_capture_both_record():
    """Capture Trajectory -> KSampler (Trajectory): the inner capture keeps the outer one's wrappers."""
    outer_m, outer = attach_capture(FakePatcher(), CaptureOptions(), max_runs=4)
    inner_m, inner = attach_capture(outer_m, CaptureOptions(storage="float16", keep_x=False), max_runs=1)
    assert find_stores(inner_m) == [inner, outer] and find_stores(outer_m) == [outer]
    noise = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    out = sample(inner_m, FakeGuider(inner_m, 1.0), SIG, noise)
    a, b = outer.pop_latest(), inner.pop_latest()
    assert a is not None and b is not None and a.num_steps == b.num_steps == 6
    assert torch.allclose(a.x0.half(), b.x0) and b.x is None and a.x is not None
    ref_out, ref = reference(1.0, noise, keep_cu=False)
    assert torch.equal(out, ref_out) and torch.equal(a.x0, ref.x0)


def test_removing_the_capture_key_removes_every_capture():
    """What a probe that is not a sampling run does (the memorization guard): remove WRAPPER_KEY on its clone."""
    outer_m, outer = attach_capture(FakePatcher(), CaptureOptions(), max_runs=4)
    inner_m, inner = attach_capture(outer_m, CaptureOptions(), max_runs=4)
    probe = inner_m.clone()
    for kind in ("sampler_sample", "predict_noise"):
        probe.remove_wrappers_with_key(kind, WRAPPER_KEY)
    sample(probe, FakeGuider(probe, 0.0), SIG, torch.zeros(1, 4, 3, 3))
    assert not outer.runs and not inner.runs and find_stores(probe) == []
    sample(inner_m, FakeGuider(inner_m, 0.0), SIG, torch.zeros(1, 4, 3, 3))  # the captured model still records
    assert len(outer.runs) == len(inner.runs) == 1


def test_sampler_arguments_passed_by_name_are_bound():
    m, store = attach_capture(FakePatcher(), CaptureOptions(), max_runs=2)
    noise = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(4))
    out = sample(m, FakeGuider(m, 2.0), SIG, noise, by_name=True)
    t = store.pop_latest()
    ref_out, ref = reference(2.0, noise, keep_cu=False)
    assert torch.equal(out, ref_out) and torch.equal(t.x0, ref.x0) and t.meta["steps"] == 6


def test_capture_refuses_past_the_memory_bound_before_sampling(monkeypatch):
    import diffusion_sentinel.nodes.trajectory.recorder as recorder

    monkeypatch.setattr(recorder, "MAX_BYTES", 10_000)
    monkeypatch.setattr(recorder, "WARN_BYTES", 1_000)
    m, store = attach_capture(FakePatcher(), CaptureOptions(), max_runs=2)
    calls = []
    guider = FakeGuider(m, 0.0)
    guider.predict = lambda *a, **k: calls.append(1)  # never reached
    with pytest.raises(CaptureTooLarge, match="every_k_steps 2.*storage float16.*keep_x off"):
        sample(m, guider, torch.linspace(5, 0, 201), torch.zeros(2, 4, 8, 8))
    assert calls == [] and store.active is None and store.active_calls == 0
    monkeypatch.setattr(recorder, "MAX_BYTES", 10**9)
    sample(m, FakeGuider(m, 0.0), SIG, torch.zeros(2, 4, 8, 8))
    assert store.warnings and "To use less" in store.warnings[0]
