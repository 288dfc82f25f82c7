"""ComfyUI glue of the Seed Tournament: N candidate seeds as one sampling call, checks that stop evaluating the
losers, the survivors finished in the same call.

Candidates: candidate j of input latent item i starts from the noise a plain KSampler gives item i of this LATENT
with seed + j (``comfy.sample.prepare_noise`` of the whole LATENT at seed + j, row i; with a batch of one latent,
candidate j IS a plain KSampler run with seed + j). Every item of the input LATENT gets its own tournament (one
sampling call each), so a batch of B latents returns B x keep latents.

One sampling call, the whole schedule: the candidates of one item run as one batch through the sampler the user
picked, with its own sigmas (``comfy.samplers.KSampler(...).sigmas``: scheduler, denoise, discarded penultimate
sigma, exactly what KSampler uses). At a check step (a step listener on the trajectory capture) the signal ranks
the candidates still running; from then on the losers are no longer evaluated: a CALC_COND_BATCH wrapper runs the
model on the survivors only and hands back, for each loser, its last prediction (x0 frozen at the check). The
sampler's own state (multistep history of dpmpp_2m / uni_pc / lms / deis / ipndm, ...) therefore carries on
untouched for the survivors: nothing is restarted, so a finished candidate equals the plain run.

What is exact:

- Model evaluations: with ``batch_candidates`` off (the default) every candidate is evaluated on its own (cond
  and uncond as one batch of 2, as in a plain batch-1 KSampler), so a finished candidate is bit-identical to the
  plain KSampler run with its seed (for a batch of one latent). With ``batch_candidates`` on, the candidates are
  evaluated as one batch (faster on a GPU) and agree up to the float rounding of batched convolutions (~1e-4).
- Per-step noise (ancestral and SDE samplers): the sampler gets a noise source per candidate, built like the one a
  plain run with that candidate's seed builds (ComfyUI's ``default_noise_sampler`` / ``BrownianTreeNoiseSampler``
  with the seed, the plain run's shape and the schedule's sigma range), so euler_ancestral, dpmpp_2s_ancestral,
  dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde, er_sde, sa_solver, lcm, ddpm, ... are exact too.
- Equal up to float rounding only: sa_solver / sa_solver_pece (their tensordot over the batch), ddim with an
  inpainting mask (ComfyUI draws its inpainting noise for the whole batch), models whose conditioning uses the seed
  (noise augmentation of unCLIP / SD x4 upscaler), and a LATENT of several items (each item is exact against a
  plain batch-1 run with that item's noise, not against the batched run). The report says which applies.
- Refused: dpm_fast and dpm_adaptive take their own steps (their callbacks do not follow the schedule), so there is
  no check step to place.

Model evaluations are counted per image (one per candidate per model evaluation; cond + uncond count once).
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..common.comfy_glue import Progress, check_interrupt
from ..trajectory.capture import attach_capture, latent_out
from ..trajectory.recorder import CaptureOptions
from ..trajectory.trajectory import Trajectory
from .autoreject import Judge, _fix_empty_latent_channels, _preview_fn
from .batch_filter import concat_trajectories
from .signals import (
    CFG1_MESSAGE,
    HIGHER,
    LOWER,
    SIGNALS,
    SignalUnavailable,
    accumulated_score_difference,
    cfg_score_differences,
    keep_best,
    rank_average,
)
from .tournament import Check, parse_check_at, planned_cost, schedule_text

log = logging.getLogger("diffusion_sentinel")
WRAPPER_KEY = "diffusion_sentinel.tournament"

BROWNIAN_CPU = {"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"}
BROWNIAN_GPU = {n + "_gpu" for n in BROWNIAN_CPU}
# Samplers whose callbacks do not follow the schedule (they take their own steps), so no check step can be placed.
UNSUPPORTED = ("dpm_fast", "dpm_adaptive")
# Samplers whose own arithmetic mixes the batch rows' float rounding (a tensordot over the batch): equal up to ~1e-6.
ROUNDING = {
    "sa_solver": "sa_solver combines its history with a tensordot over the whole batch, whose float rounding depends "
                 "on the batch size: finished seeds equal a plain KSampler up to ~1e-6 (relative), not bit for bit",
}
ROUNDING["sa_solver_pece"] = ROUNDING["sa_solver"].replace("sa_solver ", "sa_solver_pece ", 1)


def calc_cond_batch_type() -> str:
    try:
        import comfy.patcher_extension as pe

        return getattr(pe.WrappersMP, "CALC_COND_BATCH", "calc_cond_batch")
    except ImportError:
        return "calc_cond_batch"


def noise_kind(sampler_name: str, fn) -> str:
    """How a plain run of this sampler draws per-step noise: "none" (deterministic), "default" (ComfyUI's
    default_noise_sampler seeded with the run's seed), "brownian_cpu" / "brownian_gpu" (BrownianTreeNoiseSampler)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "none"
    if "noise_sampler" not in params:
        return "none"
    if sampler_name in BROWNIAN_CPU:
        return "brownian_cpu"
    if sampler_name in BROWNIAN_GPU:
        return "brownian_gpu"
    return "default"


class SeededRowNoise:
    """Per-step noise for a batch whose row j is candidate j: row j gets row ``item`` of what a plain run with
    ``seeds[j]`` and a batch of ``batch`` latents draws at that step (ComfyUI's own noise samplers)."""

    def __init__(self, kind: str, x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int], item: int, batch: int):
        import comfy.k_diffusion.sampling as kds

        like = x.new_zeros((int(batch), *x.shape[1:]))  # the plain run's x: its shape, dtype and device
        self.item = int(item)
        if kind == "default":
            self.inner = [kds.default_noise_sampler(like, seed=int(s)) for s in seeds]
        elif kind in ("brownian_cpu", "brownian_gpu"):
            sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()  # the range a plain run uses
            self.inner = [kds.BrownianTreeNoiseSampler(like, sigma_min, sigma_max, seed=int(s),
                                                       cpu=kind == "brownian_cpu") for s in seeds]
        else:
            raise ValueError(f"unknown noise kind {kind!r}")

    def __call__(self, sigma, sigma_next):
        return torch.stack([ns(sigma, sigma_next)[self.item] for ns in self.inner])


