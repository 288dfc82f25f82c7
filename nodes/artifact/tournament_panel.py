"""What Seed Tournament shows on itself (a panel of nodes/common/ui.py). Pure: no ComfyUI import.

One row per candidate, in output order: the finished ones (best first), then the rejected ones (in the order of
rejected_x0). The panel mirrors the outputs (tests compare them value by value)."""

from __future__ import annotations

from ..common.ui import LOWER_IS_BETTER, col, panel
from .signals import SIGNALS


def tournament_panel(res) -> dict:
    info = SIGNALS[res.signal]
    rows, highlight = [], []
    for c in res.kept:
        highlight.append(len(rows))
        rows.append([c.item, c.seed, f"kept #{c.rank}", c.score, c.model_evals])
    for c in res.rejected:
        rows.append([c.item, c.seed, f"out at step {c.out_step}", c.score, c.model_evals])
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
                          col("score", info.label, direction=info.direction, fmt=".4g"),
                          col("model_evals", "model evaluations", direction=LOWER_IS_BETTER, fmt="d")],
                 rows=rows, highlight=highlight, notes=notes)
