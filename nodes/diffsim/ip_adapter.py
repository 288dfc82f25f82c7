"""IP-Adapter Plus, read from its safetensors file: the Perceiver Resampler and the per-layer to_k_ip/to_v_ip.
Pure torch (+ safetensors); nothing here imports ComfyUI and nothing is ever unpickled.

Layout (tencent-ailab/IP-Adapter, Apache-2.0; docs/methods.md §2.8), written from the description:

- ``image_proj.*`` — Resampler: ``latents`` [1, Q, dim]; ``proj_in`` Linear(embedding_dim -> dim);
  ``layers.{i}.0`` PerceiverAttention (``norm1``, ``norm2`` LayerNorm(dim); ``to_q`` [inner, dim],
  ``to_kv`` [2·inner, dim], ``to_out`` [dim, inner], no biases; inner = heads · 64);
  ``layers.{i}.1`` FeedForward = Sequential(LayerNorm, Linear(dim, 4·dim), GELU, Linear(4·dim, dim)) (keys
  ``.1.0``, ``.1.1``, ``.1.3``); ``proj_out`` Linear(dim -> output_dim); ``norm_out`` LayerNorm(output_dim).
  SD1.5 Plus: dim 768, 12 heads, 16 queries, embedding 1280 (CLIP ViT-H), output 768.
  SDXL Plus (ViT-H): dim 1280, 20 heads, 16 queries, embedding 1280, output 2048.
- ``ip_adapter.{k}.to_k_ip.weight`` / ``.to_v_ip.weight`` [layer width, output_dim], k = 2·i + 1 for the
  i-th cross-attention layer in diffusers' processor order (down blocks, up blocks, mid block).

PerceiverAttention: q = to_q(norm2(latents)); k, v = to_kv(cat(norm1(x), norm2(latents))).chunk(2);
softmax((q·s)(k·s)ᵀ) v per head with s = dim_head^(-1/4) (softmax in float32), then to_out. The Resampler:
latents = attn(x, latents) + latents; latents = ff(latents) + latents, 4 times, then norm_out(proj_out(.)).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass

import torch
from torch import nn

DIM_HEAD = 64  # the Resampler's head size in every released IP-Adapter Plus


class IPAdapterError(ValueError):
    """The file is not an IP-Adapter Plus safetensors file, or does not fit the model / CLIP vision."""

    __module__ = "sentinel"  # ComfyUI titles errors with module + class name: keep it short


# ----------------------------------------------------------------------------- safetensors header, read first
MAX_HEADER_BYTES = 16 << 20  # an IP-Adapter Plus header is ~20 kB; safetensors itself allows 100 MB
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
REDOWNLOAD = ("download the .safetensors file again (e.g. ip-adapter-plus_sd15.safetensors from h94/IP-Adapter) "
              "into models/ipadapter")


def _not_safetensors(head: bytes) -> str:
    if head[:4] == b"PK\x03\x04":
        return "it is a zip archive (a PyTorch .bin/.pt checkpoint, which is a pickle), not safetensors"
    if head[:1] == b"\x80":
        return "it is a Python pickle (a PyTorch .bin/.pt checkpoint), not safetensors"
    return "it is not a safetensors file (its first 8 bytes are not a plausible header length)"


def read_safetensors_header(path: str) -> dict[str, tuple[str, tuple[int, ...], tuple[int, int]]]:
    """{tensor name: (dtype, shape, (start, end))} from a safetensors header, checked against the file's size,
    reading only 8 + N bytes. A pickle/zip, a truncated file, a bad or absurd header: an IPAdapterError saying
    what is wrong and what to do. Nothing is unpickled and no array is read."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise IPAdapterError(f"{name}: the file has {size} bytes, too few for a safetensors file; {REDOWNLOAD}")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER_BYTES:
            raise IPAdapterError(f"{name}: {_not_safetensors(head)}; {REDOWNLOAD}")
        if n > size - 8:
            raise IPAdapterError(f"{name}: the file is truncated (its header alone needs {n + 8:,} bytes, the file has "
                                 f"{size:,}); {REDOWNLOAD}")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except RecursionError:
        raise IPAdapterError(f"{name}: the safetensors header is JSON nested too deeply to read; {REDOWNLOAD}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise IPAdapterError(f"{name}: {_not_safetensors(head)} (header is not JSON: {e}); {REDOWNLOAD}") from None
    if not isinstance(header, dict):
        raise IPAdapterError(f"{name}: the safetensors header is not a JSON object; {REDOWNLOAD}")
    data = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...], tuple[int, int]]] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], tuple(int(x) for x in entry["shape"]), entry["data_offsets"]
            start, end = int(start), int(end)
        except (KeyError, TypeError, ValueError):
            raise IPAdapterError(f"{name}: the header entry {key!r} is malformed; {REDOWNLOAD}") from None
        if dtype not in SAFETENSORS_DTYPES:
            raise IPAdapterError(f"{name}: tensor {key!r} has dtype {dtype!r}, which an IP-Adapter never uses; "
                                 f"{REDOWNLOAD}")
        nbytes = math.prod(shape) * torch.empty((), dtype=SAFETENSORS_DTYPES[dtype]).element_size()
        if any(x < 0 for x in shape) or not 0 <= start <= end or end - start != nbytes:
            raise IPAdapterError(f"{name}: the header entry {key!r} is inconsistent (shape {list(shape)}, bytes "
                                 f"{start}..{end}); {REDOWNLOAD}")
        if end > data:
            raise IPAdapterError(f"{name}: the file is truncated ({data:,} bytes of tensor data, tensor {key!r} ends at "
                                 f"{end:,}); {REDOWNLOAD}")
        out[str(key)] = (dtype, shape, (start, end))
    return out


