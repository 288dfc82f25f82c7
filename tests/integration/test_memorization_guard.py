"""Guard actions in a real ComfyUI: mitigation lowers the score on a tiny real U-Net under inference mode and
leaves no gradient state or U-Net copy behind; block; Wen's score from a recorded trajectory."""

from __future__ import annotations

import gc

import pytest
import torch
from _comfy import conditioning, empty_latent, run_v3
from _memorization import UNetCalls

POS = conditioning(11)
NEG = conditioning(12)
SIZE = dict(width=64, height=64)


@pytest.fixture(scope="module")
def mem(comfy):
    from diffusion_sentinel.nodes.memorization import comfy_nodes

    return comfy_nodes


def _guard(mem, model, positive=POS, **kw):
    return run_v3(mem.MemorizationGuard, model=model, positive=positive, negative=NEG, **{**SIZE, **kw})


def _unet_instances():
    import comfy.ldm.modules.diffusionmodules.openaimodel as om

    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is om.UNetModel)


def _grad_state(model):
    return [(n, p.requires_grad, p.grad is None, p.is_inference()) for n, p in model.model.named_parameters()]


@pytest.mark.parametrize("score", ["anisotropy", "wen"])
def test_mitigation_lowers_the_score_and_leaves_nothing_behind(mem, tiny, score):
    ref = _guard(mem, tiny, score=score).args
    start = ref[1][0] if score == "anisotropy" else ref[2][0]
    thr = start - 0.05 * abs(start)  # flagged, reachable
    dm_before = tiny.model.diffusion_model
    grads_before = _grad_state(tiny)
    n_unets = _unet_instances()
    opts_before = repr(tiny.model_options)
    out = _guard(mem, tiny, action="mitigate", threshold=thr, score=score, mitigation_steps=10)
    new_pos, anis, wen, flags, after = out.args[:5]
    assert flags == [True]
    assert after[0] < start and after[0] <= thr  # lowered, under the threshold
    # the output is a new embedding: BOS kept, other tokens moved; no autograd state on it
    t_new, t_old = new_pos[0][0], POS[0][0]
    assert t_new.shape == t_old.shape and not t_new.requires_grad and t_new.grad is None
    assert torch.equal(t_new[:, 0], t_old[:, 0]) and not torch.equal(t_new, t_old)
    assert new_pos[0][1] == POS[0][1]
    # the re-scored output conditioning gives score_after (independent re-run with the report action)
    again = _guard(mem, tiny, positive=new_pos, score=score).args
    assert (again[1][0] if score == "anisotropy" else again[2][0]) == pytest.approx(after[0], rel=1e-4, abs=1e-5)
    # nothing left behind: same module, same grad flags, no .grad, no extra U-Net alive, options unchanged
    assert tiny.model.diffusion_model is dm_before
    assert _grad_state(tiny) == grads_before
    assert _unet_instances() == n_unets
    assert repr(tiny.model_options) == opts_before
    assert "AdamW" in out.args[8] and "all under the threshold" in out.args[8]


def test_mitigation_passes_unflagged_prompts_through(mem, tiny):
    out = _guard(mem, tiny, action="mitigate", threshold=1e6)
    assert out.args[0] is POS and "nothing flagged" in out.args[8]


def test_mitigation_runs_on_a_patched_model_and_keeps_the_patch(mem, tiny):
    counter = UNetCalls()
    m = counter.attach(tiny)
    ref = _guard(mem, m).args
    counter.calls.clear()
    out = _guard(mem, m, action="mitigate", threshold=ref[1][0] - 0.01, mitigation_steps=3).args
    # detection (2) + optimisation (<= 4 evaluations x 2 timesteps) + re-scoring (2): all through the wrapper
    assert 6 <= len(counter.calls) <= 12 and out[4][0] < ref[1][0]


def test_block_returns_an_execution_blocker_with_the_reason(mem, tiny):
    from comfy_execution.graph_utils import ExecutionBlocker

    out = _guard(mem, tiny, action="block", threshold=-1e3)
    blocker = out.args[0]
    assert isinstance(blocker, ExecutionBlocker)
    assert "Memorization Guard blocked" in blocker.message and "prompt 0" in blocker.message
    assert out.args[3] == [True] and isinstance(out.args[1][0], float)  # scores still delivered
    ok = _guard(mem, tiny, action="block", threshold=1e3)
    assert ok.args[0] is POS and ok.args[3] == [False]


def test_report_passes_the_conditioning_through_and_shows_text(mem, tiny):
    out = _guard(mem, tiny)
    assert out.args[0] is POS
    assert out.ui.as_dict()["text"][0].startswith("Memorization Guard")


# ----------------------------------------------------------------------------- Wen from a trajectory
def _traj(comfy, model, cfg, keep_cond_uncond=True, steps=4):
    from diffusion_sentinel.nodes.trajectory import comfy_nodes as tn

    lat, traj = run_v3(tn.KSamplerTrajectory, model=model, seed=5, steps=steps, cfg=cfg, sampler_name="euler",
                       scheduler="normal", positive=conditioning(1, batch=2), negative=NEG, latent_image=empty_latent(2),
                       denoise=1.0, keep_cond_uncond=keep_cond_uncond).args
    return traj


def test_wen_from_trajectory_by_hand(mem, comfy, tiny):
    traj = _traj(comfy, tiny, cfg=6.0)
    wen, flags, report = run_v3(mem.WenScoreFromTrajectory, trajectory=traj, steps=2, threshold=0.0).args
    d = (traj.x0_uncond - traj.x0_cond).float() / traj.sigmas.view(1, -1, 1, 1, 1)
    hand = d.flatten(2).norm(dim=2)[:, :2].mean(dim=1)
    assert wen == pytest.approx(hand.tolist(), rel=1e-5)
    assert flags == [True, True] and "item 1" in report
    # the first recorded step is the sampler's sigma_max (t = 999), not the detector's t = 981
    assert float(traj.sigmas[0]) == pytest.approx(14.6146, abs=1e-3)


def test_wen_from_trajectory_errors(mem, comfy, tiny):
    with pytest.raises(ValueError, match="cfg 1"):
        run_v3(mem.WenScoreFromTrajectory, trajectory=_traj(comfy, tiny, cfg=1.0), steps=1, threshold=3.0)
    with pytest.raises(ValueError, match="keep_cond_uncond"):
        run_v3(mem.WenScoreFromTrajectory, trajectory=_traj(comfy, tiny, cfg=5.0, keep_cond_uncond=False), steps=1,
               threshold=3.0)
    with pytest.raises(ValueError, match="recorded only 4"):
        run_v3(mem.WenScoreFromTrajectory, trajectory=_traj(comfy, tiny, cfg=5.0), steps=5, threshold=3.0)


def test_guard_on_a_captured_model_records_nothing(mem, comfy, tiny):
    """A MODEL patched by Capture Trajectory: the guard's probe is not a sampling run and is not recorded."""
    from diffusion_sentinel.nodes.trajectory import comfy_nodes as tn
    from diffusion_sentinel.nodes.trajectory.capture import find_store

    (m,) = run_v3(tn.CaptureTrajectory, model=tiny).args
    _guard(mem, m)
    assert len(find_store(m).runs) == 0
