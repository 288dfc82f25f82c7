"""A real ComfyUI server for integration tests: the pack linked into a private base directory, own port.

Stdlib only (urllib). The server is started with the interpreter running the tests, on the test device
(tests/_device.py: ``--cpu`` only when SENTINEL_TEST_DEVICE is cpu, plus SENTINEL_TEST_DTYPE's flag), waited for on
/system_stats (the process is checked on every poll), and stopped by PID.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "diffusion-sentinel"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_checkpoint(name: str) -> str | None:
    """Look for a checkpoint in $COMFY_MODELS/checkpoints, then the folders of COMFYUI_PATH's extra_model_paths."""
    cands = []
    if os.environ.get("COMFY_MODELS"):
        cands.append(Path(os.environ["COMFY_MODELS"]) / "checkpoints" / name)
    comfy = os.environ.get("COMFYUI_PATH", "")
    cands.append(Path(comfy) / "models" / "checkpoints" / name)
    yaml = Path(comfy) / "extra_model_paths.yaml"
    if yaml.is_file():
        base = None
        for line in yaml.read_text().splitlines():
            s = line.strip()
            if s.startswith("base_path:"):
                base = s.split(":", 1)[1].strip()
            if s.startswith("checkpoints:") and base:
                cands.append(Path(base) / s.split(":", 1)[1].strip() / name)
    for c in cands:
        if c.is_file():
            return str(c)
    return None


class ComfyServer:
    def __init__(self, comfy_path: str, base_dir: Path, extra_model_yaml: str | None = None, port: int | None = None,
                 extra_args: list[str] | tuple[str, ...] | None = (), front_end_root: str | None = None):
        """``front_end_root``: serve that frontend build (a ``comfyui_frontend_package/static`` folder, e.g.
        ``_prereq.frontend_new()``) instead of the venv's; ``extra_args``: more main.py flags. Every server also gets
        the flags in the environment variable SENTINEL_SERVER_ARGS (before these, so a test's own choice wins)."""
        self.comfy_path = comfy_path
        self.extra_args = tuple(extra_args or ()) + (("--front-end-root", str(front_end_root)) if front_end_root else ())
        self.base = Path(base_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_yaml = extra_model_yaml
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base / "server.log"

    def start(self, timeout: float = 240) -> ComfyServer:
        (self.base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        import _device

        cmd = [sys.executable, os.path.join(self.comfy_path, "main.py"), "--listen", "127.0.0.1",
               "--port", str(self.port), "--base-directory", str(self.base), "--disable-auto-launch",
               "--disable-api-nodes", "--dont-print-server", "--preview-method", "none"]
        cmd += _device.comfy_args()  # --cpu, or the GPU (SENTINEL_TEST_DEVICE=cuda) with SENTINEL_TEST_DTYPE's flag
        if self.extra_yaml:
            cmd += ["--extra-model-paths-config", self.extra_yaml]
        cmd += shlex.split(os.environ.get("SENTINEL_SERVER_ARGS", ""))  # e.g. --front-end-root (gpu_check.py)
        cmd += list(self.extra_args)  # after the environment's flags: a test's own choice wins
        self.cmd = cmd
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_path, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **_device.comfy_env()})
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                stats = self.get("/system_stats", timeout=2)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
                continue
            devs = stats.get("devices") or [{}]
            self.device_type = devs[0].get("type")
            if self.device_type != _device.device().type:
                self.stop()
                raise RuntimeError(f"ComfyUI runs on {self.device_type!r}, but SENTINEL_TEST_DEVICE={_device.RAW}:\n"
                                   f"{self.log_tail()}")
            return self
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    # ------------------------------------------------------------------ http
    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read().decode())

    def post(self, path: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read().decode() or "{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode() or "{}")

    def run_prompt(self, prompt: dict, timeout: float = 600) -> dict:
        """POST /prompt and wait for its history entry. Raises with the node errors on failure."""
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        if status != 200:
            raise AssertionError(f"/prompt refused the workflow ({status}): {json.dumps(body, indent=1)[:4000]}")
        pid = body["prompt_id"]
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server died:\n{self.log_tail()}")
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                entry = hist[pid]
                if entry["status"].get("status_str") == "error" or not entry["status"].get("completed"):
                    msgs = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
                    raise AssertionError(f"workflow failed: {json.dumps(msgs, indent=1)[:6000]}")
                return entry
            time.sleep(0.5)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout}s:\n{self.log_tail()}")


def load_api_workflow(path: str | Path, checkpoint: str) -> dict:
    """An API-format example workflow with every checkpoint name replaced by ``checkpoint``."""
    wf = json.loads(Path(path).read_text())
    for node in wf.values():
        if "ckpt_name" in node.get("inputs", {}):
            node["inputs"]["ckpt_name"] = checkpoint
    return wf
