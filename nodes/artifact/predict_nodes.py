"""Artifact Predict and Filter Batch by Artifact (ComfyUI glue)."""

from __future__ import annotations

import json

from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker

from ..common.comfy_types import SimilaritySeries as SimilaritySeriesType
from ..common.comfy_types import Trajectory as TrajectoryType
from ..common.ui import result_ui
from ..trajectory.frames import series_from_trajectory
from ..trajectory.similarity import METRICS
from .batch_filter import MODES, ORDERS, choose, indices_string, take_image, take_latent, take_mask
from .common_inputs import (
    CATEGORY,
    DEFAULT_RULE_METRIC,
    DMAX_TIP,
    RULE_METRIC_TIP,
    check_metrics,
    classifier_input,
    log_notes,
    per_item,
)
from .model_store import load_classifier
from .panels import filter_panel, predict_panel
from .scoring import score_series


class ArtifactPredict(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelArtifactPredict",
            display_name="Artifact Predict",
            category=CATEGORY,
            description="P(artifact) of every batch item from its similarity trajectory (Menn et al., arXiv "
                        "2412.17109), with a trained classifier or, with 'none', the model-free relative D_max rule "
                        "(runs on any model with the default latent_cosine series: no VAE, no extra files).",
            inputs=[
                SimilaritySeriesType.Input("series", optional=True,
                                           tooltip="From Similarity Trajectory. Must use the classifier's metric."),
                TrajectoryType.Input("trajectory", optional=True,
                                     tooltip="Alternatively a TRAJECTORY: the series is computed here with the "
                                             "classifier's metric (used when 'series' is absent or uses another "
                                             "metric)."),
                classifier_input(),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Items with P(artifact) >= threshold are flagged as artifacts."),
                io.Vae.Input("vae", optional=True, tooltip="Needed to compute pixel_ssim/dreamsim series from a "
                                                           "TRAJECTORY."),
                io.Float.Input("dmax_threshold", default=0.0, min=0.0, max=2.0, step=0.001, optional=True,
                               tooltip=DMAX_TIP),
                io.Combo.Input("rule_metric", options=list(METRICS), default=DEFAULT_RULE_METRIC, optional=True,
                               tooltip=RULE_METRIC_TIP),
            ],
            outputs=[
                io.Float.Output("p_artifact", display_name="p_artifact", is_output_list=True,
                                tooltip=per_item("Probability that the image has artifacts, 0..1, lower is better "
                                                 "(1 for NaN/inf runs).")),
                io.Boolean.Output("is_artifact", display_name="is_artifact", is_output_list=True,
                                  tooltip=per_item("P(artifact) >= threshold.")),
                SimilaritySeriesType.Output("SERIES", display_name="SERIES",
                                            tooltip="The series that was scored (computed here from a TRAJECTORY, "
                                                    "or the input series)."),
                io.String.Output("report", display_name="report",
                                 tooltip="JSON: probabilities, decisions, D_max per item, the model used and any "
                                         "warnings (uncalibrated metric, resampling, non-finite items)."),
                io.Boolean.Output("any_artifact", display_name="any_artifact",
                                  tooltip="One value for the batch: True if at least one item is flagged."),
                io.Boolean.Output("all_artifact", display_name="all_artifact",
                                  tooltip="One value for the batch: True if every item is flagged."),
                io.Int.Output("n_artifacts", display_name="n_artifacts",
                              tooltip="One value for the batch: how many items are flagged."),
                io.Int.Output("best_index", display_name="best_index",
                              tooltip="One value for the batch: the item with the lowest P(artifact) (ties: the "
                                      "lower index), e.g. for ImageFromBatch."),
            ],
        )

    @classmethod
    def execute(cls, classifier, threshold, series=None, trajectory=None, vae=None, dmax_threshold=0.0,
                rule_metric=DEFAULT_RULE_METRIC) -> io.NodeOutput:
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
                what = f"the classifier {classifier}" if model else "rule_metric"
                check_metrics("Artifact Predict", [(what, metric)], vae)
                series = series_from_trajectory(trajectory, metric, noise_frame=want_nf, vae=vae)
        scores = score_series(series, model, threshold, dmax_threshold)
        log_notes("Artifact Predict", scores.notes)
        b = scores.batch_summary()
        return io.NodeOutput(scores.p, scores.is_artifact, series, json.dumps(scores.as_dict()),
                             b["any_artifact"], b["all_artifact"], b["n_artifacts"], b["best_index"],
                             ui=result_ui(predict_panel(scores)))


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
                                       "downstream of LATENT/IMAGE/MASK/indices/kept_p (count and any_kept still "
                                       "say 0 / False, for a switch), or stop with an error."),
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
                                tooltip=per_item("The score of every kept item, in output order.")),
                io.Int.Output("count", display_name="count",
                              tooltip="One value for the batch: how many items were kept."),
                io.Boolean.Output("any_kept", display_name="any_kept",
                                  tooltip="One value for the batch: True if at least one item passed (with 'keep "
                                          "best' the single best item is still output when this is False)."),
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
        passed = bool(idx)
        note = ""
        if not idx:
            if none_kept == "error":
                raise ValueError(f"no item has P(artifact) below {threshold} (scores: "
                                 f"{', '.join(f'{v:.3f}' for v in p)}); raise the threshold or use mode 'best k'")
            if none_kept == "block downstream":
                block = ExecutionBlocker(None)
                ui = result_ui(filter_panel(p, [], threshold, mode, "no item kept: downstream nodes skipped"))
                return io.NodeOutput(block, block, block, block, block, 0, False, ui=ui)
            idx = choose(p, "best k", threshold, 1, order)
            note = f"no item passed: kept the best one (item {idx[0]})"
        out_lat = take_latent(lat, idx, batch) if lat is not None else ExecutionBlocker(None)
        out_img = take_image(img, idx, batch) if img is not None else ExecutionBlocker(None)
        out_msk = take_mask(msk, idx, batch) if msk is not None else ExecutionBlocker(None)
        kept = [p[i] for i in idx]
        text = indices_string(idx)
        return io.NodeOutput(out_lat, out_img, out_msk, text, kept, len(idx), passed,
                             ui=result_ui(filter_panel(p, idx, threshold, mode, note)))


def _single(value, name):
    if value is None:
        return None
    items = [v for v in value if v is not None]
    if not items:
        return None
    if len(items) > 1:
        raise ValueError(f"'{name}' received {len(items)} separate batches (a list); connect one batch")
    return items[0]
