"""What Seed Tournament shows on itself (a panel of nodes/common/ui.py). Pure: no ComfyUI import.

One row per candidate, in output order: the finished ones (best first), then the rejected ones (in the order of
rejected_x0). The panel mirrors the outputs (tests compare them value by value). Two score columns: every
candidate's score at the FIRST check (the one column where all candidates are ranked against each other, so the
survivors visibly score better there) and its score at the last check it took part in (the ``scores`` output);
scores at different checks are not comparable (the signal accumulates over the steps)."""

from __future__ import annotations

from ..common.ui import LOWER_IS_BETTER, col, panel
from .signals import SIGNALS


def _first_check_score(c, step: int | None) -> float:
    v = c.scores.get(step, c.scores.get(str(step))) if step is not None else None
    return float("nan") if v is None else float(v)


def tournament_panel(res) -> dict:
    info = SIGNALS[res.signal]
    first = res.checks[0].step if res.checks else None
    rows, highlight = [], []
    for c in res.kept:
        highlight.append(len(rows))
        rows.append([c.item, c.seed, f"kept #{c.rank}", _first_check_score(c, first), c.score, c.model_evals])
    for c in res.rejected:
        rows.append([c.item, c.seed, f"out at step {c.out_step}", _first_check_score(c, first), c.score,
                     c.model_evals])
    schedule = " -> ".join([str(res.candidates)] + [f"{c.keep} (step {c.step})" for c in res.checks])
    summary = (f"kept {len(res.kept)} of {len(res.kept) + len(res.rejected)}: seed(s) "
               f"{', '.join(str(c.seed) for c in res.kept)}; {res.model_evals} of {res.model_evals_plain} model "
               f"evaluations ({res.saved_ratio:.0%} saved)")
    notes = [f"signal {res.signal}: {info.label} ({info.direction}); {info.source}",
             f"field: {schedule} of {res.steps} steps; cost model N K + k (S - K): {res.cost_model:g} evaluations "
             "(one per step)",
             "finished seeds are bit-identical to a plain KSampler at that seed" if res.exact else
             "finished seeds equal a plain KSampler at that seed up to float rounding (see notes)",
             *res.notes]
    return panel("Seed Tournament", summary=summary,
                 columns=[col("item"), col("seed"), col("status"),
                          col("first_check", f"{info.short} at step {first}" if first is not None else info.short,
                              direction=info.direction, fmt=".4g"),
                          col("score", f"{info.short} at its last check", direction=info.direction, fmt=".4g"),
                          col("model_evals", "model evaluations", direction=LOWER_IS_BETTER, fmt="d")],
                 rows=rows, highlight=highlight, notes=notes)
