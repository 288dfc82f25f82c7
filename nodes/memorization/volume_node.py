"""Volume Growth Rate node: ease of reproduction of images (Hasegawa & Yasuda 2025)."""

from __future__ import annotations

from comfy_api.latest import io

from ..common.ui import col, panel, result_ui
from . import volume_probe
from .node_common import CATEGORY
from .node_common import fmt as _fmt
from .volume import METHODS as VOLUME_METHODS
from .volume import MODES as VOLUME_MODES

HIGHER = "higher = easier to reproduce"
LIST = "List, one value per image (a node connected here runs once per image). "

class VolumeGrowthRate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelVolumeGrowthRate",
            display_name="Volume Growth Rate",
            category=CATEGORY,
            description="Ease of reproduction of each image (Hasegawa & Yasuda 2025): how much the probability-flow "
                        "ODE that maps the image's latent towards noise (DDIM inversion from low noise) stretches its "
                        "neighbourhood. Higher = easier for the model to reproduce (memorized images score higher). "
                        "A ranking score within one model and image size.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (eps or v, discrete schedule)."),
                io.Vae.Input("vae", tooltip="The VAE that encodes the images into the model's latent space."),
                io.Image.Input("image", tooltip="The images to score (a batch gives one score per image)."),
                io.Conditioning.Input("conditioning",
                                      tooltip="Prompt conditioning of the ODE. The paper's setting is unconditional: "
                                              "connect a CLIPTextEncode with EMPTY text (no CFG is used)."),
                io.Combo.Input("mode", options=list(VOLUME_MODES), default="directions",
                               tooltip="directions: mean log-stretch log(||J u||/||u||) over K random unit directions. "
                                       "single_axis: along one coordinate axis (the paper's 'single axis, one step'). "
                                       "volume: log|det J| by Liouville's formula with Hutchinson's trace (K "
                                       "Rademacher probes per step), in nats."),
                io.Int.Input("directions", default=4, min=1, max=256,
                             tooltip="K: random directions (directions mode) or Hutchinson probes (volume mode). "
                                     "Ignored by single_axis."),
                io.Int.Input("steps", default=1, min=1, max=49,
                             tooltip="Inversion steps of the DDIM-50 grid from the first timestep (1 = one step, the "
                                     "paper's finding; use several for the volume mode)."),
                io.Combo.Input("method", options=list(VOLUME_METHODS), default="jvp",
                               tooltip="jvp: forward-mode AD in float32 (exact; the attention runs a math kernel "
                                       "during these passes, whatever your attention backend). finite_difference: "
                                       "central differences evaluated in float64 (for patches without a forward "
                                       "derivative; slower, much slower on consumer GPUs)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the directions / probes / axis (the same for every image), part of the "
                                     "score's definition: fixed, it does not change between runs."),
                io.Int.Input("start_timestep", default=1, min=0, max=998, optional=True,
                             tooltip="Timestep the clean latent is placed at (1 = the last DDIM-50 grid point)."),
                io.Int.Input("timestep_stride", default=20, min=1, max=500, optional=True,
                             tooltip="Timesteps per inversion step (20 = the DDIM-50 grid)."),
            ],
            outputs=[
                io.Float.Output("SCORE", display_name="log_growth", is_output_list=True,
                                tooltip=LIST + "The mean log-stretch (directions/single_axis; 0 = no stretch, < 0 "
                                               "contracts) or log-volume (volume), in nats. Higher = easier to "
                                               "reproduce; a ranking within one model and image size."),
                io.String.Output("REPORT", display_name="report", tooltip="A readable summary."),
                io.Float.Output("MAX", display_name="max",
                                tooltip="One value for the batch: the highest log_growth."),
                io.Float.Output("MEAN", display_name="mean",
                                tooltip="One value for the batch: the mean log_growth."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, vae, image, conditioning, mode="directions", directions=4, steps=1, method="jvp", seed=0,
                start_timestep=1, timestep_stride=20) -> io.NodeOutput:
        settings = volume_probe.VolumeSettings(mode=mode, directions=int(directions), steps=int(steps),
                                               method=method, seed=int(seed), start_timestep=int(start_timestep),
                                               timestep_stride=int(timestep_stride))
        res = volume_probe.volume_growth(model, vae, image, conditioning, settings)
        vals = [float(v) for v in res.score]
        unit = "log|det J| (nats)" if mode == "volume" else "mean log ||J u||/||u||"
        lines = [f"Volume growth rate ({mode}, {method}): {unit} over timesteps {res.timesteps} "
                 f"(sigma {_fmt(res.sigmas[0], 4)} -> {_fmt(res.sigmas[-1], 4)}), latent dim {res.latent_dim}"
                 + (f", axis {res.axis_index}" if res.axis_index is not None else "")
                 + (f", {directions} direction(s)" if mode != "single_axis" else "")]
        for i, v in enumerate(vals):
            extra = f" ({_fmt(v / res.latent_dim, 5)} per dimension)" if mode == "volume" else ""
            lines.append(f"image {i}: {_fmt(v)}{extra}")
        lines.append(f"U-Net calls: {res.unet_calls}; U-Net computed in {res.compute_dtype}")
        report = "\n".join(lines)
        label = "log|det J|" if mode == "volume" else "log-stretch"
        rng = ("in nats; its size grows with the latent dimension" if mode == "volume" else
               "mean log ||J u||/||u|| in nats: 0 = no stretch, < 0 contracts")
        best = max(range(len(vals)), key=lambda i: vals[i]) if vals else None
        shown = panel("Volume Growth Rate", columns=[col("image"), col("log_growth", label, direction=HIGHER,
                                                                       fmt=".4f")],
                      rows=[[i, v] for i, v in enumerate(vals)],
                      summary=f"{mode}, {method}, timesteps {res.timesteps[0]}->{res.timesteps[-1]}; {HIGHER}",
                      highlight=[best] if best is not None and len(vals) > 1 else [],
                      notes=[rng, "a ranking within one model and image size, not an absolute scale",
                             f"U-Net calls: {res.unet_calls}, computed in {res.compute_dtype}"])
        mx = max(vals) if vals else float("nan")
        mean = sum(vals) / len(vals) if vals else float("nan")
        return io.NodeOutput(vals, report, mx, mean, ui=result_ui(shown))