def candidate_sampler(sampler_name: str, seeds: list[int], item: int, batch: int):
    """(SAMPLER, noise kind): the named sampler, with a per-candidate noise source when it draws noise per step."""
    base = comfy.samplers.sampler_object(sampler_name)
    fn = getattr(base, "sampler_function", None)
    kind = noise_kind(sampler_name, fn) if fn is not None else "none"
    if kind == "none":
        return base, kind

    def with_seeded_noise(model, x, sigmas, *args, **kwargs):
        if kwargs.get("noise_sampler") is None:
            kwargs["noise_sampler"] = SeededRowNoise(kind, x, sigmas, seeds, item, batch)
        return fn(model, x, sigmas, *args, **kwargs)

    return comfy.samplers.KSAMPLER(with_seeded_noise, dict(base.extra_options), dict(base.inpaint_options)), kind


class Field:
    """Which candidates are still evaluated, and the CALC_COND_BATCH wrapper that evaluates only those.

    A loser's rows of every model output are its x0 frozen at the check where it lost (its cond and uncond
    predictions then agree, so CFG returns that x0 unchanged): the sampler keeps running its arithmetic on it, but
    no model evaluation is spent on it."""

    def __init__(self, n: int, row_by_row: bool):
        self.n = int(n)
        self.active = list(range(self.n))
        self.row_by_row = bool(row_by_row)
        self.frozen: torch.Tensor | None = None
        self.row_evals = 0
        self.foreign_calls = 0

    def reject(self, rows: list[int], x0: torch.Tensor) -> None:
        if not rows:
            return
        if self.frozen is None:
            self.frozen = x0.detach().clone()
        else:
            idx = torch.tensor(rows, device=x0.device, dtype=torch.long)
            self.frozen[idx] = x0.detach()[idx].to(self.frozen.dtype)
        gone = set(rows)
        self.active = [r for r in self.active if r not in gone]

    def calc_cond_batch(self, executor, *args, **kwargs):
        names = ("model", "conds", "x_in", "timestep", "model_options")
        a = dict(zip(names, args))
        a.update({k: v for k, v in kwargs.items() if k in names})
        x_in, timestep = a.get("x_in"), a.get("timestep")
        if not isinstance(x_in, torch.Tensor) or x_in.shape[0] != self.n:
            self.foreign_calls += 1  # not this tournament's batch (e.g. a context window): leave it alone
            return executor(*args, **kwargs)
        rows = list(self.active)
        self.row_evals += len(rows)
        if not self.row_by_row and len(rows) == self.n:
            return executor(*args, **kwargs)
        per_row_t = isinstance(timestep, torch.Tensor) and timestep.ndim >= 1 and timestep.shape[0] == self.n

        def run(sl):
            t = timestep[sl] if per_row_t else timestep
            return executor(a["model"], a["conds"], x_in[sl], t, a["model_options"])

        if self.row_by_row:
            parts = [run(slice(r, r + 1)) for r in rows]
            outs = [torch.cat([p[i] for p in parts], dim=0) for i in range(len(parts[0]))]
        else:
            idx = torch.tensor(rows, device=x_in.device, dtype=torch.long)
            outs = list(run(idx))
        if len(rows) == self.n and rows == list(range(self.n)):
            return outs
        idx = torch.tensor(rows, device=x_in.device, dtype=torch.long)
        full = []
        for o in outs:
            base = self.frozen.to(device=o.device, dtype=o.dtype).clone() if self.frozen is not None \
                else torch.zeros((self.n, *o.shape[1:]), device=o.device, dtype=o.dtype)
            base[idx] = o
            full.append(base)
        return full


