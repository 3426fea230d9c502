"""Checkpoints under fire: SIGKILL during the write, truncation and bit flips, hostile pickles.

Real processes write the checkpoints and are killed with SIGKILL at chosen moments; the files they
leave are then loaded the way the trainer and inference load them.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from relkit import REPO, subprocess_env, tiny_trainer

from mattingkit import checkpoint as ckpt
from mattingkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.reliability

WEIGHTS = 2_000_000  # 8 MB of float32: a write takes long enough to be caught in the act


# --------------------------------------------------------------------------------------------
# a writer process
# --------------------------------------------------------------------------------------------
_WRITER = textwrap.dedent("""
    import os, signal, sys, torch
    from mattingkit import checkpoint as ckpt
    folder, mode, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def state(step):
        return {"format": ckpt.FORMAT, "step": step,
                "w": torch.randn(%d, generator=torch.Generator().manual_seed(step))}
    if mode == "loop":              # write last.pt again and again; the parent kills us
        step = first
        while True:
            ckpt.save_checkpoint(state(step), os.path.join(folder, "last.pt"))
            print(step, flush=True)
            step += 1
    elif mode == "hook":            # die after the new bytes + sidecar are on disk, before the rename
        def die(tmp):
            os.kill(os.getpid(), signal.SIGKILL)
        ckpt._BEFORE_REPLACE_HOOK = die
        ckpt.save_checkpoint(state(first), os.path.join(folder, "last.pt"))
""" % WEIGHTS)


def _writer(tmp: Path, folder: Path, mode: str, first: int) -> subprocess.Popen:
    script = tmp / "writer.py"
    script.write_text(_WRITER)
    return subprocess.Popen([sys.executable, str(script), str(folder), mode, str(first)], stdout=subprocess.PIPE,
                            text=True, env=subprocess_env())


def _expected_w(step: int) -> torch.Tensor:
    return torch.randn(WEIGHTS, generator=torch.Generator().manual_seed(step))


def _state(step: int) -> dict:
    return {"format": ckpt.FORMAT, "step": step, "w": _expected_w(step)}


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------
# kill during a checkpoint write
# --------------------------------------------------------------------------------------------
def test_sigkill_while_the_bytes_stream_keeps_the_previous_last_pt(tmp_path):
    """The parent watches for the writer's temp file and kills it the moment bytes appear in it
    (mid ``torch.save``), three times in a row; every time last.pt still verifies and loads the
    previous step, and best.pt is never touched."""
    folder = tmp_path / "ck"
    folder.mkdir()
    save_checkpoint(_state(1), folder / "best.pt")
    best_bytes = (folder / "best.pt").read_bytes()
    caught_mid_write = 0
    for attempt in range(3):
        proc = _writer(tmp_path, folder, "loop", first=10 * (attempt + 1))
        first = int(proc.stdout.readline())                 # one complete last.pt from this process
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:                  # the next write has started streaming
            tmps = _tmp_files(folder)
            if any(p.name.startswith(".last.pt.") and p.stat().st_size > 0 for p in tmps if p.exists()):
                break
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        leftovers = _tmp_files(folder)
        caught_mid_write += bool(leftovers)
        got = load_checkpoint(folder / "last.pt")           # verified against the sidecar
        assert got["step"] >= first
        assert torch.equal(got["w"], _expected_w(got["step"]))
        assert ckpt.verify_checkpoint(folder / "last.pt")
        ckpt.cleanup_temp_files(folder)                      # what the trainer does on start
        assert not _tmp_files(folder)
    assert caught_mid_write >= 2, "the kill should land inside the write most of the time"
    assert (folder / "best.pt").read_bytes() == best_bytes


def test_sigkill_between_sidecar_and_rename(tmp_path):
    """Killed after the new bytes and the new sidecar are on disk but before the rename: last.pt is
    still the previous content and verifies (the sidecar remembers the previous digest)."""
    folder = tmp_path / "ck"
    folder.mkdir()
    save_checkpoint(_state(1), folder / "last.pt")
    proc = _writer(tmp_path, folder, "hook", first=2)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    side = json.loads(ckpt.sidecar_path(folder / "last.pt").read_text())
    assert side["step"] == 2 and side["previous"] is not None   # the sidecar already describes step 2
    got = load_checkpoint(folder / "last.pt")
    assert got["step"] == 1 and torch.equal(got["w"], _expected_w(1))


def test_two_crashes_in_the_rename_window_keep_last_pt_loadable(tmp_path):
    """Two processes in a row killed between sidecar and rename. The file on disk is still step 1; the
    second save must take 'previous' from the file itself, not from the first crash's sidecar (whose
    digest describes bytes that were never renamed into place), or a good last.pt is rejected."""
    folder = tmp_path / "ck"
    folder.mkdir()
    save_checkpoint(_state(1), folder / "last.pt")
    for step in (2, 3):
        proc = _writer(tmp_path, folder, "hook", first=step)
        proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL
    got = load_checkpoint(folder / "last.pt")
    assert got["step"] == 1 and torch.equal(got["w"], _expected_w(1))


# --------------------------------------------------------------------------------------------
# truncation, bit flips, fallback
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate_half", "truncate_1_byte", "zero_bytes", "flip_bit_middle",
                                    "flip_bit_last_byte", "append_byte"])
def test_damaged_last_pt_is_detected_and_best_pt_takes_over(tmp_path, damage):
    folder = tmp_path / "ck"
    save_checkpoint(_state(4), folder / "best.pt")
    save_checkpoint(_state(7), folder / "last.pt")
    last = folder / "last.pt"
    data = bytearray(last.read_bytes())
    if damage == "truncate_half":
        data = data[: len(data) // 2]
    elif damage == "truncate_1_byte":
        data = data[:-1]
    elif damage == "zero_bytes":
        data = bytearray()
    elif damage == "flip_bit_middle":
        data[len(data) // 2] ^= 0x10
    elif damage == "flip_bit_last_byte":
        data[-1] ^= 0x01
    elif damage == "append_byte":
        data += b"\0"
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(last)
    msg = str(ei.value)
    assert str(last) in msg
    want = {"zero_bytes": "empty file", "flip_bit_middle": "SHA-256", "flip_bit_last_byte": "SHA-256"}
    assert want.get(damage, "size") in msg, msg
    with pytest.warns(UserWarning, match="falling back to .*best.pt"):
        got = load_checkpoint(last, fallback=folder / "best.pt")
    assert got["step"] == 4 and torch.equal(got["w"], _expected_w(4)) and got["_fallback_from"] == str(last)


def test_damaged_without_sidecar_is_still_a_clear_error(tmp_path):
    """A checkpoint copied without its sidecar (e.g. only last.pt uploaded to Drive) and truncated:
    no digest to compare, but torch.load's failure still becomes a CheckpointError naming the file."""
    p = save_checkpoint(_state(2), tmp_path / "last.pt")
    ckpt.sidecar_path(p).unlink()
    p.write_bytes(p.read_bytes()[:-4096])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="truncated or corrupt") as ei:
            load_checkpoint(p)
    assert str(p) in str(ei.value)


