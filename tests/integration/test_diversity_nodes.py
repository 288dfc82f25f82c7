"""Batch Diversity and Select Diverse Subset in a real ComfyUI, with a tiny CLIP vision model built from ComfyUI's
own classes (comfy.clip_vision.ClipVisionModel from a JSON config, seeded weights). Figures are checked against
an independent numpy computation on the embeddings of ComfyUI's own CLIPVisionEncode node."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from _comfy import run_node, run_v3
from _diversity import make_images, tiny_clip_vision, write_tiny_clip_vision_file


@pytest.fixture(scope="module")
def cv(comfy, tmp_path_factory):
    return tiny_clip_vision(tmp_path_factory.mktemp("clipvision"), seed=0)


@pytest.fixture(scope="module")
def dn(comfy):
    from diffusion_sentinel.nodes.diversity import comfy_nodes

    return comfy_nodes


@pytest.fixture(autouse=True)
def _fresh_cache(comfy):
    from diffusion_sentinel.nodes.diversity import clip_embed

    clip_embed.clear_cache()
    yield
    clip_embed.clear_cache()


def comfy_embeddings(cv, images, crop="center") -> np.ndarray:
    """Embeddings through ComfyUI's own CLIPVisionEncode node (the whole batch in one pass)."""
    (out,) = run_node("CLIPVisionEncode", clip_vision=cv, image=images, crop=crop)
    return out["image_embeds"].double().numpy()


def numpy_figures(e: np.ndarray) -> dict:
    f = e / np.linalg.norm(e, axis=1, keepdims=True)
    n = f.shape[0]
    lam = np.linalg.eigvalsh(f @ f.T / n)
    lam = lam[lam > 1e-12]
    lam /= lam.sum()
    s = f @ f.T
    iu = np.triu_indices(n, 1)
    mu = f.mean(0)
    return {"vendi": float(np.exp(-(lam * np.log(lam)).sum())), "mean": float(s[iu].mean()),
            "std": float(s[iu].std()), "centroid_norm": float(np.linalg.norm(mu)),
            "conformity": (f @ mu / np.linalg.norm(mu)).tolist(), "f": f}


def _rel(cv) -> float:
    """Relative tolerance for figures from embeddings computed in separate calls: 1e-6 in float32 on the CPU; on
    CUDA the encoder runs in ComfyUI's text-encoder dtype (fp16) and batch layouts may pick other kernels."""
    import _device

    dtype = getattr(cv, "dtype", None)
    if not _device.ON_CUDA:
        return 1e-6
    return _device.tol("float16" if dtype in (torch.float16, torch.bfloat16) else "float32")["rtol"]


def diversity(dn, cv, images, **kw):
    kw.setdefault("vendi_order", "1")
    kw.setdefault("duplicate_threshold", 0.95)
    return run_v3(dn.BatchDiversity, images=images, clip_vision=cv, **kw)


def test_nodes_are_registered(comfy):
    from diffusion_sentinel.nodes.registry import FAILED, load_nodes

    ids = {c.GET_SCHEMA().node_id for c in load_nodes()}
    assert {"SentinelBatchDiversity", "SentinelSelectDiverseSubset"} <= ids and not FAILED


def test_batch_diversity_matches_an_independent_computation(dn, cv):
    images = make_images("distinct", 8)
    out = diversity(dn, cv, images)
    (vendi, mean, std, cnorm, conf, dup, pairs, encoder, rdist, rprec, rrec, report, n_dup, any_dup,
     odd) = out.args
    ref = numpy_figures(comfy_embeddings(cv, images))
    r = _rel(cv)  # the reference re-encodes the batch in one call: on CUDA fp16 kernels may differ slightly
    assert vendi == pytest.approx(ref["vendi"], rel=r)
    assert mean == pytest.approx(ref["mean"], rel=r) and std == pytest.approx(ref["std"], rel=max(r, 1e-5))
    assert cnorm == pytest.approx(ref["centroid_norm"], rel=r)
    assert conf == pytest.approx(ref["conformity"], rel=r) and len(conf) == 8
    assert n_dup == sum(dup) and any_dup is (n_dup > 0) and odd == min(range(8), key=lambda i: (conf[i], i))
    assert 1.0 <= vendi <= 8.0
    assert all(math.isnan(v) for v in (rdist, rprec, rrec))  # no reference connected
    assert encoder.startswith("CLIP ViT (width 32, 2 layers, patch 14) 224px image_embeds[16] crop=center #")
    assert encoder in report and f"{vendi:.4f}" in report
    (p,) = out.ui["sentinel_result"]
    json.dumps(out.ui, allow_nan=False)  # the websocket payload is plain JSON
    payload = p["data"]  # the machine-readable summary (formerly ui["sentinel_diversity"])
    assert payload["vendi"] == vendi and payload["reference"] is None and payload["n"] == 8
    assert payload["n_near_duplicates"] == n_dup and payload["most_atypical_index"] == odd
    assert [row[1] for row in p["rows"]] == conf and [row[2] for row in p["rows"]] == dup  # table = outputs
    assert f"Vendi {vendi:.3f}" in p["summary"] and f"{mean:.3f}" in p["summary"] and f"{cnorm:.3f}" in p["summary"]


