"""The inputs every DiffSim node shares (model, settings) and their conversion to pipeline Settings / an
extractor. Glue (imports comfy_api)."""

from __future__ import annotations

from comfy_api.latest import io

from .blocks import BLOCK_PRESETS, CUSTOM_BLOCK
from .images import RESIZE_MODES
from .pipeline import (
    DEFAULT_PROMPT,
    DEFAULT_SEED,
    LATENT_MODES,
    MODES,
    NOISE_MODES,
    TEXT_MODES,
    DiffSimExtractor,
    Settings,
)
from .timesteps import CONVENTIONS, CUSTOM, TIMESTEP_PRESETS, preset_t

# An IP-Adapter Plus read by 'Load IP-Adapter Plus (DiffSim)'. Value: nodes.diffsim.ip_adapter.IPAdapterPlus
DiffSimIPAdapter = io.Custom("DIFFSIM_IPADAPTER")


def model_inputs() -> list:
    return [
        io.Model.Input("model", tooltip="An SD1.x/SD2.x/SDXL MODEL (LoRAs and other patches are honoured). It is "
                                        "cloned, never modified. DiffSim was published on SD1.5."),
        io.Vae.Input("vae", tooltip="The checkpoint's VAE: the images are encoded to latents with it."),
        io.Clip.Input("clip", tooltip="The checkpoint's CLIP: encodes the prompt and the empty unconditional prompt."),
    ]


def settings_inputs() -> list:
    return [
        io.Combo.Input("mode", options=list(MODES), default=MODES[0],
                       tooltip="DiffSim-S: the U-Net's self-attention (the paper's main metric). DiffSim-C: the "
                               "IP-Adapter Plus image cross-attention (needs ip_adapter and clip_vision)."),
        io.Combo.Input("block", options=[*BLOCK_PRESETS, CUSTOM_BLOCK], default="U_0",
                       tooltip="Attention block, named as in the paper: U_0/U_1/U_2 = last attention of the 1st/2nd/"
                               "3rd up level (U_0 = output 5 on SD1.5, output 2 transformer 9 on SDXL), D_0.. the "
                               "down levels, mid the middle block. 'custom' reads custom_block."),
        io.Combo.Input("timestep", options=[*TIMESTEP_PRESETS, CUSTOM], default="style (t=900)",
                       tooltip="The paper's t (a denoising-step index: high t = little noise). style 900, instance/IP "
                               "750, CUTE 600, NIGHTS 500. Low noise and shallow blocks compare style; more noise "
                               "compares content."),
        io.Int.Input("t", default=900, min=1, max=1000,
                     tooltip="The paper's t when timestep is 'custom (use t)'; noise level = 1001 - t on SD1.x "
                             "(the released PNDM indexing), 1000 - t on SDXL and other models."),
        io.String.Input("prompt", default=DEFAULT_PROMPT,
                        tooltip="The text condition of the pass (the paper uses 'High quality image'; NIGHTS 'An "
                                "image of a <category>', CUTE 'The photo of a <class>')."),
        io.Combo.Input("text", options=list(TEXT_MODES), default=TEXT_MODES[0],
                       tooltip="prompt + empty uncond: the U-Net batch [uncond '', cond prompt] as in the paper (CFG "
                               "7.5), both halves enter the score. unconditional only: the empty prompt alone."),
        io.Int.Input("seed", default=DEFAULT_SEED, min=0, max=0x7FFFFFFFFFFFFFFF, control_after_generate=False,
                     tooltip="Seed of the noise and of the VAE posterior sample: part of the measurement's "
                             "definition (the released scripts use 2334), so it stays fixed between runs (no "
                             "randomize control). Each image's draws depend on the seed and the image only, so scores "
                             "are reproducible and order-independent."),
        io.Int.Input("resolution", default=512, min=64, max=4096, step=64,
                     tooltip="Images are brought to resolution x resolution pixels before encoding (paper: 512)."),
        io.Combo.Input("resize", options=list(RESIZE_MODES), default=RESIZE_MODES[0],
                       tooltip="square: Lanczos resize to a square, stretching (the paper). crop: resize the short "
                               "side, then centre-crop (keeps the aspect ratio, loses the borders)."),
        io.Combo.Input("noise", options=list(NOISE_MODES), default=NOISE_MODES[0], optional=True,
                       tooltip="independent per image: each image gets its own seeded noise (the paper). shared: every "
                               "image gets the same noise (removes noise from the comparison)."),
        io.Combo.Input("latent", options=list(LATENT_MODES), default=LATENT_MODES[0], optional=True,
                       tooltip="posterior sample: a seeded sample of the VAE posterior (the paper). posterior mean: "
                               "the deterministic mean (what VAEEncode returns)."),
        io.String.Input("custom_block", default="output 5 0", optional=True,
                        tooltip="Used when block is 'custom': '<input|middle|output> <number> [<transformer index>]' "
                                "in ComfyUI's numbering, e.g. 'output 5 0'. Without an index the last one is used."),
        io.Combo.Input("t_convention", options=list(CONVENTIONS), default="auto", optional=True,
                       tooltip="How t becomes a noise level: auto follows the released code (SD1.x PNDM: 1001 - t; "
                               "SDXL Euler and other models: 1000 - t)."),
        DiffSimIPAdapter.Input("ip_adapter", optional=True,
                               tooltip="DiffSim-C only: an IP-Adapter Plus from 'Load IP-Adapter Plus (DiffSim)'."),
        io.ClipVision.Input("clip_vision", optional=True,
                            tooltip="DiffSim-C only: the image encoder of the IP-Adapter (CLIP ViT-H/14 for the Plus "
                                    "models), from CLIPVisionLoader."),
        io.Float.Input("ip_weight", default=0.5, min=0.0, max=2.0, step=0.05, optional=True,
                       tooltip="DiffSim-C only: IP-Adapter weight applied in every cross-attention layer during the "
                               "pass (0.5 as released)."),
        io.Int.Input("batch_size", default=4, min=1, max=256, optional=True,
                     tooltip="Images per U-Net call (each image is one pass, two rows with the uncond half). Lower "
                             "it if you run out of memory."),
        io.Boolean.Input("use_cache", default=True, optional=True,
                         tooltip="Reuse each image's attention features between runs and nodes with the same model "
                                 "and settings (bounded, in memory). Off: recompute everything."),
    ]


def settings_from(mode, block, timestep, t, prompt, text, seed, resolution, resize, noise=NOISE_MODES[0],
              latent=LATENT_MODES[0], custom_block="output 5 0", t_convention="auto", ip_weight=0.5) -> Settings:
    return Settings(mode=Settings.parse_mode(mode), block=custom_block if block == CUSTOM_BLOCK else block,
                    t=preset_t(timestep, t), t_convention=t_convention, prompt=prompt,
                    cfg_pair=(text == TEXT_MODES[0]), seed=int(seed), shared_noise=(noise == NOISE_MODES[1]),
                    posterior_sample=(latent == LATENT_MODES[0]), resolution=int(resolution), resize=resize,
                    ip_weight=float(ip_weight))


def make_extractor(model, vae, clip, bar, ip_adapter=None, clip_vision=None, batch_size=4,
               use_cache=True, **settings) -> DiffSimExtractor:
    from .pipeline import CACHE

    s = settings_from(**settings)
    return DiffSimExtractor(model, vae, clip, s, ip_adapter=ip_adapter, clip_vision=clip_vision,
                            cache=CACHE if use_cache else None, batch_size=batch_size,
                            on_pass=(bar.on_pass if bar is not None else None))
