"""Is the guard's negative the empty prompt? The graph, CLIP and tensor signals of negative_check.py (pure)."""

from __future__ import annotations

import torch
from diffusion_sentinel.nodes.memorization.negative_check import graph_texts, matches, negative_notes


def _cond(seed, shape=(1, 77, 8)):
    return [[torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), {}]]


def _prompt(src_inputs, src_class="CLIPTextEncode"):
    return {"3": {"class_type": src_class, "inputs": src_inputs},
            "8": {"class_type": "SentinelMemorizationGuard", "inputs": {"negative": ["3", 0]}}}


class _Dyn:
    """ComfyUI's DynamicPrompt: get_node(id) raises for unknown ids."""

    def __init__(self, d):
        self.d = d

    def get_node(self, i):
        if i not in self.d:
            raise KeyError(i)
        return self.d[i]


def test_graph_texts_reads_literal_text_widgets_of_the_source_node():
    assert graph_texts(_prompt({"text": "", "clip": ["4", 1]}), "8") == ("3", "CLIPTextEncode", [""])
    sdxl = _prompt({"text_g": "", "text_l": "blurry", "width": 1024, "clip": ["4", 1]}, "CLIPTextEncodeSDXL")
    assert graph_texts(sdxl, 8) == ("3", "CLIPTextEncodeSDXL", ["", "blurry"])
    assert graph_texts(_Dyn(_prompt({"text": "x"})), "8") == ("3", "CLIPTextEncode", ["x"])
    # unknown: text through a link, a node without text widgets, a dangling link, no prompt
    assert graph_texts(_prompt({"text": ["5", 0]}), "8") is None
    assert graph_texts(_prompt({"conditioning_1": ["6", 0]}, "ConditioningCombine"), "8") is None
    assert graph_texts(_Dyn({"8": {"inputs": {"negative": ["99", 0]}}}), "8") is None
    assert graph_texts(None, "8") is None and graph_texts(_prompt({"text": ""}), None) is None


def test_notes_from_each_signal():
    neg = _cond(1)
    filled = negative_notes(neg, _prompt({"text": "ugly,\nblurry " + "x" * 80}), "8")
    assert len(filled) == 1 and 'node 3, CLIPTextEncode: "ugly, blurry xxx' in filled[0] and '..."' in filled[0]
    assert negative_notes(neg, _prompt({"text": " \n"}), "8") == []
    # the graph is exact: a CLIP that disagrees is not consulted
    assert negative_notes(neg, _prompt({"text": ""}), "8", encode_empty=lambda: _cond(2)) == []
    # unknown text: the CLIP's encoding of "" decides
    assert negative_notes(neg, None, None, encode_empty=lambda: _cond(1)) == []
    w = negative_notes(neg, None, None, encode_empty=lambda: _cond(2))
    assert len(w) == 1 and "differs from the connected CLIP" in w[0]
    broken = negative_notes(neg, None, None, encode_empty=lambda: 1 / 0)
    assert len(broken) == 1 and broken[0].startswith("note: could not encode")
    assert negative_notes(neg, None, None) == []  # nothing known: no claim
    zero = negative_notes([[torch.zeros(1, 77, 8), {}]], _prompt({"text": ""}), "8")
    assert len(zero) == 1 and "all zeros" in zero[0]


def test_matches_is_shape_and_tolerance_aware():
    ref = _cond(1)
    assert matches(ref, ref) and matches([[ref[0][0].half().float(), {}]], ref)  # fp16 rounding of the encoder
    assert not matches(_cond(1, (1, 154, 8)), ref)  # a longer (non-empty) prompt
    two = [[ref[0][0].repeat(2, 1, 1), {}]]
    assert matches(two, ref)  # one empty negative per prompt
    assert not matches([[ref[0][0] + 0.01, {}]], ref) and not matches([], ref)
