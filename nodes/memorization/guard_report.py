"""What the Memorization Guard shows: the on-node panel (nodes/common/ui.py) and the plain-text report output."""

from __future__ import annotations

from ..common.ui import col, panel
from .node_common import fmt as _fmt

HIGHER = "higher = more likely memorized"


def guard_panel(values: dict, thr: float, score: str, action: str, source: str, gn: float, gc: float, settings,
                run, notes: list[str]) -> dict:
    """One row per prompt: M, N, C, Wen, the flag and (mitigate) the score after; the threshold and action above."""
    flags = values["memorized"]
    n = len(flags)
    cols = [col("prompt"), col("anisotropy", "M", direction=HIGHER, fmt=".3f",
                                tooltip=f"M = {gn:g}*N + {gc:g}*C"),
            col("norm", "N", direction=HIGHER, fmt=".3f", tooltip="norm of the guidance vector at t=981, >= 0"),
            col("cosine", "C", direction=HIGHER, fmt=".3f", tooltip="channel cosine at t=41, in [-1, 1]"),
            col("wen", "Wen", direction=HIGHER, fmt=".3f", tooltip="Wen et al.'s norm, >= 0 (per sample)"),
            col("memorized", "memorized")]
    mitigated = action == "mitigate" and run.mitigation is not None
    if mitigated:
        cols.append(col("score_after", f"{score} after", direction=HIGHER, fmt=".3f"))
    rows = []
    for i in range(n):
        r = [i, values["anisotropy"][i], values["norm"][i], values["cosine"][i], values["wen"][i], flags[i]]
        if mitigated:
            r.append(values["score_after"][i])
        rows.append(r)
    summary = (f"{sum(flags)} of {n} prompt(s) flagged: {score} > {_fmt(thr, 3)} ({HIGHER}); action {action}"
               + (", blocked" if action == "block" and any(flags) else ""))
    extra = [f"M = {_fmt(gn, 3)}*N + {_fmt(gc, 3)}*C ({source}); seed {settings.seed}, {settings.n_samples} noise "
             f"sample(s), {settings.width}x{settings.height} px"]
    if action == "mitigate":
        if run.mitigation is None:
            extra.append("mitigate: nothing flagged, the conditioning passes unchanged")
        else:
            ok = all(v <= thr for v in values["score_after"])
            extra.append(f"mitigate: {run.mitigation.steps} AdamW step(s); "
                         + ("all under the threshold" if ok else "NOT all under the threshold: raise "
                                                                 "mitigation_steps or block"))
    return panel("Memorization Guard", summary=summary, columns=cols, rows=rows,
                 highlight=[i for i, f in enumerate(flags) if f], notes=extra + list(notes))


def guard_report(info, det, m, sel, after, flags, thr, score, gn, gc, source, settings, action, run, notes) -> str:
    h, w = settings.latent_hw()
    lines = [f"Memorization Guard - {info.family} ({info.prediction}); {det.n_prompts} prompt(s) x "
             f"{settings.n_samples} noise sample(s), latent {info.latent_channels}x{h}x{w}, seed {settings.seed}",
             f"M = {_fmt(gn, 3)}*N + {_fmt(gc, 3)}*C ({source}); flag when {score} > {_fmt(thr, 3)}"]
    for i in range(det.n_prompts):
        lines.append(f"prompt {i}: M={_fmt(float(m[i]))} (N={_fmt(float(det.norm[i]))}, C={_fmt(float(det.cosine[i]))})"
                     f" wen={_fmt(float(det.wen[i]))} -> {'MEMORIZED' if flags[i] else 'ok'}")
    if action == "mitigate":
        if run.mitigation is None:
            lines.append("mitigate: nothing flagged, the conditioning is passed through unchanged")
        else:
            r = run.mitigation
            lines.append(f"mitigate: {r.steps} AdamW step(s); {score} "
                         + ", ".join(f"{_fmt(a, 3)} -> {_fmt(b, 3)}" for a, b in zip(sel.tolist(), after.tolist()))
                         + (" (all under the threshold)" if all(v <= thr for v in after.tolist())
                            else " (NOT all under the threshold: raise mitigation_steps or block)"))
    calls = det.unet_calls + (run.after.unet_calls if run.after is not None else 0)
    lines.append(f"U-Net calls for detection: {det.unet_calls} (cond+uncond batched); sigma(981)="
                 f"{_fmt(det.sigma_norm, 3)}, sigma(41)={_fmt(det.sigma_cos, 4)}" + ("" if calls == det.unet_calls else
                                                                                     f"; {calls} incl. re-scoring"))
    return "\n".join(lines + notes)
