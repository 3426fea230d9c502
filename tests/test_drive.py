"""Training on a flaky Google Drive (issue 21): a stand-in Drive folder that fails N times, or for a while,
then works (tests/flakydrive.py). The run goes on, the lock is not declared taken over, the history is
complete locally and on Drive once the mount is back; Drive copies are rationed (the trash counts against
the quota) and a copy read back from Drive is checked against its sidecar."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from flakydrive import FlakyDrive

from mattingkit import checkpoint as ckpt
from mattingkit import drive
from mattingkit.errors import RunStateError
from mattingkit.run import HistoryLog, read_history
from mattingkit.runlock import LOCK_NAME, RunLock, read_lock


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch):
    monkeypatch.setattr(drive, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))


def _drive_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, drive.DriveWarning)]


# --------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------
def test_heartbeat_on_a_drive_that_fails_a_few_times_is_not_a_take_over(tmp_path, monkeypatch):
    """The lock in the run folder itself (run.checkpoint_local_dir=null on Drive): reads that fail 3 times
    are retried (the old heartbeat read them as 'unreadable' = taken over and stopped the run)."""
    run = tmp_path / "drive" / "run"
    flaky = FlakyDrive(tmp_path / "drive", monkeypatch)
    with RunLock(run) as lock:
        before = read_lock(run)["heartbeat"]
        flaky.fail_next(3)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            lock.heartbeat()
        assert flaky.failures == 3 and not _drive_warnings(rec) and not lock.lost
        assert read_lock(run)["heartbeat"] > before and read_lock(run)["token"] == lock.token


def test_lock_beside_local_checkpoints_and_its_drive_copy_survive_a_dead_mount(tmp_path, monkeypatch, capsys):
    local, run = tmp_path / "local" / "run", tmp_path / "drive" / "run"
    flaky = FlakyDrive(tmp_path / "drive", monkeypatch)
    lock = RunLock(local, mirror_dir=run).acquire()
    try:
        assert read_lock(local)["token"] == read_lock(run)["token"] == lock.token   # the copy other VMs see
        flaky.down()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            for _ in range(3):
                lock.heartbeat()            # the local lock is refreshed; the Drive copy cannot be
        assert len(_drive_warnings(rec)) == 1 and "run lock's copy" in _drive_warnings(rec)[0]
        assert not lock.lost
        flaky.up()
        lock.heartbeat()
        assert read_lock(run)["heartbeat"] == read_lock(local)["heartbeat"]        # the copy is fresh again
        assert "works again" in capsys.readouterr().out
        # a real take-over: another VM's --force wrote its own lock into the Drive folder
        other = json.loads((run / LOCK_NAME).read_text())
        other.update(host="colab-vm-2", pid=4242, token="other-vm")
        (run / LOCK_NAME).write_text(json.dumps(other))
        with pytest.raises(RunStateError, match="taken over by host 'colab-vm-2'"):
            lock.heartbeat()
        assert lock.lost
    finally:
        lock.release()
    assert read_lock(local) is None and read_lock(run)["token"] == "other-vm"   # theirs is left alone


def test_a_live_lock_on_drive_from_another_vm_is_refused(tmp_path):
    import time

    local, run = tmp_path / "local" / "run", tmp_path / "drive" / "run"
    run.mkdir(parents=True)
    (run / LOCK_NAME).write_text(json.dumps({"host": "colab-vm-1", "pid": 7, "started": time.time() - 60,
                                             "heartbeat": time.time() - 5, "token": "vm1"}))
    with pytest.raises(RunStateError, match="in use by host 'colab-vm-1'"):
        RunLock(local, mirror_dir=run).acquire()
    assert read_lock(local) is None        # the local half was given back


# --------------------------------------------------------------------------------------------
# the history
# --------------------------------------------------------------------------------------------
def test_history_appends_wait_for_a_dead_mount_and_keep_their_order(tmp_path, monkeypatch):
    flaky = FlakyDrive(tmp_path / "drive", monkeypatch)
    log = HistoryLog(tmp_path / "drive" / "metrics.jsonl")
    assert log.append({"step": 1})
    flaky.down()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert not log.append({"step": 2}) and not log.append({"step": 3})
    assert len(_drive_warnings(rec)) == 1 and "1 record(s) wait in memory" in _drive_warnings(rec)[0]
    flaky.up()
    assert log.append({"step": 4})
    assert [r["step"] for r in read_history(log.path)] == [1, 2, 3, 4]


# --------------------------------------------------------------------------------------------
# the run folder's small files (config.yaml, metrics.json)
# --------------------------------------------------------------------------------------------
def _temp(path) -> bool:
    """The temp files of the atomic writes: the writes fail, the reads before them work."""
    return path.name.endswith(".tmp")


def test_run_folder_records_are_written_through_a_drive_that_fails_3_times(tmp_path, monkeypatch):
    from mattingkit.config import load_config
    from mattingkit.run import read_metrics, save_run_config, saved_config, update_metrics

    run = tmp_path / "drive" / "run"
    flaky = FlakyDrive(tmp_path / "drive", monkeypatch)
    run.mkdir()
    flaky.fail_next(3, only=_temp)
    assert save_run_config(load_config("demo"), run)
    flaky.fail_next(3, only=_temp)
    update_metrics(run, "04_inference", {"sad": 1.5})
    flaky.fail_next(3, only=_temp)
    assert save_run_config(load_config("demo", ["data.num_workers=1"]), run)   # a resume-safe change
    assert flaky.failures == 9 and saved_config(run).data.num_workers == 1
    assert read_metrics(run) == {"04_inference": {"sad": 1.5}}
    flaky.fail_next(10**6, only=_temp)              # writes failing past the retries: the error, the file as it was
    with pytest.raises(OSError, match="not connected"):
        update_metrics(run, "04_inference", {"sad": 2.5})
    flaky.fail_next(0)
    assert read_metrics(run) == {"04_inference": {"sad": 1.5}} and not list(run.glob(".*.tmp"))


def _trained_run(run, flaky):
    """A run folder as notebooks 01, 03 and 04 leave it: config, checkpoints, three sections, their files."""
    from mattingkit.config import load_config
    from mattingkit.run import save_run_config, update_metrics

    flaky.fail_next(0)
    save_run_config(load_config("demo"), run)
    for name in ("last.pt", "best.pt"):
        ckpt.save_checkpoint({"step": 5}, run / "checkpoints" / name)
    update_metrics(run, "01_data_download", {"images": 6})
    update_metrics(run, "03_train_gan", {"steps": 5})
    update_metrics(run, "04_inference", {"sad": 1.5})
    for name in ("curves.png", "metrics_val.csv", "comparison.png"):
        (run / name).write_bytes(b"x")
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _named(*names):
    return lambda path: path.name in names


def test_run_folder_records_are_read_through_a_drive_that_fails_3_times(tmp_path, monkeypatch):
    """A read that fails a few times (ENOTCONN) is tried again: no valid section of metrics.json nor its
    files is taken for stale, and save_run_config sees the saved config (refuses a change to training)."""
    from mattingkit.config import load_config
    from mattingkit.run import prune_stale_records, read_metrics, save_run_config, update_metrics

    run = tmp_path / "drive" / "run"
    flaky = FlakyDrive(tmp_path / "drive", monkeypatch)
    run.mkdir()
    files = _trained_run(run, flaky)
    sections = read_metrics(run)
    for name in ("last.pt.json", "best.pt.json", "metrics_inputs.json", "metrics.json", "config.yaml"):
        flaky.failures = 0
        flaky.fail_next(3, only=_named(name))
        assert prune_stale_records(run) == [] and flaky.failures == 3, name
        assert read_metrics(run) == sections, name
    flaky.fail_next(3, only=_named("metrics_inputs.json"))     # an update reads the inputs of every section
    update_metrics(run, "04_inference", {"mse": 0.01})
    assert read_metrics(run)["04_inference"] == {"sad": 1.5, "mse": 0.01}
    assert read_metrics(run)["03_train_gan"] == {"steps": 5}
    flaky.fail_next(3, only=_named("config.yaml"))
    assert save_run_config(load_config("demo"), run) is False   # the same config: nothing to write
    flaky.fail_next(3, only=_named("config.yaml"))
    with pytest.raises(RunStateError, match=r"train.lr_g: 0.001 -> 0.0005"):
        save_run_config(load_config("demo", ["train.lr_g=5e-4"]), run)
    flaky.fail_next(0)
    now = {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert {k: v for k, v in now.items() if k.name not in ("metrics.json", "metrics_inputs.json")} == \
        {k: v for k, v in files.items() if k.name not in ("metrics.json", "metrics_inputs.json")}


def test_run_folder_records_unreadable_past_the_retries_raise_and_nothing_is_deleted(tmp_path, monkeypatch):
    """A read that keeps failing is not a missing file: one line naming the file (a RunStateError, exit 6),
    and the run folder exactly as it was."""
    from mattingkit.config import load_config
    from mattingkit.run import prune_stale_records, save_run_config, update_metrics

    run = tmp_path / "drive" / "run"
    flaky = FlakyDrive(tmp_path / "drive", monkeypatch)
    run.mkdir()
    files = _trained_run(run, flaky)
    for name in ("last.pt.json", "metrics_inputs.json", "metrics.json", "config.yaml"):
        flaky.fail_next(10**6, only=_named(name))
        with pytest.raises(RunStateError, match=rf"{name}: could not be read .*not connected") as err:
            prune_stale_records(run)
        assert "\n" not in str(err.value)
        flaky.fail_next(10**6, only=_named(name))
        with pytest.raises(RunStateError, match=rf"{name}: could not be read"):
            update_metrics(run, "04_inference", {"sad": 9.5})
        flaky.fail_next(0)
    flaky.fail_next(10**6, only=_named("config.yaml"))
    with pytest.raises(RunStateError, match=r"config.yaml: could not be read"):
        save_run_config(load_config("demo", ["train.steps=99"]), run, fresh=True)
    flaky.fail_next(0)
    assert {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == files


# --------------------------------------------------------------------------------------------
# training through a Drive hiccup
# --------------------------------------------------------------------------------------------
def test_training_goes_on_through_a_dead_drive_and_catches_up(tmp_path, monkeypatch):
    from test_train import TinyD, TinyG, TinySet, tiny_cfg

    from mattingkit.train import Trainer

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: None)
    flaky = FlakyDrive(tmp_path / "drive", monkeypatch)
    run, local = tmp_path / "drive" / "run", tmp_path / "local"
    cfg = tiny_cfg(**{"train.steps": 8, "train.ckpt_every": 1, "train.val_every": 4, "train.log_every": 1,
                      "run.checkpoint_local_dir": str(local), "run.mirror_every_min": 0})
    torch.manual_seed(0)
    tr = Trainer(cfg, run_dir=run, model=TinyG(), discriminator=TinyD(), train_dataset=TinySet(),
                 val_dataset=TinySet(n=3, fixed_epoch=0), headless=True)
    flaky.down_when = lambda: 2 <= tr.step < 6          # the mount is gone for steps 2..5
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        summary = tr.fit()
    assert summary["step"] == 8 and summary["stopped"] == "done" and flaky.failures > 0
    assert tr.session.lock is None and not read_lock(run) and not read_lock(local / "run")  # released in both places
    msgs = _drive_warnings(rec)
    assert msgs and len(msgs) == len(set(m.split(" failed")[0] for m in msgs))     # once per kind, not per step
    steps = [r["step"] for r in read_history(local / "run" / "metrics.jsonl") if r["phase"] == "train"]
    assert steps == list(range(1, 9))                                               # complete locally ...
    assert (run / "metrics.jsonl").read_bytes() == (local / "run" / "metrics.jsonl").read_bytes()  # ... and on Drive
    assert ckpt.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 8
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "best.pt.json", "last.pt",
                                                                      "last.pt.json"]


def test_a_run_taken_over_on_drive_stops_and_writes_nothing_more_there(tmp_path, monkeypatch):
    from test_train import TinyD, TinyG, TinySet, tiny_cfg

    from mattingkit.train import Trainer

    run, local = tmp_path / "drive" / "run", tmp_path / "local"
    cfg = tiny_cfg(**{"train.steps": 8, "train.ckpt_every": 2, "run.checkpoint_local_dir": str(local),
                      "run.mirror_every_min": 0})
    torch.manual_seed(0)
    tr = Trainer(cfg, run_dir=run, model=TinyG(), discriminator=TinyD(), train_dataset=TinySet(),
                 val_dataset=TinySet(n=3, fixed_epoch=0), headless=True)
    tr.fit(until=2)
    tr2 = Trainer(cfg, run_dir=run, model=TinyG(), discriminator=TinyD(), train_dataset=TinySet(),
                  val_dataset=TinySet(n=3, fixed_epoch=0), headless=True)
    info = read_lock(local / "run")
    other = dict(info, host="colab-vm-2", token="other-vm")
    (run / LOCK_NAME).write_text(json.dumps(other))           # another VM took the Drive folder over
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(RunStateError, match="taken over"):
        tr2.fit()
    assert (run / "checkpoints" / "last.pt").read_bytes() == before      # nothing copied after that
    assert read_lock(run)["token"] == "other-vm"


# --------------------------------------------------------------------------------------------
# rationed copies, and the estimate notebook 03 prints
# --------------------------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_copies_are_rationed_and_the_estimate_bounds_the_default_recipe(tmp_path):
    """12 simulated hours of the default recipe's saves (last.pt every train.ckpt_every steps, best.pt at
    every validation: the worst case) through RunMirror: the copies made are what drive_space_needed says,
    and that is <= 5 GB with the real checkpoint size of the default recipe."""
    from mattingkit.config import load_config

    cfg = load_config("default")
    need = ckpt.drive_space_needed(cfg, run_dir=tmp_path)
    assert 0.45e9 < need["checkpoint_bytes"] < 0.6e9 and need["hours"] == 12
    assert need["run_bytes"] <= 5e9, need["message"]
    assert need["free_bytes"] > 0 and "Free there now" in need["message"] and "trash" in need["message"]

    run, local = tmp_path / "run", tmp_path / "local"
    clock = _Clock()
    m = ckpt.RunMirror(run, local, run / "checkpoints", cfg.run.mirror_every_min, ("metrics.jsonl",), clock=clock)
    t = cfg.train
    steps_per_s = 5.0                                   # a T4-ish pace: 216k steps in 12 h
    step = 0
    while clock.t < need["hours"] * 3600 and step < t.steps:
        step += t.ckpt_every
        clock.t = step / steps_per_s
        names = [ckpt.LAST] + ([ckpt.BEST] if step % t.val_every == 0 else [])
        for name in names:
            ckpt.save_checkpoint({"step": step}, local / name)
        m.saved(names)
    m.flush()
    assert m.copies <= need["copies"] == 8
    assert m.copies * need["checkpoint_bytes"] <= 5e9
    # without rationing (every checkpoint copied, the old behaviour) the same 12 h would write ~200 GB
    every = ckpt.drive_space_needed(load_config("default", ["run.mirror_every_min=0"]))
    assert every["run_bytes"] > 100e9


def test_notebook_03_prints_the_drive_bytes_beside_the_free_space(tmp_path, capsys, monkeypatch):
    from mattingkit import env, pipeline, run

    ctx = run.prepare_run("default", [], run_name="r", runs_root=tmp_path)
    need = pipeline.drive_space(ctx)          # a local run: the local peak only, no Drive words
    out = capsys.readouterr().out
    assert "Checkpoints need about 1.54 GB" in out and "Drive" not in out
    monkeypatch.setattr(env, "detect_platform", lambda *a, **k: "colab")   # Colab with Drive mounted,
    monkeypatch.setattr(env, "drive_mounted", lambda: True)                 # the run folder on it
    monkeypatch.setattr(env, "COLAB_DRIVE", tmp_path)
    need = pipeline.drive_space(ctx)
    out = capsys.readouterr().out
    assert need["message"] in out and "A 12 h session writes at most 4.1" in out and "Free there now" in out


def test_no_copy_before_the_interval_then_best_first_and_everything_at_the_end(tmp_path):
    run, local = tmp_path / "run", tmp_path / "local"
    clock = _Clock()
    m = ckpt.RunMirror(run, local, run / "checkpoints", 10, clock=clock)
    ckpt.save_checkpoint({"step": 1}, local / ckpt.LAST)
    assert m.saved([ckpt.LAST]) == []                          # 0 min: not due
    clock.t = 601
    ckpt.save_checkpoint({"step": 2}, local / ckpt.BEST)
    ckpt.save_checkpoint({"step": 2}, local / ckpt.LAST)
    assert [p.name for p in m.saved([ckpt.BEST, ckpt.LAST])] == ["best.pt", "best.pt.json"]  # one copy a tick
    assert m.pending == {ckpt.LAST}
    clock.t = 900
    assert m.saved([ckpt.LAST]) == []
    assert [p.name for p in m.flush()] == ["last.pt", "last.pt.json"]
    assert ckpt.load_checkpoint(run / "checkpoints" / ckpt.LAST)["step"] == 2 and m.copies == 2


# --------------------------------------------------------------------------------------------
# resuming from Drive: the copy is checked against the mirror's sidecar
# --------------------------------------------------------------------------------------------
def test_a_corrupt_copy_from_drive_is_refused_and_the_next_valid_checkpoint_used(tmp_path, monkeypatch):
    from mattingkit.checkpoint import pick_resume_state

    local, mirror = tmp_path / "local", tmp_path / "drive" / "checkpoints"
    ckpt.save_checkpoint({"step": 9, "w": torch.arange(1000.0)}, mirror / ckpt.LAST)
    ckpt.save_checkpoint({"step": 5, "w": torch.zeros(1000)}, mirror / ckpt.BEST)
    flaky = FlakyDrive(tmp_path / "drive", monkeypatch)
    flaky.corrupt_reads(mirror / ckpt.LAST, after=1)   # verified fine once, then the copy reads bad bytes
    with pytest.warns(drive.DriveWarning, match=r"last\.pt: .*does not match the SHA-256.*next valid checkpoint"):
        done = ckpt.sync_from_mirror(local, mirror)
    assert done == {"last.pt": "none valid (local: absent; mirror: refused)",
                    "best.pt": "copied from the mirror (step 5)"}
    flaky.clean_reads()
    assert not (local / ckpt.LAST).exists() and ckpt.verify_checkpoint(mirror / ckpt.LAST)  # Drive's left alone
    assert pick_resume_state(local)["step"] == 5
