import dataclasses

import pytest
import yaml

from mattingkit.config import (
    Config, ConfigError, apply_overrides, available_configs, from_dict, load_config, parse_overrides, save_config,
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
    assert "train.lr_gg" in msg and "lr_g" in msg and "steps" in msg
    with pytest.raises(ConfigError, match="valid keys: run, data"):
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