@dataclass
class CandidateRecord:
    item: int
    candidate: int
    seed: int
    kept: bool = False
    rank: int | None = None            # 1 = best among the kept, in output order
    out_step: int | None = None        # the check step where it lost (None: finished)
    score: float = float("nan")         # the signal at the last check it took part in
    scores: dict = field(default_factory=dict)  # step -> signal value
    components: dict = field(default_factory=dict)  # step -> {cfg_asd, p_artifact}
    model_evals: int = 0
    preview: torch.Tensor | None = None  # x0 at its last recorded step before it lost (model space, CPU)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "preview"}
        d["scores"] = {str(k): v for k, v in self.scores.items()}
        d["components"] = {str(k): v for k, v in self.components.items()}
        return d


@dataclass
class TournamentResult:
    latent: dict
    kept: list[CandidateRecord]
    rejected: list[CandidateRecord]
    rejected_latent: dict
    trajectory: Trajectory | None
    trajectory_error: str
    checks: list[Check]
    steps: int
    candidates: int
    keep: int
    signal: str
    model_evals: int
    model_evals_plain: int
    cost_model: float
    evals_per_run: list[int]
    noise: str
    exact: bool
    notes: list[str]
    candidates_all: list[CandidateRecord]

    @property
    def saved_ratio(self) -> float:
        return 1.0 - self.model_evals / self.model_evals_plain if self.model_evals_plain else 0.0

    def report(self) -> dict[str, Any]:
        info = SIGNALS[self.signal]
        return {
            "signal": self.signal, "direction": info.direction, "signal_source": info.source,
            "candidates": self.candidates, "keep": self.keep, "steps": self.steps,
            "checks": [c.as_dict() for c in self.checks], "schedule": schedule_text(self.checks),
            "kept": [c.as_dict() for c in self.kept], "rejected": [c.as_dict() for c in self.rejected],
            "model_evaluations": self.model_evals,
            "model_evaluations_all_to_the_end": self.model_evals_plain,
            "saved_ratio": self.saved_ratio,
            "cost_model_one_evaluation_per_step": self.cost_model,
            "model_evaluations_per_full_run": self.evals_per_run,
            "per_step_noise": self.noise, "bit_identical_to_plain_ksampler": self.exact, "notes": self.notes,
        }


