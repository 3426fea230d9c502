"""mattingkit.doctor under simulated GPUs: the same choices the trainer makes, and no secret in the JSON."""
from __future__ import annotations

import json
from collections import namedtuple

import pytest
import torch
from gpusim import CU121_ARCHS, RECENT_ARCHS, simulate

from mattingkit import doctor as dr
from mattingkit.config import load_config
from mattingkit.models import common

ENV = {"MATTINGKIT_OFFLINE": "1"}   # no network in tests unless a test says otherwise


def _doctor(monkeypatch, gpu, config="default", overrides=(), archs=None, environ=None, tmp_path=None, **kw):
    simulate(monkeypatch, gpu, archs)
    monkeypatch.setattr(common, "probe_url", lambda url, timeout: pytest.fail("probed the network"))
    over = list(overrides)
    if tmp_path is not None:
        over += [f"run.runs_root={tmp_path / 'runs'}", f"run.data_root={tmp_path / 'data'}"]
    rep = dr.doctor(load_config(config, over), environ=dict(ENV if environ is None else environ),
                    home=str(tmp_path or "/nonexistent"), **kw)
    json.loads(dr.to_json(rep))      # JSON-ready
    assert dr.format_report(rep)     # and printable
    return rep


def test_t4(monkeypatch, tmp_path):
    rep = _doctor(monkeypatch, "T4", tmp_path=tmp_path)
    d = rep["device"]
    assert d["type"] == "cuda" and d["name"] == "Tesla T4" and d["capability"] == "7.5" and d["memory_gb"] == 15.0
    assert d["arch_supported"] is True and rep["ok"] and rep["problems"] == []
    assert rep["amp"] == {"train": "fp16", "infer": "fp16", "grad_scaler": True,
                          "reason": "fp16 + GradScaler: compute capability 7.5 < 8.0"}
    assert rep["channels_last"] is True
    assert rep["versions"]["torch"] == torch.__version__ and rep["versions"]["cuda"] == "13.0"
    text = dr.format_report(rep)
    assert "Tesla T4" in text and "fp16" in text and "doctor: ok" in text


def test_a100(monkeypatch, tmp_path):
    rep = _doctor(monkeypatch, "A100", tmp_path=tmp_path)
    assert rep["amp"]["train"] == "bf16" and rep["amp"]["grad_scaler"] is False and rep["channels_last"] is True
    assert rep["device"]["capability"] == "8.0" and rep["ok"]


def test_l4_in_recent_build(monkeypatch, tmp_path):
    rep = _doctor(monkeypatch, "L4", archs=RECENT_ARCHS, tmp_path=tmp_path)
    assert rep["device"]["arch_supported"] is True and rep["amp"]["train"] == "bf16" and rep["ok"]


def test_p100_not_in_arch_list(monkeypatch, tmp_path):
    rep = _doctor(monkeypatch, "P100", archs=RECENT_ARCHS, tmp_path=tmp_path)
    assert rep["device"]["arch_supported"] is False and not rep["ok"]
    (msg,) = rep["problems"]
    assert "Tesla P100" in msg and torch.__version__ in msg and "GPU T4 x2" in msg
    assert "NO (built for sm_75" in dr.format_report(rep) and "PROBLEM: Tesla P100" in dr.format_report(rep)
    ok = _doctor(monkeypatch, "P100", archs=CU121_ARCHS, tmp_path=tmp_path)
    assert ok["ok"] and ok["amp"]["train"] == "fp16" and ok["channels_last"] is False


def test_no_gpu(monkeypatch, tmp_path):
    rep = _doctor(monkeypatch, None, "demo", tmp_path=tmp_path)
    assert rep["device"] == {"device": "cpu", "type": "cpu"} and rep["gpu_count"] == 0
    assert rep["amp"]["train"] == "off" and rep["amp"]["grad_scaler"] is False and rep["channels_last"] is False
    assert rep["ok"]                                  # the demo runs on a CPU
    rep = _doctor(monkeypatch, None, "default", tmp_path=tmp_path)
    assert not rep["ok"] and "needs a GPU" in rep["problems"][0]
    assert _doctor(monkeypatch, None, "default", ["run.device=cpu"], tmp_path=tmp_path)["ok"]


@pytest.mark.parametrize("cpus,workers", [(1, 0), (2, 2), (16, 8)])
def test_num_workers(monkeypatch, tmp_path, cpus, workers):
    monkeypatch.setattr(dr.dv, "cpu_count", lambda: cpus)
    rep = _doctor(monkeypatch, "T4", tmp_path=tmp_path)
    assert rep["cpu_count"] == cpus and rep["num_workers"] == workers and rep["num_workers_setting"] == "auto"


def test_roots_free_space_and_checkpoint_room(monkeypatch, tmp_path):
    rep = _doctor(monkeypatch, "T4", tmp_path=tmp_path)
    runs = rep["roots"]["runs"]
    assert runs["path"] == str(tmp_path / "runs") and runs["exists"] is False and runs["free_gb"] > 0
    assert rep["roots"]["drive_mounted"] is None and runs["on_drive"] is False
    assert 0.45 < rep["checkpoints"]["checkpoint_gb"] < 0.6
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(dr.shutil, "disk_usage", lambda p: Usage(10**10, 10**10 - 10**8, 10**8))
    rep = _doctor(monkeypatch, "T4", tmp_path=tmp_path)
    assert not rep["ok"] and any("0.1 GB free" in p and "checkpoints need" in p for p in rep["problems"])


