"""Inputs, tooltips and checks shared by the artifact nodes (ComfyUI glue)."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ...classifiers.estimators import ABSOLUTE_RULE_DEFAULTS, RULE_CALIBRATION, RULE_DEFAULTS
from ..trajectory.frames import metric_requirements_missing
from ..trajectory.panels import per_item  # noqa: F401  (re-exported for the node modules)
from .model_store import NONE, classifier_options

log = logging.getLogger("diffusion_sentinel")
CATEGORY = "Sentinel/artifact"
PIXEL_METRICS = ("pixel_ssim", "dreamsim")
DEFAULT_RULE_METRIC = "latent_cosine"  # no decode, no VAE, no extra files: runs on any model

CLASSIFIER_TIP = (
    "A classifier from models/artifact_classifiers (train one with 'Train Artifact Classifier'). 'none' uses the "
    f"model-free rule: the relative late drop (D_max over the last 60 % of the similarity curve / the curve's range) "
    f"above {RULE_DEFAULTS['threshold']} means P(artifact) > 0.5. Calibrated on DreamSim series (accuracy "
    f"{RULE_CALIBRATION['nested_cv_accuracy']:.2f}, AUC {RULE_CALIBRATION['auc']:.2f}); scale-free, so it runs on "
    "latent_cosine series too, where it is uncalibrated (a ranking of the batch).")
DMAX_TIP = (
    "Only for classifier 'none'. 0 (default): the relative rule above. > 0: the absolute rule instead, artifact when "
    "D_max (the largest drop over the last 60 % of the series, Similarity Trajectory's d_max output) exceeds this "
    f"value, in the metric's own units (DreamSim calibration: {ABSOLUTE_RULE_DEFAULTS['threshold']}).")
RULE_METRIC_TIP = (
    "Only for classifier 'none' with a TRAJECTORY input: the similarity metric the rule computes. latent_cosine "
    "(default) needs nothing else; pixel_ssim needs the VAE; dreamsim (the metric the rule is calibrated on) needs "
    "the VAE and the optional DreamSim package with its weights.")


def classifier_input(name: str = "classifier", tip: str = CLASSIFIER_TIP):
    return io.Combo.Input(name, options=classifier_options(), default=NONE, tooltip=tip)


def check_metrics(node: str, needs: list[tuple[str, str]], vae) -> None:
    """One error naming everything missing for every metric the node will compute (``needs``: (what, metric)),
    so a configuration that cannot work is fixed in one go, not one missing piece per run."""
    problems = []
    for what, metric in needs:
        missing = metric_requirements_missing(metric, vae)
        if missing:
            problems.append(f"{what} uses the {metric} metric, which needs: " + "; ".join(missing))
    if problems:
        raise ValueError(f"{node} cannot run as set up. " + " ALSO: ".join(problems) + ". Or use the latent_cosine "
                         "metric (rule_metric latent_cosine with classifier 'none', or a classifier trained on "
                         "latent_cosine series), which needs no VAE and no extra files.")


def log_notes(node: str, notes: list[str]) -> None:
    for n in notes:
        log.warning("%s: %s", node, n)
