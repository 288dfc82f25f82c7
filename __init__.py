"""Diffusion Sentinel: a ComfyUI node pack that watches sampling and the images it makes.

ComfyUI imports this file as the pack's entry point (V3: ``comfy_entrypoint``). The pack is a regular Python
package, so everything inside is imported relatively (ComfyUI has a top-level module named ``nodes`` too).
"""

WEB_DIRECTORY = "./web"

try:
    from comfy_api.latest import ComfyExtension
except ImportError:  # imported outside ComfyUI (e.g. by tooling): nothing to register
    ComfyExtension = None

if ComfyExtension is not None:
    from .nodes.registry import load_nodes

    class DiffusionSentinelExtension(ComfyExtension):
        async def get_node_list(self):
            return load_nodes()

    async def comfy_entrypoint():
        return DiffusionSentinelExtension()


