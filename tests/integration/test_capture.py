"""Capture under real ComfyUI samplers with a tiny real U-Net: bit-identical latents, schedule, x0, batches."""

from __future__ import annotations

import _device
import pytest
import torch
from _comfy import conditioning, empty_latent, run_node, run_v3

POS, NEG = conditioning(1), conditioning(2)


def _ksampler(model, sampler="euler", scheduler="normal", steps=6, cfg=5.0, seed=3, latent=None, denoise=1.0):
    latent = latent or empty_latent(1)
    return run_node("KSampler", model=model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                    scheduler=scheduler, positive=POS, negative=NEG, latent_image=latent, denoise=denoise)[0]


def _traj_ksampler(nodes_mod, model, sampler="euler", scheduler="normal", steps=6, cfg=5.0, seed=3, latent=None,
                   denoise=1.0, **capture):
    latent = latent or empty_latent(1)
    out = run_v3(nodes_mod.KSamplerTrajectory, model=model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                 scheduler=scheduler, positive=POS, negative=NEG, latent_image=latent, denoise=denoise, **capture)
    return out.args


@pytest.fixture(scope="module", autouse=True)
def _warm_up(comfy, tiny):
    """Sample once before any comparison. In a fresh CUDA process the first KSampler call differs from later ones
    by up to 5e-3 (cuDNN/cuBLAS choose their algorithms and initialise lazily on the first call), so a bit-identity
    test that happens to run first would compare a cold call with a warm one; every later call, plain or captured,
    is bit-identical. On the CPU this costs one tiny run."""
    _ksampler(tiny, steps=2)


def _schedule(model, sampler, scheduler, steps, denoise=1.0):
    import comfy.samplers

    ks = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=sampler, scheduler=scheduler,
                                 denoise=denoise)
    return ks.sigmas.float()


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m", "heun", "uni_pc", "dpmpp_sde", "lcm"])
def test_ksampler_trajectory_matches_builtin_bit_for_bit(comfy, tiny, traj_nodes, sampler):
    ref = _ksampler(tiny, sampler=sampler)
    lat, traj = _traj_ksampler(traj_nodes, tiny, sampler=sampler)
    assert torch.equal(ref["samples"], lat["samples"]), "capture must not change the sampled latent"
    sig = _schedule(tiny, sampler, "normal", 6)
    n = len(sig) - 1
    assert traj.num_steps == n
    assert traj.batch_size == 1
    assert traj.meta["sampler"] == sampler and traj.meta["steps"] == 6 and traj.meta["seed"] == 3
    assert traj.meta["latent_format"] == "SD15" and traj.meta["prediction"] == "eps"
    # sigma of every recorded step = the schedule's sigma of that step (the model evaluation it came from)
    assert torch.allclose(traj.sigmas, sig[:-1], rtol=1e-5, atol=1e-6)
    assert torch.isfinite(traj.x0).all() and traj.x is not None


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "heun"])
def test_last_x0_is_the_returned_image(comfy, tiny, traj_nodes, sampler):
    """For samplers that end with sigma 0, the returned latent is the last step's x0."""
    lat, traj = _traj_ksampler(traj_nodes, tiny, sampler=sampler)
    from diffusion_sentinel.nodes.trajectory.capture import latent_out

    last = latent_out(traj, traj.x0[:, -1].float())
    assert torch.allclose(last, lat["samples"], rtol=1e-4, atol=1e-5)
    assert torch.allclose(latent_out(traj, traj.final.float()), lat["samples"], rtol=1e-5, atol=1e-6)


def test_first_x_is_scaled_noise_and_noise_frame_unit_variance(comfy, tiny, traj_nodes):
    import comfy.sample

    lat, traj = _traj_ksampler(traj_nodes, tiny, steps=5)
    noise = comfy.sample.prepare_noise(torch.zeros(1, 4, 8, 8), 3)
    s0 = float(traj.sigmas[0])
    # txt2img starts at noise * sqrt(1 + sigma_max^2) (EPS, max_denoise); the noise frame undoes the scaling
    assert torch.allclose(traj.x[:, 0].float(), noise * (1 + s0**2) ** 0.5, rtol=1e-5, atol=1e-5)
    assert torch.allclose(traj.noise_frame.float(), noise, rtol=1e-5, atol=1e-5)


