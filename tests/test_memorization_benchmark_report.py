"""The benchmark's table and prompt files (pure): AUC / TPR rows against scikit-learn and a hand ROC, prompt lines
read as the paper's detect_mem.py reads them, refusals with the pack's error."""

from __future__ import annotations

import numpy as np
import pytest
from diffusion_sentinel.nodes.memorization import benchmark_report as br
from sklearn.metrics import roc_auc_score


def test_rows_equal_sklearn_and_a_hand_roc():
    rng = np.random.default_rng(0)
    k, n = 30, 70
    norm = np.r_[rng.normal(3, 1, k), rng.normal(1, 1, n - k)]
    cos = np.r_[rng.normal(0.3, 0.2, k), rng.normal(0.1, 0.2, n - k)]
    wen = norm * 0.5 + rng.normal(0, 0.5, n)
    y = np.r_[np.ones(k), np.zeros(n - k)]
    rows = br.detection_table(k, norm, cos, wen, 1.0, 2.0, "SD1 (1, 2)", fitted=(1.0, 0.5))
    assert [r.score.split(" ")[0] for r in rows] == ["anisotropy", "norm", "cosine", "Wen", "anisotropy,"]
    for r, s in zip(rows, [norm + 2 * cos, norm, cos, wen, norm + 0.5 * cos]):
        assert r.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        # hand TPR at FPR <= 1 %: 40 non-memorized -> no false positive allowed -> memorized above every normal
        assert r.tpr == pytest.approx(np.mean(s[:k] > s[k:].max()))
    assert "cross-validated AUC" in rows[4].note and rows[0].score == "anisotropy M = 1 N + 2 C (SD1 (1, 2))"
    text = br.format_table(rows)
    assert text.splitlines()[0].startswith("score") and "TPR@1%FPR" in text and "(paper rule)" in text


def test_a_normal_prompt_above_every_memorized_one_gives_tpr_zero_under_both_rules():
    # 4 memorized, 10 normal; one normal scores above every memorized prompt -> FPR jumps from 0 to 0.1
    norm = np.array([5, 6, 7, 8, 9.5, 1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=float)
    rows = br.detection_table(4, norm, np.zeros(14), norm, 1.0, 0.0, "norm only")
    assert rows[1].tpr == 0.0  # no ROC point with FPR <= 1 % above the corner
    assert rows[1].tpr_closest == 0.0  # closest to 1 % is the (0, 0) corner here


def test_not_finite_scores_give_a_nan_row():
    norm = np.array([1.0, 2.0, float("nan"), 0.5])
    rows = br.detection_table(2, norm, np.zeros(4), np.zeros(4), 1.0, 2.0, "x")
    assert np.isnan(rows[0].auc) and rows[0].note == "not finite for some prompt"
    with pytest.raises(ValueError, match="one value per prompt"):
        br.detection_table(4, norm, np.zeros(4), np.zeros(4), 1.0, 2.0, "x")


def test_prompt_files_are_read_like_the_papers_code(tmp_path):
    p = tmp_path / "mem.txt"
    p.write_bytes(b'\xef\xbb\xbf  first prompt  \n"Watch: a video, ""quoted"""\n\n<i>Title</i> with html\r\n#hash tag prompt\n')
    assert br.read_prompt_file(str(p)) == ["first prompt", '"Watch: a video, ""quoted"""', "<i>Title</i> with html",
                                           "#hash tag prompt"]
    assert br.parse_prompt_lines("a\n\n b \n") == (["a", "b"], 1)


@pytest.mark.parametrize("content, match", [(None, "not found"), (b"\x80\x04\x95pickle\x00", "binary"),
                                            (b"\xff\xfe\xfa text", "not UTF-8"), (b"\n \n", "holds no prompt"),
                                            ("dir", "is not a file")])
def test_bad_prompt_files_are_refused_with_the_packs_error(tmp_path, content, match):
    p = tmp_path / "list.txt"
    if content == "dir":
        p.mkdir()
    elif content is not None:
        p.write_bytes(content)
    with pytest.raises(br.PromptFileError, match=match):
        br.read_prompt_file(str(p))
    assert br.PromptFileError.__module__ == "sentinel"


def test_list_checks():
    with pytest.raises(br.PromptFileError, match="at least 2"):
        br.check_lists(["a"], ["b", "c"])
    with pytest.raises(br.PromptFileError, match="both lists"):
        br.check_lists(["a", "b"], ["b", "c"])
    assert br.check_lists(["a", "a", "b"], ["c", "d"]) == ["note: the memorized list repeats 1 prompt(s); each line is "
                                                           "scored"]
