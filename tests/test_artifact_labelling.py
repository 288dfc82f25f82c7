"""Label Artifacts (click), the pure parts: the active-learning ranking, typed labels and the editor's answer, the
request broker (answers, refusals, deadline, cancel), the panel, and writing only the labelled items of a batch
from several processes at once (no ComfyUI needed)."""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os

import pytest
from _label import labelled_writer_process
from diffusion_sentinel.classifiers import read_dataset
from diffusion_sentinel.nodes.artifact.active_learning import (
    agreement,
    binary_entropy,
    display_order,
    least_sure,
    margin,
    uncertainty_order,
)
from diffusion_sentinel.nodes.artifact.label_session import LabelBroker, UnknownRequest
from diffusion_sentinel.nodes.artifact.labelling import (
    counts,
    label_panel,
    labels_string,
    parse_label_string,
    parse_one,
    parse_response,
)


# ------------------------------------------------------------------------------------------- active learning
def test_least_sure_is_nearest_the_threshold_ties_by_index_nan_last():
    p = [0.9, 0.45, float("nan"), 0.55, 0.1, 0.5, 0.62]
    # |p - 0.5| = 0.4, 0.05, inf, 0.05, 0.4, 0.0, 0.12
    assert uncertainty_order(p) == [5, 1, 3, 6, 0, 4, 2]
    assert least_sure(p, 3) == [5, 1, 3]
    assert least_sure(p, 100) == [5, 1, 3, 6, 0, 4]  # the NaN run is never "least sure": it teaches nothing
    assert least_sure(p, 0) == [] and least_sure([], 4) == []
    # another decision threshold: nearest 0.3 -> 0.45 (0.15), 0.1 (0.2), 0.5 (0.2), 0.55 (0.25), ...
    assert least_sure(p, 4, threshold=0.3) == [1, 4, 5, 3]
    assert margin(0.8, 0.5) == pytest.approx(0.3) and math.isinf(margin(float("inf")))


def test_entropy_gives_the_same_order_as_the_margin_at_one_half():
    p = [0.03, 0.31, 0.5, 0.77, 0.98, 0.6, 0.49]
    assert binary_entropy(0.5) == pytest.approx(1.0)
    assert binary_entropy(0.25) == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)))  # 0.8113
    assert binary_entropy(0.0) == 0.0 and binary_entropy(1.0) == 0.0 and math.isnan(binary_entropy(float("nan")))
    by_entropy = sorted(range(len(p)), key=lambda i: (-binary_entropy(p[i]), i))
    assert uncertainty_order(p) == by_entropy == [2, 6, 5, 1, 3, 0, 4]


def test_display_order_and_agreement():
    p = [0.2, 0.51, 0.9, 0.4]
    assert display_order(p, "batch order") == [0, 1, 2, 3]
    assert display_order(p, "least sure first") == [1, 3, 0, 2]
    with pytest.raises(ValueError, match="unknown order"):
        display_order(p, "random")
    # decisions at 0.5: F, T, T, F; labels 0, 0, 1, None -> tn, fp, tp; item 3 left out
    a = agreement(p, [0, 0, 1, None])
    assert (a["tp"], a["fp"], a["fn"], a["tn"], a["n"]) == (1, 1, 0, 1, 3) and a["accuracy"] == pytest.approx(2 / 3)
    assert math.isnan(agreement(p, [None] * 4)["accuracy"])
    assert agreement([float("nan")], [1])["tp"] == 1  # a NaN run counts as flagged
    with pytest.raises(ValueError, match="4 probabilities for 3 labels"):
        agreement(p, [0, 1, 0])


# ------------------------------------------------------------------------------------------------ labels
def test_typed_labels_one_per_item_words_leave_out_or_one_for_all():
    assert parse_label_string("", 3) is None and parse_label_string("  ", 3) is None and parse_label_string(None, 2) is None
    assert parse_label_string("1,0,x,1", 4) == [1, 0, None, 1]
    assert parse_label_string("artifact natural ? -", 4) == [1, 0, None, None]
    assert parse_label_string("unnatural; clean", 2) == [1, 0]
    assert parse_label_string("0", 3) == [0, 0, 0] and parse_label_string("skip", 2) == [None, None]
    assert labels_string([1, 0, None, 1]) == "1,0,x,1"
    assert parse_label_string(labels_string([1, None, 0]), 3) == [1, None, 0]
    with pytest.raises(ValueError, match="lists 3 values for a batch of 4"):
        parse_label_string("1,0,1", 4)
    with pytest.raises(ValueError, match=r"unknown label 'maybe' \(item 1\)"):
        parse_label_string("1,maybe", 2)
    assert parse_one(True) == 1 and parse_one(0) == 0 and parse_one(1.0) == 1 and parse_one(None) is None
    with pytest.raises(ValueError, match="must be 1"):
        parse_one(2)


def test_the_editors_answer_is_checked_against_the_batch():
    assert parse_response({"action": "save", "labels": [1, 0, None]}, 3) == ("save", [1, 0, None])
    assert parse_response({"action": "skip", "labels": [True, False]}, 2) == ("skip", [1, 0])
    assert parse_response({"action": "cancel"}, 2) == ("cancel", [None, None])
    for body, msg in [([1, 0], "JSON object"), ({"action": "keep", "labels": [1]}, "'action' must be one of"),
                      ({"action": "save", "labels": "1,0"}, "must be a list"),
                      ({"action": "save", "labels": [1]}, "1 values for a batch of 2"),
                      ({"action": "save", "labels": [1, 7]}, r"\(item 1\)")]:
        with pytest.raises(ValueError, match=msg):
            parse_response(body, 2)
    assert counts([1, 0, None, 1, 0, 0]) == {"artifact": 2, "natural": 3, "left_out": 1}


