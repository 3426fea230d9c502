"""Bring your own data (issue 16): the README's walk-through, the manifest hint, missing backgrounds."""
from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mattingkit.config import available_configs, load_config
from mattingkit.data import layouts as L
from mattingkit.io import write_png

REPO = Path(__file__).resolve().parents[1]


def _pair(root: Path, image_dir: str, alpha_dir: str, n: int = 2) -> Path:
    for i in range(n):
        write_png(root / image_dir / f"{i:04d}.png", np.full((8, 8, 3), 0.5, np.float32))
        write_png(root / alpha_dir / f"{i:04d}.png", np.full((8, 8), i / n, np.float32))
    return root


# ---------------------------------------------------------------------------------------------
# The manifest hint names the folder names that actually work
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout, image_dirs, alpha_dirs", [
    ("folder", L.FOLDER_DIRS["image"], L.FOLDER_DIRS["alpha"]),
    ("aim500", L.AIM500_DIRS["image"], L.AIM500_DIRS["alpha"]),
    ("alphamatting", L.ALPHAMATTING_DIRS["image"][:3], L.ALPHAMATTING_DIRS["alpha"]),
])
def test_hint_lists_every_recognised_folder_name_and_each_works(tmp_path, layout, image_dirs, alpha_dirs):
    hint = L.layout_hint(layout)
    for name in (*image_dirs, *alpha_dirs):
        assert re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", hint), (name, hint)
    for k, (im, al) in enumerate(itertools.islice(zip(image_dirs, itertools.cycle(alpha_dirs)), 6)):
        root = _pair(tmp_path / str(k), im, al)
        assert len(L.scan(layout, root)) == 2, (im, al)


def test_empty_folder_error_shows_the_hint(tmp_path):
    cfg = load_config("demo", [f"data.root={tmp_path}", "data.layout=folder"])
    with pytest.raises(ValueError) as e:
        L.build_manifest(cfg, tmp_path / "m.csv")
    assert L.layout_hint("folder") in str(e.value) and "images" in str(e.value)


# ---------------------------------------------------------------------------------------------
# A config without base: gets data.backgrounds=bg20k; a missing background folder says what to do
# ---------------------------------------------------------------------------------------------
def test_missing_background_folder_is_an_error_saying_how_to_fix_it(tmp_path):
    (tmp_path / "mine.yaml").write_text("data:\n  layout: folder\n  root: mydata\n", encoding="utf-8")
    cfg = load_config(tmp_path / "mine.yaml", [f"run.data_root={tmp_path}"])
    assert cfg.data.backgrounds == "bg20k"  # the dataclass default a config without base: gets
    with pytest.raises(L.BackgroundsError) as e:
        L.check_backgrounds(cfg)
    msg = str(e.value)
    assert str(tmp_path / "bg20k") in msg and "data.backgrounds" in msg and "data.backgrounds=null" in msg
    assert isinstance(e.value, FileNotFoundError) and e.value.exit_code == 4
    # the dataset build path (list_backgrounds) says the same
    with pytest.raises(L.BackgroundsError, match="data.backgrounds=null"):
        L.list_backgrounds(tmp_path / "bg20k")
    assert L.check_backgrounds(load_config(tmp_path / "mine.yaml", ["data.backgrounds=null"])) is None
    (tmp_path / "bg20k").mkdir()
    with pytest.raises(L.BackgroundsError, match="0 background images"):
        L.check_backgrounds(cfg)
    write_png(tmp_path / "bg20k" / "b.jpg", np.zeros((4, 4, 3), np.float32))
    assert [p.name for p in L.check_backgrounds(cfg)] == ["b.jpg"]


# ---------------------------------------------------------------------------------------------
# The README's "Your own data" walk-through, as written, on a folder made from the demo data: its mattes
# beat every constant matte (the quality it reaches, not only the exit codes)
# ---------------------------------------------------------------------------------------------
README = (REPO / "README.md").read_text(encoding="utf-8")


def _readme_block(marker: str) -> str:
    after = README.split(f"<!-- {marker} -->", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


def _mattingkit(args: list[str], cwd: Path):
    env = dict(os.environ, PYTHONPATH=str(REPO), MATTINGKIT_DATA_ROOT=str(cwd / "data"),
               MATTINGKIT_RUNS_ROOT=str(cwd / "runs"), CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "mattingkit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_readme_walkthrough_from_config_to_validation_makes_real_mattes(tmp_path):
    import shlex
    import shutil

    from mattingkit.data.synthetic import make_demo_data
    from mattingkit.io import read_alpha
    from mattingkit.submission import decode_submission, validate_submission

    # the folders the README shows, made from the demo's product photos and their mattes
    comp = Path(make_demo_data(tmp_path / "demo", seed=0)["root"]) / "competition"
    data = tmp_path / "data"
    shutil.copytree(comp / "train_dataset" / "images", data / "mydata" / "image")
    shutil.copytree(comp / "train_dataset" / "masks", data / "mydata" / "alpha")
    shutil.copytree(comp / "test_dataset" / "orig_1024", data / "mytest")
    (tmp_path / "my.yaml").write_text(_readme_block("own-data-yaml"), encoding="utf-8")

    commands = [shlex.split(line, comments=True) for line in _readme_block("own-data-commands").splitlines()]
    commands = [c for c in commands if c]
    assert [c[1] for c in commands] == ["config", "manifest", "train", "predict", "submit", "validate"]
    for cmd in commands:   # exactly as the README says: the recipe's own budget
        assert cmd[0] == "mattingkit"
        r = _mattingkit(cmd[1:], tmp_path)
        assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-3000:])
        if cmd[1] == "config":
            assert "layout: folder" in r.stdout and "use_trimap: false" in r.stdout
        if cmd[1] == "manifest":
            assert "(8 items)" in r.stdout
        if cmd[1] == "validate":
            assert "OK" in r.stdout and "not checked" not in r.stdout
    assert sorted(p.name for p in (tmp_path / "predictions" / "mydata").glob("*.png")) == \
        sorted(p.with_suffix(".png").name for p in (data / "mytest").iterdir())
    rep = validate_submission(tmp_path / "submissions" / "mydata.csv", test_dir=data / "mytest")
    assert rep.ok and rep.rows == 4

    # the mattes against the true ones (the demo keeps them in its sample submission)
    truth = {p.stem: read_alpha(p) for p in decode_submission(comp / "sample_submission.csv", tmp_path / "truth")}
    ours = {p.stem: read_alpha(p) for p in decode_submission(tmp_path / "submissions" / "mydata.csv", tmp_path / "o")}
    sad = np.mean([np.abs(ours[k] - truth[k]).sum() / 1000 for k in truth])
    constants = {c: np.mean([np.abs(c - truth[k]).sum() / 1000 for k in truth]) for c in (0.0, 0.5, 1.0)}
    assert sad < 0.8 * min(constants.values()), (sad, constants)


def test_config_help_lists_every_shipped_config():
    r = subprocess.run([sys.executable, "-m", "mattingkit", "config", "--help"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="400"), timeout=120)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for name in available_configs():
        assert re.search(rf"\b{name}\b", text), name
