"""Memorization nodes (the family's entry point for nodes/registry.py): the guard (anisotropy + Wen scores, report /
mitigate / block), Wen's score and the latent-update score from a recorded TRAJECTORY, calibration from two prompt
lists, the paper's benchmark on the user's model, and the volume growth rate of images. One module per node; this
one lists them."""

from __future__ import annotations

from .benchmark_node import MemorizationBenchmark
from .calibrate_node import CalibrateMemorizationGuard, _stack_batches, score_prompt_list
from .guard_node import ACTIONS, DEFAULT_THRESHOLD, SCORES, MemorizationGuard
from .node_common import CAL_DIR, CATEGORY, NO_CALIBRATION, calibration_names, load_named_calibration
from .trajectory_node import MemorizationScoresTrajectory
from .volume_node import VolumeGrowthRate
from .wen_node import WenScoreFromTrajectory

__all__ = ["ACTIONS", "CAL_DIR", "CATEGORY", "DEFAULT_THRESHOLD", "NO_CALIBRATION", "NODES", "SCORES",
           "CalibrateMemorizationGuard", "MemorizationBenchmark", "MemorizationGuard", "MemorizationScoresTrajectory",
           "VolumeGrowthRate", "WenScoreFromTrajectory",
           "_stack_batches", "calibration_names", "load_named_calibration", "score_prompt_list"]

NODES = [MemorizationGuard, WenScoreFromTrajectory, MemorizationScoresTrajectory, CalibrateMemorizationGuard,
         MemorizationBenchmark, VolumeGrowthRate]
