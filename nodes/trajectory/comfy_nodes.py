"""Trajectory nodes: capture every step of any sampler, save/load trajectories, the Similarity Trajectory."""

from __future__ import annotations

import json
import logging
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
from .capture import attach_capture, find_store, latent_out
from .frames import series_from_trajectory
from .recorder import STORAGE_DTYPES, CaptureOptions
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
                     tooltip="Record steps 0, k, 2k, ... (the last step is always recorded). 1 records every step."),
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


_TRAJ_OUT_TIP = ("Per batch item and recorded step: sigma, x, x0 (+ cond/uncond x0) and the run's settings. "
                 "Feed it to Similarity Trajectory, Save Trajectory or Trajectory Frames.")


def _sample_with_capture(model, opts, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, **kw):
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
    return out, traj


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
        out, traj = _sample_with_capture(model, _options(**capture), seed, steps, cfg, sampler_name, scheduler,
                                         positive, negative, latent_image, denoise=denoise)
        return io.NodeOutput(out, traj)


class KSamplerAdvancedTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _sampler_schema(advanced=True)

    @classmethod
    def execute(cls, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                latent_image, start_at_step, end_at_step, return_with_leftover_noise, **capture) -> io.NodeOutput:
        out, traj = _sample_with_capture(
            model, _options(**capture), noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
            latent_image, denoise=1.0, disable_noise=(add_noise == "disable"), start_step=start_at_step,
            last_step=end_at_step, force_full_denoise=(return_with_leftover_noise != "enable"))
        return io.NodeOutput(out, traj)


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
        m, _store = attach_capture(model, _options(**capture), max_runs=remember_runs)
        return io.NodeOutput(m)


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
        store = find_store(model)
        if store is None:
            raise ValueError("this MODEL has no trajectory capture: connect the MODEL output of a 'Capture "
                             "Trajectory' node (the same model that feeds the sampler)")
        traj = store.find_for_latent(latent["samples"])
        if traj is None:
            raise ValueError(
                f"no sampling run through this MODEL produced this LATENT ({len(store.runs)} run(s) remembered). "
                "Connect the sampler's own LATENT output (not an upscaled, sliced or decoded copy), and make sure "
                "that sampler uses the MODEL from 'Capture Trajectory'.")
        return io.NodeOutput(traj)


def _summary_outputs(series: SimilaritySeries):
    sums = series.summaries()
    return ([s.minimum for s in sums], [s.argmin_step for s in sums], [s.d_max for s in sums],
            [s.mean_last_half for s in sums], [bool(f) for f in series.finite.tolist()], sums)


def plot_series(series: SimilaritySeries, sums) -> torch.Tensor:
    """Chart of every item's curve. In the paper layout the noise value (always the lowest) is left out, as in
    the summaries, so the drops that matter are not squashed against the axis."""
    off = 1 if (series.noise_frame and series.length > 1) else 0
    steps = series.steps[off:]
    values = [row[off:] for row in series.as_lists()]
    labels = []
    for b, s in enumerate(sums):
        flag = "" if bool(series.finite[b]) else "  NON-FINITE x0"
        labels.append(f"item {b}: min {s.minimum:.4f} @ step {s.argmin_step}, D_max {s.d_max:.4f}, "
                      f"last half {s.mean_last_half:.4f}{flag}")
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
                io.Float.Output("min", display_name="min", is_output_list=True, tooltip="Per item: lowest similarity (first value "
                                                                     "skipped in the paper layout)."),
                io.Int.Output("argmin_step", display_name="argmin_step", is_output_list=True, tooltip="Per item: the step where the lowest "
                                                                          "similarity occurs."),
                io.Float.Output("d_max", display_name="d_max", is_output_list=True, tooltip="Per item: D_max, the largest drop from a "
                                                                       "running peak (0 = never drops)."),
                io.Float.Output("mean_last_half", display_name="mean_last_half", is_output_list=True,
                                tooltip="Per item: mean similarity over the last half of the series."),
                io.Boolean.Output("finite", display_name="finite", is_output_list=True, tooltip="Per item: False if the sampler produced "
                                                                         "NaN/inf (those values are NaN)."),
                io.Image.Output("plot", display_name="plot", tooltip="A chart of every item's curve with its minimum circled."),
                io.String.Output("series_json", display_name="series_json", tooltip="The series and summaries as JSON text."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, trajectory, metric, noise_frame, vae=None, decode_batch=8) -> io.NodeOutput:
        series = series_from_trajectory(trajectory, metric, noise_frame=noise_frame, vae=vae,
                                        decode_batch=decode_batch)
        mins, argmins, dmaxs, halves, finite, sums = _summary_outputs(series)
        for b, f in enumerate(finite):
            if not f:
                log.warning("Similarity Trajectory: item %d has non-finite x0 (NaN/inf); its values are NaN", b)
        plot = plot_series(series, sums)
        payload = {"metric": metric, "noise_frame": noise_frame, "steps": series.steps,
                   "series": series.as_lists(), "summary": [s.as_dict() for s in sums], "finite": finite}
        text = json.dumps(payload, allow_nan=True)
        ui_out = {"sentinel_series": [payload]}
        try:
            ui_out.update(ui.PreviewImage(plot, cls=cls).as_dict())
        except Exception as e:  # no temp folder (unit tests); the chart still goes out as an IMAGE
            log.debug("preview not saved: %s", e)
        return io.NodeOutput(series, mins, argmins, dmaxs, halves, finite, plot, text, ui=ui_out)


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
        return io.NodeOutput(path, ui={"text": [f"saved {os.path.join(subfolder, fname)} "
                                                f"({trajectory.batch_size} item(s), {trajectory.num_steps} steps)"]})


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
        return io.NodeOutput(Trajectory.load(path))


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
                     io.Float.Output("sigmas", display_name="sigmas", is_output_list=True, tooltip="The noise level of each frame.")],
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
        return io.NodeOutput({"samples": frames}, [float(s) for s in trajectory.sigmas])


NODES = [KSamplerTrajectory, KSamplerAdvancedTrajectory, CaptureTrajectory, GetCapturedTrajectory,
         SimilarityTrajectory, TrajectoryFrames, SaveTrajectory, LoadTrajectory]
