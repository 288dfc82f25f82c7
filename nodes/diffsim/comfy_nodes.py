"""DiffSim nodes: DiffSim (pairs), DiffSim Matrix (a batch against itself), Style Similarity Gate (reference vs
candidates), and the IP-Adapter Plus loader for DiffSim-C. Thin: validate, call the pipeline, shape outputs; what
each node shows on itself is built in ``results.py``.

Progress: every node's bar counts the distinct images (computed or found in the cache) plus the scores (pairs, or
rows of the matrix), and ends at exactly that total."""

from __future__ import annotations

import json
import logging
import os

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..common.comfy_glue import Progress, register_folder
from ..common.ui import result_ui
from .heatmap import matrix_image
from .inputs import DiffSimIPAdapter, model_inputs, settings_inputs
from .inputs import make_extractor as _extractor
from .ip_adapter import IPAdapterPlus
from .pipeline import aas_device, pair_up
from .results import BatchFigures, gate_panel, ipadapter_panel, matrix_panel, pairs_panel, worst_index

log = logging.getLogger("diffusion_sentinel")
CATEGORY = "Sentinel/diffsim"
IPADAPTER_DIR = "ipadapter"
register_folder(IPADAPTER_DIR, [os.path.join(folder_paths.models_dir, IPADAPTER_DIR)], {".safetensors"})


LIST_NOTE = ("List output: one value per {what}; a node connected here runs once per value. For one value per run "
             "use the batch-level outputs ({alts}).")


def _items(images: torch.Tensor, what: str) -> list[torch.Tensor]:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{what} must be a non-empty IMAGE batch [B, H, W, C]; got {shape}")
    return [images[i] for i in range(images.shape[0])]


def _n_unique(images: list[torch.Tensor]) -> int:
    """Distinct images as the pipeline sees them (normalised: RGBA == its RGB), i.e. the feature work to account."""
    from .images import content_hash

    return len({content_hash(im) for im in images})


class _Bar:
    """The node's progress: ``images`` distinct images (each computed or a cache hit) then ``scores`` scores."""

    def __init__(self, images: int, scores: int):
        self.images, self.scores = int(images), int(scores)
        self.progress = Progress(self.images + self.scores)

    def on_pass(self, n: int) -> None:  # images computed in one U-Net call
        self.progress.update(n)

    def features_done(self) -> None:
        """Count the images that came from the cache (no pass), so that the feature part ends at ``images``."""
        missing = self.images - self.progress.done
        if missing > 0:
            self.progress.update(missing)

    def on_score(self, _i: int = 0) -> None:
        self.progress.update(1)

    def finish(self) -> None:
        if self.progress.done != self.progress.total:  # never expected; keeps the bar honest if it happens
            log.warning("DiffSim progress ended at %d of %d", self.progress.done, self.progress.total)
            self.progress.update(self.progress.total - self.progress.done)


def _preview(image: torch.Tensor, cls) -> dict:
    try:  # ui values must be lists (ComfyUI merges them; JSON sends a tuple as a list anyway)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ui.PreviewImage(image, cls=cls).as_dict().items()}
    except Exception as e:  # no temp folder (direct calls in unit tests); the IMAGE output still carries it
        log.debug("preview not saved: %s", e)
        return {}


