"""Trajectory nodes: capture every step of any sampler, save/load trajectories, the Similarity Trajectory."""

from __future__ import annotations

import json
import logging
import math
import os

import comfy.samplers
import folder_paths
import torch
from comfy_api.latest import io, ui

import nodes as comfy_nodes  # ComfyUI's nodes.py (common_ksampler); our own package is always imported relatively

from ..common.comfy_glue import register_folder
from ..common.comfy_types import SimilaritySeries as SimilaritySeriesType
from ..common.comfy_types import Trajectory as TrajectoryType
from ..common.plot import line_chart
from ..common.ui import col, panel, result_ui
from .capture import attach_capture, find_stores, latent_out
from .frames import check_metric_requirements, series_from_trajectory
from .panels import mib, per_item, similarity_panel, trajectory_panel
from .recorder import STORAGE_DTYPES, CaptureOptions, check_capture_memory
from .similarity import METRICS, SimilaritySeries
from .trajectory import Trajectory, TrajectoryError

log = logging.getLogger("diffusion_sentinel")
CATEGORY = "Sentinel/trajectory"
TRAJ_DIR = "trajectories"

register_folder(TRAJ_DIR, [os.path.join(folder_paths.get_output_directory(), TRAJ_DIR),
                           os.path.join(folder_paths.get_input_directory(), TRAJ_DIR)], {".safetensors"})
register_folder("dreamsim", [os.path.join(folder_paths.models_dir, "dreamsim")], set())


# ----------------------------------------------------------------------------- shared inputs
def capture_inputs() -> list:
    return [
        io.Int.Input("every_k_steps", default=1, min=1, max=1000, optional=True,
                     tooltip="Record steps 0, k, 2k, ... (the last step is always recorded). 1 records every step. "
                             "Memory is estimated before sampling: a warning past 2 GiB, a refusal past 16 GiB "
                             "(SENTINEL_CAPTURE_WARN_MB / SENTINEL_CAPTURE_MAX_MB)."),
        io.Combo.Input("storage", options=list(STORAGE_DTYPES), default="float32", optional=True,
                       tooltip="Precision of the stored latents. float16 halves the memory of long or large runs."),
        io.Boolean.Input("keep_x", default=True, optional=True,
                         tooltip="Also store x, the noisy latent the model saw at each step (x0 is always stored). "
                                 "Off halves the memory."),
        io.Boolean.Input("keep_cond_uncond", default=False, optional=True,
                         tooltip="Also store the conditional and unconditional x0 of each step (for the Wen "
                                 "memorization metric). With cfg 1 there is no unconditional pass to store."),
    ]


def _options(every_k_steps=1, storage="float32", keep_x=True, keep_cond_uncond=False) -> CaptureOptions:
    return CaptureOptions(every_k=every_k_steps, storage=storage, keep_x=keep_x, keep_cond_uncond=keep_cond_uncond)


def _ksampler_inputs(advanced: bool) -> list:
    seed_name = "noise_seed" if advanced else "seed"
    inputs = [
        io.Model.Input("model", tooltip="The model used for denoising the input latent."),
    ]
    if advanced:
        inputs.append(io.Combo.Input("add_noise", options=["enable", "disable"],
                                     tooltip="Add the seed's noise to the latent before sampling (disable to "
                                             "continue a latent that still holds noise)."))
    inputs += [
        io.Int.Input(seed_name, default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="The random seed used for creating the noise."),
        io.Int.Input("steps", default=20, min=1, max=10000, tooltip="The number of steps used in the denoising process."),
        io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale: higher follows the prompt more closely; too high "
                               "hurts quality."),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS,
                       tooltip="The sampling algorithm."),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS,
                       tooltip="How the noise level decreases from step to step."),
        io.Conditioning.Input("positive", tooltip="What to include in the image."),
        io.Conditioning.Input("negative", tooltip="What to exclude from the image."),
        io.Latent.Input("latent_image", tooltip="The latent image to denoise."),
    ]
    if advanced:
        inputs += [
            io.Int.Input("start_at_step", default=0, min=0, max=10000, tooltip="First step of the schedule to run."),
            io.Int.Input("end_at_step", default=10000, min=0, max=10000, tooltip="Step of the schedule to stop at."),
            io.Combo.Input("return_with_leftover_noise", options=["disable", "enable"],
                           tooltip="enable: stop with the remaining noise in the latent (for a second sampler)."),
        ]
    else:
        inputs.append(io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                                     tooltip="How much of the schedule to run; below 1 keeps the input latent's "
                                             "structure (image to image)."))
    return inputs + capture_inputs()