def test_other_orders_are_passed_through(dn, cv):
    images = make_images("distinct", 6)
    f = numpy_figures(comfy_embeddings(cv, images))["f"]
    lam = np.clip(np.linalg.eigvalsh(f @ f.T / 6), 0, None)
    lam /= lam.sum()
    assert diversity(dn, cv, images, vendi_order="2").args[0] == pytest.approx(1 / (lam**2).sum(), rel=_rel(cv))
    assert diversity(dn, cv, images, vendi_order="inf").args[0] == pytest.approx(1 / lam.max(), rel=_rel(cv))


def test_chunked_encoding_changes_nothing_and_drives_the_progress_bar(dn, cv):
    import comfy.utils
    from diffusion_sentinel.nodes.diversity import clip_embed

    images = make_images("distinct", 7)
    whole = diversity(dn, cv, images, chunk_size=64).args
    clip_embed.clear_cache()
    seen = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        chunked = diversity(dn, cv, images, chunk_size=3).args
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
    assert chunked[0] == pytest.approx(whole[0], rel=_rel(cv)) and chunked[4] == pytest.approx(whole[4], rel=_rel(cv))
    assert seen[-1] == (7, 7) and seen == [(3, 7), (6, 7), (7, 7)]


def test_cancel_stops_the_encoding(dn, cv):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            diversity(dn, cv, make_images("distinct", 4))
    finally:
        mm.interrupt_current_processing(False)


def test_near_duplicates_are_found(dn, cv):
    base = make_images("distinct", 3)
    images = torch.cat([base, base[:1]])  # image 3 is image 0 again
    out = diversity(dn, cv, images, duplicate_threshold=0.9999)
    dup, pairs = out.args[5], out.args[6]
    assert pairs.startswith("0-3 (1.0000)")
    assert dup == [False, False, False, True]
    assert out.args[12:14] == (1, True)  # n_near_duplicates, any_near_duplicate
    (p,) = out.ui["sentinel_result"]
    assert p["data"]["duplicate_count"] >= 1 and p["highlight"] == [3] and p["rows"][3][2:] == [True, 0]


def test_reference_figures(dn, cv):
    from diffusion_sentinel.nodes.diversity.geometry import compare_to_reference

    images, reference = make_images("distinct", 6), make_images("distinct", 8, seed=3)[2:]
    out = diversity(dn, cv, images, reference=reference, knn_k=2)
    rdist, rprec, rrec = out.args[8:11]
    expect = compare_to_reference(torch.from_numpy(comfy_embeddings(cv, images)),
                                  torch.from_numpy(comfy_embeddings(cv, reference)), k=2)
    assert rdist == pytest.approx(expect.centroid_distance, rel=_rel(cv), abs=1e-9)
    assert (rprec, rrec) == (expect.precision, expect.recall)
    ref = out.ui["sentinel_result"][0]["data"]["reference"]
    assert ref["k"] == 2 and ref["n_reference"] == 6 and ref["coverage"] == expect.coverage
    same = diversity(dn, cv, images, reference=images.clone(), knn_k=2).args
    assert same[8] == pytest.approx(0.0, abs=1e-6) and same[9] == 1.0 and same[10] == 1.0


def test_encoder_name_tells_models_and_crop_modes_apart(dn, cv, tmp_path):
    images = make_images("distinct", 4, size=40)
    e0 = diversity(dn, cv, images).args[7]
    other = tiny_clip_vision(tmp_path, seed=1)
    e1 = diversity(dn, other, images).args[7]
    e2 = diversity(dn, cv, images[:, :, :24], crop="none").args[7]
    assert e0 != e1 and e0.split("#")[0] == e1.split("#")[0]  # same architecture, other weights
    assert "crop=none" in e2 and e2.split("#")[1] == e0.split("#")[1]


