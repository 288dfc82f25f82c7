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


def matrix_image(m, title: str = "", cell: int | None = None, lo: float | None = None,
                 hi: float | None = None) -> np.ndarray:
    """[N, N] values -> RGB float32 [H, W, 3] in 0..1; values printed in cells when they fit.

    Colours span the off-diagonal range (the diagonal is 1 by definition and would flatten the scale)."""
    from PIL import Image, ImageDraw, ImageFont

    a = np.asarray(m, dtype=np.float64)
    n = a.shape[0]
    if a.ndim != 2 or a.shape[1] != n or n == 0:
        raise ValueError(f"expected a square matrix, got shape {a.shape}")
    off = a[~np.eye(n, dtype=bool)] if n > 1 else a.ravel()
    off = off[np.isfinite(off)]
    lo = float(off.min()) if lo is None and off.size else (0.0 if lo is None else lo)
    hi = float(off.max()) if hi is None and off.size else (1.0 if hi is None else hi)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5e-3, hi + 0.5e-3
    cell = cell or max(12, min(64, 640 // n))
    left, top = 36, 28 + (14 if title else 0)
    w, h = left + n * cell + 70, top + n * cell + 12
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
            t = (v - lo) / (hi - lo) if math.isfinite(v) else float("nan")
            col = ramp(t) if i != j else (220, 220, 220)
            x0, y0 = left + j * cell, top + i * cell
            d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=col)
            if cell >= 40:
                txt = f"{v:.3f}" if math.isfinite(v) else "nan"
                dark = sum(col) < 380
                d.text((x0 + 3, y0 + cell // 2 - 6), txt, fill=(255, 255, 255) if dark else (0, 0, 0), font=font)
    # colour bar
    bx = left + n * cell + 12
    bh = n * cell
    for y in range(bh):
        d.line([(bx, top + y), (bx + 12, top + y)], fill=ramp(1 - y / max(1, bh - 1)))
    d.text((bx + 16, top - 2), f"{hi:.3f}", fill=(40, 40, 40), font=font)
    d.text((bx + 16, top + bh - 10), f"{lo:.3f}", fill=(40, 40, 40), font=font)
    return np.asarray(img, dtype=np.float32) / 255.0


def matrix_text(m, digits: int = 4) -> str:
    """A plain-text table: a header row of column indices, then one row per image."""
    a = np.asarray(m, dtype=np.float64)
    n = a.shape[0]
    width = digits + 3
    head = " " * 4 + "".join(f"{j:>{width + 1}d}" for j in range(n))
    rows = [head] + [f"{i:>3d} " + "".join(f"{a[i, j]:>{width + 1}.{digits}f}" for j in range(n)) for i in range(n)]
    return "\n".join(rows)
