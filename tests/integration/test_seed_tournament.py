"""Seed Tournament in a real ComfyUI with a tiny U-Net: finished seeds are a plain KSampler's (bit for bit on the
CPU, for deterministic, multistep, ancestral and SDE samplers), model evaluations follow the cost model, the scores
are the signals of the plain runs, the progress bar reaches 100 % and Cancel works, cfg = 1 is refused for the CFG
signal, and the outputs agree with each other and the panel. Also KSampler (Auto-Reject)'s new signal input."""

from __future__ import annotations

import json

import _device
import pytest
import torch
from _artifact import synthetic_series
from _comfy import conditioning, empty_latent, run_node, run_v3

POS, NEG = conditioning(1), conditioning(2)
STEPS = 6
CFG = 5.0


@pytest.fixture(scope="module")
def tn(comfy):
    from diffusion_sentinel.nodes.artifact import tournament_node

    return tournament_node


@pytest.fixture(scope="module", autouse=True)
def _warm_up(comfy, tiny):
    """First CUDA calls differ from later ones (kernel selection): compare warm calls only."""
    ksampler(tiny, 0, "euler", steps=2)


@pytest.fixture()
def models_dir(comfy, tmp_path):
    import folder_paths

    d = tmp_path / "artifact_classifiers"
    d.mkdir()
    folder_paths.add_model_folder_path("artifact_classifiers", str(d), is_default=True)
    yield d
    paths, exts = folder_paths.folder_names_and_paths["artifact_classifiers"]
    folder_paths.folder_names_and_paths["artifact_classifiers"] = ([p for p in paths if p != str(d)], exts)


def ksampler(model, seed, sampler, steps=STEPS, batch=1, cfg=CFG):
    return run_node("KSampler", model=model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                    scheduler="normal", positive=POS, negative=NEG, latent_image=empty_latent(batch),
                    denoise=1.0)[0]["samples"]


def tournament(tn, model, sampler="euler", batch=1, **kw):
    args = dict(model=model, seed=10, steps=STEPS, cfg=CFG, sampler_name=sampler, scheduler="normal", positive=POS,
                negative=NEG, latent_image=empty_latent(batch), denoise=1.0, candidates=4, keep=2, check_at="2,4",
                signal="cfg_asd")
    args.update(kw)
    return run_v3(tn.SeedTournament, **args)


def _kind() -> str:
    """The tolerance kind of the test model's dtype (SENTINEL_TEST_DTYPE where the harness has it)."""
    if hasattr(_device, "model_dtype") and hasattr(_device, "dtype_kind"):
        return _device.dtype_kind(_device.model_dtype())
    return "float32"


def same(a, b):
    """Bit for bit on the CPU (every candidate is evaluated on its own, as in a plain run); on CUDA up to the
    device tolerance (kernel selection may differ between calls)."""
    if _device.ON_CUDA:
        t = _device.tol(_kind())
        return torch.allclose(a, b, rtol=t["rtol"], atol=t["atol"] * float(b.abs().max()))
    return torch.equal(a, b)


def close(a, b, rtol=1e-3):
    """Equal up to the float rounding of batched convolutions (at least ``rtol``, more for half precision)."""
    r = max(rtol, _device.tol(_kind())["rtol"])
    return torch.allclose(a, b, rtol=r, atol=r * float(b.abs().max()))


def captured_plain_run(model, seed, sampler, steps=STEPS, cfg=CFG):
    """A plain batch-1 KSampler run with the capture on (cond/uncond kept): its TRAJECTORY."""
    from diffusion_sentinel.nodes.trajectory.capture import attach_capture
    from diffusion_sentinel.nodes.trajectory.recorder import CaptureOptions

    import nodes as comfy_nodes

    m, store = attach_capture(model, CaptureOptions(keep_x=False, keep_cond_uncond=True), max_runs=1)
    with torch.inference_mode():
        comfy_nodes.common_ksampler(m, seed, steps, cfg, sampler, "normal", POS, NEG, empty_latent(1))
    return store.pop_latest()


# ------------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("sampler", ["euler", "ddim", "dpmpp_2m", "uni_pc", "euler_ancestral", "dpmpp_2m_sde",
                                     "heun"])
def test_finished_seeds_equal_plain_ksampler(tn, tiny, sampler):
    out = tournament(tn, tiny, sampler)
    lat, seeds, scores, rej_x0, rej_seeds = out.args[:5]
    rep = json.loads(out.args[7])
    assert len(seeds) == 2 and sorted(seeds + rej_seeds) == [10, 11, 12, 13]
    for i, s in enumerate(seeds):
        assert same(lat["samples"][i], ksampler(tiny, s, sampler)[0]), (sampler, s)
    assert rep["bit_identical_to_plain_ksampler"] is True
    assert rep["per_step_noise"] == {"euler_ancestral": "default", "dpmpp_2m_sde": "brownian_cpu"}.get(sampler, "none")


