"""Collect the V3 node classes of every family (each ``nodes/<family>/comfy_nodes.py`` exports ``NODES``).

A family that fails to import is logged with its traceback and left out, so one broken optional part never
hides the rest of the pack; ``FAILED`` keeps the errors (the test suite asserts it stays empty).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import traceback

log = logging.getLogger("diffusion_sentinel")
FAILED: dict[str, str] = {}


def families() -> list[str]:
    from . import __path__ as pkg_path

    return sorted(m.name for m in pkgutil.iter_modules(pkg_path) if m.ispkg and m.name != "common")


def load_nodes() -> list[type]:
    """Import every family's comfy_nodes module and return all node classes (ids must be unique)."""
    found: dict[str, type] = {}
    FAILED.clear()
    for fam in families():
        try:
            mod = importlib.import_module(f"{__package__}.{fam}.comfy_nodes")
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(f"{fam}.comfy_nodes"):
                continue  # a family with only pure modules so far
            FAILED[fam] = traceback.format_exc()
            log.error("Diffusion Sentinel: the %s nodes failed to load:\n%s", fam, FAILED[fam])
            continue
        except Exception:
            FAILED[fam] = traceback.format_exc()
            log.error("Diffusion Sentinel: the %s nodes failed to load:\n%s", fam, FAILED[fam])
            continue
        for cls in getattr(mod, "NODES", []):
            node_id = cls.GET_SCHEMA().node_id
            if node_id in found:
                raise RuntimeError(f"duplicate node id {node_id} in family {fam}")
            found[node_id] = cls
    return list(found.values())
