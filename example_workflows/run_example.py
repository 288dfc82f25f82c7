"""Run one of the pack's example workflows on a running ComfyUI and print what the Sentinel nodes reported.

    python example_workflows/run_example.py                                   # trajectory_ksampler, first checkpoint
    python example_workflows/run_example.py trajectory_any_sampler --ckpt v1-5-pruned-emaonly.safetensors
    python example_workflows/run_example.py --list

Standard library only. Exit codes: 0 ok, 1 a node failed, 2 the server refused the workflow, 4 no server.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _get(url: str, timeout: float = 60):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _post(url: str, payload: dict):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read().decode() or "{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "{}")


def _fmt(v):
    return "nan" if v is None or v != v else f"{v:.4f}"


def main() -> int:
    examples = sorted(p.name[: -len("_api.json")] for p in HERE.glob("*_api.json"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workflow", nargs="?", default="trajectory_ksampler", help=f"one of {examples} or a path")
    ap.add_argument("--server", default="http://127.0.0.1:8188")
    ap.add_argument("--ckpt", default=None, help="checkpoint name as ComfyUI lists it (default: the first one)")
    ap.add_argument("--seed", type=int, default=None, help="override every seed in the workflow")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                    help="set one input, e.g. --set 20.clip_name=my_clip_vision.safetensors (JSON values allowed)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--list", action="store_true", help="list the example workflows and exit")
    a = ap.parse_args()
    if a.list:
        print("\n".join(examples))
        return 0
    path = Path(a.workflow) if a.workflow.endswith(".json") else HERE / f"{a.workflow}_api.json"
    wf = json.loads(path.read_text())
    try:
        info = _get(f"{a.server}/object_info/CheckpointLoaderSimple")
    except (urllib.error.URLError, OSError) as e:
        print(f"no ComfyUI answers at {a.server} ({e}); start ComfyUI or pass --server", file=sys.stderr)
        return 4
    ckpts = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    ckpt = a.ckpt or (ckpts[0] if ckpts else None)
    if ckpt is None:
        print("ComfyUI lists no checkpoint: put an SD1.5 checkpoint in models/checkpoints", file=sys.stderr)
        return 2
    for node in wf.values():
        if "ckpt_name" in node["inputs"]:
            node["inputs"]["ckpt_name"] = ckpt
        for k in ("seed", "noise_seed"):
            if a.seed is not None and k in node["inputs"]:
                node["inputs"][k] = a.seed
    for item in a.set:
        target, _, value = item.partition("=")
        nid, _, name = target.partition(".")
        if nid not in wf or not name or not _:
            print(f"--set {item!r}: expected NODE.INPUT=VALUE with a node id of the workflow", file=sys.stderr)
            return 2
        try:
            wf[nid]["inputs"][name] = json.loads(value)
        except json.JSONDecodeError:
            wf[nid]["inputs"][name] = value
    print(f"running {path.name} with {ckpt} on {a.server}")
    status, body = _post(f"{a.server}/prompt", {"prompt": wf, "client_id": uuid.uuid4().hex})
    if status != 200:
        print(json.dumps(body, indent=1), file=sys.stderr)
        return 2
    pid, t0 = body["prompt_id"], time.time()
    while True:
        hist = _get(f"{a.server}/history/{pid}")
        if pid in hist and hist[pid]["status"].get("completed") is not None:
            break
        if time.time() - t0 > a.timeout:
            print("timed out", file=sys.stderr)
            return 1
        time.sleep(1)
    entry = hist[pid]
    if entry["status"].get("status_str") == "error":
        for m in entry["status"].get("messages", []):
            if m[0] == "execution_error":
                print(f"node {m[1].get('node_id')} ({m[1].get('node_type')}) failed: {m[1].get('exception_message')}",
                      file=sys.stderr)
        return 1
    print(f"done in {time.time() - t0:.1f}s")
    for nid, out in entry["outputs"].items():
        kind = wf.get(nid, {}).get("class_type", "?")
        for payload in out.get("sentinel_series", []):
            print(f"[{nid}] {kind}: {payload['metric']} over steps {payload['steps'][0]}..{payload['steps'][-1]}")
            for b, s in enumerate(payload["summary"]):
                print(f"   item {b}: min {_fmt(s['min'])} at step {s['argmin_step']}, D_max {_fmt(s['d_max'])}, "
                      f"mean of last half {_fmt(s['mean_last_half'])}")
        for img in out.get("images", []):
            print(f"[{nid}] {kind}: image {img.get('subfolder', '')}/{img['filename']} ({img.get('type')})")
        for t in out.get("text", []):
            print(f"[{nid}] {kind}: {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
