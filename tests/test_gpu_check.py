"""benchmarks/gpu_check.py --quick: every section runs on the CPU and the JSON has the figures a GPU run reports;
each section's time is printed and kept; a section that would exceed --budget-s is skipped, saying so."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("doctor", "demo", "fp16_resume", "default", "infer1024", "tiled4096")


def _run(tmp_path, *args):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "MATTINGKIT_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--quick", "--out", str(out),
                           *args], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    res = json.loads(out.read_text())
    assert json.loads(proc.stdout) == res                    # the same JSON on stdout
    return res, proc.stderr


def test_gpu_check_quick(tmp_path):
    from mattingkit.device import resolve_num_workers

    res, err = _run(tmp_path, "--budget-s", "100000")
    assert res["quick"] is True and res["device"] == "cpu" and res["skipped"] == []
    for section in SECTIONS:
        assert "error" not in res[section], (section, res[section])
        assert res["section_s"][section] == res[section]["section_s"] > 0        # kept in the JSON ...
        assert f"[gpu_check] {section}: {res[section]['section_s']:.1f} s" in err  # ... and printed
    assert sum(res["section_s"].values()) <= res["total_s"] and "[gpu_check] times:" in err
    assert res["doctor"]["device"]["type"] == "cpu" and res["doctor"]["amp"]["train"] == "off"
    workers = resolve_num_workers("auto")                    # the workers a run on this machine would use
    demo = res["demo"]
    assert demo["steps"] == 2 and demo["steps_per_s_after_warmup"] > 0 and demo["val_sad_last"] is not None
    assert demo["num_workers"] == res["fp16_resume"]["num_workers"] == res["num_workers"] == workers
    fp16 = res["fp16_resume"]
    assert fp16["grad_scaler"] and fp16["scale_saved"] == fp16["scale_resumed"] > 0
    assert fp16["resumed_at"] == fp16["first_step"] == 2 and fp16["final_step"] == 3
    assert fp16["resumed_from"].endswith("last.pt")
    runs = res["default"]["runs"]
    assert {r["amp"] for r in runs} == {"auto", "off"} and all(r["steps_per_s_after_warmup"] > 0 for r in runs)
    assert all(r["num_workers"] == workers for r in runs)
    assert all(r["raw_forward_s"] > 0 and r["predict_s"] > 0 for r in res["infer1024"]["runs"])
    tiled = res["tiled4096"]
    # no TF32 on a CPU: only the float32 row, and it says why; the untiled side is what fits (all of it here)
    assert [r["tf32"] for r in tiled["runs"]] == [False] and "no TF32" in tiled["tf32"]
    assert tiled["untiled_side"] == tiled["side"] and tiled["untiled_gb_per_mpx"] == 1.5
    assert all(r["tiled_s"] > 0 and r["untiled_s"] > 0 and "max_abs_diff_unknown" in r for r in tiled["runs"])


def test_sections_past_the_budget_are_skipped_saying_so(tmp_path):
    res, err = _run(tmp_path, "--sections", "doctor", "infer1024", "--budget-s", "8")
    assert "error" not in res["doctor"] and res["section_s"]["doctor"] > 0      # expected ~5 s: runs
    assert res["skipped"] == ["infer1024"] and "--budget-s=8" in res["infer1024"]["skipped"]  # ~15 s: skipped
    assert "[gpu_check] infer1024: skipped (expected to take" in err
    assert "demo" not in res and res["total_s"] < 8


def test_untiled_side_fits_the_free_memory():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gpu_check import untiled_side
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert untiled_side(14.5, 1.5, 4096) == 2592           # a T4: 4096² untiled (~25 GB) does not fit
    assert 2592 ** 2 / 1e6 * 1.5 <= 0.7 * 14.5
    assert untiled_side(75.0, 1.5, 4096) == 4096           # an 80 GB A100: it does
    assert untiled_side(None, 1.5, 160) == 160