_TRAJ_OUT_TIP = ("One TRAJECTORY for the whole batch (not a list): per batch item and recorded step sigma, x, x0 "
                 "(+ cond/uncond x0) and the run's settings. Feed it to Similarity Trajectory, Save Trajectory or "
                 "Trajectory Frames.")


def _sample_with_capture(model, opts, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, **kw):
    samples = latent["samples"]
    run_steps = int(steps)
    if kw.get("last_step") is not None or kw.get("start_step") is not None:
        run_steps = max(0, min(int(kw.get("last_step") or steps), int(steps)) - int(kw.get("start_step") or 0))
    if not getattr(samples, "is_nested", False):
        check_capture_memory(opts, run_steps, int(samples.shape[0]), tuple(samples.shape[1:]))  # refuse up front
    m, store = attach_capture(model, opts, max_runs=1)
    (out,) = comfy_nodes.common_ksampler(m, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, **kw)
    traj = store.pop_latest()
    if traj is None:  # nothing was sampled (start step past the end of the schedule)
        samples = out["samples"]
        empty = torch.zeros((samples.shape[0], 0, *samples.shape[1:]), dtype=opts.dtype)
        traj = Trajectory(x0=empty, sigmas=torch.zeros(0), meta={"flags": ["no_steps_sampled"]})
    traj.meta.update({"sampler": sampler_name, "scheduler": scheduler, "steps": int(steps), "cfg": float(cfg),
                      "seed": int(seed), "denoise": float(kw.get("denoise", 1.0)),
                      "start_step": kw.get("start_step"), "last_step": kw.get("last_step")})
    if "batch_index" in latent:
        traj.meta["batch_index"] = [int(i) for i in latent["batch_index"]]
    return out, traj, list(store.warnings)


def _sampler_schema(advanced: bool) -> io.Schema:
    builtin = "KSampler (Advanced)" if advanced else "KSampler"
    return io.Schema(
        node_id="SentinelKSamplerAdvancedTrajectory" if advanced else "SentinelKSamplerTrajectory",
        display_name="KSampler Advanced (Trajectory)" if advanced else "KSampler (Trajectory)",
        category=CATEGORY,
        description=f"The built-in {builtin} (same inputs, bit-identical LATENT) that also records every step's "
                    "x0 and x per batch item as a TRAJECTORY.",
        inputs=_ksampler_inputs(advanced=advanced),
        outputs=[io.Latent.Output("LATENT", display_name="LATENT", tooltip=f"The latent (identical to {builtin}'s)."),
                 TrajectoryType.Output("TRAJECTORY", display_name="TRAJECTORY", tooltip=_TRAJ_OUT_TIP)],
    )


class KSamplerTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _sampler_schema(advanced=False)

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                denoise=1.0, **capture) -> io.NodeOutput:
        out, traj, warnings = _sample_with_capture(model, _options(**capture), seed, steps, cfg, sampler_name,
                                                   scheduler, positive, negative, latent_image, denoise=denoise)
        return io.NodeOutput(out, traj, ui=result_ui(trajectory_panel("KSampler (Trajectory)", traj, warnings)))


class KSamplerAdvancedTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _sampler_schema(advanced=True)

    @classmethod
    def execute(cls, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                latent_image, start_at_step, end_at_step, return_with_leftover_noise, **capture) -> io.NodeOutput:
        out, traj, warnings = _sample_with_capture(
            model, _options(**capture), noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
            latent_image, denoise=1.0, disable_noise=(add_noise == "disable"), start_step=start_at_step,
            last_step=end_at_step, force_full_denoise=(return_with_leftover_noise != "enable"))
        return io.NodeOutput(out, traj,
                             ui=result_ui(trajectory_panel("KSampler Advanced (Trajectory)", traj, warnings)))


class CaptureTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelCaptureTrajectory",
            display_name="Capture Trajectory",
            category=CATEGORY,
            description="Patch a MODEL so that ANY sampler using it (SamplerCustom, SamplerCustomAdvanced, "
                        "third-party samplers on CFGGuider) records its steps. Read the record with "
                        "'Get Captured Trajectory' from the sampler's LATENT.",
            inputs=[io.Model.Input("model", tooltip="The model to watch. It is cloned, never modified."),
                    *capture_inputs(),
                    io.Int.Input("remember_runs", default=4, min=1, max=64, optional=True,
                                 tooltip="How many sampling runs through this model to keep in memory (e.g. both "
                                         "passes of a hires fix). Older runs are dropped.")],
            outputs=[io.Model.Output("MODEL", display_name="MODEL", tooltip="The same model with capture attached; use it for sampling.")],
        )

    @classmethod
    def execute(cls, model, remember_runs=4, **capture) -> io.NodeOutput:
        opts = _options(**capture)
        m, _store = attach_capture(model, opts, max_runs=remember_runs)
        kept = ["x0"] + (["x"] if opts.keep_x else []) + (["cond/uncond x0"] if opts.keep_cond_uncond else [])
        p = panel("Capture Trajectory", summary="every sampler using this MODEL records its steps",
                  columns=[col("setting"), col("value")],
                  rows=[["every_k_steps", opts.every_k], ["storage", opts.storage], ["stored", ", ".join(kept)],
                        ["remember_runs", int(remember_runs)]],
                  notes=["read a run with Get Captured Trajectory (its MODEL and the sampler's LATENT)"])
        return io.NodeOutput(m, ui=result_ui(p))


class GetCapturedTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelGetTrajectory",
            display_name="Get Captured Trajectory",
            category=CATEGORY,
            description="The TRAJECTORY of the sampling run that produced this LATENT. Taking the sampler's LATENT "
                        "as input makes this node run after the sampler.",
            inputs=[io.Model.Input("model", tooltip="The MODEL output of 'Capture Trajectory' (the one the "
                                                    "sampler used)."),
                    io.Latent.Input("latent", tooltip="The LATENT output of the sampler (either output of "
                                                      "SamplerCustom/SamplerCustomAdvanced works).")],
            outputs=[TrajectoryType.Output("TRAJECTORY", display_name="TRAJECTORY", tooltip=_TRAJ_OUT_TIP)],
        )

    @classmethod
    def execute(cls, model, latent) -> io.NodeOutput:
        stores = find_stores(model)
        if not stores:
            raise ValueError("this MODEL has no trajectory capture: connect the MODEL output of a 'Capture "
                             "Trajectory' node (the same model that feeds the sampler)")
        for store in stores:  # the innermost capture first (a MODEL captured twice has two)
            traj = store.find_for_latent(latent["samples"])
            if traj is not None:
                p = trajectory_panel("Get Captured Trajectory", traj)
                return io.NodeOutput(traj, ui=result_ui(p))
        remembered = sum(len(s.runs) for s in stores)
        raise ValueError(
            f"no sampling run through this MODEL produced this LATENT ({remembered} run(s) remembered). "
            "Connect the sampler's own LATENT output (not an upscaled, sliced or decoded copy), make sure that "
            "sampler uses the MODEL from 'Capture Trajectory', and raise remember_runs if more samplers use it.")


def _summary_outputs(series: SimilaritySeries):
    sums = series.summaries()
    return ([s.minimum for s in sums], [s.argmin_step for s in sums], [s.d_max for s in sums],
            [s.mean_last_half for s in sums], [bool(f) for f in series.finite.tolist()], sums)


