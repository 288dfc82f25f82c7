"""Headless Chromium through chromedriver (W3C WebDriver, standard library only) for editor tests.

    with Browser() as b:                       # skips the test when chromium/chromedriver are missing
        b.open_comfy(server.url)               # waits until the ComfyUI app and its node types are up
        b.js("return app.graph.nodes.length")  # synchronous script
        b.js_async("...; arguments[arguments.length - 1](value)")
        b.wait_js("return document.querySelectorAll('.x').length === 4", timeout=60)
        b.click("css selector")                # a real (WebDriver) pointer click on the element
        b.screenshot(path)
        b.console_errors()                     # SEVERE browser console messages

chromedriver runs on a free loopback port with a fresh profile; both are removed by ``close()`` (by PID).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

CHROMIUM = "/usr/lib/chromium/chromium"
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               "--disable-extensions"]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def available() -> str | None:
    """None when chromium and chromedriver are there, else why not."""
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install chromium chromium-driver)"
    if not (shutil.which("chromium") or os.path.exists(CHROMIUM)):
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    return None


class WebDriverError(RuntimeError):
    pass


class Browser:
    def __init__(self, window: str = "1400x1000"):
        self.window = window
        self.sid = None
        self.proc = None
        self.profile = None
        self.base = ""

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> Browser:
        why = available()
        if why:
            import pytest

            pytest.skip(why)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.profile = tempfile.mkdtemp(prefix="sentinel-chromium.")
        self.proc = subprocess.Popen([shutil.which("chromedriver"), f"--port={port}", "--allowed-ips=127.0.0.1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if self._call("GET", "/status", timeout=2).get("ready"):
                    break
            except Exception:
                time.sleep(0.1)
        else:
            self.close()
            raise WebDriverError("chromedriver did not become ready")
        w, h = self.window.split("x")
        opts = {"args": CHROME_ARGS + [f"--user-data-dir={self.profile}", f"--window-size={w},{h}"]}
        if os.path.exists(CHROMIUM):
            opts["binary"] = CHROMIUM
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": opts,
                                                 "goog:loggingPrefs": {"browser": "ALL"}}}}
        self.sid = self._call("POST", "/session", caps, timeout=120)["sessionId"]
        self._call("POST", "/timeouts", {"script": 120000, "pageLoad": 120000})
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.sid:
            try:
                self._call("DELETE", "", timeout=30)
            except Exception:
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
            self.profile = None

    # ------------------------------------------------------------------ protocol
    def _call(self, method: str, path: str, payload=None, timeout: float = 120):
        url = self.base + (f"/session/{self.sid}" if self.sid and not path.startswith("/session") else "") + path
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read().decode())["value"]
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")[:800]
            raise WebDriverError(f"WebDriver {method} {path}: HTTP {e.code}: {body}") from None

    def js(self, script: str, *args):
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script: str, *args):
        return self._call("POST", "/execute/async", {"script": script, "args": list(args)})

    def wait_js(self, script: str, timeout: float = 60, interval: float = 0.3, *args):
        """Poll ``script`` until it returns something truthy; returns it (TimeoutError with the last value)."""
        t0, last = time.time(), None
        while time.time() - t0 < timeout:
            try:
                last = self.js(script, *args)
            except WebDriverError as e:
                last = str(e)
            else:
                if last:
                    return last
            time.sleep(interval)
        raise TimeoutError(f"{script[:200]!r} stayed falsy for {timeout}s (last: {last!r})")

    # ------------------------------------------------------------------ page
    def open_comfy(self, url: str, timeout: float = 180) -> dict:
        self._call("POST", "/url", {"url": url.rstrip("/") + "/"}, timeout=timeout)
        self.wait_js("return !!(window.app && window.app.graph && window.LiteGraph && "
                     "Object.keys(window.LiteGraph.registered_node_types || {}).length > 0)", timeout=timeout)
        time.sleep(1.0)
        return self.js("return {version: window.__COMFYUI_FRONTEND_VERSION__ || null, "
                       "vue: !!(app.extensionManager?.setting?.get?.('Comfy.VueNodes.Enabled') ?? "
                       "app.ui?.settings?.getSettingValue?.('Comfy.VueNodes.Enabled'))}")

    def find(self, css: str) -> str:
        return self._call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click", {})

    def screenshot(self, path) -> str:
        with open(path, "wb") as f:
            f.write(base64.b64decode(self._call("GET", "/screenshot")))
        return str(path)

    def console_errors(self) -> list[str]:
        try:
            logs = self._call("POST", "/se/log", {"type": "browser"})
        except WebDriverError:
            return []
        return [entry.get("message", "") for entry in logs if entry.get("level") == "SEVERE"]
