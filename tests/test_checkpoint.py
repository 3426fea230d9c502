"""Checkpoints: atomic writes (also under SIGKILL), verified loads, fallback, weights_only, RNG, export."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mattingkit import checkpoint as ckpt
from mattingkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _state(step: int, size: int = 1000) -> dict:
    g = torch.Generator().manual_seed(step)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {"format": ckpt.FORMAT, "step": step, "big": torch.randn(size, generator=g),
            "generator": model.state_dict(), "opt_g": opt.state_dict(), "rng": ckpt.rng_state(),
            "config": {"train": {"steps": 10, "betas": [0.5, 0.999], "grad_clip": None}}, "best": None}


def test_roundtrip_is_weights_only_loadable(tmp_path):
    state = _state(3)
    p = save_checkpoint(state, tmp_path / "last.pt")
    raw = torch.load(p, weights_only=True)  # the plain torch call works: no allowlisting needed
    assert raw["step"] == 3 and torch.equal(raw["big"], state["big"])
    got = load_checkpoint(p)
    assert got["_path"] == str(p)
    for k, v in state["generator"].items():
        assert torch.equal(got["generator"][k], v)
    side = json.loads((tmp_path / "last.pt.json").read_text())
    assert side["size"] == p.stat().st_size and side["sha256"] == ckpt.file_sha256(p)
    assert side["previous"] is None and side["step"] == 3
    # exactly the checkpoint and its sidecar, no temp files, no symlinks
    assert sorted(x.name for x in tmp_path.iterdir()) == ["last.pt", "last.pt.json"]
    assert not any(x.is_symlink() for x in tmp_path.iterdir())


def test_overwrite_keeps_two_files(tmp_path):
    for s in range(3):
        save_checkpoint(_state(s), tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert sorted(x.name for x in tmp_path.iterdir()) == ["last.pt", "last.pt.json"]


def test_refuses_non_plain_state_and_colons(tmp_path):
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint({"model": torch.nn.Linear(2, 2)}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="':'"):
        save_checkpoint({"step": 1}, tmp_path / "step:1.pt")
    assert not list(tmp_path.iterdir())  # nothing written


def test_corrupt_or_truncated_file_is_a_clear_error(tmp_path):
    p = save_checkpoint(_state(1), tmp_path / "last.pt")
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"last\.pt.*SHA-256"):
        load_checkpoint(p)
    p.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    with pytest.raises(CheckpointError, match=r"last\.pt.*size"):
        load_checkpoint(p)
    p.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_truncated_file_without_sidecar_fails_in_torch_load(tmp_path):
    p = save_checkpoint(_state(1), tmp_path / "last.pt")
    ckpt.sidecar_path(p).unlink()
    p.write_bytes(p.read_bytes()[:500])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="torch.load"):
            load_checkpoint(p)


def test_fallback_to_best_with_warning(tmp_path):
    save_checkpoint(_state(5), tmp_path / "best.pt")
    last = save_checkpoint(_state(9), tmp_path / "last.pt")
    last.write_bytes(last.read_bytes()[:-100])
    with pytest.warns(UserWarning, match=r"last\.pt.*falling back to .*best\.pt"):
        got = load_checkpoint(last, fallback=tmp_path / "best.pt")
    assert got["step"] == 5 and got["_fallback_from"] == str(last)


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned.txt"
    p = tmp_path / "last.pt"
    torch.save({"step": 1, "payload": _Evil(marker)}, p)
    # a matching sidecar, so only the unpickler stands in the way
    side = {"size": p.stat().st_size, "sha256": ckpt.file_sha256(p), "previous": None}
    ckpt.sidecar_path(p).write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(p)
    assert not marker.exists()
    # the fallback path is used instead when given, still without running the payload
    save_checkpoint({"step": 0, "format": ckpt.FORMAT}, tmp_path / "best.pt")
    with pytest.warns(UserWarning, match="falling back"):
        assert load_checkpoint(p, fallback=tmp_path / "best.pt")["step"] == 0
    assert not marker.exists()


def test_rng_state_roundtrip():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    s = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    ckpt.set_rng_state(s)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


_WRITER = textwrap.dedent("""
    import os, signal, sys, torch
    from mattingkit import checkpoint as ckpt
    path, mode = sys.argv[1], sys.argv[2]
    step = 0
    def state(step):
        g = torch.Generator().manual_seed(step)
        return {"format": ckpt.FORMAT, "step": step, "w": torch.randn(3_000_000, generator=g)}
    def die(tmp):                                    # new bytes are on disk, sidecar updated, no rename yet
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hook":
        ckpt.save_checkpoint(state(1), path)          # a good last.pt
        ckpt._BEFORE_REPLACE_HOOK = die
        ckpt.save_checkpoint(state(2), path)
    elif mode.startswith("crash"):                    # only the interrupted save of step N
        ckpt._BEFORE_REPLACE_HOOK = die
        ckpt.save_checkpoint(state(int(mode[5:])), path)
    else:
        while True:                                  # killed from outside at a random moment
            step += 1
            ckpt.save_checkpoint(state(step), path)
            print(step, flush=True)
