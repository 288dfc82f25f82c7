"""A similarity matrix drawn as a heatmap with Pillow (float RGB image for IMAGE outputs). Pure."""

from __future__ import annotations

import math

import numpy as np

# A perceptually ordered ramp (dark blue -> teal -> yellow), interpolated linearly.
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def ramp(x: float) -> tuple[int, int, int]:
    if not math.isfinite(x):
        return (128, 128, 128)
    x = min(1.0, max(0.0, x)) * (len(_RAMP) - 1)
    i = min(int(x), len(_RAMP) - 2)
    c = _RAMP[i] + (x - i) * (_RAMP[i + 1] - _RAMP[i])
    return tuple(int(round(v)) for v in c)


SCALE = (0.0, 1.0)  # the fixed colour scale of the DiffSim heatmap (scores below 0 get the lowest colour)
TEXT_CELL = 40  # cells at least this wide (pixels) carry their value as text
MAX_CELL, MIN_CELL = 64, 12


def matrix_image(m, title: str = "", cell: int | None = None, scale: tuple[float, float] | None = SCALE,
                 min_spread: float = 0.1, label: str = "DiffSim, higher = more similar") -> np.ndarray:
    """[N, N] values -> RGB float32 [H, W, 3] in 0..1, with a colour bar and every value printed in its cell.

    Colours follow a fixed, documented scale (default ``SCALE`` = [0, 1]: 0 and below darkest, 1 brightest), so one
    picture reads like another and a spread of 0.0002 looks like what it is, not like full contrast. ``scale=None``
    spans the off-diagonal range instead, but never less than ``min_spread`` (centred on the values). Cells are at
    least ``TEXT_CELL`` px for up to 16 images, so the values are always printed there; larger matrices get smaller
    cells without text (the values are in the node's table and outputs). The diagonal (1 by definition) is grey.
    """
    from PIL import Image, ImageDraw, ImageFont

    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"expected a square matrix, got shape {a.shape}")
    n = a.shape[0]
    lo, hi = color_range(a, scale, min_spread)
    cell = cell or max(TEXT_CELL if n <= 16 else MIN_CELL, min(MAX_CELL, 704 // n))
    left, top = 36, 28 + (14 if title else 0)
    bar_w = 12
    w, h = left + n * cell + bar_w + 70, top + n * cell + 30
    img = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    if title:
        d.text((left, 6), title, fill=(0, 0, 0), font=font)
    for i in range(n):
        d.text((4, top + i * cell + cell // 2 - 6), str(i), fill=(60, 60, 60), font=font)
        d.text((left + i * cell + cell // 2 - 4, top - 14), str(i), fill=(60, 60, 60), font=font)
        for j in range(n):
            v = a[i, j]
            col = (220, 220, 220) if i == j else ramp((v - lo) / (hi - lo) if math.isfinite(v) else float("nan"))
            x0, y0 = left + j * cell, top + i * cell
            d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=col)
            if cell >= TEXT_CELL:
                txt = f"{v:.3f}" if math.isfinite(v) else "nan"
                dark = sum(col) < 380
                d.text((x0 + 3, y0 + cell // 2 - 6), txt, fill=(255, 255, 255) if dark else (0, 0, 0), font=font)
    # colour bar with its scale
    bx, bh = left + n * cell + 12, n * cell
    for y in range(bh):
        d.line([(bx, top + y), (bx + bar_w, top + y)], fill=ramp(1 - y / max(1, bh - 1)))
    d.text((bx + bar_w + 4, top - 2), f"{hi:.3f}", fill=(40, 40, 40), font=font)
    low = f"<={lo:.3f}" if scale is not None else f"{lo:.3f}"
    d.text((bx + bar_w + 4, top + bh - 10), low, fill=(40, 40, 40), font=font)
    fixed = "fixed scale" if scale is not None else f"scale spans the values (at least {min_spread:g})"
    d.text((left, top + n * cell + 8), f"{label}; {fixed}", fill=(60, 60, 60), font=font)
    return np.asarray(img, dtype=np.float32) / 255.0


def color_range(a: np.ndarray, scale: tuple[float, float] | None = SCALE, min_spread: float = 0.1
                ) -> tuple[float, float]:
    """The (lo, hi) the colours span: ``scale`` if given, else the off-diagonal range widened to ``min_spread``."""
    if scale is not None:
        lo, hi = float(scale[0]), float(scale[1])
        if not hi > lo:
            raise ValueError(f"colour scale must have hi > lo, got {scale}")
        return lo, hi
    n = a.shape[0]
    off = a[~np.eye(n, dtype=bool)] if n > 1 else a.ravel()
    off = off[np.isfinite(off)]
    lo, hi = (float(off.min()), float(off.max())) if off.size else (0.0, 1.0)
    if hi - lo < min_spread:
        mid = 0.5 * (lo + hi)
        lo, hi = mid - 0.5 * min_spread, mid + 0.5 * min_spread
    return lo, hi


def matrix_text(m, digits: int = 4) -> str:
    """A plain-text table: a header row of column indices, then one row per image."""
    a = np.asarray(m, dtype=np.float64)
    n = a.shape[0]
    width = digits + 3
    head = " " * 4 + "".join(f"{j:>{width + 1}d}" for j in range(n))
    rows = [head] + [f"{i:>3d} " + "".join(f"{a[i, j]:>{width + 1}.{digits}f}" for j in range(n)) for i in range(n)]
    return "\n".join(rows)
