#!/usr/bin/env python3
"""GPU check: the whole test suite and the speed benchmarks on one device, summed up in one table.

On a CUDA machine with torch, a ComfyUI checkout (COMFYUI_PATH) and this repository (nothing else: no ../shared),
it
  1. builds a random-weight, full-size SD1.5 checkpoint in fp16 with ComfyUI's own classes (and the tiny one the
     server tests load), verifies that ComfyUI's checkpoint loader detects both as SD15, and reads the UNet dtype
     ComfyUI picks on the device (what users run: float16 on a recent GPU);
  2. runs the test suite there: SENTINEL_TEST_DEVICE=cuda python -m pytest tests (JUnit XML, counts, failures);
  3. runs the benchmarks at 512 px: capture_overhead.py at batch 1 and 4, memorization_cost.py, diffsim_speed.py,
     diversity_speed.py, each as a subprocess on the device, and reads each one's final ``RESULT key=value ...``
     line(s) ("no RESULT line" when a script prints none);
  4. prints one table (device, torch/CUDA versions, dtype, TF32, test counts, every benchmark's RESULT values) and
     ends with its own ``RESULT ...`` line.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/gpu_check.py --out /tmp/gpu-check       # the real thing
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/gpu_check.py --device cpu --quick       # a dry run on the CPU

Options: --quick (fewer repetitions; on the CPU also the tiny checkpoint at 64 px, 4 steps, and a small test
selection), --skip-tests, --skip-benchmarks, --benchmarks a,b (subset), --tests PATH... (pytest selection),
--out DIR (table as gpu_check.json and gpu_check.txt, plus junit.xml, pytest.log, benchmarks.log), --budget S (stop
starting new phases after S seconds; default 540, inside a 10-minute command limit), --models DIR (where the
checkpoints go, reused when already there; default $COMFY_MODELS, else a temporary folder), --comfyui-tgz FILE (a ComfyUI checkout as .tar.gz, unpacked to a temporary
folder: for machines the checkout has to be carried to), --wheels DIR (wheels to install with pip --no-index into
a temporary folder on PYTHONPATH first, e.g. ComfyUI requirements missing there). Where comfyui-frontend-package is
not installed, test servers get a one-file stub frontend (the API works; browser tests need Chromium anyway and
skip). See CONTRIBUTING.md, "GPU check", for the device-machine recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
FULL_NAME = "sd15-random.safetensors"
TINY_NAME = "sd15-tiny-random.safetensors"
MARKER = "sentinel_gpu_check"

# ---------------------------------------------------------------------------------------------- RESULT lines


def _value(s: str):
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


def parse_result_lines(text: str) -> dict | None:
    """Merge every ``RESULT key=value ...`` line of a script's output (later keys win). None when there is none.

    Tokens are split like a shell does (quotes allowed), falling back to whitespace; tokens without '=' are kept
    under ``_words``. Numbers become int/float."""
    found = None
    for line in text.splitlines():
        s = line.strip()
        if not (s == "RESULT" or s.startswith("RESULT ")):
            continue
        found = {} if found is None else found
        body = s[len("RESULT"):].strip()
        try:
            tokens = shlex.split(body)
        except ValueError:
            tokens = body.split()
        for tok in tokens:
            if "=" in tok:
                k, v = tok.split("=", 1)
                found[k] = _value(v)
            else:
                found.setdefault("_words", []).append(tok)
    return found


def fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " ".join(map(str, v))
    return str(v)


def result_line(fields: dict) -> str:
    """``RESULT k=v ...`` with values that survive shlex and whitespace splitting (spaces become '_')."""
    parts = []
    for k, v in fields.items():
        v = fmt_value(v) if not isinstance(v, str) else v
        v = re.sub(r"\s+", "_", v) if v else "-"
        parts.append(f"{k}={v}")
    return "RESULT " + " ".join(parts)


# ---------------------------------------------------------------------------------------------- JUnit


def parse_junit(path: Path) -> dict:
    """Counts (passed/failed/errors/skipped/total) and the ids of failed tests from pytest's JUnit XML."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = {"total": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "skip_reasons": {}}
    for s in suites:
        for case in s.iter("testcase"):
            out["total"] += 1
            tid = f"{case.get('classname', '')}::{case.get('name', '')}"
            if case.find("failure") is not None:
                out["failed"] += 1
                out["failures"].append(tid)
            elif case.find("error") is not None:
                out["errors"] += 1
                out["failures"].append(tid + " (error)")
            elif case.find("skipped") is not None:
                out["skipped"] += 1
                msg = (case.find("skipped").get("message") or "").strip()[:120]
                out["skip_reasons"][msg] = out["skip_reasons"].get(msg, 0) + 1
            else:
                out["passed"] += 1
    return out


