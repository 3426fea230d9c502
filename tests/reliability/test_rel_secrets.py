"""Secrets: fake Kaggle credentials in every supported form never reach a file, a log or an output.

1. The download step: the real ``kaggle`` client, driven through mattingkit.kaggle, against the
   fake Kaggle on 127.0.0.1 from tests/test_download.py (run as a script, as that file does), with
   each credential form in turn (errors and successes).
2. A full smoke pipeline (notebooks 01 -> 05 through papermill kernels) with *all* forms present at
   once: KAGGLE_USERNAME/KAGGLE_KEY, KAGGLE_API_TOKEN, ~/.kaggle/kaggle.json, ~/.kaggle/access_token
   (a temp HOME).
3. Kaggle kernels with every form present: ``mattingkit kaggle push --dry-run`` (the kernel folder),
   ``kaggle push`` (the notebook, metadata and parameters Kaggle received, recorded by the fake Kaggle of
   tests/kaggle_fake_server.py), ``kaggle status`` and ``kaggle pull`` (the pulled run folder).

Then every file written (output notebooks, logs, TensorBoard events, checkpoints, manifests, CSVs,
YAML, caches under HOME) and every captured output is searched for each secret as raw bytes and in
base64 (any alignment, standard and URL-safe), URL-encoded, hex and UTF-16 forms, and for the HTTP
Basic-auth value: 0 occurrences.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from relkit import REPO, scan_for_secrets, secret_forms, subprocess_env

pytestmark = pytest.mark.reliability

USER = "tester"  # the fake server's user name (tests/test_download.py)
SECRETS = {"token_env": "RELTOKENENV_9f8e7d6c5b4a3", "token_file": "RELTOKENFILE_1a2b3c4d5e6f7",
           "key_env": "RELKEYENV_0q9w8e7r6t5y4u", "key_json": "RELKEYJSON_z1x2c3v4b5n6m7"}


def _files(root: Path, skip: set[Path] = frozenset()) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p not in skip]


def _home_with_credential_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``tmp_path/home`` holding both credential files (``~/.kaggle/kaggle.json``, ``~/.kaggle/access_token``):
    ``(home, kaggle_json, token_file)``."""
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    kaggle_json = home / ".kaggle" / "kaggle.json"
    kaggle_json.write_text(json.dumps({"username": USER, "key": SECRETS["key_json"]}))
    token_file = home / ".kaggle" / "access_token"
    token_file.write_text(SECRETS["token_file"])
    return home, kaggle_json, token_file


def test_secret_forms_are_found_when_present(tmp_path):
    """The scanner itself: each encoding of a secret planted in a file is found (the guard for the
    tests below, which pass only when nothing is found)."""
    import base64
    import urllib.parse

    s = SECRETS["key_env"]
    plants = {"raw": s.encode(), "url": urllib.parse.quote(f"k={s}&x").encode(),
              "b64": base64.b64encode(b"xy" + s.encode() + b"tail"),
              "basic": b"Authorization: Basic " + base64.b64encode(f"{USER}:{s}".encode()),
              "utf16": f"::{s}::".encode("utf-16-le")}
    for name, data in plants.items():
        p = tmp_path / name
        p.write_bytes(b"prefix " + data + b" suffix")
        assert scan_for_secrets([p], {"key_env": s}, USER), name
    clean = tmp_path / "clean"
    clean.write_bytes(b"nothing to see " * 100)
    assert not scan_for_secrets([clean], SECRETS, USER)
    assert len(secret_forms(s, USER)) > 10


