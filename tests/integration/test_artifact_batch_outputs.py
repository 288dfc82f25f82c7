"""Batch-level outputs through ComfyUI's real executor (in process): a node connected to a batch-level output
(best_index, n_artifacts, any_kept, worst_item, all_accepted, tries_used) runs ONCE for a 2-image batch, while one
connected to a per-item list output (p_artifact) runs once per item. That is what makes "branch on it with a logic
node" true: list outputs fan a downstream node out over the items."""

from __future__ import annotations

import pytest

TINY = "sd15-tiny-random.safetensors"
CALLS: list[tuple[str, object]] = []


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


class FakeServer:
    """What execution.PromptExecutor needs from the server when nobody is listening."""

    client_id = None
    last_node_id = None

    def send_sync(self, *args, **kwargs):
        pass

    def queue_updated(self):
        pass


@pytest.fixture()
def registered(comfy):
    from _server import find_checkpoint
    from diffusion_sentinel.nodes.artifact import comfy_nodes as art
    from diffusion_sentinel.nodes.trajectory import comfy_nodes as traj

    import nodes

    if find_checkpoint(TINY) is None:
        pytest.skip(f"{TINY} not found (build it with the harness, or set COMFY_MODELS)")
    added = {}
    for cls in (traj.KSamplerTrajectory, traj.SimilarityTrajectory, art.ArtifactPredict, art.FilterBatchByArtifact,
                art.KSamplerAutoReject):
        added[cls.GET_SCHEMA().node_id] = cls
    for kind in ("INT", "FLOAT", "BOOLEAN"):
        c = _counter(kind)
        added[c.__name__] = c
    before = {k: nodes.NODE_CLASS_MAPPINGS.get(k) for k in added}
    nodes.NODE_CLASS_MAPPINGS.update(added)
    CALLS.clear()
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                nodes.NODE_CLASS_MAPPINGS.pop(k, None)
            else:
                nodes.NODE_CLASS_MAPPINGS[k] = v


def _count(tag, kind, src, slot):
    return {"class_type": f"SentinelTestCount{kind.title()}", "inputs": {"value": [src, slot], "tag": tag}}


def test_batch_level_outputs_run_a_downstream_node_once(registered):
    import execution

    sampler = {"seed": 5, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
               "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "5": {"class_type": "SentinelKSamplerTrajectory", "inputs": {"model": ["1", 0], **sampler}},
        "6": {"class_type": "SentinelArtifactPredict",
              "inputs": {"trajectory": ["5", 1], "classifier": "none", "threshold": 0.5}},
        "7": {"class_type": "SentinelSimilarityTrajectory",
              "inputs": {"trajectory": ["5", 1], "metric": "latent_cosine", "noise_frame": True}},
        "8": {"class_type": "SentinelFilterBatchByArtifact",
              "inputs": {"p_artifact": ["6", 0], "mode": "below threshold", "threshold": 0.5, "k": 1,
                         "order": "original", "if_none_kept": "keep best", "latent": ["5", 0]}},
        "9": {"class_type": "SentinelKSamplerAutoReject",
              "inputs": {"model": ["1", 0], **sampler, "classifier": "none", "tau": 0.0, "max_tries": 2}},
        # batch-level outputs: one run each
        "20": _count("best_index", "INT", "6", 7),
        "21": _count("n_artifacts", "INT", "6", 6),
        "22": _count("any_artifact", "BOOLEAN", "6", 4),
        "23": _count("worst_item", "INT", "7", 9),
        "24": _count("batch_min", "FLOAT", "7", 10),
        "25": _count("count", "INT", "8", 5),
        "26": _count("any_kept", "BOOLEAN", "8", 6),
        "27": _count("all_accepted", "BOOLEAN", "9", 6),
        "28": _count("tries_used", "INT", "9", 7),
        # a per-item list output: one run per item (the behaviour the batch-level outputs exist to avoid)
        "30": _count("p_artifact", "FLOAT", "6", 0),
    }
    ex = execution.PromptExecutor(FakeServer())
    ex.execute(prompt, "sentinel-batch-outputs", {}, [k for k in prompt if int(k) >= 20])
    assert ex.success, ex.status_messages
    tags = [t for t, _ in CALLS]
    for tag in ("best_index", "n_artifacts", "any_artifact", "worst_item", "batch_min", "count", "any_kept",
                "all_accepted", "tries_used"):
        assert tags.count(tag) == 1, (tag, tags)
    assert tags.count("p_artifact") == 2
    got = dict(CALLS)
    p = [v for t, v in CALLS if t == "p_artifact"]
    assert got["best_index"] == min(range(2), key=lambda i: (p[i], i))
    assert got["n_artifacts"] == sum(x >= 0.5 for x in p) and got["any_artifact"] == any(x >= 0.5 for x in p)
    assert got["tries_used"] == 2 and got["all_accepted"] is False  # tau 0: nothing is ever accepted
    assert got["worst_item"] in (0, 1) and 0 < got["batch_min"] <= 1
