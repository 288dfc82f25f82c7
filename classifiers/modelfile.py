"""The safe on-disk format of a fitted artifact classifier, and applying it to similarity series.

File = safetensors (tensors: the estimator's learned arrays) + JSON metadata in the safetensors header:
``format`` = "diffusion-sentinel/artifact-classifier", ``format_version``, and under ``diffusion_sentinel`` the
recipe and its parameters, the classes, what the model was trained for (similarity metric, series layout
``noise_frame``, series length, and for prefix models the full length), feature names, training-set size, CV
figures and library versions. Loading reads tensors and JSON only: nothing is ever unpickled. joblib
import/export exists for interoperability only, behind an explicit ``trust_pickle=True``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .estimators import RECIPES, ArtifactClassifier, make_model
from .features import resample_series
from .safefile import HeaderError, check_entries, loads_bounded, read_header

FORMAT_NAME = "diffusion-sentinel/artifact-classifier"
FORMAT_VERSION = 1
META_KEY = "diffusion_sentinel"
METRICS = ("latent_cosine", "pixel_ssim", "dreamsim")


class ModelFileError(ValueError):
    """A model file is missing, corrupt, foreign, pickled, or does not fit the data. The message says what to do."""

    __module__ = "sentinel"  # ComfyUI titles errors with module + name: keep it short


class MetricMismatch(ValueError):
    """The series was computed with another similarity metric than the model was trained for."""

    __module__ = "sentinel"


@dataclass
class TrainedFor:
    """What series a model expects: metric, layout (value 0 compares the starting noise?), and length.

    ``full_length`` > ``length`` marks a *prefix* model: trained on the first ``length`` values of series that had
    ``full_length`` values, i.e. it judges a run after length / full_length of its steps (early rejection).
    """

    metric: str
    noise_frame: bool
    length: int
    full_length: int | None = None

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ModelFileError(f"unknown similarity metric {self.metric!r}; expected one of {METRICS}")
        self.length = int(self.length)
        self.full_length = int(self.full_length) if self.full_length is not None else self.length
        self.noise_frame = bool(self.noise_frame)
        if self.length < 1 or self.full_length < self.length:
            raise ModelFileError(f"bad series lengths: length {self.length}, full_length {self.full_length}")

    @property
    def is_prefix(self) -> bool:
        return self.full_length > self.length

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "noise_frame": self.noise_frame, "length": self.length,
                "full_length": self.full_length, "prefix": self.is_prefix}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainedFor:
        try:
            return cls(d["metric"], d["noise_frame"], d["length"], d.get("full_length"))
        except (KeyError, TypeError) as e:
            raise ModelFileError(f"model metadata 'trained_for' is incomplete ({e})") from e

    def describe(self) -> str:
        s = f"{self.metric} series, {'noise frame first' if self.noise_frame else 'no noise frame'}"
        if self.is_prefix:
            return f"{s}, the first {self.length} of {self.full_length} values"
        return f"{s}, {self.length} values"


def library_versions() -> dict[str, str]:
    import safetensors
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "safetensors": getattr(safetensors, "__version__", "?"), "format_version": str(FORMAT_VERSION)}


@dataclass
class ArtifactModel:
    """A fitted estimator plus what it was trained for and how well it did."""

    estimator: ArtifactClassifier
    trained_for: TrainedFor
    training: dict[str, Any] = field(default_factory=dict)
    cv: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=library_versions)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"))
    name: str = ""

    @property
    def recipe(self) -> str:
        return self.estimator.recipe

    @property
    def feature_names(self) -> list[str]:
        return self.estimator.feature_names(self.trained_for.length)

    def describe(self) -> str:
        cv = ""
        if self.cv:
            cv = (f"; CV accuracy {self.cv.get('accuracy_mean', float('nan')):.3f}, "
                  f"AUC {self.cv.get('auc_mean', float('nan')):.3f}")
        return (f"{self.name or self.recipe} ({self.recipe}, trained on {self.training.get('n', '?')} "
                f"{self.trained_for.describe()}{cv})")

    # ------------------------------------------------------------------------------------------- applying
    def prepare(self, values: np.ndarray, metric: str, noise_frame: bool, run_length: int | None = None,
                ) -> tuple[np.ndarray, list[str]]:
        """Series [n, L] -> the [n, length] input the estimator expects, plus notes (warnings) on what was done.

        Another metric or layout is refused (:class:`MetricMismatch`); another length is resampled linearly with a
        note. For a prefix model, ``run_length`` is how many values the complete run will have (default: ``values``
        are a complete run); the model's share of the run (length / full_length) is taken from the start.
        """
        tf = self.trained_for
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"series must be [batch, length], got shape {values.shape}")
        if metric != tf.metric:
            raise MetricMismatch(
                f"the classifier '{self.name or self.recipe}' was trained on {tf.metric} similarity series, but this "
                f"series uses {metric}. Similarity values of different metrics are not comparable: compute the "
                f"series with metric '{tf.metric}' (Similarity Trajectory node), or train a classifier on {metric} "
                "series (Train Artifact Classifier).")
        if bool(noise_frame) != tf.noise_frame:
            want = "on" if tf.noise_frame else "off"
            raise MetricMismatch(
                f"the classifier '{self.name or self.recipe}' expects series with noise_frame {want} (value 0 "
                f"{'compares the starting noise' if tf.noise_frame else 'is the first x0 pair'}); this series has it "
                f"{'on' if noise_frame else 'off'}. Recompute the series with noise_frame {want}.")
        notes: list[str] = []
        L = values.shape[1]
        if tf.is_prefix:
            total = int(run_length) if run_length is not None else L
            need = max(1, int(round(tf.length * total / tf.full_length)))
            if L < need:
                raise ValueError(f"the prefix classifier judges the first {need} of {total} values; only {L} given")
            values = values[:, :need]
            if need != tf.length:
                notes.append(f"prefix classifier trained on the first {tf.length} of {tf.full_length} values; this "
                             f"run has {total}, so its first {need} values were resampled to {tf.length}")
                values = resample_series(values, tf.length, keep_first=tf.noise_frame)
        elif L != tf.length:
            notes.append(f"classifier trained on {tf.length}-value series, this one has {L}: resampled linearly "
                         "(similarities of consecutive steps depend on the step count, so this is less reliable; "
                         f"train a classifier for {L}-step runs for best results)")
            values = resample_series(values, tf.length, keep_first=tf.noise_frame)
        return values, notes

    def p_artifact(self, values: np.ndarray, metric: str, noise_frame: bool, finite: np.ndarray | None = None,
                   run_length: int | None = None) -> tuple[np.ndarray, list[str]]:
        """P(artifact) per row. Rows that are not finite (NaN/inf in the sampler) get P = 1."""
        X, notes = self.prepare(values, metric, noise_frame, run_length)
        ok = np.isfinite(X).all(axis=1)
        if finite is not None:
            ok &= np.asarray(finite, dtype=bool).reshape(-1)
        p = np.ones(X.shape[0], dtype=np.float64)
        if ok.any():
            p[ok] = self.estimator.predict_proba(X[ok])[:, 1]
        if not ok.all():
            notes.append(f"{int((~ok).sum())} item(s) with non-finite values (NaN/inf in sampling): P(artifact) = 1")
        return p, notes

    # ------------------------------------------------------------------------------------------- storage
    def metadata(self) -> dict[str, Any]:
        est = self.estimator
        return {
            "recipe": est.recipe,
            "params": _jsonable(est.get_params()),
            "classes": _jsonable(list(est.classes_)),
            "positive_class": _jsonable(est.classes_[1]),
            "n_features_in": int(est.n_features_in_),
            "trained_for": self.trained_for.as_dict(),
            "feature_names": self.feature_names,
            "training": _jsonable(self.training),
            "cv": _jsonable(self.cv) if self.cv is not None else None,
            "versions": self.versions,
            "created": self.created,
            "output": "predict_proba column 1 = P(artifact) (naturalness 'unnatural')",
        }

    def save(self, path: str | os.PathLike) -> str:
        """Write the model as safetensors + JSON metadata (atomic: a partial file never has the final name)."""
        from safetensors.numpy import save_file

        path = os.fspath(path)
        arrays = {k: np.ascontiguousarray(v) for k, v in self.estimator.state_arrays().items()}
        for k, v in arrays.items():
            if v.dtype.kind not in "fiub":
                raise ModelFileError(f"model array {k} has non-numeric dtype {v.dtype}")
        header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
                  META_KEY: json.dumps(self.metadata(), sort_keys=True, allow_nan=False)}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".partial"
        save_file(arrays, tmp, metadata=header)
        os.replace(tmp, path)
        return path


# ----------------------------------------------------------------------------------------------- loading
_PICKLE_HINT = ("pickled files (.pkl/.joblib/.pt/.ckpt) are never loaded automatically because unpickling can run "
                "arbitrary code. If you trust the file, convert it once with "
                "`python -m classifiers import-joblib --trust-pickle --joblib FILE --out MODEL.safetensors ...`.")


def _sniff(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then the JSON header
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    return "other"


FOREST_ARRAYS = tuple(f"forest.{n}" for n in ("roots", "left", "right", "feature", "threshold", "value"))


def expected_arrays(recipe: str) -> tuple[set[str], set[str]]:
    """(allowed, required) array names of a recipe's model file."""
    names = set(RECIPES[recipe]._state_names)
    if recipe in ("paper_rf", "paper_haar_knn"):
        return names | set(FOREST_ARRAYS), names | set(FOREST_ARRAYS)
    return names, names


