"""Memorization Scores (Trajectory) in a real ComfyUI: the latent-update score read from KSampler (Trajectory) runs
equals a hand computation from the recorded tensors (no model call), Wen's score beside it, batch-level outputs,
every-k-th recording, stochastic samplers, img2img and recordings it cannot score."""

from __future__ import annotations

import math

import pytest
import torch
from _comfy import conditioning, empty_latent, run_v3

NEG = conditioning(12)


@pytest.fixture(scope="module")
def mem(comfy):
    from diffusion_sentinel.nodes.memorization import comfy_nodes

    return comfy_nodes


def _traj(model, steps=6, cfg=6.0, sampler="euler", denoise=1.0, every=1, keep_x=True, keep_cu=True, latent=None):
    from diffusion_sentinel.nodes.trajectory import comfy_nodes as tn

    lat, traj = run_v3(tn.KSamplerTrajectory, model=model, seed=5, steps=steps, cfg=cfg, sampler_name=sampler,
                       scheduler="normal", positive=conditioning(1, batch=3), negative=NEG,
                       latent_image=latent if latent is not None else empty_latent(3), denoise=denoise,
                       every_k_steps=every, keep_x=keep_x, keep_cond_uncond=keep_cu).args
    return traj


def _hand_scores(traj):
    """rho per item and update from the stored tensors, written out with plain arithmetic (eps model, data_std 1)."""
    x = traj.x.double()
    sig = [float(s) for s in traj.sigmas] + [0.0]
    lat = [x[:, k] / math.sqrt(1 + sig[k] ** 2) for k in range(x.shape[1])] + [traj.final.double()]
    d = x[0, 0].numel()
    out = []
    for i in range(x.shape[0]):
        best = -1.0
        for k in range(len(lat) - 1):
            u = float((lat[k + 1][i] - lat[k][i]).pow(2).sum().sqrt()) / math.sqrt(d)
            a0, a1 = 1 / math.sqrt(1 + sig[k] ** 2), 1 / math.sqrt(1 + sig[k + 1] ** 2)
            r = math.hypot(a1 - a0, sig[k + 1] * a1 - sig[k] * a0)
            if sig[k] >= 1.0:  # SNR = 1 / sigma^2 <= 1
                best = max(best, u / r)
        out.append(best)
    return out


def test_update_score_by_hand_beside_wen_with_no_model_call(mem, tiny):
    traj = _traj(tiny)
    out = run_v3(mem.MemorizationScoresTrajectory, trajectory=traj, threshold=1.0)
    u, flags, wen, wen_flags, report, any_flag, n_flag, top = out.args
    assert u == pytest.approx(_hand_scores(traj), rel=1e-9)
    hand_wen = ((traj.x0_uncond[:, 0] - traj.x0_cond[:, 0]).double() / float(traj.sigmas[0])).flatten(1).norm(dim=1)
    assert wen == pytest.approx(hand_wen.tolist(), rel=1e-5)
    assert flags == [v > 1.0 for v in u] and wen_flags == [v > 1.5 for v in wen]
    assert any_flag == any(flags) and n_flag == sum(flags) and top == max(u)
    assert "MODEL" not in {i.get_io_type() for i in mem.MemorizationScoresTrajectory.GET_SCHEMA().inputs}
    p = out.ui["sentinel_result"][0]
    assert [r[1] for r in p["rows"]] == u and [r[4] for r in p["rows"]] == pytest.approx(wen)
    assert len(p["series"]) == 3 and len(p["series"][0]) == traj.num_steps  # rho per update (last one to final)
    assert p["columns"][1]["direction"] == "higher = more likely memorized"
    assert "U > 1.000" in p["summary"] and "item 2" in report
    peak = [r[2] for r in p["rows"]]
    assert all(s >= 1.0 for s in peak)  # the peak lies in the noise phase


def test_threshold_and_snr_window_change_what_is_flagged(mem, tiny):
    traj = _traj(tiny)
    u = run_v3(mem.MemorizationScoresTrajectory, trajectory=traj).args[0]
    low = run_v3(mem.MemorizationScoresTrajectory, trajectory=traj, threshold=min(u) - 1e-6).args
    assert low[1] == [True] * 3 and low[6] == 3
    wide = run_v3(mem.MemorizationScoresTrajectory, trajectory=traj, snr_max=1e4).args[0]
    assert all(w >= v for w, v in zip(wide, u))  # a wider window can only raise the maximum


def test_every_kth_step_and_no_cond_uncond(mem, tiny):
    full = _traj(tiny, steps=6)
    sparse = _traj(tiny, steps=6, every=2, keep_cu=False)
    assert sparse.num_steps < full.num_steps
    out = run_v3(mem.MemorizationScoresTrajectory, trajectory=sparse).args
    assert out[0] == pytest.approx(_hand_scores(sparse), rel=1e-9)
    assert all(math.isnan(w) for w in out[2]) and out[3] == [False] * 3
    assert "every 2th step" in out[4] and "Wen: not available" in out[4]


def test_stochastic_sampler_is_noted(mem, tiny):
    out = run_v3(mem.MemorizationScoresTrajectory, trajectory=_traj(tiny, sampler="euler_ancestral")).args
    assert "adds fresh noise" in out[4]


def test_img2img_below_the_noise_phase_gives_nan_with_a_warning(mem, tiny):
    traj = _traj(tiny, denoise=0.3, latent=empty_latent(3, seed=3))
    assert float(traj.sigmas[0]) < 1.0
    out = run_v3(mem.MemorizationScoresTrajectory, trajectory=traj).args
    assert all(math.isnan(v) for v in out[0]) and out[1] == [False] * 3 and math.isnan(out[7])
    assert "no update starts in the noise phase" in out[4]


def test_recordings_that_cannot_be_scored_are_refused_clearly(mem, tiny):
    with pytest.raises(ValueError, match="keep_x"):
        run_v3(mem.MemorizationScoresTrajectory, trajectory=_traj(tiny, keep_x=False))
    one = _traj(tiny, steps=1)
    one.final = None
    with pytest.raises(ValueError, match="no update to measure"):
        run_v3(mem.MemorizationScoresTrajectory, trajectory=one)
    bad = _traj(tiny, steps=3)
    bad.sigmas = torch.flip(bad.sigmas, [0])
    with pytest.raises(ValueError, match="does not decrease"):
        run_v3(mem.MemorizationScoresTrajectory, trajectory=bad)