def test_ksampler_advanced_trajectory_matches_builtin(comfy, tiny, traj_nodes):
    kw = dict(model=tiny, add_noise="enable", noise_seed=11, steps=8, cfg=4.0, sampler_name="euler", scheduler="karras",
              positive=POS, negative=NEG, latent_image=empty_latent(2), start_at_step=2, end_at_step=6,
              return_with_leftover_noise="enable")
    ref = run_node("KSamplerAdvanced", **kw)[0]
    lat, traj = run_v3(traj_nodes.KSamplerAdvancedTrajectory, **kw).args
    assert torch.equal(ref["samples"], lat["samples"])
    sig = _schedule(tiny, "euler", "karras", 8)
    assert traj.num_steps == 4 and traj.batch_size == 2
    assert torch.allclose(traj.sigmas, sig[2:6], rtol=1e-5)
    # leftover noise: the returned latent is the noisy x after the last step, not x0
    assert traj.meta["start_step"] == 2 and traj.meta["last_step"] == 6


def test_denoise_below_one_and_img2img(comfy, tiny, traj_nodes):
    init = empty_latent(1, seed=5)
    ref = _ksampler(tiny, latent=init, denoise=0.5, steps=10)
    lat, traj = _traj_ksampler(traj_nodes, tiny, latent=init, denoise=0.5, steps=10)
    assert torch.equal(ref["samples"], lat["samples"])
    # ComfyUI runs `steps` steps of a longer schedule (steps / denoise) when denoise < 1
    sig = _schedule(tiny, "euler", "normal", 10, denoise=0.5)
    assert traj.num_steps == 10 and float(sig[0]) < 14.0
    assert torch.allclose(traj.sigmas, sig[:-1], rtol=1e-5)
    assert traj.meta["denoise"] == 0.5


