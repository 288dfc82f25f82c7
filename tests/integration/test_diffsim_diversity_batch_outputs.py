"""Batch-level outputs through ComfyUI's real executor (in process): a node connected to a batch-level output of
DiffSim, DiffSim Matrix, Style Similarity Gate, Batch Diversity or Select Diverse Subset runs ONCE for a batch, while
one connected to a per-item list output runs once per item (issue 12: "logic nodes can branch on it")."""

from __future__ import annotations

import _diffsim as D
import pytest
from _diversity import make_images

TINY = "sd15-tiny-random.safetensors"
CALLS: list[tuple[str, object]] = []
OBJECTS: dict[str, object] = {}


def _counter(kind: str):
    class Count:
        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's V1 node API
            return {"required": {"value": (kind, {"forceInput": True}), "tag": ("STRING", {"default": ""})}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True
        CATEGORY = "testing"

        def run(self, value, tag):
            CALLS.append((tag, value))
            return {}

    Count.__name__ = f"SentinelTestCount{kind.title()}"
    return Count


def _source(name: str, kind: str):
    """A node that returns a test object (images built in the test, the in-process tiny CLIP vision)."""

    class Source:
        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802
            return {"required": {"key": ("STRING", {"default": ""})}}

        RETURN_TYPES = (kind,)
        FUNCTION = "run"
        CATEGORY = "testing"

        def run(self, key):
            return (OBJECTS[key],)

    Source.__name__ = name
    return Source


class FakeServer:
    """What execution.PromptExecutor needs from the server when nobody is listening."""

    client_id = None
    last_node_id = None

    def send_sync(self, *args, **kwargs):
        pass

    def queue_updated(self):
        pass


@pytest.fixture()
def registered(comfy, tmp_path):
    from _diversity import tiny_clip_vision
    from _server import find_checkpoint
    from diffusion_sentinel.nodes.diffsim import comfy_nodes as ds
    from diffusion_sentinel.nodes.diversity import comfy_nodes as dv

    import nodes

    if find_checkpoint(TINY) is None:
        pytest.skip(f"{TINY} not found (build it with the harness, or set COMFY_MODELS)")
    added = {c.GET_SCHEMA().node_id: c for c in (*ds.NODES, *dv.NODES)}
    for kind in ("INT", "FLOAT", "BOOLEAN"):
        c = _counter(kind)
        added[c.__name__] = c
    for name, kind in (("SentinelTestImages", "IMAGE"), ("SentinelTestClipVision", "CLIP_VISION")):
        added[name] = _source(name, kind)
    OBJECTS.update(cv=tiny_clip_vision(tmp_path), a=D.images(1, seed=1), b=D.images(2, seed=2),
                   batch=make_images("distinct", 5))
    before = {k: nodes.NODE_CLASS_MAPPINGS.get(k) for k in added}
    nodes.NODE_CLASS_MAPPINGS.update(added)
    CALLS.clear()
    try:
        yield
    finally:
        OBJECTS.clear()
        for k, v in before.items():
            if v is None:
                nodes.NODE_CLASS_MAPPINGS.pop(k, None)
            else:
                nodes.NODE_CLASS_MAPPINGS[k] = v


def _count(tag, kind, src, slot):
    return {"class_type": f"SentinelTestCount{kind.title()}", "inputs": {"value": [src, slot], "tag": tag}}


def test_batch_level_outputs_run_a_downstream_node_once(registered):
    import execution

    settings = {"mode": "DiffSim-S (self-attention)", "block": "U_0", "timestep": "style (t=900)", "t": 900,
                "prompt": "High quality image", "text": "prompt + empty uncond (paper)", "seed": 2334,
                "resolution": 64, "resize": "square (paper)"}
    kit = {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2]}
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY}},
        "2": {"class_type": "SentinelTestImages", "inputs": {"key": "a"}},
        "3": {"class_type": "SentinelTestImages", "inputs": {"key": "b"}},
        "4": {"class_type": "SentinelTestImages", "inputs": {"key": "batch"}},
        "5": {"class_type": "SentinelTestClipVision", "inputs": {"key": "cv"}},
        "6": {"class_type": "SentinelDiffSim", "inputs": {"image_a": ["2", 0], "image_b": ["3", 0], **kit,
                                                          **settings}},
        "7": {"class_type": "SentinelDiffSimMatrix", "inputs": {"images": ["3", 0], **kit, **settings}},
        "8": {"class_type": "SentinelStyleSimilarityGate",
              "inputs": {"reference": ["2", 0], "candidates": ["3", 0], "threshold": -1.0, **kit, **settings}},
        "9": {"class_type": "SentinelBatchDiversity",
              "inputs": {"images": ["4", 0], "clip_vision": ["5", 0], "vendi_order": "1",
                         "duplicate_threshold": 0.95}},
        "10": {"class_type": "SentinelSelectDiverseSubset",
               "inputs": {"images": ["4", 0], "clip_vision": ["5", 0], "k": 3, "method": "greedy_vendi"}},
        # batch-level outputs: one run each
        "20": _count("diffsim mean", "FLOAT", "6", 1),
        "21": _count("diffsim min", "FLOAT", "6", 3),
        "22": _count("diffsim best_index", "INT", "6", 5),
        "23": _count("matrix most_atypical_index", "INT", "7", 6),
        "24": _count("gate any_passed", "BOOLEAN", "8", 6),
        "25": _count("gate all_passed", "BOOLEAN", "8", 7),
        "26": _count("gate pass_count", "INT", "8", 5),
        "27": _count("gate best_index", "INT", "8", 3),
        "28": _count("diversity n_near_duplicates", "INT", "9", 12),
        "29": _count("diversity any_near_duplicate", "BOOLEAN", "9", 13),
        "30": _count("diversity most_atypical_index", "INT", "9", 14),
        "31": _count("diversity vendi", "FLOAT", "9", 0),
        "32": _count("subset vendi_after", "FLOAT", "10", 6),
        # per-item list outputs: one run per item
        "40": _count("diffsim similarity", "FLOAT", "6", 0),
        "41": _count("gate passed", "BOOLEAN", "8", 0),
        "42": _count("diversity conformity", "FLOAT", "9", 4),
        "43": _count("subset index", "INT", "10", 4),
    }
    ex = execution.PromptExecutor(FakeServer())
    ex.execute(prompt, "sentinel-diffdiv-batch-outputs", {}, [k for k in prompt if int(k) >= 20])
    assert ex.success, ex.status_messages
    tags = [t for t, _ in CALLS]
    for k in range(20, 33):
        tag = prompt[str(k)]["inputs"]["tag"]
        assert tags.count(tag) == 1, (tag, tags)
    assert tags.count("diffsim similarity") == 2 and tags.count("gate passed") == 2
    assert tags.count("diversity conformity") == 5 and tags.count("subset index") == 3
    got = dict(CALLS)
    sims = [v for t, v in CALLS if t == "diffsim similarity"]
    assert got["diffsim min"] == min(sims) and got["diffsim mean"] == pytest.approx(sum(sims) / 2)
    assert got["diffsim best_index"] == max(range(2), key=lambda i: (sims[i], -i))
    assert got["gate any_passed"] is True and got["gate all_passed"] is True and got["gate pass_count"] == 2
    assert got["subset vendi_after"] >= 1.0 and got["diversity any_near_duplicate"] == (
        got["diversity n_near_duplicates"] > 0)
