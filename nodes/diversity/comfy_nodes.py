"""Diversity nodes: the Vendi score and CLIP-embedding geometry of a batch, and diverse-subset selection. Thin:
validate, encode, call the maths; what each node shows on itself is built in ``results.py``.

Progress: Batch Diversity counts the images encoded (batch + reference); Select Diverse Subset counts the images
encoded plus min(k, n) chosen; both end at exactly that total, cached encodings included."""

from __future__ import annotations

import logging

from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker

from ..common.comfy_glue import Progress, check_interrupt
from ..common.ui import result_ui
from .clip_embed import check_images, describe_encoder, encode_images
from .results import DuplicateFigures, diversity_panel, subset_panel
from .subset import METHODS, check_greedy_budget, select_diverse, take_latent, take_mask
from .summary import MAX_LISTED_PAIRS, format_pairs, summarize
from .vendi import ORDERS, DiversityInputError, parse_order

log = logging.getLogger("diffusion_sentinel")
CATEGORY = "Sentinel/diversity"


def _order_input():
    return io.Combo.Input(
        "vendi_order", options=list(ORDERS), default="1",
        tooltip="Order q of the Vendi score. 1: exp(Shannon entropy) of the similarity spectrum, the usual 'effective "
                "number of distinct images'. 0.5 weighs rare directions more, 2 and inf weigh the dominant ones more "
                "(inf = 1 / largest eigenvalue). Scores of different orders are not comparable.")


def _encoding_inputs():
    return [
        io.Combo.Input("crop", options=["center", "none"], default="center", optional=True,
                       tooltip="How each image is fitted to the encoder's square input: center = resize the short "
                               "side and crop the middle (as CLIP was trained); none = squash the whole image."),
        io.Int.Input("chunk_size", default=16, min=1, max=4096, optional=True,
                     tooltip="Images per CLIP forward pass. Large batches are encoded in chunks of this size; lower "
                             "it if you run out of memory. Does not change the results."),
    ]


LIST_NOTE = ("List output: one value per image; a node connected here runs once per value. For one value per run "
             "use the batch-level outputs ({alts}).")


def _progress_callback(progress: Progress):
    """on_chunk/on_step(done, total) -> progress updates of (done - last done); a phase's callbacks add up to its
    total, whatever the chunking (a cache hit reports the whole phase at once)."""
    last = [0]

    def cb(done: int, _total: int) -> None:
        if done > last[0]:
            progress.update(done - last[0])
            last[0] = done

    return cb


def _end(progress: Progress, what: str) -> None:
    if progress.done != progress.total:  # never expected: keep the bar honest if it happens
        log.warning("%s: progress ended at %d of %d", what, progress.done, progress.total)
        progress.update(progress.total - progress.done)


def _check_batch(images, what: str = "images"):
    images = check_images(images, what)
    if images.shape[0] < 2:
        raise DiversityInputError(
            f"{what}: diversity needs at least 2 images, got a batch of 1. Feed a batch (e.g. EmptyLatentImage with "
            "batch_size >= 2, or join images with 'Image Batch').")
    return images


