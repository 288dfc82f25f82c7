"""Helpers for the Label Artifacts tests: a labelled batch written the way the node writes it, from a spawned
process (one ComfyUI worker of a concurrent-writing test)."""

from __future__ import annotations


def small_series(batch: int, tag: float):
    """A latent_cosine SimilaritySeries of 10 values per item; value 0 = tag + item/1000 tells items apart."""
    import torch
    from diffusion_sentinel.nodes.trajectory.similarity import SimilaritySeries

    v = torch.linspace(0.5, 0.99, 10, dtype=torch.float64).repeat(batch, 1)
    v[:, 0] = tag + torch.arange(batch, dtype=torch.float64) / 1000
    return SimilaritySeries(v, list(range(10)), "latent_cosine", True, source={"steps": 9})


def labelled_writer_process(folder, worker, batches):
    """One worker: ``batches`` labelled batches of 4 typed '1,0,x,0' (item 2 left out), written like the node."""
    from _artifact import install_package_alias

    install_package_alias()
    import torch
    from diffusion_sentinel.nodes.artifact.dataset_writer import write_samples
    from diffusion_sentinel.nodes.artifact.labelling import parse_label_string

    for k in range(batches):
        labs = parse_label_string("1,0,x,0", 4)
        keep = [i for i, v in enumerate(labs) if v is not None]
        s = small_series(4, worker + k / 100)
        img = torch.rand(4, 8, 8, 3)
        write_samples(folder, s.select(keep), [labs[i] for i in keep], None, img[keep], f"w{worker}")


# ------------------------------------------------------------------------------------------- the UI template
# The editor template is generated from the API twin (example_workflows/api/artifact_label_by_clicking.json, sized
# for the CPU tests and labelled by the typed string) by tests/_workflows.py, with the edits in its UI_EDITS: no typed
# labels, so the click UI is used, and a batch a user would label (16 at 512 px, 20 steps).
UI_TEMPLATE = "artifact_label_by_clicking.json"


def label_ui_template(object_info: dict) -> dict:
    from pathlib import Path

    import _workflows as W

    return W.build(Path(UI_TEMPLATE).stem, object_info)[1]


def write_label_ui_template(object_info: dict) -> str:
    import json

    from _workflows import EXAMPLES

    path = EXAMPLES / UI_TEMPLATE
    path.write_text(json.dumps(label_ui_template(object_info), indent=1) + "\n")
    return str(path)
