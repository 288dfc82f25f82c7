"""The validation lab's --quick run (benchmarks/memorization_lab.py): it trains a small model on a few prompts tied to
one duplicated image each, Wen's and the trajectory score tell those prompts apart, its RESULT line parses, and a
second run from the cached model gives the same numbers. Slow (about 2 minutes on 2 busy cores): ``-m slow``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULT = re.compile(r"^RESULT auc_anisotropy=(?P<a>[0-9.]+|nan) auc_wen=(?P<w>[0-9.]+|nan) "
                    r"auc_trajectory=(?P<t>[0-9.]+|nan) vgr_trained_over_untrained=(?P<v>[0-9.]+|nan) "
                    r"mitigated=(?P<k>\d+)/(?P<n>\d+)$")


@pytest.mark.slow
def test_quick_lab_memorizes_on_purpose_and_prints_its_result_line(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memorization_lab.py"), "--quick", "--cache",
                        str(tmp_path / "cache"), "--json-out", str(tmp_path / "lab.json")],
                       capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    m = RESULT.match(lines[-1])
    assert m, lines[-1]
    for key in "awt":
        assert 0.0 <= float(m[key]) <= 1.0
    assert float(m["v"]) > 0 and int(m["k"]) <= int(m["n"])
    mem = next(ln for ln in lines if ln.startswith("MEMORIZED "))
    got, total = map(int, re.search(r"reproduced=(\d+)/(\d+)", mem).groups())
    assert total == 4 and 0 <= got <= total, mem
    assert int(m["n"]) == got  # mitigation is judged on the prompts that reproduced their image
    # the detectors that read the model's conditional/unconditional gap separate the prompts trained to memorize
    # from the ordinary ones even in this 300-step model (measured 0.94 and 0.94 with torch 2.13 on a CPU; the
    # 2400-step lab gives 1.00 and 1.00); a broken score or a model that learnt nothing lands near 0.5
    assert float(m["w"]) >= 0.8 and float(m["t"]) >= 0.8, lines[-1]
    # the model files went to the cache folder, nowhere in the repository
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "cache").iterdir())
    assert not list(ROOT.glob("**/lab-unet-*.safetensors"))
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memorization_lab.py"), "--quick", "--cache",
                            str(tmp_path / "cache")], capture_output=True, text=True, env=env, timeout=1800)
    assert again.returncode == 0 and "lab model loaded from" in again.stdout
    assert again.stdout.strip().splitlines()[-1] == lines[-1]  # seeded: the same numbers from the cached model
