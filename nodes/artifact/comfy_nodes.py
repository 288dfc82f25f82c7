"""Artifact nodes: Artifact Predict, Filter Batch by Artifact, Save Labelled Trajectory, Train Artifact Classifier,
KSampler (Auto-Reject)."""

from __future__ import annotations

import json
import logging
import os

import comfy.samplers
from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker

from ...classifiers import read_dataset, recipe_names, train_model
from ...classifiers.estimators import RULE_DEFAULTS
from ..common.comfy_glue import Progress
from ..common.comfy_types import SimilaritySeries as SimilaritySeriesType
from ..common.comfy_types import Trajectory as TrajectoryType
from ..trajectory.frames import series_from_trajectory
from ..trajectory.similarity import METRICS
from .autoreject import EarlyCheck, Judge, auto_reject
from .batch_filter import MODES, ORDERS, choose, indices_string, take_image, take_latent, take_mask
from .dataset_writer import parse_labels, safe_name, write_samples
from .model_store import (
    DATASETS,
    NONE,
    classifier_dir,
    classifier_options,
    dataset_roots,
    load_classifier,
    resolve_dataset,
)
from .scoring import score_series

log = logging.getLogger("diffusion_sentinel")
CATEGORY = "Sentinel/artifact"
PIXEL_METRICS = ("pixel_ssim", "dreamsim")

_CLASSIFIER_TIP = ("A classifier from models/artifact_classifiers (train one with 'Train Artifact Classifier'). "
                   "'none' uses the model-free D_max rule: artifact when the similarity curve drops by more than "
                   "dmax_threshold in the last 60% of the run.")
_DMAX_TIP = (f"Only for classifier 'none': the D_max above which P(artifact) > 0.5. 0 = the value calibrated on "
             f"DreamSim series of 50-step runs ({RULE_DEFAULTS['threshold']}, 69% accuracy on the labelled data); "
             "other metrics need a value of your own.")
_RULE_METRIC_TIP = ("Only for classifier 'none' with a TRAJECTORY input: the similarity metric the rule computes. "
                    "dreamsim is the metric it is calibrated for (needs the VAE and the optional DreamSim package); "
                    "for the others set dmax_threshold.")


def _classifier_input(name: str = "classifier", tip: str = _CLASSIFIER_TIP):
    return io.Combo.Input(name, options=classifier_options(), default=NONE, tooltip=tip)


def _need_vae(metric: str, vae) -> None:
    if metric in PIXEL_METRICS and vae is None:
        raise ValueError(f"the {metric} series decodes every x0 with a VAE: connect the 'vae' input")


def _log_notes(node: str, notes: list[str]) -> None:
    for n in notes:
        log.warning("%s: %s", node, n)


