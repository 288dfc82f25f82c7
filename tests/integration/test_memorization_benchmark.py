"""Memorization Benchmark in a real ComfyUI (tiny U-Net, a fake CLIP): all prompts of a batch in one U-Net call per
noise level, the table equals an independent computation from the per-prompt scores, the calibration is written
for the Guard (and nothing is written on a refusal), prompt files from the input folder, progress and Cancel, and
the command line on the tiny checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _comfy import run_v3
from _memorization import FakeClip, UNetCalls, approx
from sklearn.metrics import roc_auc_score, roc_curve

MEM = ["an iconic poster of a movie", "the famous painting everybody knows", "a stock photo of a living room",
       "\"Watch: a quoted, \"\"CSV\"\" title\""]
NON = ["a purple cat riding a bicycle on mars", "a watercolor of three lemons", "an isometric castle made of jelly",
       "a robot reading a newspaper in the rain", "two owls on a branch at dawn"]
SIZE = dict(width=64, height=64)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mem(comfy):
    from diffusion_sentinel.nodes.memorization import comfy_nodes

    return comfy_nodes


@pytest.fixture
def cal_dir(mem, tmp_path, monkeypatch):
    import folder_paths

    d = tmp_path / "memorization_calibrations"
    d.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, mem.CAL_DIR, ([str(d)], {".json"}))
    return d


@pytest.fixture
def input_dir(tmp_path, monkeypatch):
    import folder_paths

    d = tmp_path / "input"
    d.mkdir()
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(d))
    return d


def _clip():
    return FakeClip(shift={p: 2.0 for p in MEM})  # memorized prompts get a stronger embedding


def _bench(mem, tiny, **kw):
    args = dict(model=tiny, clip=_clip(), memorized_prompts="\n".join(MEM), normal_prompts="\n".join(NON),
                prompts_per_batch=16, **SIZE)
    args.update(kw)
    return run_v3(mem.MemorizationBenchmark, **args)


def test_one_unet_call_per_noise_level_for_a_whole_batch_and_the_same_scores_as_one_at_a_time(mem, tiny):
    from diffusion_sentinel.nodes.memorization import benchmark as bm
    from diffusion_sentinel.nodes.memorization import detection

    clip = _clip()
    conds = bm.encode_prompts(clip, MEM + NON)
    neg = bm.encode_prompts(clip, [""])[0]
    settings = detection.DetectorSettings(seed=51, n_samples=2, **SIZE)
    counter = UNetCalls()
    m = counter.attach(tiny, key="test.counter")
    with torch.inference_mode():
        batched = bm.score_conditionings(m, conds, neg, settings, batch_size=16)
        calls_batched = list(counter.calls)
        counter.calls.clear()
        single = bm.score_conditionings(m, conds, neg, settings, batch_size=1)
    n = len(MEM + NON)
    # t=981 and t=41, each ONE call holding every prompt's conditional rows and the unconditional rows
    assert len(calls_batched) == 2 and batched.unet_calls == 2 and batched.batches == 1
    assert all(c["rows"] == 2 * n * 2 for c in calls_batched)  # (cond + uncond) x prompts x 2 noise samples
    assert sorted(set(calls_batched[0]["cond_or_uncond"])) == [0, 1]
    assert len(counter.calls) == 2 * n and single.batches == n
    assert batched.norm.tolist() == approx(single.norm.tolist(), tiny)
    assert batched.cosine.tolist() == approx(single.cosine.tolist(), tiny, strict_rtol=1e-4, strict_atol=1e-5)
    assert batched.wen.tolist() == approx(single.wen.tolist(), tiny)
    assert batched.seconds > 0


def _hand_tpr(y, s, fpr_max=0.01):
    fpr, tpr, _ = roc_curve(y, s)
    return float(tpr[fpr <= fpr_max + 1e-12].max())


def test_table_outputs_panel_and_calibration_for_the_guard(mem, tiny, cal_dir):
    from diffusion_sentinel.nodes.memorization import benchmark as bm
    from diffusion_sentinel.nodes.memorization import detection

    out = _bench(mem, tiny, calibration_name="bench test")
    auc_a, tpr_a, auc_w, tpr_w, pps, name, report = out.args
    # independent: the per-prompt scores, one prompt at a time, and scikit-learn
    with torch.inference_mode():
        s = bm.score_conditionings(tiny, bm.encode_prompts(_clip(), MEM + NON), bm.encode_prompts(_clip(), [""])[0],
                                   detection.DetectorSettings(seed=51, **SIZE), batch_size=1)
    y = np.r_[np.ones(len(MEM)), np.zeros(len(NON))]
    m = (s.norm + 2.0 * s.cosine).numpy()  # the paper's SD1 weights for an eps model
    assert auc_a == pytest.approx(roc_auc_score(y, m), abs=1e-9) and tpr_a == pytest.approx(_hand_tpr(y, m))
    assert auc_w == pytest.approx(roc_auc_score(y, s.wen.numpy()), abs=1e-9)
    assert tpr_w == pytest.approx(_hand_tpr(y, s.wen.numpy()))
    assert auc_a > 0.9  # the fake CLIP gives memorized prompts a 3x stronger embedding
    panel = out.ui["sentinel_result"][0]
    assert [r[1] for r in panel["rows"][:4]] == pytest.approx([auc_a, roc_auc_score(y, s.norm.numpy()),
                                                               roc_auc_score(y, s.cosine.numpy()), auc_w])
    assert panel["rows"][0][0].startswith("anisotropy M = 1 N + 2 C (SD1 (1, 2))")
    assert "cross-validated AUC" in panel["rows"][4][4] and panel["columns"][1]["direction"] == "higher is better"
    assert pps > 0 and f"{pps:.2f} prompts/s" in panel["summary"]
    assert name == "bench_test.json" and (cal_dir / name).is_file()
    d = json.loads((cal_dir / name).read_text())
    assert d["model"] == {"family": "SD15", "prediction": "eps", "latent_channels": 4}
    assert d["settings"] == {"seed": 51, "n_samples": 1, "width": 64, "height": 64, "negative_prompt": ""}
    assert d["metrics"]["benchmark"][0]["auc"] == pytest.approx(auc_a)
    assert "AUC" in report and "prompts/s" in report and name in report
    cal = mem.load_named_calibration(name)
    g = run_v3(mem.MemorizationGuard, model=tiny, positive=_clip().encode_from_tokens_scheduled({"text": MEM[0]}),
               negative=_clip().encode_from_tokens_scheduled({"text": ""}), calibration=name, **SIZE).args
    assert g[7] == pytest.approx(cal.threshold)  # the Guard uses the benchmark's threshold


def test_prompt_files_from_the_input_folder_equal_typed_prompts(mem, tiny, input_dir, cal_dir):
    (input_dir / "lists").mkdir()
    (input_dir / "lists" / "mem.txt").write_text("\n".join(MEM) + "\n\n", encoding="utf-8")
    (input_dir / "non.txt").write_bytes(b"\xef\xbb\xbf" + "\n".join(NON).encode())  # with a BOM
    from diffusion_sentinel.nodes.memorization.benchmark_node import prompt_files

    assert prompt_files() == ["lists/mem.txt", "non.txt"]
    typed = _bench(mem, tiny).args
    files = _bench(mem, tiny, memorized_file="lists/mem.txt", normal_file="non.txt", memorized_prompts="",
                   normal_prompts="").args
    assert files[:4] == pytest.approx(typed[:4]) and files[5] == "" and "input/lists/mem.txt" in files[6]
    assert list(cal_dir.iterdir()) == []  # no name: nothing written


@pytest.mark.parametrize("case", ["exists", "both", "few", "binary", "overlap", "outside", "bad_weights"])
def test_refused_inputs_write_nothing(mem, tiny, cal_dir, input_dir, case):
    from diffusion_sentinel.nodes.memorization.benchmark_report import PromptFileError

    existing = cal_dir / "mine.json"
    existing.write_text('{"keep": true}')
    (input_dir / "bin.txt").write_bytes(b"\x80\x04\x95\x00\x00")
    kw, err = {"calibration_name": "mine"}, FileExistsError
    if case == "both":
        (input_dir / "m.txt").write_text("\n".join(MEM))
        kw = {"calibration_name": "new", "memorized_file": "m.txt"}
        err = ValueError
    elif case == "few":
        kw = {"calibration_name": "new", "normal_prompts": NON[0]}
        err = PromptFileError
    elif case == "binary":
        kw = {"calibration_name": "new", "memorized_file": "bin.txt", "memorized_prompts": ""}
        err = PromptFileError
    elif case == "overlap":
        kw = {"calibration_name": "new", "normal_prompts": "\n".join(NON + [MEM[1]])}
        err = PromptFileError
    elif case == "outside":
        kw = {"calibration_name": "new", "memorized_file": "../x.txt", "memorized_prompts": ""}
        err = ValueError
    elif case == "bad_weights":
        kw = {"calibration_name": "new", "weights": "nonsense"}
        err = ValueError
    with pytest.raises(err):
        _bench(mem, tiny, **kw)
    assert sorted(p.name for p in cal_dir.iterdir()) == ["mine.json"]
    assert existing.read_text() == '{"keep": true}'
    out = _bench(mem, tiny, calibration_name="mine", overwrite=True).args  # explicit overwrite replaces it
    assert out[5] == "mine.json" and "gamma_norm" in existing.read_text()


def test_progress_reaches_100_percent_and_cancel_stops_before_writing(mem, tiny, cal_dir, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    seen = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview=None, node_id=None:
                        seen.append((value, total)))
    _bench(mem, tiny, prompts_per_batch=2)
    assert seen[-1][0] == seen[-1][1] == 10  # 5 batches x 2 noise levels
    assert sum(1 for v, t in seen if v == t) == 2  # the text-encoding bar (9 prompts + the negative) ended too

    calls = []

    def hook(value, total, preview=None, node_id=None):
        calls.append(value)
        if len(calls) == 12:  # inside the scoring
            mm.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _bench(mem, tiny, prompts_per_batch=2, calibration_name="cancelled")
    finally:
        mm.interrupt_current_processing(False)
    assert list(cal_dir.iterdir()) == [] and len(calls) < 20


def test_the_calibrate_node_still_scores_through_the_shared_code(mem, tiny, cal_dir):
    out = run_v3(mem.CalibrateMemorizationGuard, model=tiny, clip=_clip(), memorized_prompts="\n".join(MEM),
                 normal_prompts="\n".join(NON), name="cal", seed=51, **SIZE).args
    bench = _bench(mem, tiny).args
    cal = json.loads((cal_dir / "cal.json").read_text())
    assert out[0] == pytest.approx(cal["metrics"]["auc"]) and bench[0] == pytest.approx(cal["metrics"]["auc_paper_sd1_weights"])


@pytest.mark.slow
def test_command_line_on_the_tiny_checkpoint(tmp_path):
    from _server import find_checkpoint

    ckpt = find_checkpoint("sd15-tiny-random.safetensors")
    if ckpt is None:
        pytest.skip("sd15-tiny-random.safetensors not found (COMFY_MODELS)")
    (tmp_path / "mem.txt").write_text("\n".join(MEM), encoding="utf-8")
    (tmp_path / "non.txt").write_text("\n".join(NON), encoding="utf-8")
    out = tmp_path / "cals" / "tiny.json"
    cli = ROOT / "nodes" / "memorization" / "benchmark_cli.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, str(cli), "--checkpoint", ckpt, "--memorized", str(tmp_path / "mem.txt"), "--normal",
            str(tmp_path / "non.txt"), "--width", "64", "--height", "64", "--batch", "4", "--threads", "1",
            "--device", "cpu"]
    r = subprocess.run([*base, "--out", str(out), "--json-out", str(tmp_path / "t.json")], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith("RESULT auc_anisotropy=") and "prompts_per_second=" in lines[-1]
    assert any(ln.startswith("anisotropy M = 1 N + 2 C") for ln in lines)
    assert any(ln.startswith("Wen first-step norm") for ln in lines)
    d = json.loads(out.read_text())
    assert d["format"] == "diffusion-sentinel/memorization-calibration" and d["name"] == "tiny"
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["n_memorized"] == 4 and t["n_normal"] == 5 and len(t["rows"]) == 5
    before = out.read_text()
    again = subprocess.run([*base, "--out", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=600)
    assert again.returncode == 2 and "exists" in again.stderr and out.read_text() == before
    missing = subprocess.run([*base[:5], str(tmp_path / "nope.txt"), *base[6:], "--no-save"], capture_output=True,
                             text=True, env=env, cwd=tmp_path, timeout=600)
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr
