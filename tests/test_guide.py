"""model.guide: the classical solve is an input, computed once per image (prediction) or per crop (training)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mattingkit.models import alphagan


def _soft_edge(h: int, w: int, shift: int = 0, seed: int = 0):
    """An HxWx3 image with a soft vertical edge between two colours and a trimap with a wide unknown band."""
    x = np.arange(w, dtype=np.float32)
    alpha = np.clip((x - w / 2 - shift) / 12 + 0.5, 0, 1)[None, :].repeat(h, 0)
    fg, bg = np.array([0.9, 0.3, 0.1], np.float32), np.array([0.1, 0.4, 0.8], np.float32)
    img = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    img = np.clip(img + 0.02 * np.random.default_rng(seed).random(img.shape, dtype=np.float32), 0, 1)
    tri = np.where(alpha == 0, 0.0, np.where(alpha == 1, 1.0, 0.5)).astype(np.float32)
    tri[:, w // 2 + shift - 20: w // 2 + shift + 20] = 0.5
    return img, tri


@pytest.fixture
def solves(monkeypatch):
    """Every guide solve (image shapes), counted at the one place guides are computed."""
    calls: list[tuple[int, ...]] = []
    real = alphagan.solve_guide

    def counting(method, image, trimap):
        calls.append(tuple(np.shape(image)))
        return real(method, image, trimap)

    monkeypatch.setattr(alphagan, "solve_guide", counting)
    return calls


def _guided_demo():
    from mattingkit.config import load_config
    from mattingkit.models import build_model

    torch.manual_seed(0)
    return build_model(load_config("demo", ["model.pretrained=false", "model.guide=closed_form"]).model).eval()


def test_forward_never_solves_and_asks_for_the_guide():
    model = _guided_demo()
    img, tri = torch.rand(1, 3, 64, 64), torch.full((1, 1, 64, 64), 0.5)
    with pytest.raises(ValueError, match="forward needs guide=.*mattingkit.infer.*data workers"):
        model(img, tri)
    out = model(img, tri, guide=torch.full((1, 1, 64, 64), 0.25))
    assert torch.equal(out["alpha"], out["guide"]) and (out["alpha"] == 0.25).all()   # zero residual


def test_tiled_tta_prediction_solves_once_per_image(solves):
    """A GroupNorm guided model (34 global ops: many statistics passes over several tiles, twice for the
    flip) solves each image once, at its padded size; the tiled result equals the untiled one."""
    from mattingkit.infer import predict
    from mattingkit.tiling import TilingInfo

    model = _guided_demo()
    kw = dict(pixel_budget=5_000, tile_size=128, tile_overlap=32, tta_flip=True, pad_margin=0)
    images = [_soft_edge(64, 200, shift=s, seed=i) for i, s in enumerate((-10, 10))]
    tiled = []
    for img, tri in images:
        info = TilingInfo()
        tiled.append(predict(model, img, tri, tiling_info=info, **kw))
        assert info.tiles >= 3 and info.stats_passes == 34
    assert solves == [(64, 224, 3)] * 2       # once per image, at the padded size; not per tile or pass
    for (img, tri), a in zip(images, tiled):
        untiled = predict(model, img, tri, tta_flip=True, pad_margin=0)
        unknown = tri == 0.5
        assert np.abs(a - untiled)[unknown].max() <= 1 / 255
        assert untiled[unknown].std() > 0.1       # a real matte, not a constant
    assert len(solves) == 4


def test_training_solves_each_crop_once_in_the_dataset(tmp_path, demo_data_root, solves, monkeypatch):
    """A guided demo config trains on CPU: every training crop is solved exactly once, in the dataset's
    item path (the data workers), and the model's forward gets it as an input."""
    import inspect

    from mattingkit.config import load_config
    from mattingkit.data.datasets import TrainDataset
    from mattingkit.train import Trainer

    callers: list[str] = []
    counting = alphagan.solve_guide

    def where(method, image, trimap):
        callers.append(inspect.stack()[1].function)
        return counting(method, image, trimap)

    monkeypatch.setattr(alphagan, "solve_guide", where)
    items: list[int] = []
    getitem = TrainDataset.__getitem__

    def counted(self, key):
        items.append(1)
        return getitem(self, key)

    monkeypatch.setattr(TrainDataset, "__getitem__", counted)
    seen: list[tuple] = []
    forward = alphagan.AlphaGANGenerator.forward

    def spy(self, image, trimap=None, guide=None):
        seen.append(None if guide is None else (tuple(guide.shape), guide.dtype))
        return forward(self, image, trimap, guide)

    monkeypatch.setattr(alphagan.AlphaGANGenerator, "forward", spy)
    cfg = load_config("demo", {
        "run.device": "cpu", "run.data_root": str(demo_data_root), "model.guide": "closed_form",
        "data.batch_size": 2, "data.num_workers": 0, "train.amp": "off", "train.use_gan": False,
        "train.val_at_start": False, "train.tensorboard": False, "train.log_every": 100, "train.image_every": 100,
        "train.val_every": 100, "train.ckpt_every": 100, "train.steps": 100})
    tr = Trainer(cfg, run_dir=tmp_path / "run", headless=True)
    try:
        assert tr.train_ds.guide == "closed_form" and tr.train_ds.augment_on == "cpu"
        head = getattr(tr.G, "module", tr.G).head
        w0 = head.weight.detach().clone()
        for _ in range(3):
            tr.after_step(tr.train_step(), cfg.train.steps)
        assert not torch.equal(head.weight, w0)       # the residual head trains
    finally:
        tr.close()
    assert len(items) >= 3 * 2 and len(solves) == len(items)    # one solve per crop, none elsewhere
    assert set(callers) == {"_sample"}                          # TrainDataset's item path
    assert seen[:3] == [((2, 1, 64, 64), torch.float32)] * 3    # forward got the workers' guide


def test_device_augmentation_refuses_a_guided_model():
    from mattingkit.choices import config_problems
    from mattingkit.config import AugmentConfig, TrimapConfig, load_config
    from mattingkit.data.device_augment import resolve_augment_on

    cfg = load_config("demo", ["model.guide=closed_form", "data.augment_on=device"])
    assert any("data.augment_on='device' cannot train model.guide='closed_form'" in p and "data workers" in p
               for p in config_problems(cfg))
    assert resolve_augment_on("auto", "cuda", TrimapConfig(), AugmentConfig(), guide="closed_form") == "cpu"
    assert resolve_augment_on("auto", "cuda", TrimapConfig(), AugmentConfig()) == "device"
    with pytest.raises(ValueError, match="model.guide='knn'.*CPU data workers"):
        resolve_augment_on("device", "cuda", TrimapConfig(), AugmentConfig(), guide="knn")


def test_compact_items_carry_the_guide_like_alpha():
    from mattingkit.data.compact import compact_to_float, to_compact_item
    from mattingkit.data.datasets import collate, to_item

    img, tri = _soft_edge(32, 48)
    s = {"image": img, "fg": img, "bg": img, "alpha": tri, "trimap": tri, "id": "a",
         "guide": alphagan.solve_guide("closed_form", img, tri)}
    item = to_compact_item(s)
    assert item["guide"].dtype == torch.uint16 and item["guide"].shape == (1, 32, 48)
    batch = compact_to_float(collate([item, item]))
    assert batch["guide"].dtype == torch.float32 and batch["guide"].shape == (2, 1, 32, 48)
    assert np.abs(batch["guide"][0, 0].numpy() - s["guide"]).max() <= 0.5 / 65535 + 1e-7
    assert torch.equal(to_item(s)["guide"][0], torch.from_numpy(s["guide"]))
    del s["guide"]
    assert "guide" not in to_compact_item(s) and "guide" not in to_item(s)   # unguided: nothing extra


def test_a_guide_needs_a_trimap():
    from mattingkit.config import ModelConfig
    from mattingkit.errors import UsageError
    from mattingkit.models import build_model

    with pytest.raises(UsageError, match="needs a trimap.*constant 0.5"):
        build_model(ModelConfig(pretrained=False, backbone="resnet18", guide="closed_form", use_trimap=False))


def test_out_of_memory_retries_reuse_the_first_tries_guide(tmp_path, solves, monkeypatch):
    """A batch of two guided predictions runs out of memory, then each image untiled too (a GPU's limit,
    simulated): the tiled retries reuse the guide solved by the first (batched) try, so each image is
    solved once, and the mattes are those of a run whose tiled first try fitted. A downscaled last rung
    solves once more, at its own smaller size."""
    from mattingkit.infer import predict_folder
    from mattingkit.io import read_alpha, write_png

    model = _guided_demo()
    forward = model.forward
    limit = {"px": 10_000}

    def limited(image, trimap=None, guide=None):   # as a GPU would: the full untiled image does not fit
        if image.shape[0] * image.shape[-2] * image.shape[-1] > limit["px"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(image, trimap, guide)

    monkeypatch.setattr(model, "forward", limited)
    src, tris = tmp_path / "images", tmp_path / "trimaps"
    for i, shift in enumerate((-10, 10)):
        img, tri = _soft_edge(64, 200, shift=shift, seed=i)
        write_png(src / f"{i}.png", img)
        write_png(tris / f"{i}.png", tri)
    kw = dict(tile_overlap=32, tta_flip=True, pad_margin=0, headless=True, verbose=False)
    rep = predict_folder(model, src, tmp_path / "retried", tris, batch_size=2, **kw)
    assert rep.ok and rep.notes[0] == "batch of 2 ran out of memory; predicted one by one"
    assert [n.split(":")[0] for n in rep.notes[1:]] == ["0", "1"] and all("tile_size=128" in n for n in rep.notes[1:])
    assert solves == [(64, 224, 3)] * 2          # the batched try solved both; no retry solved again
    fitted = predict_folder(model, src, tmp_path / "fitted", tris, pixel_budget=1, tile_size=128, **kw)
    assert fitted.ok and not fitted.notes and len(solves) == 4
    for stem in ("0", "1"):
        a, b = read_alpha(tmp_path / "retried" / f"{stem}.png"), read_alpha(tmp_path / "fitted" / f"{stem}.png")
        assert np.abs(a - b).max() <= 1e-6 and a[:, 90:110].std() > 0.1   # the same real matte
    solves.clear()
    limit["px"] = 5_000                            # no tile fits either: the downscaled last rung
    rep = predict_folder(model, [src / "0.png"], tmp_path / "small", tris, **kw)
    assert rep.ok and "DOWNSCALED" in rep.notes[0]
    assert solves[0] == (64, 224, 3) and len(solves) == 2 and solves[1][1] < 224   # full size once, then its own
