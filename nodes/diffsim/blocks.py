"""DiffSim's block names (U_0, U_1, U_2, D_0, D_1, D_2, mid) mapped to ComfyUI attention patch keys. Pure.

The released SD1.5 code picks ``unet.up_blocks[1:][k].attentions[-1].transformer_blocks[-1]`` for U_k,
``unet.down_blocks[:-1][k].attentions[-1].transformer_blocks[-1]`` for D_k and
``mid_block.attentions[-1].transformer_blocks[-1]`` for mid (docs/methods.md §2.2): U_k is the last
transformer of the last attention block of the k-th *up level that has attention* (deepest first), D_k the
same for the k-th down level with attention (full resolution first). We apply exactly that rule to the
U-Net's structure, so every U-Net gets the names the paper would give it:

- SD1.5 (12 input / 12 output blocks, depth 1): U_0 = ("output", 5, 0), U_1 = ("output", 8, 0),
  U_2 = ("output", 11, 0), D_0 = ("input", 2, 0), D_1 = ("input", 5, 0), D_2 = ("input", 8, 0),
  mid = ("middle", 0, 0). (ComfyUI names the middle block ("middle", 0); ("middle", 1) never matches.)
- SDXL (9 input / 9 output blocks; attention only on the two deeper levels, depth 2 and 10): the up levels
  with attention are diffusers ``up_blocks[0]`` (output 0-2, depth 10) and ``up_blocks[1]`` (output 3-5,
  depth 2), which is also the list the SDXL script indexes (``up_blocks[:-1]``), so U_0 = ("output", 2, 9)
  (= up_blocks.0.attentions.2.transformer_blocks.9, 1280 channels, 32x32 tokens at 1024 px, the same
  relative depth as SD1.5's U_0), U_1 = ("output", 5, 1); D_0 = ("input", 5, 1), D_1 = ("input", 8, 9);
  mid = ("middle", 0, 9). SDXL has no U_2 or D_2.

A key is (block name, block number, depth index inside the SpatialTransformer), the most specific form of
ComfyUI's ``patches_replace`` keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BLOCK_PRESETS = ("U_0", "U_1", "U_2", "D_0", "D_1", "D_2", "mid")
CUSTOM_BLOCK = "custom"


class BlockError(ValueError):
    """The chosen block does not exist (or has no attention of the needed kind) in this model."""

    __module__ = "sentinel"  # ComfyUI titles errors with module + class name: keep it short


@dataclass(frozen=True)
class AttnSite:
    """One transformer block (attn1 + attn2) of a U-Net, addressed the way ComfyUI's patches are."""

    name: str  # "input" | "middle" | "output"
    number: int  # the block id in that list
    index: int  # depth index inside the SpatialTransformer (ComfyUI's block_index)
    level: int  # resolution level: 0 = full latent resolution, 1 = /2, ...
    heads: int
    dim_head: int
    self_attn: bool = True  # attn1 attends to the image tokens (False if disable_self_attn)
    cross_attn: bool = True  # has an attn2

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.name, self.number, self.index)

    @property
    def width(self) -> int:
        return self.heads * self.dim_head

    def describe(self) -> str:
        return f"{self.name} {self.number} (transformer {self.index})"


