"""Diffusion Sentinel: a ComfyUI node pack that watches sampling and the images it makes.

ComfyUI imports this file as the pack's entry point (V3: ``comfy_entrypoint``). The pack is a regular Python
package, so everything inside is imported relatively (ComfyUI has a top-level module named ``nodes`` too).

Only public names of ComfyUI's V3 API are used (``comfy_api.latest.ComfyExtension`` and ``.io``), which exist in
0.3.64 (``io`` = ``_io``) and in newer versions (``io`` = ``_io_public``); see nodes/common/comfy_types.py.
"""

import logging
import sys

WEB_DIRECTORY = "./web"

try:
    from comfy_api.latest import ComfyExtension
except ImportError as _e:  # imported outside ComfyUI (e.g. by tooling), or a ComfyUI without the V3 API
    ComfyExtension = None
    if "comfy" in sys.modules or "folder_paths" in sys.modules:  # inside a ComfyUI that is too old
        logging.getLogger("diffusion_sentinel").error(
            "Diffusion Sentinel needs ComfyUI 0.3.64 or newer (the V3 node API comfy_api.latest); this ComfyUI has "
            "none (%s). Update ComfyUI; no Sentinel nodes were registered.", _e)

if ComfyExtension is not None:
    from .nodes.registry import load_nodes

    class DiffusionSentinelExtension(ComfyExtension):
        async def get_node_list(self):
            return load_nodes()

    async def comfy_entrypoint():
        return DiffusionSentinelExtension()
