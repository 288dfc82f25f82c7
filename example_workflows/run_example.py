"""Run one of the pack's example workflows on a running ComfyUI and print what the Sentinel nodes reported.

    python example_workflows/run_example.py --list
    python example_workflows/run_example.py trajectory_similarity_chart
    python example_workflows/run_example.py diffsim_style_similarity_gate --ckpt my_sd15.safetensors
    python example_workflows/run_example.py diversity_select_diverse_subset --set 10.clip_name=my_clip.safetensors

The examples are the API-format files in example_workflows/api/ (the UI-format files next to this script are what
the editor opens). Standard library only. Exit codes: 0 ok, 1 a node failed or the run timed out, 2 a bad name,
file or setting (or the server refused the workflow), 4 no server answers.
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
API_DIR = HERE / "api"
DEFAULT = "trajectory_similarity_chart"
RENAMED = {  # names before the examples got descriptive file names
    "trajectory_ksampler": "trajectory_similarity_chart",
    "trajectory_any_sampler": "trajectory_custom_sampler_frames",
    "artifact_predict_filter": "artifact_predict_keep_best",
    "artifact_autoreject": "artifact_auto_reject_sampler",
    "artifact_collect_dataset": "artifact_collect_training_data",
    "diffsim_style_gate": "diffsim_style_similarity_gate",
    "diffsim_c_ipadapter": "diffsim_c_ipadapter_similarity",
    "diversity_batch": "diversity_select_diverse_subset",
    "memorization_guard": "memorization_guard_report",
}


class UsageError(Exception):
    """A problem the user can fix; the message says how (exit code 2, or ``code``)."""

    def __init__(self, msg: str, code: int = 2):
        super().__init__(msg)
        self.code = code


def examples() -> dict[str, str]:
    """{name: title} of every example (the title is the first line of its note, api/<name>.md)."""
    out = {}
    for p in sorted(API_DIR.glob("*.json")):
        note = p.with_suffix(".md")
        title = note.read_text().splitlines()[0].lstrip("# ").strip() if note.is_file() else ""
        out[p.stem] = title
    return out


def load_workflow(spec: str) -> tuple[str, dict]:
    """(label, API prompt) of an example name or a path. Raises UsageError with what to do instead."""
    names = examples()
    path = Path(spec)
    if spec.endswith(".json") or path.is_file():
        if not path.is_file():
            raise UsageError(f"{spec}: no such file")
    else:
        name = RENAMED.get(spec, spec)
        if name != spec:
            print(f"note: the example {spec!r} is now called {name!r}", file=sys.stderr)
        if name not in names:
            known = "\n  ".join(names)
            raise UsageError(f"unknown example {spec!r}. The examples are:\n  {known}\n"
                             "(or give the path of an API-format workflow file)")
        path = API_DIR / f"{name}.json"
    try:
        wf = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read it ({e})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(wf, dict) and isinstance(wf.get("nodes"), list) and "links" in wf:
        twin = API_DIR / path.name
        hint = f" Its API twin is {twin}." if twin.is_file() else ""
        raise UsageError(f"{path} is a UI-format workflow (what the editor opens), not the API format this script "
                         f"posts.{hint} For your own workflow use the editor's Workflow > Export (API).")
    if not isinstance(wf, dict) or not wf or not all(
            isinstance(n, dict) and "class_type" in n and isinstance(n.get("inputs"), dict) for n in wf.values()):
        raise UsageError(f"{path} is not an API-format workflow ({{node id: {{class_type, inputs}}}})")
    return path.name, wf


def apply_sets(wf: dict, sets: list[str]) -> None:
    for item in sets:
        target, eq, value = item.partition("=")
        nid, dot, name = target.partition(".")
        if not (eq and dot and nid and name):
            raise UsageError(f"--set {item!r}: expected NODE.INPUT=VALUE, e.g. --set 3.seed=7")
        if nid not in wf:
            raise UsageError(f"--set {item!r}: the workflow has no node {nid!r}; its nodes are: "
                             + ", ".join(f"{k} ({n['class_type']})" for k, n in wf.items()))
        try:
            wf[nid]["inputs"][name] = json.loads(value)
        except json.JSONDecodeError:
            wf[nid]["inputs"][name] = value


def _get(url: str, timeout: float = 60):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _post(url: str, payload: dict):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read().decode() or "{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read().decode() or "{}")
        except json.JSONDecodeError:
            return e.code, {"error": {"message": f"HTTP {e.code}"}}


def _options(spec) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1].get("options")
    return None


def check_against_server(wf: dict, info: dict, ckpt: str | None) -> list[str]:
    """Fit the workflow to what the server has: the checkpoint (``ckpt``, the example's own name when the server
    has it, else the server's first) and every other file choice. Returns notes; raises UsageError."""
    notes = []
    for nid, node in wf.items():
        ct = node["class_type"]
        if ct not in info:
            raise UsageError(f"node {nid}: the server has no node type {ct!r} (is the pack installed and loaded? "
                             "check the server log for IMPORT FAILED)")
        spec_of = {k: v for sec in ("required", "optional") for k, v in (info[ct]["input"].get(sec) or {}).items()}
        for name, value in node["inputs"].items():
            spec = spec_of.get(name)
            opts = _options(spec) if spec else None
            if opts is None or not isinstance(value, str):
                continue
            if name == "ckpt_name":
                if ckpt is not None:
                    if ckpt not in opts:
                        raise UsageError(f"--ckpt {ckpt!r} is not in the server's models/checkpoints; it has: "
                                         + (", ".join(opts) or "none"))
                    node["inputs"][name] = ckpt
                elif value not in opts:
                    if not opts:
                        raise UsageError("the server lists no checkpoint: put an SD1.5 checkpoint in "
                                         "ComfyUI/models/checkpoints and restart or refresh ComfyUI")
                    node["inputs"][name] = opts[0]
                    notes.append(f"checkpoint {value!r} not found; using {opts[0]!r} (choose with --ckpt NAME)")
                continue
            if value not in opts:
                shown = ", ".join(map(str, opts[:12])) + (" ..." if len(opts) > 12 else "") if opts else "none"
                raise UsageError(f"node {nid} ({ct}).{name} = {value!r} is not available on the server (it has: "
                                 f"{shown}). Put the file in the matching models folder, or choose one with "
                                 f"--set {nid}.{name}=NAME")
    return notes


def _fmt(v):
    return "nan" if v is None or v != v else f"{v:.4f}"


def report(wf: dict, entry: dict) -> None:
    for nid, out in entry["outputs"].items():
        kind = wf.get(nid, {}).get("class_type", "?")
        for payload in out.get("sentinel_series", []):
            print(f"[{nid}] {kind}: {payload['metric']} over steps {payload['steps'][0]}..{payload['steps'][-1]}")
            for b, s in enumerate(payload.get("summary", [])):
                print(f"   item {b}: min {_fmt(s.get('min'))} at step {s.get('argmin_step')}, "
                      f"D_max {_fmt(s.get('d_max'))}, mean of last half {_fmt(s.get('mean_last_half'))}")
        for img in out.get("images", []):
            print(f"[{nid}] {kind}: image {img.get('subfolder', '')}/{img['filename']} ({img.get('type')})")
        for t in out.get("text", []):
            print(f"[{nid}] {kind}: {t}")


def run(a) -> int:
    label, wf = load_workflow(a.workflow)
    apply_sets(wf, a.set)
    if a.seed is not None:
        for node in wf.values():
            for k in ("seed", "noise_seed"):
                if k in node["inputs"]:
                    node["inputs"][k] = a.seed
    server = a.server.rstrip("/")
    try:
        info = _get(f"{server}/object_info")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UsageError(f"no ComfyUI answers at {server} ({reason}). Start ComfyUI, or pass --server URL", 4) from None
    for note in check_against_server(wf, info, a.ckpt):
        print("note:", note, file=sys.stderr)
    print(f"running {label} on {server}")
    status, body = _post(f"{server}/prompt", {"prompt": wf, "client_id": uuid.uuid4().hex})
    if status != 200:
        err = body.get("error", {})
        print(f"the server refused the workflow: {err.get('message', '')} {err.get('details', '')}".rstrip(),
              file=sys.stderr)
        for nid, ne in (body.get("node_errors") or {}).items():
            for e in ne.get("errors", []):
                print(f"  node {nid} ({ne.get('class_type')}): {e.get('message')}: {e.get('details')}",
                      file=sys.stderr)
        return 2
    pid, t0 = body["prompt_id"], time.time()
    while True:
        try:
            hist = _get(f"{server}/history/{pid}")
        except (urllib.error.URLError, OSError) as e:
            print(f"lost the server while waiting ({getattr(e, 'reason', e)})", file=sys.stderr)
            return 4
        if pid in hist and hist[pid]["status"].get("completed") is not None:
            break
        if time.time() - t0 > a.timeout:
            print(f"timed out after {a.timeout:.0f}s (the prompt is still queued or running on the server)",
                  file=sys.stderr)
            return 1
        time.sleep(1)
    entry = hist[pid]
    if entry["status"].get("status_str") == "error":
        for m in entry["status"].get("messages", []):
            if m[0] == "execution_error":
                print(f"node {m[1].get('node_id')} ({m[1].get('node_type')}) failed: "
                      f"{m[1].get('exception_type')}: {m[1].get('exception_message')}", file=sys.stderr)
        return 1
    print(f"done in {time.time() - t0:.1f}s")
    report(wf, entry)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("workflow", nargs="?", default=DEFAULT, help="an example name (see --list) or the path of an "
                    "API-format workflow file")
    ap.add_argument("--server", default="http://127.0.0.1:8188")
    ap.add_argument("--ckpt", default=None, help="checkpoint name as ComfyUI lists it (default: the example's own, "
                    "v1-5-pruned-emaonly.safetensors, when the server has it, else the server's first)")
    ap.add_argument("--seed", type=int, default=None, help="set every seed and noise_seed input of the workflow")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                    help="set one input, e.g. --set 20.clip_name=my_clip_vision.safetensors (JSON values allowed)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--list", action="store_true", help="list the example workflows and exit")
    a = ap.parse_args(argv)
    if a.list:
        for name, title in examples().items():
            print(f"{name:34s} {title}")
        return 0
    try:
        return run(a)
    except UsageError as e:
        print(f"run_example: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("interrupted (the prompt may still run on the server)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
