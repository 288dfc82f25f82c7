"""The paper's block names on hand-written U-Net layouts (the ComfyUI-built ones are in tests/integration)."""

from __future__ import annotations

import pytest
from diffusion_sentinel.nodes.diffsim.blocks import AttnSite, BlockError, UNetLayout


def sd15_layout() -> UNetLayout:
    """SD1.5: 12 input blocks (attention in 1,2 / 4,5 / 7,8), middle, 12 output blocks (attention in 3..11)."""
    in_levels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    out_levels = [3, 3, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0]
    width = {0: 40, 1: 80, 2: 160}
    sites = [AttnSite("input", i, 0, in_levels[i], 8, width[in_levels[i]]) for i in (1, 2, 4, 5, 7, 8)]
    sites.append(AttnSite("middle", 0, 0, 3, 8, 160))
    sites += [AttnSite("output", i, 0, out_levels[i], 8, width[out_levels[i]]) for i in range(3, 12)]
    return UNetLayout(sites, in_levels, out_levels, model_name="SD15 U-Net")


def sdxl_layout() -> UNetLayout:
    in_levels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    out_levels = [2, 2, 2, 1, 1, 1, 0, 0, 0]
    depth = {1: 2, 2: 10}
    heads = {1: 10, 2: 20}
    sites = [AttnSite("input", i, j, in_levels[i], heads[in_levels[i]], 64) for i in (4, 5, 7, 8)
             for j in range(depth[in_levels[i]])]
    sites += [AttnSite("middle", 0, j, 2, 20, 64) for j in range(10)]
    sites += [AttnSite("output", i, j, out_levels[i], heads[out_levels[i]], 64) for i in range(6)
              for j in range(depth[out_levels[i]])]
    return UNetLayout(sites, in_levels, out_levels, model_name="SDXL U-Net")


def test_sd15_presets_match_the_paper_table():
    lay = sd15_layout()
    expect = {"U_0": ("output", 5, 0), "U_1": ("output", 8, 0), "U_2": ("output", 11, 0), "D_0": ("input", 2, 0),
              "D_1": ("input", 5, 0), "D_2": ("input", 8, 0), "mid": ("middle", 0, 0)}
    assert {p: lay.resolve(p).key for p in expect} == expect
    assert lay.resolve("U_0").width == 1280 and lay.resolve("U_2").width == 320


def test_sdxl_presets_last_attention_last_transformer():
    lay = sdxl_layout()
    assert lay.resolve("U_0").key == ("output", 2, 9)
    assert lay.resolve("U_1").key == ("output", 5, 1)
    assert lay.resolve("D_0").key == ("input", 5, 1)
    assert lay.resolve("D_1").key == ("input", 8, 9)
    assert lay.resolve("mid").key == ("middle", 0, 9)
    with pytest.raises(BlockError, match=r"block U_2.*up path has 2 level\(s\).*U_0, U_1, D_0, D_1, mid"):
        lay.resolve("U_2")


def test_ip_adapter_order_is_down_up_mid():
    sites = sd15_layout().cross_attention_sites()
    assert [s.key[:2] for s in sites][:6] == [("input", i) for i in (1, 2, 4, 5, 7, 8)]
    assert sites[8].key == ("output", 5, 0)  # U_0's attn2 = ip_adapter.17 (2*8+1)
    assert sites[-1].key == ("middle", 0, 0)  # ip_adapter.31
    assert [s.width for s in sites] == [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320,
                                        320, 1280]
    assert len(sdxl_layout().cross_attention_sites()) == 70


def test_custom_blocks():
    lay = sdxl_layout()
    assert lay.resolve("output 2 3").key == ("output", 2, 3)
    assert lay.resolve("output,2").key == ("output", 2, 9)  # no index: the last transformer
    assert lay.resolve(" middle 0 ").key == ("middle", 0, 9)
    with pytest.raises(BlockError, match=r"\(output, 7\) has no attention"):
        lay.resolve("output 7 0")
    with pytest.raises(BlockError, match="transformer indices 0..1"):
        lay.resolve("output 4 5")
    with pytest.raises(BlockError, match="not understood"):
        lay.resolve("U-zero")


def test_missing_self_or_cross_attention():
    lay = UNetLayout([AttnSite("output", 1, 0, 0, 8, 8, self_attn=False), AttnSite("input", 1, 0, 0, 8, 8,
                                                                                      cross_attn=False)],
                     [0, 0], [0, 0], model_name="odd U-Net")
    with pytest.raises(BlockError, match="self-attention at block U_0"):
        lay.resolve("U_0")
    with pytest.raises(BlockError, match="cross-attention at block D_0"):
        lay.resolve("D_0", need="cross")
    with pytest.raises(BlockError, match="middle block has no attention"):
        lay.resolve("mid")
