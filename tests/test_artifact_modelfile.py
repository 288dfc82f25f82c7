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
    with pytest.raises(ModelFileError, match="past the end of the file.*Train one"):
        load_model(trunc)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelFileError, match="header is not valid JSON"):
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


# ------------------------------------------------------------------------------------------------ headers first
def _raw_safetensors(path, header: dict, data: bytes = b"") -> str:
    """Write a safetensors file by hand (any header, however large or odd)."""
    import struct

    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        f.write(data)
    return str(path)


@pytest.fixture()
def no_array_reads(monkeypatch):
    """Fail the test if any array is read (safetensors.safe_open is how arrays are read)."""
    import safetensors

    def forbidden(*a, **k):
        raise AssertionError("an array was read before the header was checked")

    monkeypatch.setattr(safetensors, "safe_open", forbidden)


def test_checkpoint_is_refused_from_its_header_without_reading_arrays(tmp_path, no_array_reads):
    """A checkpoint (foreign header, large data) in models/artifact_classifiers: refused on the header alone."""
    import os

    path = tmp_path / "checkpoint.safetensors"
    n = 4 * 1024 * 1024  # 4 MiB of float32 data; reading it is what the old loader did first
    header = {"__metadata__": {"format": "pt"},
              "model.diffusion_model.input_blocks.0.0.weight": {"dtype": "F32", "shape": [n // 4],
                                                                 "data_offsets": [0, n]}}
    _raw_safetensors(path, header)
    with open(path, "ab") as f:  # sparse data section: the file is large on disk, cheap to make
        f.truncate(os.path.getsize(path) + n)
    with pytest.raises(ModelFileError, match="not a Diffusion Sentinel artifact classifier.*format='pt'"):
        load_model(path)


def test_huge_header_is_refused_by_size_before_parsing(tmp_path, no_array_reads):
    """300,000 tensor entries (~20 MB of header JSON): refused by the header-size bound without parsing it."""
    import struct

    path = tmp_path / "many.safetensors"
    entry = b'"t%06d":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
    body = b"{" + b"".join(entry % i for i in range(300_000))[:-1] + b"}"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body)))
        f.write(body)
        f.write(b"\x00" * 4)
    import time

    t0 = time.perf_counter()
    with pytest.raises(ModelFileError, match="header is 17,700,001 bytes, more than"):
        load_model(path)
    assert time.perf_counter() - t0 < 0.5


def test_many_tensor_names_are_checked_before_any_array(tmp_path, data, no_array_reads):
    X, y, _ = data
    meta = {"format": FORMAT_NAME, "format_version": "1",
            META_KEY: json.dumps(_model("log_distance", X, y).metadata())}
    entries = {f"w{i}": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]} for i in range(2000)}
    path = _raw_safetensors(tmp_path / "names.safetensors", {"__metadata__": meta, **entries}, b"\x00" * 8)
    with pytest.raises(ModelFileError, match=r"unexpected arrays \['w0', 'w1'.*and 1,995 more"):
        load_model(path)
    odd = {"mean_": {"dtype": "STR", "shape": [1], "data_offsets": [0, 4]}}
    path = _raw_safetensors(tmp_path / "dtype.safetensors", {"__metadata__": meta, **odd}, b"\x00" * 8)
    with pytest.raises(ModelFileError, match="dtype STR"):
        load_model(path)


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_metadata_is_the_packs_error(tmp_path, data, depth):
    """Metadata JSON nested deeper than ours ever is (100,000 levels raised RecursionError inside json)."""
    X, y, _ = data
    good = _model("log_distance", X, y).save(tmp_path / "good.safetensors")
    from safetensors import safe_open

    with safe_open(good, framework="np") as f:
        header = dict(f.metadata())
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    deep = "[" * depth + "]" * depth
    path = _write_raw(tmp_path / "deep.safetensors", arrays, {**header, META_KEY: deep})
    with pytest.raises(ModelFileError, match="nested.*deep.*damaged or edited"):
        load_model(path)


@pytest.mark.parametrize("version", ["abc", "", "1.5", "-3"])
def test_bad_format_version_is_the_packs_error(tmp_path, data, version):
    X, y, _ = data
    good = _model("log_distance", X, y).save(tmp_path / "good.safetensors")
    from safetensors import safe_open

    with safe_open(good, framework="np") as f:
        header = dict(f.metadata())
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    path = _write_raw(tmp_path / "v.safetensors", arrays, {**header, "format_version": version})
    with pytest.raises(ModelFileError, match="invalid format_version"):
        load_model(path)


def test_rule_files_written_before_the_relative_form_load_as_absolute(tmp_path, data):
    X, y, Xt = data
    m = _model("dmax_rule", X, y)
    from safetensors import safe_open

    old_meta = m.metadata()
    old_meta["params"] = {k: v for k, v in old_meta["params"].items() if k not in ("relative", "range_start")}
    path = m.save(tmp_path / "rule.safetensors")
    with safe_open(path, framework="np") as f:
        header = dict(f.metadata())
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    old = _write_raw(tmp_path / "old_rule.safetensors", arrays, {**header, META_KEY: json.dumps(old_meta)})
    back = load_model(old)
    assert back.estimator.relative is False
    assert load_model(path).estimator.relative is True