def test_sampler_custom_advanced_with_capture_node(comfy, tiny, traj_nodes):
    (m,) = run_v3(traj_nodes.CaptureTrajectory, model=tiny).args
    assert m is not tiny and not tiny.get_wrappers("sampler_sample", "diffusion_sentinel.trajectory")
    (noise,) = run_node("RandomNoise", noise_seed=21)
    (guider,) = run_node("CFGGuider", model=m, positive=POS, negative=NEG, cfg=6.0)
    (sampler,) = run_node("KSamplerSelect", sampler_name="dpmpp_2m")
    (sigmas,) = run_node("BasicScheduler", model=m, scheduler="simple", steps=7, denoise=1.0)
    out, denoised = run_node("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                             latent_image=empty_latent(2))
    # the same graph without capture gives the same latent
    (guider0,) = run_node("CFGGuider", model=tiny, positive=POS, negative=NEG, cfg=6.0)
    out0, _ = run_node("SamplerCustomAdvanced", noise=noise, guider=guider0, sampler=sampler, sigmas=sigmas,
                       latent_image=empty_latent(2))
    assert torch.equal(out["samples"], out0["samples"])
    (traj,) = run_v3(traj_nodes.GetCapturedTrajectory, model=m, latent=out).args
    assert traj.num_steps == 7 and traj.batch_size == 2
    assert traj.meta["sampler"] == "dpmpp_2m" and traj.meta["cfg"] == 6.0 and traj.meta["seed"] == 21
    assert torch.allclose(traj.sigmas, sigmas[:-1].float(), rtol=1e-5)
    # the second output of SamplerCustomAdvanced (denoised) also identifies the run
    (traj2,) = run_v3(traj_nodes.GetCapturedTrajectory, model=m, latent=denoised).args
    assert traj2 is traj


def test_sampler_custom_and_two_runs_are_told_apart(comfy, tiny, traj_nodes):
    (m,) = run_v3(traj_nodes.CaptureTrajectory, model=tiny, remember_runs=4).args
    (sampler,) = run_node("KSamplerSelect", sampler_name="euler")
    (sigmas,) = run_node("BasicScheduler", model=m, scheduler="normal", steps=4, denoise=1.0)
    outs = []
    for seed in (1, 2):
        out, _ = run_node("SamplerCustom", model=m, add_noise=True, noise_seed=seed, cfg=3.0, positive=POS,
                          negative=NEG, sampler=sampler, sigmas=sigmas, latent_image=empty_latent(1))
        outs.append(out)
    t1 = run_v3(traj_nodes.GetCapturedTrajectory, model=m, latent=outs[0]).args[0]
    t2 = run_v3(traj_nodes.GetCapturedTrajectory, model=m, latent=outs[1]).args[0]
    assert t1.meta["seed"] == 1 and t2.meta["seed"] == 2
    assert not torch.allclose(t1.x0, t2.x0)


def test_nested_capture_outer_and_inner_both_record(comfy, tiny, traj_nodes):
    """Capture Trajectory -> KSampler (Trajectory) -> Get Captured Trajectory: the inner capture used to remove the
    outer one, and Get Captured Trajectory then told the user to connect what they had connected."""
    (m,) = run_v3(traj_nodes.CaptureTrajectory, model=tiny, remember_runs=2).args
    lat, inner = _traj_ksampler(traj_nodes, m, steps=5, seed=8)
    got = run_v3(traj_nodes.GetCapturedTrajectory, model=m, latent=lat)
    (outer,) = got.args
    assert outer.num_steps == inner.num_steps == 5
    assert torch.equal(outer.x0, inner.x0) and torch.equal(outer.sigmas, inner.sigmas)
    assert torch.equal(lat["samples"], _ksampler(tiny, steps=5, seed=8)["samples"])  # capture changes nothing
    (p,) = got.ui["sentinel_result"]
    assert p["rows"] == [[0, 8, 5, 5, pytest.approx(float(outer.sigmas[0])), pytest.approx(float(outer.sigmas[-1]))]]
    assert "1 item(s) x 5 recorded step(s)" in p["summary"]


def test_node_panels_say_what_was_captured(comfy, tiny, traj_nodes):
    out = run_v3(traj_nodes.KSamplerTrajectory, model=tiny, seed=3, steps=4, cfg=5.0, sampler_name="euler",
                 scheduler="normal", positive=POS, negative=NEG, latent_image=empty_latent(2), denoise=1.0,
                 storage="float16")
    traj = out.args[1]
    (p,) = out.ui["sentinel_result"]
    assert [r[:4] for r in p["rows"]] == [[0, 3, 4, 4], [1, 3, 4, 4]]
    assert f"{traj.nbytes() / 2**20:.2f} MiB" in p["summary"] and "float16" in p["summary"]
    assert "2 item(s) x 4 recorded step(s) (x0, x" in p["summary"]


def test_capture_memory_is_refused_before_sampling(comfy, tiny, traj_nodes, monkeypatch):
    """10,000 steps of a large batch: refused up front with what to change (was accepted, then ran out of RAM)."""
    import comfy.utils
    from diffusion_sentinel.nodes.trajectory.recorder import CaptureTooLarge

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda *a, **k: calls.append(a))
    try:
        big = {"samples": torch.zeros(64, 4, 128, 128)}  # 64 images at 1024 px: 10,000 steps would need ~625 GiB
        with pytest.raises(CaptureTooLarge, match="every_k_steps 2.*storage float16.*keep_x off.*fewer steps"):
            run_v3(traj_nodes.KSamplerTrajectory, model=tiny, seed=1, steps=10_000, cfg=5.0, sampler_name="euler",
                   scheduler="normal", positive=POS, negative=NEG, latent_image=big, denoise=1.0)
        assert calls == []  # not a single step was sampled
    finally:
        comfy.utils.set_progress_bar_global_hook(None)


def test_get_trajectory_errors_are_clear(comfy, tiny, traj_nodes):
    with pytest.raises(ValueError, match="no trajectory capture"):
        run_v3(traj_nodes.GetCapturedTrajectory, model=tiny, latent=empty_latent(1))
    (m,) = run_v3(traj_nodes.CaptureTrajectory, model=tiny).args
    _ksampler(m)
    with pytest.raises(ValueError, match="produced this LATENT"):
        run_v3(traj_nodes.GetCapturedTrajectory, model=m, latent=empty_latent(1, seed=9))