# ================================================================================================ Artifact Predict
class ArtifactPredict(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelArtifactPredict",
            display_name="Artifact Predict",
            category=CATEGORY,
            description="P(artifact) of every batch item from its similarity trajectory (Menn et al. 2024), with a "
                        "trained classifier or, with 'none', the model-free D_max rule.",
            inputs=[
                SimilaritySeriesType.Input("series", optional=True,
                                           tooltip="From Similarity Trajectory. Must use the classifier's metric."),
                TrajectoryType.Input("trajectory", optional=True,
                                     tooltip="Alternatively a TRAJECTORY: the series is computed here with the "
                                             "classifier's metric (used when 'series' is absent or uses another "
                                             "metric)."),
                _classifier_input(),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Items with P(artifact) >= threshold are flagged as artifacts."),
                io.Vae.Input("vae", optional=True, tooltip="Needed to compute pixel_ssim/dreamsim series from a "
                                                           "TRAJECTORY."),
                io.Float.Input("dmax_threshold", default=0.0, min=0.0, max=2.0, step=0.001, optional=True,
                               tooltip=_DMAX_TIP),
                io.Combo.Input("rule_metric", options=list(METRICS), default="dreamsim", optional=True,
                               tooltip=_RULE_METRIC_TIP),
            ],
            outputs=[
                io.Float.Output("p_artifact", display_name="p_artifact", is_output_list=True,
                                tooltip="Per item: probability that the image has artifacts (1 for NaN/inf runs)."),
                io.Boolean.Output("is_artifact", display_name="is_artifact", is_output_list=True,
                                  tooltip="Per item: P(artifact) >= threshold."),
                SimilaritySeriesType.Output("SERIES", display_name="SERIES",
                                            tooltip="The series that was scored (computed here from a TRAJECTORY, "
                                                    "or the input series)."),
                io.String.Output("report", display_name="report",
                                 tooltip="JSON: probabilities, decisions, the model used and any warnings "
                                         "(resampling, non-finite items)."),
            ],
        )

    @classmethod
    def execute(cls, classifier, threshold, series=None, trajectory=None, vae=None, dmax_threshold=0.0,
                rule_metric="dreamsim") -> io.NodeOutput:
        model = load_classifier(classifier)
        want_metric = model.trained_for.metric if model else None
        want_nf = model.trained_for.noise_frame if model else True
        use_series = series is not None and (want_metric is None or (series.metric == want_metric
                                                                      and series.noise_frame == want_nf))
        if not use_series:
            if trajectory is None:
                if series is None:
                    raise ValueError("connect a similarity 'series' (Similarity Trajectory) or a 'trajectory'")
                use_series = True  # scoring will explain the metric mismatch
            else:
                metric = want_metric or rule_metric
                _need_vae(metric, vae)
                series = series_from_trajectory(trajectory, metric, noise_frame=want_nf, vae=vae)
        scores = score_series(series, model, threshold, dmax_threshold)
        _log_notes("Artifact Predict", scores.notes)
        report = json.dumps(scores.as_dict())
        return io.NodeOutput(scores.p, scores.is_artifact, series, report,
                             ui={"text": [f"P(artifact): {', '.join(f'{p:.3f}' for p in scores.p)} ({scores.model})"]})


