"""The TRAJECTORY container: validation, selection, safetensors round trip, refusing foreign/corrupt/pickle files."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from diffusion_sentinel.nodes.trajectory.trajectory import FORMAT_NAME, Trajectory, TrajectoryError


def make(b=2, t=5, c=4, h=3, w=3, seed=0, **kw) -> Trajectory:
    g = torch.Generator().manual_seed(seed)
    return Trajectory(
        x0=torch.randn(b, t, c, h, w, generator=g),
        x=torch.randn(b, t, c, h, w, generator=g),
        sigmas=torch.linspace(10, 0.1, t),
        noise_frame=torch.randn(b, c, h, w, generator=g),
        final=torch.randn(b, c, h, w, generator=g),
        meta={"sampler": "euler", "steps": t, "latent_scale_factor": 0.18215, "seeds": list(range(b))},
        **kw,
    )


def test_shapes_and_defaults():
    tr = make()
    assert tr.batch_size == 2 and tr.num_steps == 5 and tr.latent_shape == (4, 3, 3)
    assert tr.steps.tolist() == [0, 1, 2, 3, 4]
    assert tr.bytes_per_step_item() == 2 * 4 * 3 * 3 * 4  # x0 + x, float32


@pytest.mark.parametrize("bad,match", [
    (dict(x=torch.zeros(3, 5, 4, 3, 3)), "batch sizes or step counts do not match"),
    (dict(noise_frame=torch.zeros(1, 4, 3, 3)), "batch sizes do not match"),
    (dict(sigmas=torch.zeros(4)), "sigmas has shape"),
    (dict(x0=torch.zeros(2, 5)), "at least 3 dims"),
    (dict(x0=torch.zeros(2, 5, 4, 3, 3, dtype=torch.long)), "floating point"),
    (dict(model_evals=torch.zeros(2, dtype=torch.long)), "one entry per recorded step"),
])
def test_validation_errors_say_what_is_wrong(bad, match):
    base = dict(x0=torch.zeros(2, 5, 4, 3, 3), sigmas=torch.ones(5))
    with pytest.raises(TrajectoryError, match=match):
        Trajectory(**{**base, **bad})


def test_require_steps_message():
    tr = Trajectory(x0=torch.zeros(1, 1, 4, 2, 2), sigmas=torch.ones(1))
    with pytest.raises(TrajectoryError, match="at least 2 are needed.*every_k_steps"):
        tr.require_steps(2)


def test_select_keeps_items_in_step():
    tr = make(b=3)
    sub = tr.select([2, 0])
    assert torch.equal(sub.x0, tr.x0[[2, 0]]) and torch.equal(sub.x, tr.x[[2, 0]])
    assert torch.equal(sub.noise_frame, tr.noise_frame[[2, 0]]) and torch.equal(sub.final, tr.final[[2, 0]])
    assert torch.equal(sub.sigmas, tr.sigmas) and sub.meta["seeds"] == [2, 0]
    with pytest.raises(TrajectoryError, match="out of range"):
        tr.select([3])


def test_latent_to_vae_space_undoes_scale_and_shift():
    tr = make()
    tr.meta["latent_shift_factor"] = 0.5
    z = torch.full((1, 4, 3, 3), 0.18215)
    assert torch.allclose(tr.latent_to_vae_space(z), torch.full_like(z, 1.5))


def test_save_load_roundtrip(tmp_path):
    tr = make(x0_cond=None)
    tr.meta["flags"] = ["several_model_evaluations_per_step"]
    tr.meta["nan_value"] = float("nan")
    p = tr.save(tmp_path / "sub" / "t.safetensors")
    back = Trajectory.load(p)
    for k, v in tr.tensors().items():
        assert torch.equal(getattr(back, k), v), k
    assert back.x0_cond is None
    assert back.meta["flags"] == ["several_model_evaluations_per_step"] and back.meta["nan_value"] == "nan"
    assert not (tmp_path / "sub" / "t.safetensors.partial").exists()


def test_fp16_storage_halves_size(tmp_path):
    tr = make()
    half = tr.to_dtype(torch.float16)
    assert half.x0.dtype == torch.float16 and half.sigmas.dtype == torch.float32
    assert half.nbytes() < tr.nbytes()
    back = Trajectory.load(half.save(tmp_path / "h.safetensors"))
    assert back.x0.dtype == torch.float16 and back.meta["storage_dtype"] == "float16"


def test_foreign_safetensors_refused(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "lora.safetensors"
    save_file({"lora_up.weight": torch.zeros(2, 2)}, str(p), metadata={"format": "pt"})
    with pytest.raises(TrajectoryError, match="not a Diffusion Sentinel trajectory"):
        Trajectory.load(p)


def test_corrupt_file_refused(tmp_path):
    tr = make()
    p = tr.save(tmp_path / "t.safetensors")
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 2])
    with pytest.raises(TrajectoryError, match="not a Diffusion Sentinel trajectory.*truncated"):
        Trajectory.load(p)
    q = tmp_path / "junk.safetensors"
    q.write_bytes(b"\x00" * 64)
    with pytest.raises(TrajectoryError, match="not a Diffusion Sentinel trajectory.*header is not valid JSON"):
        Trajectory.load(q)


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickle_file_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps({"x0": _Boom()}))
    with pytest.raises(TrajectoryError, match="never loaded"):
        Trajectory.load(p)
    assert not (tmp_path / "PWNED").exists()


def test_newer_format_and_bad_metadata_refused(tmp_path):
    from safetensors.torch import save_file

    t = {"x0": torch.zeros(1, 2, 4, 2, 2), "sigmas": torch.ones(2)}
    p = tmp_path / "new.safetensors"
    save_file(t, str(p), metadata={"format": FORMAT_NAME, "format_version": "99", "diffusion_sentinel": "{}"})
    with pytest.raises(TrajectoryError, match="newer Diffusion Sentinel"):
        Trajectory.load(p)
    save_file(t, str(p), metadata={"format": FORMAT_NAME, "format_version": "1", "diffusion_sentinel": "{not json"})
    with pytest.raises(TrajectoryError, match="not valid JSON"):
        Trajectory.load(p)
    save_file({**t, "weights": torch.ones(1)}, str(p),
              metadata={"format": FORMAT_NAME, "format_version": "1", "diffusion_sentinel": json.dumps({})})
    with pytest.raises(TrajectoryError, match="unexpected tensors"):
        Trajectory.load(p)


def test_missing_file():
    with pytest.raises(TrajectoryError, match="not found"):
        Trajectory.load("/nonexistent/t.safetensors")


# ------------------------------------------------------------------------------------------------ tampered files
def _with_header(tmp_path, name, **hdr):
    from safetensors.torch import save_file

    t = {"x0": torch.zeros(1, 2, 4, 2, 2), "sigmas": torch.ones(2)}
    meta = {"format": FORMAT_NAME, "format_version": "1", "diffusion_sentinel": "{}"}
    p = tmp_path / name
    save_file(t, str(p), metadata={**meta, **hdr})
    return p


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_metadata_is_the_packs_error(tmp_path, depth):
    """100,000 levels raised RecursionError inside json; 40 levels would recurse later (saving, reports)."""
    p = _with_header(tmp_path, "deep.safetensors", diffusion_sentinel="[" * depth + "]" * depth)
    with pytest.raises(TrajectoryError, match="nested.*deep.*save the trajectory again"):
        Trajectory.load(p)


@pytest.mark.parametrize("version", ["abc", "", "0", "-1", "2.5"])
def test_bad_format_version_is_the_packs_error(tmp_path, version):
    p = _with_header(tmp_path, "v.safetensors", format_version=version)
    with pytest.raises(TrajectoryError, match="invalid format_version"):
        Trajectory.load(p)


@pytest.mark.parametrize("meta,match", [
    ({"latent_format": ["SD15"]}, "latent_format = .* is not a latent format name"),
    ({"latent_format": "os.system"}, "is not a latent format name"),
    ({"latent_scale_factor": "abc"}, "latent_scale_factor = 'abc', not a number"),
    ({"latent_scale_factor": 0}, "latent_scale_factor = 0.0, which cannot be a latent scale"),
    ({"latent_scale_factor": -2.0}, "cannot be a latent scale"),
    ({"latent_shift_factor": [1]}, "latent_shift_factor = .*not a number"),
])
def test_tampered_latent_metadata_is_refused_on_load_and_on_use(tmp_path, meta, match):
    p = _with_header(tmp_path, "t.safetensors", diffusion_sentinel=json.dumps(meta))
    with pytest.raises(TrajectoryError, match=match):
        Trajectory.load(p)
    # a TRAJECTORY built in memory with such metadata is refused where it is decoded (no inf frames, no TypeError)
    from diffusion_sentinel.nodes.trajectory.trajectory import check_meta

    tr = make()
    tr.meta.update(meta)
    with pytest.raises(TrajectoryError, match=match):
        check_meta(tr.meta)  # what the decoding glue (capture.latent_out, Trajectory Frames) calls first
    if "latent_format" not in meta:
        with pytest.raises(TrajectoryError, match=match):
            tr.latent_to_vae_space(tr.x0[0])


def test_exceptions_have_short_module_names():
    """ComfyUI titles an error with type(e).__module__ + qualname: the pack's errors must not show a file path."""
    from diffusion_sentinel.classifiers import DatasetError, MetricMismatch, ModelFileError
    from diffusion_sentinel.nodes.trajectory.dreamsim_backend import DreamSimUnavailable

    for cls in (TrajectoryError, DatasetError, MetricMismatch, ModelFileError, DreamSimUnavailable):
        assert cls.__module__ == "sentinel", cls
