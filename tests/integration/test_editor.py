"""The example workflows in the real ComfyUI editor (headless Chromium), for the frontend the pinned ComfyUI installs
(1.27.10, classic canvas) and for the newest comfyui-frontend-package (1.58.1) with Nodes 2.0 switched on.

For every template: it opens from the URL the template browser uses without console errors beyond the stock
baseline, the editor's ``graphToPrompt()`` gives exactly its API twin, its nodes do not overlap (the classic
canvas's node boxes, or the Nodes 2.0 DOM boxes), it queues from the editor and runs to completion, and the values
the nodes report are shown on them. The template list has no API twins and a thumbnail for each template.

On a CPU the runs are made cheap with widget edits in the editor before queueing (64 px, at most 3 sampler steps;
``_workflows.shrink_for_cpu``): the queued prompt must then equal the twin with the same edits. Screenshots of each
workflow after its run go to pytest's tmp dir (printed with -s). The newest frontend is looked for in
$SENTINEL_NEW_FRONTEND (default /tmp/fe/1.58.1/comfyui_frontend_package/static); without it those tests skip.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import _editor
import _workflows as W
import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow]

NEW_FRONTEND = Path(os.environ.get("SENTINEL_NEW_FRONTEND", "/tmp/fe/1.58.1/comfyui_frontend_package/static"))
FRONTENDS = ["pinned", "newest"]
NAMES = W.template_names()
RUNS: dict[str, dict[str, dict]] = {"pinned": {}, "newest": {}}  # frontend -> name -> {seconds, panels, missing}

# Opens the template browser, picks the pack's category (an entry whose own text is the custom_nodes folder
# name), brings every card into view (thumbnails load lazily) and reports the names and images it shows.
BROWSE_TEMPLATES_JS = """
const [m, names] = arguments;
const sleep = ms => new Promise(r => setTimeout(r, ms));
return (async () => {
  await app.extensionManager.command.execute('Comfy.BrowseTemplates');
  const t0 = Date.now();
  let clicked = false;
  while (!clicked && Date.now() - t0 < 20000) {
    for (const el of document.querySelectorAll('li, button, a, span, div')) {
      if (el.childElementCount === 0 && el.textContent.trim() === m) { el.click(); clicked = true; break; }
    }
    if (!clicked) await sleep(300);
  }
  await sleep(1000);
  const root = document.querySelector('[role=dialog]') || document.body;
  const cards = {};
  for (const n of names) {
    const t1 = Date.now();
    let found = null;
    while (Date.now() - t1 < 8000) {
      const title = Array.from(root.querySelectorAll('*')).find(e => e.childElementCount === 0 && e.textContent.trim() === n);
      if (title) {
        title.scrollIntoView({block: 'center'});
        // the card: the largest ancestor that holds no other template's name
        let card = title;
        while (card.parentElement && !names.some(o => o !== n && card.parentElement.textContent.includes(o)))
          card = card.parentElement;
        const img = card.querySelector('img');
        found = {title: true, src: img ? (img.currentSrc || img.src || '') : null, w: img ? img.naturalWidth : 0};
        if (img && img.complete && img.naturalWidth > 0) break;
      }
      await sleep(250);
    }
    cards[n] = found;
  }
  return {clicked, cards};
})()
"""


def _post_setting(url: str, key: str, value) -> None:
    req = urllib.request.Request(f"{url}/settings/{key}", data=json.dumps(value).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30):
        pass


@pytest.fixture(scope="session")
def example_models(server, vit_l_clip_vision):
    """The shared server's models folder holds every file name the examples use (links and generated files)."""
    from _server import find_checkpoint

    W.provide_example_models(server.models, find_checkpoint("sd15-tiny-random.safetensors"),
                             server.models / "clip_vision" / vit_l_clip_vision)
    return server.models