def test_clear_errors(dn, cv):
    from diffusion_sentinel.nodes.diversity.vendi import DiversityInputError

    with pytest.raises(DiversityInputError, match="at least 2 images, got a batch of 1"):
        diversity(dn, cv, make_images("distinct", 1))
    with pytest.raises(DiversityInputError, match="knn_k=3 needs more than 3 images.*reference 2"):
        diversity(dn, cv, make_images("distinct", 6), reference=make_images("distinct", 2))
    with pytest.raises(DiversityInputError, match="Load CLIP Vision"):
        diversity(dn, "not a model", make_images("distinct", 3))
    with pytest.raises(DiversityInputError, match="latent has a batch of 2 but the images have 4"):
        run_v3(dn.SelectDiverseSubset, images=make_images("distinct", 4), clip_vision=cv, k=2,
               method="greedy_vendi", latent={"samples": torch.zeros(2, 4, 8, 8)})


def test_select_diverse_subset_keeps_latents_and_masks_in_step(dn, cv):
    base = make_images("distinct", 3)
    images = torch.cat([base, base, base])  # 0,1,2 three times
    n = images.shape[0]
    latent = {"samples": torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 4, 4, 4).clone(),
              "batch_index": list(range(100, 100 + n))}
    mask = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 8, 8).clone()
    out = run_v3(dn.SelectDiverseSubset, images=images, clip_vision=cv, k=3, method="greedy_vendi",
                 vendi_order="1", latent=latent, mask=mask)
    imgs, lat, msk, text, idx, before, after, encoder = out.args
    assert len(set(idx)) == 3 and sorted(i % 3 for i in idx) == [0, 1, 2]  # issue 9: was [0, 0, 2] on CUDA
    assert text == ",".join(map(str, idx)) and idx == sorted(idx)
    assert torch.equal(imgs, images[idx])
    assert lat["samples"][:, 0, 0, 0].tolist() == [float(i) for i in idx]
    assert lat["batch_index"] == [100 + i for i in idx]
    assert msk[:, 0, 0].tolist() == [float(i) for i in idx]
    # three copies of three images: the batch and one copy of each have the same spectrum
    assert after == pytest.approx(before, rel=1e-6)
    # the best 3-subset by brute force, on ComfyUI's own embeddings
    f = numpy_figures(comfy_embeddings(cv, images))["f"]

    def vs(sub):
        lam = np.clip(np.linalg.eigvalsh(f[list(sub)] @ f[list(sub)].T / len(sub)), 1e-15, None)
        lam /= lam.sum()
        return float(np.exp(-(lam * np.log(lam)).sum()))

    # the best 3-subset without a repeated image (a repeat is taken only when nothing else is left)
    distinct = [c for c in itertools.combinations(range(n), 3) if len({i % 3 for i in c}) == 3]
    assert after == pytest.approx(max(vs(c) for c in distinct), rel=1e-5)
    assert encoder.startswith("CLIP ViT (width 32")
    json.dumps(out.ui, allow_nan=False)
    (p,) = out.ui["sentinel_result"]
    assert p["highlight"] == idx and [row[1] for row in p["rows"]] == [i in idx for i in range(n)]
    assert p["data"]["vendi_before"] == before and p["data"]["vendi_after"] == after and p["data"]["indices"] == idx
    assert f"{before:.3f} -> {after:.3f}" in p["summary"]


def test_select_without_latent_blocks_only_that_output(dn, cv):
    from comfy_execution.graph_utils import ExecutionBlocker

    out = run_v3(dn.SelectDiverseSubset, images=make_images("distinct", 5), clip_vision=cv, k=2,
                 method="farthest_point")
    assert isinstance(out.args[1], ExecutionBlocker) and isinstance(out.args[2], ExecutionBlocker)
    assert "latent input is not connected" in out.args[1].message
    assert out.args[0].shape[0] == 2 and len(out.args[4]) == 2


def test_both_nodes_share_one_encoding(dn, cv):
    images = make_images("distinct", 6)
    calls = []
    original = cv.encode_image

    def counting(image, crop=True):
        calls.append(image.shape[0])
        return original(image, crop=crop)

    cv.encode_image = counting
    try:
        diversity(dn, cv, images)
        run_v3(dn.SelectDiverseSubset, images=images, clip_vision=cv, k=3, method="greedy_vendi")
    finally:
        del cv.encode_image
    assert calls == [6]


