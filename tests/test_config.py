import dataclasses

import pytest
import yaml

from mattingkit.choices import config_problems as every_choice
from mattingkit.config import (
    Config,
    ConfigError,
    apply_overrides,
    available_configs,
    from_dict,
    load_config,
    parse_overrides,
    save_config,
)


def test_shipped_configs_load_and_differ():
    names = available_configs()
    assert {"default", "demo", "ecom", "aim500"} <= set(names)
    cfgs = {n: load_config(n) for n in names}
    assert cfgs["demo"].model.backbone == "resnet18"
    assert cfgs["default"].model.backbone == "resnet50"
    assert cfgs["ecom"].model.use_trimap is False and cfgs["ecom"].submission.size == 1024
    # aim500 says `base: default` and inherits what it does not change
    assert cfgs["aim500"].train.steps == cfgs["default"].train.steps
    assert cfgs["aim500"].data.layout == "aim500"


def test_dotted_overrides_from_strings_and_mapping():
    cfg = load_config("demo", ["train.lr_g=2e-4", "train.use_gan=false", "data.crop_sizes=[64, 96]",
                               "run.runs_root=null"])
    assert cfg.train.lr_g == pytest.approx(2e-4) and isinstance(cfg.train.lr_g, float)
    assert cfg.train.use_gan is False
    assert cfg.data.crop_sizes == [64, 96]
    assert cfg.run.runs_root is None
    cfg2 = apply_overrides(cfg, {"train.steps": 7, "model.norm": "bn"})
    assert (cfg2.train.steps, cfg2.model.norm) == (7, "bn")
    assert cfg.train.steps != 7  # the original is not modified


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config("demo", ["train.lr_g=1"]).train.lr_g == 1.0
    with pytest.raises(ConfigError, match=r"train\.steps: expected an integer"):
        load_config("demo", ["train.steps=1.5"])


def test_unknown_key_names_key_and_lists_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config("demo", ["train.lr_gg=1"])
    msg = str(e.value)
    assert "train.lr_gg" in msg and "did you mean train.lr_g?" in msg
    with pytest.raises(ConfigError, match="valid keys: run, data"):
        from_dict({"xyz": {}})                       # nothing close: the valid keys
    with pytest.raises(ConfigError, match="unknown key 'trainer' in config; did you mean train?"):
        from_dict({"trainer": {}})


def test_wrong_types_are_named():
    for text, key in [("train.use_gan=maybe", "train.use_gan"), ("data.crop_sizes=5", "data.crop_sizes"),
                      ("model.name=3", "model.name"), ("data.crop_sizes=[1, x]", "data.crop_sizes[1]")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
            load_config("demo", [text])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["train.lr_g"])
    with pytest.raises(ConfigError, match="section.key"):
        parse_overrides(["lr_g=1"])