def meta_state_dict(header: dict[str, tuple[str, tuple[int, ...], tuple[int, int]]]) -> dict[str, torch.Tensor]:
    """Shape-only (meta) tensors for a header: enough for :func:`inspect_state_dict`, no memory, no I/O."""
    return {k: torch.empty(shape, dtype=SAFETENSORS_DTYPES[dt], device="meta") for k, (dt, shape, _) in header.items()}


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int = DIM_HEAD):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        b, n_lat, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)

        def heads(t):
            return t.reshape(b, t.shape[1], self.heads, self.dim_head).transpose(1, 2)

        q, k, v = heads(q), heads(k), heads(v)
        s = self.dim_head ** -0.25
        w = torch.softmax(((q * s) @ (k * s).transpose(-2, -1)).float(), dim=-1).to(q.dtype)
        out = (w @ v).transpose(1, 2).reshape(b, n_lat, self.heads * self.dim_head)
        return self.to_out(out)


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class Resampler(nn.Module):
    """IP-Adapter Plus image projection: CLIP vision hidden states [B, T, E] -> image tokens [B, Q, output_dim]."""

    def __init__(self, dim: int, depth: int, heads: int, num_queries: int, embedding_dim: int, output_dim: int,
                 ff_mult: int = 4, dim_head: int = DIM_HEAD):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, dim_head), feed_forward(dim, ff_mult)]) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.repeat(x.shape[0], 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


@dataclass(frozen=True)
class IPAdapterSpec:
    """What the shapes in an IP-Adapter Plus state dict say about it."""

    dim: int
    depth: int
    heads: int
    num_queries: int
    embedding_dim: int  # CLIP vision hidden size it expects (1280 = ViT-H)
    output_dim: int  # the U-Net's cross-attention (text context) width: 768 SD1.5, 2048 SDXL
    ff_mult: int
    layer_widths: dict[int, int]  # k -> width of that cross-attention layer (to_k_ip rows)

    @property
    def family(self) -> str:
        return {768: "SD1.5", 1024: "SD2.x", 2048: "SDXL"}.get(self.output_dim, f"context width {self.output_dim}")


def split_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Flat safetensors keys -> (image_proj, ip_adapter) dicts with the prefixes removed."""
    proj, ip = {}, {}
    for k, v in sd.items():
        if k.startswith("image_proj."):
            proj[k[len("image_proj."):]] = v
        elif k.startswith("ip_adapter."):
            ip[k[len("ip_adapter."):]] = v
        elif k.startswith("adapter_modules."):
            ip[k[len("adapter_modules."):]] = v
    return proj, ip


def inspect_state_dict(sd: dict[str, torch.Tensor]) -> IPAdapterSpec:
    """Read the Resampler sizes and the per-layer widths from the shapes (works on meta tensors too)."""
    proj, ip = split_state_dict(sd)
    if not proj or not ip:
        raise IPAdapterError("not an IP-Adapter file (expected keys starting with 'image_proj.' and 'ip_adapter.'): "
                             "choose an IP-Adapter Plus .safetensors, e.g. ip-adapter-plus_sd15.safetensors")
    if "latents" not in proj:
        kind = "an IP-Adapter (non-Plus) file" if "proj.weight" in proj else "an unsupported IP-Adapter variant"
        raise IPAdapterError(f"this is {kind}; DiffSim-C needs IP-Adapter Plus (its image projection is a "
                             "Resampler with 'image_proj.latents'), e.g. ip-adapter-plus_sd15.safetensors")
    try:
        _, num_queries, dim = proj["latents"].shape
        output_dim = proj["proj_out.weight"].shape[0]
        embedding_dim = proj["proj_in.weight"].shape[1]
        depth = 1 + max(int(m.group(1)) for m in (re.match(r"layers\.(\d+)\.", k) for k in proj) if m)
        inner = proj["layers.0.0.to_q.weight"].shape[0]
        ff_inner = proj["layers.0.1.1.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise IPAdapterError(f"IP-Adapter Plus image_proj is incomplete or has unexpected shapes ({e})") from e
    widths: dict[int, int] = {}
    for k, v in ip.items():
        m = re.fullmatch(r"(\d+)\.to_k_ip\.weight", k)
        if m:
            if f"{m.group(1)}.to_v_ip.weight" not in ip:
                raise IPAdapterError(f"IP-Adapter layer {m.group(1)} has to_k_ip but no to_v_ip")
            if v.shape[1] != output_dim:
                raise IPAdapterError(f"ip_adapter.{k} has shape {tuple(v.shape)}; expected [width, {output_dim}]")
            widths[int(m.group(1))] = int(v.shape[0])
    if not widths:
        raise IPAdapterError("the IP-Adapter file has no ip_adapter.<k>.to_k_ip.weight keys")
    return IPAdapterSpec(dim=int(dim), depth=depth, heads=int(inner) // DIM_HEAD, num_queries=int(num_queries),
                         embedding_dim=int(embedding_dim), output_dim=int(output_dim), ff_mult=int(ff_inner) // int(dim),
                         layer_widths=dict(sorted(widths.items())))


class IPAdapterPlus:
    """A loaded IP-Adapter Plus: ``project(hidden_states)`` -> image tokens; ``kv(k)`` -> (to_k_ip, to_v_ip) weights."""

    def __init__(self, sd: dict[str, torch.Tensor], name: str = "ip-adapter"):
        self.spec = inspect_state_dict(sd)
        self.name = name
        proj, ip = split_state_dict(sd)
        s = self.spec
        self.resampler = Resampler(s.dim, s.depth, s.heads, s.num_queries, s.embedding_dim, s.output_dim, s.ff_mult)
        missing, unexpected = self.resampler.load_state_dict({k: v.float() for k, v in proj.items()}, strict=False)
        if missing or unexpected:
            raise IPAdapterError(f"IP-Adapter Plus image_proj does not match the Resampler layout (missing "
                                 f"{missing[:4]}, unexpected {unexpected[:4]})")
        self.resampler.eval().requires_grad_(False)
        self.weights = {k: (ip[f"{k}.to_k_ip.weight"], ip[f"{k}.to_v_ip.weight"]) for k in s.layer_widths}

    @classmethod
    def load(cls, path: str) -> IPAdapterPlus:
        """Read a .safetensors IP-Adapter Plus file (no code is executed: no pickle).

        The header is read and checked first (size, offsets, names and shapes of an IP-Adapter Plus) so that a
        pickle, a truncated download or another model's file is refused before any array is read; then only the
        image_proj / ip_adapter tensors are read."""
        name = os.path.basename(path)
        if not str(path).lower().endswith(".safetensors"):
            raise IPAdapterError(f"{name}: only .safetensors IP-Adapter files are read (a .bin is a pickle and could "
                                 "run code); download the .safetensors version")
        header = read_safetensors_header(path)
        try:
            inspect_state_dict(meta_state_dict(header))
        except IPAdapterError as e:
            raise IPAdapterError(f"{name}: {e}") from None
        from safetensors import safe_open

        keys = [k for k in header if k.startswith(("image_proj.", "ip_adapter.", "adapter_modules."))]
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                sd = {k: f.get_tensor(k) for k in keys}
        except Exception as e:  # the header was fine, the data was not (e.g. the file changed while reading)
            raise IPAdapterError(f"{name}: the file could not be read ({type(e).__name__}: {e}); {REDOWNLOAD}") \
                from None
        return cls(sd, name=name)

    @property
    def num_layers(self) -> int:
        return len(self.weights)

    def kv(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weights[k]

    @torch.no_grad()
    def project(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """CLIP vision penultimate hidden states [B, T, embedding_dim] -> image tokens [B, Q, output_dim] (fp32)."""
        if hidden_states.shape[-1] != self.spec.embedding_dim:
            raise IPAdapterError(
                f"this IP-Adapter Plus expects CLIP vision features of width {self.spec.embedding_dim} "
                f"({'ViT-H/14' if self.spec.embedding_dim == 1280 else 'its own encoder'}), but the CLIP vision "
                f"model gives {hidden_states.shape[-1]}: load the image encoder it was trained with")
        dev = hidden_states.device
        self.resampler.to(dev)
        return self.resampler(hidden_states.float())

    def check_layers(self, widths_in_order: list[int], model_name: str = "model") -> None:
        """The i-th cross-attention layer of the model must have key 2·i + 1 and the same width."""
        expected = {2 * i + 1: w for i, w in enumerate(widths_in_order)}
        if expected != self.spec.layer_widths:
            raise IPAdapterError(
                f"{self.name} ({self.spec.family}, {self.num_layers} cross-attention layers) does not fit this "
                f"{model_name} ({len(widths_in_order)} cross-attention layers, widths {sorted(set(widths_in_order))}"
                f"): use the IP-Adapter Plus made for this model family")