""")


def _run_writer(tmp_path: Path, mode: str) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "ck" / "last.pt"), mode],
                            stdout=subprocess.PIPE, text=True, env=env)


def test_killed_between_write_and_rename_keeps_previous(tmp_path):
    proc = _run_writer(tmp_path, "hook")
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    folder = tmp_path / "ck"
    got = load_checkpoint(folder / "last.pt")  # previous content, and the sidecar still verifies it
    assert got["step"] == 1
    assert torch.equal(got["w"], torch.randn(3_000_000, generator=torch.Generator().manual_seed(1)))
    assert any(p.name.endswith(".tmp") for p in folder.iterdir())  # the orphan the next run removes
    ckpt.cleanup_temp_files(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "last.pt.json"]
    save_checkpoint({"step": 3}, folder / "last.pt")  # and writing continues normally
    assert load_checkpoint(folder / "last.pt")["step"] == 3


def test_two_crashes_in_a_row_in_the_rename_window(tmp_path):
    folder = tmp_path / "ck"
    save_checkpoint(_state(1), folder / "last.pt")
    for step in (2, 3):  # the second save must not take the first crash's never-renamed digest as "previous"
        proc = _run_writer(tmp_path, f"crash{step}")
        proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL
        assert load_checkpoint(folder / "last.pt")["step"] == 1


def test_killed_from_outside_while_writing_keeps_a_loadable_file(tmp_path):
    rng = random.Random(0)
    for attempt in range(3):
        sub = tmp_path / f"a{attempt}"
        sub.mkdir()
        proc = _run_writer(sub, "loop")
        first = proc.stdout.readline()  # one complete checkpoint exists
        assert first.strip() == "1"
        time.sleep(rng.uniform(0.05, 0.6))  # ~12 MB files: a kill lands mid-write most of the time
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        got = load_checkpoint(sub / "ck" / "last.pt")
        step = got["step"]
        assert step >= 1
        assert torch.equal(got["w"], torch.randn(3_000_000, generator=torch.Generator().manual_seed(step)))


def test_export_inference_and_load_generator(tmp_path):
    from mattingkit.config import load_config
    from mattingkit.models import build_model

    cfg = load_config("demo", {"model.pretrained": False})
    torch.manual_seed(0)
    g = build_model(cfg.model).eval()
    opt = torch.optim.Adam(g.parameters())
    state = {"format": ckpt.FORMAT, "step": 5, "generator": g.state_dict(), "opt_g": opt.state_dict(),
             "config": cfg.to_dict(), "best": {"metric": "sad", "value": 1.0, "step": 5}}
    best = save_checkpoint(state, tmp_path / "best.pt")
    half = ckpt.export_inference(best, tmp_path / "demo_fp16.pt", half=True)
    full = ckpt.export_inference(best, tmp_path / "demo_fp32.pt", half=False)
    n_float = sum(v.numel() for v in g.state_dict().values() if v.is_floating_point())
    assert half.stat().st_size < 0.6 * full.stat().st_size and half.stat().st_size > 2 * n_float * 0.9
    x, tri = torch.rand(1, 3, 64, 96), torch.full((1, 1, 64, 96), 0.5)
    with torch.no_grad():
        ref = g(x, tri)["alpha"]
        for path in (best, full, half):
            model, mcfg = ckpt.load_generator(path)
            assert not model.training and mcfg.model.backbone == "resnet18"
            assert all(p.dtype == torch.float32 for p in model.parameters())
            out = model(x, tri)["alpha"]
            if path == half:  # fp16-rounded weights (max-unpool positions may flip here and there)
                assert (out - ref).abs().mean() < 5e-3
            else:
                assert torch.equal(out, ref)
    with pytest.raises(CheckpointError, match="no 'generator'"):
        ckpt.load_generator(save_checkpoint({"step": 1}, tmp_path / "other.pt"))


# --------------------------------------------------------------------------------------------
# Google Drive: local checkpoints mirrored to a (stand-in) Drive folder; disk full
# --------------------------------------------------------------------------------------------
import errno  # noqa: E402

from mattingkit.checkpoint import CheckpointWriteError, MirrorWarning  # noqa: E402
from mattingkit.errors import RunStateError  # noqa: E402


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _meta(path: Path) -> dict:
    return json.loads(ckpt.sidecar_path(path).read_text())


@pytest.fixture(autouse=True)
def _no_retry_waits(monkeypatch):
    """A refused rename on the stand-in Drive is retried (mattingkit.drive.retry) without the real waits."""
    from mattingkit import drive

    monkeypatch.setattr(drive, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))


@pytest.fixture
def local_and_drive(tmp_path):
    local, drive = tmp_path / "local" / "checkpoints", tmp_path / "drive" / "MyDrive" / "run" / "checkpoints"
    return local, drive


def test_mirror_keeps_exactly_best_and_last_in_both_places(local_and_drive):
    local, drive = local_and_drive
    for step in (1, 2, 3):
        save_checkpoint(_state(step), local / ckpt.LAST, mirror_dir=drive)
    save_checkpoint(_state(2), local / ckpt.BEST, mirror_dir=drive)
    expected = ["best.pt", "best.pt.json", "last.pt", "last.pt.json"]
    assert _names(local) == expected and _names(drive) == expected
    for name in (ckpt.LAST, ckpt.BEST):
        a, b = _meta(local / name), _meta(drive / name)
        assert a["sha256"] == b["sha256"] and a["size"] == b["size"] and a["step"] == b["step"]
        assert b["previous"] is None and (drive / name).stat().st_size == b["size"]
    assert load_checkpoint(drive / ckpt.LAST)["step"] == 3 and load_checkpoint(drive / ckpt.BEST)["step"] == 2


def test_mirror_cleans_stale_temp_files(local_and_drive):
    local, drive = local_and_drive
    drive.mkdir(parents=True)
    (drive / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    save_checkpoint(_state(1), local / ckpt.LAST, mirror_dir=drive)
    assert _names(drive) == ["last.pt", "last.pt.json"]


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP, None])
def test_refused_fsync_is_tolerated(local_and_drive, monkeypatch, code):
    local, drive = local_and_drive

    def refuse(fd):
        raise OSError(code, "fsync refused") if code is not None else OSError("fsync refused")

    monkeypatch.setattr(ckpt.os, "fsync", refuse)
    save_checkpoint(_state(1), local / ckpt.LAST, mirror_dir=drive)
    save_checkpoint(_state(2), local / ckpt.LAST, mirror_dir=drive)
    monkeypatch.undo()
    assert load_checkpoint(local / ckpt.LAST)["step"] == 2 and load_checkpoint(drive / ckpt.LAST)["step"] == 2


def test_fsync_out_of_space_is_not_tolerated(tmp_path, monkeypatch):
    save_checkpoint(_state(1), tmp_path / ckpt.LAST)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", full)
    with pytest.raises(CheckpointWriteError, match="no space left"):
        save_checkpoint(_state(2), tmp_path / ckpt.LAST)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / ckpt.LAST)["step"] == 1
    assert _names(tmp_path) == ["last.pt", "last.pt.json"]


def _refuse_replace_into(monkeypatch, folder: Path):
    real = os.replace

    def replace(src, dst, *a, **kw):
        if Path(dst).parent == folder and Path(dst).suffix == ".pt":
            raise OSError(errno.EIO, "Input/output error (FUSE)")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(ckpt.os, "replace", replace)


def test_refused_rename_on_drive_warns_and_keeps_previous_mirror(local_and_drive, monkeypatch):
    local, drive = local_and_drive
    save_checkpoint(_state(1), local / ckpt.LAST, mirror_dir=drive)
    _refuse_replace_into(monkeypatch, drive)
    with pytest.warns(MirrorWarning, match="retried at the next checkpoint"):
        save_checkpoint(_state(2), local / ckpt.LAST, mirror_dir=drive)
    monkeypatch.undo()
    assert load_checkpoint(local / ckpt.LAST)["step"] == 2
    assert load_checkpoint(drive / ckpt.LAST)["step"] == 1          # the previous mirror copy still verifies
    assert _names(drive) == ["last.pt", "last.pt.json"]             # no temp file left behind
    save_checkpoint(_state(3), local / ckpt.LAST, mirror_dir=drive)  # the next one mirrors again
    assert load_checkpoint(drive / ckpt.LAST)["step"] == 3 and _meta(drive / ckpt.LAST)["previous"] is None


def test_refused_rename_on_drive_raises_when_required(local_and_drive, monkeypatch):
    local, drive = local_and_drive
    _refuse_replace_into(monkeypatch, drive)
    with pytest.raises(CheckpointWriteError, match="mirror copy"):
        save_checkpoint(_state(1), local / ckpt.LAST, mirror_dir=drive, mirror_required=True)


def test_refused_local_rename_keeps_previous(tmp_path, monkeypatch):
    save_checkpoint(_state(1), tmp_path / ckpt.LAST)
    _refuse_replace_into(monkeypatch, tmp_path)
    with pytest.raises(CheckpointWriteError, match="previous last.pt \\(step 1\\) is intact"):
        save_checkpoint(_state(2), tmp_path / ckpt.LAST)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / ckpt.LAST)["step"] == 1
    assert _names(tmp_path) == ["last.pt", "last.pt.json"]


class _FullDisk:
    """A file object that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def write(self, b):
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.real.write(b)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