# ================================================================================================ Filter Batch
class FilterBatchByArtifact(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelFilterBatchByArtifact",
            display_name="Filter Batch by Artifact",
            category=CATEGORY,
            description="Keep the batch items with a low P(artifact) (or the best k) and drop the rest, taking the "
                        "same items out of LATENT, IMAGE and MASK.",
            is_input_list=True,
            inputs=[
                io.Float.Input("p_artifact", force_input=True,
                               tooltip="Per item scores (lower = better), e.g. Artifact Predict's p_artifact."),
                io.Combo.Input("mode", options=list(MODES), default=MODES[0],
                               tooltip="below threshold: keep items with p < threshold. best k: keep the k items with "
                                       "the lowest p."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Items with p below this are kept (mode 'below threshold')."),
                io.Int.Input("k", default=1, min=1, max=4096, tooltip="How many items to keep (mode 'best k')."),
                io.Combo.Input("order", options=list(ORDERS), default=ORDERS[0],
                               tooltip="original: kept items stay in batch order. best first: sorted by p."),
                io.Combo.Input("if_none_kept", options=["keep best", "block downstream", "error"],
                               default="keep best",
                               tooltip="When no item passes: keep the single best item, silently skip the nodes "
                                       "downstream, or stop with an error."),
                io.Latent.Input("latent", optional=True, tooltip="The batch the scores belong to."),
                io.Image.Input("image", optional=True, tooltip="The decoded images of that batch."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Per-item masks of that batch (a single mask is passed through)."),
            ],
            outputs=[
                io.Latent.Output("LATENT", display_name="LATENT", tooltip="The kept items (skipped if no latent "
                                                                          "was connected)."),
                io.Image.Output("IMAGE", display_name="IMAGE", tooltip="The kept images."),
                io.Mask.Output("MASK", display_name="MASK", tooltip="The kept masks."),
                io.String.Output("indices", display_name="indices",
                                 tooltip="Kept batch indices as '0,2,3' (cg-image-filter's pick_list format)."),
                io.Float.Output("kept_p", display_name="kept_p", is_output_list=True,
                                tooltip="The score of every kept item, in output order."),
                io.Int.Output("count", display_name="count", tooltip="How many items were kept."),
            ],
        )

    @classmethod
    def execute(cls, p_artifact, mode, threshold, k, order, if_none_kept, latent=None, image=None,
                mask=None) -> io.NodeOutput:
        mode, threshold, k, order, none_kept = mode[0], float(threshold[0]), int(k[0]), order[0], if_none_kept[0]
        p = [float(v) for v in p_artifact]
        batch = len(p)
        lat = _single(latent, "latent")
        img = _single(image, "image")
        msk = _single(mask, "mask")
        idx = choose(p, mode, threshold, k, order)
        if not idx:
            if none_kept == "error":
                raise ValueError(f"no item has P(artifact) below {threshold} (scores: "
                                 f"{', '.join(f'{v:.3f}' for v in p)}); raise the threshold or use mode 'best k'")
            if none_kept == "block downstream":
                block = ExecutionBlocker(None)
                return io.NodeOutput(block, block, block, block, block, block,
                                     ui={"text": ["no item kept: downstream nodes skipped"]})
            idx = choose(p, "best k", threshold, 1, order)
        out_lat = take_latent(lat, idx, batch) if lat is not None else ExecutionBlocker(None)
        out_img = take_image(img, idx, batch) if img is not None else ExecutionBlocker(None)
        out_msk = take_mask(msk, idx, batch) if msk is not None else ExecutionBlocker(None)
        kept = [p[i] for i in idx]
        text = indices_string(idx)
        return io.NodeOutput(out_lat, out_img, out_msk, text, kept, len(idx),
                             ui={"text": [f"kept {len(idx)} of {batch}: [{text}]"]})


def _single(value, name):
    if value is None:
        return None
    items = [v for v in value if v is not None]
    if not items:
        return None
    if len(items) > 1:
        raise ValueError(f"'{name}' received {len(items)} separate batches (a list); connect one batch")
    return items[0]


# ================================================================================================ Save Labelled
class SaveLabelledTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelSaveLabelledTrajectory",
            display_name="Save Labelled Trajectory",
            category=CATEGORY,
            description="Add labelled examples (artifact / natural) to a dataset folder in output/artifact_datasets: "
                        "the similarity series and label in index.csv, the TRAJECTORY and the image per item. Train "
                        "Artifact Classifier reads the folder.",
            inputs=[
                io.String.Input("dataset", default="my_artifacts",
                                tooltip="Dataset folder name under output/artifact_datasets (created if needed)."),
                io.Combo.Input("label", options=["artifact", "natural"], default="artifact",
                               tooltip="The label of every item (unless 'labels' gives one per item)."),
                io.String.Input("labels", default="", optional=True,
                                tooltip="Optional per-item labels, e.g. '1,0,0,1' (1 = artifact) or "
                                        "'artifact,natural'. Empty: 'label' for all."),
                TrajectoryType.Input("trajectory", optional=True, tooltip="The run to store (and to compute the "
                                                                          "series from if none is connected)."),
                SimilaritySeriesType.Input("series", optional=True,
                                           tooltip="The similarity series to store. If absent it is computed from "
                                                   "the trajectory with 'metric'."),
                io.Combo.Input("metric", options=list(METRICS), default="latent_cosine", optional=True,
                               tooltip="Metric for computing the series from the trajectory (train and predict "
                                       "with the same metric)."),
                io.Boolean.Input("noise_frame", default=True, optional=True,
                                 tooltip="Paper layout for a computed series (value 0 compares the starting noise)."),
                io.Vae.Input("vae", optional=True, tooltip="Needed for pixel_ssim/dreamsim series."),
                io.Image.Input("image", optional=True, tooltip="The decoded images, saved as PNG next to each "
                                                               "sample for later review."),
                io.String.Input("group", default="", optional=True,
                                tooltip="Optional group (e.g. the prompt) so CV can keep a prompt's images in one "
                                        "fold."),
                io.Boolean.Input("store_trajectory", default=True, optional=True,
                                 tooltip="Also write each item's TRAJECTORY (x0 per step). Off keeps only the "
                                         "series and the label (enough for training)."),
            ],
            outputs=[
                io.String.Output("folder", display_name="folder", tooltip="The dataset folder."),
                io.Int.Output("size", display_name="size", tooltip="Samples in the dataset after this write."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, dataset, label, labels="", trajectory=None, series=None, metric="latent_cosine",
                noise_frame=True, vae=None, image=None, group="", store_trajectory=True) -> io.NodeOutput:
        if series is None:
            if trajectory is None:
                raise ValueError("connect a 'trajectory' or a similarity 'series' to save")
            _need_vae(metric, vae)
            series = series_from_trajectory(trajectory, metric, noise_frame=noise_frame, vae=vae)
        folder = os.path.join(dataset_roots()[0], safe_name(dataset))
        labs = parse_labels(labels or "", label, series.batch_size)
        write_samples(folder, series, labs, trajectory if store_trajectory else None, image, group or "")
        size = len(read_dataset(folder).y)
        msg = f"{DATASETS}/{safe_name(dataset)}: +{series.batch_size} ({sum(labs)} artifact), {size} samples"
        return io.NodeOutput(folder, size, ui={"text": [msg]})


# ================================================================================================ Train
class TrainArtifactClassifier(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelTrainArtifactClassifier",
            display_name="Train Artifact Classifier",
            category=CATEGORY,
            description="Cross-validate and train a classifier on a labelled dataset (a folder from Save Labelled "
                        "Trajectory, or a CSV in input/artifact_datasets) and save it to models/artifact_classifiers.",
            inputs=[
                io.String.Input("dataset", default="my_artifacts",
                                tooltip="Dataset folder or CSV name under output/ or input/artifact_datasets."),
                io.Combo.Input("recipe", options=recipe_names(), default="default",
                               tooltip="default = log_distance (logistic regression on log(1 - similarity)); "
                                       "paper_rf / paper_haar_knn = the paper's forests (1000 trees, slower); "
                                       "dmax_rule = fit the D_max rule's threshold."),
                io.String.Input("model_name", default="my_artifact_classifier",
                                tooltip="File name in models/artifact_classifiers (.safetensors is added)."),
                io.Int.Input("prefix_steps", default=0, min=0, max=10000,
                             tooltip="0: judge complete runs. K > 0: a prefix classifier on the first K values, for "
                                     "early rejection in KSampler (Auto-Reject)."),
                io.Int.Input("cv_folds", default=10, min=2, max=50, tooltip="Cross-validation folds for the report."),
                io.Int.Input("cv_seeds", default=1, min=0, max=20,
                             tooltip="CV repetitions with reshuffled folds (0 skips CV)."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing model file of that name."),
                io.Combo.Input("csv_metric", options=list(METRICS), default="dreamsim", optional=True,
                               tooltip="Metric of a CSV that does not say (the paper's CSV: dreamsim)."),
            ],
            outputs=[
                io.String.Output("model_file", display_name="model_file",
                                 tooltip="The file written (pick it in the classifier combos after a refresh)."),
                io.Float.Output("cv_accuracy", display_name="cv_accuracy", tooltip="Mean CV accuracy (NaN if "
                                                                                   "skipped)."),
                io.Float.Output("cv_auc", display_name="cv_auc", tooltip="Mean CV ROC AUC (NaN if skipped)."),
                io.String.Output("report", display_name="report", tooltip="JSON: data, CV figures, model metadata."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, dataset, recipe, model_name, prefix_steps, cv_folds, cv_seeds, overwrite,
                csv_metric="dreamsim") -> io.NodeOutput:
        data = read_dataset(resolve_dataset(dataset), metric=csv_metric)
        fname = safe_name(model_name, "model name")
        if not fname.endswith(".safetensors"):
            fname += ".safetensors"
        path = os.path.join(classifier_dir(), fname)
        if os.path.exists(path) and not overwrite:
            raise ValueError(f"models/artifact_classifiers/{fname} exists; choose another model_name or enable "
                             "overwrite")
        progress = Progress(cv_folds * cv_seeds + 1)
        model = train_model(data, recipe, prefix=prefix_steps or None, cv_folds=cv_folds, cv_seeds=cv_seeds,
                            on_fold=lambda done, total: progress.update(1), name=os.path.splitext(fname)[0])
        model.save(path)
        progress.update(1)
        acc = float(model.cv["accuracy_mean"]) if model.cv else float("nan")
        auc = float(model.cv["auc_mean"]) if model.cv else float("nan")
        report = {"file": fname, "data": data.summary(), "notes": data.notes, **model.metadata()}
        text = f"{fname}: {model.describe()}"
        return io.NodeOutput(fname, acc, auc, json.dumps(report), ui={"text": [text]})


# ================================================================================================ Auto-Reject
class KSamplerAutoReject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelKSamplerAutoReject",
            display_name="KSampler (Auto-Reject)",
            category=CATEGORY,
            description="KSampler that re-samples with seed+1, seed+2, ... every item whose P(artifact) is not below "
                        "tau, up to max_tries, and returns each item's best try. An optional prefix classifier "
                        "stops a doomed try after its first steps.",
            inputs=[
                io.Model.Input("model", tooltip="The model used for denoising the input latent."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the first try; try t uses seed + t."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps of every try."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, tooltip="The sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, tooltip="The scheduler."),
                io.Conditioning.Input("positive", tooltip="What to include in the image."),
                io.Conditioning.Input("negative", tooltip="What to exclude from the image."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise (a batch is judged item by item)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the schedule to run (below 1: image to image)."),
                _classifier_input(),
                io.Float.Input("tau", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Accept an item when P(artifact) < tau."),
                io.Int.Input("max_tries", default=4, min=1, max=64,
                             tooltip="At most this many tries per item (the best is returned if none passes)."),
                io.Vae.Input("vae", optional=True, tooltip="Needed when the classifier uses pixel_ssim/dreamsim."),
                _classifier_input("early_classifier",
                                  "A prefix classifier (Train Artifact Classifier with prefix_steps > 0) that stops "
                                  "a try after its first steps when every item looks doomed. 'none': no early "
                                  "rejection."),
                io.Float.Input("early_threshold", default=0.5, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="Stop a try early when the prefix P(artifact) >= this for every item."),
                io.Float.Input("dmax_threshold", default=0.0, min=0.0, max=2.0, step=0.001, optional=True,
                               tooltip=_DMAX_TIP),
                io.Combo.Input("rule_metric", options=list(METRICS), default="dreamsim", optional=True,
                               tooltip=_RULE_METRIC_TIP),
            ],
            outputs=[
                io.Latent.Output("LATENT", display_name="LATENT", tooltip="Every item's best try."),
                io.Int.Output("seed_used", display_name="seed_used", is_output_list=True,
                              tooltip="Per item: the seed of the returned try (reproduce it with KSampler on the "
                                      "same batch)."),
                io.Float.Output("p_artifact", display_name="p_artifact", is_output_list=True,
                                tooltip="Per item: P(artifact) of the returned try."),
                io.Float.Output("tries_p", display_name="tries_p", is_output_list=True,
                                tooltip="P(artifact) of every try, try by try (items re-sampled in that try in "
                                        "batch order; prefix P for tries stopped early)."),
                TrajectoryType.Output("TRAJECTORY", display_name="TRAJECTORY",
                                      tooltip="The trajectories of the returned tries."),
                io.String.Output("report", display_name="report",
                                 tooltip="JSON: every try (seed, items, P, stopped early?) and the model "
                                         "evaluations used and saved."),
            ],
        )

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                classifier, tau, max_tries, vae=None, early_classifier=NONE, early_threshold=0.5,
                dmax_threshold=0.0, rule_metric="dreamsim") -> io.NodeOutput:
        clf = load_classifier(classifier)
        judge = Judge.for_model(clf, rule_metric, tau, dmax_threshold, vae)
        _need_vae(judge.metric, vae)
        if clf is None and judge.metric != "dreamsim" and dmax_threshold <= 0:
            raise ValueError(f"classifier 'none' with rule_metric {judge.metric}: set dmax_threshold (the D_max rule "
                             "is calibrated for dreamsim only), or choose a classifier")
        early = None
        early_model = load_classifier(early_classifier)
        if early_model is not None:
            early = EarlyCheck(Judge.for_model(early_model, threshold=early_threshold, vae=vae), early_threshold)
            _need_vae(early.judge.metric, vae)
        res = auto_reject(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, judge,
                          tau, max_tries, denoise=denoise, early=early)
        report = res.report()
        traj = res.trajectory if res.trajectory is not None else ExecutionBlocker(res.trajectory_error)
        text = (f"seeds {res.seeds}, P(artifact) {[round(p, 3) for p in res.p]}, {len(res.tries)} tries, "
                f"model evaluations {res.image_evals} (without early rejection {res.image_evals_without_early})")
        return io.NodeOutput(res.latent, res.seeds, res.p, res.tries_p, traj, json.dumps(report),
                             ui={"text": [text]})


NODES = [ArtifactPredict, FilterBatchByArtifact, SaveLabelledTrajectory, TrainArtifactClassifier, KSamplerAutoReject]

