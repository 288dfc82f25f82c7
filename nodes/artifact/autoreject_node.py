"""KSampler (Auto-Reject) (ComfyUI glue; the loop is autoreject.py)."""

from __future__ import annotations

import json
import math

import comfy.samplers
from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker

from ..common.comfy_types import Trajectory as TrajectoryType
from ..common.ui import result_ui
from ..trajectory.similarity import METRICS
from .autoreject import EarlyCheck, Judge, RelativeEarlyCheck, auto_reject
from .common_inputs import (
    CATEGORY,
    DEFAULT_RULE_METRIC,
    DMAX_TIP,
    RULE_METRIC_TIP,
    check_metrics,
    classifier_input,
    per_item,
)
from .model_store import NONE, load_classifier
from .panels import autoreject_panel
from .signals import CFG1_MESSAGE, SIGNALS, SignalUnavailable
from .tournament import single_check_step
from .tournament_run import first_check_step

EARLY_SIGNALS = ("classifier", "cfg_asd", "rank_average")
EARLY_SIGNAL_TIP = (
    "What stops a try early. classifier (default, as before): the early_classifier, a prefix classifier, stops a try "
    "when P(artifact) >= early_threshold for every item. cfg_asd: CFG-Rejection's score (" + SIGNALS["cfg_asd"].source
    + "; higher is better; free, needs cfg > 1) after check_at stops a re-try when it ranks every item below that "
    "item's best complete try so far. rank_average: the mean rank of cfg_asd and the early_classifier's P; stops a "
    "re-try only when both put it below. Accepting an image (P < tau) is always the classifier's job.")