@pytest.mark.parametrize("room", [0, 3000])
def test_disk_full_during_write_keeps_previous_and_says_so(tmp_path, monkeypatch, room):
    save_checkpoint(_state(1), tmp_path / ckpt.LAST)
    before = (tmp_path / ckpt.LAST).read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode="r", *a, **kw: _FullDisk(real_fdopen(fd, mode), room))
    with pytest.raises(CheckpointWriteError) as e:
        save_checkpoint(_state(2, size=50_000), tmp_path / ckpt.LAST)
    monkeypatch.undo()
    err = e.value
    assert isinstance(err, RunStateError) and err.exit_code == 6 and err.errno == errno.ENOSPC
    msg = str(err)
    assert "no space left" in msg and "previous last.pt (step 1) is intact" in msg and "free" in msg
    assert (tmp_path / ckpt.LAST).read_bytes() == before
    assert load_checkpoint(tmp_path / ckpt.LAST)["step"] == 1
    assert _names(tmp_path) == ["last.pt", "last.pt.json"]


def test_drive_full_warns_local_checkpoint_stands(local_and_drive, monkeypatch):
    local, drive = local_and_drive
    real_fdopen = os.fdopen
    save_checkpoint(_state(1), local / ckpt.LAST)

    def fdopen(fd, mode="r", *a, **kw):   # only the mirror's temp file sees a full disk
        f = real_fdopen(fd, mode, *a, **kw)
        return _FullDisk(f, 0) if Path(os.readlink(f"/proc/self/fd/{fd}")).parent == drive else f

    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc")
    monkeypatch.setattr(ckpt.os, "fdopen", fdopen)
    with pytest.warns(MirrorWarning, match="no space left.*empty the trash"):
        save_checkpoint(_state(2), local / ckpt.LAST, mirror_dir=drive)
    monkeypatch.undo()
    assert load_checkpoint(local / ckpt.LAST)["step"] == 2 and not (drive / ckpt.LAST).exists()