# ---------------------------------------------------------------------------------------------- environment


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda or "-",
            "python": platform.python_version(), "host_cpus": os.cpu_count()}
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: --device cuda but torch sees no CUDA device (use --device cpu for a dry run)")
        idx = int(device.split(":", 1)[1]) if ":" in device else 0
        p = torch.cuda.get_device_properties(idx)
        info.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
                    tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
                    nvidia_tf32_override=os.environ.get("NVIDIA_TF32_OVERRIDE", "-"),
                    cudnn=torch.backends.cudnn.version())
    else:
        info.update(gpu="-", tf32_matmul="n/a", tf32_cudnn="n/a")
    return info


def prepare(a, work: Path) -> dict:
    """Environment for the child processes: wheels, ComfyUI checkout, stub frontend, device settings."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    if a.wheels:
        site = work / "site"
        wheels = sorted(str(p) for p in Path(a.wheels).glob("*.whl"))
        if not wheels:
            raise SystemExit(f"gpu_check: no *.whl in --wheels {a.wheels}")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--no-cache-dir", "--target", str(site), *wheels], capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"gpu_check: pip could not install the wheels:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
        sys.path.insert(0, str(site))
        print(f"installed {len(wheels)} wheel(s) into {site}", flush=True)
    comfy = a.comfyui
    if a.comfyui_tgz:
        dest = work / "comfyui"
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(a.comfyui_tgz) as t:
            t.extractall(dest, filter="data")
        mains = sorted(dest.glob("*/main.py")) + sorted(dest.glob("main.py"))
        if not mains:
            raise SystemExit(f"gpu_check: no main.py in {a.comfyui_tgz}")
        comfy = str(mains[0].parent)
    if not comfy or not (Path(comfy) / "main.py").is_file():
        raise SystemExit("gpu_check: set COMFYUI_PATH (or --comfyui / --comfyui-tgz) to a ComfyUI checkout")
    env["COMFYUI_PATH"] = str(Path(comfy).resolve())
    env["SENTINEL_TEST_DEVICE"] = a.device
    if a.dtype:
        env["SENTINEL_TEST_DTYPE"] = a.dtype
    try:
        import comfyui_frontend_package  # noqa: F401
    except ImportError:
        stub = work / "frontend-stub"
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "index.html").write_text("<!doctype html><title>ComfyUI API only (gpu_check stub)</title>\n")
        env["SENTINEL_SERVER_ARGS"] = (env.get("SENTINEL_SERVER_ARGS", "") + f" --front-end-root {stub}").strip()
        print(f"comfyui-frontend-package not installed: test servers use the stub frontend {stub}", flush=True)
    return env


# ---------------------------------------------------------------------------------------------- checkpoints

SD15_FULL_UNET = dict(  # the SD1.5 UNet as ComfyUI's detector describes it (comfy/model_detection.py)
    use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=320,
    num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1, context_dim=768,
    use_linear_in_transformer=False, use_spatial_transformer=True, legacy=False, adm_in_channels=None,
    use_temporal_attention=False, use_temporal_resblock=False)
# one level of the same width: the smallest UNet ComfyUI still detects as SD15 from a file
SD15_TINY_UNET = dict(SD15_FULL_UNET, num_res_blocks=[1], channel_mult=[1], transformer_depth=[1],
                      transformer_depth_output=[1, 1], transformer_depth_middle=-1)
SD_VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
              num_res_blocks=2, attn_resolutions=[], dropout=0.0)


def _build_main(variant: str, out: str) -> int:
    """(child process) Build ``out`` if it is not ours yet, load it with ComfyUI's checkpoint loader, print JSON."""
    sys.path.insert(0, str(ROOT / "tests"))
    import _comfy

    _comfy.boot_comfy(os.environ["COMFYUI_PATH"])  # on the test device (SENTINEL_TEST_DEVICE), like the suite
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.sd
    import comfy.taesd.taesd
    import comfy.utils
    import torch
    from safetensors import safe_open

    t0 = time.perf_counter()
    built = False
    ours = False
    if os.path.isfile(out):
        with safe_open(out, "pt") as f:
            ours = (f.metadata() or {}).get(MARKER) == variant or (f.metadata() or {}).get("variant") == variant
    if not ours:
        mc = comfy.model_detection.model_config_from_unet_config(
            dict(SD15_FULL_UNET if variant == "full" else SD15_TINY_UNET))
        if type(mc).__name__ != "SD15":
            raise SystemExit(f"the {variant} UNet config is detected as {type(mc).__name__}, not SD15")
        mc.set_inference_dtype(torch.float32, None)
        model = mc.get_model({}, prefix="model.diffusion_model.", device=torch.device("cpu"))
        _comfy.random_init_(model.diffusion_model, seed=0)
        clip = comfy.sd.CLIP(mc.clip_target(), embedding_directory=None, model_options={"dtype": torch.float32})
        _comfy.random_init_(clip.cond_stage_model, seed=1)  # scalars (logit scale) keep ComfyUI's values
        if variant == "full":
            from comfy.ldm.models.autoencoder import AutoencoderKL

            ae = AutoencoderKL(ddconfig=dict(SD_VAE), embed_dim=4)
        else:
            ae = comfy.taesd.taesd.TAESD(latent_channels=4)
        _comfy.random_init_(ae, seed=2)  # TAESD's scalar scale/shift keep their values
        vae_sd = ae.state_dict()
        sd = model.state_dict_for_saving(clip.get_sd(), vae_sd, None)
        sd = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
        os.makedirs(os.path.dirname(out), exist_ok=True)
        comfy.utils.save_torch_file(sd, out + ".partial", metadata={MARKER: variant, "variant": variant,
                                                                    "description": "random weights, NOT a model"})
        os.replace(out + ".partial", out)
        del model, clip, ae, sd, vae_sd
        built = True
    t_build = time.perf_counter() - t0
    import logging

    class KeyWarnings(logging.Handler):  # ComfyUI logs missing/unexpected/left-over keys while loading
        hits: list = []

        def emit(self, record):
            msg = record.getMessage().lower()
            if any(w in msg for w in ("missing", "unexpected", "left over", "not a checkpoint")):
                self.hits.append(record.getMessage()[:200])

    catcher = KeyWarnings(level=logging.WARNING)
    logging.getLogger().addHandler(catcher)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(out, output_vae=True, output_clip=True,
                                                                        embedding_directory=None)
    finally:
        logging.getLogger().removeHandler(catcher)
    detected = type(model.model.model_config).__name__
    info = {"variant": variant, "path": out, "built": built, "build_s": round(t_build, 1),
            "load_s": round(time.perf_counter() - t0, 1), "detected": detected,
            "unet_dtype": str(model.model.get_dtype()).replace("torch.", ""),
            "manual_cast": str(model.model.manual_cast_dtype).replace("torch.", ""),
            "vae_dtype": str(vae.vae_dtype).replace("torch.", "") if vae is not None else "-",
            "comfy_device": str(mm.get_torch_device()), "size_mib": round(os.path.getsize(out) / 2**20),
            "key_warnings": catcher.hits[:5]}
    print("CKPT " + json.dumps(info), flush=True)
    return 0 if detected == "SD15" and clip is not None and vae is not None and not catcher.hits else 1


