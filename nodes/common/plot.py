"""Small line charts rendered with Pillow (which ComfyUI ships), returned as float images for IMAGE outputs.

No matplotlib: it is not a ComfyUI dependency. Pure (numpy + PIL), testable without ComfyUI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


def default_font():
    """Pillow's default font (FreeType "Aileron" 10 px since Pillow 10.1, a bitmap font before)."""
    from PIL import ImageFont

    return ImageFont.load_default()


def word_gap(font) -> float:
    """The gap drawn between words: the font's own space, but at least 0.4 em. Pillow's FreeType default font
    has a 2 px space at 10 px, which made "not shown" read as "notshown" on the charts."""
    size = float(getattr(font, "size", 10) or 10)
    try:
        space = float(font.getlength(" "))
    except AttributeError:
        space = 0.0
    return max(space, 0.4 * size)


def text_width(text: str, font) -> float:
    """Width in pixels of ``text`` as :func:`draw_text` draws it."""
    words = str(text).split(" ")
    widths = [float(font.getlength(w)) if w else 0.0 for w in words]
    return sum(widths) + word_gap(font) * (len(words) - 1)


def draw_text(draw, xy: tuple[float, float], text: str, fill, font) -> float:
    """Draw ``text`` word by word with :func:`word_gap` between words; returns the width drawn."""
    x, y = xy
    gap = word_gap(font)
    for i, w in enumerate(str(text).split(" ")):
        if i:
            x += gap
        if w:
            draw.text((x, y), w, fill=fill, font=font)
            x += float(font.getlength(w))
    return x - xy[0]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    ticks, v = [], start
    while v <= hi + 1e-12:
        ticks.append(round(v, 10))
        v += step
    return ticks


def line_chart(
    series: Sequence[Sequence[float]],
    x: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    markers: Sequence[tuple[int, int] | None] | None = None,
    width: int = 768,
    height: int = 384,
) -> np.ndarray:
    """Render curves into an RGB float32 array [height, width, 3] in 0..1.

    ``series`` one list of values per curve (NaN leaves a gap); ``x`` shared x values (default 0..L-1);
    ``markers`` per curve an optional (index into the curve) to circle, e.g. the argmin.
    """
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = default_font()
    n_pts = max((len(s) for s in series), default=0)
    xs = list(x) if x is not None else list(range(n_pts))
    vals = [float(v) for s in series for v in s if v is not None and math.isfinite(float(v))]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5e-3, hi + 0.5e-3
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0, 1)
    if x_hi == x_lo:
        x_hi = x_lo + 1

    left, right, top = 64, 16, 28
    legend_rows = len(labels or [])
    bottom = 40 + 14 * min(legend_rows, 8)
    pw, ph = width - left - right, height - top - bottom
    if pw < 10 or ph < 10:
        raise ValueError("chart too small for its legend; enlarge width/height")

    def px(xv, yv):
        return (left + (xv - x_lo) / (x_hi - x_lo) * pw, top + (hi - yv) / (hi - lo) * ph)

    for t in _nice_ticks(lo, hi):
        _, y = px(x_lo, t)
        d.line([(left, y), (left + pw, y)], fill=(230, 230, 230))
        d.text((4, y - 6), f"{t:.4g}", fill=(60, 60, 60), font=font)
    for t in _nice_ticks(x_lo, x_hi, 8):
        xp, _ = px(t, lo)
        d.line([(xp, top), (xp, top + ph)], fill=(240, 240, 240))
        d.text((xp - 6, top + ph + 4), f"{t:g}", fill=(60, 60, 60), font=font)
    d.rectangle([left, top, left + pw, top + ph], outline=(90, 90, 90))
    if title:
        draw_text(d, (left, 8), title, (0, 0, 0), font)
    if x_label:
        draw_text(d, (left + pw - text_width(x_label, font), top + ph + 18), x_label, (60, 60, 60), font)
    if y_label:
        draw_text(d, (left + 4, top + 2), y_label, (60, 60, 60), font)

    for i, s in enumerate(series):
        col = PALETTE[i % len(PALETTE)]
        seg: list[tuple[float, float]] = []
        for j, v in enumerate(s):
            ok = v is not None and math.isfinite(float(v)) and j < len(xs)
            if ok:
                seg.append(px(xs[j], float(v)))
            if not ok or j == len(s) - 1:
                if len(seg) > 1:
                    d.line(seg, fill=col, width=2)
                elif len(seg) == 1:
                    d.ellipse([seg[0][0] - 1, seg[0][1] - 1, seg[0][0] + 1, seg[0][1] + 1], fill=col)
                seg = []
        m = markers[i] if markers and i < len(markers) else None
        if m is not None and 0 <= m < len(s) and s[m] is not None and math.isfinite(float(s[m])):
            cx, cy = px(xs[m], float(s[m]))
            d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], outline=col, width=2)

    for i, lab in enumerate(list(labels or [])[:8]):
        col = PALETTE[i % len(PALETTE)]
        y = top + ph + 22 + 14 * i
        d.line([(left, y + 6), (left + 18, y + 6)], fill=col, width=3)
        draw_text(d, (left + 24, y), lab, (20, 20, 20), font)
    if legend_rows > 8:
        draw_text(d, (left + 24 + 300, top + ph + 22), f"(+{legend_rows - 8} more curves)", (90, 90, 90), font)

    return np.asarray(img, dtype=np.float32) / 255.0