def test_resume_brings_back_drive_copies_on_a_fresh_vm(local_and_drive):
    local, drive = local_and_drive
    save_checkpoint(_state(9), drive / ckpt.LAST)
    save_checkpoint(_state(5), drive / ckpt.BEST)
    done = ckpt.sync_from_mirror(local, drive)
    assert done == {"last.pt": "copied from the mirror (step 9)", "best.pt": "copied from the mirror (step 5)"}
    assert load_checkpoint(local / ckpt.LAST)["step"] == 9 and load_checkpoint(local / ckpt.BEST)["step"] == 5
    assert ckpt.sync_from_mirror(local, drive) == {"last.pt": "up to date", "best.pt": "up to date"}


def test_resume_newest_valid_copy_wins(local_and_drive):
    local, drive = local_and_drive
    save_checkpoint(_state(12), local / ckpt.LAST)      # local newer than the mirror: mirrored
    save_checkpoint(_state(9), drive / ckpt.LAST)
    save_checkpoint(_state(4), local / ckpt.BEST)       # mirror newer: copied back
    save_checkpoint(_state(8), drive / ckpt.BEST)
    done = ckpt.sync_from_mirror(local, drive)
    assert done["last.pt"] == "mirrored the local copy" and done["best.pt"].startswith("copied from the mirror")
    for d in (local, drive):
        assert load_checkpoint(d / ckpt.LAST)["step"] == 12 and load_checkpoint(d / ckpt.BEST)["step"] == 8