def load_model(path: str | os.PathLike) -> ArtifactModel:
    """Read a model written by :meth:`ArtifactModel.save`. Refuses pickles, foreign and corrupt files clearly.

    Everything that can be checked on the header is checked before any array is read (size of the header, our
    format marker and version, the metadata JSON, the recipe, the names, count and dtypes of the arrays), so a
    checkpoint or any other large file dropped into models/artifact_classifiers costs a few bytes of reading.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    base = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"classifier file not found: {path}")
    kind = _sniff(path)
    if kind == "empty":
        raise ModelFileError(f"{base} is empty (an interrupted download or save?)")
    if kind in ("pickle", "zip"):
        what = "a Python pickle" if kind == "pickle" else "a zip/PyTorch archive (pickle inside)"
        raise ModelFileError(f"{base} is {what}, not a safetensors classifier. {_PICKLE_HINT}")
    retrain = ("Train one with the 'Train Artifact Classifier' node or `python -m classifiers train`, or remove "
               f"{base} from models/artifact_classifiers.")
    try:
        header, entries = read_header(path)
    except HeaderError as e:
        raise ModelFileError(f"{base} is not a Diffusion Sentinel artifact classifier: {e}. {retrain}") from e
    if header.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"{base} is a safetensors file but not a Diffusion Sentinel artifact classifier "
            f"(format={str(header.get('format'))[:60]!r}; a checkpoint or another tool's file?). {retrain}")
    try:
        version = int(header.get("format_version", "0"))
    except (TypeError, ValueError):
        version = -1
    if version < 1:
        raise ModelFileError(f"{base}: invalid format_version {str(header.get('format_version'))[:40]!r} (the file "
                             f"was damaged or edited). {retrain}")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{base} was written by a newer Diffusion Sentinel (model format {version}, this one "
                             f"reads {FORMAT_VERSION}); update the pack")
    try:
        meta = loads_bounded(header.get(META_KEY, ""), "its classifier metadata")
    except HeaderError as e:
        raise ModelFileError(f"{base}: {e} (the file was damaged or edited). {retrain}") from e
    if not isinstance(meta, dict):
        raise ModelFileError(f"{base}: classifier metadata must be a JSON object. {retrain}")
    recipe = meta.get("recipe")
    if not isinstance(recipe, str) or recipe not in RECIPES:
        raise ModelFileError(f"{base}: unknown classifier recipe {str(recipe)[:40]!r} (known: {sorted(RECIPES)}); "
                             "update the pack or retrain")
    allowed, required = expected_arrays(recipe)
    try:
        check_entries(entries, allowed, required, kind="arrays")
    except HeaderError as e:
        raise ModelFileError(f"{base} is a damaged or inconsistent classifier file: {e}. {retrain}") from e
    try:
        params = meta.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError("params must be a JSON object")
        if recipe == "dmax_rule" and "relative" not in params:
            params = {**params, "relative": False}  # written before the relative form existed: an absolute rule
        est = make_model(recipe, **params)
        with safe_open(path, framework="np") as f:
            arrays = {k: f.get_tensor(k) for k in entries}
        est.load_state(arrays, meta["classes"], meta["n_features_in"])
        tf = TrainedFor.from_dict(meta.get("trained_for") or {})
        if tf.length != est.n_features_in_:
            raise ValueError(f"trained_for.length {tf.length} != n_features_in {est.n_features_in_}")
    except ModelFileError:
        raise
    except Exception as e:  # safetensors' own errors, bad shapes, bad params: all mean a damaged file
        raise ModelFileError(f"{base} is a damaged or inconsistent classifier file: {type(e).__name__}: {e}. "
                             f"{retrain}") from e
    return ArtifactModel(estimator=est, trained_for=tf, training=meta.get("training") or {}, cv=meta.get("cv"),
                         versions=meta.get("versions") or {}, created=meta.get("created", ""),
                         name=os.path.splitext(base)[0])


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a model file (validated by a full load)."""
    return load_model(path).metadata()


