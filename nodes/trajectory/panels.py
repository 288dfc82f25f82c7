"""What the trajectory nodes show on themselves (panels of nodes/common/ui.py). Pure: no ComfyUI import.

Every panel mirrors the node's outputs: the values in a panel are the values the outputs carry.
"""

from __future__ import annotations

from ..common.ui import HIGHER_IS_BETTER, LOWER_IS_BETTER, col, panel
from .similarity import SeriesSummary, SimilaritySeries
from .trajectory import Trajectory

LIST_NOTE = "A list (one value per batch item): a node connected here runs once per item."


def per_item(tip: str) -> str:
    """Tooltip of a list output: says that it is a list, then what each value is."""
    return f"{LIST_NOTE} {tip}"


def mib(nbytes: float) -> float:
    return float(nbytes) / 2**20


def captured_summary(traj: Trajectory) -> str:
    kept = ["x0"] + [n for n in ("x", "x0_cond", "x0_uncond") if getattr(traj, n) is not None]
    return (f"captured {traj.batch_size} item(s) x {traj.num_steps} recorded step(s) ({', '.join(kept)}; "
            f"{str(traj.x0.dtype).replace('torch.', '')}), {mib(traj.nbytes()):.2f} MiB")


def trajectory_panel(title: str, traj: Trajectory, notes=()) -> dict:
    """Per item: seed, recorded steps, model evaluations, first/last sigma; the summary says items, steps, MiB."""
    meta = traj.meta
    seeds = meta.get("seeds") if isinstance(meta.get("seeds"), list) else None
    rows = []
    evals = int(traj.model_evals[-1]) if (traj.model_evals is not None and traj.num_steps) else 0
    s0 = float(traj.sigmas[0]) if traj.num_steps else None
    s1 = float(traj.sigmas[-1]) if traj.num_steps else None
    for b in range(traj.batch_size):
        seed = seeds[b] if seeds and b < len(seeds) else meta.get("seed")
        rows.append([b, seed, traj.num_steps, evals, s0, s1])
    more = [f"{meta.get('sampler')}/{meta.get('scheduler')}, cfg {meta.get('cfg')}, "
            f"every_k_steps {meta.get('every_k_steps', 1)}"]
    flags = [f for f in meta.get("flags", []) if isinstance(f, str)]
    if flags:
        more.append("flags: " + ", ".join(flags))
    return panel(title, summary=captured_summary(traj),
                 columns=[col("item"), col("seed"), col("recorded_steps", "steps"),
                          col("model_evals", "model evals"), col("sigma_first", "first sigma", fmt=".3g"),
                          col("sigma_last", "last sigma", fmt=".3g")],
                 rows=rows, notes=[*more, *[str(n) for n in notes]])


def similarity_panel(series: SimilaritySeries, sums: list[SeriesSummary], relative: list[float], worst: int,
                     batch_min: float) -> dict:
    """Per item: min (and its step), D_max, relative drop, mean of the last half, finite; the sparkline is the
    item's series (without the noise value in the paper layout, as on the chart)."""
    off = 1 if (series.noise_frame and series.length > 1) else 0
    rows = [[b, s.minimum, s.argmin_step, s.d_max, relative[b], s.mean_last_half, bool(series.finite[b])]
            for b, s in enumerate(sums)]
    return panel(
        "Similarity Trajectory",
        summary=f"{series.metric}, {series.batch_size} item(s); lowest min {batch_min:.4f}; largest relative late "
                f"drop: item {worst}",
        columns=[col("item"), col("min", "min", direction=HIGHER_IS_BETTER, fmt=".4f"),
                 col("argmin_step", "at step"),
                 col("d_max", "D_max (last 60%)", direction=LOWER_IS_BETTER, fmt=".4f",
                     tooltip="largest drop from a running peak over the last 60 % of the series"),
                 col("d_max_relative", "D_max / range", direction=LOWER_IS_BETTER, fmt=".3f",
                     tooltip="D_max relative to the series' own range: what the model-free artifact rule scores"),
                 col("mean_last_half", "mean last half", direction=HIGHER_IS_BETTER, fmt=".4f"),
                 col("finite")],
        rows=rows, highlight=[worst] if worst >= 0 else [],
        series=[row[off:] for row in series.as_lists()], series_label=f"{series.metric} similarity",
        notes=["similarity of consecutive x0 predictions (Menn et al., arXiv 2412.17109): higher = the predictions "
               "agree more; a late drop goes with artifacts"])