def build_checkpoint(variant: str, models: Path, env: dict, timeout: float) -> dict:
    out = models / "checkpoints" / (FULL_NAME if variant == "full" else TINY_NAME)
    r = _run([sys.executable, str(Path(__file__).resolve()), "--_build", variant, str(out)], env, timeout)
    line = next((ln for ln in r["output"].splitlines() if ln.startswith("CKPT ")), None)
    if r["rc"] != 0 or line is None:
        return {"variant": variant, "path": str(out), "error": f"exit {r['rc']}", "tail": r["output"][-3000:]}
    return json.loads(line[5:])


# ---------------------------------------------------------------------------------------------- subprocesses


def _run(cmd, env, timeout, cwd=ROOT) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=max(1, timeout))
        rc, output = p.returncode, p.stdout + ("\n" + p.stderr if p.stderr.strip() else "")
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        output += f"\n[gpu_check: killed after {timeout:.0f}s]"
    return {"rc": rc, "output": output, "seconds": round(time.perf_counter() - t0, 1)}


def benchmark_specs(a, ckpt: str) -> dict:
    size, reps, steps = a.size, a.reps, a.steps
    return {
        "capture_b1": ("capture_overhead.py", ["--ckpt", ckpt, "--size", str(size), "--steps", str(steps),
                                               "--batch", "1", "--reps", str(reps or (5 if a.quick else 20))]),
        "capture_b4": ("capture_overhead.py", ["--ckpt", ckpt, "--size", str(size), "--steps", str(steps),
                                               "--batch", "4", "--reps", str(reps or (5 if a.quick else 20))]),
        "memorization_cost": ("memorization_cost.py",
                              (["--model", "tiny"] if a.model == "tiny" else ["--model", "full", "--checkpoint", ckpt])
                              + ["--size", str(size), "--reps", str(reps or (2 if a.quick else 5))]),
        "diffsim_speed": ("diffsim_speed.py", ["--checkpoint", ckpt, "--resolution", str(size),
                                               "--reps", str(reps or (2 if a.quick else 3))]),
        "diversity_speed": ("diversity_speed.py", ["--quick"] if a.quick else []),
    }