def test_batched_candidates_agree_up_to_rounding(tn, tiny):
    out = tournament(tn, tiny, "dpmpp_2m", batch_candidates=True)
    lat, seeds = out.args[0], out.args[1]
    for i, s in enumerate(seeds):
        assert close(lat["samples"][i], ksampler(tiny, s, "dpmpp_2m")[0])
    rep = json.loads(out.args[7])
    assert rep["bit_identical_to_plain_ksampler"] is False and any("float rounding" in n for n in rep["notes"])


def test_each_latent_of_a_batch_gets_its_own_tournament(tn, tiny):
    out = tournament(tn, tiny, "euler", batch=2, candidates=3, keep=1, check_at="3")
    lat, seeds, scores, rej_x0, rej_seeds, _, traj = out.args[:7]
    assert lat["samples"].shape[0] == 2 and len(seeds) == 2 and len(rej_seeds) == 4 and traj.batch_size == 2
    for i, s in enumerate(seeds):  # item i of a plain batch-2 KSampler at that seed, up to batched rounding
        assert close(lat["samples"][i], ksampler(tiny, s, "euler", batch=2)[i])
    rep = json.loads(out.args[7])
    assert [c["item"] for c in rep["kept"]] == [0, 1] and rep["model_evaluations"] == 2 * (3 * 3 + 1 * 3)


# ------------------------------------------------------------------------------------------------ cost, scores
def test_model_evaluations_follow_the_cost_model(tn, tiny):
    from diffusion_sentinel.nodes.artifact.tournament import parse_check_at, planned_cost

    out = tournament(tn, tiny, "euler", candidates=4, keep=1, check_at="1,3")
    rep = json.loads(out.args[7])
    # 4 candidates for 1 step, 2 for the next 2 steps, 1 for the last 3: 4 + 4 + 3 = 11 of 24
    assert rep["model_evaluations"] == 11 == out.args[11]
    assert rep["model_evaluations"] == planned_cost(4, parse_check_at("1,3", STEPS, 4, 1), STEPS)
    assert rep["model_evaluations_all_to_the_end"] == 4 * STEPS
    assert out.args[12] == pytest.approx(1 - 11 / 24)
    # heun: 2 evaluations per step but the callback after the first, so the per-candidate counts add up instead
    out = tournament(tn, tiny, "heun", candidates=4, keep=1, check_at="1,3")
    rep = json.loads(out.args[7])
    per_run = rep["model_evaluations_per_full_run"][0]
    assert per_run == 2 * STEPS - 1
    assert rep["model_evaluations"] == sum(c["model_evals"] for c in rep["kept"] + rep["rejected"])
    assert [c["model_evals"] for c in rep["rejected"]] == [1, 1, 5]  # out at step 1, 1 (1st eval), step 3 (1+2+2)


def test_scores_are_the_cfg_asd_of_the_plain_runs(tn, tiny):
    from diffusion_sentinel.nodes.artifact.signals import accumulated_score_difference, cfg_score_differences

    out = tournament(tn, tiny, "dpmpp_2m", candidates=4, keep=2, check_at="2,4")
    rep = json.loads(out.args[7])
    for c in rep["kept"] + rep["rejected"]:
        t = captured_plain_run(tiny, c["seed"], "dpmpp_2m")
        for step, v in c["scores"].items():
            k = int(step)
            want = accumulated_score_difference(cfg_score_differences(t.x0_cond[:, :k], t.x0_uncond[:, :k],
                                                                      t.sigmas[:k]))[0]
            assert v == _device.approx(want, _kind()), (c["seed"], k)
    kept = rep["kept"]
    assert out.args[2] == [c["score"] for c in kept] and kept[0]["score"] >= kept[1]["score"]  # best first
    # every rejected candidate ranked below every survivor at the check where it lost
    for c in rep["rejected"]:
        at = str(c["out_step"])
        assert all(k["scores"][at] >= c["scores"][at] for k in kept)


def test_cfg_signal_with_cfg_1_is_refused_before_sampling(tn, tiny):
    import comfy.utils
    from diffusion_sentinel.nodes.artifact.signals import SignalUnavailable

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda *a, **k: calls.append(a))
    try:
        with pytest.raises(SignalUnavailable, match="cfg = 1"):
            tournament(tn, tiny, cfg=1.0)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert calls == []