def test_trainer_resumes_from_best_pt_when_last_pt_is_corrupt(tmp_path, capsys):
    """The real Trainer: last.pt bit-flipped after a run -> the next Trainer warns, names the bad file
    and resumes from best.pt's step (lr 0: the metric never improves after the first validation, so
    best.pt stays at step 2 while last.pt reaches step 6)."""
    run = tmp_path / "run"
    tiny_trainer(run, **{"train.lr_g": 0.0}).fit()
    folder = run / "checkpoints"
    best_step = load_checkpoint(folder / "best.pt")["step"]
    assert best_step == 2 and load_checkpoint(folder / "last.pt")["step"] == 6
    data = bytearray((folder / "last.pt").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (folder / "last.pt").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"last\.pt.*SHA-256.*falling back to .*best\.pt"):
        tr = tiny_trainer(run, **{"train.lr_g": 0.0})
    assert tr.step == best_step
    assert "best.pt" in capsys.readouterr().out          # "resuming from .../best.pt (fallback: ...)"
    tr.fit()
    assert load_checkpoint(folder / "last.pt")["step"] == 6  # and training completes again


# --------------------------------------------------------------------------------------------
# hostile checkpoints
# --------------------------------------------------------------------------------------------
class _Exec:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class _System:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Popen:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (subprocess.Popen, ([sys.executable, "-c", f"open({self.marker!r}, 'w')"],))


def _with_sidecar(p: Path) -> Path:
    """A matching sidecar, so only the unpickler stands between the file and code execution."""
    side = {"file": p.name, "size": p.stat().st_size, "sha256": ckpt.file_sha256(p), "previous": None}
    ckpt.sidecar_path(p).write_text(json.dumps(side))
    return p


