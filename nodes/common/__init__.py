"""Pieces shared by the node families: custom socket types, ComfyUI glue helpers, charts."""
