"""Save Labelled Trajectory and Train Artifact Classifier (ComfyUI glue)."""

from __future__ import annotations

import json
import os

from comfy_api.latest import io

from ...classifiers import read_dataset, recipe_names, train_model
from ..common.comfy_glue import Progress
from ..common.comfy_types import SimilaritySeries as SimilaritySeriesType
from ..common.comfy_types import Trajectory as TrajectoryType
from ..common.ui import result_ui
from ..trajectory.frames import series_from_trajectory
from ..trajectory.similarity import METRICS
from .common_inputs import CATEGORY, check_metrics
from .dataset_writer import parse_labels, safe_name, write_samples
from .model_store import DATASETS, classifier_dir, dataset_roots, resolve_dataset
from .panels import save_labelled_panel, train_panel


class SaveLabelledTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelSaveLabelledTrajectory",
            display_name="Save Labelled Trajectory",
            category=CATEGORY,
            description="Add labelled examples (artifact / natural) to a dataset folder in output/artifact_datasets: "
                        "one file per item with its similarity series and label (samples/<id>.json), plus its "
                        "TRAJECTORY and image. Several ComfyUI workers can write one folder at the same time. Train "
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
                                       "with the same metric; a dataset holds one metric and layout)."),
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
        rel = safe_name(dataset)
        folder = os.path.join(dataset_roots()[0], rel)
        if series is None:
            if trajectory is None:
                raise ValueError("connect a 'trajectory' or a similarity 'series' to save")
            check_metrics("Save Labelled Trajectory", [("metric", metric)], vae)
            series = series_from_trajectory(trajectory, metric, noise_frame=noise_frame, vae=vae)
        labs = parse_labels(labels or "", label, series.batch_size)
        rows = write_samples(folder, series, labs, trajectory if store_trajectory else None, image, group or "")
        size = len(read_dataset(folder).y)
        return io.NodeOutput(folder, size, ui=result_ui(save_labelled_panel(f"{DATASETS}/{rel}", folder, rows, size)))


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
                                       "dmax_rule = fit the relative D_max rule's threshold to your labels."),
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
                io.Float.Output("cv_accuracy", display_name="cv_accuracy",
                                tooltip="Mean CV accuracy at P = 0.5, higher is better (NaN if skipped)."),
                io.Float.Output("cv_auc", display_name="cv_auc",
                                tooltip="Mean CV ROC AUC, higher is better, 0.5 = chance (NaN if skipped)."),
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
        progress.update(progress.total - progress.done)
        acc = float(model.cv["accuracy_mean"]) if model.cv else float("nan")
        auc = float(model.cv["auc_mean"]) if model.cv else float("nan")
        report = {"file": fname, "path": path, "data": data.summary(), "notes": data.notes, **model.metadata()}
        p = train_panel(fname, path, acc, auc, data.summary(), model.describe(), data.notes)
        return io.NodeOutput(fname, acc, auc, json.dumps(report), ui=result_ui(p))
