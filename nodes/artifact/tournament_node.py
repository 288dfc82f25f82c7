"""Seed Tournament (ComfyUI glue; the sampling is tournament_run.py, the plan tournament.py, the signals
signals.py)."""

from __future__ import annotations

import json

import comfy.samplers
from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker

from ..common.comfy_types import Trajectory as TrajectoryType
from ..common.ui import json_safe, result_ui
from .autoreject import Judge
from .common_inputs import CATEGORY, check_metrics, classifier_input, per_item
from .model_store import NONE, load_classifier
from .signals import SIGNALS
from .tournament_panel import tournament_panel
from .tournament_run import seed_tournament

DEFAULT_CHECK_AT = "0.1,0.3,0.5"
DEFAULT_CANDIDATES = 8
DEFAULT_KEEP = 1


def signal_tooltip() -> str:
    parts = [f"{name}: {s.label} ({s.direction}); cost: {s.cost}; source: {s.source}." for name, s in SIGNALS.items()]
    return ("What ranks the candidates at each check. " + " ".join(parts) + " cfg_asd needs cfg > 1 and no file; "
            "classifier and rank_average need a prefix classifier in 'classifier'.")


class SeedTournament(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelSeedTournament",
            display_name="Seed Tournament",
            category=CATEGORY,
            description="Samples `candidates` seeds (seed, seed+1, ...) as one batch, ranks the partial runs at the "
                        "check steps and finishes only the best `keep`: N K + k (S - K) model evaluations instead "
                        "of N S. A finished seed is what a plain KSampler gives for that seed. Several check steps "
                        "halve the field at each (successive halving).",
            inputs=[
                io.Model.Input("model", tooltip="The model used for denoising the input latent."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of candidate 0; candidate j uses seed + j (reproduce any of them with a "
                                     "plain KSampler at that seed)."),
                io.Int.Input("steps", default=20, min=2, max=10000, tooltip="Sampling steps of every candidate."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (the cfg_asd signal needs cfg > 1)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, tooltip="The sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, tooltip="The scheduler."),
                io.Conditioning.Input("positive", tooltip="What to include in the image."),
                io.Conditioning.Input("negative", tooltip="What to exclude from the image."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise. Each item of a batch gets its own "
                                                        "tournament (keep results per item)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the schedule to run (below 1: image to image)."),
                io.Int.Input("candidates", default=DEFAULT_CANDIDATES, min=2, max=64,
                             tooltip="N: how many seeds start (one batch; memory as a batch of N)."),
                io.Int.Input("keep", default=DEFAULT_KEEP, min=1, max=63,
                             tooltip="k: how many finish (best first). Must be below candidates."),
                io.String.Input("check_at", default=DEFAULT_CHECK_AT,
                                tooltip="When to rank: a fraction of the steps (0.3) or a step (15). Several, "
                                        "comma-separated, halve the field at each check (never below keep) and the "
                                        "last leaves keep; 'K:n' sets the survivors (5:4,15:2,25:1). Default "
                                        f"{DEFAULT_CHECK_AT}: 8 -> 4 -> 2 -> 1, 31 % of best-of-8's cost."),
                io.Combo.Input("signal", options=list(SIGNALS), default="cfg_asd", tooltip=signal_tooltip()),
                classifier_input("classifier", "A prefix classifier (Train Artifact Classifier with prefix_steps > 0) "
                                               "for the 'classifier' and 'rank_average' signals; its share of the "
                                               "run is the earliest check step it allows. Unused by cfg_asd."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Decodes the rejected candidates' previews to rejected_images; needed by a "
                                     "classifier on pixel_ssim/dreamsim series."),
                io.Boolean.Input("batch_candidates", default=False, optional=True,
                                 tooltip="Evaluate the candidates as one batch (faster on a GPU). Off: each candidate "
                                         "on its own, so a finished seed is bit-identical to a plain KSampler; on: "
                                         "equal up to float rounding."),
            ],
            outputs=[
                io.Latent.Output("LATENT", display_name="LATENT",
                                 tooltip="The finished candidates, best first (keep per input item)."),
                io.Int.Output("seeds", display_name="seeds", is_output_list=True,
                              tooltip=per_item("The seed of every finished candidate (a plain KSampler at this seed "
                                               "gives the same latent).")),
                io.Float.Output("scores", display_name="scores", is_output_list=True,
                                tooltip=per_item("The signal at the last check, per finished candidate (cfg_asd: "
                                                 "higher is better; classifier: P(artifact), lower is better; "
                                                 "rank_average: mean rank, lower is better).")),
                io.Latent.Output("rejected_x0", display_name="rejected_x0",
                                 tooltip="The rejected candidates' predicted images (x0) at the check where they "
                                         "lost (decode with a VAE to look at them)."),
                io.Int.Output("rejected_seeds", display_name="rejected_seeds", is_output_list=True,
                              tooltip="A list (one value per rejected candidate, in rejected_x0's order): its seed."),
                io.Image.Output("rejected_images", display_name="rejected_images",
                                tooltip="rejected_x0 decoded (needs the vae input)."),
                TrajectoryType.Output("TRAJECTORY", display_name="TRAJECTORY",
                                      tooltip="The finished candidates' trajectories."),
                io.String.Output("report", display_name="report",
                                 tooltip="JSON: every candidate (seed, scores at each check, step where it lost), "
                                         "the model evaluations used, saved and the cost model."),
                io.Int.Output("n_kept", display_name="n_kept", tooltip="One value: how many finished."),
                io.Int.Output("best_seed", display_name="best_seed",
                              tooltip="One value: the seed of the best finished candidate (of the first item)."),
                io.Float.Output("best_score", display_name="best_score",
                                tooltip="One value: its signal at the last check."),
                io.Int.Output("model_evaluations", display_name="model_evaluations",
                              tooltip="One value: model evaluations used, per image (cond + uncond count once)."),
                io.Float.Output("saved_ratio", display_name="saved_ratio",
                                tooltip="One value: 1 - model_evaluations / (candidates x a full run's)."),
            ],
        )

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                candidates, keep, check_at, signal, classifier=NONE, vae=None,
                batch_candidates=False) -> io.NodeOutput:
        info = SIGNALS.get(signal)
        if info is None:
            raise ValueError(f"unknown signal {signal!r}; choose one of {', '.join(SIGNALS)}")
        judge = None
        if info.needs_classifier:
            clf = load_classifier(classifier)
            if clf is None:
                raise ValueError(f"Seed Tournament: the {signal!r} signal needs a prefix classifier in 'classifier' "
                                 "(Train Artifact Classifier with prefix_steps > 0), or pick the cfg_asd signal")
            judge = Judge.for_model(clf, vae=vae)
            check_metrics("Seed Tournament", [(f"the classifier {classifier}", judge.metric)], vae)
        res = seed_tournament(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                              denoise, candidates, keep, check_at, signal, judge=judge,
                              batch_candidates=bool(batch_candidates))
        images = ExecutionBlocker("Seed Tournament: rejected_images needs the 'vae' input (or decode rejected_x0 "
                                  "with a VAE Decode node)")
        if vae is not None:
            images = vae.decode(res.rejected_latent["samples"])
            if images.ndim == 5 and images.shape[1] == 1:
                images = images[:, 0]
        traj = res.trajectory if res.trajectory is not None else ExecutionBlocker(res.trajectory_error)
        best = res.kept[0]
        p = tournament_panel(res)
        return io.NodeOutput(res.latent, [c.seed for c in res.kept], [float(c.score) for c in res.kept],
                             res.rejected_latent, [c.seed for c in res.rejected], images, traj,
                             json.dumps(json_safe(res.report())), len(res.kept), best.seed, float(best.score), res.model_evals,
                             float(res.saved_ratio), ui=result_ui(p))
