"""Headless Chromium for the editor tests, driven through chromedriver with W3C WebDriver (standard library only).

SHARED by every test that drives the ComfyUI frontend (tests/integration/test_web_panels.py, the example-workflow
editor tests, ...): keep it general, add to it without changing what is there.

    from _browser import Browser, browser_available
    with Browser(server.url + "/", settings={"Comfy.VueNodes.Enabled": True}) as b:   # waits for the app
        b.js("app.graph.nodes.length")                        # an expression, evaluated in the page
        b.js_async("(async () => { await app.loadGraphData(wf); return 1 })()")  # a promise is awaited
        b.js("arguments[0] + 1", 41)                          # arguments are JSON values
        b.screenshot(tmp_path / "page.png")                   # or .screenshot(p, selector=".my-widget")
        assert b.console_errors() == []                       # beyond the stock ComfyUI baseline

``settings`` are POSTed to the server's /settings/<id> before the page loads (they persist in that server's user
folder: use a server of your own when they must not leak into other tests). ``Comfy.TutorialCompleted`` is set
unless given, so no first-visit dialog covers the canvas. chromedriver is started on a free port in a new process
group with a fresh profile, and stopped (with the browser it started) by its process id at the end.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser",
                       "/usr/bin/google-chrome")
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               "--disable-extensions"]

# Console errors that stock ComfyUI shows with no custom node at all (../shared/tools/comfyui/README.md, pitfall 9),
# plus the polls that frontends newer than the pinned backend make (1.58.1 against 0.3.64: /api/jobs and
# /api/global_subgraphs answer 404).
BASELINE_CONSOLE = [
    r"/(api/userdata/)?user\.css - Failed to load resource: .* 404",
    r"/favicon\.ico - Failed to load resource: .* 404",
    r"/api/userdata\?dir=(workflows|subgraphs)[^ ]* - Failed to load resource: .* 404",
    r"/api/userdata/comfy\.templates\.json - Failed to load resource: .* 404",
    r"net::ERR_(NAME_NOT_RESOLVED|INTERNET_DISCONNECTED|CONNECTION_REFUSED|ADDRESS_UNREACHABLE)",
    r"/assets/index-[\w-]+\.js \d+:\d+ Uncaught TypeError: Cannot read properties of undefined \(reading 'id'\)",
    r"/api/jobs[^ ]* - Failed to load resource: .* 404",
    r"/api/global_subgraphs[^ ]* - Failed to load resource: .* 404",
    r"JobsApiError: Failed to fetch jobs: 404",  # logged by the jobs/queue stores of new frontends
]

APP_READY = ("!!(window.app && window.app.graph && window.LiteGraph && window.LiteGraph.registered_node_types"
             " && Object.keys(window.LiteGraph.registered_node_types).length > 0)")


def chromium_path() -> str | None:
    for c in CHROMIUM_CANDIDATES:
        if os.path.exists(c):
            return c
    return None


def browser_available() -> str | None:
    """None when chromedriver and chromium are installed, else the reason (for pytest.skip)."""
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install chromium chromium-driver)"
    if not chromium_path():
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JSError(RuntimeError):
    """A script run in the page threw (the message carries the page's stack)."""


class Browser:
    def __init__(self, url: str, settings: dict | None = None, *, window: tuple[int, int] = (1400, 900),
                 wait: bool = True, timeout: float = 120, ignore_console: list[str] | tuple = ()):
        self.url = url
        self.settings = {"Comfy.TutorialCompleted": True, **(settings or {})}
        self.window = window
        self.wait = wait
        self.timeout = timeout
        self.ignore = [re.compile(r) for r in [*BASELINE_CONSOLE, *ignore_console]]
        self.proc: subprocess.Popen | None = None
        self.sid: str | None = None
        self.base = ""
        self.profile = ""
        self.logs: list[dict] = []  # every browser log entry read so far (WebDriver drains them on read)

    # ------------------------------------------------------------ life cycle
    def __enter__(self) -> Browser:
        try:
            self.start()
        except BaseException:
            self.quit()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.quit()

    def start(self) -> Browser:
        why = browser_available()
        if why:
            raise RuntimeError(why)
        self._post_settings()
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.profile = tempfile.mkdtemp(prefix="sentinel-chromium.")
        self.proc = subprocess.Popen([shutil.which("chromedriver"), f"--port={port}", "--allowed-ips=127.0.0.1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        t0 = time.time()
        while True:
            try:
                if self._call("GET", "/status", timeout=2).get("ready"):
                    break
            except (OSError, RuntimeError):
                pass
            if self.proc.poll() is not None or time.time() - t0 > 30:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        w, h = self.window
        opts = {"args": CHROME_ARGS + [f"--user-data-dir={self.profile}", f"--window-size={w},{h}"],
                "binary": chromium_path()}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": opts,
                                                 "goog:loggingPrefs": {"browser": "ALL"}}}}
        self.sid = self._call("POST", "/session", caps, timeout=120)["sessionId"]
        self._call("POST", "/timeouts", {"script": int(self.timeout * 1000), "pageLoad": int(self.timeout * 1000)})
        self.goto(self.url)
        return self

    def quit(self) -> None:
        if self.sid:
            try:
                self._call("DELETE", "", timeout=30)
            except (OSError, RuntimeError):
                pass
            self.sid = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            try:  # a browser left behind by a failed session: it is in chromedriver's process group (ours)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc = None
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = ""

    # ------------------------------------------------------------ page
    def goto(self, url: str) -> None:
        self._call("POST", "/url", {"url": url}, timeout=self.timeout + 10)
        if self.wait:
            self.wait_for(APP_READY, timeout=self.timeout, what="the ComfyUI app")
            time.sleep(1.0)  # the first frames

    def wait_for(self, expr: str, *args, timeout: float = 30, interval: float = 0.25, what: str = "") -> object:
        """Poll a JS expression until it is truthy; returns its value, raises TimeoutError with the last one."""
        t0 = time.time()
        val = None
        while time.time() - t0 < timeout:
            try:
                val = self.js(expr, *args)
                if val:
                    return val
            except JSError as e:
                val = f"error: {e}"
            time.sleep(interval)
        raise TimeoutError(f"{what or expr} not true within {timeout}s (last value {val!r})")

    def js(self, expr: str, *args):
        """Evaluate a JS expression in the page (``arguments[i]`` are ``args``) and return its JSON value."""
        return self._script("/execute/sync", f"return ({expr});", args)

    def js_async(self, expr: str, *args, timeout: float | None = None):
        """Evaluate a JS expression and await it when it is a promise (``arguments[i]`` are ``args``)."""
        script = ("const __done = arguments[arguments.length - 1];"
                  "Promise.resolve().then(() => (" + expr + "))"
                  ".then(v => __done({ok: v === undefined ? null : v}),"
                  " e => __done({error: String((e && e.stack) || e)}));")
        res = self._script("/execute/async", script, args, timeout=timeout)
        if isinstance(res, dict) and "error" in res and "ok" not in res:
            raise JSError(res["error"])
        return res.get("ok") if isinstance(res, dict) else res

    def screenshot(self, path, selector: str | None = None) -> Path:
        """A PNG of the viewport, or of the first element that matches the CSS ``selector``."""
        if selector:
            el = self._call("POST", "/element", {"using": "css selector", "value": selector})
            data = self._call("GET", f"/element/{next(iter(el.values()))}/screenshot")
        else:
            data = self._call("GET", "/screenshot")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(base64.b64decode(data))
        return p

    # ------------------------------------------------------------ console
    def console_logs(self) -> list[dict]:
        """Every browser console entry so far ({level, message, timestamp})."""
        try:
            self.logs.extend(self._call("POST", "/se/log", {"type": "browser"}) or [])
        except RuntimeError:
            pass
        return list(self.logs)

    def console_errors(self) -> list[str]:
        """SEVERE console messages that stock ComfyUI does not log (BASELINE_CONSOLE and ``ignore_console``)."""
        return [e.get("message", "") for e in self.console_logs()
                if e.get("level") == "SEVERE" and not any(r.search(e.get("message", "")) for r in self.ignore)]

    # ------------------------------------------------------------ internals
    def _post_settings(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        for key, value in self.settings.items():
            req = urllib.request.Request(f"{origin}/settings/{urllib.parse.quote(key)}",
                                         data=json.dumps(value).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()

    def _script(self, endpoint: str, script: str, args, timeout: float | None = None):
        try:
            return self._call("POST", endpoint, {"script": script, "args": list(args)},
                              timeout=(timeout or self.timeout) + 10)
        except RuntimeError as e:
            if "javascript error" in str(e) or "script timeout" in str(e):
                raise JSError(str(e)) from None
            raise

    def _call(self, method: str, path: str, payload=None, timeout: float = 60):
        sess = f"/session/{self.sid}" if self.sid and not path.startswith("/session") and path != "/status" else ""
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.base + sess + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read().decode())["value"]
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            try:
                v = json.loads(body)["value"]
                msg = f"{v.get('error')}: {v.get('message', '')[:2000]}"
            except (ValueError, KeyError, AttributeError):
                msg = body[:2000]
            raise RuntimeError(f"WebDriver {method} {path}: HTTP {e.code}: {msg}") from None
