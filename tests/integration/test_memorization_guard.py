"""Guard actions in a real ComfyUI: mitigation lowers the score on a tiny real U-Net under inference mode and
leaves no gradient state or U-Net copy behind; block; Wen's score from a recorded trajectory."""

from __future__ import annotations

import gc

import pytest
import torch
from _comfy import conditioning, empty_latent, run_v3
from _memorization import FakeClip, UNetCalls, approx

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
    assert (again[1][0] if score == "anisotropy" else again[2][0]) == approx(after[0], tiny, strict_rtol=1e-4,
                                                                              strict_atol=1e-5)
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
    assert out.ui["text"][0].startswith("Memorization Guard: ")


def _panel(out, i=0):
    from diffusion_sentinel.nodes.common.ui import RESULT_KEY

    return out.ui[RESULT_KEY][i]


def _column(p, key):
    j = [c["key"] for c in p["columns"]].index(key)
    return [r[j] for r in p["rows"]]


@pytest.mark.parametrize("action", ["report", "mitigate", "block"])
def test_the_panel_shows_the_outputs_per_prompt_with_threshold_action_and_direction(mem, tiny, action):
    pos2 = conditioning(13, batch=2)
    ref = _guard(mem, tiny, positive=pos2).args
    thr = (ref[1][0] + ref[1][1]) / 2  # one prompt flagged, one not
    out = _guard(mem, tiny, positive=pos2, action=action, threshold=thr, mitigation_steps=2)
    a = out.args
    p = _panel(out)
    assert _column(p, "prompt") == [0, 1]
    assert _column(p, "anisotropy") == a[1] and _column(p, "wen") == a[2] and _column(p, "memorized") == a[3]
    assert _column(p, "norm") == a[5] and _column(p, "cosine") == a[6]
    assert p["highlight"] == [i for i, f in enumerate(a[3]) if f] == [int(ref[1][1] > ref[1][0])]
    assert f"> {thr:.3f}" in p["summary"] and f"action {action}" in p["summary"]
    assert "higher = more likely memorized" in p["summary"]
    assert all(c.get("direction") == "higher = more likely memorized" for c in p["columns"]
               if c["key"] in ("anisotropy", "norm", "cosine", "wen"))
    if action == "mitigate":
        assert _column(p, "score_after") == a[4] and a[4][a[3].index(True)] < a[1][a[3].index(True)]
    else:
        assert "score_after" not in [c["key"] for c in p["columns"]]
    # batch-level outputs: one value each, consistent with the lists
    assert a[9] is True and a[10] == 1 and a[11] == max(a[1])
    assert "blocked" in p["summary"] if action == "block" else "blocked" not in p["summary"]


def test_batch_level_outputs_are_single_values_and_list_tooltips_say_list(mem):
    schema = mem.MemorizationGuard.GET_SCHEMA()
    by_name = {o.display_name: o for o in schema.outputs}
    for name in ("any_memorized", "n_memorized", "max_score", "threshold"):
        assert not by_name[name].is_output_list
    for name in ("anisotropy", "wen", "memorized", "score_after", "norm_term", "cosine_term"):
        assert by_name[name].is_output_list and by_name[name].tooltip.startswith("List, one value per prompt")
    assert [o.display_name for o in schema.outputs][:9] == ["positive", "anisotropy", "wen", "memorized", "score_after",
                                                            "norm_term", "cosine_term", "threshold", "report"]


def test_nothing_flagged_gives_false_zero_and_the_max(mem, tiny):
    a = _guard(mem, tiny, threshold=1e6).args
    assert a[9] is False and a[10] == 0 and a[11] == a[1][0]


# ----------------------------------------------------------------------------- Wen from a trajectory
def _traj(comfy, model, cfg, keep_cond_uncond=True, steps=4):
    from diffusion_sentinel.nodes.trajectory import comfy_nodes as tn

    lat, traj = run_v3(tn.KSamplerTrajectory, model=model, seed=5, steps=steps, cfg=cfg, sampler_name="euler",
                       scheduler="normal", positive=conditioning(1, batch=2), negative=NEG, latent_image=empty_latent(2),
                       denoise=1.0, keep_cond_uncond=keep_cond_uncond).args
    return traj


def test_wen_from_trajectory_by_hand(mem, comfy, tiny):
    traj = _traj(comfy, tiny, cfg=6.0)
    out = run_v3(mem.WenScoreFromTrajectory, trajectory=traj, steps=2, threshold=0.0)
    wen, flags, report, any_flag, n_flag, top = out.args
    d = (traj.x0_uncond - traj.x0_cond).float() / traj.sigmas.view(1, -1, 1, 1, 1)
    hand = d.flatten(2).norm(dim=2)[:, :2].mean(dim=1)
    assert wen == pytest.approx(hand.tolist(), rel=1e-5)  # float32 arithmetic on the stored tensors, on the CPU
    assert flags == [True, True] and "item 1" in report
    assert any_flag is True and n_flag == 2 and top == max(wen)
    p = _panel(out)
    assert _column(p, "wen") == wen and _column(p, "memorized") == flags and p["highlight"] == [0, 1]
    assert "Wen > 0.000 (higher = more likely memorized)" in p["summary"]
    # the first recorded step is the sampler's sigma_max (t = 999), not the detector's t = 981
    assert float(traj.sigmas[0]) == pytest.approx(14.6146, abs=1e-3)


def test_wen_from_trajectory_errors(mem, comfy, tiny):
    with pytest.raises(ValueError, match="cfg 1"):
        run_v3(mem.WenScoreFromTrajectory, trajectory=_traj(comfy, tiny, cfg=1.0), steps=1, threshold=1.5)
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


# ----------------------------------------------------------------------------- newer ComfyUI: dynamic VRAM, multi-GPU
def _as_dynamic(model, delegate_error=None):
    """``model`` posing as a ModelPatcherDynamic (ComfyUI >= 0.16): is_dynamic() and clone(disable_dynamic=...)."""
    import types

    m = model.clone()
    calls = []
    plain_clone = m.clone

    def clone(self, disable_dynamic=False, **kw):
        calls.append(disable_dynamic)
        if disable_dynamic and delegate_error is not None:
            raise delegate_error
        c = plain_clone()
        if not disable_dynamic:
            c.is_dynamic = lambda: True
            c.clone = types.MethodType(clone, c)
        return c

    m.is_dynamic = lambda: True
    m.clone = types.MethodType(clone, m)
    return m, calls


def test_mitigation_under_dynamic_vram_uses_the_non_dynamic_delegate(mem, tiny):
    ref = _guard(mem, tiny).args
    m, calls = _as_dynamic(tiny)
    out = _guard(mem, m, action="mitigate", threshold=ref[1][0] - 0.01, mitigation_steps=2).args
    assert calls.count(True) == 1  # one delegate, for the optimisation; detection ran on the dynamic model
    assert out[4][0] < ref[1][0] and out[1] == approx(ref[1], tiny)
    bad, _ = _as_dynamic(tiny, RuntimeError("Cannot create non-dynamic delegate: cached_patcher_init is not initialized."))
    with pytest.raises(RuntimeError, match="--disable-dynamic-vram.*cached_patcher_init"):
        _guard(mem, bad, action="mitigate", threshold=ref[1][0] - 0.01, mitigation_steps=2)
    assert _guard(mem, bad, action="report").args[1] == approx(ref[1], tiny)  # detection alone needs no delegate


def test_gradient_evaluations_stay_on_one_device_and_thread(mem, tiny, monkeypatch):
    """Newer ComfyUI runs conds on several GPUs in worker threads under no_grad when the model options hold
    'multigpu_clones'; mitigation (gradients) and the volume JVP (tangents) must not be sent there, detection may."""
    import comfy.samplers

    seen = []
    real = comfy.samplers.calc_cond_batch

    def spy(model, conds, x, timestep, model_options):
        seen.append(("multigpu_clones" in model_options, torch.is_grad_enabled()))
        return real(model, conds, x, timestep, {k: v for k, v in model_options.items() if k != "multigpu_clones"})

    monkeypatch.setattr(comfy.samplers, "calc_cond_batch", spy)
    m = tiny.clone()
    m.model_options["multigpu_clones"] = {}  # what ComfyUI adds when extra GPUs are attached
    ref = _guard(mem, m).args
    assert seen and all(multi for multi, _ in seen)  # detection: left to ComfyUI
    seen.clear()
    _guard(mem, m, action="mitigate", threshold=ref[1][0] - 0.01, mitigation_steps=1)
    with_grad = [multi for multi, grad in seen if grad]
    assert with_grad and not any(with_grad)  # every gradient-carrying evaluation on the main device


