"""The ComfyUI editor in headless Chromium, driven over W3C WebDriver with the standard library only.

    with Editor(server.url) as ed:          # chromedriver on a free port, a fresh profile, the page loaded
        ed.load_template("diffusion-sentinel", "trajectory_similarity_chart")
        prompt = ed.graph_to_prompt()       # what the editor would queue (API format)
        ed.queue()                          # the editor's own queue path (app.queuePrompt)
        ed.screenshot(tmp_path / "shot.png")
        assert not ed.console_errors()      # SEVERE console messages beyond the stock baseline

Needs Debian's ``chromium`` and ``chromium-driver`` (``available()`` says whether they are there). Chromium is
started by chromedriver and both are stopped by PID. Nothing here knows about the pack: the tests add that.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/lib/chromium/chromium"  # Debian's binary (the /usr/bin wrapper prints shell noise)
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               "--disable-extensions", "--hide-scrollbars"]

# Console errors that stock ComfyUI 0.3.64 shows here offline with no custom node at all (frontend 1.27.10; see
# the harness README, pitfall 9), plus the two polls of frontend 1.58.1 that our 0.3.64 backend does not serve.
BASELINE_CONSOLE = [
    r"/(api/userdata/)?user\.css - Failed to load resource: .* 404",
    r"/favicon\.ico - Failed to load resource: .* 404",
    r"/api/userdata\?dir=(workflows|subgraphs)[^ ]* - Failed to load resource: .* 404",
    r"/api/userdata/comfy\.templates\.json - Failed to load resource: .* 404",
    r"net::ERR_(NAME_NOT_RESOLVED|INTERNET_DISCONNECTED|CONNECTION_REFUSED|ADDRESS_UNREACHABLE)",
    r"/assets/index-[\w-]+\.js \d+:\d+ Uncaught TypeError: Cannot read properties of undefined \(reading 'id'\)",
    r"/api/jobs\b[^ ]* - Failed to load resource: .* 404",
    r"/api/global_subgraphs\b[^ ]* - Failed to load resource: .* 404",
    r"JobsApiError: Failed to fetch jobs: 404",  # 1.58.1 logs the /api/jobs 404s once more, as errors
    r"/templates/index_logo\.json - Failed to load resource: .* 404",  # 1.58.1 asks templates 0.1.95 for it
]


def available() -> str | None:
    """None when chromium and chromedriver are installed, else what is missing (a skip reason)."""
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install chromium chromium-driver)"
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(RuntimeError):
    pass


class Editor:
    """One browser session on one ComfyUI page. Use as a context manager (or call start()/close())."""

    READY_JS = ("return !!(window.app && window.app.graph && window.LiteGraph && window.app.canvas &&"
                " Object.keys(window.LiteGraph.registered_node_types || {}).length > 0)")

    def __init__(self, url: str, window: tuple[int, int] = (1600, 1000), timeout: float = 120,
                 ignore_console: list[str] | tuple[str, ...] = ()):
        self.url = url.rstrip("/") + "/"
        self.window = window
        self.timeout = timeout
        self.ignore = [re.compile(r) for r in BASELINE_CONSOLE + list(ignore_console)]
        self.proc: subprocess.Popen | None = None
        self.sid: str | None = None
        self.base = ""
        self.profile = ""
        self.console_log: list[dict] = []  # every browser console entry seen so far

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Editor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> Editor:
        why = available()
        if why:
            raise RuntimeError(why)
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.profile = tempfile.mkdtemp(prefix="sentinel-chromium.")
        self.proc = subprocess.Popen([shutil.which("chromedriver"), f"--port={port}", "--allowed-ips=127.0.0.1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            t0 = time.time()
            while True:
                try:
                    if self._call("GET", "/status", timeout=2).get("ready"):
                        break
                except (OSError, WebDriverError):
                    pass
                if time.time() - t0 > 30 or self.proc.poll() is not None:
                    raise RuntimeError("chromedriver did not become ready")
                time.sleep(0.1)
            w, h = self.window
            opts = {"args": CHROME_ARGS + [f"--user-data-dir={self.profile}", f"--window-size={w},{h}"]}
            if os.path.exists(CHROMIUM):
                opts["binary"] = CHROMIUM
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome", "goog:chromeOptions": opts, "goog:loggingPrefs": {"browser": "ALL"},
                "timeouts": {"script": int(self.timeout * 1000), "pageLoad": int(self.timeout * 1000)}}}}
            self.sid = self._call("POST", "/session", caps, timeout=120)["sessionId"]
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.sid:
            try:
                self._call("DELETE", "", timeout=30)
            except (OSError, WebDriverError):
                pass
            self.sid = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = ""

    # ------------------------------------------------------------------ webdriver
    def _call(self, method: str, path: str, payload=None, timeout: float | None = None):
        sess = f"/session/{self.sid}" if self.sid and not path.startswith("/session") and path != "/status" else ""
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.base + sess + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout + 30) as r:
                return json.loads(r.read().decode())["value"]
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            try:
                v = json.loads(body)["value"]
                msg = f"{v.get('error')}: {v.get('message', '')[:1500]}"
            except (ValueError, KeyError, AttributeError):
                msg = body[:1500]
            raise WebDriverError(f"WebDriver {method} {path}: {msg}") from None

    def js(self, script: str, *args):
        """Run ``script`` (a function body: use ``return``) in the page. A returned Promise is awaited."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def open(self, path: str = "") -> None:
        """Navigate to the page and wait until the graph app is up and has drawn a frame."""
        self._call("POST", "/url", {"url": self.url + path.lstrip("/")})
        t0 = time.time()
        while True:
            try:
                if self.js(self.READY_JS):
                    break
            except WebDriverError:
                pass
            if time.time() - t0 > self.timeout:
                raise RuntimeError(f"the ComfyUI frontend did not come up within {self.timeout}s at {self.url}")
            time.sleep(0.3)
        time.sleep(1.0)

    def screenshot(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))
        return path

    def console(self) -> list[dict]:
        """New browser console entries since the last call (each {level, message, timestamp})."""
        try:
            new = self._call("POST", "/se/log", {"type": "browser"})
        except WebDriverError:
            new = []
        self.console_log.extend(new)
        return new

    def console_errors(self) -> list[str]:
        """SEVERE console messages since the last call that stock ComfyUI does not show too."""
        return [e.get("message", "") for e in self.console()
                if e.get("level") == "SEVERE" and not any(r.search(e.get("message", "")) for r in self.ignore)]

    def press(self, key: str) -> None:
        """A real key press (WebDriver actions), e.g. press("\ue00c") for Escape."""
        self._call("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]})
        self._call("DELETE", "/actions")

    def close_dialogs(self, timeout: float = 10) -> None:
        """Close every open dialog (Escape, then the dialogs' close buttons) and wait until none is left."""
        t0 = time.time()
        while self.js("return document.querySelectorAll('[role=dialog]').length") > 0:
            if time.time() - t0 > timeout:
                raise RuntimeError("a dialog stays open: " + self.js(
                    "return document.querySelector('[role=dialog]').innerText.slice(0, 300)"))
            self.press("\ue00c")
            time.sleep(0.3)
            self.js("for (const d of document.querySelectorAll('[role=dialog]')) for (const b of d.querySelectorAll("
                    "'button')) { const l = (b.getAttribute('aria-label') || '') + ' ' + b.className;"
                    " if (/close|dialog-close/i.test(l)) { b.click(); break; } }")
            time.sleep(0.3)

    # ------------------------------------------------------------------ ComfyUI
    def frontend_version(self) -> str:
        return self.js("return window.__COMFYUI_FRONTEND_VERSION__ || ''")

    def setting(self, name: str):
        return self.js("return app.extensionManager.setting.get(arguments[0])", name)

    def load_template(self, module: str, name: str) -> dict:
        """Fetch a custom-node template from the URL the template browser uses and open it as the browser does
        (app.loadGraphData). Returns the fetched workflow."""
        return self.js(
            "const [m, n] = arguments;"
            "return (async () => {"
            "  const r = await fetch(api.apiURL(`/workflow_templates/${m}/${n}.json`));"
            "  if (!r.ok) throw new Error('template ' + n + ': HTTP ' + r.status);"
            "  const wf = await r.json();"
            "  await app.loadGraphData(wf, true, true, n);"
            "  await new Promise(res => requestAnimationFrame(() => requestAnimationFrame(res)));"
            "  return wf; })()".replace("api.apiURL", "window.comfyAPI.api.api.apiURL"), module, name)

    def graph_to_prompt(self) -> dict:
        """The API-format prompt of the open graph, exactly as the editor builds it for the queue."""
        return self.js("return app.graphToPrompt().then(p => p.output)")

    def serialize(self) -> dict:
        """The open graph as the editor saves it (UI format)."""
        return self.js("return app.graph.serialize()")

    def set_widget(self, node_id: int | str, name: str, value) -> None:
        """Set a widget the way a user edit does (value, then the widget's callback)."""
        ok = self.js(
            "const [id, name, v] = arguments; const n = app.graph.getNodeById(Number(id));"
            "const w = n && (n.widgets || []).find(w => w.name === name); if (!w) return false;"
            "w.value = v; if (w.callback) w.callback(v, app.canvas, n); n.setDirtyCanvas?.(true, true); return true",
            str(node_id), name, value)
        if not ok:
            raise KeyError(f"node {node_id} has no widget {name!r}")

    def queue(self) -> None:
        """Queue the open graph from the editor (what the Queue button calls)."""
        self.js("return Promise.resolve(app.queuePrompt(0, 1)).then(() => true)")

    def fit_view(self) -> None:
        """Zoom the canvas so the whole graph is visible (the editor's own "fit view" command)."""
        self.js("return app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        time.sleep(1.0)

    def node_boxes(self) -> dict[str, list[float]]:
        """Each node's box [x, y, w, h] in graph units as the classic canvas lays it out (title bar included)."""
        return self.js(
            "const out = {}; for (const n of (app.graph._nodes || app.graph.nodes)) {"
            "  const b = n.getBounding ? Array.from(n.getBounding()) : [n.pos[0], n.pos[1] - 30, n.size[0],"
            "    n.size[1] + 30]; out[String(n.id)] = b.slice(0, 4); } return out;")

    def dom_node_boxes(self) -> dict[str, list[float]]:
        """Nodes 2.0: each node element's box [x, y, w, h] in graph units (screen box / canvas scale)."""
        return self.js(
            "const s = app.canvas.ds.scale; const out = {};"
            "for (const el of document.querySelectorAll('[data-node-id]')) {"
            "  const id = el.getAttribute('data-node-id'); if (out[id]) continue;"
            "  const r = el.getBoundingClientRect(); if (!r.width) continue;"
            "  out[id] = [r.x / s, r.y / s, r.width / s, r.height / s]; } return out;")

    def node_panel_text(self, node_id: int | str) -> str | None:
        """Text of the Sentinel result panels inside a node (element with class ``sentinel-panels``), or None
        when the node shows none. Works for the classic canvas (DOM widgets over the canvas) and Nodes 2.0."""
        return self.js(
            "const id = String(arguments[0]); const n = app.graph.getNodeById(Number(id));"
            "const els = [];"
            "for (const w of (n && n.widgets) || []) { const e = w.element || w.inputEl;"
            "  if (e && e.querySelector) { if (e.classList?.contains('sentinel-panels')) els.push(e);"
            "    els.push(...e.querySelectorAll('.sentinel-panels')); } }"
            "for (const el of document.querySelectorAll(`[data-node-id='${id}'] .sentinel-panels`)) els.push(el);"
            "return els.length ? Array.from(new Set(els)).map(e => e.textContent).join('\\n') : null;",
            str(node_id))
