"""Calibration: the logistic fit recovers known weights, thresholds, AUC / TPR, JSON storage (pure)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from diffusion_sentinel.nodes.memorization import calibration as cb
from sklearn.metrics import roc_auc_score

W_N, W_C, B = 1.5, 3.0, -6.0  # true logistic model: gamma = (1, 2), threshold on M = -B / W_N = 4


def _synthetic(n=40_000, seed=0):
    rng = np.random.default_rng(seed)
    x = np.stack([rng.normal(3.0, 1.5, n), rng.normal(0.3, 0.4, n)], axis=1)
    p = 1.0 / (1.0 + np.exp(-(W_N * x[:, 0] + W_C * x[:, 1] + B)))
    y = (rng.random(n) < p).astype(int)
    return x, y


def test_fit_recovers_the_weights_of_a_logistic_model():
    x, y = _synthetic()
    fit = cb.fit_logistic(x, y, class_weight=None, c=1e6)
    assert fit.coef[0] == pytest.approx(W_N, rel=0.05)
    assert fit.coef[1] == pytest.approx(W_C, rel=0.05)
    assert fit.intercept == pytest.approx(B, abs=0.3)
    assert fit.gamma[0] == 1.0
    assert fit.gamma[1] == pytest.approx(W_C / W_N, rel=0.05)
    assert fit.threshold == pytest.approx(-B / W_N, rel=0.05)


def test_balanced_weighting_only_moves_the_intercept_by_the_log_class_ratio():
    x, y = _synthetic(seed=1)
    plain = cb.fit_logistic(x, y, class_weight=None, c=1e6)
    bal = cb.fit_logistic(x, y, class_weight="balanced", c=1e6)
    assert bal.coef == pytest.approx(plain.coef, rel=0.03)
    n1, n0 = int(y.sum()), int((1 - y).sum())
    assert bal.intercept - plain.intercept == pytest.approx(math.log(n0 / n1), abs=0.1)


def test_calibrate_fits_gamma_and_reports_auc_and_tpr():
    x, y = _synthetic(n=6000, seed=2)
    cal = cb.calibrate(x[y == 1], x[y == 0], threshold_rule="logistic", class_weight=None, c=1e6)
    assert cal.gamma_norm == 1.0
    assert cal.gamma_cos == pytest.approx(2.0, rel=0.1)
    assert cal.threshold == pytest.approx(4.0, rel=0.06)
    m = cal.gamma_norm * x[:, 0] + cal.gamma_cos * x[:, 1]
    labels = np.concatenate([np.ones((y == 1).sum()), np.zeros((y == 0).sum())])
    scores = np.concatenate([m[y == 1], m[y == 0]])
    assert cal.metrics["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert 0.0 <= cal.metrics["tpr_at_fpr"] <= 1.0
    assert cal.metrics["auc_cv"] == pytest.approx(cal.metrics["auc"], abs=0.01)
    assert cal.metrics["auc"] > cal.metrics["auc_norm_only"]  # the cosine term carries signal in this model


def test_fpr_rule_flags_at_most_the_target_share_of_normal_prompts():
    x, y = _synthetic(n=3000, seed=3)
    cal = cb.calibrate(x[y == 1], x[y == 0], threshold_rule="fpr", target_fpr=0.05)
    m_non = cal.score(x[y == 0, 0], x[y == 0, 1])
    assert (m_non > cal.threshold).mean() <= 0.05
    assert (m_non >= cal.threshold).mean() > 0.05 - 1.0 / len(m_non) - 1e-12  # and not lower than needed


def test_threshold_at_fpr_by_hand():
    non = [0.1, 0.5, 0.2, 0.9, 0.3, 0.7, 0.4, 0.8, 0.6, 1.0]
    assert cb.threshold_at_fpr(non, 0.0) == 1.0  # flag only above the largest normal score
    assert cb.threshold_at_fpr(non, 0.1) == 0.9  # one false positive allowed (1.0)
    assert cb.threshold_at_fpr(non, 0.25) == 0.8  # floor(2.5) = 2 allowed


def test_tpr_at_fpr_standard_and_papers_closest_rule():
    # positives 10, 9; negatives 9, 4, 3, 2, 1. ROC points: (FPR 0, TPR .5) at 10, (FPR .2, TPR 1) at 9 (a tie).
    labels = [1, 1, 0, 0, 0, 0, 0]
    scores = [10, 9, 9, 4, 3, 2, 1]
    assert cb.tpr_at_fpr(labels, scores, 0.15) == pytest.approx(0.5)  # FPR <= 15 %
    assert cb.tpr_at_fpr(labels, scores, 0.2) == pytest.approx(1.0)
    # the paper's rule takes the point whose FPR is closest to the target, here ABOVE it (FPR 0.2 > 0.15)
    assert cb.tpr_at_fpr(labels, scores, 0.15, closest=True) == pytest.approx(1.0)
    # ... and with several points at FPR 0, np.argmin takes the first, the (0, 0) corner: TPR 0 where 0.5 is reachable
    assert cb.tpr_at_fpr(labels, scores, 0.05, closest=True) == pytest.approx(0.0)
    assert cb.tpr_at_fpr(labels, scores, 0.0) == pytest.approx(0.5)


def test_calibrate_needs_both_classes_and_finite_scores():
    with pytest.raises(cb.CalibrationError, match="at least 2"):
        cb.calibrate(np.ones((1, 2)), np.zeros((5, 2)))
    with pytest.raises(cb.CalibrationError, match="NaN"):
        cb.calibrate(np.array([[np.nan, 1], [2, 3]]), np.zeros((3, 2)))
    with pytest.raises(cb.CalibrationError, match="threshold_rule"):
        cb.calibrate(np.ones((3, 2)), np.zeros((3, 2)), threshold_rule="magic")


def test_json_round_trip_and_refusals(tmp_path):
    x, y = _synthetic(n=400, seed=4)
    w = x[:, 0] * 1.1
    cal = cb.calibrate(x[y == 1], x[y == 0], w[y == 1], w[y == 0])
    cal.model = {"family": "SD15", "prediction": "eps"}
    cal.settings = {"seed": 51, "n_samples": 1}
    p = cb.save_calibration(cal, str(tmp_path / "cal.json"))
    back = cb.load_calibration(p)
    assert back.gamma_cos == cal.gamma_cos and back.threshold == cal.threshold
    assert back.wen_threshold == pytest.approx(cal.wen_threshold)
    assert back.model == cal.model and back.settings["seed"] == 51 and back.name == "cal"
    assert back.metrics["auc"] == pytest.approx(cal.metrics["auc"])
    # without Wen scores the Wen threshold is stored as null and loads as NaN
    nowen = cb.calibrate(x[y == 1], x[y == 0])
    back2 = cb.load_calibration(cb.save_calibration(nowen, str(tmp_path / "nowen.json")))
    assert math.isnan(back2.wen_threshold)
    # refusals: wrong format, non-finite weight, not JSON
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(cb.CalibrationError, match="not a Diffusion Sentinel"):
        cb.load_calibration(str(tmp_path / "other.json"))
    d = json.loads((tmp_path / "cal.json").read_text())
    d["gamma_cos"] = "2"
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(cb.CalibrationError, match="gamma_cos"):
        cb.load_calibration(str(tmp_path / "bad.json"))
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(cb.CalibrationError, match="not valid JSON"):
        cb.load_calibration(str(tmp_path / "junk.json"))
    with pytest.raises(cb.CalibrationError, match="not found"):
        cb.load_calibration(str(tmp_path / "missing.json"))


SIDE_EFFECTS: list[str] = []


def _record(tag):
    SIDE_EFFECTS.append(tag)
    return {"format": cb.FORMAT_NAME}


class _Executes:
    def __reduce__(self):  # unpickling this would call _record
        return (_record, ("pickle executed",))


def _good(tmp_path) -> dict:
    """The JSON of a real calibration file."""
    x, y = _synthetic(n=400, seed=4)
    path = cb.save_calibration(cb.calibrate(x[y == 1], x[y == 0]), str(tmp_path / "good.json"))
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("case, content, message", [
    ("deep", "[" * 100_000 + "]" * 100_000, "nests its JSON too deeply"),
    ("deep_in_a_field", None, "nests its JSON too deeply"),
    ("version_text", {"format_version": "abc"}, "'format_version' must be a whole number, got 'abc'"),
    ("version_float", {"format_version": 1.5}, "'format_version' must be a whole number"),
    ("version_newer", {"format_version": 99}, "format version 99, written by a newer"),
    ("fpr_text", {"target_fpr": "abc"}, "'target_fpr' must be a number in \\[0, 1\\]"),
    ("rule_list", {"threshold_rule": ["fpr"]}, "threshold_rule must be one of"),
    ("name_object", {"name": {"a": 1}}, "'name' must be a string"),
    ("truncated", "cut", "not valid JSON \\(damaged or cut short"),
    ("empty", "", "not valid JSON"),
    ("top_level_list", "[1, 2]", "not a Diffusion Sentinel memorization calibration"),
    ("latin1", b"{\"format\": \"\xe9\"}", "not a text file"),
    ("safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}", "not a text file|not valid JSON"),
    ("zip", b"PK\x03\x04rest-of-a-torch-checkpoint", "binary file"),
])
def test_damaged_or_foreign_files_are_refused_with_what_to_do(tmp_path, case, content, message):
    good = _good(tmp_path)
    path = tmp_path / f"{case}.json"
    if case == "deep_in_a_field":
        path.write_text(json.dumps(good)[:-1] + ', "metrics_extra": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif case == "truncated":
        path.write_text(json.dumps(good)[:40])
    elif isinstance(content, dict):
        path.write_text(json.dumps({**good, **content}))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(cb.CalibrationError, match=message) as e:
        cb.load_calibration(str(path))
    assert "Calibrate Memorization Guard" in str(e.value) or "update the pack" in str(e.value)
    assert type(e.value).__module__ == "sentinel"  # the error title ComfyUI shows carries no file system path


def test_a_pickle_is_refused_before_anything_is_executed(tmp_path):
    import pickle

    path = tmp_path / "evil.json"
    path.write_bytes(pickle.dumps(_Executes()))
    with pytest.raises(cb.CalibrationError, match="pickle.*not loaded"):
        cb.load_calibration(str(path))
    assert SIDE_EFFECTS == []


def test_oversized_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    monkeypatch.setattr(cb, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.json"
    path.write_text(" " * 2000 + "{}")
    with pytest.raises(cb.CalibrationError, match="2002 bytes, not a calibration"):
        cb.load_calibration(str(path))


def test_a_refused_save_leaves_the_existing_file_as_it_was(tmp_path):
    x, y = _synthetic(n=400, seed=4)
    cal = cb.calibrate(x[y == 1], x[y == 0])
    path = str(tmp_path / "keep.json")
    cb.save_calibration(cal, path)
    before = open(path).read()
    cal.threshold_rule = "nonsense"  # not loadable: refused before the disk is touched
    with pytest.raises(cb.CalibrationError, match="threshold_rule"):
        cb.save_calibration(cal, path)
    assert open(path).read() == before and not (tmp_path / "keep.json.partial").exists()
