"""Reading the CSV format and dataset folders; the command line `python -m classifiers` (run as the top-level
package from the repository root, exactly as documented)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _artifact import synthetic_series, write_csv, write_legacy_index
from diffusion_sentinel.classifiers import DatasetError, cross_validate, load_model, read_dataset
from diffusion_sentinel.classifiers.data import format_series, parse_label, write_sample

ROOT = Path(__file__).resolve().parents[1]


def test_read_paper_csv_defaults(tmp_path):
    X, y = synthetic_series(30, seed=2)
    ds = read_dataset(write_csv(tmp_path / "d.csv", X, y))
    assert ds.X.shape == (30, 50) and np.allclose(ds.X, X) and np.array_equal(ds.y, y)
    assert ds.metric == "dreamsim" and ds.noise_frame is True
    assert ds.groups[:4] == ["0", "0", "0", "1"]  # the id before its last '_' (the paper's prompt index)
    ds2 = read_dataset(tmp_path / "d.csv", metric="latent_cosine", noise_frame=False)
    assert ds2.metric == "latent_cosine" and ds2.noise_frame is False


def test_labels():
    assert [parse_label(v) for v in ("unnatural", "Artifact", "1", "natural", "clean", "0")] == [1, 1, 1, 0, 0, 0]
    with pytest.raises(DatasetError, match="unknown label 'maybe'"):
        parse_label("maybe")


def test_dataset_folder_mixed_lengths_and_nan(tmp_path):
    rows = []
    for i, (length, lab) in enumerate([(10, 1), (10, 0), (10, 1), (19, 0)]):
        v = list(np.linspace(0.2, 0.99, length))
        rows.append({"id": f"s{i}", "naturalness": "unnatural" if lab else "natural", "next": format_series(v),
                     "metric": "latent_cosine", "noise_frame": "true", "group": "p1"})
    rows.append({"id": "bad", "naturalness": "natural", "next": format_series([0.1, float("nan")] + [0.5] * 8),
                 "metric": "latent_cosine", "noise_frame": "true"})
    write_legacy_index(tmp_path, rows[:2])  # a folder of an earlier version (one index.csv) ...
    for r in rows[2:]:
        write_sample(tmp_path, r)  # ... with samples of this version added: both are read
    assert sorted(os.listdir(tmp_path / "samples")) == ["bad.json", "s2.json", "s3.json"]
    ds = read_dataset(tmp_path)
    assert ds.n == 4 and ds.length == 10 and ds.metric == "latent_cosine" and ds.groups == ["p1"] * 4
    assert any("resampled to 10" in n for n in ds.notes) and any("non-finite" in n for n in ds.notes)
    assert np.allclose(ds.X[3], np.r_[0.2, np.linspace(0.2 + 0.79 / 18, 0.99, 9)])  # value 0 kept, rest resampled


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="holds no samples"):
        read_dataset(tmp_path)
    (tmp_path / "x.csv").write_text("id,label,series\n1,a,[1]\n")
    with pytest.raises(DatasetError, match="no 'next' column"):
        read_dataset(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text('naturalness,next\nnatural,"[0.1, oops]"\n')
    with pytest.raises(DatasetError, match="row 2.*not valid JSON"):
        read_dataset(tmp_path / "y.csv")
    (tmp_path / "z.csv").write_text('naturalness,next,metric\nnatural,"[0.1, 0.2]",dreamsim\n'
                                    'unnatural,"[0.1, 0.2]",latent_cosine\n')
    with pytest.raises(DatasetError, match="mixes similarity metrics"):
        read_dataset(tmp_path / "z.csv")


def test_cross_validate_reports_sem_over_seeds():
    X, y = synthetic_series(120, seed=5)
    res = cross_validate(X, y, "default", folds=5, seeds=[0, 1, 2])
    assert len(res.accuracy) == 3 and len(res.fold_accuracy[0]) == 5
    assert res.accuracy_sem == pytest.approx(np.std(res.accuracy, ddof=1) / np.sqrt(3))
    assert 0.8 < res.accuracy_mean <= 1 and 0.85 < res.auc_mean <= 1
    grouped = cross_validate(X, y, "default", folds=5, seeds=[0], groups=[str(i // 3) for i in range(120)])
    assert grouped.grouped and 0.7 < grouped.accuracy_mean
    with pytest.raises(ValueError, match="at least 50 examples of each class"):
        cross_validate(X, y, "default", folds=50, seeds=[0])


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run([sys.executable, "-m", "classifiers", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_cv_train_evaluate_info(tmp_path):
    X, y = synthetic_series(100, seed=11)
    Xe, ye = synthetic_series(60, seed=12)
    data, other = write_csv(tmp_path / "train.csv", X, y), write_csv(tmp_path / "eval.csv", Xe, ye)
    r = _cli("cv", "--data", data, "--folds", 5, "--seeds", 2, "--json")
    assert r.returncode == 0, r.stderr
    line = [s for s in r.stdout.splitlines() if s.startswith("accuracy=")][0]
    fields = dict(kv.split("=") for kv in line.split())
    assert 0.8 < float(fields["accuracy"]) <= 1 and float(fields["auc_sem"]) >= 0 and fields["n"] == "100"
    model = tmp_path / "m.safetensors"
    r = _cli("train", "--data", data, "--out", model, "--model", "paper_rf", "--set", "n_estimators=20",
             "--folds", 5)
    assert r.returncode == 0, r.stderr
    assert model.is_file() and "cv: accuracy" in r.stdout
    r = _cli("evaluate", "--model", model, "--data", other)
    assert r.returncode == 0, r.stderr
    acc, auc, n = (kv.split("=") for kv in r.stdout.strip().split())
    assert acc[0] == "accuracy" and auc[0] == "auc" and n == ["n", "60"] and float(acc[1]) > 0.75
    m = load_model(model)
    assert np.mean(m.estimator.predict(Xe) == ye) == pytest.approx(float(acc[1]), abs=1e-4)
    r = _cli("info", "--model", model)
    assert json.loads(r.stdout)["recipe"] == "paper_rf"
    # prefix classifier
    r = _cli("train", "--data", data, "--out", tmp_path / "p.safetensors", "--prefix", 12, "--cv-seeds", 0)
    assert r.returncode == 0, r.stderr
    assert load_model(tmp_path / "p.safetensors").trained_for.as_dict()["full_length"] == 50


def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.joblib"
    import joblib

    joblib.dump({"a": 1}, bad)
    r = _cli("evaluate", "--model", bad, "--data", bad)
    assert r.returncode == 2 and "pickle" in r.stderr and "Traceback" not in r.stderr
    r = _cli("cv", "--data", tmp_path / "missing.csv")
    assert r.returncode == 2 and "not found" in r.stderr
    r = _cli("import-joblib", "--joblib", bad, "--out", tmp_path / "x.safetensors")
    assert r.returncode == 2 and "--trust-pickle" in r.stderr


def test_cli_out_never_writes_inside_the_pack(tmp_path):
    """`--out models/artifact_classifiers/x` run from the pack's root would land inside the pack: refused, with
    where ComfyUI looks; --name writes into ComfyUI's models/artifact_classifiers (found via COMFYUI_PATH)."""
    X, y = synthetic_series(60, seed=3)
    data = write_csv(tmp_path / "train.csv", X, y)
    r = _cli("train", "--data", data, "--out", "models/artifact_classifiers/mine.safetensors", "--cv-seeds", 0)
    assert r.returncode == 2 and "inside the pack's own folder" in r.stderr and "--name" in r.stderr
    assert not (ROOT / "models").exists()
    fake = tmp_path / "ComfyUI"
    fake.mkdir()
    (fake / "main.py").write_text("")
    env = {**os.environ, "PYTHONPATH": "", "COMFYUI_PATH": str(fake)}
    r = subprocess.run([sys.executable, "-m", "classifiers", "train", "--data", str(data), "--name", "mine",
                        "--cv-seeds", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    written = fake / "models" / "artifact_classifiers" / "mine.safetensors"
    assert written.is_file() and str(written) in r.stdout
    r = subprocess.run([sys.executable, "-m", "classifiers", "train", "--help"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    text = "".join(r.stdout.split())  # argparse wraps (and breaks long paths)
    assert "--namemine`writes" in text and f"{fake}/models/artifact_classifiers/mine.safetensors" in text


def test_damaged_sample_files_are_named(tmp_path):
    X, y = synthetic_series(3, length=5, seed=1)
    for i in range(3):
        write_sample(tmp_path, {"id": f"s{i}", "naturalness": "natural", "next": list(X[i]), "metric": "latent_cosine",
                                "noise_frame": True})
    assert read_dataset(tmp_path).n == 3
    bad = tmp_path / "samples" / "zz.json"
    bad.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(DatasetError, match="zz.json.*nested too deeply.*remove or fix"):
        read_dataset(tmp_path)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DatasetError, match="zz.json is not a Diffusion Sentinel sample file"):
        read_dataset(tmp_path)
    bad.unlink()
    (tmp_path / "samples" / ".zz.json.123.tmp").write_text("{partial")  # a writer's temporary file: ignored
    assert read_dataset(tmp_path).n == 3