# ----------------------------------------------------------------------------- the negative prompt
def _guard_in_graph(mem, model, negative, negative_text, clip=None, link_text=False, **kw):
    """The guard as node 8 of an API prompt whose negative comes from node 7 (a CLIPTextEncode)."""
    from comfy_api.latest import io

    prompt = {"7": {"class_type": "CLIPTextEncode",
                    "inputs": {"text": ["5", 0] if link_text else negative_text, "clip": ["4", 1]}},
              "8": {"class_type": "SentinelMemorizationGuard", "inputs": {"negative": ["7", 0]}}}
    with torch.inference_mode():
        c = mem.MemorizationGuard.PREPARE_CLASS_CLONE({io.Hidden.prompt: prompt, io.Hidden.unique_id: "8"})
        return c.EXECUTE_NORMALIZED(model=model, positive=POS, negative=negative, clip=clip, **{**SIZE, **kw})


def _warnings(out):
    return [n for n in _panel(out)["notes"] if n.startswith("warning")]


def test_a_non_empty_negative_prompt_is_warned_in_the_panel_and_the_log(mem, tiny, caplog):
    clip = FakeClip()
    neg_text = clip.encode_from_tokens_scheduled(clip.tokenize("blurry, ugly"))
    with caplog.at_level("WARNING", logger="diffusion_sentinel"):
        out = _guard_in_graph(mem, tiny, neg_text, "blurry, ugly")
    w = _warnings(out)
    assert len(w) == 1 and 'node 7, CLIPTextEncode: "blurry, ugly"' in w[0] and "EMPTY prompt" in w[0]
    assert any("negative prompt is not empty" in r.getMessage() for r in caplog.records)
    assert "negative prompt is not empty" in out.args[8]  # the report output too
    empty = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    assert _warnings(_guard_in_graph(mem, tiny, empty, "  ")) == []  # whitespace only = empty


def test_without_the_text_the_connected_clip_decides(mem, tiny):
    clip = FakeClip()
    empty = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    other = clip.encode_from_tokens_scheduled(clip.tokenize("blurry"))
    # text arriving through a link: the graph cannot tell; no CLIP: no claim either way
    assert _warnings(_guard_in_graph(mem, tiny, other, None, link_text=True)) == []
    assert _warnings(_guard_in_graph(mem, tiny, empty, None, link_text=True, clip=clip)) == []
    w = _warnings(_guard_in_graph(mem, tiny, other, None, link_text=True, clip=clip))
    assert len(w) == 1 and "differs from the connected CLIP's encoding of the empty prompt" in w[0]


def test_a_zeroed_negative_is_warned(mem, tiny):
    zero = [[torch.zeros(1, 77, 768), {}]]
    w = _warnings(run_v3(mem.MemorizationGuard, model=tiny, positive=POS, negative=zero, **SIZE))
    assert len(w) == 1 and "all zeros" in w[0]


# ----------------------------------------------------------------------------- progress and Cancel
@pytest.fixture
def progress_hook(monkeypatch):
    import comfy.utils

    seen = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview=None, node_id=None:
                        seen.append((value, total)))
    return seen


def test_the_progress_bar_ends_at_100_percent_when_mitigation_converges_early(mem, tiny, progress_hook):
    ref = _guard(mem, tiny).args
    out = _guard(mem, tiny, action="mitigate", threshold=ref[1][0] - 1e-4, mitigation_steps=50).args
    assert out[4][0] <= ref[1][0] - 1e-4  # converged long before 50 steps
    value, total = progress_hook[-1]
    assert value == total and total > 50  # the mitigation bar (50 steps budgeted) shows done


def test_cancel_during_mitigation_stops_and_restores_the_model(mem, tiny, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    ref = _guard(mem, tiny).args
    dm = tiny.model.diffusion_model
    calls = []

    def hook(value, total, preview=None, node_id=None):
        calls.append(value)
        if len(calls) == 4:  # inside the optimisation
            mm.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _guard(mem, tiny, action="mitigate", threshold=ref[1][0] - 10.0, mitigation_steps=20)
    finally:
        mm.interrupt_current_processing(False)
    assert tiny.model.diffusion_model is dm and len(calls) < 10


@pytest.mark.parametrize("prediction", [["eps"], "abc", None, 3])
def test_wen_from_a_trajectory_with_tampered_meta_is_a_clear_error(mem, comfy, tiny, prediction):
    """A TRAJECTORY loaded from a file whose metadata was edited: the pack's error, never a raw TypeError."""
    import copy

    traj = copy.copy(_traj(comfy, tiny, cfg=5.0, steps=2))
    traj.meta = dict(traj.meta, prediction=prediction)
    with pytest.raises(ValueError, match="eps- or v-prediction"):
        run_v3(mem.WenScoreFromTrajectory, trajectory=traj, steps=1, threshold=1.5)
