"""Memorization family: the anisotropy detector (Asthana & Belagiannis, ICLR 2026), Wen et al.'s first-step norm,
prompt-embedding mitigation, calibration, and the volume growth rate of Hasegawa & Yasuda (ease of reproduction).

Pure maths: ``anisotropy.py``, ``calibration.py``, ``mitigation.py``, ``volume.py`` (torch / numpy / scikit-learn
only). ComfyUI glue: ``probe.py`` (the probe sampler, run through a normal CFGGuider, and the model checks) and the
drivers that use it, ``detection.py``, ``mitigation_probe.py``, ``volume_probe.py``. Nodes: one module each
(``guard_node.py``, ``wen_node.py``, ``calibrate_node.py``, ``volume_node.py``), listed by ``comfy_nodes.py``.
"""