def supports_device_flag(script: Path, env: dict) -> bool:
    r = _run([sys.executable, str(script), "--help"], env, 120)
    return r["rc"] == 0 and "--device" in r["output"]


def run_benchmark(name: str, script: str, argv: list, a, env: dict, timeout: float) -> dict:
    path = BENCH / script
    if not path.is_file():
        return {"name": name, "status": f"missing {script}", "result": None, "seconds": 0, "output": ""}
    cmd = [sys.executable, str(path), *argv]
    if supports_device_flag(path, env):
        cmd += ["--device", a.device]
    r = _run(cmd, env, timeout)
    res = parse_result_lines(r["output"])
    if r["rc"] == "timeout":
        status = "timeout"
    elif r["rc"] != 0:
        last = [ln for ln in r["output"].strip().splitlines() if ln.strip()][-1:] or ["?"]
        status = f"failed (exit {r['rc']}): {last[0][:160]}"
    elif res is None:
        status = "no RESULT line"
    else:
        status = "ok"
    return {"name": name, "script": script, "argv": cmd[2:], "status": status, "result": res,
            "seconds": r["seconds"], "output": r["output"]}


# ---------------------------------------------------------------------------------------------- table


def render(report: dict) -> str:
    d, lines = report["device"], []
    lines.append("=" * 100)
    lines.append(f"Diffusion Sentinel GPU check  ({report['started']}, {report['seconds']:.0f} s, "
                 f"{'quick' if report['quick'] else 'full'})")
    lines.append("=" * 100)
    rows = [("device", f"{d['device']}  {d.get('gpu', '-')}" + (f"  ({d['gpu_mem_gib']} GiB, sm {d['capability']})"
                                                              if d.get("gpu_mem_gib") else "")),
            ("torch / CUDA / cuDNN", f"{d['torch']} / {d['cuda']} / {d.get('cudnn', '-')}   python {d['python']}"),
            ("TF32", f"matmul {d['tf32_matmul']}, cudnn {d['tf32_cudnn']}, NVIDIA_TF32_OVERRIDE "
                     f"{d.get('nvidia_tf32_override', '-')}"),
            ("ComfyUI", report.get("comfyui", "-"))]
    for c in report["checkpoints"]:
        if "error" in c:
            rows.append((f"checkpoint {c['variant']}", f"ERROR {c['error']} ({c['path']})"))
        else:
            rows.append((f"checkpoint {c['variant']}",
                         f"{'built' if c['built'] else 'reused'} {c['size_mib']} MiB, detected {c['detected']}, "
                         f"UNet {c['unet_dtype']} (manual cast {c['manual_cast']}), VAE {c['vae_dtype']}, "
                         f"on {c['comfy_device']}"))
    rows.append(("test dtype", f"SENTINEL_TEST_DTYPE={report['dtype'] or 'auto'}"))
    t = report.get("tests")
    if t is None:
        rows.append(("tests", "not run"))
    elif "error" in t:
        rows.append(("tests", f"ERROR: {t['error']}"))
    else:
        rows.append(("tests", f"{t['passed']} passed, {t['failed']} failed, {t['errors']} errors, {t['skipped']} "
                              f"skipped of {t['total']}  ({t['seconds']:.0f} s, exit {t['rc']})"))
    w = max(len(r[0]) for r in rows)
    lines += [f"{k:<{w}}  {v}" for k, v in rows]
    if t and t.get("failures"):
        lines.append("failed tests:")
        lines += [f"  - {f}" for f in t["failures"][:40]]
    if t and t.get("skip_reasons"):
        lines.append("skipped:")
        lines += [f"  {n:>3} x {m}" for m, n in sorted(t["skip_reasons"].items(), key=lambda x: -x[1])[:12]]
    lines.append("-" * 100)
    lines.append(f"{'benchmark':<20} {'status':<16} {'s':>6}  RESULT values")
    for b in report["benchmarks"]:
        vals = "" if not b["result"] else "  ".join(f"{k}={fmt_value(v)}" for k, v in b["result"].items())
        status = b["status"] if len(b["status"]) <= 16 else b["status"][:13] + "..."
        lines.append(f"{b['name']:<20} {status:<16} {b['seconds']:>6.0f}  {vals}")
        if b["status"] != "ok" and len(b["status"]) > 16:
            lines.append(f"{'':<20} {b['status']}")
    if not report["benchmarks"]:
        lines.append("(no benchmarks run)")
    lines.append("=" * 100)
    return "\n".join(lines)


