"""Memorization nodes (the family's entry point for nodes/registry.py): the guard (anisotropy + Wen scores, report /
mitigate / block), Wen's score from a recorded TRAJECTORY, calibration from two prompt lists, and the volume
growth rate of images. One module per node; this one lists them."""

from __future__ import annotations

from .calibrate_node import CalibrateMemorizationGuard, _stack_batches, score_prompt_list
from .guard_node import ACTIONS, DEFAULT_THRESHOLD, SCORES, MemorizationGuard
from .node_common import CAL_DIR, CATEGORY, NO_CALIBRATION, calibration_names, load_named_calibration
from .volume_node import VolumeGrowthRate
from .wen_node import WenScoreFromTrajectory

__all__ = ["ACTIONS", "CAL_DIR", "CATEGORY", "DEFAULT_THRESHOLD", "NO_CALIBRATION", "NODES", "SCORES",
           "CalibrateMemorizationGuard", "MemorizationGuard", "VolumeGrowthRate", "WenScoreFromTrajectory",
           "_stack_batches", "calibration_names", "load_named_calibration", "score_prompt_list"]

NODES = [MemorizationGuard, WenScoreFromTrajectory, CalibrateMemorizationGuard, VolumeGrowthRate]
