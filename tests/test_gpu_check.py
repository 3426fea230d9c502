"""benchmarks/gpu_check.py --quick: every section runs on the CPU and the JSON has the figures a GPU run reports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_quick(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "MATTINGKIT_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    res = json.loads(out.read_text())
    assert json.loads(proc.stdout) == res                    # the same JSON on stdout
    assert res["quick"] is True and res["device"] == "cpu"
    for section in ("doctor", "demo", "fp16_resume", "default", "infer1024", "tiled4096"):
        assert "error" not in res[section], (section, res[section])
    assert res["doctor"]["device"]["type"] == "cpu" and res["doctor"]["amp"]["train"] == "off"
    demo = res["demo"]
    assert demo["steps"] == 2 and demo["steps_per_s_after_warmup"] > 0 and demo["val_sad_last"] is not None
    fp16 = res["fp16_resume"]
    assert fp16["grad_scaler"] and fp16["scale_saved"] == fp16["scale_resumed"] > 0
    assert fp16["resumed_at"] == fp16["first_step"] == 2 and fp16["final_step"] == 3
    assert fp16["resumed_from"].endswith("last.pt")
    runs = res["default"]["runs"]
    assert {r["amp"] for r in runs} == {"auto", "off"} and all(r["steps_per_s_after_warmup"] > 0 for r in runs)
    assert all(r["raw_forward_s"] > 0 and r["predict_s"] > 0 for r in res["infer1024"]["runs"])
    tiled = res["tiled4096"]["runs"]
    assert [r["tf32"] for r in tiled] == [True, False]
    assert all(r["tiled_s"] > 0 and r["untiled_s"] > 0 and "max_abs_diff_unknown" in r for r in tiled)