def test_a_tiny_clip_vision_file_is_not_detected_by_comfyui(comfy, tmp_path):
    """CLIPVisionLoader picks its config from key names (ViT-L/H/bigG, SigLIP, DINOv2 layouts only), so a small
    model cannot come from a file: this is why the node tests build the model in-process."""
    import comfy.clip_vision
    import folder_paths

    path = write_tiny_clip_vision_file(tmp_path / "tiny.safetensors")
    assert comfy.clip_vision.load(path) is None
    folder_paths.add_model_folder_path("clip_vision", str(tmp_path))
    try:
        with pytest.raises(RuntimeError, match="does not contain a valid vision model"):
            run_node("CLIPVisionLoader", clip_name="tiny.safetensors")
    finally:
        folder_paths.folder_names_and_paths["clip_vision"][0].remove(str(tmp_path))


# ----------------------------------------------------------------------------- issue 12 / issue 9
def _progress(fn):
    import comfy.utils

    seen = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        fn()
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
    return seen


@pytest.mark.parametrize("method", ["greedy_vendi", "farthest_point"])
def test_subset_progress_ends_at_its_total(dn, cv, method):
    """Issue 12: Select Diverse Subset ended at 2/3. Its bar counts the images encoded plus min(k, n) chosen and
    ends at total/total: k = 1, k = 2, k between, k = n, k > n; encoding cached (second run) or not."""
    from diffusion_sentinel.nodes.diversity import clip_embed

    images = make_images("distinct", 5)
    for k in (1, 2, 3, 5, 9):
        for cached in (False, True):
            if not cached:
                clip_embed.clear_cache()
            seen = _progress(lambda k=k: run_v3(dn.SelectDiverseSubset, images=images, clip_vision=cv, k=k,
                                                method=method))
            total = 5 + min(k, 5)
            assert seen[-1] == (total, total), (k, cached, seen)
            assert [v for v, _ in seen] == sorted(v for v, _ in seen) and all(t == total for _, t in seen)
    seen = _progress(lambda: diversity(dn, cv, images, reference=make_images("distinct", 4, seed=2), knn_k=2))
    assert seen[-1] == (9, 9)


def test_greedy_subset_cost_is_refused_before_encoding(dn, cv):
    """Issue 9: greedy Vendi grows ~k^4 (k=128 of 256 took 75 s). Past the bound it is refused at once, with the
    largest k that fits and the fast alternatives; order 2 and farthest_point are not bounded."""
    from diffusion_sentinel.nodes.diversity.subset import max_greedy_k
    from diffusion_sentinel.nodes.diversity.vendi import DiversityInputError

    n = 300
    images = make_images("noise", n, size=16)
    calls = []
    original = cv.encode_image
    cv.encode_image = lambda image, crop=True: calls.append(1) or original(image, crop=crop)
    try:
        with pytest.raises(DiversityInputError, match=f"k <= {max_greedy_k(n)}"):
            run_v3(dn.SelectDiverseSubset, images=images, clip_vision=cv, k=250, method="greedy_vendi")
        assert calls == []  # refused before any encoding
    finally:
        del cv.encode_image


def test_batch_level_outputs_match_the_lists(dn, cv):
    base = make_images("distinct", 4)
    images = torch.cat([base, base[1:2], base[2:3]])  # 4 and 5 repeat 1 and 2
    out = diversity(dn, cv, images, duplicate_threshold=0.9999)
    conf, dup = out.args[4], out.args[5]
    n_dup, any_dup, odd = out.args[12:15]
    assert dup == [False, False, False, False, True, True] and n_dup == 2 and any_dup is True
    assert odd == min(range(6), key=lambda i: (conf[i], i))
    rows = out.ui["sentinel_result"][0]["rows"]
    assert [r[3] for r in rows] == ["", "", "", "", 1, 2]  # which earlier image each repeats


def test_list_outputs_say_they_are_lists(dn):
    for cls in dn.NODES:
        for o in cls.GET_SCHEMA().outputs:
            if o.is_output_list:
                assert "List output" in o.tooltip, (cls.__name__, o.id)
            elif o.io_type in ("INT", "BOOLEAN") and o.id != "index":
                assert "Batch-level" in o.tooltip, (cls.__name__, o.id)
