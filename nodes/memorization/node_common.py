"""Shared glue of the memorization nodes: category, the calibration folder (models/memorization_calibrations) and
the number format of the reports."""

from __future__ import annotations

import math
import os

import folder_paths

from ..common.comfy_glue import register_folder
from .calibration import Calibration, CalibrationError, load_calibration

CATEGORY = "Sentinel/memorization"
CAL_DIR = "memorization_calibrations"
NO_CALIBRATION = "none"

register_folder(CAL_DIR, [os.path.join(folder_paths.models_dir, CAL_DIR)], {".json"})


def calibration_names() -> list[str]:
    try:
        return [NO_CALIBRATION] + sorted(folder_paths.get_filename_list(CAL_DIR))
    except KeyError:
        return [NO_CALIBRATION]


def load_named_calibration(name: str) -> Calibration | None:
    if not name or name == NO_CALIBRATION:
        return None
    path = folder_paths.get_full_path(CAL_DIR, name)
    if path is None:
        raise ValueError(f"calibration {name!r} not found in models/{CAL_DIR}; run 'Calibrate Memorization Guard' "
                         "or pick 'none'")
    try:
        return load_calibration(path)
    except CalibrationError as e:
        raise ValueError(f"calibration {name!r}: {e}") from e


def fmt(v: float, d: int = 4) -> str:
    return "nan" if v is None or not math.isfinite(float(v)) else f"{float(v):.{d}f}"
