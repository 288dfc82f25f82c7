"""Small helpers every node family uses when it talks to ComfyUI (progress, interrupt, model folders).

Checked against ComfyUI 0.3.64 (pinned) and the newest source (see CONTRIBUTING.md, "Current ComfyUI"):
``comfy.utils.ProgressBar(total, node_id=None)`` and ``update_absolute(value, total)`` exist in both; newer versions
throttle intermediate updates to the frontend (at most every 0.1 s / 0.5 %) but always send the first and the
final one, so ``Progress`` ends every loop with an explicit update to ``total`` (``finish``). The interrupt API
(``throw_exception_if_processing_interrupted``, ``processing_interrupted``, ``InterruptProcessingException``) exists
in both, but the exception derives from ``Exception`` in 0.3.64 and from ``BaseException`` in newer versions:
never rely on ``except Exception`` to see (or to swallow) a Cancel - re-raise ``InterruptProcessingException``
before any broad handler, as ``reraise_interrupt`` does.
"""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import folder_paths

_mm = comfy.model_management
InterruptProcessingException = _mm.InterruptProcessingException


def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel."""
    throw = getattr(_mm, "throw_exception_if_processing_interrupted", None)
    if throw is not None:
        throw()
        return
    # feature-detected fallback: a ComfyUI with only the flag query
    if _mm.processing_interrupted():
        _mm.interrupt_current_processing(False)
        raise InterruptProcessingException()


def reraise_interrupt(exc: BaseException) -> None:
    """Inside ``except Exception as e:`` blocks that wrap model calls: let a Cancel through unchanged."""
    if isinstance(exc, InterruptProcessingException):
        raise exc


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

    def finish(self) -> None:
        """Show 100 % (a loop that ended early, e.g. on a cache hit, still completes its bar)."""
        self.done = self.total
        self.bar.update_absolute(self.total, self.total)


def register_folder(name: str, paths: list[str], extensions: set[str]) -> None:
    """Register (or extend) a folder_paths entry, keeping what extra_model_paths.yaml already added."""
    if name in folder_paths.folder_names_and_paths:
        old_paths, old_ext = folder_paths.folder_names_and_paths[name]
        merged = list(old_paths) + [p for p in paths if p not in old_paths]
        exts = set(old_ext) | set(extensions) if old_ext else set(extensions)
        folder_paths.folder_names_and_paths[name] = (merged, exts)
    else:
        folder_paths.folder_names_and_paths[name] = (list(paths), set(extensions))
