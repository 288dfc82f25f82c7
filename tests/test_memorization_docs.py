"""Node help pages (web/docs/<NodeId>.md, served to the editor's help panel) for the memorization nodes (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "web" / "docs"
NODES = {"SentinelMemorizationGuard": ["2601.20642", "ICLR 2024", "higher = more likely memorized", "1.5 per sample",
                                       "Lists, one value per prompt", "One value for the batch", "768"],
         "SentinelWenScoreTrajectory": ["ICLR 2024", "higher = more likely memorized", "1.5",
                                        "Lists, one value per batch item"],
         "SentinelCalibrateMemorizationGuard": ["2601.20642", "higher is better", "memorization_calibrations"],
         "SentinelVolumeGrowthRate": ["2503.19429", "higher = easier to reproduce", "List, one value per image",
                                      "ranking"],
         "SentinelMemorizationBenchmark": ["2601.20642", "rohanasthana/memorization-anisotropy", "sd1_mem.txt",
                                           "sd2_mem.txt", "higher is better", "one U-Net call per noise level",
                                           "benchmark_cli.py", "memorization_calibrations"],
         "SentinelMemorizationTrajectory": ["2605.22050", "ICLR 2024", "higher = more likely memorized",
                                            "Lists, one value per batch item", "One value for the batch",
                                            "could be read", "deviates", "stability bound", "keep_x"]}


@pytest.mark.parametrize("node_id", sorted(NODES))
def test_each_node_has_a_help_page_with_paper_direction_and_outputs(node_id):
    text = (DOCS / f"{node_id}.md").read_text(encoding="utf-8")
    assert text.startswith("# ")
    for needle in NODES[node_id]:
        assert needle in text, (node_id, needle)
    assert "~3" not in text and "wen 3" not in text.lower()  # the old, twice too loose Wen hint
