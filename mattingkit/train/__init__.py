"""The GAN trainer: G (matting network) + optional D (PatchGAN), per-iteration schedules, AMP, validation
with the official metrics through inference's own path, TensorBoard + JSONL logging, atomic checkpoints,
auto-resume, and multi-process training through HF Accelerate (PyTorch DDP underneath).

One concern per module: :mod:`~mattingkit.train.schedule` (:class:`LRSchedule`),
:mod:`~mattingkit.train.distributed` (:class:`Dist`), :mod:`~mattingkit.train.stream` (:class:`BatchStream`,
:class:`EpochIndexed`, :func:`to_device`, the loader), :mod:`~mattingkit.train.setup` (config checks, data,
optimisers, starting weights), :mod:`~mattingkit.train.session` (the run folder, its lock, the checkpoint
state and resuming), :mod:`~mattingkit.train.log` (history, TensorBoard, progress, summary),
:mod:`~mattingkit.train.nonfinite` (skipping and counting non-finite steps), :mod:`~mattingkit.train.validation`,
:mod:`~mattingkit.train.trainer` (:class:`Trainer`: the step and the loop) and :mod:`~mattingkit.train.launch`
(:func:`train`, :func:`launch_notebook`). The recipe, resuming, DIM's three stages and multi-process training
are described in docs/training.md.

Example:
    >>> from mattingkit.config import load_config
    >>> cfg = load_config("demo", ["train.steps=10"])          # doctest: +SKIP
    >>> summary = train(cfg, fresh=True)                       # doctest: +SKIP
    >>> summary["best"]["value"]                               # doctest: +SKIP
"""
from ..run import default_run_dir, read_history
from .distributed import Dist
from .launch import launch_notebook, train, train_and_report
from .nonfinite import NonFiniteLossError
from .schedule import BEST_MODES, SCHEDULES, LRSchedule
from .session import SUMMARY_FILE
from .setup import VAL_METRICS, build_data, resolve_init_from
from .stream import BatchStream, EpochIndexed, epoch_permutation, to_device
from .trainer import Trainer

__all__ = [
    "BEST_MODES", "BatchStream", "Dist", "EpochIndexed", "LRSchedule", "NonFiniteLossError", "SCHEDULES",
    "SUMMARY_FILE", "Trainer", "VAL_METRICS", "build_data", "default_run_dir", "epoch_permutation",
    "launch_notebook", "read_history", "resolve_init_from", "to_device", "train", "train_and_report",
]
