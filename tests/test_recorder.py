"""RunRecorder: the event protocol of capture, simulated the way ComfyUI's samplers call it."""

from __future__ import annotations

import pytest
import torch
from diffusion_sentinel.nodes.trajectory.recorder import (
    CaptureOptions,
    CaptureTooLarge,
    HostCopier,
    RunRecorder,
    check_capture_memory,
    estimate_capture_bytes,
)

SIG = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.0])


def _t(v, shape=(2, 4, 3, 3)):
    return torch.full(shape, float(v))


def euler_like(rec, n=5, with_cu=False):
    """One model evaluation then one callback per step (euler, dpmpp_2m, lcm, ...)."""
    for i in range(n):
        x, x0 = _t(100 + i), _t(i)
        if with_cu:
            rec.on_cfg(_t(1000 + i), _t(2000 + i))
        rec.on_eval(x, SIG[i].expand(2), x0)
        rec.on_callback(i, x0, x)
    return rec.finish(_t(-1))


def test_every_step_recorded_with_sigma_from_the_evaluation():
    tr = euler_like(RunRecorder(CaptureOptions(), SIG, {"sampler": "euler"}))
    assert tr.num_steps == 5 and tr.batch_size == 2
    assert tr.sigmas.tolist() == [10.0, 5.0, 2.0, 1.0, 0.5]
    assert tr.x0[:, :, 0, 0, 0][0].tolist() == [0, 1, 2, 3, 4]
    assert tr.x[:, :, 0, 0, 0][0].tolist() == [100, 101, 102, 103, 104]
    assert tr.model_evals.tolist() == [1, 2, 3, 4, 5]
    assert tr.final[0, 0, 0, 0].item() == -1
    assert tr.meta["flags"] == [] and tr.meta["sampler"] == "euler" and tr.meta["callbacks"] == 5


def test_every_k_keeps_last_step_and_copies():
    x0s = []
    rec = RunRecorder(CaptureOptions(every_k=2, storage="float16", keep_x=False), SIG)
    for i in range(5):
        x0 = _t(i)
        x0s.append(x0)
        rec.on_eval(_t(9), SIG[i], x0)
        rec.on_callback(i, x0, _t(9))
    x0s[0].fill_(77)  # the recorder holds copies, not references
    tr = rec.finish()
    assert tr.steps.tolist() == [0, 2, 4] and tr.x is None and tr.x0.dtype == torch.float16
    assert tr.x0[0, :, 0, 0, 0].tolist() == [0, 2, 4]
    rec = RunRecorder(CaptureOptions(every_k=3), SIG)
    for i in range(5):
        rec.on_eval(_t(0), SIG[i], _t(i))
        rec.on_callback(i, _t(i), _t(0))
    assert rec.finish().steps.tolist() == [0, 3, 4]


def test_second_order_callback_reports_first_stage():
    """heun: eval(x_i) -> callback -> eval(x_2 at sigma_{i+1}) -> next step eval(x_{i+1}) -> callback."""
    rec = RunRecorder(CaptureOptions(), SIG)
    for i in range(3):
        x, x0 = _t(100 + i), _t(i)
        rec.on_eval(x, SIG[i], x0)
        rec.on_callback(i, x0, x)
        rec.on_eval(_t(555), SIG[i + 1], _t(666))  # the second stage, evaluated after the callback
    tr = rec.finish()
    assert tr.x[0, :, 0, 0, 0].tolist() == [100, 101, 102]
    assert tr.sigmas.tolist() == [10.0, 5.0, 2.0]
    assert tr.model_evals.tolist() == [1, 3, 5]
    assert "several_model_evaluations_per_step" in tr.meta["flags"]


def test_adaptive_solver_matched_by_value_not_by_order():
    """dpm_adaptive: eval(start) -> more stage evals -> callback with x0 rebuilt from eps (a new tensor)."""
    rec = RunRecorder(CaptureOptions(), SIG)
    for i in range(2):
        x_start, x0 = _t(100 + i), _t(i)
        rec.on_eval(x_start, torch.tensor([7.0 - i]), x0)
        rec.on_eval(_t(300), torch.tensor([6.5]), _t(42))
        rec.on_eval(_t(301), torch.tensor([6.0]), _t(43))
        rebuilt = x0.clone() + 1e-7
        rec.on_callback(i, rebuilt, _t(999))  # the callback's x is the updated latent
    tr = rec.finish()
    assert tr.x[0, :, 0, 0, 0].tolist() == [100, 101] and tr.sigmas.tolist() == [7.0, 6.0]
    assert "steps_do_not_follow_schedule" in tr.meta["flags"]
    assert "x0_matched_to_last_evaluation" not in tr.meta["flags"]


