"""Label Artifacts (click): show a batch in the node, let the user click the images with artifacts, write the
labelled items to a dataset and continue the graph (ComfyUI glue).

The node is asynchronous: while it waits for the editor's answer (web/sentinel_label.js, routes in
label_server.py), the rest of the graph that does not need its outputs keeps running. Everything that can be
refused is checked before the batch is shown, so no labelling work is wasted on a dataset that cannot take it.
"""

from __future__ import annotations

import logging
import os
import secrets

import numpy as np
from comfy_api.latest import io

from ...classifiers import read_dataset
from ...classifiers.data import DatasetError, check_layout
from ..common.comfy_glue import check_interrupt
from ..common.comfy_types import SimilaritySeries as SimilaritySeriesType
from ..common.comfy_types import Trajectory as TrajectoryType
from ..common.ui import result_ui
from ..trajectory.frames import series_from_trajectory
from ..trajectory.similarity import METRICS
from . import label_server
from .active_learning import display_order, least_sure
from .common_inputs import CATEGORY, CLASSIFIER_TIP, check_metrics, classifier_input, log_notes, per_item
from .dataset_writer import safe_name, write_samples
from .label_session import BROKER
from .labelling import counts, label_panel, labels_string, parse_label_string
from .model_store import DATASETS, dataset_roots, load_classifier
from .scoring import score_series

log = logging.getLogger("diffusion_sentinel")
ON_TIMEOUT = ("error", "continue without saving")
ORDERS = ("batch order", "least sure first")
UI_KEY = "sentinel_label"
PREVIEW_SUBFOLDER = "sentinel_label"

label_server.register_routes()


