"""The config check's choices come from the modules that dispatch on them, without importing torch.

`mattingkit config` took 2-5 s because mattingkit.choices imported its owners' tables from modules that
import torch (issue 24: help, config and validate start in <= 1 s; the timing is benchmarks/cli_startup.py,
these tests check the cause). The torch-bound owners take their names from mattingkit.names and check
their tables against them at import.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mattingkit import names

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), MATTINGKIT_HEADLESS="1")
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)


_CONFIG_NO_TORCH = f"""
import sys
import mattingkit.cli as cli
from mattingkit.choices import check_config, enum_choices
from mattingkit.config import load_config
for name, overrides in (("demo", []), ("cpu", []), ("default", ["data.augment_on=device"])):
    check_config(load_config(name, overrides))
enum_choices("model.name")
code = cli.main(["config"])        # what `mattingkit config` runs: load, every choice, the data paths
print(code, ",".join(m for m in {HEAVY!r} if m in sys.modules) or "none")
"""


def test_the_config_command_and_check_import_no_torch():
    r = _python(_CONFIG_NO_TORCH)
    assert r.returncode == 0, r.stderr
    assert "model:" in r.stdout                       # the config was printed
    assert r.stdout.strip().splitlines()[-1] == "0 none", r.stdout[-500:] + r.stderr


def test_the_config_command_still_refuses_a_wrong_choice_of_a_torch_bound_owner():
    r = _python(_CONFIG_NO_TORCH.replace('cli.main(["config"])',
                                         'cli.main(["config", "--set", "loss.gan_type=wgan", "--set", "model.name=x"])'))
    assert "loss.gan_type='wgan': choose bce, lsgan, hinge" in r.stderr
    assert "model.name='x': choose alphagan, dim, u2netp" in r.stderr
    assert r.stdout.strip().splitlines()[-1] == "2 none", r.stdout[-500:] + r.stderr


_HELP_NO_TORCH = f"""
import sys
import mattingkit.cli as cli
sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
commands = [[c] for c in sub.choices] + [["kaggle", k] for k in ("push", "status", "pull", "wheel")]
first = "none"
for argv in commands:
    try:
        cli.main(argv + ["--help"])
    except SystemExit:
        pass
    if first == "none" and any(m in sys.modules for m in {HEAVY!r}):
        first = " ".join(argv)
print(len(commands), first)
"""


def test_every_command_help_imports_no_torch():
    r = _python(_HELP_NO_TORCH)
    assert r.returncode == 0, r.stderr
    count, first = r.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) > 15 and first == "none", f"`mattingkit {first} --help` imports torch"


@pytest.mark.parametrize("drift, module, key", [
    ("n.MODELS = n.MODELS + ('modnet',)", "mattingkit.models", "model.name"),
    ("n.GUIDES = ('none', 'closed_form')", "mattingkit.models.alphagan", "model.guide"),
    ("n.BASELINES = ('closed_form', 'trimap')", "mattingkit.baselines", "predict --method"),
])
def test_a_table_that_drifts_from_the_names_stops_the_import(drift, module, key):
    r = _python(f"import mattingkit.names as n\n{drift}\nimport {module}")
    assert r.returncode != 0 and f"RuntimeError: {key}: the table's keys" in r.stderr, r.stderr[-800:]


def test_each_name_reaches_its_own_branch_of_the_owner():
    """The owners that dispatch with if/elif on a name: every name runs; the GAN kinds and loss regions each reach a
    different branch, AMP and augment_on names resolve as their tables say on a CPU (auto = off / cpu here)."""
    from mattingkit import device, losses
    from mattingkit.config import AugmentConfig, TrimapConfig
    from mattingkit.data.device_augment import resolve_augment_on

    logits = torch.tensor([[[[0.5, -1.0, 2.0]]]])
    g = [losses.gan_loss_g(logits, k).item() for k in names.GAN_KINDS]
    d = [losses.gan_loss_d(logits, -logits, k)["total"].item() for k in names.GAN_KINDS]
    assert len(set(np.round(g, 6))) == len(set(np.round(d, 6))) == len(names.GAN_KINDS)
    batch = {"alpha": torch.zeros(1, 1, 1, 3), "trimap": torch.tensor([[[[0.0, 0.5, 1.0]]]])}
    masks = {tuple(losses.region_mask(batch, r).flatten().tolist()) for r in names.REGIONS}
    assert len(masks) == len(names.REGIONS)
    cpu = torch.device("cpu")
    assert [device.resolve_amp(a, cpu) for a in names.AMP_CHOICES] == [None, None, torch.bfloat16, torch.float16]
    assert [resolve_augment_on(a, "cpu", TrimapConfig(), AugmentConfig()) for a in names.AUGMENT_ON] == \
        ["cpu", "cpu", "device"]
    for spec in ("auto", "cpu", "cuda:1"):
        assert names.DEVICE_RE.match(spec)
    with pytest.raises(Exception, match=names.DEVICE_CHOICES):
        device.resolve_device("gpu")


def test_the_owners_use_the_names():
    from mattingkit import device, losses, models
    from mattingkit.data import datasets, device_augment
    from mattingkit.models import alphagan, dim

    assert tuple(models.MODELS) == names.MODELS
    assert alphagan.RESNETS is names.BACKBONES["alphagan"] and alphagan.GUIDES is names.GUIDES
    assert dim.STAGES is names.STAGES
    assert device.AMP_CHOICES is names.AMP_CHOICES and device.DEVICE_RE is names.DEVICE_RE
    assert losses.GAN_KINDS is names.GAN_KINDS and losses.REGIONS is names.REGIONS
    assert datasets.FOREGROUND_MODES is names.FOREGROUND_MODES and datasets.CACHE_MODES is names.CACHE_MODES
    assert device_augment.AUGMENT_ON is names.AUGMENT_ON
