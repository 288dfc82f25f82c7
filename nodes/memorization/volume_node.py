"""Volume Growth Rate node: ease of reproduction of images (Hasegawa & Yasuda 2025)."""

from __future__ import annotations

from comfy_api.latest import io, ui

from . import volume_probe
from .node_common import CATEGORY
from .node_common import fmt as _fmt
from .volume import METHODS as VOLUME_METHODS
from .volume import MODES as VOLUME_MODES


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
                               tooltip="jvp: forward-mode AD (exact; attention on the math kernel). "
                                       "finite_difference: central differences in fp32 (works with any attention)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the directions / probes / axis (the same for every image)."),
                io.Int.Input("start_timestep", default=1, min=0, max=998, optional=True,
                             tooltip="Timestep the clean latent is placed at (1 = the last DDIM-50 grid point)."),
                io.Int.Input("timestep_stride", default=20, min=1, max=500, optional=True,
                             tooltip="Timesteps per inversion step (20 = the DDIM-50 grid)."),
            ],
            outputs=[
                io.Float.Output("SCORE", display_name="log_growth", is_output_list=True,
                                tooltip="Per image: the mean log-stretch (directions/single_axis) or log-volume "
                                        "(volume), in nats. Higher = easier to reproduce."),
                io.String.Output("REPORT", display_name="report", tooltip="A readable summary."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, vae, image, conditioning, mode="directions", directions=4, steps=1, method="jvp", seed=0,
                start_timestep=1, timestep_stride=20) -> io.NodeOutput:
        settings = volume_probe.VolumeSettings(mode=mode, directions=int(directions), steps=int(steps), method=method,
                                        seed=int(seed), start_timestep=int(start_timestep),
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
        lines.append(f"U-Net calls: {res.unet_calls}")
        report = "\n".join(lines)
        return io.NodeOutput(vals, report, ui=ui.PreviewText(report))