def _signal_values(signal: str, snap: Trajectory, rows: list[int], judge: Judge | None, steps: int) -> dict:
    """{"value": [...], "direction": ..., "cfg_asd": [...]?, "p_artifact": [...]?} for the given rows."""
    out: dict[str, Any] = {}
    info = SIGNALS[signal]
    if info.needs_cfg:
        if snap.x0_cond is None or snap.x0_uncond is None:
            raise SignalUnavailable(CFG1_MESSAGE + " (this run recorded no unconditional prediction: "
                                    f"{', '.join(snap.meta.get('flags', [])) or 'cfg 1?'})")
        idx = torch.tensor(rows, dtype=torch.long)
        g = cfg_score_differences(snap.x0_cond.index_select(0, idx), snap.x0_uncond.index_select(0, idx),
                                  snap.sigmas)
        out["cfg_asd"] = [float(v) for v in accumulated_score_difference(g)]
    if info.needs_classifier:
        sc = judge.score(snap.select(rows), run_length=judge.series_length(steps))
        out["p_artifact"] = [float(v) for v in sc.p]
        out["notes"] = list(sc.notes)
    if signal == "cfg_asd":
        out["value"], out["direction"] = out["cfg_asd"], HIGHER
    elif signal == "classifier":
        out["value"], out["direction"] = out["p_artifact"], LOWER
    else:
        out["value"] = [float(v) for v in rank_average((out["cfg_asd"], HIGHER), (out["p_artifact"], LOWER))]
        out["direction"] = LOWER
    return out


def first_check_step(judge: Judge | None, steps: int) -> int:
    """The first step a prefix classifier can judge (its share of the run); 1 without a classifier."""
    if judge is None or judge.model is None:
        return 1
    tf = judge.model.trained_for
    total = judge.series_length(steps)
    need = max(1, int(round(tf.length * total / tf.full_length)))
    return need if judge.noise_frame else need + 1


