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