@pytest.fixture(scope="module", params=FRONTENDS)
def editor(request, server, example_models, tmp_path_factory):
    """(frontend, server, Editor) with the page loaded: the shared server for the pinned frontend, a second
    server on the same models with --front-end-root for the newest one, Nodes 2.0 on."""
    why = _editor.available()
    if why:
        pytest.skip(why)
    frontend = request.param
    srv, own = server, None
    if frontend == "newest":
        if not (NEW_FRONTEND / "index.html").is_file():
            pytest.skip(f"no newer frontend at {NEW_FRONTEND} (pip download comfyui-frontend-package and unpack it; "
                        "set SENTINEL_NEW_FRONTEND)")
        from _server import ComfyServer

        base = tmp_path_factory.mktemp("comfy-base-newest-frontend")
        (base / "models").symlink_to(server.models, target_is_directory=True)
        own = srv = ComfyServer(server.comfy_path, base, extra_model_yaml=server.extra_yaml,
                                extra_args=["--front-end-root", str(NEW_FRONTEND)]).start()
        _post_setting(srv.url, "Comfy.VueNodes.Enabled", True)
    _post_setting(srv.url, "Comfy.TutorialCompleted", True)  # no "get started" dialog over the canvas
    _post_setting(srv.url, "Comfy.Minimap.Visible", False)  # the minimap would hide part of the screenshots
    _post_setting(srv.url, "LiteGraph.Canvas.MinFontSizeForLOD", 1)  # draw text on zoomed-out screenshots
    ed = _editor.Editor(srv.url, window=(1800, 1000))
    try:
        ed.start()
        yield frontend, srv, ed
    finally:
        ed.close()
        if own:
            own.stop()


def _history_ids(srv) -> set[str]:
    return set(srv.get("/history", timeout=60))


def _wait_for_new_prompt(srv, before: set[str], timeout: float = 900) -> tuple[str, dict]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"server died:\n{srv.log_tail()}")
        hist = srv.get("/history", timeout=60)
        new = [k for k in hist if k not in before]
        if new and hist[new[0]].get("status", {}).get("completed") is not None:
            return new[0], hist[new[0]]
        if new and hist[new[0]].get("status", {}).get("status_str") == "error":
            return new[0], hist[new[0]]
        time.sleep(0.5)
    raise TimeoutError(f"the prompt queued from the editor did not finish in {timeout}s:\n{srv.log_tail()}")


def test_template_list_has_no_api_twins_and_a_thumbnail_each(editor):
    frontend, srv, ed = editor
    listed = srv.get("/workflow_templates")
    assert sorted(listed.get(W.PACK_MODULE, [])) == NAMES, listed
    assert not any(n.endswith("_api") or n == "api" for names in listed.values() for n in names)
    for name in NAMES:
        with urllib.request.urlopen(f"{srv.url}/api/workflow_templates/{W.PACK_MODULE}/{name}.jpg", timeout=30) as r:
            data = r.read()
            assert r.headers["Content-Type"] == "image/jpeg" and data[:2] == b"\xff\xd8", name
            assert 5_000 < len(data) < 100_000, f"{name}.jpg is {len(data)} bytes"
    # what the frontend's template browser shows for the pack: every template, each with its thumbnail loaded
    # (1.27.10 loads <img src=".../name.jpg">; 1.58.1 fetches the file and shows it as a blob: URL)
    state = ed.js(BROWSE_TEMPLATES_JS, W.PACK_MODULE, NAMES)
    ed.screenshot(srv.base / f"template-browser-{frontend}.png")
    print(f"\ntemplate browser ({frontend}): {srv.base / f'template-browser-{frontend}.png'}")
    assert state["clicked"], f"no category {W.PACK_MODULE!r} in the template browser: {state}"
    cards = state["cards"]
    assert all(cards[n] for n in NAMES), f"the template browser does not show every template: {cards}"
    bad = {n: c for n, c in cards.items() if not (c["w"] > 0 and (c["src"].startswith("blob:") or
                                                              f"/workflow_templates/{W.PACK_MODULE}/{n}.jpg" in c["src"]))}
    assert not bad, f"thumbnails not shown (0 px wide, or the frontend's fallback image): {bad}"
    ed.close_dialogs()
    errors = ed.console_errors()
    assert not errors, "console errors while browsing templates:\n" + "\n".join(errors)


