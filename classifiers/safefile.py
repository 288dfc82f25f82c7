"""Checking a safetensors file's header before any array is read (pure: json, struct, os).

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (one entry per tensor: dtype,
shape, data offsets; plus an optional ``__metadata__`` object of strings) and the raw data. Reading the header
alone costs microseconds, whatever the file holds, so a wrong file (a 2 GB checkpoint, a header with 300,000
tensor entries, metadata nested ten thousand levels deep) is refused before any array is loaded or any large JSON
is parsed. Both loaders of the pack (classifier files, trajectory files) go through :func:`read_header`.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

# Our own files have headers of a few kB (a 10,000-step trajectory's schedule is ~250 kB); 4 MiB leaves room.
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32  # our metadata is at most 3-4 levels deep
NUMERIC_DTYPES = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "BF16", "F32", "F64"}


class HeaderError(ValueError):
    """The file is not a safetensors file the pack can read; the message says why (callers add what to do)."""

    __module__ = "sentinel"


def json_depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative: safe on any depth)."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v)
    return depth


def loads_bounded(text: str | bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads that turns every failure (bad JSON, RecursionError on deep nesting, too deep for us) into a
    :class:`HeaderError` naming ``what``."""
    try:
        obj = json.loads(text)
    except RecursionError as e:
        raise HeaderError(f"{what} is JSON nested too deeply to be read") from e
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise HeaderError(f"{what} is not valid JSON ({e})") from e
    if json_depth(obj) > max_depth:
        raise HeaderError(f"{what} is JSON nested more than {max_depth} levels deep (ours never is)")
    return obj


def read_header(path: str | os.PathLike, max_header_bytes: int = MAX_HEADER_BYTES,
                max_tensors: int | None = None) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """(``__metadata__`` dict of strings, {tensor name: {"dtype", "shape", "data_offsets"}}) of a safetensors file.

    Reads 8 + N bytes only. Refuses: a file shorter than 8 bytes, a header longer than ``max_header_bytes`` or than
    the file, JSON that is not an object (or nested too deeply), metadata that is not strings, more than
    ``max_tensors`` entries, malformed entries, data offsets past the end of the file.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size < 8:
        raise HeaderError(f"it has {size} bytes, too few for a safetensors file")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > max_header_bytes:
            raise HeaderError(f"its header is {n:,} bytes, more than the {max_header_bytes:,} bytes any Diffusion "
                              "Sentinel file has (a model checkpoint or another tool's file?)")
        if n > size - 8:
            raise HeaderError(f"it is truncated or not a safetensors file (header of {n:,} bytes in a file of "
                              f"{size:,} bytes)")
        raw = f.read(n)
    obj = loads_bounded(raw, "its header", max_depth=4)
    if not isinstance(obj, dict):
        raise HeaderError("its header is not a JSON object")
    meta = obj.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise HeaderError("its __metadata__ is not a map of strings")
    if max_tensors is not None and len(obj) > max_tensors:
        raise HeaderError(f"it holds {len(obj):,} tensors; a Diffusion Sentinel file of this kind holds at most "
                          f"{max_tensors}")
    data_size = size - 8 - n
    for name, e in obj.items():
        ok = (isinstance(e, dict) and isinstance(e.get("dtype"), str) and isinstance(e.get("shape"), list)
              and all(isinstance(d, int) and d >= 0 for d in e["shape"])
              and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2
              and all(isinstance(o, int) for o in e["data_offsets"]))
        if not ok:
            raise HeaderError(f"its header entry for {name!r} is malformed")
        a, b = e["data_offsets"]
        if not 0 <= a <= b <= data_size:
            raise HeaderError(f"tensor {name!r} points past the end of the file (truncated?)")
    return meta, obj


def check_entries(entries: dict[str, dict[str, Any]], allowed: set[str] | frozenset[str],
                  required: set[str] | frozenset[str] = frozenset(), kind: str = "tensors") -> None:
    """Names, count and dtypes of the header's tensors, before any is read."""
    unknown = set(entries) - set(allowed)
    if unknown:
        shown = sorted(unknown)[:5]
        more = f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
        raise HeaderError(f"it holds unexpected {kind} {shown}{more}")
    for name, e in entries.items():
        if e["dtype"] not in NUMERIC_DTYPES:
            raise HeaderError(f"tensor {name!r} has dtype {e['dtype']}, which the pack never writes")
    missing = set(required) - set(entries)
    if missing:
        raise HeaderError(f"{kind} missing: {sorted(missing)}")
