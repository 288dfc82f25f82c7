"""IP-Adapter Plus reader: a generated file with the released key layout and SD1.5 shapes, the SDXL layout on
meta tensors, and the Resampler against an independent float64 loop-over-heads implementation."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch
from _diffsim import SD15_LAYER_WIDTHS, SD15_PLUS, SDXL_PLUS, ip_adapter_state_dict, save_ip_adapter
from diffusion_sentinel.nodes.diffsim.ip_adapter import (
    IPAdapterError,
    IPAdapterPlus,
    inspect_state_dict,
    read_safetensors_header,
)

# SDXL's 70 cross-attention layers in IP-Adapter order: down 1 (2 attentions x depth 2, 640), down 2 (2 x 10, 1280),
# up 0 (3 x 10, 1280), up 1 (3 x 2, 640), mid (10, 1280)
SDXL_LAYER_WIDTHS = [640] * 4 + [1280] * 20 + [1280] * 30 + [640] * 6 + [1280] * 10


@pytest.fixture(scope="module")
def sd15_file(tmp_path_factory):
    sd = ip_adapter_state_dict(**SD15_PLUS, layer_widths=SD15_LAYER_WIDTHS, seed=3)
    path = save_ip_adapter(tmp_path_factory.mktemp("ipa") / "ip-adapter-plus_sd15.safetensors", sd)
    return path, sd, IPAdapterPlus.load(path)


def reference_resampler(sd: dict, x: torch.Tensor, heads: int, dim_head: int = 64) -> torch.Tensor:
    """The Resampler written out in float64 with explicit per-head loops (independent of the module)."""
    w = {k[len("image_proj."):]: v.double() for k, v in sd.items() if k.startswith("image_proj.")}

    def ln(t, p):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * w[p + ".weight"] + w[p + ".bias"]

    x = x.double() @ w["proj_in.weight"].T + w["proj_in.bias"]
    lat = w["latents"].expand(x.shape[0], -1, -1)
    depth = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("layers."))
    for i in range(depth):
        p = f"layers.{i}."
        xn, ln_ = ln(x, p + "0.norm1"), ln(lat, p + "0.norm2")
        q = ln_ @ w[p + "0.to_q.weight"].T
        kv = torch.cat([xn, ln_], dim=1) @ w[p + "0.to_kv.weight"].T
        k, v = kv.chunk(2, dim=-1)
        outs = []
        for h in range(heads):
            sl = slice(h * dim_head, (h + 1) * dim_head)
            s = (q[..., sl] @ k[..., sl].transpose(1, 2)) / math.sqrt(dim_head)
            outs.append(torch.softmax(s, -1) @ v[..., sl])
        lat = torch.cat(outs, -1) @ w[p + "0.to_out.weight"].T + lat
        hdn = ln(lat, p + "1.0") @ w[p + "1.1.weight"].T
        lat = torch.nn.functional.gelu(hdn) @ w[p + "1.3.weight"].T + lat
    return ln(lat @ w["proj_out.weight"].T + w["proj_out.bias"], "norm_out")


def test_sd15_file_layout_and_shapes(sd15_file):
    _, _, ip = sd15_file
    s = ip.spec
    assert (s.dim, s.depth, s.heads, s.num_queries, s.embedding_dim, s.output_dim, s.ff_mult) == (768, 4, 12, 16, 1280,
                                                                                                 768, 4)
    assert s.family == "SD1.5"
    assert list(s.layer_widths) == list(range(1, 32, 2)) and list(s.layer_widths.values()) == SD15_LAYER_WIDTHS
    k17, v17 = ip.kv(17)  # U_0's cross-attention (up_blocks.1.attentions.2)
    assert k17.shape == v17.shape == (1280, 768)
    ip.check_layers(SD15_LAYER_WIDTHS)
    with pytest.raises(IPAdapterError, match="does not fit"):
        ip.check_layers(SD15_LAYER_WIDTHS[:-1])


def test_resampler_matches_independent_implementation(sd15_file):
    _, sd, ip = sd15_file
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 257, 1280, generator=g)  # ViT-H penultimate hidden states
    tokens = ip.project(x)
    assert tokens.shape == (2, 16, 768) and tokens.dtype == torch.float32
    ref = reference_resampler({k: v.float() for k, v in sd.items()}, x, heads=12)
    assert torch.allclose(tokens.double(), ref, atol=1e-4), float((tokens.double() - ref).abs().max())
    with pytest.raises(IPAdapterError, match="width 1280"):
        ip.project(torch.randn(1, 257, 1024))


def test_sdxl_layout_on_meta_tensors():
    sd = ip_adapter_state_dict(**SDXL_PLUS, layer_widths=SDXL_LAYER_WIDTHS, device="meta")
    s = inspect_state_dict(sd)
    assert (s.dim, s.heads, s.num_queries, s.embedding_dim, s.output_dim) == (1280, 20, 16, 1280, 2048)
    assert s.family == "SDXL" and len(s.layer_widths) == 70 and s.layer_widths[139] == 1280


def test_refusals(tmp_path):
    sd = ip_adapter_state_dict(dim=64, depth=1, heads=1, num_queries=4, embedding_dim=32, output_dim=64,
                               layer_widths=[32, 64], dtype=torch.float32)
    plain = {k: v for k, v in sd.items() if not k.startswith("image_proj.")}
    plain["image_proj.proj.weight"] = torch.zeros(4, 4)
    with pytest.raises(IPAdapterError, match="non-Plus"):
        inspect_state_dict(plain)
    with pytest.raises(IPAdapterError, match="not an IP-Adapter"):
        inspect_state_dict({"foo": torch.zeros(1)})
    broken = dict(sd)
    del broken["ip_adapter.3.to_v_ip.weight"]
    with pytest.raises(IPAdapterError, match="no to_v_ip"):
        inspect_state_dict(broken)
    with pytest.raises(IPAdapterError, match="pickle"):
        IPAdapterPlus.load(str(tmp_path / "ip-adapter-plus_sd15.bin"))
    extra = dict(sd, **{"image_proj.pos_emb.weight": torch.zeros(3, 64)})
    with pytest.raises(IPAdapterError, match="does not match the Resampler"):
        IPAdapterPlus(extra)


# ----------------------------------------------------------------------------- bad files (issue 9)
def _small_sd():
    return ip_adapter_state_dict(dim=64, depth=1, heads=1, num_queries=4, embedding_dim=32, output_dim=64,
                                 layer_widths=[32, 64], dtype=torch.float16)


def _no_array_reads(monkeypatch):
    """Fail the test if safetensors is asked for any tensor (the header check must come first)."""
    import safetensors

    def boom(*a, **k):
        raise AssertionError("an array was read before the header was checked")

    monkeypatch.setattr(safetensors, "safe_open", boom)
    import safetensors.torch as st

    monkeypatch.setattr(st, "load_file", boom)


def test_truncated_pickled_and_foreign_files_get_the_packs_error(tmp_path, monkeypatch):
    """Issue 9: a truncated or pickled IP-Adapter file gave a raw SafetensorError. Each bad file now gets an
    IPAdapterError naming the file, what is wrong and what to do, before any array is read."""
    good = save_ip_adapter(tmp_path / "good.safetensors", _small_sd())
    data = open(good, "rb").read()
    cases = {
        "truncated.safetensors": (data[: len(data) - 100], "truncated"),
        "header_cut.safetensors": (data[:40], "truncated"),
        "empty.safetensors": (b"", "too few for a safetensors file"),
        "tiny.safetensors": (b"\x01\x02", "too few for a safetensors file"),
        "random.safetensors": (bytes(range(256)) * 8, "not a safetensors file"),
        "notjson.safetensors": (struct.pack("<Q", 6) + b"abcdef" + b"\0" * 8, "header is not JSON"),
        "list.safetensors": (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        "deep.safetensors": (struct.pack("<Q", 200_002) + b"[" * 100_001 + b"]" * 100_001, "nested too deeply"),
        "offsets.safetensors": (_header_file({"a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}}, 4),
                                "truncated"),
        "inconsistent.safetensors": (_header_file({"a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 6]}}, 8),
                                     "inconsistent"),
        "dtype.safetensors": (_header_file({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 1]}}, 1),
                              "dtype 'X9'"),
        "checkpoint.safetensors": (_header_file({"model.diffusion_model.x": {"dtype": "F16", "shape": [2],
                                                                            "data_offsets": [0, 4]}}, 4),
                                   "not an IP-Adapter file"),
    }
    torch.save(_small_sd(), tmp_path / "pickled.safetensors")  # a zip pickle under the right name
    cases["pickled.safetensors"] = (open(tmp_path / "pickled.safetensors", "rb").read(), "pickle")
    import pickle

    cases["oldpickle.safetensors"] = (pickle.dumps({"a": 1}, protocol=2), "pickle")
    for name, (blob, _) in cases.items():
        (tmp_path / name).write_bytes(blob)
    _no_array_reads(monkeypatch)
    for name, (_, match) in cases.items():
        with pytest.raises(IPAdapterError, match=match) as e:
            IPAdapterPlus.load(str(tmp_path / name))
        msg = str(e.value)
        assert msg.startswith(name + ":"), msg
        assert "download" in msg or "IP-Adapter Plus" in msg, msg
        assert type(e.value).__module__ == "sentinel"  # short error title in ComfyUI


def _header_file(header: dict, data_bytes: int) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * data_bytes


def test_header_is_checked_before_arrays_and_only_adapter_tensors_are_read(tmp_path, monkeypatch):
    sd = _small_sd()
    sd["unrelated.big"] = torch.zeros(1000, dtype=torch.float16)
    path = save_ip_adapter(tmp_path / "with_extra.safetensors", sd)
    header = read_safetensors_header(path)
    assert header["image_proj.latents"][:2] == ("F16", (1, 4, 64))
    import safetensors

    real = safetensors.safe_open
    read = []

    class Spy:
        def __init__(self, *a, **k):
            self.f = real(*a, **k)

        def __enter__(self):
            self.inner = self.f.__enter__()
            return self

        def __exit__(self, *a):
            return self.f.__exit__(*a)

        def get_tensor(self, k):
            read.append(k)
            return self.inner.get_tensor(k)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    ip = IPAdapterPlus.load(path)
    assert "unrelated.big" not in read and len(read) == len(sd) - 1
    assert torch.equal(ip.kv(1)[0], sd["ip_adapter.1.to_k_ip.weight"])
