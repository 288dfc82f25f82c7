"""Batch diversity: the Vendi score and CLIP-embedding geometry of a batch of images, diverse-subset selection.

Pure maths (torch only): ``vendi.py`` (Vendi score of order q), ``geometry.py`` (pairwise cosine, centroid,
conformity, near-duplicates, comparison with a reference batch), ``subset.py`` (choose k of n images that
maximise diversity; keep latents and masks in step), ``report.py`` (text). Glue: ``clip_embed.py`` (encode a
batch with ComfyUI's CLIP vision model in chunks and name the encoder). Nodes: ``comfy_nodes.py``.
"""