# ----------------------------------------------------------------------------- nodes
class DiffSim(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelDiffSim",
            display_name="DiffSim",
            category=CATEGORY,
            description="Diffusion-attention similarity of images (DiffSim, Song, Liu & Shou, arXiv 2412.14580): the "
                        "Aligned Attention Score of one U-Net attention layer, in [-1, 1], higher = more similar. "
                        "One image against a batch, or two batches item by item.",
            inputs=[
                io.Image.Input("image_a", tooltip="One image (compared with every image_b) or a batch (paired with "
                                                  "image_b item by item)."),
                io.Image.Input("image_b", tooltip="One image or a batch."),
                *model_inputs(),
                *settings_inputs(),
            ],
            outputs=[
                io.Float.Output("similarity", display_name="similarity", is_output_list=True,
                                tooltip="One DiffSim score per pair, in [-1, 1] (higher = more similar). "
                                        + LIST_NOTE.format(what="pair", alts="mean, min, max, best_index")),
                io.Float.Output("mean", display_name="mean",
                                tooltip="Batch-level: the mean score over the pairs (one value)."),
                io.String.Output("details", display_name="details",
                                 tooltip="JSON: the scores, the pairs, the ComfyUI block, noise level and sigma used, "
                                         "image passes and cache hits."),
                io.Float.Output("min", display_name="min", tooltip="Batch-level: the lowest score over the pairs."),
                io.Float.Output("max", display_name="max", tooltip="Batch-level: the highest score over the pairs."),
                io.Int.Output("best_index", display_name="best_index",
                              tooltip="Batch-level: the pair with the highest score (its position in the list; with "
                                      "one image_a it is the index of the most similar image_b). Ties: the first."),
                io.Int.Output("worst_index", display_name="worst_index",
                              tooltip="Batch-level: the pair with the lowest score. Ties: the first."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image_a, image_b, model, vae, clip, ip_adapter=None, clip_vision=None, batch_size=4,
                use_cache=True, **settings) -> io.NodeOutput:
        a, b = _items(image_a, "image_a"), _items(image_b, "image_b")
        pairs = pair_up(len(a), len(b))
        bar = _Bar(_n_unique(a + b), len(pairs))
        ex = _extractor(model, vae, clip, bar, ip_adapter, clip_vision, batch_size, use_cache, **settings)
        feats = ex.features(a + b)  # one batched pass over every distinct image
        bar.features_done()
        fa, fb = feats[:len(a)], feats[len(a):]
        from .aas import aas_pairs

        scores = aas_pairs([fa[i] for i, _ in pairs], [fb[j] for _, j in pairs], device=aas_device(model),
                           on_pair=bar.on_score)
        bar.finish()
        f = BatchFigures.of(scores)
        det = {**ex.details(), "pairs": pairs, "similarity": scores, "mean": f.mean, "min": f.min, "max": f.max,
               "best_index": f.best_index, "worst_index": f.worst_index}
        return io.NodeOutput(scores, f.mean, json.dumps(det), f.min, f.max, f.best_index, f.worst_index,
                             ui=result_ui(pairs_panel(pairs, scores, det)))


class DiffSimMatrix(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelDiffSimMatrix",
            display_name="DiffSim Matrix",
            category=CATEGORY,
            description="DiffSim of every pair in a batch: the N x N similarity matrix (diagonal 1) as a table and a "
                        "heatmap (fixed colour scale 0..1, values in the cells), its mean (how alike the batch is) "
                        "and each image's mean similarity to the others. N images cost N U-Net passes.",
            inputs=[io.Image.Input("images", tooltip="A batch of at least 2 images."), *model_inputs(),
                    *settings_inputs()],
            outputs=[
                io.String.Output("matrix", display_name="matrix",
                                 tooltip="The N x N matrix as JSON (a list of rows)."),
                io.Float.Output("mean", display_name="mean",
                                tooltip="Batch-level: mean of the off-diagonal entries, the batch's average pairwise "
                                        "DiffSim (higher = a more alike batch)."),
                io.Float.Output("per_image_mean", display_name="per_image_mean", is_output_list=True,
                                tooltip="Per image: its mean similarity to the other images (low = the odd one out). "
                                        + LIST_NOTE.format(what="image", alts="mean, min, max, most_atypical_index")),
                io.Image.Output("heatmap", display_name="heatmap",
                                tooltip="The matrix drawn as a heatmap: fixed colour scale 0 (dark) .. 1 (bright), "
                                        "values printed in the cells (up to 16 images)."),
                io.Float.Output("min", display_name="min",
                                tooltip="Batch-level: the lowest off-diagonal entry (the least similar pair)."),
                io.Float.Output("max", display_name="max",
                                tooltip="Batch-level: the highest off-diagonal entry (the most similar pair)."),
                io.Int.Output("most_atypical_index", display_name="most_atypical_index",
                              tooltip="Batch-level: the image with the lowest mean similarity to the others."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, model, vae, clip, ip_adapter=None, clip_vision=None, batch_size=4, use_cache=True,
                **settings) -> io.NodeOutput:
        items = _items(images, "images")
        if len(items) < 2:
            raise ValueError("DiffSim Matrix needs a batch of at least 2 images (use DiffSim for a single pair)")
        n = len(items)
        bar = _Bar(_n_unique(items), n)
        ex = _extractor(model, vae, clip, bar, ip_adapter, clip_vision, batch_size, use_cache, **settings)
        feats = ex.features(items)
        bar.features_done()
        from .aas import aas_matrix

        mat = aas_matrix(feats, device=aas_device(model), on_row=bar.on_score)
        bar.finish()
        off = mat[~torch.eye(n, dtype=torch.bool)].view(n, n - 1)
        f = BatchFigures.of([float(v) for v in off.flatten()])
        per_image = [float(v) for v in off.mean(dim=1)]
        odd = worst_index(per_image)
        rows = [[round(float(v), 6) for v in r] for r in mat]
        det = ex.details()
        heat = torch.from_numpy(matrix_image(mat.numpy(), title=f"DiffSim matrix ({det['mode']}, {ex.s.block}, "
                                                               f"t={ex.s.t}), mean {f.mean:.4f}"))[None]
        ui_out = result_ui(matrix_panel(rows, per_image, det, f), extra=_preview(heat, cls))
        return io.NodeOutput(json.dumps(rows), f.mean, per_image, heat, f.min, f.max, odd, ui=ui_out)


class StyleSimilarityGate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelStyleSimilarityGate",
            display_name="Style Similarity Gate",
            category=CATEGORY,
            description="Keep the candidates whose DiffSim to the reference reaches a threshold: a pass/fail per "
                        "candidate, the filtered batch, the best candidate, and batch-level any/all/count/best for "
                        "switch nodes. With several references a candidate's score is its mean DiffSim to them. "
                        "R references and N candidates cost R + N U-Net passes (cached references cost nothing).",
            inputs=[
                io.Image.Input("reference", tooltip="The style reference image (or several: their mean score counts)."),
                io.Image.Input("candidates", tooltip="The batch of images to gate."),
                *model_inputs(),
                io.Float.Input("threshold", default=0.85, min=-1.0, max=1.0, step=0.005,
                               tooltip="A candidate passes when its DiffSim to the reference is at least this. The "
                                       "scale depends on the model, block and t: run once, read the scores on the "
                                       "node, then set it."),
                io.Combo.Input("if_none_pass", options=["keep the best", "empty batch"], default="keep the best",
                               tooltip="What the filtered batch holds when no candidate passes: the single best "
                                       "candidate, or nothing (0 images)."),
                *settings_inputs(),
            ],
            outputs=[
                io.Boolean.Output("passed", display_name="passed", is_output_list=True,
                                  tooltip="Per candidate: True if its score reaches the threshold. "
                                          + LIST_NOTE.format(what="candidate",
                                                             alts="any_passed, all_passed, pass_count")),
                io.Float.Output("scores", display_name="scores", is_output_list=True,
                                tooltip="Per candidate: DiffSim to the reference (mean over references). "
                                        + LIST_NOTE.format(what="candidate", alts="best_index")),
                io.Image.Output("images", display_name="images",
                                tooltip="The candidates that passed, in their original order (one batch)."),
                io.Int.Output("best_index", display_name="best_index",
                              tooltip="Batch-level: index of the candidate with the highest score (ties: the first)."),
                io.Image.Output("best_image", display_name="best_image", tooltip="The highest-scoring candidate."),
                io.Int.Output("pass_count", display_name="pass_count",
                              tooltip="Batch-level: how many candidates passed."),
                io.Boolean.Output("any_passed", display_name="any_passed",
                                  tooltip="Batch-level: True if at least one candidate passed (branch on it)."),
                io.Boolean.Output("all_passed", display_name="all_passed",
                                  tooltip="Batch-level: True if every candidate passed."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reference, candidates, model, vae, clip, threshold, if_none_pass="keep the best",
                ip_adapter=None, clip_vision=None, batch_size=4, use_cache=True, **settings) -> io.NodeOutput:
        refs, cands = _items(reference, "reference"), _items(candidates, "candidates")
        n_pairs = len(refs) * len(cands)
        bar = _Bar(_n_unique(refs + cands), n_pairs)
        ex = _extractor(model, vae, clip, bar, ip_adapter, clip_vision, batch_size, use_cache, **settings)
        feats = ex.features(refs + cands)  # batched; a cached reference costs nothing
        bar.features_done()
        fr, fc = feats[:len(refs)], feats[len(refs):]
        from .aas import aas_pairs

        per_ref = aas_pairs([fr[r] for r in range(len(refs)) for _ in cands], [fc[c] for _ in refs for c in
                            range(len(cands))], device=aas_device(model), on_pair=bar.on_score)
        bar.finish()
        scores = [sum(per_ref[r * len(cands) + c] for r in range(len(refs))) / len(refs) for c in range(len(cands))]
        passed = [bool(s >= threshold) for s in scores]
        best = BatchFigures.of(scores).best_index
        keep = [i for i, p in enumerate(passed) if p]
        if not keep and if_none_pass == "keep the best":
            keep = [best]
        filtered = candidates[keep] if keep else candidates[:0]
        n_passed = sum(passed)
        ui_out = result_ui(gate_panel(scores, passed, threshold, len(refs), keep, ex.details()))
        return io.NodeOutput(passed, scores, filtered, best, candidates[best:best + 1], n_passed, n_passed > 0,
                             n_passed == len(passed), ui=ui_out)


def _ipadapter_files() -> list[str]:
    return folder_paths.get_filename_list(IPADAPTER_DIR)


class LoadIPAdapterPlus(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelDiffSimIPAdapterLoader",
            display_name="Load IP-Adapter Plus (DiffSim)",
            category=CATEGORY,
            description="Read an IP-Adapter Plus .safetensors (SD1.5 or SDXL) from models/ipadapter for DiffSim-C. "
                        "Only safetensors are read; nothing is unpickled.",
            inputs=[io.Combo.Input("ipadapter_file", options=_ipadapter_files(),
                                   tooltip="An IP-Adapter *Plus* file, e.g. ip-adapter-plus_sd15.safetensors "
                                           "(needs the CLIP ViT-H/14 image encoder).")],
            outputs=[DiffSimIPAdapter.Output("IP_ADAPTER", display_name="IP_ADAPTER",
                                             tooltip="The IP-Adapter Plus, for the ip_adapter input of the DiffSim "
                                                     "nodes.")],
        )

    @classmethod
    def validate_inputs(cls, ipadapter_file):
        if folder_paths.get_full_path(IPADAPTER_DIR, ipadapter_file) is None:
            return f"IP-Adapter file {ipadapter_file!r} not found in models/{IPADAPTER_DIR}"
        return True

    @classmethod
    def fingerprint_inputs(cls, ipadapter_file):
        path = folder_paths.get_full_path(IPADAPTER_DIR, ipadapter_file)
        return os.path.getmtime(path) if path else float("nan")

    @classmethod
    def execute(cls, ipadapter_file) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(IPADAPTER_DIR, ipadapter_file)
        ip = IPAdapterPlus.load(path)
        return io.NodeOutput(ip, ui=result_ui(ipadapter_panel(ip.name, ip.spec)))


NODES = [DiffSim, DiffSimMatrix, StyleSimilarityGate, LoadIPAdapterPlus]
