"""Inference: one image (:func:`predict`) or a folder (:func:`predict_folder`) to alpha mattes, and the
prediction of a run's split with its cache (:func:`predict_split`, notebooks 04 and 05).

Three rooms, imports going down: :mod:`~mattingkit.infer.core` (settings, padding, the forward, tiling,
two passes: one image), :mod:`~mattingkit.infer.cache` (who made a folder of predictions, and the one
refuse / replace / resume rule) and :mod:`~mattingkit.infer.folder` (the pipelined folder path, model
loading, a run's split). Every setting is a field of one typed :class:`~mattingkit.config.InferConfig`
(the defaults live there only), normalised once at each entry together with the device plan
(:class:`~mattingkit.device.DevicePlan`, whose ``autocast()`` is the one place AMP is applied): reflect
padding (``pad_margin`` on every side, then to the model's pad multiple), the known-region clamp, flip
TTA, tiling above ``pixel_budget`` (:mod:`mattingkit.tiling`, with the context the model declares in its
:class:`~mattingkit.tiling.InferGeometry`) and trimap-free two-pass prediction. docs/inference.md explains
each, with the measurements behind the tiling defaults.

Example:
    >>> import numpy as np, torch
    >>> class Gray(torch.nn.Module):          # a "model": alpha = mean colour
    ...     def forward(self, image, trimap):
    ...         return {"alpha": image.mean(1, keepdim=True)}
    >>> img = np.full((50, 70, 3), 0.25, np.float32)
    >>> a = predict(Gray(), img)
    >>> a.shape, a.dtype, float(a[0, 0])
    ((50, 70), dtype('float32'), 0.25)
    >>> round(float(predict(Gray(), np.full((50, 70, 3), 51, np.uint8))[0, 0]), 6)   # uint8: 51 / 255
    0.2
"""
from __future__ import annotations

from ..device import resolve_amp, resolve_device
from ..tiling import DEFAULT_CONTEXT, WINDOW_FLOOR, TilingInfo, core_window, tile_spans
from .cache import (
    PRODUCER_FILE,
    baseline_producer,
    claim_prediction_dir,
    model_producer,
    module_producer,
    producer_record,
)
from .core import (
    PAD_MULTIPLE,
    InferenceInputError,
    infer_settings,
    padding,
    predict,
    predict_passes,
    resolve_context,
)
from .folder import (
    PredictReport,
    SplitPrediction,
    downscaled_copy,
    load_model,
    predict_folder,
    predict_split,
    predictor_for,
)

__all__ = [
    "InferenceInputError", "PredictReport", "SplitPrediction", "TilingInfo", "core_window", "downscaled_copy",
    "PRODUCER_FILE", "baseline_producer", "claim_prediction_dir", "model_producer", "module_producer",
    "predictor_for", "infer_settings", "load_model", "padding", "predict", "predict_folder", "predict_passes",
    "predict_split", "producer_record", "resolve_amp", "resolve_context", "resolve_device", "tile_spans",
    "DEFAULT_CONTEXT", "PAD_MULTIPLE", "WINDOW_FLOOR",
]
