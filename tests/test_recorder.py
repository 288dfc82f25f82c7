"""RunRecorder: the event protocol of capture, simulated the way ComfyUI's samplers call it."""

from __future__ import annotations

import pytest
import torch
from diffusion_sentinel.nodes.trajectory.recorder import CaptureOptions, RunRecorder

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
