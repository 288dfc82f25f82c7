"""Is the guard's negative CONDITIONING the empty prompt the papers use? (pure: dicts and torch only)

Both papers score a prompt against the unconditional prediction of the EMPTY prompt; a negative prompt such as
"blurry, ugly" changes every score (and a calibration made with one negative does not transfer to another). A
CONDITIONING carries no text, so three signals are used, the most exact first:

1. the graph: the node that feeds the guard's ``negative`` input, from the executed prompt (ComfyUI's hidden
   PROMPT / DYNPROMPT inputs). Its literal text widgets (``text``, ``text_g``, ``text_l``, ...) say what was
   encoded; text arriving through a link, or any other node (combine, set area, ...), leaves this unknown;
2. the CLIP, when one is connected: the negative is compared with the encoding of "";
3. the tensor itself: an all-zero negative (ConditioningZeroOut) is not the empty-prompt encoding either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

EMPTY_ATOL = 1e-3  # fp16 text encoders on GPU vs the same encoder again: identical; different prompts: O(1)


def _node(prompt: Any, node_id: str) -> dict | None:
    """A node of the API prompt (a dict, or ComfyUI's DynamicPrompt with get_node)."""
    if prompt is None or node_id is None:
        return None
    get = getattr(prompt, "get_node", None)
    try:
        node = get(str(node_id)) if callable(get) else prompt.get(str(node_id))
    except Exception:  # DynamicPrompt raises for unknown ids
        return None
    return node if isinstance(node, dict) else None


def graph_texts(prompt: Any, node_id: Any, input_name: str = "negative") -> tuple[str, str, list[str]] | None:
    """(source node id, its class_type, its literal text inputs) for the node feeding ``input_name`` of
    ``node_id``; None when that is not a node with literal text widgets."""
    node = _node(prompt, node_id)
    if node is None:
        return None
    link = node.get("inputs", {}).get(input_name)
    if not (isinstance(link, (list, tuple)) and len(link) == 2):
        return None
    src = _node(prompt, link[0])
    if src is None:
        return None
    texts, linked = [], False
    for k, v in sorted(src.get("inputs", {}).items()):
        if "text" not in k.lower():
            continue
        if isinstance(v, str):
            texts.append(v)
        else:
            linked = True
    if linked or not texts:
        return None
    return str(link[0]), str(src.get("class_type", "?")), texts


def _tensors(conditioning) -> list[torch.Tensor]:
    return [c[0] for c in conditioning or [] if isinstance(c, (list, tuple)) and isinstance(c[0], torch.Tensor)]


def matches(conditioning, reference) -> bool:
    """Every entry of ``conditioning`` equals the reference encoding (same shape, within EMPTY_ATOL)."""
    ref = _tensors(reference)
    got = _tensors(conditioning)
    if not ref or not got:
        return False
    r = ref[0].detach().float().cpu()
    for t in got:
        t = t.detach().float().cpu()
        if t.shape[1:] != r.shape[1:] or not torch.allclose(t, r.expand_as(t), atol=EMPTY_ATOL, rtol=EMPTY_ATOL):
            return False
    return True


def negative_notes(negative, prompt: Any = None, node_id: Any = None,
                   encode_empty: Callable[[], Any] | None = None) -> list[str]:
    """Warnings (possibly none) about a negative that is not the papers' empty prompt."""
    notes = []
    tensors = _tensors(negative)
    if tensors and all(float(t.detach().abs().max()) == 0.0 for t in tensors):
        notes.append("warning: the negative CONDITIONING is all zeros (ConditioningZeroOut?), not the encoding of "
                     "the empty prompt that the papers compare against: connect a CLIPTextEncode with empty text")
        return notes
    found = graph_texts(prompt, node_id)
    if found is not None:
        src, cls, texts = found
        filled = [t for t in texts if t.strip()]
        if filled:
            shown = filled[0].strip().replace("\n", " ")
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            notes.append(f"warning: the negative prompt is not empty (node {src}, {cls}: \"{shown}\"). The papers "
                         "score against the EMPTY prompt; with a negative prompt the scores and thresholds differ "
                         "(calibrate with the same negative, or connect a CLIPTextEncode with empty text)")
        return notes
    if encode_empty is not None:
        try:
            empty = encode_empty()
        except Exception as e:  # a broken or foreign CLIP must not stop the guard
            return [f"note: could not encode the empty prompt with the connected CLIP to check the negative ({e})"]
        if not matches(negative, empty):
            notes.append("warning: the negative CONDITIONING differs from the connected CLIP's encoding of the empty "
                         "prompt, which the papers score against; the scores and thresholds differ from theirs "
                         "(calibrate with the same negative, or connect a CLIPTextEncode with empty text)")
    return notes
