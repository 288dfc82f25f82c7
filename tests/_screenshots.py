"""The README's screenshots (``docs/img/*.png``): templates opened in the real editor (headless Chromium), queued
from it on a temporary test server (the tiny random SD1.5 checkpoint under the templates' model names, so the
images are coloured noise), and the view zoomed onto the Sentinel nodes of each family once they show their results.

    COMFYUI_PATH=... COMFY_MODELS=... python tests/_screenshots.py --out docs/img [--only NAME]...

``SENTINEL_FRONTEND_NEW`` (a ``comfyui_frontend_package/static`` folder) is needed for the Nodes 2.0 picture; the
others use the frontend the pinned ComfyUI installs. Look at every picture before committing it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _editor  # noqa: E402
import _thumbnails as T  # noqa: E402
import _workflows as W  # noqa: E402


@dataclass(frozen=True)
class Shot:
    out: str  # file name in --out
    template: str
    focus: tuple[str, ...]  # class types to zoom onto (every node of those types)
    edits: dict = field(default_factory=dict)  # {node id: {input: value}} on top of the CPU shrink
    newest: bool = False  # the newest frontend with Nodes 2.0
    wait_for: str = "done"  # "done": the run finishes; "label": the Label node shows its batch (then cancel)
    shrink: bool = True


SHOTS = [
    Shot("trajectory.png", "trajectory_similarity_chart", ("SentinelKSamplerTrajectory", "SentinelSimilarityTrajectory")),
    Shot("trajectory-nodes2.png", "trajectory_similarity_chart",
         ("SentinelKSamplerTrajectory", "SentinelSimilarityTrajectory"), newest=True),
    Shot("artifact.png", "artifact_predict_keep_best", ("SentinelArtifactPredict", "SentinelFilterBatchByArtifact")),
    Shot("tournament.png", "artifact_seed_tournament", ("SentinelSeedTournament",),
         edits={"5": {"width": 64, "height": 64}}, shrink=False),
    Shot("label.png", "artifact_label_by_clicking", ("SentinelLabelArtifacts",),
         edits={"5": {"width": 64, "height": 64, "batch_size": 8}, "3": {"steps": 6}}, wait_for="label",
         shrink=False),
    Shot("diffsim.png", "diffsim_style_similarity_gate", ("SentinelStyleSimilarityGate", "SentinelDiffSimMatrix")),
    Shot("memorization.png", "memorization_guard_report",
         ("SentinelMemorizationGuard", "SentinelWenScoreTrajectory", "SentinelVolumeGrowthRate")),
    Shot("diversity.png", "diversity_select_diverse_subset", ("SentinelBatchDiversity", "SentinelSelectDiverseSubset")),
]


def _post(url: str, path: str, value) -> None:
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(value).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30):
        pass


def _settings(url: str, newest: bool) -> None:
    for k, v in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False),
                 ("LiteGraph.Canvas.MinFontSizeForLOD", 1), ("Comfy.ColorPalette", "dark")):
        _post(url, f"/settings/{k}", v)
    if newest:
        _post(url, "/settings/Comfy.VueNodes.Enabled", True)


# Zoom so that the union of the given nodes' boxes fills the canvas (with a margin); returns that region in
# screen pixels [x, y, w, h].
FOCUS_JS = """
const ids = arguments[0].map(Number);
const c = app.canvas, ds = c.ds, el = c.canvas, r = el.getBoundingClientRect();
let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
for (const id of ids) {
  const n = app.graph.getNodeById(id); if (!n) continue;
  let b = n.getBounding ? Array.from(n.getBounding()) : [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30];
  const dom = document.querySelector(`[data-node-id='${id}']`);
  if (dom) { const d = dom.getBoundingClientRect(); if (d.width) b = [b[0], b[1], d.width / ds.scale, d.height / ds.scale + 0]; }
  x0 = Math.min(x0, b[0]); y0 = Math.min(y0, b[1]); x1 = Math.max(x1, b[0] + b[2]); y1 = Math.max(y1, b[1] + b[3]);
}
// the canvas lies under the tab bar, the menu and the side bar: keep the nodes clear of them
const m = 20, left = 90, top = 90, W = r.width, H = r.height;
const s = Math.min(1.25, Math.min((W - left - m) / (x1 - x0), (H - top - m) / (y1 - y0)));
ds.scale = s;
ds.offset[0] = -x0 + left / s; ds.offset[1] = -y0 + top / s;
c.setDirty(true, true);
return [r.x + left - m, r.y + top - m, Math.min(W - left + m, (x1 - x0) * s + 2 * m), Math.min(H - top + m, (y1 - y0) * s + 2 * m)];
"""


def _wait_history(srv, before: set, timeout: float = 900) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        hist = srv.get("/history", timeout=60)
        new = [k for k in hist if k not in before]
        if new and hist[new[0]].get("status", {}).get("completed") is not None:
            entry = hist[new[0]]
            if entry["status"].get("status_str") != "success":
                raise RuntimeError(json.dumps(entry["status"])[:3000])
            return entry
        time.sleep(0.5)
    raise TimeoutError("the run did not finish")


def take(shot: Shot, srv, out_dir: Path) -> Path:
    from PIL import Image

    api = W.load_api(shot.template)
    with _editor.Editor(srv.url, window=(1500, 950)) as ed:
        ed.close_dialogs()
        ed.load_template(W.PACK_MODULE, shot.template)
        # 64 px images on a CPU, the template's own step counts (3 steps make flat, uninformative curves)
        edits = {nid: {k: v for k, v in e.items() if k != "steps"} for nid, e in W.shrink_for_cpu(api).items()} \
            if shot.shrink else {}
        for nid, e in shot.edits.items():
            edits.setdefault(nid, {}).update(e)
        for nid, e in edits.items():
            for k, v in e.items():
                ed.set_widget(nid, k, v)
        before = set(srv.get("/history", timeout=60))
        ed.queue()
        if shot.wait_for == "label":
            t0 = time.time()
            while time.time() - t0 < 600:
                if ed.js("return document.querySelectorAll('.sentinel-label img').length") > 0:
                    break
                time.sleep(0.5)
            time.sleep(1.0)  # mark two images as artifacts, as a user would
            ed.js("const t = document.querySelectorAll('.sentinel-label .sl-tile'); for (const i of [1, 4]) "
                  "if (t[i]) t[i].querySelector('img').click(); return t.length")
            time.sleep(1.0)
        else:
            _wait_history(srv, before)
            time.sleep(2.0)
        ids = [nid for nid, n in api.items() if n["class_type"] in shot.focus]
        region = ed.js(FOCUS_JS, ids)
        time.sleep(1.5)
        raw = out_dir / (shot.out + ".raw.png")
        ed.screenshot(raw)
        if shot.wait_for == "label":
            _post(srv.url, "/interrupt", {})
    x, y, w, h = (int(round(v)) for v in region)
    img = Image.open(raw).convert("RGB").crop((x, y, x + w, y + h))
    raw.unlink()
    path = out_dir / shot.out
    img.save(path, optimize=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE.parent / "docs" / "img"))
    ap.add_argument("--only", action="append", default=None, help="a shot's file name or template (repeatable)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    shots = [s for s in SHOTS if not a.only or s.out in a.only or s.template in a.only]
    new_fe = os.environ.get("SENTINEL_FRONTEND_NEW") or os.environ.get("SENTINEL_NEW_FRONTEND")
    with tempfile.TemporaryDirectory(prefix="sentinel-shots.") as tmp:
        servers = {}
        try:
            for shot in shots:
                if shot.newest not in servers:
                    extra = []
                    if shot.newest:
                        if not new_fe:
                            raise SystemExit("set SENTINEL_FRONTEND_NEW for the Nodes 2.0 screenshot")
                        extra = ["--front-end-root", new_fe]
                    base = Path(tmp) / ("newest" if shot.newest else "pinned")
                    base.mkdir()
                    servers[shot.newest] = T.start_example_server(base, extra)
                    _settings(servers[shot.newest].url, shot.newest)
                t0 = time.time()
                p = take(shot, servers[shot.newest], out)
                print(f"{shot.out}: {shot.template}, {time.time() - t0:.0f}s -> {p}", flush=True)
        finally:
            for s in servers.values():
                s.stop()


if __name__ == "__main__":
    main()
