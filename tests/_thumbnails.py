"""Thumbnails of the example workflows (``example_workflows/<name>.jpg``, what the template browser shows): each is
made from a real run of the example's API twin, unchanged, on a temporary test server (the tiny random SD1.5
checkpoint under the example's checkpoint name, a random CLIP ViT-L/14 under the CLIP vision names, a random
IP-Adapter Plus): the chart a Sentinel node previews on top, the images the workflow saved or previewed below.

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


def output_images(entry: dict, api: dict, base: Path) -> tuple[list[Path], list[Path]]:
    """(chart images that Sentinel nodes previewed, images the workflow saved or previewed) of a history entry."""
    charts, samples = [], []
    for nid, out in entry["outputs"].items():
        ct = api.get(nid, {}).get("class_type", "")
        for img in out.get("images", []):
            folder = base / ("output" if img.get("type") == "output" else img.get("type", "temp"))
            p = folder / img.get("subfolder", "") / img["filename"]
            if p.is_file():
                (charts if ct.startswith("Sentinel") else samples).append(p)
    return charts, samples


def compose(charts: list[Path], samples: list[Path]) -> bytes:
    """A SIZE x SIZE JPEG: the first chart on top (letterboxed on white), up to 4 sample images in a strip below;
    without a chart, the sample images in a grid."""
    from PIL import Image

    canvas = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    if charts:
        chart = Image.open(charts[0]).convert("RGB")
        area_h = SIZE - (STRIP if samples else 0)
        chart.thumbnail((SIZE, area_h), Image.LANCZOS)
        canvas.paste(chart, ((SIZE - chart.width) // 2, (area_h - chart.height) // 2))
        strip = samples[:4]
        if strip:
            w = SIZE // len(strip)
            for i, p in enumerate(strip):
                im = Image.open(p).convert("RGB")
                side = min(w, STRIP)
                im = im.resize((side, side), Image.LANCZOS)
                canvas.paste(im, (i * w + (w - side) // 2, SIZE - STRIP + (STRIP - side) // 2))
    elif samples:
        n = min(len(samples), 4)
        cols = 1 if n == 1 else 2
        rows = 1 if n <= 2 else 2
        cell = SIZE // max(cols, rows)
        y0 = (SIZE - rows * cell) // 2
        for i, p in enumerate(samples[:n]):
            im = Image.open(p).convert("RGB").resize((cell, cell), Image.LANCZOS)
            canvas.paste(im, ((i % cols) * cell + (SIZE - cols * cell) // 2, y0 + (i // cols) * cell))
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
                charts, samples = output_images(entry, api, base)
                data = compose(charts, samples)
                W.thumb_path(name).write_bytes(data)
                print(f"{name}: {len(charts)} chart(s), {len(samples)} image(s), ran {time.time() - t0:.0f}s, "
                      f"wrote {W.thumb_path(name).relative_to(W.ROOT)} ({len(data) // 1024} KB)")
        finally:
            srv.stop()