def test_progress_reaches_100_and_cancel_works(tn, tiny):
    import comfy.model_management as mm
    import comfy.utils

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda v, total, preview, node_id=None: calls.append((v, total)))
    try:
        tournament(tn, tiny, "euler", batch=2, candidates=3, keep=1, check_at="3")
        assert {t for _, t in calls} == {2 * STEPS}
        values = [v for v, _ in calls]
        assert values == sorted(values) and values[-1] == 2 * STEPS

        def interrupting(value, total, preview, node_id=None):
            if value == 3:
                mm.interrupt_current_processing(True)
            mm.throw_exception_if_processing_interrupted()

        comfy.utils.set_progress_bar_global_hook(interrupting)
        with pytest.raises(mm.InterruptProcessingException):
            tournament(tn, tiny, "euler")
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    out = tournament(tn, tiny, "euler")  # nothing left half-open
    assert same(out.args[0]["samples"][0], ksampler(tiny, out.args[1][0], "euler")[0])


# ------------------------------------------------------------------------------------------------ outputs
def test_outputs_panel_and_previews_agree(tn, tiny, tiny_vae):
    from comfy_execution.graph_utils import ExecutionBlocker
    from diffusion_sentinel.nodes.trajectory.capture import latent_out

    out = tournament(tn, tiny, "euler", vae=tiny_vae)
    (lat, seeds, scores, rej_x0, rej_seeds, images, traj, report, n_kept, best_seed, best_score, evals,
     saved) = out.args
    rep = json.loads(report)
    assert n_kept == 2 == len(seeds) and best_seed == seeds[0] and best_score == scores[0]
    assert evals == rep["model_evaluations"] and saved == pytest.approx(rep["saved_ratio"])
    assert rej_x0["samples"].shape == (2, 4, 8, 8) and images.shape[0] == 2 and images.shape[-1] == 3
    assert traj.batch_size == 2 and traj.meta["seeds"] == seeds and traj.num_steps == STEPS
    # a rejected preview is that seed's x0 at the check where it lost (plain run's x0 at that step)
    for j, s in enumerate(rej_seeds):
        c = next(c for c in rep["rejected"] if c["seed"] == s)
        t = captured_plain_run(tiny, s, "euler")
        want = latent_out(t, t.x0[0, c["out_step"] - 1].float())
        assert same(rej_x0["samples"][j], want)
    (p,) = out.ui["sentinel_result"]
    assert [r[1] for r in p["rows"]] == seeds + rej_seeds and p["highlight"] == [0, 1]
    assert [r[4] for r in p["rows"][:2]] == pytest.approx(scores)  # the score at the last check (the output)
    # column 3: every candidate's score at the first check, where all of them are ranked together: the ones that
    # went on score at least as well there as every one that went out there (cfg_asd: higher is better)
    first = rep["checks"][0]["step"]
    by_seed = {c["seed"]: c for c in rep["kept"] + rep["rejected"]}
    assert [r[3] for r in p["rows"]] == pytest.approx([by_seed[r[1]]["scores"][str(first)] for r in p["rows"]])
    out_first = [r[3] for r in p["rows"] if by_seed[r[1]].get("out_step") == first]
    went_on = [r[3] for r in p["rows"] if by_seed[r[1]].get("out_step") != first]
    assert out_first and went_on and min(went_on) >= max(out_first)
    assert "kept 2 of 4" in p["summary"] and f"{evals} of {4 * STEPS} model evaluations" in p["summary"]
    no_vae = tournament(tn, tiny, "euler")
    assert isinstance(no_vae.args[5], ExecutionBlocker)


def test_input_model_is_not_mutated(tn, tiny):
    before = {k: dict(v) for k, v in tiny.wrappers.items()}
    opts_before = dict(tiny.model_options)
    tournament(tn, tiny, "euler")
    assert {k: dict(v) for k, v in tiny.wrappers.items()} == before and tiny.model_options.keys() == opts_before.keys()


# ------------------------------------------------------------------------------------------------ classifier signals
def _prefix_model(path, length, full_length, seed=0):
    from diffusion_sentinel.classifiers import ArtifactModel, TrainedFor, make_model

    X, y = synthetic_series(60, length=full_length, seed=seed)
    est = make_model("default").fit(X[:, :length], y)
    ArtifactModel(est, TrainedFor("latent_cosine", True, length, full_length), name=path.stem).save(path)
    return path.name


def test_classifier_and_rank_average_signals(tn, tiny, models_dir):
    from diffusion_sentinel.classifiers import load_model
    from diffusion_sentinel.nodes.artifact.signals import HIGHER, LOWER, rank_average
    from diffusion_sentinel.nodes.trajectory.frames import series_from_trajectory

    name = _prefix_model(models_dir / "pre3of6.safetensors", 3, STEPS)
    model = load_model(str(models_dir / name))
    out = tournament(tn, tiny, "euler", signal="classifier", classifier=name, check_at="3", keep=1)
    rep = json.loads(out.args[7])
    for c in rep["kept"] + rep["rejected"]:
        series = series_from_trajectory(captured_plain_run(tiny, c["seed"], "euler"), "latent_cosine", True)
        p, _ = model.p_artifact(series.values.numpy(), "latent_cosine", True, run_length=STEPS)
        assert c["scores"]["3"] == pytest.approx(float(p[0]), rel=1e-6, abs=1e-9)
    assert rep["kept"][0]["score"] == min(c["scores"]["3"] for c in rep["kept"] + rep["rejected"])
    out = tournament(tn, tiny, "euler", signal="rank_average", classifier=name, check_at="3", keep=1)
    rep = json.loads(out.args[7])
    cands = sorted(rep["kept"] + rep["rejected"], key=lambda c: c["candidate"])
    comps = [c["components"]["3"] for c in cands]
    want = rank_average(([d["cfg_asd"] for d in comps], HIGHER), ([d["p_artifact"] for d in comps], LOWER))
    assert [c["scores"]["3"] for c in cands] == pytest.approx(list(want))


def test_classifier_signal_errors_name_the_fix(tn, tiny, models_dir):
    from diffusion_sentinel.classifiers import ArtifactModel, TrainedFor, make_model

    with pytest.raises(ValueError, match="needs a prefix classifier"):
        tournament(tn, tiny, signal="classifier")
    X, y = synthetic_series(40, length=STEPS, seed=1)
    ArtifactModel(make_model("default").fit(X, y), TrainedFor("latent_cosine", True, STEPS)).save(
        models_dir / "full6.safetensors")
    with pytest.raises(ValueError, match=r"judges complete runs.*\*prefix\* classifier"):
        tournament(tn, tiny, signal="classifier", classifier="full6.safetensors")
    name = _prefix_model(models_dir / "pre4of6.safetensors", 4, STEPS)
    with pytest.raises(ValueError, match="after 4 of 6 steps; check_at starts at step 2"):
        tournament(tn, tiny, signal="classifier", classifier=name, check_at="2,5")
    with pytest.raises(ValueError, match="keep must be between 1 and candidates - 1"):
        tournament(tn, tiny, candidates=3, keep=3)
    for sampler in ("dpm_fast", "dpm_adaptive"):
        with pytest.raises(ValueError, match="takes its own steps"):
            tournament(tn, tiny, sampler)


# ------------------------------------------------------------------------------------------------ auto-reject signal
def test_auto_reject_cfg_signal_stops_retries_that_rank_below(comfy, tiny):
    from diffusion_sentinel.nodes.artifact import autoreject_node

    args = dict(model=tiny, seed=20, steps=STEPS, cfg=CFG, sampler_name="euler", scheduler="normal", positive=POS,
                negative=NEG, latent_image=empty_latent(1), denoise=1.0, classifier="none", tau=0.0, max_tries=4,
                dmax_threshold=0.002, rule_metric="latent_cosine", signal="cfg_asd", check_at="2")
    out = run_v3(autoreject_node.KSamplerAutoReject, **args)
    rep = json.loads(out.args[5])
    tries = rep["tries"]
    assert len(tries) == 4 and tries[0]["complete"] and tries[-1]["complete"]
    ref = None  # the ASD (at step 2) of the item's best complete try so far
    best_p = None
    for t in tries:
        v = t["early_values"][0]["cfg_asd"]
        plain = captured_plain_run(tiny, t["seed"], "euler")
        from diffusion_sentinel.nodes.artifact.signals import accumulated_score_difference, cfg_score_differences

        want = accumulated_score_difference(cfg_score_differences(plain.x0_cond[:, :2], plain.x0_uncond[:, :2],
                                                                  plain.sigmas[:2]))[0]
        assert v == _device.approx(want, _kind())
        stopped = t["stopped_early_at"] is not None
        expect_stop = t["index"] < 3 and ref is not None and v < ref
        assert stopped == expect_stop, (t["index"], v, ref)
        if stopped:
            assert t["stopped_early_at"] == 1 and t["model_evals"] == 2
        elif best_p is None or t["p"][0] < best_p:
            best_p, ref = t["p"][0], v
    assert rep["image_model_evaluations"] == sum(t["model_evals"] for t in tries)
    with pytest.raises(ValueError, match="cfg = 1"):
        run_v3(autoreject_node.KSamplerAutoReject, **{**args, "cfg": 1.0})
    with pytest.raises(ValueError, match="rank_average needs a prefix classifier"):
        run_v3(autoreject_node.KSamplerAutoReject, **{**args, "signal": "rank_average"})
    # the default signal keeps the old behaviour: no early stop without an early classifier
    rep = json.loads(run_v3(autoreject_node.KSamplerAutoReject, **{**args, "signal": "classifier"}).args[5])
    assert all(t["complete"] for t in rep["tries"]) and len(rep["tries"]) == 4