@pytest.mark.parametrize("name", NAMES)
def test_template_opens_matches_its_twin_and_runs_from_the_editor(editor, name, object_info, tmp_path):
    frontend, srv, ed = editor
    ed.close_dialogs()
    ed.console_errors()  # start from a clean slate
    api = W.ui_api(name, W.load_api(name))  # the twin, with the editor version's intended edits (W.UI_EDITS)
    ed.load_template(W.PACK_MODULE, name)
    errors = ed.console_errors()
    assert not errors, f"{name}: console errors on load:\n" + "\n".join(errors)

    # the editor's prompt is the API twin (what tests and run_example.py post), input for input
    got = ed.graph_to_prompt()
    diff = W.prompt_difference(got, api, object_info)
    assert not diff, (f"{name} ({frontend} frontend): graphToPrompt differs from api/{name}.json (with UI_EDITS):\n"
                      + "\n".join(diff))

    # no node covers another (classic: LiteGraph boxes with the title bar; Nodes 2.0: the node elements), before
    # the run and again once the nodes show their results
    time.sleep(0.5)
    if frontend == "newest":
        boxes = ed.dom_node_boxes()
        assert len(boxes) == len(json.loads(W.ui_path(name).read_text())["nodes"]), boxes
    else:
        boxes = ed.node_boxes()
    overlaps = W.boxes_overlap(boxes)
    assert not overlaps, f"{name} ({frontend}): nodes overlap:\n" + "\n".join(overlaps)

    # queue from the editor (widget edits make the run cheap on a CPU) and wait for the server to finish it
    edits = W.shrink_for_cpu(api)
    for nid, e in W.RUN_EDITS.get(name, {}).items():  # a template that waits for the user gets its answer typed
        edits.setdefault(nid, {}).update(e)
    for nid, e in edits.items():
        for k, v in e.items():
            ed.set_widget(nid, k, v)
    before = _history_ids(srv)
    t0 = time.time()
    ed.queue()
    pid, entry = _wait_for_new_prompt(srv, before)
    status = entry["status"]
    errs = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
    assert status.get("status_str") == "success" and not errs, \
        f"{name} ({frontend}): the run failed: {json.dumps(errs, indent=1)[:4000]}"
    queued = entry["prompt"][2]
    diff = W.prompt_difference(queued, W.apply_edits(api, edits), object_info)
    assert not diff, f"{name}: the queued prompt is not the edited twin:\n" + "\n".join(diff)
    assert entry["outputs"], f"{name}: no node reported an output"
    seconds = time.time() - t0
    time.sleep(1.5)  # let the editor draw the results
    boxes = ed.dom_node_boxes() if frontend == "newest" else ed.node_boxes()
    overlaps = W.boxes_overlap(boxes)
    assert not overlaps, f"{name} ({frontend}): nodes overlap once results are shown:\n" + "\n".join(overlaps)
    RUNS[frontend][name] = {
        "seconds": seconds, "panels": any("sentinel_result" in o for o in entry["outputs"].values()),
        "missing": check_panels_show_values(ed, entry["outputs"])}
    ed.fit_view()
    shot = ed.screenshot(tmp_path / f"{frontend}-{name}.png")
    print(f"\n{name} ({frontend}): ran {seconds:.1f}s from the editor, screenshot {shot}")
    errors = ed.console_errors()
    assert not errors, f"{name} ({frontend}): console errors during the run:\n" + "\n".join(errors)


def _formatted(value, fmt: str | None) -> list[str]:
    """The ways a panel cell may be written: Python's format and the JavaScript-style exponent (1.2e-5)."""
    if value is None:
        return ["nan", "NaN", "inf", "–", "-"]
    if isinstance(value, bool):
        return ["yes", "no", "true", "false", "✓", "✗"] if value else ["no", "false", "✗", "yes", "true"]
    if isinstance(value, float):
        s = format(value, fmt) if fmt else f"{value:.4g}"
        return [s, s.replace("e-0", "e-").replace("e+0", "e+")]
    return [str(value)]


def check_panels_show_values(ed: _editor.Editor, outputs: dict) -> list[str]:
    """Every node that sent ``sentinel_result`` panels shows their title and each cell in its
    ``sentinel-panels`` element. Returns what is missing."""
    missing = []
    for nid, out in outputs.items():
        for p in out.get("sentinel_result", []):
            text = ed.node_panel_text(nid)
            if text is None:
                missing.append(f"node {nid}: no .sentinel-panels element")
                continue
            if p.get("title") and p["title"] not in text:
                missing.append(f"node {nid}: panel title {p['title']!r} not shown")
            cols = p.get("columns", [])
            for r, row in enumerate(p.get("rows", [])):
                for c, v in zip(cols, row):
                    if not any(s in text for s in _formatted(v, c.get("fmt"))):
                        missing.append(f"node {nid}: row {r} {c.get('label')} = {v!r} not shown")
    return missing


def test_on_node_displays_show_the_values_the_api_returned(editor):
    """Right after each run above, every panel value the server returned (``sentinel_result``) was on its node."""
    frontend, srv, ed = editor
    runs = RUNS[frontend]
    if not runs:
        pytest.skip("no template ran in this session")
    if not any(r["panels"] for r in runs.values()):
        pytest.skip("no node on this branch sends sentinel_result panels yet (web/sentinel.js draws them after the "
                    "web helper's merge); the check switches on by itself")
    missing = [f"{name}: {m}" for name, r in runs.items() for m in r["missing"]]
    assert not missing, f"{frontend} frontend: values not shown on their nodes:\n" + "\n".join(missing)