def batch_outputs(sums) -> tuple[list[float], int, float]:
    """(relative late drops per item, the worst item = largest relative drop, the lowest min over items).
    NaN items (non-finite runs) count as the worst; ties go to the lower index."""
    rel = [s.d_max_relative for s in sums]
    keyed = [(math.inf if not math.isfinite(r) else r) for r in rel]
    worst = max(range(len(keyed)), key=lambda i: (keyed[i], -i)) if keyed else -1
    mins = [s.minimum for s in sums if math.isfinite(s.minimum)]
    return rel, worst, (min(mins) if mins else float("nan"))


def plot_series(series: SimilaritySeries, sums) -> torch.Tensor:
    """Chart of every item's curve. In the paper layout the noise value (always the lowest) is left out, as in
    the summaries, so the drops that matter are not squashed against the axis."""
    off = 1 if (series.noise_frame and series.length > 1) else 0
    steps = series.steps[off:]
    values = [row[off:] for row in series.as_lists()]
    labels = []
    for b, s in enumerate(sums):
        flag = "" if bool(series.finite[b]) else "  NON-FINITE x0"
        labels.append(f"item {b}: min {s.minimum:.4f} @ step {s.argmin_step}, D_max (last 60%) {s.d_max:.4f} "
                      f"({s.d_max_relative:.3f} of range), last half {s.mean_last_half:.4f}{flag}")
    markers = [steps.index(s.argmin_step) if s.argmin_step in steps else None for s in sums]
    src = series.source
    title = (f"Similarity Trajectory ({series.metric}{', noise value not shown' if off else ''}) - "
             f"{src.get('sampler')}/{src.get('scheduler')}, {src.get('steps')} steps, cfg {src.get('cfg')}")
    img = line_chart(values, x=steps, labels=labels, title=title, x_label="step", y_label="similarity",
                     markers=markers, height=384 + 14 * min(8, len(sums)))
    return torch.from_numpy(img)[None]


class SimilarityTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelSimilarityTrajectory",
            display_name="Similarity Trajectory",
            category=CATEGORY,
            description="Per batch item, the similarity of consecutive x0 predictions (Menn et al. 2024). A drop "
                        "in the curve goes with artifacts in the final image.",
            inputs=[
                TrajectoryType.Input("trajectory", tooltip="From KSampler (Trajectory), Get Captured Trajectory or "
                                                           "Load Trajectory."),
                io.Combo.Input("metric", options=list(METRICS), default="latent_cosine",
                               tooltip="latent_cosine: cosine of consecutive x0 latents, no decode (fast; not the "
                                       "paper's metric). pixel_ssim: decode every x0 with the VAE and compare with "
                                       "SSIM. dreamsim: decode and compare DreamSim embeddings (the paper's metric; "
                                       "needs the optional dreamsim package and its weights)."),
                io.Boolean.Input("noise_frame", default=True,
                                 tooltip="Paper layout: compare the starting noise with the first x0 as value 0, so "
                                         "N steps give N values. Summaries ignore that first value."),
                io.Vae.Input("vae", optional=True, tooltip="Needed by pixel_ssim and dreamsim to decode x0."),
                io.Int.Input("decode_batch", default=8, min=1, max=256, optional=True,
                             tooltip="Frames decoded at once by the VAE (lower it if you run out of memory)."),
            ],
            outputs=[
                SimilaritySeriesType.Output("SERIES", display_name="SERIES", tooltip="The series of every item with its metric and "
                                                              "layout, for Artifact Predict."),
                io.Float.Output("min", display_name="min", is_output_list=True,
                                tooltip=per_item("Lowest similarity (first value skipped in the paper layout); "
                                                 "higher = the predictions agree more.")),
                io.Int.Output("argmin_step", display_name="argmin_step", is_output_list=True,
                              tooltip=per_item("The step where the lowest similarity occurs.")),
                io.Float.Output("d_max", display_name="d_max", is_output_list=True,
                                tooltip=per_item("D_max: the largest drop from a running peak over the last 60 % of "
                                                 "the series (0 = no late drop; larger = more likely an artifact). "
                                                 "The same D_max the artifact rule and dmax_threshold use.")),
                io.Float.Output("mean_last_half", display_name="mean_last_half", is_output_list=True,
                                tooltip=per_item("Mean similarity over the last half of the series.")),
                io.Boolean.Output("finite", display_name="finite", is_output_list=True,
                                  tooltip=per_item("False if the sampler produced NaN/inf (those values are NaN).")),
                io.Image.Output("plot", display_name="plot", tooltip="A chart of every item's curve with its minimum circled."),
                io.String.Output("series_json", display_name="series_json", tooltip="The series and summaries as JSON text."),
                io.Float.Output("d_max_relative", display_name="d_max_relative", is_output_list=True,
                                tooltip=per_item("D_max divided by the series' own range (0..1, scale-free): what "
                                                 "the model-free artifact rule scores (above 0.086: P > 0.5).")),
                io.Int.Output("worst_item", display_name="worst_item",
                              tooltip="One value for the batch: the item with the largest relative late drop "
                                      "(non-finite items count as worst)."),
                io.Float.Output("batch_min", display_name="batch_min",
                                tooltip="One value for the batch: the lowest 'min' over all items."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, trajectory, metric, noise_frame, vae=None, decode_batch=8) -> io.NodeOutput:
        check_metric_requirements(metric, vae, "Similarity Trajectory")
        series = series_from_trajectory(trajectory, metric, noise_frame=noise_frame, vae=vae,
                                        decode_batch=decode_batch)
        mins, argmins, dmaxs, halves, finite, sums = _summary_outputs(series)
        rel, worst, batch_min = batch_outputs(sums)
        for b, f in enumerate(finite):
            if not f:
                log.warning("Similarity Trajectory: item %d has non-finite x0 (NaN/inf); its values are NaN", b)
        plot = plot_series(series, sums)
        payload = {"metric": metric, "noise_frame": noise_frame, "steps": series.steps,
                   "series": series.as_lists(), "summary": [s.as_dict() for s in sums], "finite": finite,
                   "worst_item": worst, "batch_min": batch_min}
        text = json.dumps(payload, allow_nan=True)
        extra = {}
        try:
            extra = {k: list(v) if isinstance(v, tuple) else v  # ui values must be lists
                     for k, v in ui.PreviewImage(plot, cls=cls).as_dict().items()}
        except Exception as e:  # no temp folder (unit tests); the chart still goes out as an IMAGE
            log.debug("preview not saved: %s", e)
        p = similarity_panel(series, sums, rel, worst, batch_min)
        return io.NodeOutput(series, mins, argmins, dmaxs, halves, finite, plot, text, rel, worst, batch_min,
                             ui=result_ui(p, extra=extra))


class SaveTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelSaveTrajectory",
            display_name="Save Trajectory",
            category=CATEGORY,
            description="Write a TRAJECTORY to the output folder as safetensors with JSON metadata.",
            inputs=[TrajectoryType.Input("trajectory", tooltip="The trajectory to save."),
                    io.String.Input("filename_prefix", default="trajectories/sentinel",
                                    tooltip="Path under the output folder; a counter and .safetensors are added.")],
            outputs=[io.String.Output("path", display_name="path", tooltip="The file written.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, trajectory, filename_prefix) -> io.NodeOutput:
        out_dir = folder_paths.get_output_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        fname = f"{name}_{counter:05}_.safetensors"
        path = trajectory.save(os.path.join(folder, fname))
        rel = os.path.join(subfolder, fname)
        p = panel("Save Trajectory", summary=f"saved output/{rel}",
                  columns=[col("file"), col("items"), col("steps"), col("mib", "MiB", fmt=".2f")],
                  rows=[[rel, trajectory.batch_size, trajectory.num_steps, mib(os.path.getsize(path))]],
                  notes=["read it back with Load Trajectory (output/trajectories or input/trajectories)"])
        return io.NodeOutput(path, ui=result_ui(p))


def _trajectory_files() -> list[str]:
    return folder_paths.get_filename_list(TRAJ_DIR)


class LoadTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelLoadTrajectory",
            display_name="Load Trajectory",
            category=CATEGORY,
            description="Read a trajectory saved by 'Save Trajectory' (output/trajectories or input/trajectories). "
                        "Only safetensors are read; nothing is unpickled.",
            inputs=[io.Combo.Input("file", options=_trajectory_files(),
                                   tooltip="A .safetensors trajectory in output/trajectories or input/trajectories.")],
            outputs=[TrajectoryType.Output("TRAJECTORY", display_name="TRAJECTORY", tooltip=_TRAJ_OUT_TIP)],
        )

    @classmethod
    def validate_inputs(cls, file):
        if folder_paths.get_full_path(TRAJ_DIR, file) is None:
            return f"trajectory file {file!r} not found in output/trajectories or input/trajectories"
        return True

    @classmethod
    def fingerprint_inputs(cls, file):
        path = folder_paths.get_full_path(TRAJ_DIR, file)
        return os.path.getmtime(path) if path else float("nan")

    @classmethod
    def execute(cls, file) -> io.NodeOutput:
        path = folder_paths.get_full_path(TRAJ_DIR, file)
        if path is None:
            raise TrajectoryError(f"trajectory file {file!r} not found")
        traj = Trajectory.load(path)
        return io.NodeOutput(traj, ui=result_ui(trajectory_panel(f"Load Trajectory ({file})", traj)))


class TrajectoryFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelTrajectoryFrames",
            display_name="Trajectory Frames",
            category=CATEGORY,
            description="The recorded steps of one batch item as a LATENT batch (decode it to watch the image "
                        "form step by step).",
            inputs=[TrajectoryType.Input("trajectory", tooltip="The trajectory to unpack."),
                    io.Combo.Input("which", options=["x0", "x", "x0_cond", "x0_uncond"], default="x0",
                                   tooltip="x0: the denoised prediction; x: the noisy latent; cond/uncond x0 if "
                                           "they were recorded."),
                    io.Int.Input("item", default=0, min=0, max=4095, tooltip="Which batch item.")],
            outputs=[io.Latent.Output("LATENT", display_name="LATENT", tooltip="One latent per recorded step, in step order."),
                     io.Float.Output("sigmas", display_name="sigmas", is_output_list=True,
                                     tooltip="A list (one value per frame): a node connected here runs once per "
                                             "frame. The noise level of each frame.")],
        )

    @classmethod
    def execute(cls, trajectory, which, item) -> io.NodeOutput:
        t = getattr(trajectory, which)
        if t is None:
            raise ValueError(f"this trajectory did not record {which}; enable it on the capture node "
                             "(keep_x / keep_cond_uncond)")
        if not 0 <= item < trajectory.batch_size:
            raise ValueError(f"item {item} out of range: the trajectory has {trajectory.batch_size} item(s)")
        if trajectory.num_steps == 0:
            raise TrajectoryError("this trajectory recorded no steps")
        frames = latent_out(trajectory, t[item].float())
        if not bool(torch.isfinite(frames).all()):
            log.warning("Trajectory Frames: item %d's %s frames hold NaN/inf (the sampler produced them)", item, which)
        sig = [float(s) for s in trajectory.sigmas]
        p = panel("Trajectory Frames", summary=f"item {item}: {len(sig)} {which} frame(s)",
                  columns=[col("frame"), col("step"), col("sigma", fmt=".4g")],
                  rows=[[j, int(trajectory.steps[j]), sig[j]] for j in range(len(sig))])
        return io.NodeOutput({"samples": frames}, sig, ui=result_ui(p))


NODES = [KSamplerTrajectory, KSamplerAdvancedTrajectory, CaptureTrajectory, GetCapturedTrajectory,
         SimilarityTrajectory, TrajectoryFrames, SaveTrajectory, LoadTrajectory]