def test_unknown_config_name_lists_shipped(tmp_path):
    with pytest.raises(ConfigError, match="demo"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_save_roundtrip(tmp_path):
    cfg = load_config("ecom", ["train.steps=3"])
    p = save_config(cfg, tmp_path / "run" / "config.yaml")
    data = yaml.safe_load(p.read_text())
    assert data["train"]["steps"] == 3
    assert from_dict(data) == cfg
    assert load_config(p) == cfg


def test_every_field_has_a_default():
    cfg = Config()
    for section in dataclasses.fields(cfg):
        assert dataclasses.is_dataclass(getattr(cfg, section.name))


# ---------------------------------------------------------------------------------------------
# issue 14: YAML 1.1 words (off/on/yes/no) stay strings for string keys
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("word", ["off"])
def test_amp_off_from_set_and_from_yaml_file(tmp_path, word):
    cfg = load_config("demo", [f"train.amp={word}", f"infer.amp={word}"])
    assert (cfg.train.amp, cfg.infer.amp) == (word, word)
    p = tmp_path / "mine.yaml"
    p.write_text(f"base: demo\ntrain:\n  amp: {word}\ninfer:\n  amp: {word}\n", encoding="utf-8")
    cfg = load_config(p)
    assert (cfg.train.amp, cfg.infer.amp) == (word, word)


def test_yaml_words_stay_strings_but_booleans_stay_booleans(tmp_path):
    cfg = apply_overrides(load_config("demo"), ["run.name=yes", "train.use_gan=true", "model.pretrained=False",
                                                    "data.root=On"])
    assert cfg.run.name == "yes" and cfg.data.root == "On" and cfg.train.use_gan is True and cfg.model.pretrained is False
    p = tmp_path / "mine.yaml"
    p.write_text("base: demo\nrun:\n  name: no\ntrain:\n  use_gan: false\n  tensorboard: True\n", encoding="utf-8")
    cfg = load_config(p)
    assert cfg.run.name == "no" and cfg.train.use_gan is False and cfg.train.tensorboard is True
    # yes/no are not booleans any more: a boolean key says so instead of silently taking them
    with pytest.raises(ConfigError, match=r"train\.use_gan: expected true/false, got 'yes'"):
        load_config("demo", ["train.use_gan=yes"])


def test_cli_config_set_amp_off(capsys):
    from mattingkit.cli import main

    assert main(["config", "--config", "demo", "--set", "train.amp=off"]) == 0
    out = capsys.readouterr().out
    assert "amp: 'off'" in out or "amp: off" in out


# ---------------------------------------------------------------------------------------------
# issue 16: enumerated keys are checked when the config is loaded (issue 22: the owners' choices are
# checked one floor up, in mattingkit.choices; the entry points pass its check to load_config)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("run.device=gpu", "run.device='gpu': choose auto, cpu, cuda, cuda:N"),
    ("model.name=alphagann", "model.name='alphagann': choose alphagan, dim, u2netp"),
    ("model.backbone=resnet101", "model.backbone='resnet101': choose resnet18, resnet34, resnet50 (model.name=alphagan)"),
    ("data.layout=aim", "data.layout='aim': choose "),
    ("trimap.method=erode", "trimap.method='erode': choose erode_dilate, band, mixed"),
    ("train.amp=fp32", "train.amp='fp32': choose auto, off, bf16, fp16"),
    ("infer.amp=yes", "infer.amp='yes': choose auto, off, bf16, fp16"),
    ("train.schedule=linear", "train.schedule='linear': choose constant, cosine, cyclic, plateau"),
    ("loss.gan_type=wgan", "loss.gan_type='wgan': choose bce, lsgan, hinge"),
    ("loss.region=known", "loss.region='known': choose unknown, all"),
    ("train.optimizer=sgd", "train.optimizer='sgd': choose adam, adamw"),
    ("train.best_metric=sda", "train.best_metric='sda': choose sad, mse, grad, conn, competition_mse"),
    ("train.best_mode=lower", "train.best_mode='lower': choose min, max"),
    ("model.norm=ln", "model.norm='ln': choose bn, gn"),
    ("model.dim_stage=both", "model.dim_stage='both': choose encoder_decoder, refinement, joint"),
    ("model.output_stride=32", "model.output_stride=32: choose 8, 16"),
    ("augment.pad=edge", "augment.pad='edge': choose reflect, zero"),
    ("data.foreground=guess", "data.foreground='guess': choose estimate, given, photo"),
    ("infer.tile_overlap=big", "infer.tile_overlap='big': choose auto or a number of pixels"),
])
def test_enumerated_keys_are_checked_at_load(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("demo", [override], check=every_choice)
    assert message in str(e.value)
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(ConfigError):
        apply_overrides(load_config("demo"), [override], check=every_choice)


def test_enumerated_keys_accept_every_documented_value():
    for dev in ("auto", "cpu", "cuda", "cuda:1"):
        assert load_config("demo", [f"run.device={dev}"], check=every_choice).run.device == dev
    assert load_config("demo", ["model.name=dim", "model.backbone=vgg16_bn"], check=every_choice).model.name == "dim"
    assert load_config("demo", ["model.name=u2netp"], check=every_choice).model.name == "u2netp"  # no backbone
    for layout in ("aim500", "adobe", "competition", "alphamatting", "folder", "synthetic"):
        load_config("demo", [f"data.layout={layout}"], check=every_choice)
    for name in available_configs():  # every shipped config is valid
        load_config(name, check=every_choice)


def test_every_wrong_value_is_listed_at_once():
    with pytest.raises(ConfigError) as e:
        load_config("demo", ["run.device=gpu", "train.schedule=linear"], check=every_choice)
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and "run.device" in lines[0] and "train.schedule" in lines[1]


def test_choices_come_from_the_dispatch_tables():
    from mattingkit import device, losses, train, trimap
    from mattingkit.choices import enum_choices
    from mattingkit.data import augment, datasets, layouts
    from mattingkit.models import MODELS
    from mattingkit.models.alphagan import RESNETS
    from mattingkit.models.dim import STAGES

    assert enum_choices("model.name") == tuple(MODELS)
    assert enum_choices("trimap.method") == tuple(trimap.TRIMAP_METHODS)
    assert enum_choices("loss.gan_type") == tuple(losses.GAN_KINDS)
    assert enum_choices("loss.region") == tuple(losses.REGIONS)
    assert enum_choices("train.amp") == enum_choices("infer.amp") == tuple(device.AMP_CHOICES)
    assert enum_choices("data.layout") == tuple(layouts.LAYOUTS)
    assert enum_choices("augment.pad") == tuple(augment.PAD_MODES)
    assert enum_choices("data.foreground") == tuple(datasets.FOREGROUND_MODES)
    assert enum_choices("model.dim_stage") == tuple(STAGES)
    assert set(RESNETS) <= set(enum_choices("model.backbone"))
    # defined in config.py (the trainer moves to these in issue 16 phase 2); train.py agrees today
    assert enum_choices("train.schedule") == tuple(train.SCHEDULES)
    assert enum_choices("train.best_metric") == tuple(train.VAL_METRICS)
    assert enum_choices("train.best_mode") == tuple(train.BEST_MODES)


def test_cli_config_wrong_enum_is_one_line_and_exit_2():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "mattingkit", "config", "--set", "run.device=gpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "run.device='gpu': choose auto, cpu, cuda, cuda:N" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# issue 16: a sweep grid is checked before its first point
# ---------------------------------------------------------------------------------------------
def test_shipped_sweep_grid_is_valid():
    from pathlib import Path

    from mattingkit.choices import validate_grid
    from mattingkit.config import load_yaml

    for path in (Path(__file__).resolve().parents[1] / "notebooks" / "sweeps").glob("*.yaml"):
        spec = load_yaml(path.read_text(encoding="utf-8"))
        validate_grid(spec["grid"], metric=spec.get("metric"), config=spec.get("config", "demo"),
                      overrides=spec.get("overrides"))


def test_grid_problems_are_listed_at_once():
    from mattingkit.choices import validate_grid

    grid = {"train.lr": [1e-4], "trimap.method": ["erode_dilate", "bnad"], "train.steps": [10, "many"],
            "model": [1]}
    with pytest.raises(ConfigError) as e:
        validate_grid(grid, metric="04_inference.sda", config="demo")
    text = str(e.value)
    assert "unknown key 'train.lr'" in text and "train.lr_g" in text       # did you mean
    assert "trimap.method='bnad': choose erode_dilate, band, mixed" in text
    assert "train.steps: expected an integer, got 'many'" in text
    assert "'model' must be section.key" in text
    assert "metric '04_inference.sda'" in text and "04_inference.sad" in text
    assert len(text.splitlines()) == 6  # a heading + one line per problem


def test_grid_checks_values_against_the_other_settings_and_metric_patterns():
    from mattingkit.choices import validate_grid

    # model.backbone is checked against the model the overrides choose
    with pytest.raises(ConfigError, match="model.backbone='resnet18': choose vgg16_bn"):
        validate_grid({"model.backbone": ["resnet18"]}, config="demo", overrides=["model.name=dim"])
    validate_grid({"train.amp": ["off", "bf16"]}, metric="03_train_gan.best.value", config="demo")
    validate_grid({"train.amp": ["off"]}, metric="03_train_gan.final.sad", config="demo")
    with pytest.raises(ConfigError, match="metric 'sad'"):
        validate_grid({"train.amp": ["off"]}, metric="sad", config="demo")
    with pytest.raises(ConfigError, match="non-empty list"):
        validate_grid({"train.amp": []}, config="demo")


# ---------------------------------------------------------------------------------------------
# issue 24: every config problem in one pass (keys, types, choices, ranges; data paths for the CLI)
# ---------------------------------------------------------------------------------------------
SIX_MISTAKES = """base: demo
data:
  batchsize: 8          # 1 unknown key (did you mean data.batch_size?)
  batch_size: -1        # 2 range
  val_fraction: 2       # 3 range
train:
  steps: 0              # 4 range
  lr_g: -5              # 5 range
  schedule: cosin       # 6 choice
"""


def test_six_mistakes_are_one_error_listing_all_six(tmp_path):
    path = tmp_path / "six.yaml"
    path.write_text(SIX_MISTAKES, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path, check=every_choice)
    lines = str(e.value).splitlines()
    assert len(lines) == 6, lines
    text = str(e.value)
    for part in ("unknown key 'data.batchsize' in data; did you mean data.batch_size?",
                 "data.batch_size=-1: must be >= 1", "data.val_fraction=2.0: must be in [0, 1]",
                 "train.steps=0: must be >= 1", "train.lr_g=-5.0: must be >= 0",
                 "train.schedule='cosin': choose constant, cosine, cyclic, plateau"):
        assert part in text


@pytest.mark.parametrize("override", ["data.batch_size=-1", "train.steps=0", "train.lr_g=-5",
                                      "data.val_fraction=2", "train.val_every=0", "augment.two_fg_prob=1.5"])
def test_out_of_range_numbers_are_refused(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "=.*must be"):
        load_config("demo", [override])


def test_types_and_choices_are_reported_together():
    with pytest.raises(ConfigError) as e:
        load_config("demo", ["train.steps=many", "model.name=alphagann", "data.batch_size=0"], check=every_choice)
    lines = str(e.value).splitlines()
    assert len(lines) == 3 and "train.steps: expected an integer" in lines[0]


def test_cli_config_lists_the_config_problems_and_the_missing_data_in_one_line(tmp_path, capsys):
    from mattingkit.cli import main

    path = tmp_path / "six.yaml"
    path.write_text(SIX_MISTAKES + "  init_from: /nonexistent/best.pt\n", encoding="utf-8")
    missing = tmp_path / "nowhere"
    assert main(["config", "--config", str(path), "--set", "data.layout=folder",
                 "--set", f"data.root={missing}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mattingkit config: 8 problems: ") and err.count("\n") == 1
    assert f"{missing}: dataset folder not found" in err and "train.init_from='/nonexistent/best.pt'" in err
    # only missing data: an input error (exit 4), the same words
    assert main(["config", "--set", "data.layout=folder", "--set", f"data.root={missing}"]) == 4
    assert "dataset folder not found" in capsys.readouterr().err
