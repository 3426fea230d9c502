"""Entry points: :func:`train` (one process, or one of several under ``accelerate launch``),
:func:`launch_notebook` (several processes from a notebook) and :func:`train_and_report` (the
``mattingkit train`` command)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import Config, from_dict
from ..run import default_run_dir
from .session import SUMMARY_FILE
from .setup import fill_foreground_cache
from .trainer import Trainer


def train(cfg: Config, run_dir: str | os.PathLike | None = None, fresh: bool = False, **kwargs) -> dict:
    """Train (or continue training) the run described by ``cfg``; returns the summary dict
    (also written to ``run_dir/train_summary.json``). Keyword arguments go to :class:`Trainer`.

    Example (given demo data): ``train(load_config("demo"), fresh=True)["best"]``
    """
    return Trainer(cfg, run_dir=run_dir, fresh=fresh, **kwargs).fit()


def train_and_report(cfg: Config, run_dir: str | os.PathLike | None = None, fresh: bool = False,
                     force: bool = False) -> dict:
    """:func:`train`, then one line about the result from the main process (``mattingkit train``;
    ``force``: take the run folder's lock over, ``--force``)."""
    summary = train(cfg, run_dir=run_dir, fresh=fresh, force=force)
    if int(os.environ.get("RANK", "0")) == 0:
        best = summary["best"]
        print(f"run {summary['run_dir']}: step {summary['step']}/{summary['steps']} ({summary['stopped']}); "
              f"best {best['metric']}={best['value']} at step {best['step']}")
    return summary


def prepare_foregrounds(cfg: Config, run_dir: Path) -> None:
    """Build the manifest and fill the foreground cache (``data.foreground=estimate``) in this process,
    before ``notebook_launcher`` / ``accelerate launch`` starts the training processes: estimating
    AIM-500-sized foregrounds on rank 0 while the other ranks wait at a barrier could outlast the
    process group's timeout (``train.dist_timeout_s``, which also bounds it under a shell ``accelerate
    launch``, where rank 0 fills the cache in :func:`~mattingkit.train.setup.build_data`). Nothing here asks
    for a device (:func:`~mattingkit.train.setup.fill_foreground_cache`; the datasets are built without
    ``compact`` device rendering): the notebook process must not touch CUDA before the ranks fork. With
    ``data.cache: ram`` the datasets built here also fill the RAM cache once, which the forked ranks then
    share (:meth:`~mattingkit.data.datasets.TrainDataset.fill_cache`). A no-op for other settings."""
    ram = getattr(cfg.data, "cache", "none") == "ram"
    if cfg.data.foreground != "estimate" and not ram:
        return
    from ..run import ensure_manifest

    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = ensure_manifest(cfg, run_dir)
    fill_foreground_cache(cfg, manifest)
    if ram:  # compact=False: no augment_on decision, so no device is asked
        from ..data.datasets import build_datasets

        build_datasets(cfg, manifest, compact=False)


def _notebook_worker(cfg_dict: dict, run_dir: str | None, fresh: bool, trainer_kwargs: dict) -> None:
    train(from_dict(cfg_dict), run_dir=run_dir, fresh=fresh, **trainer_kwargs)


def launch_notebook(cfg: Config, num_processes: int = 2, run_dir: str | os.PathLike | None = None,
                    fresh: bool = False, use_port: str | int = 29500, **trainer_kwargs) -> dict:
    """Multi-GPU training from a notebook (Kaggle's 2xT4) through ``accelerate.notebook_launcher``.

    Call it before anything touches CUDA in the notebook (nothing the kit runs before it does: notebook 03's
    ``run.prepare_run``, ``pipeline.drive_space``, this function): Accelerate forks the kernel, one process per
    device (on a CPU-only machine: CPU processes talking gloo). ``trainer_kwargs`` go to
    :class:`Trainer` in every process (forked, so they need not be picklable). Returns the summary the
    main process wrote to ``run_dir/train_summary.json``.

    Example (Kaggle, 2 GPUs): ``launch_notebook(load_config("ecom"), num_processes=2)``
    """
    from accelerate import notebook_launcher

    rd = str(run_dir) if run_dir is not None else str(default_run_dir(cfg))
    if trainer_kwargs.get("train_dataset") is None:  # (a given dataset is the caller's own)
        prepare_foregrounds(cfg, Path(rd))  # before the processes start: no rank waits on it at a barrier
    notebook_launcher(_notebook_worker, args=(cfg.to_dict(), rd, fresh, trainer_kwargs),
                      num_processes=num_processes, use_port=str(use_port))
    return json.loads((Path(rd) / SUMMARY_FILE).read_text(encoding="utf-8"))


__all__ = ["launch_notebook", "prepare_foregrounds", "train", "train_and_report"]
