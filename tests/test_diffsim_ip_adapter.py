"""IP-Adapter Plus reader: a generated file with the released key layout and SD1.5 shapes, the SDXL layout on
meta tensors, and the Resampler against an independent float64 loop-over-heads implementation."""

from __future__ import annotations

import math

import pytest
import torch
from _diffsim import SD15_LAYER_WIDTHS, SD15_PLUS, SDXL_PLUS, ip_adapter_state_dict, save_ip_adapter
from diffusion_sentinel.nodes.diffsim.ip_adapter import IPAdapterError, IPAdapterPlus, inspect_state_dict

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
