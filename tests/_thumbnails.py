"""Thumbnails of the example workflows (``example_workflows/<name>.jpg``, what the template browser shows): each is
made from a real run of the example's API twin, unchanged, on a temporary test server (the tiny random SD1.5
checkpoint under the example's checkpoint name, a random CLIP ViT-L/14 under the CLIP vision names, a random
IP-Adapter Plus): the chart a Sentinel node previews (or its text report) on top, the images the workflow saved or previewed below.

    COMFYUI_PATH=... python tests/_workflows.py --thumbnails [--only NAME]...

Random weights make coloured noise, so the images show the layout of the results, not image quality.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _workflows as W  # noqa: E402

SIZE = 512
STRIP = 128  # height of the row of sampled images under a chart
QUALITY = 82


def output_images(entry: dict, api: dict, base: Path) -> tuple[list[Path], list[Path], list[str]]:
    """(charts that Sentinel nodes previewed, images the workflow saved or previewed, the Sentinel nodes' text
    reports) of a history entry, in the order of the API twin's nodes."""
    charts, samples, texts = [], [], []
    for nid in api:
        out = entry["outputs"].get(nid, {})
        ct = api[nid]["class_type"]
        for img in out.get("images", []):
            folder = base / ("output" if img.get("type") == "output" else img.get("type", "temp"))
            p = folder / img.get("subfolder", "") / img["filename"]
            if p.is_file():
                (charts if ct.startswith("Sentinel") else samples).append(p)
        if ct.startswith("Sentinel"):
            texts += [t for t in out.get("text", []) if isinstance(t, str) and t.strip()]
    return charts, samples, texts


def _font(size: int):
    from PIL import ImageFont

    for f in ("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", "DejaVuSansMono.ttf"):
        try:
            return ImageFont.truetype(f, size)
        except OSError:
            pass
    return ImageFont.load_default(size=size)


def _text_card(texts: list[str], width: int, height: int):
    """The first lines of the nodes' text reports, as the node shows them (monospace, dark theme)."""
    from PIL import Image, ImageDraw

    card = Image.new("RGB", (width, height), (32, 32, 32))
    draw = ImageDraw.Draw(card)
    font = _font(13)
    chars = (width - 24) // 8
    lines = []
    for t in texts:
        for line in t.splitlines():
            while len(line) > chars:
                lines.append(line[:chars])
                line = "  " + line[chars:]
            lines.append(line)
        lines.append("")
    y = 12
    for line in lines:
        if y + 16 > height - 8:
            break
        draw.text((12, y), line, fill=(225, 225, 225), font=font)
        y += 17
    return card


def _pick(items: list[Path], k: int) -> list[Path]:
    """Up to k items spread evenly over the list (first and last included)."""
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def compose(charts: list[Path], samples: list[Path], texts: list[str] = ()) -> bytes:
    """A SIZE x SIZE JPEG: on top the first chart a Sentinel node previewed (else its text report), below a row of
    up to 4 of the images the workflow saved or previewed; with neither chart nor text, the images in a grid."""
    from PIL import Image

    dark = (24, 24, 24)
    canvas = Image.new("RGB", (SIZE, SIZE), dark)
    top_h = 0
    if charts:
        chart = Image.open(charts[0]).convert("RGB")
        chart.thumbnail((SIZE, SIZE - (STRIP if samples else 0)), Image.LANCZOS)
        top_h = chart.height
        band = Image.new("RGB", (SIZE, top_h), (255, 255, 255))
        band.paste(chart, ((SIZE - chart.width) // 2, 0))
        canvas.paste(band, (0, 0))
    elif texts:
        n_lines = sum(len(t.splitlines()) + 1 + sum(len(x) // 58 for x in t.splitlines()) for t in texts)
        top_h = min(SIZE // 2, max(120, 24 + 17 * n_lines)) if samples else SIZE
        canvas.paste(_text_card(list(texts), SIZE, top_h), (0, 0))
    rest = SIZE - top_h
    if samples and rest > 0:
        if top_h:
            row = _pick(samples, 4)
            side = min(rest - 8, (SIZE - 8 * (len(row) + 1)) // len(row))
            x0 = (SIZE - len(row) * side - 8 * (len(row) - 1)) // 2
            for i, p in enumerate(row):
                im = Image.open(p).convert("RGB").resize((side, side), Image.LANCZOS)
                canvas.paste(im, (x0 + i * (side + 8), top_h + (rest - side) // 2))
        else:
            row = _pick(samples, 4)
            cols = 1 if len(row) == 1 else 2
            rows = 1 if len(row) <= 2 else 2
            cell = SIZE // max(cols, rows)
            for i, p in enumerate(row):
                im = Image.open(p).convert("RGB").resize((cell - 6, cell - 6), Image.LANCZOS)
                canvas.paste(im, ((i % cols) * cell + (SIZE - cols * cell) // 2 + 3,
                                  (i // cols) * cell + (SIZE - rows * cell) // 2 + 3))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=QUALITY, optimize=True)
    return buf.getvalue()


def start_example_server(base: Path, extra_args: list[str] | tuple[str, ...] = ()):
    """A test server whose models folder holds every file name the examples use (see provide_example_models)."""
    import _comfy
    from _server import ComfyServer, find_checkpoint

    tiny = find_checkpoint("sd15-tiny-random.safetensors")
    if tiny is None:
        raise SystemExit("sd15-tiny-random.safetensors not found (set COMFY_MODELS or build it with the harness)")
    models = base / "models"
    vit_l = models / "clip_vision" / "vitl-random-test.safetensors"
    if not vit_l.is_file():
        vit_l.parent.mkdir(parents=True, exist_ok=True)
        _comfy.boot_comfy()
        _comfy.write_random_vit_l(vit_l, seed=0)
    W.provide_example_models(models, tiny, vit_l)
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"sentinel_tests:\n    base_path: {Path(tiny).parent.parent}\n    checkpoints: checkpoints\n")
    return ComfyServer(os.environ["COMFYUI_PATH"], base, extra_model_yaml=str(yaml), extra_args=extra_args).start()


def main(only: list[str] | None = None) -> None:
    names = only or W.template_names()
    with tempfile.TemporaryDirectory(prefix="sentinel-thumbs.") as tmp:
        base = Path(tmp)
        srv = start_example_server(base)
        try:
            for name in names:
                api = W.load_api(name)
                t0 = time.time()
                entry = srv.run_prompt(json.loads(json.dumps(api)), timeout=3600)
                charts, samples, texts = output_images(entry, api, base)
                data = compose(charts, samples, texts)
                W.thumb_path(name).write_bytes(data)
                print(f"{name}: {len(charts)} chart(s), {len(samples)} image(s), ran {time.time() - t0:.0f}s, "
                      f"wrote {W.thumb_path(name).relative_to(W.ROOT)} ({len(data) // 1024} KB)")
        finally:
            srv.stop()