# ----------------------------------------------------------------------------------------------- joblib interop
def _require_trust(trust_pickle: bool, action: str) -> None:
    if not trust_pickle:
        raise ModelFileError(f"{action} uses pickle (joblib), which can run arbitrary code when loaded. Pass "
                             "trust_pickle=True (CLI: --trust-pickle) only for files you made or fully trust.")


def export_joblib(model: ArtifactModel, path: str | os.PathLike, trust_pickle: bool = False) -> str:
    """Write the fitted estimator and its metadata with joblib (for interop only; needs ``trust_pickle=True``)."""
    import joblib

    _require_trust(trust_pickle, "exporting to joblib")
    path = os.fspath(path)
    joblib.dump({"format": FORMAT_NAME + "+joblib", "estimator": model.estimator, "metadata": model.metadata()},
                path)
    return path


def import_joblib(path: str | os.PathLike, trust_pickle: bool = False, trained_for: TrainedFor | None = None,
                  scaler_path: str | None = None, artifact_label: int = 0) -> ArtifactModel:
    """Read a joblib file ONLY when ``trust_pickle`` is True and convert it to an :class:`ArtifactModel`.

    Accepts this pack's :func:`export_joblib` files, a bare fitted estimator of this pack (``trained_for`` needed),
    or a scikit-learn ``RandomForestClassifier`` such as the Similarity-Trajectory authors' ``rf.joblib`` (optional
    ``scaler_path``: their ``scaler.joblib``; ``artifact_label``: the class meaning "unnatural", 0 in their code),
    which becomes a ``paper_rf`` model.
    """
    import joblib

    _require_trust(trust_pickle, "importing a joblib file")
    obj = joblib.load(os.fspath(path))  # trusted explicitly by the caller
    if isinstance(obj, dict) and obj.get("format") == FORMAT_NAME + "+joblib":
        meta = obj["metadata"]
        return ArtifactModel(estimator=obj["estimator"], trained_for=TrainedFor.from_dict(meta["trained_for"]),
                             training=meta.get("training") or {}, cv=meta.get("cv"),
                             name=os.path.splitext(os.path.basename(os.fspath(path)))[0])
    if trained_for is None:
        raise ModelFileError("this joblib file carries no metadata: give trained_for (metric, noise_frame, length)")
    if isinstance(obj, ArtifactClassifier):
        return ArtifactModel(estimator=obj, trained_for=trained_for, training={"source": "joblib import"})
    from sklearn.ensemble import RandomForestClassifier

    if isinstance(obj, RandomForestClassifier):
        return _paper_forest_from_sklearn(obj, trained_for, scaler_path, artifact_label)
    raise ModelFileError(f"{os.path.basename(os.fspath(path))} holds a {type(obj).__name__}, which cannot be "
                         "converted (supported: this pack's estimators, scikit-learn RandomForestClassifier)")


