"""Small helpers every node family uses when it talks to ComfyUI (progress, interrupt, model folders)."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import folder_paths


def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel."""
    comfy.model_management.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI's progress bar, with an interrupt check on every update (also outside the server)."""

    def __init__(self, total: int):
        self.total = max(1, int(total))
        self.done = 0
        self.bar = comfy.utils.ProgressBar(self.total)

    def update(self, n: int = 1) -> None:
        check_interrupt()
        self.done = min(self.total, self.done + n)
        self.bar.update_absolute(self.done, self.total)


def register_folder(name: str, paths: list[str], extensions: set[str]) -> None:
    """Register (or extend) a folder_paths entry, keeping what extra_model_paths.yaml already added."""
    if name in folder_paths.folder_names_and_paths:
        old_paths, old_ext = folder_paths.folder_names_and_paths[name]
        merged = list(old_paths) + [p for p in paths if p not in old_paths]
        exts = set(old_ext) | set(extensions) if old_ext else set(extensions)
        folder_paths.folder_names_and_paths[name] = (merged, exts)
    else:
        folder_paths.folder_names_and_paths[name] = (list(paths), set(extensions))

