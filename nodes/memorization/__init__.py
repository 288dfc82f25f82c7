"""Memorization family: the anisotropy detector (Asthana & Belagiannis, ICLR 2026), Wen et al.'s first-step norm,
prompt-embedding mitigation, calibration, and the volume growth rate of Hasegawa & Yasuda (ease of reproduction).

Pure maths: ``anisotropy.py``, ``calibration.py``, ``mitigation.py``, ``volume.py`` (torch / numpy / scikit-learn
only). ComfyUI glue: ``probe.py`` (probe samplers run through a normal CFGGuider). Nodes: ``comfy_nodes.py``.
"""
