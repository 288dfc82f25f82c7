"""Node families of Diffusion Sentinel, one sub-package each (trajectory, diffsim, memorization, diversity).

Importing this package (or any pure-math module in it) does not import ComfyUI; only the ``comfy_nodes``
module of each family and the glue modules next to it do. See registry.py for how families are collected.
"""
