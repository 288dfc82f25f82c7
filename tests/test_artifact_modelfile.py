"""Model files: save -> load -> identical predictions; corrupt, foreign and pickled files refused clearly;
metric / layout / length handling; joblib only behind trust_pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _artifact import synthetic_series
from diffusion_sentinel.classifiers import (
    ArtifactModel,
    MetricMismatch,
    ModelFileError,
    TrainedFor,
    load_model,
    make_model,
)
from diffusion_sentinel.classifiers.modelfile import FORMAT_NAME, META_KEY, export_joblib, import_joblib

RECIPES = {"log_distance": {}, "paper_rf": {"n_estimators": 15}, "paper_haar_knn": {"n_estimators": 15},
           "dmax_rule": {}}


@pytest.fixture(scope="module")
def data():
    X, y = synthetic_series(90, seed=7)
    Xt, _ = synthetic_series(30, seed=8)
    return X, y, Xt


def _model(recipe, X, y, **tf):
    est = make_model(recipe, **RECIPES[recipe]).fit(X, y)
    return ArtifactModel(est, TrainedFor(tf.get("metric", "dreamsim"), tf.get("noise_frame", True), X.shape[1],
                                         tf.get("full_length")), training={"n": len(y)})


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_save_load_predict_identical(tmp_path, data, recipe):
    X, y, Xt = data
    m = _model(recipe, X, y)
    path = m.save(tmp_path / f"{recipe}.safetensors")
    back = load_model(path)
    assert back.recipe == recipe and back.name == recipe
    assert np.array_equal(back.estimator.predict_proba(Xt), m.estimator.predict_proba(Xt))
    assert back.trained_for.as_dict() == m.trained_for.as_dict()
    meta = back.metadata()
    assert meta["feature_names"] == m.feature_names and meta["training"]["n"] == 90
    assert meta["versions"]["scikit-learn"] and meta["params"] == json.loads(json.dumps(m.estimator.get_params()))
    assert not list(tmp_path.glob("*.partial"))


def test_file_is_plain_safetensors_with_json(tmp_path, data):
    from safetensors import safe_open

    X, y, _ = data
    path = _model("paper_rf", X, y).save(tmp_path / "m.safetensors")
    with safe_open(path, framework="np") as f:
        header = f.metadata()
        keys = set(f.keys())
    assert header["format"] == FORMAT_NAME and header["format_version"] == "1"
    meta = json.loads(header[META_KEY])
    assert meta["trained_for"] == {"metric": "dreamsim", "noise_frame": True, "length": 50, "full_length": 50,
                                   "prefix": False}
    assert {"mean_", "scale_", "forest.left", "forest.threshold", "forest.value"} <= keys


def _write_raw(path, tensors, header):
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=header)
    return path


def test_refuses_pickles_and_foreign_files(tmp_path, data):
    import joblib
    import torch

    X, y, _ = data
    pkl = tmp_path / "rf.joblib"
    joblib.dump(make_model("log_distance").fit(X, y), pkl)
    with pytest.raises(ModelFileError, match="pickle.*never loaded automatically.*--trust-pickle"):
        load_model(pkl)
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pt)
    with pytest.raises(ModelFileError, match="zip/PyTorch archive"):
        load_model(pt)
    ckpt = _write_raw(tmp_path / "ckpt.safetensors", {"model.w": np.zeros(3, np.float32)}, {"format": "pt"})
    with pytest.raises(ModelFileError, match="not a Diffusion Sentinel artifact classifier"):
        load_model(ckpt)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_model(empty)
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.safetensors")


def test_refuses_corrupt_files(tmp_path, data):
    X, y, _ = data
    good = _model("paper_rf", X, y).save(tmp_path / "good.safetensors")
    raw = open(good, "rb").read()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        load_model(trunc)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        load_model(garbage)

    from safetensors import safe_open

    with safe_open(good, framework="np") as f:
        header = dict(f.metadata())
        arrays = {k: f.get_tensor(k) for k in f.keys()}

    def variant(name, tensors=None, **hdr):
        return _write_raw(tmp_path / name, tensors or arrays, {**header, **hdr})

    with pytest.raises(ModelFileError, match="newer Diffusion Sentinel"):
        load_model(variant("v9.safetensors", format_version="9"))
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(variant("json.safetensors", **{META_KEY: "{broken"}))
    meta = json.loads(header[META_KEY])
    with pytest.raises(ModelFileError, match="unknown classifier recipe"):
        load_model(variant("recipe.safetensors", **{META_KEY: json.dumps({**meta, "recipe": "os.system"})}))
    bad_tree = dict(arrays)
    bad_tree["forest.left"] = bad_tree["forest.left"].copy()
    bad_tree["forest.left"][0] = 10**9
    with pytest.raises(ModelFileError, match="damaged or inconsistent.*outside"):
        load_model(variant("tree.safetensors", bad_tree))
    cyc = dict(arrays)
    cyc["forest.left"] = cyc["forest.left"].copy()
    inner = np.nonzero(cyc["forest.left"] >= 0)[0]
    cyc["forest.left"][inner[1]] = inner[0]  # points back to an earlier node: a cycle
    with pytest.raises(ModelFileError, match="after their parent"):
        load_model(variant("cycle.safetensors", cyc))
    short = {k: v for k, v in arrays.items() if k != "mean_"}
    with pytest.raises(ModelFileError, match="missing"):
        load_model(variant("short.safetensors", short))
    extra = {**arrays, "payload": np.zeros(2)}
    with pytest.raises(ModelFileError, match="unexpected arrays"):
        load_model(variant("extra.safetensors", extra))
    wrong_shape = {**arrays, "mean_": np.zeros(3)}
    with pytest.raises(ModelFileError, match="mean_ has shape"):
        load_model(variant("shape.safetensors", wrong_shape))


def test_metric_layout_length_and_nonfinite(data):
    X, y, Xt = data
    m = _model("log_distance", X, y)
    with pytest.raises(MetricMismatch, match="trained on dreamsim.*uses latent_cosine"):
        m.p_artifact(Xt, "latent_cosine", True)
    with pytest.raises(MetricMismatch, match="noise_frame on"):
        m.p_artifact(Xt, "dreamsim", False)
    p, notes = m.p_artifact(Xt, "dreamsim", True)
    assert notes == [] and np.allclose(p, m.estimator.predict_proba(Xt)[:, 1])
    from diffusion_sentinel.classifiers.features import resample_series

    short = resample_series(Xt, 20, keep_first=True)
    p20, notes = m.p_artifact(short, "dreamsim", True)
    assert "resampled" in notes[0]
    assert np.allclose(p20, m.estimator.predict_proba(resample_series(short, 50, keep_first=True))[:, 1])
    bad = Xt[:3].copy()
    bad[1, 10] = np.nan
    p, notes = m.p_artifact(bad, "dreamsim", True, finite=np.array([True, False, False]))
    assert p[1] == 1.0 and p[2] == 1.0 and p[0] < 1.0 and "non-finite" in notes[-1]


def test_prefix_model(data):
    X, y, Xt = data
    est = make_model("log_distance").fit(X[:, :15], y)
    m = ArtifactModel(est, TrainedFor("latent_cosine", True, 15, 50))
    assert m.trained_for.is_prefix and "first 15 of 50" in m.trained_for.describe()
    p, notes = m.p_artifact(Xt, "latent_cosine", True)  # a complete 50-value run: its first 15 values are used
    assert notes == [] and np.allclose(p, est.predict_proba(Xt[:, :15])[:, 1])
    p, notes = m.p_artifact(Xt[:, :6], "latent_cosine", True, run_length=20)  # 20-step run: first 6 of 20
    assert "resampled" in notes[0] and len(p) == 30
    with pytest.raises(ValueError, match="only 3 given"):
        m.p_artifact(Xt[:, :3], "latent_cosine", True, run_length=20)


def test_joblib_needs_trust(tmp_path, data):
    import joblib
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import StandardScaler

    X, y, Xt = data
    m = _model("log_distance", X, y)
    with pytest.raises(ModelFileError, match="trust_pickle"):
        export_joblib(m, tmp_path / "m.joblib")
    path = export_joblib(m, tmp_path / "m.joblib", trust_pickle=True)
    with pytest.raises(ModelFileError, match="trust_pickle"):
        import_joblib(path)
    back = import_joblib(path, trust_pickle=True)
    assert np.array_equal(back.estimator.predict_proba(Xt), m.estimator.predict_proba(Xt))
    # the authors' files: a forest on scaled series with label 0 = unnatural, plus their scaler
    sc = StandardScaler().fit(X)
    rf = RandomForestClassifier(n_estimators=12, random_state=0).fit(sc.transform(X), 1 - y)
    joblib.dump(rf, tmp_path / "rf.joblib")
    joblib.dump(sc, tmp_path / "scaler.joblib")
    conv = import_joblib(tmp_path / "rf.joblib", trust_pickle=True, trained_for=TrainedFor("dreamsim", True, 50),
                         scaler_path=str(tmp_path / "scaler.joblib"), artifact_label=0)
    assert np.allclose(conv.estimator.predict_proba(Xt)[:, 1], rf.predict_proba(sc.transform(Xt))[:, 0])
    saved = load_model(conv.save(tmp_path / "converted.safetensors"))
    assert np.array_equal(saved.estimator.predict_proba(Xt), conv.estimator.predict_proba(Xt))