def test_batch_items_are_independent(comfy, tiny, traj_nodes):
    """Item 1 of a batch has the trajectory of sampling item 1 alone (same per-index noise via batch_index)."""
    _, batch = _traj_ksampler(traj_nodes, tiny, latent=empty_latent(2), steps=5)
    single_latent = {"samples": torch.zeros(1, 4, 8, 8), "batch_index": [1]}
    _, single = _traj_ksampler(traj_nodes, tiny, latent=single_latent, steps=5)
    assert batch.batch_size == 2 and single.batch_size == 1
    assert single.meta["batch_index"] == [1]
    # equal up to float rounding of batched vs single convolutions (values reach ~40 with random weights); on CUDA
    # TF32 kernels chosen per batch size differ by ~1e-3 relative (tests/_device.py)
    t = _device.tol("float32", strict_rtol=1e-4, strict_atol=1e-5)
    atol = t["atol"] * float(batch.x0.abs().max())
    assert torch.allclose(batch.x0[1], single.x0[0], rtol=t["rtol"], atol=atol)
    assert torch.allclose(batch.x[1], single.x[0], rtol=t["rtol"], atol=atol)
    assert not torch.allclose(batch.x0[0], batch.x0[1])
    sub = batch.select([1])
    assert torch.equal(sub.x0, batch.x0[1:2])


def test_cfg_one_has_no_uncond_and_cfg_combination_is_recorded(comfy, tiny, traj_nodes):
    _, t1 = _traj_ksampler(traj_nodes, tiny, cfg=1.0, keep_cond_uncond=True)
    assert t1.x0_cond is not None and t1.x0_uncond is None
    assert "uncond_x0_unavailable" in t1.meta["flags"]
    assert torch.allclose(t1.x0, t1.x0_cond, rtol=1e-5, atol=1e-6)  # cfg 1: x0 is the cond prediction

    _, t7 = _traj_ksampler(traj_nodes, tiny, cfg=7.0, keep_cond_uncond=True)
    assert t7.meta["has_cond_uncond"]
    combined = t7.x0_uncond + 7.0 * (t7.x0_cond - t7.x0_uncond)
    assert torch.allclose(t7.x0, combined, rtol=1e-4, atol=1e-5)


def test_every_k_fp16_and_drop_x(comfy, tiny, traj_nodes):
    lat_ref = _ksampler(tiny, steps=10)
    lat, t = _traj_ksampler(traj_nodes, tiny, steps=10, every_k_steps=4, storage="float16", keep_x=False)
    assert torch.equal(lat["samples"], lat_ref["samples"])
    assert t.steps.tolist() == [0, 4, 8, 9]  # the last step is always kept
    assert t.x0.dtype == torch.float16 and t.x is None
    _, full = _traj_ksampler(traj_nodes, tiny, steps=10)
    assert torch.allclose(t.x0.float(), full.x0[:, [0, 4, 8, 9]], rtol=1e-2, atol=1e-2)
    assert t.bytes_per_step_item() * 2 == pytest.approx(full.bytes_per_step_item() / 2)


def test_second_order_and_adaptive_samplers_are_flagged(comfy, tiny, traj_nodes):
    _, heun = _traj_ksampler(traj_nodes, tiny, sampler="heun", steps=4)
    assert "several_model_evaluations_per_step" in heun.meta["flags"]
    assert heun.meta["model_evals_total"] == 7  # 2 per step, 1 for the last step to sigma 0
    assert heun.model_evals.tolist() == [1, 3, 5, 7]
    lat, ad = _traj_ksampler(traj_nodes, tiny, sampler="dpm_adaptive", steps=4)
    assert "steps_do_not_follow_schedule" in ad.meta["flags"] or ad.num_steps == 4
    assert torch.isfinite(ad.x0).all() and (ad.sigmas > 0).all()
    # sigma is read off the model evaluation, so it decreases even though the solver picks its own steps
    assert (ad.sigmas[1:] <= ad.sigmas[:-1] + 1e-6).all()


