"""Custom ComfyUI socket types shared by the node families (glue: imports comfy_api)."""

from comfy_api.latest import io

# Per batch item and per recorded step: sigma, x, x0 (+ cond/uncond x0) and the run's metadata.
# Value: nodes.trajectory.trajectory.Trajectory
Trajectory = io.Custom("TRAJECTORY")

# One similarity series per batch item and the metric/layout that produced it.
# Value: nodes.trajectory.similarity.SimilaritySeries
SimilaritySeries = io.Custom("SIMILARITY_SERIES")
