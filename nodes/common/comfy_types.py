"""Custom ComfyUI socket types shared by the node families (glue: imports comfy_api).

ComfyUI's V3 API is reached only through its public name ``comfy_api.latest.io``: in 0.3.64 that is the module
``comfy_api/latest/_io.py``, in newer ComfyUI (0.3x of 2026) a public facade ``_io_public`` that re-exports it. The
pack never imports the private modules (``_io``, ``_ui``) or the 0.3.64-only alias ``comfy_io``
(tests/test_entrypoint.py and tests/integration/test_entrypoint_comfy.py check both layouts).
"""

from comfy_api.latest import io


def custom_type(io_type: str):
    """``io.Custom(io_type)``, with a clear error where this ComfyUI's V3 API has no custom socket types."""
    make = getattr(io, "Custom", None)
    if make is None:
        raise ImportError(f"Diffusion Sentinel needs comfy_api.latest.io.Custom (ComfyUI 0.3.64 or newer) for its "
                          f"{io_type} sockets; this ComfyUI's comfy_api.latest.io ({getattr(io, '__name__', io)}) "
                          "has none. Update ComfyUI.")
    return make(io_type)


# Per batch item and per recorded step: sigma, x, x0 (+ cond/uncond x0) and the run's metadata.
# Value: nodes.trajectory.trajectory.Trajectory
Trajectory = custom_type("TRAJECTORY")

# One similarity series per batch item and the metric/layout that produced it.
# Value: nodes.trajectory.similarity.SimilaritySeries
SimilaritySeries = custom_type("SIMILARITY_SERIES")