def test_callback_without_evaluation_falls_back_to_schedule():
    rec = RunRecorder(CaptureOptions(), SIG)
    rec.on_eval(_t(1), SIG[0], _t(0))
    rec.on_callback(0, _t(0), _t(1))
    rec.on_callback(1, _t(5), _t(6))  # no evaluation in between (e.g. a final callback)
    tr = rec.finish()
    assert tr.sigmas.tolist() == [10.0, 5.0] and tr.x[0, 1, 0, 0, 0].item() == 6
    assert "callback_without_model_evaluation" in tr.meta["flags"]


def test_cond_uncond_recorded_and_cfg1_has_no_uncond():
    tr = euler_like(RunRecorder(CaptureOptions(keep_cond_uncond=True), SIG), with_cu=True)
    assert tr.meta["has_cond_uncond"]
    assert tr.x0_cond[0, :, 0, 0, 0].tolist() == [1000, 1001, 1002, 1003, 1004]
    assert tr.x0_uncond[0, :, 0, 0, 0].tolist() == [2000, 2001, 2002, 2003, 2004]
    rec = RunRecorder(CaptureOptions(keep_cond_uncond=True), SIG)
    for i in range(3):
        rec.on_cfg(_t(i), None)
        rec.on_eval(_t(0), SIG[i], _t(i))
        rec.on_callback(i, _t(i), _t(0))
    tr = rec.finish()
    assert tr.x0_cond is not None and tr.x0_uncond is None and "uncond_x0_unavailable" in tr.meta["flags"]
    assert not tr.meta["has_cond_uncond"]


def test_noise_frame_uses_input_scaling():
    rec = RunRecorder(CaptureOptions(), SIG, input_scaling=lambda s, x: x / (s.reshape(-1, 1, 1, 1) ** 2 + 1) ** 0.5)
    rec.on_eval(_t(3), SIG[0].expand(2), _t(0))
    rec.on_callback(0, _t(0), _t(3))
    rec.on_eval(_t(2), SIG[1].expand(2), _t(0))
    rec.on_callback(1, _t(0), _t(2))
    tr = rec.finish()
    assert tr.noise_frame[0, 0, 0, 0].item() == pytest.approx(3 / (101**0.5))


def test_no_steps_gives_empty_trajectory():
    tr = RunRecorder(CaptureOptions(), SIG).finish(_t(0))
    assert tr.num_steps == 0 and tr.batch_size == 2


def test_options_validated():
    with pytest.raises(ValueError, match="every_k"):
        CaptureOptions(every_k=0)
    with pytest.raises(ValueError, match="storage"):
        CaptureOptions(storage="int8")


# ------------------------------------------------------------------------------------------------ host copies
def _sync_reference(events, options, sig):
    """The synchronous path as it was: one detached CPU copy per stored step, stacked at the end."""
    steps = [i for i in range(len(events)) if i % options.every_k == 0]
    if (len(events) - 1) not in steps:
        steps.append(len(events) - 1)
    cp = lambda t: t.detach().to("cpu", dtype=options.dtype, copy=True)  # noqa: E731
    x0 = torch.stack([cp(events[i][2]) for i in steps], 1)
    x = torch.stack([cp(events[i][0]) for i in steps], 1)
    cond = torch.stack([cp(events[i][3]) for i in steps], 1)
    return steps, x0, x, cond


@pytest.mark.parametrize("storage,every_k", [("float32", 1), ("float16", 3), ("bfloat16", 2)])
def test_buffered_copies_equal_the_synchronous_path(storage, every_k):
    """The time-major host buffers (what CUDA fills asynchronously) hold exactly what per-step copies held."""
    g = torch.Generator().manual_seed(0)
    n = 11
    events = [(torch.randn(2, 4, 5, 5, generator=g), SIG[0], torch.randn(2, 4, 5, 5, generator=g),
               torch.randn(2, 4, 5, 5, generator=g), torch.randn(2, 4, 5, 5, generator=g)) for _ in range(n)]
    sig = torch.linspace(10, 0, n + 1)
    opts = CaptureOptions(every_k=every_k, storage=storage, keep_cond_uncond=True)
    rec = RunRecorder(opts, sig)
    for i, (x, _, x0, c, u) in enumerate(events):
        rec.on_cfg(c, u)
        rec.on_eval(x, sig[i:i + 1], x0)
        rec.on_callback(i, x0, x)
    tr = rec.finish(events[-1][2])
    steps, x0, x, cond = _sync_reference(events, opts, sig)
    assert tr.steps.tolist() == steps
    assert torch.equal(tr.x0, x0) and torch.equal(tr.x, x) and torch.equal(tr.x0_cond, cond)
    assert tr.x0.dtype == opts.dtype and tr.x0.is_contiguous()
    assert tr.sigmas.tolist() == pytest.approx([float(sig[i]) for i in steps])