def test_doctor_and_the_checkpoint_mirror_agree_on_what_is_on_drive(monkeypatch, tmp_path):
    """One on-Drive rule (env.on_drive): doctor's roots say 'on Drive' exactly where checkpoint_dirs('auto')
    mirrors; a Drive path with no Drive mounted is not on Drive for either."""
    from mattingkit import env
    from mattingkit.checkpoint import checkpoint_dirs

    def both(path):
        rep = _doctor(monkeypatch, "T4", overrides=[f"run.runs_root={path}"], tmp_path=None)
        mirrored = checkpoint_dirs(load_config("default"), path / "run")[1] is not None
        return rep["roots"]["runs"]["on_drive"], mirrored

    assert both(env.COLAB_DRIVE / "x") == (False, False)     # not mounted on this machine
    drive = tmp_path / "content" / "drive" / "MyDrive"
    drive.mkdir(parents=True)
    monkeypatch.setattr(env, "COLAB_DRIVE", drive)              # a mounted Drive
    assert both(drive / "x") == (True, True)
    for path in (tmp_path / "content" / "x", tmp_path / "content" / "drive" / "Shared" / "x", tmp_path / "x"):
        assert both(path) == (False, False), path


def test_colab_without_drive(monkeypatch, tmp_path):
    monkeypatch.setattr(dr.env, "drive_mounted", lambda: False)
    rep = _doctor(monkeypatch, "T4", environ={**ENV, "COLAB_RELEASE_TAG": "release-colab_2026"}, tmp_path=tmp_path)
    assert rep["platform"] == "colab" and rep["roots"]["drive_mounted"] is False
    assert any("Drive is not mounted" in n for n in rep["notes"])


def test_kaggle_credentials_by_source_only(monkeypatch, tmp_path):
    secrets = {"KAGGLE_USERNAME": "someuser-4f1c", "KAGGLE_KEY": "9c1d0e5a7b3f4e2a8d6c0b1a2f3e4d5c",
               "KAGGLE_API_TOKEN": "KGAT_0123456789abcdef0123456789abcdef"}
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "fileuser-77", "key": "f" * 32}))
    (tmp_path / ".kaggle" / "access_token").write_text("KGAT_filetoken_abcdefabcdefabcdef")
    for environ in ({**ENV, **secrets}, {**ENV, "KAGGLE_USERNAME": secrets["KAGGLE_USERNAME"],
                                         "KAGGLE_KEY": secrets["KAGGLE_KEY"]}, dict(ENV)):
        rep = _doctor(monkeypatch, "T4", environ=environ, tmp_path=tmp_path)
        kc = rep["kaggle_credentials"]
        assert kc["found"] and kc["source"]
        out = dr.to_json(rep) + dr.format_report(rep)
        for s in [*secrets.values(), "f" * 32, "fileuser-77", "KGAT_filetoken_abcdefabcdefabcdef"]:
            assert s not in out
    assert kc["source"] == "~/.kaggle/access_token file"
    rep = _doctor(monkeypatch, "T4", tmp_path=tmp_path / "empty")
    assert rep["kaggle_credentials"] == {"found": False, "source": None, "kind": None, "note": None}


def test_weights_offline_at_once(monkeypatch, tmp_path):
    monkeypatch.setattr(common, "weights_cache_file", lambda url: tmp_path / "absent.pth")
    rep = _doctor(monkeypatch, "T4", tmp_path=tmp_path)    # probe_url fails the test if called
    w = rep["imagenet_weights"]
    assert w["needed"] and w["reachable"] is False and "offline" in w["detail"] and w["url"].startswith("https://")
    assert any("ImageNet weights" in n for n in rep["notes"])


def test_weights_probe(monkeypatch, tmp_path):
    simulate(monkeypatch, None)
    monkeypatch.setattr(common, "weights_cache_file", lambda url: tmp_path / "absent.pth")
    calls = []
    monkeypatch.setattr(common, "probe_url", lambda url, timeout: calls.append(timeout) or None)
    rep = dr.doctor(load_config("demo"), environ={}, home=str(tmp_path))
    assert rep["imagenet_weights"]["reachable"] is True and calls == [dr.PROBE_TIMEOUT]
    assert rep["imagenet_weights"]["needed"] is False         # the demo starts from random init
    monkeypatch.setattr(common, "probe_url", lambda url, timeout: "URLError: <urlopen error [Errno -3]>")
    rep = dr.doctor(load_config("default", ["run.device=cpu"]), environ={}, home=str(tmp_path))
    assert rep["imagenet_weights"]["reachable"] is False and "not reachable" in rep["imagenet_weights"]["detail"]
    cached = tmp_path / "resnet50.pth"
    cached.write_bytes(b"x")
    monkeypatch.setattr(common, "weights_cache_file", lambda url: cached)
    rep = dr.doctor(load_config("default", ["run.device=cpu"]), environ={}, home=str(tmp_path))
    assert rep["imagenet_weights"]["cached"] is True