def test_progress_and_interrupt_work_as_builtin(comfy, tiny, traj_nodes):
    import comfy.model_management as mm
    import comfy.utils

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        _ksampler(tiny, steps=5)
        ref_calls, calls[:] = list(calls), []
        _traj_ksampler(traj_nodes, tiny, steps=5)
        assert calls == ref_calls and calls[-1] == (5, 5)

        def interrupting(value, total, preview, node_id=None):
            if value == 2:
                mm.interrupt_current_processing(True)
            mm.throw_exception_if_processing_interrupted()

        comfy.utils.set_progress_bar_global_hook(interrupting)
        with pytest.raises(mm.InterruptProcessingException):
            _traj_ksampler(traj_nodes, tiny, steps=5)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)


def test_input_model_is_not_mutated(comfy, tiny, traj_nodes):
    before = {k: dict(v) for k, v in tiny.wrappers.items()}
    opts_before = dict(tiny.model_options)
    _traj_ksampler(traj_nodes, tiny, keep_cond_uncond=True)
    run_v3(traj_nodes.CaptureTrajectory, model=tiny, keep_cond_uncond=True)
    assert {k: dict(v) for k, v in tiny.wrappers.items()} == before
    assert "sampler_post_cfg_function" not in tiny.model_options
    assert tiny.model_options.keys() == opts_before.keys()


def test_recorded_steps_satisfy_the_euler_update(comfy, tiny, traj_nodes):
    """Independent check of x, x0 and sigma: euler's step x_{i+1} = x_i + (x_i - x0_i)/s_i * (s_{i+1} - s_i)."""
    _, t = _traj_ksampler(traj_nodes, tiny, sampler="euler", steps=6)
    x, x0, s = t.x.double(), t.x0.double(), t.sigmas.double()
    for i in range(t.num_steps - 1):
        pred = x[:, i] + (x[:, i] - x0[:, i]) / s[i] * (s[i + 1] - s[i])
        assert torch.allclose(pred, x[:, i + 1], rtol=1e-4, atol=1e-4 * float(x.abs().max()))


@pytest.mark.parametrize("guider_kind", ["BasicGuider", "DualCFGGuider"])
def test_other_guiders_are_captured(comfy, tiny, traj_nodes, guider_kind):
    """Guiders other than CFGGuider (what third-party samplers build on) go through the same wrappers."""
    (m,) = run_v3(traj_nodes.CaptureTrajectory, model=tiny, keep_cond_uncond=True).args

    def guider(model):
        if guider_kind == "BasicGuider":
            return run_node("BasicGuider", model=model, conditioning=POS)[0]
        return run_node("DualCFGGuider", model=model, cond1=POS, cond2=conditioning(3), negative=NEG,
                        cfg_conds=4.0, cfg_cond2_negative=2.0, style="regular")[0]

    (noise,) = run_node("RandomNoise", noise_seed=5)
    (sampler,) = run_node("KSamplerSelect", sampler_name="euler_ancestral")
    (sigmas,) = run_node("BasicScheduler", model=m, scheduler="normal", steps=5, denoise=1.0)
    out, _ = run_node("SamplerCustomAdvanced", noise=noise, guider=guider(m), sampler=sampler, sigmas=sigmas,
                      latent_image=empty_latent(1))
    ref, _ = run_node("SamplerCustomAdvanced", noise=noise, guider=guider(tiny), sampler=sampler, sigmas=sigmas,
                      latent_image=empty_latent(1))
    assert torch.equal(out["samples"], ref["samples"])
    (traj,) = run_v3(traj_nodes.GetCapturedTrajectory, model=m, latent=out).args
    assert traj.num_steps == 5 and traj.meta["guider"].startswith("Guider_")
    assert torch.allclose(traj.sigmas, sigmas[:-1].float(), rtol=1e-5)
    if guider_kind == "BasicGuider":  # positive only: no unconditional prediction exists
        assert traj.x0_uncond is None and "uncond_x0_unavailable" in traj.meta["flags"]
