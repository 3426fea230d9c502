"""Validation during training, predicted through inference's own path.

Each evaluation item goes through :func:`mattingkit.infer.predict` with the run's ``infer`` settings — the
same reflect padding, tiling, AMP resolver and known-region clamp as notebook 04 — so ``best.pt`` is chosen
under the protocol notebook 04 reports. The metrics are the official ones (:mod:`mattingkit.metrics`).

``data.val_max_side`` caps the image the model sees; the metrics are still measured at full resolution
(the prediction upsampled to the original size, against the full-resolution alpha and trimap), because SAD
is a sum: a capped image would report a (side ratio)² smaller SAD than notebook 04 on the same image. The
only difference left from an uncapped evaluation is the model's input resolution.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..device import HOST, cudnn_benchmark
from .setup import VAL_METRICS
from .stream import to_device

#: Items kept for the TensorBoard picture of a validation.
GRID_ITEMS = 4


def _numpy_item(item: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image HxWx3, trimap HxW, alpha HxW) float32 of one dataset item (compact items made float)."""
    batch = to_device({k: (v.unsqueeze(0) if isinstance(v, torch.Tensor) else [v]) for k, v in item.items()},
                      HOST)
    image = batch["image"][0].float().permute(1, 2, 0).contiguous().numpy()
    return image, batch["trimap"][0, 0].float().numpy(), batch["alpha"][0, 0].float().numpy()


@torch.no_grad()
def validate_model(model: nn.Module, dataset, cfg: Config, device: torch.device, limit: int, rank: int = 0,
                   world: int = 1) -> tuple[torch.Tensor, list]:
    """This process's share (items ``rank, rank + world, ...`` below ``limit``) of the validation sums
    ``[n, sad, mse, grad, conn, competition_mse]`` (float64), and up to :data:`GRID_ITEMS`
    ``(image, trimap, gt, prediction)`` tensors for a picture."""
    from ..infer import predict
    from ..infer.core import restore_alpha
    from ..metrics import EmptyUnknownWarning, competition_mse, compute_metrics

    sums = torch.zeros(6, dtype=torch.float64)
    grid = []
    for i in range(rank, limit, world):
        item = dict(dataset[i])
        full = {k: item.pop(k) for k in ("alpha_full", "trimap_full") if k in item}
        image, trimap, gt = _numpy_item(item)
        pred = predict(model, np.clip(image, 0.0, 1.0), trimap, infer_cfg=cfg.infer, device=device,
                       trimap_cfg=cfg.trimap)
        shown = (image, trimap, gt, pred)
        if full:  # capped: measure at full resolution (the definition notebook 04 uses)
            gt = full["alpha_full"].reshape(full["alpha_full"].shape[-2:]).float().numpy()
            trimap = full["trimap_full"].reshape(full["trimap_full"].shape[-2:]).float().numpy()
            pred = restore_alpha(pred, gt.shape, trimap)   # as notebook 04: known pixels exact at full size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptyUnknownWarning)  # an all-known trimap counts 0, as in 04
            m = compute_metrics(pred, gt, trimap)
        sums += torch.tensor([1.0, m["sad"], m["mse"], m["grad"], m["conn"], competition_mse(pred, gt)],
                             dtype=torch.float64)
        if len(grid) < GRID_ITEMS:
            image, trimap, gt, pred = shown  # (the picture at the model's resolution)
            grid.append((torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(trimap), torch.from_numpy(gt),
                         torch.from_numpy(pred)))
    return sums, grid


def validate(model: nn.Module, dataset, cfg: Config, device: torch.device, dist, max_images: int | None = None
             ) -> tuple[dict[str, float] | None, list]:
    """Full-resolution validation of ``model`` on ``dataset`` (``data.val_limit`` / ``max_images`` items at
    most, sharded over the processes of ``dist``): mean ``sad, mse, grad, conn, competition_mse`` (+ ``n``),
    or None without items; and this process's picture items (:func:`validate_model`)."""
    if dataset is None or len(dataset) == 0:
        return None, []
    limit = len(dataset)
    for cap in (cfg.data.val_limit, max_images):
        if cap is not None:
            limit = min(limit, int(cap))
    with cudnn_benchmark(False):  # full-resolution images of many shapes: no autotune per shape
        sums, grid = validate_model(model, dataset, cfg, device, limit=limit, rank=dist.rank, world=dist.world)
    sums = dist.sum(sums).cpu()
    n = int(sums[0].item())
    if n == 0:
        return None, grid
    result = {k: float(sums[j + 1] / n) for j, k in enumerate(VAL_METRICS)}
    result["n"] = n
    return result, grid


__all__ = ["GRID_ITEMS", "validate", "validate_model"]