@dataclass
class UNetLayout:
    """Every attention site of a U-Net, in ComfyUI's forward order, plus the level of every block."""

    sites: list[AttnSite]
    input_levels: list[int] = field(default_factory=list)  # level of input block i
    output_levels: list[int] = field(default_factory=list)  # level of output block i
    model_name: str = "U-Net"

    def sites_of(self, name: str, number: int) -> list[AttnSite]:
        return [s for s in self.sites if s.name == name and s.number == number]

    def site(self, key: tuple[str, int, int]) -> AttnSite | None:
        for s in self.sites:
            if s.key == tuple(key):
                return s
        return None

    def cross_attention_sites(self) -> list[AttnSite]:
        """Cross-attention sites in the order of diffusers' ``unet.attn_processors`` with attn1 left out:
        down blocks, then up blocks, then the mid block (the IP-Adapter key order, k = 2·i + 1)."""
        order = {"input": 0, "output": 1, "middle": 2}
        return sorted((s for s in self.sites if s.cross_attn), key=lambda s: (order[s.name], s.number, s.index))

    def available_presets(self, need: str = "self") -> list[str]:
        return [p for p in BLOCK_PRESETS if isinstance(self._find(p, need), AttnSite)]

    # ------------------------------------------------------------------ names -> keys
    def _level_groups(self, name: str) -> list[list[int]]:
        """Block numbers grouped by level, in forward order, keeping only blocks with self-attention."""
        levels = self.input_levels if name == "input" else self.output_levels
        groups: dict[int, list[int]] = {}
        order: list[int] = []
        for number, lvl in enumerate(levels):
            if any(s.self_attn for s in self.sites_of(name, number)):
                if lvl not in groups:
                    groups[lvl] = []
                    order.append(lvl)
                groups[lvl].append(number)
        return [groups[lvl] for lvl in order]

    def resolve(self, block: str, need: str = "self") -> AttnSite:
        """The site of a paper block name (U_0 ... mid) or a custom "output 5 0" / "output,5" string.

        ``need`` is "self" (DiffSim-S: attn1 must be a self-attention) or "cross" (DiffSim-C: needs attn2).
        Raises BlockError naming the block and the blocks this U-Net does have.
        """
        found = self._find(block.strip(), need)
        if isinstance(found, AttnSite):
            return found
        kind = "self-attention" if need == "self" else "cross-attention"
        avail = self.available_presets(need)
        raise BlockError(f"DiffSim needs a U-Net with {kind} at block {block.strip()}; in this {self.model_name} "
                         f"{found}. Choose one of the blocks it has: {', '.join(avail) if avail else '(none)'}, "
                         "or a custom '<input|middle|output> <number> [<transformer index>]'.")

    def _find(self, block: str, need: str) -> AttnSite | str:
        """The site, or the reason there is none."""
        m = re.fullmatch(r"([UD])_(\d+)", block)
        if m:
            name = "output" if m.group(1) == "U" else "input"
            groups = self._level_groups(name)
            k = int(m.group(2))
            if k >= len(groups):
                return (f"its {'up' if name == 'output' else 'down'} path has {len(groups)} level(s) with "
                        "self-attention")
            site = self.sites_of(name, groups[k][-1])[-1]
        elif block == "mid":
            mids = [s for s in self.sites if s.name == "middle"]
            if not mids:
                return "its middle block has no attention"
            site = mids[-1]
        else:
            site = self._parse_custom(block)
            if isinstance(site, str):
                return site
        if need == "self" and not site.self_attn:
            return f"{site.describe()} has no self-attention"
        if need == "cross" and not site.cross_attn:
            return f"{site.describe()} has no cross-attention"
        return site

    def _parse_custom(self, text: str) -> AttnSite | str:
        parts = [p for p in re.split(r"[\s,;:/()]+", text) if p]
        if not 2 <= len(parts) <= 3 or parts[0] not in ("input", "middle", "output") or \
                not all(p.isdigit() for p in parts[1:]):
            return (f"the block name {text!r} is not understood (presets: {', '.join(BLOCK_PRESETS)}; custom: "
                    "'<input|middle|output> <number> [<transformer index>]', e.g. 'output 5 0')")
        name, number = parts[0], int(parts[1])
        sites = self.sites_of(name, number)
        if not sites:
            with_attn = sorted({(s.name, s.number) for s in self.sites})
            return (f"block ({name}, {number}) has no attention (blocks with attention: "
                    f"{', '.join(f'{a} {b}' for a, b in with_attn) or 'none'})")
        if len(parts) == 3:
            match = [s for s in sites if s.index == int(parts[2])]
            if not match:
                return f"block ({name}, {number}) has transformer indices 0..{len(sites) - 1} only"
            return match[0]
        return sites[-1]