class BatchDiversity(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelBatchDiversity",
            display_name="Batch Diversity",
            category=CATEGORY,
            description="How diverse a batch of images is, measured on CLIP vision embeddings: the Vendi score "
                        "(effective number of distinct images), pairwise similarity, centroid norm, per-image "
                        "conformity, near-duplicate pairs, and, given a reference batch of real images, centroid "
                        "distance and k-NN precision/recall. The encoder's name comes with the figures: figures "
                        "from different encoders are not comparable.",
            inputs=[
                io.Image.Input("images", tooltip="The batch to measure (at least 2 images; 8 or more for stable "
                                                 "figures)."),
                io.ClipVision.Input("clip_vision", tooltip="The image encoder, from 'Load CLIP Vision' (e.g. OpenAI "
                                                           "CLIP ViT-L/14). Every figure depends on it."),
                _order_input(),
                io.Float.Input("duplicate_threshold", default=0.95, min=0.0, max=1.0, step=0.005,
                               tooltip="Two images whose embedding cosine is at or above this are reported as "
                                       "near-duplicates. About 0.95 flags near-identical images for CLIP ViT-L/14; "
                                       "the right value depends on the encoder."),
                io.Image.Input("reference", optional=True,
                               tooltip="Optional reference batch (e.g. real photos of the subject), encoded with the "
                                       "same model, for the centroid distance and k-NN precision/recall outputs."),
                io.Int.Input("knn_k", default=3, min=1, max=64, optional=True,
                             tooltip="k of the k-NN precision/recall against the reference: each image's "
                                     "neighbourhood reaches its k-th nearest neighbour. Both batches need more than "
                                     "k images."),
                *_encoding_inputs(),
            ],
            outputs=[
                io.Float.Output("vendi", display_name="vendi",
                                tooltip="Vendi score of the chosen order: 1 = all images alike, n = all completely "
                                        "different (at most the embedding dimension)."),
                io.Float.Output("mean_similarity", display_name="mean_similarity",
                                tooltip="Mean cosine similarity over all pairs of images (higher = less diverse)."),
                io.Float.Output("similarity_std", display_name="similarity_std",
                                tooltip="Standard deviation of the pairwise cosine similarities."),
                io.Float.Output("centroid_norm", display_name="centroid_norm",
                                tooltip="Length of the mean of the normalised embeddings, 0..1 (1 = collapsed "
                                        "batch, every image the same)."),
                io.Float.Output("conformity", display_name="conformity", is_output_list=True,
                                tooltip="Per image: cosine between its embedding and the batch mean. Low = atypical "
                                        "(an outlier), high = typical. "
                                        + LIST_NOTE.format(alts="most_atypical_index")),
                io.Boolean.Output("is_near_duplicate", display_name="is_near_duplicate", is_output_list=True,
                                  tooltip="Per image: True if it is a near-duplicate of an EARLIER image in the batch "
                                          "(dropping these keeps one image of each group). "
                                          + LIST_NOTE.format(alts="any_near_duplicate, n_near_duplicates")),
                io.String.Output("near_duplicates", display_name="near_duplicates",
                                 tooltip="Near-duplicate pairs as 'i-j (cosine)', most similar first, comma "
                                         f"separated (at most {MAX_LISTED_PAIRS}); empty if there are none."),
                io.String.Output("encoder", display_name="encoder",
                                 tooltip="The encoder that produced these figures: architecture, input size, "
                                         "embedding, crop and a weight fingerprint. Only compare figures with the "
                                         "same encoder string."),
                io.Float.Output("ref_centroid_distance", display_name="ref_centroid_distance",
                                tooltip="Euclidean distance between the batch's and the reference's mean normalised "
                                        "embeddings (0 = same centre). NaN without a reference."),
                io.Float.Output("ref_precision", display_name="ref_precision",
                                tooltip="k-NN precision: fraction of the batch inside the reference's neighbourhoods "
                                        "(looks like the reference). NaN without a reference."),
                io.Float.Output("ref_recall", display_name="ref_recall",
                                tooltip="k-NN recall: fraction of the reference inside the batch's neighbourhoods "
                                        "(how much of the reference's variety the batch reaches). NaN without a "
                                        "reference."),
                io.String.Output("report", display_name="report",
                                 tooltip="Every figure as text, with the encoder name and warnings."),
                io.Int.Output("n_near_duplicates", display_name="n_near_duplicates",
                              tooltip="Batch-level: how many images are near-duplicates of an earlier image (how many "
                                      "dropping the repeats would remove)."),
                io.Boolean.Output("any_near_duplicate", display_name="any_near_duplicate",
                                  tooltip="Batch-level: True if any image is a near-duplicate of another (branch on "
                                          "it)."),
                io.Int.Output("most_atypical_index", display_name="most_atypical_index",
                              tooltip="Batch-level: the image with the lowest conformity (the outlier). Ties: the "
                                      "first."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, clip_vision, vendi_order="1", duplicate_threshold=0.95, reference=None, knn_k=3,
                crop="center", chunk_size=16) -> io.NodeOutput:
        images = _check_batch(images)
        q = parse_order(vendi_order)
        n = images.shape[0]
        m = 0
        if reference is not None:
            reference = _check_batch(reference, "reference")
            m = reference.shape[0]
            if n <= knn_k or m <= knn_k:
                raise DiversityInputError(
                    f"k-NN precision/recall with knn_k={knn_k} needs more than {knn_k} images in both batches; the "
                    f"batch has {n} and the reference {m}. Lower knn_k or add images.")
        info = describe_encoder(clip_vision)
        do_crop = crop == "center"
        progress = Progress(n + m)
        check_interrupt()
        emb, pooling = encode_images(clip_vision, images, do_crop, chunk_size, _progress_callback(progress))
        ref_emb = None
        if reference is not None:
            ref_emb, _ = encode_images(clip_vision, reference, do_crop, chunk_size, _progress_callback(progress))
        encoder = info.name(emb.shape[1], do_crop, pooling)
        s = summarize(emb, encoder, q, duplicate_threshold, ref_emb, knn_k)
        for w in s.warnings:
            log.warning("Batch Diversity: %s", w)
        _end(progress, "Batch Diversity")
        nan = float("nan")
        r = s.reference
        d = DuplicateFigures.of(s)
        return io.NodeOutput(
            s.vendi, s.pairwise.mean, s.pairwise.std, s.centroid_norm, s.conformity, s.is_duplicate,
            format_pairs(s.duplicates), encoder,
            r.centroid_distance if r else nan, r.precision if r else nan, r.recall if r else nan, s.text(),
            d.n_near_duplicates, d.any_near_duplicate, d.most_atypical_index,
            ui=result_ui(diversity_panel(s)))


class SelectDiverseSubset(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelSelectDiverseSubset",
            display_name="Select Diverse Subset",
            category=CATEGORY,
            description="Keep the k images of a batch that are most different from each other (maximising the "
                        "Vendi score of their CLIP vision embeddings), with their latents and masks in step. Use it "
                        "to generate many candidates and keep a varied few.",
            inputs=[
                io.Image.Input("images", tooltip="The candidate batch (at least 2 images)."),
                io.ClipVision.Input("clip_vision", tooltip="The image encoder, from 'Load CLIP Vision'."),
                io.Int.Input("k", default=4, min=1, max=4096,
                             tooltip="How many images to keep. k >= the batch size keeps them all. An image is never "
                                     "kept twice, nor a repeat of a kept image while other images are left."),
                io.Combo.Input("method", options=list(METHODS), default="greedy_vendi",
                               tooltip="greedy_vendi: add, one at a time, the image that raises the Vendi score most "
                                       "(best scores; orders 2 and inf are fast at any k, orders 1 and 0.5 grow like "
                                       "n*k^4 and are refused past about 20 s of work, e.g. k > 156 of 256). "
                                       "farthest_point: add the image least similar to those already kept (fast; "
                                       "favours outliers)."),
                _order_input(),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional: the latents of these images (same batch and order); the LATENT "
                                        "output then holds the chosen ones."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional: masks of these images (same batch and order, or a single mask); the "
                                      "MASK output then holds the chosen ones."),
                *_encoding_inputs(),
            ],
            outputs=[
                io.Image.Output("IMAGE", display_name="images",
                                tooltip="The chosen images, in their original batch order."),
                io.Latent.Output("LATENT", display_name="latent",
                                 tooltip="The chosen latents (needs the latent input)."),
                io.Mask.Output("MASK", display_name="mask", tooltip="The chosen masks (needs the mask input)."),
                io.String.Output("indices", display_name="indices",
                                 tooltip="Batch indices of the chosen images, ascending, as text: '0,3,5'."),
                io.Int.Output("index", display_name="index", is_output_list=True,
                              tooltip="Batch indices of the chosen images, ascending, one INT per image. List output: "
                                      "a node connected here runs once per chosen image (the 'indices' string is one "
                                      "value)."),
                io.Float.Output("vendi_before", display_name="vendi_before",
                                tooltip="Vendi score of the whole batch."),
                io.Float.Output("vendi_after", display_name="vendi_after",
                                tooltip="Vendi score of the chosen images (at most k)."),
                io.String.Output("encoder", display_name="encoder",
                                 tooltip="The encoder the choice was made with (compare scores only with the same "
                                         "encoder string)."),
            ],
        )

    @classmethod
    def execute(cls, images, clip_vision, k, method, vendi_order="1", latent=None, mask=None, crop="center",
                chunk_size=16) -> io.NodeOutput:
        images = _check_batch(images)
        n = images.shape[0]
        q = parse_order(vendi_order)
        if latent is not None:  # check the shapes before the expensive part
            take_latent(latent, [0], n)
        if mask is not None:
            take_mask(mask, [0], n)
        if method == "greedy_vendi":
            check_greedy_budget(n, k, q)  # before encoding: a refused k costs nothing
        info = describe_encoder(clip_vision)
        do_crop = crop == "center"
        steps = min(k, n)
        progress = Progress(n + steps)
        check_interrupt()
        emb, pooling = encode_images(clip_vision, images, do_crop, chunk_size, _progress_callback(progress))
        step_cb = _progress_callback(progress)
        sel = select_diverse(emb, k, method, q, on_step=step_cb)
        idx = sel.indices
        encoder = info.name(emb.shape[1], do_crop, pooling)
        out_latent = take_latent(latent, idx, n) if latent is not None else ExecutionBlocker(
            "Select Diverse Subset: its latent output is used but its latent input is not connected; connect the "
            "latents of the images")
        out_mask = take_mask(mask, idx, n) if mask is not None else ExecutionBlocker(
            "Select Diverse Subset: its mask output is used but its mask input is not connected")
        _end(progress, "Select Diverse Subset")
        return io.NodeOutput(images[idx], out_latent, out_mask, ",".join(map(str, idx)), list(idx),
                             sel.score_before, sel.score_after, encoder,
                             ui=result_ui(subset_panel(sel, n, method, vendi_order, encoder)))


NODES = [BatchDiversity, SelectDiverseSubset]
