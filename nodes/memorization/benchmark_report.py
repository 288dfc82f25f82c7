"""The memorization benchmark's table and its prompt files (pure: numpy + scikit-learn, no ComfyUI).

The table is the anisotropy paper's (Asthana & Belagiannis, ICLR 2026, Table 1 and its ablation): for each score,
the ROC AUC of separating memorized from non-memorized prompts and the TPR at 1 % FPR. Two TPR rules: the
standard one (the best TPR among ROC points with FPR <= 1 %) and the paper's released rule (``detect_eval.py``: the
ROC point whose FPR is closest to 1 %, which may lie above it). Scores, all "higher = more likely memorized":

- anisotropy M = g_n N + g_c C with the paper's weights (SD1 (1, 2) for eps models, SD2 (1, 0.1) for v models);
- the norm term N alone and the cosine term C alone (the paper's ablation);
- Wen et al.'s first-step norm;
- M with weights fitted on these very lists (in-sample, optimistic) and its cross-validated AUC (honest).

Prompt files are read as the paper's ``detect_mem.py`` reads them: one prompt per line, ``line.strip()``, quotes
and HTML kept verbatim (the lists carry CSV-style quoting, which the paper scored as written); empty lines are
skipped (the paper would score them as the empty prompt, i.e. the unconditional one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .calibration import auc, cross_validated_auc, tpr_at_fpr

MAX_PROMPT_FILE_BYTES = 16 * 1024 * 1024  # the paper's lists are ~50 kB
MIN_PROMPTS = 2


class PromptFileError(ValueError):
    """A prompt list that cannot be used; the message says what to do."""


PromptFileError.__module__ = "sentinel"  # ComfyUI titles errors with the class's module path


def parse_prompt_lines(text: str) -> tuple[list[str], int]:
    """(prompts, number of empty lines skipped) of a text with one prompt per line."""
    prompts, empty = [], 0
    for line in (text or "").splitlines():
        p = line.strip()
        if p:
            prompts.append(p)
        else:
            empty += 1
    return prompts, empty


def read_prompt_file(path: str, what: str = "prompt list") -> list[str]:
    """The prompts of a UTF-8 text file, one per line; a PromptFileError for anything that is not such a file."""
    base = os.path.basename(path) or path
    if not os.path.exists(path):
        raise PromptFileError(f"{what} file not found: {path}")
    if not os.path.isfile(path):
        raise PromptFileError(f"{what} {path} is not a file (give a text file with one prompt per line)")
    size = os.path.getsize(path)
    if size > MAX_PROMPT_FILE_BYTES:
        raise PromptFileError(f"{what} {base} is {size} bytes; a prompt list is text of a few kB to MB (limit "
                              f"{MAX_PROMPT_FILE_BYTES // (1024 * 1024)} MB): is it the right file?")
    with open(path, "rb") as f:
        raw = f.read()
    if b"\x00" in raw:
        raise PromptFileError(f"{what} {base} is a binary file, not a text file with one prompt per line")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{what} {base} is not UTF-8 text ({e}); save it as UTF-8") from e
    prompts, _ = parse_prompt_lines(text)
    if not prompts:
        raise PromptFileError(f"{what} {base} holds no prompt (one prompt per line)")
    return prompts


def check_lists(memorized: list[str], normal: list[str]) -> list[str]:
    """Refuse lists too short to measure anything; notes about duplicates and overlap."""
    if len(memorized) < MIN_PROMPTS or len(normal) < MIN_PROMPTS:
        raise PromptFileError(f"give at least {MIN_PROMPTS} memorized and {MIN_PROMPTS} non-memorized prompts (got "
                              f"{len(memorized)} and {len(normal)}); the paper's lists hold 499 / 499 (SD1) and "
                              "218 / 499 (SD2)")
    notes = []
    for name, lst in (("memorized", memorized), ("non-memorized", normal)):
        d = len(lst) - len(set(lst))
        if d:
            notes.append(f"note: the {name} list repeats {d} prompt(s); each line is scored")
    both = set(memorized) & set(normal)
    if both:
        raise PromptFileError(f"{len(both)} prompt(s) appear in both lists (e.g. {sorted(both)[0][:60]!r}): a prompt "
                              "cannot be both memorized and not; fix the lists")
    return notes


@dataclass
class Row:
    """One line of the table: a score's AUC and TPR at the target FPR (both in [0, 1], higher is better)."""

    score: str
    auc: float
    tpr: float
    tpr_closest: float
    note: str = ""


def _row(name: str, y: np.ndarray, s: np.ndarray, target_fpr: float, note: str = "") -> Row:
    s = np.asarray(s, dtype=np.float64)
    if not np.isfinite(s).all():
        return Row(name, float("nan"), float("nan"), float("nan"), "not finite for some prompt")
    return Row(name, auc(y, s), tpr_at_fpr(y, s, target_fpr), tpr_at_fpr(y, s, target_fpr, closest=True), note)


def detection_table(n_memorized: int, norm, cosine, wen, gamma_n: float, gamma_c: float, weights_label: str,
                    fitted: tuple[float, float] | None = None, target_fpr: float = 0.01) -> list[Row]:
    """The paper's table for per-prompt scores laid out memorized first (rows 0..n_memorized-1), then the others."""
    norm, cosine, wen = (np.asarray(v, dtype=np.float64) for v in (norm, cosine, wen))
    n = norm.shape[0]
    if not 0 < n_memorized < n or cosine.shape[0] != n or wen.shape[0] != n:
        raise ValueError("scores must have one value per prompt, memorized prompts first, both lists non-empty")
    y = np.r_[np.ones(n_memorized, int), np.zeros(n - n_memorized, int)]
    rows = [_row(f"anisotropy M = {gamma_n:g} N + {gamma_c:g} C ({weights_label})", y, gamma_n * norm + gamma_c * cosine,
                 target_fpr),
            _row("norm term N (t=981)", y, norm, target_fpr),
            _row("cosine term C (t=41)", y, cosine, target_fpr),
            _row("Wen first-step norm", y, wen, target_fpr)]
    if fitted is not None:
        gn, gc = fitted
        x = np.stack([norm, cosine], axis=1)
        cv = cross_validated_auc(x, y) if np.isfinite(x).all() else None
        rows.append(_row(f"anisotropy, fitted here M = {gn:.3g} N + {gc:.3g} C", y, gn * norm + gc * cosine, target_fpr,
                         note="in-sample" + (f"; cross-validated AUC {cv:.3f}" if cv is not None else "")))
    return rows


def format_table(rows: list[Row], target_fpr: float = 0.01) -> str:
    pct = f"{100 * target_fpr:g}%"
    w = max(len(r.score) for r in rows)
    head = f"{'score':{w}s}  {'AUC':>6s}  {'TPR@' + pct + 'FPR':>11s}  {'(paper rule)':>12s}"
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r.score:{w}s}  {_f(r.auc)}  {_f(r.tpr):>11s}  {_f(r.tpr_closest):>12s}"
                   + (f"  {r.note}" if r.note else ""))
    return "\n".join(out)


def _f(v: float) -> str:
    return "   nan" if v is None or not np.isfinite(v) else f"{v:6.3f}"