def _paper_forest_from_sklearn(rf, trained_for: TrainedFor, scaler_path: str | None, artifact_label: int):
    import joblib

    from .estimators import PaperForestClassifier
    from .forest import TreeEnsemble

    if list(rf.classes_) != [0, 1] or artifact_label not in (0, 1):
        raise ModelFileError(f"expected a forest with classes [0, 1] and artifact_label 0 or 1, got "
                             f"{list(rf.classes_)} / {artifact_label}")
    n = int(rf.n_features_in_)
    if trained_for.length != n:
        raise ModelFileError(f"the forest takes {n} values but trained_for.length is {trained_for.length}")
    mean, scale = np.zeros(n), np.ones(n)
    if scaler_path:
        sc = joblib.load(scaler_path)  # the caller trusted pickles explicitly
        mean, scale = np.asarray(sc.mean_, dtype=np.float64), np.asarray(sc.scale_, dtype=np.float64)
    forest = TreeEnsemble.from_sklearn(rf.estimators_)
    if artifact_label == 0:  # the authors' code labels "unnatural" 0: make column 1 = P(artifact)
        forest.value = forest.value[:, ::-1].copy()
    est = PaperForestClassifier(n_estimators=len(rf.estimators_))
    est.load_state({"mean_": mean, "scale_": scale,
                    "feature_importances_": np.asarray(rf.feature_importances_, dtype=np.float64),
                    **forest.to_arrays("forest.")}, [0, 1], n)
    return ArtifactModel(estimator=est, trained_for=trained_for, training={"source": "joblib import (sklearn RF)"})


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)