def _hostile_files(folder: Path, marker: Path) -> dict[str, Path]:
    from mattingkit.config import load_config

    cfg = load_config("demo", {"model.name": "u2netp"}).to_dict()
    out = {}

    def put(name, obj, legacy=False, sidecar=True):
        p = folder / f"{name}.pt"
        torch.save(obj, p, _use_new_zipfile_serialization=not legacy)
        out[name] = _with_sidecar(p) if sidecar else p

    weights = {"w": torch.zeros(3)}
    put("exec_in_state", {"format": ckpt.FORMAT, "step": 1, "payload": _Exec(marker)})
    put("exec_top_level", _Exec(marker))
    put("system_in_config", {"format": ckpt.FORMAT, "step": 1, "generator": weights,
                             "config": {**cfg, "x": _System(marker)}})
    put("popen_as_weight", {"format": ckpt.EXPORT_FORMAT, "generator": {"w": _Popen(marker)}, "config": cfg})
    put("legacy_format", {"format": ckpt.FORMAT, "step": 1, "payload": _Exec(marker)}, legacy=True)
    put("no_sidecar", {"format": ckpt.FORMAT, "generator": weights, "config": cfg, "p": _Exec(marker)},
        sidecar=False)
    raw = folder / "raw_pickle.pt"                     # not a torch file at all: a bare pickle
    raw.write_bytes(pickle.dumps({"step": 1, "p": _Exec(marker)}, protocol=0))
    out["raw_pickle_protocol0"] = _with_sidecar(raw)
    # a genuine torch zip whose data.pkl was swapped for a hostile pickle
    good = folder / "good.pt"
    torch.save({"format": ckpt.FORMAT, "step": 1, "generator": weights, "config": cfg}, good)
    swapped = folder / "swapped_data_pkl.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(swapped, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps({"format": ckpt.FORMAT, "step": 1, "p": _System(marker)}, protocol=2)
            zout.writestr(info, data)
    out["swapped_data_pkl"] = _with_sidecar(swapped)
    good.unlink()
    return out


def test_hostile_pickles_are_refused_everywhere_and_run_nothing(tmp_path):
    """Every loader that accepts a checkpoint path refuses every hostile file with a clear error naming
    it, and the payload (writing / touching a marker file) never runs."""
    from mattingkit.infer import load_model
    from mattingkit.models.common import load_state_dict_file

    marker = tmp_path / "PWNED"
    files = _hostile_files(tmp_path, marker)
    loaders = {
        "checkpoint.load_checkpoint": lambda p: load_checkpoint(p),
        "checkpoint.load_generator": lambda p: ckpt.load_generator(p),
        "checkpoint.export_inference": lambda p: ckpt.export_inference(p, tmp_path / "export.pt"),
        "infer.load_model": lambda p: load_model(p),
        "models.load_state_dict_file": lambda p: load_state_dict_file(p),   # model.weights_path
    }
    problems = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # "no sidecar" warnings
        for fname, path in files.items():
            for lname, load in loaders.items():
                try:
                    load(path)
                except (CheckpointError, ValueError) as e:
                    if str(path) not in str(e):
                        problems.append(f"{lname}({fname}): error does not name the file: {e}")
                except Exception as e:  # noqa: BLE001
                    problems.append(f"{lname}({fname}): {type(e).__name__}: {e}")
                else:
                    problems.append(f"{lname}({fname}): loaded a hostile file")
                time.sleep(0)
    time.sleep(0.5)                                    # a Popen payload would need a moment
    assert not marker.exists(), "a hostile payload ran"
    assert not problems, "\n".join(problems)
    assert not (tmp_path / "export.pt").exists()


def test_hostile_init_from_and_resume_are_refused_by_the_trainer(tmp_path):
    """train.init_from pointing at a hostile file, and a hostile last.pt in the run folder: the
    Trainer refuses both before anything in them runs."""
    marker = tmp_path / "PWNED"
    files = _hostile_files(tmp_path, marker)
    with pytest.raises(CheckpointError, match="refused"):
        tiny_trainer(tmp_path / "a", **{"train.init_from": str(files["exec_in_state"])})
    run = tmp_path / "b"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("last.pt", "best.pt"):
        evil = run / "checkpoints" / name
        evil.write_bytes(files["system_in_config"].read_bytes())
        _with_sidecar(evil)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="refused"):
            tiny_trainer(run)
    assert not marker.exists()


def test_every_deserialisation_in_the_package_is_safe():
    """Static check of the package source: every torch.load passes weights_only=True; no pickle.load(s),
    no numpy allow_pickle=True, no yaml.load without a safe loader, no eval/exec."""
    bad = []
    for path in sorted((REPO / "mattingkit").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(REPO)}:{node.lineno} {name}"
            if name.endswith("torch.load"):
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    bad.append(f"{where} without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load",
                        "marshal.loads", "shelve.open"):
                bad.append(where)
            if name.endswith(("np.load", "numpy.load")):
                ap = kw.get("allow_pickle")
                if isinstance(ap, ast.Constant) and ap.value is True:
                    bad.append(f"{where} with allow_pickle=True")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                loader = ast.unparse(kw["Loader"]) if "Loader" in kw else ""
                if "Safe" not in loader:
                    bad.append(f"{where} without SafeLoader")
            if name in ("eval", "exec"):
                bad.append(where)
    assert not bad, "\n".join(bad)