def save_previews(images) -> list[dict]:
    """Every image of the batch as a PNG in ComfyUI's temp folder (fast compression); the /view references."""
    import folder_paths
    from PIL import Image

    folder = os.path.join(folder_paths.get_temp_directory(), PREVIEW_SUBFOLDER)
    os.makedirs(folder, exist_ok=True)
    stem = f"label_{secrets.token_hex(6)}"
    refs = []
    for i in range(images.shape[0]):
        arr = (images[i].detach().float().cpu().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        name = f"{stem}_{i:03d}.png"
        Image.fromarray(arr).save(os.path.join(folder, name), compress_level=1)
        refs.append({"filename": name, "subfolder": PREVIEW_SUBFOLDER, "type": "temp"})
    return refs


def _check_batch(image, series, trajectory) -> int:
    if image is None or getattr(image, "ndim", 0) != 4:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(f"'image' must be a batch of images [n, height, width, channels]; got {shape}")
    b = int(image.shape[0])
    if series is not None and series.batch_size != b:
        raise ValueError(f"the similarity series has {series.batch_size} item(s) but 'image' has {b}: connect the "
                         "decoded images of the same batch")
    if trajectory is not None and trajectory.batch_size != b:
        raise ValueError(f"the TRAJECTORY has {trajectory.batch_size} item(s) but 'image' has {b}: connect the "
                         "decoded images of the same batch (VAE Decode of the sampler's LATENT)")
    return b


def _scoring_series(series, trajectory, model, vae):
    """The series the classifier can read: the dataset's own, or one computed with the classifier's metric."""
    if model is None:
        return series
    tf = model.trained_for
    if series.metric == tf.metric and bool(series.noise_frame) == bool(tf.noise_frame):
        return series
    if trajectory is None:
        return series  # scoring explains the mismatch
    check_metrics("Label Artifacts", [(f"the classifier {model.name}", tf.metric)], vae)
    return series_from_trajectory(trajectory, tf.metric, noise_frame=tf.noise_frame, vae=vae)


class LabelArtifacts(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelLabelArtifacts",
            display_name="Label Artifacts (click)",
            category=CATEGORY,
            description="Shows the batch in the node with the current classifier's P(artifact) and marks the images "
                        "it is least sure about; click the images with artifacts, then 'Save labels & continue'. The "
                        "labelled items go to a dataset folder in output/artifact_datasets (one file per image, "
                        "checked before writing, several ComfyUI workers can share a folder) that Train Artifact "
                        "Classifier reads, and the graph continues with the labels. API runs: give 'labels'.",
            inputs=[
                io.Image.Input("image", tooltip="The decoded batch to label (VAE Decode of the sampler's LATENT)."),
                TrajectoryType.Input("trajectory", optional=True,
                                     tooltip="The batch's TRAJECTORY (KSampler (Trajectory)): its similarity series is "
                                             "what the dataset stores and the classifier reads."),
                SimilaritySeriesType.Input("series", optional=True,
                                           tooltip="Or the similarity series itself (Similarity Trajectory). Used "
                                                   "instead of computing one from the trajectory."),
                classifier_input(tip="The classifier whose P(artifact) is shown and whose least-sure images are "
                                     "marked (active learning). " + CLASSIFIER_TIP),
                io.String.Input("dataset", default="my_artifacts",
                                tooltip="Dataset folder under output/artifact_datasets (created if needed); Train "
                                        "Artifact Classifier reads it under this name."),
                io.String.Input("labels", default="",
                                tooltip="Empty (the editor): wait for your clicks. Or the labels typed, one per image, "
                                        "e.g. '1,0,x,0' (1 = artifact, 0 = natural, x = leave out): saved without "
                                        "waiting, for API runs."),
                io.Int.Input("timeout", default=900, min=5, max=86400, step=1,
                             tooltip="Seconds to wait for the labels. Then 'on_timeout' decides; nothing is written."),
                io.Combo.Input("on_timeout", options=list(ON_TIMEOUT), default=ON_TIMEOUT[0],
                               tooltip="error: stop the run with a message. continue without saving: write nothing "
                                       "and go on (unattended queues)."),
                io.Int.Input("mark_least_sure", default=4, min=0, max=4096,
                             tooltip="How many images to mark as the ones the classifier is least sure about "
                                     "(P nearest the threshold): look at these closest, they teach it the most."),
                io.Combo.Input("order", options=list(ORDERS), default=ORDERS[0],
                               tooltip="Thumbnail order: the batch's, or least sure first."),
                io.Boolean.Input("preselect", default=False,
                                 tooltip="Start with the images the classifier flags (P >= threshold) marked as "
                                         "artifacts, so you only correct it. Off: every image starts as natural."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="The classifier's decision threshold: 'least sure' means P nearest it."),
                io.Combo.Input("metric", options=list(METRICS), default="latent_cosine", optional=True,
                               tooltip="Similarity metric of the stored series when computed from the trajectory "
                                       "(a dataset holds one metric; train and predict with the same)."),
                io.Boolean.Input("noise_frame", default=True, optional=True,
                                 tooltip="Paper layout for a computed series (value 0 compares the starting noise)."),
                io.Vae.Input("vae", optional=True, tooltip="Needed for pixel_ssim/dreamsim series."),
                io.String.Input("group", default="", optional=True,
                                tooltip="Optional group (e.g. the prompt) so CV keeps a group in one fold; empty: "
                                        "the batch is the group."),
                io.Boolean.Input("store_trajectory", default=True, optional=True,
                                 tooltip="Also write each image's TRAJECTORY (x0 per step; larger). Off keeps the "
                                         "series and the label, which is all training needs."),
                io.Boolean.Input("store_images", default=True, optional=True,
                                 tooltip="Also write each image as PNG next to its sample, for later review."),
            ],
            outputs=[
                io.Image.Output("IMAGE", display_name="IMAGE", tooltip="The batch, unchanged (continue the graph)."),
                io.Boolean.Output("is_artifact", display_name="is_artifact", is_output_list=True,
                                  tooltip=per_item("Your label: True = artifact (left-out images: False).")),
                io.Float.Output("p_artifact", display_name="p_artifact", is_output_list=True,
                                tooltip=per_item("The classifier's P(artifact) that was shown, 0..1.")),
                io.Int.Output("n_artifact", display_name="n_artifact",
                              tooltip="Images saved as artifact by this run (0 when skipped)."),
                io.Int.Output("n_natural", display_name="n_natural",
                              tooltip="Images saved as natural by this run (0 when skipped)."),
                io.String.Output("folder", display_name="folder", tooltip="The dataset folder."),
                io.Int.Output("size", display_name="size", tooltip="Samples in the dataset after this run."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.extra_pnginfo, io.Hidden.dynprompt],
            is_output_node=True,
        )

    @classmethod
    async def execute(cls, image, classifier, dataset, labels, timeout, on_timeout, mark_least_sure, order,
                      preselect, threshold, trajectory=None, series=None, metric="latent_cosine", noise_frame=True,
                      vae=None, group="", store_trajectory=True, store_images=True) -> io.NodeOutput:
        # ---- everything that can be refused, before anyone spends time labelling
        b = _check_batch(image, series, trajectory)
        if on_timeout not in ON_TIMEOUT:
            raise ValueError(f"on_timeout must be one of {list(ON_TIMEOUT)}")
        rel = safe_name(dataset)
        folder = os.path.join(dataset_roots()[0], rel)
        typed = parse_label_string(labels, b)
        if series is None:
            if trajectory is None:
                raise ValueError("connect the batch's 'trajectory' (KSampler (Trajectory)) or its similarity 'series': "
                                 "a dataset sample is the image's similarity series with your label")
            check_metrics("Label Artifacts", [("metric", metric)], vae)
            series = series_from_trajectory(trajectory, metric, noise_frame=noise_frame, vae=vae)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise DatasetError(f"{folder} exists and is not a folder; choose another dataset name")
        check_layout(folder, series.metric, bool(series.noise_frame))
        model = load_classifier(classifier)
        scores = score_series(_scoring_series(series, trajectory, model, vae), model, threshold)
        log_notes("Label Artifacts", scores.notes)
        p = scores.p
        marked = least_sure(p, mark_least_sure, threshold)
        refs = save_previews(image)
        folder_rel = f"{DATASETS}/{rel.replace(os.sep, '/')}"

        # ---- the labels: typed, or from the editor
        if typed is not None:
            action, labs = "save", typed
        else:
            payload = {"images": refs, "p": p, "marked": marked, "order": display_order(p, order, threshold),
                       "threshold": threshold, "model": scores.model, "preselect": bool(preselect),
                       "dataset": folder_rel, "calibrated": scores.calibrated, "notes": scores.notes[:3]}
            action, labs = await cls._ask(b, payload, timeout, on_timeout)

        # ---- writing (validated again by the writer before its first byte)
        keep = [i for i, v in enumerate(labs) if v is not None] if action == "save" else []
        rows = []
        if keep:
            try:
                rows = write_samples(folder, series.select(keep), [labs[i] for i in keep],
                                     trajectory.select(keep) if (trajectory is not None and store_trajectory) else None,
                                     image[keep] if store_images else None, group or "", batch_items=keep)
            except (ValueError, OSError) as e:
                raise ValueError(f"{e} -- your labels were '{labels_string(labs)}': type them into 'labels' and "
                                 "queue again to save them without clicking.") from e
        saved = counts([labs[i] for i in keep])
        size = len(read_dataset(folder).y) if os.path.isdir(os.path.join(folder, "samples")) else 0
        outcome = action if action == "save" else "skip"
        notes = [] if action != "timeout" else [f"no answer within {timeout} s: nothing written"]
        if not scores.calibrated:
            notes.append("the rule's P is uncalibrated on this metric: the marks are a rough guide until you train "
                         "a classifier on your labels")
        state = {"v": 1, "outcome": action, "labels": labs, "p": p, "marked": marked, "images": refs,
                 "order": display_order(p, order, threshold), "threshold": threshold, "model": scores.model,
                 "dataset": folder_rel, "written": len(rows), "size": size}
        ui = result_ui(label_panel(labs, p, marked, threshold, scores.model, outcome, folder_rel, size, notes),
                       extra={UI_KEY: [state]})
        return io.NodeOutput(image, [v == 1 for v in labs], p, saved["artifact"], saved["natural"], folder, size,
                             ui=ui)

    @classmethod
    async def _ask(cls, batch: int, payload: dict, timeout: int, on_timeout: str) -> tuple[str, list]:
        """Show the batch in the editor and wait for its answer (or Cancel, or the deadline)."""
        if not label_server.register_routes() or label_server.server_instance() is None:
            raise RuntimeError("Label Artifacts shows the batch in the ComfyUI editor, and no ComfyUI server runs "
                               "here. Type the labels into 'labels' (e.g. '1,0,x,0': 1 = artifact, 0 = natural, x = "
                               "leave out) to label without the editor.")
        node = str(cls.hidden.unique_id) if cls.hidden is not None and cls.hidden.unique_id is not None else "?"
        display = node
        dyn = cls.hidden.dynprompt if cls.hidden is not None else None
        if dyn is not None and hasattr(dyn, "get_display_node_id"):
            try:
                display = str(dyn.get_display_node_id(node))
            except Exception:  # a node id the dynamic prompt does not know: show it under its own id
                display = node
        pnginfo = cls.hidden.extra_pnginfo if cls.hidden is not None else None
        wf = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
        workflow_id = wf.get("id") if isinstance(wf, dict) else None
        prompt_id = None
        try:
            from comfy_execution.utils import get_executing_context

            ctx = get_executing_context()
            prompt_id = getattr(ctx, "prompt_id", None)
        except ImportError:
            pass
        req = BROKER.open(node, batch, payload, timeout, prompt_id=prompt_id, display_node=display,
                          workflow_id=workflow_id)
        log.info("Label Artifacts (node %s) waits up to %d s for labels: click the images with artifacts in the "
                 "editor, then 'Save labels & continue'", display, timeout)
        label_server.send(label_server.EVENT_REQUEST, req.public(BROKER.clock()))
        outcome = "cancel"
        try:
            answer = await BROKER.wait(req.token, check_interrupt)
            if answer is None:
                outcome = "timeout"
                if on_timeout == "error":
                    raise TimeoutError(
                        f"Label Artifacts waited {timeout} s for labels and got none, so nothing was written. Keep "
                        "the workflow open in the ComfyUI editor while it runs (the node shows the batch: click the "
                        "images with artifacts, then 'Save labels & continue'), raise 'timeout', set on_timeout to "
                        "'continue without saving', or type the labels into 'labels' (e.g. '1,0,x,0').")
                return "timeout", [None] * batch
            outcome = answer[0]
            if answer[0] == "cancel":
                import comfy.model_management

                raise comfy.model_management.InterruptProcessingException()
            return answer
        finally:
            label_server.send(label_server.EVENT_DONE, {"token": req.token, "node": node, "display_node": display,
                                                        "outcome": outcome})
