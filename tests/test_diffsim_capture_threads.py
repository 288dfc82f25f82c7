"""DiffSim's capture state under threads (issue 9: newer ComfyUI runs cond and uncond on several GPUs in threads,
``_calc_cond_batch_multigpu``, so the attention patches run concurrently). Pure: the patch closures and the store
need no ComfyUI (the early-exit path never calls ComfyUI's attention)."""

from __future__ import annotations

import threading

import pytest
import torch
from diffusion_sentinel.nodes.diffsim.capture import (
    RUN_KEY,
    CaptureStore,
    EarlyExit,
    make_self_capture,
    takes_transformer_options,
)


def _call(patch, token, cond_or_uncond, seed, heads=2, rows=3, tokens=5, dim=4):
    g = torch.Generator().manual_seed(seed)
    b = rows * len(cond_or_uncond)
    q, k, v = (torch.randn(b, tokens, heads * dim, generator=g) for _ in range(3))
    eo = {"n_heads": heads, "cond_or_uncond": list(cond_or_uncond), RUN_KEY: token}
    with pytest.raises(EarlyExit):
        patch(q, k, v, eo)
    return q, k, v


def test_concurrent_cond_and_uncond_calls_record_into_their_run():
    """Many runs, each with its cond and uncond chunk captured by two threads at the same moment (a barrier makes
    them overlap): every run gets exactly its own tensors, and its call count is 2."""
    store = CaptureStore(early_exit=True)
    patch = make_self_capture(store)
    runs = 40
    tokens = [store.begin() for _ in range(runs)]
    barrier = threading.Barrier(2)
    sent: dict[tuple[int, int], tuple] = {}
    errors = []

    def worker(cond_index):
        try:
            for r, tok in enumerate(tokens):
                barrier.wait()
                sent[(tok, cond_index)] = _call(patch, tok, [cond_index], seed=1000 * r + cond_index)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(c,)) for c in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for tok in tokens:
        run = store.finish(tok)
        assert run.calls == 2 and set(run.captured) == {0, 1}
        for c in (0, 1):
            q, k, v = sent[(tok, c)]
            got = run.captured[c]
            assert torch.equal(got[0], q.reshape(3, 5, 2, 4).transpose(1, 2))
            assert torch.equal(got[2], v.reshape(3, 5, 2, 4).transpose(1, 2))
    assert store.runs == {}


def test_a_late_call_from_a_closed_run_is_ignored():
    store = CaptureStore()
    patch = make_self_capture(store)
    first = store.begin()
    store.finish(first)  # e.g. the run was abandoned after an error in another thread
    second = store.begin()
    _call(patch, first, [0, 1], seed=1)  # arrives late
    run = store.finish(second)
    assert run.captured == {} and run.calls == 0


def test_a_batched_call_splits_into_its_chunks():
    """One call with [uncond, cond] batched (cond_or_uncond = [1, 0]): rows split per chunk."""
    store = CaptureStore()
    patch = make_self_capture(store)
    tok = store.begin()
    q, _, _ = _call(patch, tok, [1, 0], seed=2)
    run = store.finish(tok)
    assert torch.equal(run.captured[1][0], q[:3].reshape(3, 5, 2, 4).transpose(1, 2))
    assert torch.equal(run.captured[0][0], q[3:].reshape(3, 5, 2, 4).transpose(1, 2))


def test_feature_detection_of_transformer_options():
    def old_style(q, k, v, heads, mask=None, attn_precision=None):
        return q

    def new_style(q, k, v, heads, mask=None, attn_precision=None, **kwargs):
        return q

    def explicit(q, k, v, heads, transformer_options=None):
        return q

    assert not takes_transformer_options(old_style)
    assert takes_transformer_options(new_style) and takes_transformer_options(explicit)
    assert not takes_transformer_options(print)  # no signature: do not pass it