class KSamplerAutoReject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SentinelKSamplerAutoReject",
            display_name="KSampler (Auto-Reject)",
            category=CATEGORY,
            description="KSampler that re-samples with seed+1, seed+2, ... every item whose P(artifact) is not below "
                        "tau, up to max_tries, and returns each item's best try. As it comes (classifier 'none', "
                        "rule_metric latent_cosine) it runs on any SD checkpoint with no VAE and no extra files. An "
                        "optional prefix classifier stops a doomed try after its first steps.",
            inputs=[
                io.Model.Input("model", tooltip="The model used for denoising the input latent."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the first try; try t uses seed + t."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps of every try."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, tooltip="The sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, tooltip="The scheduler."),
                io.Conditioning.Input("positive", tooltip="What to include in the image."),
                io.Conditioning.Input("negative", tooltip="What to exclude from the image."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise (a batch is judged item by item)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the schedule to run (below 1: image to image)."),
                classifier_input(),
                io.Float.Input("tau", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Accept an item when P(artifact) < tau."),
                io.Int.Input("max_tries", default=4, min=1, max=64,
                             tooltip="At most this many tries per item (the best is returned if none passes)."),
                io.Vae.Input("vae", optional=True, tooltip="Needed only when the classifier or rule_metric uses "
                                                           "pixel_ssim/dreamsim."),
                classifier_input("early_classifier",
                                 "A prefix classifier (Train Artifact Classifier with prefix_steps > 0) that stops "
                                 "a try after its first steps when every item looks doomed. 'none': no early "
                                 "rejection."),
                io.Float.Input("early_threshold", default=0.5, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="Stop a try early when the prefix P(artifact) >= this for every item."),
                io.Float.Input("dmax_threshold", default=0.0, min=0.0, max=2.0, step=0.001, optional=True,
                               tooltip=DMAX_TIP),
                io.Combo.Input("rule_metric", options=list(METRICS), default=DEFAULT_RULE_METRIC, optional=True,
                               tooltip=RULE_METRIC_TIP),
                io.Combo.Input("signal", options=list(EARLY_SIGNALS), default="classifier", optional=True,
                               tooltip=EARLY_SIGNAL_TIP),
                io.String.Input("check_at", default="0.3", optional=True,
                                tooltip="For signal cfg_asd / rank_average: the step of the early check, a fraction "
                                        "of the steps (0.3) or a step (15). With signal 'classifier' the "
                                        "early_classifier's own share of the run decides."),
            ],
            outputs=[
                io.Latent.Output("LATENT", display_name="LATENT", tooltip="Every item's best try."),
                io.Int.Output("seed_used", display_name="seed_used", is_output_list=True,
                              tooltip=per_item("The seed of the returned try (reproduce it with KSampler on the "
                                               "same batch).")),
                io.Float.Output("p_artifact", display_name="p_artifact", is_output_list=True,
                                tooltip=per_item("P(artifact) of the returned try (0..1, lower is better).")),
                io.Float.Output("tries_p", display_name="tries_p", is_output_list=True,
                                tooltip="A list (one value per item and try): P(artifact) of every try, try by try "
                                        "(items re-sampled in that try in batch order; prefix P for tries stopped "
                                        "early)."),
                TrajectoryType.Output("TRAJECTORY", display_name="TRAJECTORY",
                                      tooltip="The trajectories of the returned tries."),
                io.String.Output("report", display_name="report",
                                 tooltip="JSON: every try (seed, items, P, stopped early?) and the model "
                                         "evaluations used and saved."),
                io.Boolean.Output("all_accepted", display_name="all_accepted",
                                  tooltip="One value for the batch: True if every returned item has P < tau."),
                io.Int.Output("tries_used", display_name="tries_used",
                              tooltip="One value for the batch: how many tries (seeds) were sampled."),
            ],
        )

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                classifier, tau, max_tries, vae=None, early_classifier=NONE, early_threshold=0.5,
                dmax_threshold=0.0, rule_metric=DEFAULT_RULE_METRIC, signal="classifier",
                check_at="0.3") -> io.NodeOutput:
        clf = load_classifier(classifier)
        early_model = load_classifier(early_classifier)
        judge = Judge.for_model(clf, rule_metric, tau, dmax_threshold, vae)
        needs = [(f"the classifier {classifier}" if clf else "rule_metric", judge.metric)]
        early = None
        if signal not in EARLY_SIGNALS:
            raise ValueError(f"KSampler (Auto-Reject): unknown signal {signal!r}; choose one of "
                             f"{', '.join(EARLY_SIGNALS)}")
        if signal in ("cfg_asd", "rank_average"):
            if math.isclose(float(cfg), 1.0):
                raise SignalUnavailable("KSampler (Auto-Reject): " + CFG1_MESSAGE)
            early_judge = None
            if signal == "rank_average":
                if early_model is None or not early_model.trained_for.is_prefix:
                    raise ValueError("KSampler (Auto-Reject): signal rank_average needs a prefix classifier in "
                                     "early_classifier (Train Artifact Classifier with prefix_steps > 0), or use "
                                     "signal cfg_asd, which needs none")
                early_judge = Judge.for_model(early_model, threshold=early_threshold, vae=vae)
                needs.append((f"the early classifier {early_classifier}", early_judge.metric))
            k = single_check_step(check_at, steps)
            if early_judge is not None:
                k = max(k, first_check_step(early_judge, steps))
            early = RelativeEarlyCheck(signal, k, early_judge)
        elif early_model is not None:
            early = EarlyCheck(Judge.for_model(early_model, threshold=early_threshold, vae=vae), early_threshold)
            needs.append((f"the early classifier {early_classifier}", early.judge.metric))
        check_metrics("KSampler (Auto-Reject)", needs, vae)  # everything missing, named at once, before sampling
        res = auto_reject(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, judge,
                          tau, max_tries, denoise=denoise, early=early)
        report = res.report()
        traj = res.trajectory if res.trajectory is not None else ExecutionBlocker(res.trajectory_error)
        tries_per_item = [sum(1 for t in res.tries if i in t.items) for i in range(len(res.p))]
        notes = sorted({n for t in res.tries for n in t.notes})
        p = autoreject_panel(res.seeds, res.p, res.accepted, tries_per_item, len(res.tries), tau, res.image_evals,
                             res.image_evals_without_early, notes)
        return io.NodeOutput(res.latent, res.seeds, res.p, res.tries_p, traj, json.dumps(report),
                             bool(all(res.accepted)), len(res.tries), ui=result_ui(p))