class DeferredCopier(HostCopier):
    """Stands in for CUDA on the CPU: a copy lands in its buffer only at sync(), as a non_blocking copy to pinned
    memory does. Buffers start as NaN, so reading before sync() shows up as NaN values."""

    def __init__(self):
        super().__init__(use_async=False)
        self.pending, self.syncs_with_work = [], 0

    def empty(self, shape, dtype, like):
        return torch.full(shape, float("nan"), dtype=dtype)

    def copy_into(self, dst, src):
        self.pending.append((dst, src.detach().clone()))  # stream order: the value at the time of the copy

    def sync(self):
        if self.pending:
            self.syncs_with_work += 1
        for dst, src in self.pending:
            dst.copy_(src)
        self.pending.clear()


def test_one_sync_per_run_and_before_every_read():
    cp = DeferredCopier()
    rec = RunRecorder(CaptureOptions(), SIG, copier=cp)
    for i in range(5):
        x, x0 = _t(100 + i), _t(i)
        rec.on_eval(x, SIG[i].expand(2), x0)
        rec.on_callback(i, x0, x)
        x0.fill_(-5)  # the sampler reuses its tensors: the copy was ordered before, so it keeps the old value
    assert cp.syncs_with_work == 0  # nothing waited while sampling
    tr = rec.finish(_t(-1))
    assert cp.syncs_with_work == 1
    assert tr.x0[0, :, 0, 0, 0].tolist() == [0, 1, 2, 3, 4] and tr.sigmas.tolist() == [10.0, 5.0, 2.0, 1.0, 0.5]
    assert tr.final[0, 0, 0, 0].item() == -1 and torch.isfinite(tr.noise_frame).all()


def test_listener_snapshot_waits_for_the_copies():
    seen = []

    def listener(rec, idx):
        snap = rec.snapshot()
        seen.append((idx, snap.x0[0, :, 0, 0, 0].tolist()))

    cp = DeferredCopier()
    rec = RunRecorder(CaptureOptions(every_k=2), SIG, step_listener=listener, copier=cp)
    for i in range(5):
        rec.on_eval(_t(9), SIG[i].expand(2), _t(i))
        rec.on_callback(i, rec._evals[-1].x0, _t(9))
        rec.after_step()
    assert seen == [(0, [0.0]), (2, [0.0, 2.0]), (4, [0.0, 2.0, 4.0])]  # no NaN: each read came after a sync
    assert cp.syncs_with_work == 3


def test_schedule_callback_without_evaluation_resolved_after_sync():
    rec = RunRecorder(CaptureOptions(), SIG, copier=DeferredCopier())
    rec.on_eval(_t(1), SIG[0], _t(0))
    rec.on_callback(0, _t(0), _t(1))
    rec.on_callback(3, _t(5), _t(6))  # no evaluation: sigma = schedule[3], read once the copies landed
    tr = rec.finish()
    assert tr.sigmas.tolist() == [10.0, 1.0]


# ------------------------------------------------------------------------------------------------ memory bound
def test_capture_memory_estimate_is_the_product():
    o = CaptureOptions()
    per = 8 * 4 * 64 * 64
    assert estimate_capture_bytes(o, 50, 8, (4, 64, 64)) == 50 * per * 2 * 4 + 2 * per * 4
    o16 = CaptureOptions(every_k=4, storage="float16", keep_x=False, keep_cond_uncond=True)
    assert o16.recorded_steps(50) == 14  # 0, 4, ..., 48 and the last (49)
    assert estimate_capture_bytes(o16, 50, 8, (4, 64, 64)) == 14 * per * 3 * 2 + 2 * per * 4
    k5 = CaptureOptions(every_k=5)
    assert k5.recorded_steps(11) == 3 and k5.recorded_steps(12) == 4 and k5.recorded_steps(10) == 3


def test_capture_memory_warns_then_refuses_with_what_to_change():
    o = CaptureOptions()
    assert check_capture_memory(o, 20, 1, (4, 64, 64), warn_bytes=2**30, max_bytes=2**31) == ""
    # 10,000 steps of SD1.5 at 512 px, x kept, float32: 1.2 GiB
    warn = check_capture_memory(o, 10_000, 1, (4, 64, 64), warn_bytes=2**30, max_bytes=2**34)
    assert "1.22 GiB" in warn and "every_k_steps 2 (0.61 GiB)" in warn and "storage float16" in warn
    assert "keep_x off" in warn and "fewer steps" in warn
    with pytest.raises(CaptureTooLarge, match=r"about 9.77 GiB .*10000 recorded steps x 8 item\(s\) x latent "
                                              r"4x64x64 x 2 tensor.*limit of 8.00 GiB.*every_k_steps 2"):
        check_capture_memory(o, 10_000, 8, (4, 64, 64), warn_bytes=2**30, max_bytes=2**33)