def test_download_step_leaks_no_credential(tmp_path):
    if importlib.util.find_spec("kaggle") is None:   # (importing kaggle here would print a login hint)
        pytest.skip("the kaggle package is not installed")
    harness = REPO / "tests" / "test_download.py"
    if not harness.exists():
        pytest.skip("tests/test_download.py (the fake Kaggle harness) is absent")
    work = tmp_path / "work"
    home = work / "home"
    home.mkdir(parents=True)
    env = subprocess_env(HOME=str(home), FAKE_SECRETS=json.dumps(SECRETS), MATTINGKIT_DATA_ROOT=str(work / "data"))
    proc = subprocess.run([sys.executable, str(harness), "--fake-kaggle", str(work)], capture_output=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:].decode("utf-8", "replace")
    line = next(ln for ln in proc.stdout.decode().splitlines() if ln.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS "):])
    # the credentials were really used: errors named their source, successes downloaded
    assert results["success_competition"]["ok"] and results["success_dataset"]["ok"], results
    assert results["token_401"]["kind"] == "auth" and results["rules_403"]["kind"] == "rules"
    files = _files(work, skip={home / ".kaggle" / "kaggle.json", home / ".kaggle" / "access_token"})
    out = work / "captured_output.bin"
    out.write_bytes(proc.stdout + b"\n" + proc.stderr)  # DEBUG logs of every logger included
    hits = scan_for_secrets(files + [out], SECRETS, USER)
    assert not hits, "\n".join(hits)
    assert len(files) >= 5


@pytest.mark.slow
def test_smoke_pipeline_with_every_credential_form_leaks_nothing(tmp_path, monkeypatch):
    from mattingkit import kaggle as dl
    from mattingkit import runner

    home, kaggle_json, token_file = _home_with_credential_files(tmp_path)
    env = {"KAGGLE_USERNAME": USER, "KAGGLE_KEY": SECRETS["key_env"], "KAGGLE_API_TOKEN": SECRETS["token_env"]}
    # each form on its own is a credential the kit recognises
    assert dl.find_credentials(env, home=home).found
    assert dl.find_credentials({}, home=home).kind == "access_token"
    token_file.rename(token_file.with_suffix(".off"))
    assert dl.find_credentials({}, home=home).kind == "legacy_key"
    token_file.with_suffix(".off").rename(token_file)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")      # the kernels: no spinning threads on a busy machine
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    runs, subs, data = tmp_path / "runs", tmp_path / "submissions", tmp_path / "data"
    res = runner.run_pipeline("demo", [f"run.data_root={data}"], name="secrets", smoke=True, runs_root=runs,
                              parameters={"submission_dir": str(subs)}, quiet=True)
    assert res.ok, res.summary()
    files = _files(tmp_path, skip={kaggle_json, token_file})
    kinds = {p.suffix for p in files}
    assert {".ipynb", ".pt", ".csv", ".yaml", ".json", ".jsonl", ".png"} <= kinds, kinds
    assert any(p.name.startswith("events.out.tfevents") for p in files)
    hits = scan_for_secrets(files, SECRETS, USER)
    assert not hits, "\n".join(hits)


def test_kaggle_kernel_folder_pushed_notebook_and_pulled_outputs_leak_nothing(tmp_path):
    if importlib.util.find_spec("kaggle") is None:
        pytest.skip("the kaggle package is not installed")
    sys.path.insert(0, str(REPO / "tests"))
    from kaggle_fake_server import FakeKaggle

    home, kaggle_json, token_file = _home_with_credential_files(tmp_path)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("base: demo\n")
    runs, work = tmp_path / "runs", tmp_path / "work"
    work.mkdir()
    outputs = {"runs/leak/metrics.json": b'{"04_inference": {"sad": 1.0}}', "runs/leak/DONE": b"{}",
               "runs/leak/notebooks/05_submission.ipynb": b'{"cells": []}'}
    with FakeKaggle(tokens=(SECRETS["token_env"],), keys=(SECRETS["key_env"], SECRETS["key_json"])) as fk:
        env = fk.client_env(subprocess_env(), str(home), token=SECRETS["token_env"], key=SECRETS["key_env"])
        fk.kernel_plan(f"{USER}/mattingkit-leak", ["COMPLETE"], outputs=outputs)

        def mk(*args):
            return subprocess.run([sys.executable, "-m", "mattingkit", *map(str, args)], cwd=work, env=env,
                                  capture_output=True, timeout=300)

        common = ["--config", cfg, "--set", "train.steps=3", "--param", "n_preview=1", "--name", "leak",
                  "--repo", "https://example.org/mattingkit.git", "--runs-root", runs]
        procs = [mk("kaggle", "push", *common, "--dry-run", work / "kernel"), mk("kaggle", "push", *common),
                 mk("kaggle", "status", "leak", "--runs-root", runs), mk("kaggle", "pull", "leak", "--runs-root", runs)]
        for p in procs:
            assert p.returncode == 0, p.stderr[-2000:].decode("utf-8", "replace")
        pushed = fk.bodies("SaveKernel")
        assert len(pushed) == 1 and "n_preview=1" in pushed[0]["text"]      # the real notebook was received
        received = work / "received.json"
        received.write_text(json.dumps({k: v for k, v in pushed[0].items()}))
        auths = {r.get("auth") for r in fk.requests if r["method"] == "POST"}
    assert auths == {"Bearer"}        # the credentials were really used, by the client
    out = work / "captured_output.bin"
    out.write_bytes(b"\n".join(p.stdout + p.stderr for p in procs))
    files = _files(work) + _files(runs)
    assert {"kernel-metadata.json", "mattingkit-run.ipynb", "metrics.json", "kaggle_source.json"} <= \
        {p.name for p in files}
    hits = scan_for_secrets(files + [out, received], SECRETS, USER)
    assert not hits, "\n".join(hits)