def test_resume_corrupt_copy_loses_to_the_valid_one(local_and_drive):
    local, drive = local_and_drive
    save_checkpoint(_state(12), local / ckpt.LAST)
    save_checkpoint(_state(9), drive / ckpt.LAST)
    data = bytearray((local / ckpt.LAST).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (local / ckpt.LAST).write_bytes(bytes(data))       # newer but corrupt
    assert ckpt.newest_valid([local / ckpt.LAST, drive / ckpt.LAST]) == drive / ckpt.LAST
    assert ckpt.sync_from_mirror(local, drive)["last.pt"] == "copied from the mirror (step 9)"
    assert load_checkpoint(local / ckpt.LAST)["step"] == 9
    (drive / ckpt.BEST).parent.mkdir(parents=True, exist_ok=True)
    (drive / ckpt.BEST).write_bytes(b"truncated")
    assert ckpt.sync_from_mirror(local, drive)["best.pt"].startswith("none valid")


def test_newest_valid_ties_prefer_the_first_listed(local_and_drive):
    local, drive = local_and_drive
    save_checkpoint(_state(3), local / ckpt.LAST, mirror_dir=drive)
    assert ckpt.newest_valid([local / ckpt.LAST, drive / ckpt.LAST]) == local / ckpt.LAST
    assert ckpt.newest_valid([drive / ckpt.BEST]) is None


def test_checkpoint_size_estimate_matches_a_real_checkpoint(tmp_path):
    from mattingkit.config import load_config
    from mattingkit.models import build_model

    cfg = load_config("ecom", {"train.use_gan": False})   # U2-Net-P: small enough to save here
    g = build_model(cfg.model)
    opt = torch.optim.Adam(g.parameters())
    for p in g.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    save_checkpoint({"step": 1, "generator": g.state_dict(), "opt_g": opt.state_dict(), "rng": ckpt.rng_state(),
                     "config": cfg.to_dict()}, tmp_path / ckpt.LAST)
    real = (tmp_path / ckpt.LAST).stat().st_size
    est = ckpt.estimate_checkpoint_bytes(cfg)
    assert abs(est - real) / real < 0.1, (est, real)


def test_drive_space_needed_for_the_default_recipe():
    from mattingkit.config import load_config

    need = ckpt.drive_space_needed(load_config("default"))
    assert 0.45e9 < need["checkpoint_bytes"] < 0.6e9            # ~0.5 GB: G + D + Adam moments
    assert need["steady_bytes"] == 2 * need["checkpoint_bytes"] and need["peak_bytes"] == 3 * need["checkpoint_bytes"]
    assert "trash" in need["message"] and "GB" in need["message"]
    # a 12 h Colab session with the default rationing: 6 copies (one per 120 min) + best and last at the end
    assert need["hours"] == 12 and need["copies"] == 8 and need["run_bytes"] <= 5e9