def test_label_panel_mirrors_labels_p_and_marks():
    p = [0.2, 0.55, 0.9, 0.48]
    pn = label_panel([0, 1, 0, None], p, [3, 1], 0.5, "my_clf", "save", "artifact_datasets/x", 12, ["note"])
    assert pn["title"] == "Label Artifacts" and pn["highlight"] == [1, 3]
    assert pn["summary"] == "saved 3 (1 artifact, 2 natural, 1 left out) to artifact_datasets/x: 12 samples in the dataset"
    assert [r[1] for r in pn["rows"]] == ["natural", "artifact", "natural", "left out"]
    assert [r[2] for r in pn["rows"]] == p
    assert [r[4] for r in pn["rows"]] == [None, 2, None, 1]          # least-sure rank
    assert [r[5] for r in pn["rows"]] == [True, True, False, None]   # classifier (P >= 0.5) agrees?
    assert pn["rows"][0][3] == pytest.approx(binary_entropy(0.2))
    assert "agreed with the labels on 2 of 3" in pn["notes"][0] and pn["notes"][1] == "note"
    skipped = label_panel([1, 0], [0.1, 0.2], [], 0.5, "m", "skip", "artifact_datasets/x")
    assert skipped["summary"] == "skipped: nothing written to artifact_datasets/x"


# ------------------------------------------------------------------------------------------------ broker
class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_broker_answer_refusals_keep_the_request_open():
    br = LabelBroker(clock=Clock())
    req = br.open("7", 3, {"p": [0.1, 0.2, 0.3]}, 60, prompt_id="pid", display_node="7", workflow_id="wf")
    pub = br.pending()[0]
    assert pub["token"] == req.token and pub["node"] == "7" and pub["batch"] == 3 and pub["p"] == [0.1, 0.2, 0.3]
    assert pub["remaining_s"] == 60 and pub["workflow_id"] == "wf" and pub["prompt_id"] == "pid"
    with pytest.raises(ValueError, match="2 values for a batch of 3"):
        br.answer(req.token, {"action": "save", "labels": [1, 0]})
    assert br.get(req.token).answer is None and len(br.pending()) == 1  # refused: still open
    with pytest.raises(UnknownRequest, match="no labelling request"):
        br.answer("nope", {"action": "save", "labels": [1, 0, 0]})
    assert br.answer(req.token, {"action": "save", "labels": [1, None, 0]}) == ("save", [1, None, 0])
    with pytest.raises(ValueError, match="answered already"):
        br.answer(req.token, {"action": "skip", "labels": [0, 0, 0]})
    assert br.pending() == []  # answered requests are not shown again
    assert asyncio.run(br.wait(req.token)) == ("save", [1, None, 0])
    assert br.get(req.token) is None  # closed after waiting


def test_broker_wait_deadline_and_cancel():
    clock = Clock()
    br = LabelBroker(clock=clock)
    req = br.open("1", 2, {}, 5)

    async def run_out():
        async def tick():
            for _ in range(100):
                await asyncio.sleep(0.001)
                clock.t += 1.0
        t = asyncio.create_task(tick())
        res = await br.wait(req.token, poll_s=0.001)
        t.cancel()
        return res

    assert asyncio.run(run_out()) is None and br.get(req.token) is None and clock.t >= 105.0

    req2 = br.open("1", 2, {}, 5)

    class Cancelled(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) >= 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        asyncio.run(br.wait(req2.token, interrupt, poll_s=0.001))
    assert br.get(req2.token) is None and len(calls) == 3


def test_broker_answer_from_another_thread_wakes_the_waiter():
    import threading

    br = LabelBroker()
    req = br.open("3", 2, {}, 30)
    threading.Timer(0.05, lambda: br.answer(req.token, {"action": "skip", "labels": [0, 1]})).start()
    assert asyncio.run(br.wait(req.token, poll_s=0.01)) == ("skip", [0, 1])


# ------------------------------------------------------------------------------------------- shared folder
def test_several_workers_label_into_one_folder(tmp_path):
    folder = str(tmp_path / "shared")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=labelled_writer_process, args=(folder, w, 5)) for w in range(3)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(120)
        assert pr.exitcode == 0
    data = read_dataset(folder)
    assert data.n == 3 * 5 * 3 and int(data.y.sum()) == 15 and len(set(data.ids)) == 45
    assert len(os.listdir(os.path.join(folder, "images"))) == 45
    tags = sorted(round(float(x), 3) for x in data.X[:, 0])
    expected = sorted(round(w + k / 100 + i / 1000, 3) for w in range(3) for k in range(5) for i in (0, 1, 3))
    assert tags == expected  # every labelled item of every worker, the left-out one never
    leftovers = [n for d in ("samples", "images") for n in os.listdir(os.path.join(folder, d)) if n.endswith(".tmp")]
    assert leftovers == []


def test_written_selection_keeps_the_batch_positions(tmp_path):
    import json

    import torch
    from _label import small_series
    from diffusion_sentinel.nodes.artifact.dataset_writer import write_samples

    s = small_series(5, 0.2)
    keep = [0, 2, 4]
    rows = write_samples(str(tmp_path / "d"), s.select(keep), [1, 0, 1], None, torch.rand(5, 4, 4, 3)[keep],
                         batch_items=keep)
    assert [r["batch_item"] for r in rows] == keep
    files = sorted(os.listdir(tmp_path / "d" / "samples"))
    assert [json.load(open(tmp_path / "d" / "samples" / f))["batch_item"] for f in files] == keep
    with pytest.raises(ValueError, match="2 batch positions for 3 series"):
        write_samples(str(tmp_path / "e"), s.select(keep), [1, 0, 1], batch_items=[0, 1])
    assert not (tmp_path / "e").exists()