def final_result(report: dict) -> str:
    d, t = report["device"], report.get("tests") or {}
    fields = {"gpu_check": "done", "device": d["device"], "gpu": d.get("gpu", "-"), "torch": d["torch"],
              "cuda": d["cuda"], "tf32_matmul": d["tf32_matmul"], "tf32_cudnn": d["tf32_cudnn"]}
    full = next((c for c in report["checkpoints"] if c.get("variant") == report["model"] and "error" not in c), None)
    fields["unet_dtype"] = full["unet_dtype"] if full else "-"
    for k in ("passed", "failed", "errors", "skipped"):
        fields[f"tests_{k}"] = t.get(k, "-")
    ok = sum(b["status"] == "ok" for b in report["benchmarks"])
    fields["benchmarks_ok"] = f"{ok}/{len(report['benchmarks'])}"
    for b in report["benchmarks"]:
        for k, v in (b["result"] or {}).items():
            if k != "_words":
                fields[f"{b['name']}.{k}"] = v
    fields["seconds"] = round(report["seconds"])
    return result_line(fields)


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default=os.environ.get("SENTINEL_TEST_DEVICE", "cuda"))
    ap.add_argument("--dtype", default=None, help="SENTINEL_TEST_DTYPE for the suite (default: auto)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-benchmarks", action="store_true")
    ap.add_argument("--benchmarks", default="", help="comma-separated subset of " + ", ".join(
        ["capture_b1", "capture_b4", "memorization_cost", "diffsim_speed", "diversity_speed"]))
    ap.add_argument("--tests", nargs="*", default=None, help="pytest selection (default: tests)")
    ap.add_argument("--pytest-args", default="", help="more pytest arguments (one string)")
    ap.add_argument("--model", choices=["full", "tiny"], default=None,
                    help="checkpoint for the benchmarks (default full; tiny for a CPU --quick dry run)")
    ap.add_argument("--size", type=int, default=None, help="pixels (default 512; 64 for a CPU --quick dry run)")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps in capture_overhead (default 20)")
    ap.add_argument("--reps", type=int, default=0, help="repetitions for every benchmark (default: per script)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget", type=float, default=540.0)
    ap.add_argument("--models", default=None)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", ""))
    ap.add_argument("--comfyui-tgz", default=None)
    ap.add_argument("--wheels", default=None)
    ap.add_argument("--_build", nargs=2, metavar=("VARIANT", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    cpu_dry = a.device == "cpu" and a.quick
    a.model = a.model or ("tiny" if cpu_dry else "full")
    a.size = a.size or (64 if cpu_dry else 512)
    a.steps = a.steps or (4 if cpu_dry else 20)
    if a.tests is None:
        a.tests = ["tests/integration/test_entrypoint_comfy.py"] if cpu_dry else ["tests"]
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a._build:
        return _build_main(*a._build)
    t_start = time.perf_counter()
    deadline = t_start + a.budget
    out = Path(a.out).resolve() if a.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sentinel-gpu-check-"))
    env = prepare(a, work)
    models = Path(a.models or os.environ.get("COMFY_MODELS") or work / "models").resolve()  # never under --out
    env["COMFY_MODELS"] = str(models)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": a.quick, "model": a.model,
              "dtype": a.dtype, "device": device_info(a.device), "checkpoints": [], "tests": None, "benchmarks": [],
              "size": a.size}
    try:
        ver = re.search(r'__version__ = "(.*?)"', (Path(env["COMFYUI_PATH"]) / "comfyui_version.py").read_text())
        report["comfyui"] = f"{ver.group(1)} at {env['COMFYUI_PATH']}"
    except (OSError, AttributeError):
        report["comfyui"] = env["COMFYUI_PATH"]
    print(f"gpu_check: device {a.device}, models {models}, budget {a.budget:.0f}s", flush=True)

    # 1. checkpoints: the tiny one for the suite's server tests, the full one (or tiny) for the benchmarks
    variants = ["tiny"] + (["full"] if a.model == "full" and not a.skip_benchmarks else [])
    for v in variants:
        c = build_checkpoint(v, models, env, max(60, deadline - time.perf_counter()))
        report["checkpoints"].append(c)
        print(f"checkpoint {v}: {json.dumps({k: c[k] for k in c if k != 'tail'})}", flush=True)
        if "error" in c:
            print(c.get("tail", ""), flush=True)
    ckpt = next((c["path"] for c in report["checkpoints"] if c["variant"] == a.model and "error" not in c), None)

    # 2. tests
    if not a.skip_tests:
        left = deadline - time.perf_counter()
        junit = (out or work) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", *a.tests, "-p", "no:cacheprovider", "-q", "-rfE",
               f"--junitxml={junit}", *shlex.split(a.pytest_args)]
        print(f"tests: {' '.join(cmd[1:])} (up to {left:.0f}s)", flush=True)
        r = _run(cmd, env, left - 5)
        if out:
            (out / "pytest.log").write_text(r["output"])
        print("\n".join(r["output"].splitlines()[-25:]), flush=True)
        if junit.is_file():
            t = parse_junit(junit)
        else:
            t = {"error": f"no JUnit file (exit {r['rc']})"}
        t.update(rc=r["rc"], seconds=r["seconds"])
        report["tests"] = t

    # 3. benchmarks
    if not a.skip_benchmarks:
        specs = benchmark_specs(a, ckpt or "")
        chosen = [s.strip() for s in a.benchmarks.split(",") if s.strip()] or list(specs)
        unknown = [s for s in chosen if s not in specs]
        if unknown:
            raise SystemExit(f"gpu_check: unknown benchmark(s) {unknown}; choose from {list(specs)}")
        logs = []
        for name in chosen:
            left = deadline - time.perf_counter()
            script, argv = specs[name]
            if left < 20:
                b = {"name": name, "status": "skipped (budget)", "result": None, "seconds": 0, "output": ""}
            elif ckpt is None and name != "diversity_speed":
                b = {"name": name, "status": "no checkpoint", "result": None, "seconds": 0, "output": ""}
            else:
                print(f"benchmark {name}: {script} {' '.join(argv)} (up to {left:.0f}s)", flush=True)
                b = run_benchmark(name, script, argv, a, env, left - 5)
                print(f"  -> {b['status']} in {b['seconds']}s: {b['result']}", flush=True)
            logs.append(f"===== {name}: {b['status']}\n{b.get('output', '')}")
            report["benchmarks"].append(b)
        if out:
            (out / "benchmarks.log").write_text("\n".join(logs))

    report["seconds"] = time.perf_counter() - t_start
    text = render(report)
    line = final_result(report)
    print(text)
    print(line, flush=True)
    if out:
        slim = dict(report, benchmarks=[{k: v for k, v in b.items() if k != "output"} for b in report["benchmarks"]])
        (out / "gpu_check.json").write_text(json.dumps(slim, indent=1, default=str))
        (out / "gpu_check.txt").write_text(text + "\n" + line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