def seed_tournament(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive, negative,
                    latent: dict, denoise: float, candidates: int, keep: int, check_at: str, signal: str,
                    judge: Judge | None = None, batch_candidates: bool = False) -> TournamentResult:
    """Run one tournament per item of ``latent``; see the module docstring."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; choose one of {', '.join(SIGNALS)}")
    info = SIGNALS[signal]
    if sampler_name in UNSUPPORTED:
        raise ValueError(f"Seed Tournament cannot check {sampler_name}: it takes its own steps (its callbacks do not "
                         "follow the schedule), so there is no step K to rank the candidates at. Pick another sampler "
                         "(euler, dpmpp_2m, uni_pc, ... are exact)")
    if info.needs_cfg and math.isclose(float(cfg), 1.0):
        raise SignalUnavailable(CFG1_MESSAGE + f" (signal {signal!r} with cfg {cfg:g})")
    if info.needs_classifier and (judge is None or judge.model is None):
        raise ValueError(f"the {signal!r} signal needs a prefix classifier: pick one in 'classifier' (Train Artifact "
                         "Classifier with prefix_steps > 0 makes one), or use the cfg_asd signal, which needs none")
    if info.needs_classifier and not judge.model.trained_for.is_prefix:
        raise ValueError(f"the classifier '{judge.model.name or judge.model.recipe}' judges complete runs "
                         f"({judge.model.trained_for.describe()}); a tournament check needs a *prefix* classifier "
                         "(Train Artifact Classifier with prefix_steps > 0). Judge finished images with Artifact "
                         "Predict or KSampler (Auto-Reject) instead")
    lat = dict(latent)
    lat["samples"] = _fix_empty_latent_channels(model, latent)
    samples = lat["samples"]
    if getattr(samples, "is_nested", False):
        raise ValueError("Seed Tournament needs a plain latent batch, not a nested latent (several shapes)")
    batch = int(samples.shape[0])
    sigmas = comfy.samplers.KSampler(model, steps=int(steps), device=model.load_device, sampler=sampler_name,
                                     scheduler=scheduler, denoise=float(denoise),
                                     model_options=model.model_options).sigmas
    total = int(sigmas.shape[-1]) - 1
    if total < 2:
        raise ValueError(f"this schedule has {total} step(s) (steps {steps}, denoise {denoise}): a tournament needs "
                         "at least 2 (a check before the last step)")
    checks = parse_check_at(check_at, total, candidates, keep)
    first = first_check_step(judge if info.needs_classifier else None, total)
    if checks[0].step < first:
        raise ValueError(f"the prefix classifier '{judge.model.name}' judges the first "
                         f"{judge.model.trained_for.length} of {judge.model.trained_for.full_length} values, i.e. "
                         f"after {first} of {total} steps; check_at starts at step {checks[0].step}. Check at step "
                         f"{first} or later (check_at '{first}'), or train a prefix classifier on fewer steps")
    notes: list[str] = []
    if info.needs_classifier and len(checks) > 1:
        notes.append(f"the prefix classifier reads only its first {judge.model.trained_for.length} values: every "
                     "check after its first sees the same P(artifact)" + (" (the cfg_asd part still grows)"
                                                                         if signal == "rank_average" else ""))
    n = int(candidates)
    seeds = [int(seed) + j for j in range(n)]
    batch_index = lat.get("batch_index")
    plain_noise = [comfy.sample.prepare_noise(samples, s, batch_index) for s in seeds]  # [B, ...] per seed
    mask = lat.get("noise_mask")
    progress = Progress(batch * total)
    preview = _preview_fn(model)
    opts = CaptureOptions(every_k=1, keep_x=False, keep_cond_uncond=info.needs_cfg)
    kept_all: list[CandidateRecord] = []
    rejected_all: list[CandidateRecord] = []
    records_all: list[CandidateRecord] = []
    kept_latents, kept_trajs, rej_previews = [], [], []
    evals = plain = 0
    evals_per_run: list[int] = []
    noise_used = "none"
    ref_traj = None
    for i in range(batch):
        field_ = Field(n, row_by_row=not batch_candidates)
        recs = [CandidateRecord(i, j, seeds[j]) for j in range(n)]
        state = {"next": 0}

        def listener(rec, idx, _f=field_, _recs=recs, _state=state):
            if _state["next"] >= len(checks) or idx + 1 != checks[_state["next"]].step:
                return
            c = checks[_state["next"]]
            _state["next"] += 1
            snap = rec.snapshot()
            rows = list(_f.active)
            sig = _signal_values(signal, snap, rows, judge, total)
            for pos, r in enumerate(rows):
                _recs[r].score = sig["value"][pos]
                _recs[r].scores[c.step] = sig["value"][pos]
                _recs[r].components[c.step] = {k: sig[k][pos] for k in ("cfg_asd", "p_artifact") if k in sig}
            for note in sig.get("notes", []):
                if note not in notes:
                    notes.append(note)
            best = keep_best(sig["value"], sig["direction"], c.keep)
            survivors = [rows[p] for p in best]
            losers = [r for r in rows if r not in set(survivors)]
            for r in losers:
                _recs[r].out_step = c.step
                _recs[r].preview = snap.x0[r, -1].float().clone()
                _recs[r].model_evals = int(rec.n_evals)
            _f.reject(losers, rec.latest_x0)
            _f.active = survivors  # best first
            check_interrupt()

        m, store = attach_capture(model, opts, max_runs=1, step_listener=listener)
        m.add_wrapper_with_key(calc_cond_batch_type(), WRAPPER_KEY, field_.calc_cond_batch)
        sampler, noise_used = candidate_sampler(sampler_name, seeds, i, batch)
        noise = torch.stack([pn[i] for pn in plain_noise])
        x_lat = samples[i:i + 1].repeat(n, *([1] * (samples.ndim - 1)))
        mask_i = None
        if mask is not None:
            mask_i = comfy.utils.repeat_to_batch_size(mask, batch)[i:i + 1] if mask.ndim >= 3 else mask

        def callback(step, x0, x, total_steps, _f=field_):
            progress.update(1)
            row = _f.active[0] if _f.active else 0
            img = preview(x0[row:row + 1])
            if img is not None:
                progress.bar.update_absolute(progress.done, progress.total, img)

        out = comfy.sample.sample_custom(m, noise, cfg, sampler, sigmas, positive, negative, x_lat,
                                         noise_mask=mask_i, callback=callback,
                                         disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=int(seed))
        traj = store.pop_latest()
        if traj is None:
            raise RuntimeError("the sampler recorded no steps")
        if state["next"] < len(checks):
            raise RuntimeError(f"the sampler called back {traj.meta.get('callbacks')} times, so the check at step "
                               f"{checks[state['next']].step} never came (an adaptive sampler such as dpm_adaptive "
                               "takes its own steps): pick earlier check steps or another sampler")
        ref_traj = traj
        run_evals = int(traj.meta.get("model_evals_total", 0))
        evals_per_run.append(run_evals)
        for rank, r in enumerate(field_.active):
            recs[r].kept, recs[r].rank, recs[r].model_evals = True, rank + 1, run_evals
        kept_rows = list(field_.active)
        kept_latents.append(out[kept_rows])
        t = traj.select(kept_rows)
        t.meta.update({"seeds": [seeds[r] for r in kept_rows], "seed": seeds[kept_rows[0]], "steps": int(steps),
                       "cfg": float(cfg), "sampler": sampler_name, "scheduler": scheduler, "denoise": float(denoise),
                       "tournament": {"item": i, "signal": signal, "schedule": schedule_text(checks)}})
        kept_trajs.append(t)
        for r in range(n):
            records_all.append(recs[r])
        kept_all.extend(recs[r] for r in kept_rows)
        losers = sorted((r for r in range(n) if not recs[r].kept), key=lambda r: (recs[r].out_step, r))
        rejected_all.extend(recs[r] for r in losers)
        rej_previews.extend(latent_out(traj, recs[r].preview) for r in losers)
        evals += field_.row_evals
        plain += n * run_evals
        if field_.foreign_calls:
            notes.append(f"{field_.foreign_calls} model call(s) with another batch shape were evaluated in full "
                         "(a context window or a model patch): they were not saved")

    exact = (not batch_candidates and sampler_name not in ROUNDING and batch == 1
             and not (sampler_name == "ddim" and mask is not None))
    if sampler_name in ROUNDING:
        notes.append(ROUNDING[sampler_name])
    if batch > 1:
        notes.append(f"{batch} latents: one tournament each; a finished candidate equals a plain batch-1 KSampler run "
                     "from that item's noise (row i of the LATENT's noise at seed + j), up to the float rounding of "
                     "batched convolutions against the batched run")
    if batch_candidates:
        notes.append("batch_candidates on: candidates were evaluated as one batch, so finished seeds equal a plain "
                     "KSampler up to float rounding (~1e-4), not bit for bit")
    if sampler_name == "ddim" and mask is not None:
        notes.append("ddim with an inpainting mask draws its blending noise for the whole batch: finished seeds are "
                     "not equal to a plain KSampler")
    out_latent = dict(latent)
    for key in ("downscale_ratio_spacial", "downscale_ratio_temporal", "batch_index"):
        out_latent.pop(key, None)
    out_latent["samples"] = torch.cat(kept_latents, dim=0)
    if mask is not None and mask.ndim >= 3 and mask.shape[0] == batch and batch > 1:
        out_latent["noise_mask"] = torch.cat([mask[i:i + 1].repeat(keep, *([1] * (mask.ndim - 1)))
                                              for i in range(batch)])
    rejected_latent = {"samples": torch.cat([p[None] for p in rej_previews], dim=0)}
    traj_out, traj_err = None, ""
    try:
        traj_out = concat_trajectories(kept_trajs, {"seeds": [c.seed for c in kept_all], "seed": kept_all[0].seed})
    except ValueError as e:
        traj_err = str(e)
    if progress.done < progress.total:
        progress.update(progress.total - progress.done)
    cost = planned_cost(n, checks, total) * batch
    del ref_traj
    return TournamentResult(out_latent, kept_all, rejected_all, rejected_latent, traj_out, traj_err, checks, total,
                            n, int(keep), signal, int(evals), int(plain), cost, evals_per_run, noise_used, exact,
                            notes, records_all)
