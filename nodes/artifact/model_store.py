"""ComfyUI glue: the ``models/artifact_classifiers`` folder, its file list for combos, cached loading."""

from __future__ import annotations

import os

import folder_paths

from ...classifiers import ArtifactModel, load_model
from ..common.comfy_glue import register_folder

FOLDER = "artifact_classifiers"
NONE = "none"
DATASETS = "artifact_datasets"

register_folder(FOLDER, [os.path.join(folder_paths.models_dir, FOLDER)], {".safetensors"})
_CACHE: dict[str, tuple[tuple[float, int], ArtifactModel]] = {}


def classifier_options() -> list[str]:
    """The combo entries: "none" (the model-free D_max rule) then every model file."""
    return [NONE] + sorted(folder_paths.get_filename_list(FOLDER))


def classifier_dir() -> str:
    return folder_paths.get_folder_paths(FOLDER)[0]


def classifier_path(name: str) -> str:
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise ValueError(f"classifier {name!r} not found in models/{FOLDER}; train one with 'Train Artifact "
                         "Classifier' or `python -m classifiers train`, or refresh the node list")
    return path


def load_classifier(name: str | None) -> ArtifactModel | None:
    """The model file of that combo entry (cached until the file changes); None for "none"."""
    if not name or name == NONE:
        return None
    path = classifier_path(name)
    st = os.stat(path)
    key = (st.st_mtime, st.st_size)
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    model = load_model(path)
    model.name = os.path.splitext(name)[0]
    _CACHE[path] = (key, model)
    return model


def dataset_roots() -> list[str]:
    return [os.path.join(folder_paths.get_output_directory(), DATASETS),
            os.path.join(folder_paths.get_input_directory(), DATASETS)]


def resolve_dataset(name: str) -> str:
    """A dataset folder or CSV under output/artifact_datasets or input/artifact_datasets."""
    from .dataset_writer import safe_name

    rel = safe_name(name)
    for root in dataset_roots():
        for cand in (os.path.join(root, rel), os.path.join(root, rel + ".csv")):
            if os.path.exists(cand):
                return cand
    raise ValueError(f"dataset {name!r} not found in output/{DATASETS} or input/{DATASETS}. Collect one with "
                     "'Save Labelled Trajectory', or put a CSV in the Similarity-Trajectory format (columns "
                     f"naturalness, next) into input/{DATASETS}/.")
