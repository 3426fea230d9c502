"""Run-folder lock (issue 16): one trainer per run folder, across processes and hosts (Drive)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mattingkit.errors import RunStateError
from mattingkit.runlock import LOCK_NAME, RunLock, read_lock

REPO = Path(__file__).resolve().parents[1]

# A holder process: takes the lock, writes "held", waits for a "release" file, releases.
HOLDER = """
import sys, time
from pathlib import Path
from mattingkit.runlock import RunLock
run = Path(sys.argv[1])
with RunLock(run):
    (run / "held").write_text("1")
    while not (run / "release").exists():
        time.sleep(0.02)
"""
# A second process: tries once; prints the message and exits with the error's exit code.
TRY = """
import sys
from mattingkit.errors import MattingKitError
from mattingkit.runlock import RunLock
try:
    lock = RunLock(sys.argv[1], force=len(sys.argv) > 2).acquire()
except MattingKitError as e:
    print(e, file=sys.stderr)
    sys.exit(e.exit_code)
print("acquired")
lock.release()
"""


def _py(code: str, *args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert time.monotonic() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.02)


def _fake_lock(run: Path, host: str, pid: int, heartbeat_age: float) -> None:
    now = time.time()
    run.mkdir(parents=True, exist_ok=True)
    (run / LOCK_NAME).write_text(json.dumps({
        "host": host, "pid": pid, "started": now - heartbeat_age - 60, "heartbeat": now - heartbeat_age,
        "token": "other"}))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_second_process_is_refused_naming_the_holder(tmp_path):
    holder = _py(HOLDER, tmp_path)
    try:
        _wait_for(tmp_path / "held")
        second = _py(TRY, tmp_path)
        out, err = second.communicate(timeout=60)
        assert second.returncode == RunStateError.exit_code, (out, err)
        info = read_lock(tmp_path)
        assert info["pid"] == holder.pid
        for part in (f"pid {holder.pid}", info["host"], "started", "last heartbeat", "--force"):
            assert part in err, (part, err)
    finally:
        (tmp_path / "release").write_text("1")
        holder.communicate(timeout=60)
    assert holder.returncode == 0
    assert not (tmp_path / LOCK_NAME).exists()  # released on exit
    again = _py(TRY, tmp_path)
    assert again.communicate(timeout=60)[0].strip() == "acquired"


def test_creation_is_race_safe(tmp_path):
    """Several processes start together on a free folder: exactly one gets the lock."""
    gate = tmp_path / "go"
    code = ("import sys, time\nfrom pathlib import Path\nfrom mattingkit.errors import RunStateError\n"
            "from mattingkit.runlock import RunLock\n"
            "while not Path(sys.argv[2]).exists(): time.sleep(0.005)\n"
            "try:\n    RunLock(sys.argv[1]).acquire()\nexcept RunStateError:\n    sys.exit(6)\n"
            "time.sleep(1.0)\n")  # hold it (no release) while the others try
    procs = [_py(code, tmp_path / "run", gate) for _ in range(4)]
    time.sleep(0.5)
    gate.write_text("1")
    codes = [p.wait(timeout=60) for p in procs]
    assert sorted(codes) == [0, 6, 6, 6], codes


def test_same_host_dead_pid_is_stale_and_taken(tmp_path):
    import socket

    _fake_lock(tmp_path, socket.gethostname(), _dead_pid(), heartbeat_age=1.0)
    with RunLock(tmp_path) as lock:
        assert read_lock(tmp_path)["pid"] == os.getpid()
        assert "took over a stale lock" in lock.note
    assert not (tmp_path / LOCK_NAME).exists()


def test_same_host_live_pid_refuses_even_with_an_old_heartbeat(tmp_path):
    import socket

    _fake_lock(tmp_path, socket.gethostname(), os.getppid(), heartbeat_age=10_000)
    with pytest.raises(RunStateError, match="--force"):
        RunLock(tmp_path, stale_s=60).acquire()


def test_other_host_fresh_is_refused_and_stale_is_taken(tmp_path):
    _fake_lock(tmp_path, "colab-vm-1", 4242, heartbeat_age=30)
    with pytest.raises(RunStateError) as e:
        RunLock(tmp_path, stale_s=900).acquire()
    msg = str(e.value)
    assert "colab-vm-1" in msg and "pid 4242" in msg and "last heartbeat 30 s ago" in msg
    assert len(msg.splitlines()) == 1
    _fake_lock(tmp_path, "colab-vm-1", 4242, heartbeat_age=1000)
    with RunLock(tmp_path, stale_s=900):
        assert read_lock(tmp_path)["pid"] == os.getpid()


def test_force_takes_a_live_lock_over_and_the_old_holder_notices(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunStateError):
        RunLock(tmp_path).acquire()  # this process already holds it
    second = RunLock(tmp_path, force=True).acquire()
    assert read_lock(tmp_path)["token"] == second.token
    with pytest.raises(RunStateError, match="taken over"):
        first.heartbeat()
    first.release()  # does not remove the new holder's lock
    assert read_lock(tmp_path)["token"] == second.token
    second.release()
    assert read_lock(tmp_path) is None


def test_heartbeat_refreshes_and_the_stale_time_comes_from_the_config(tmp_path):
    from mattingkit.config import load_config

    cfg = load_config("demo", ["run.lock_stale_s=30"])
    lock = RunLock.for_config(tmp_path, cfg)
    assert lock.stale_s == 30
    with lock:
        before = read_lock(tmp_path)["heartbeat"]
        time.sleep(0.05)
        lock.heartbeat()
        info = read_lock(tmp_path)
        assert info["heartbeat"] > before and info["started"] == pytest.approx(before, abs=1)


def test_a_lock_file_that_is_not_json_and_old_is_stale(tmp_path):
    p = tmp_path / LOCK_NAME
    p.write_text("")
    old = time.time() - 3600
    os.utime(p, (old, old))
    with RunLock(tmp_path, stale_s=900):
        pass
