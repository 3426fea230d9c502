"""``mattingkit doctor``: what this machine will give a run, before a long one starts.

:func:`doctor` returns a JSON-ready dict; :func:`format_report` turns it into a few readable lines.
Everything comes from the same functions the trainer and inference use (:mod:`mattingkit.device`,
:mod:`mattingkit.env`, :mod:`mattingkit.checkpoint`), so what doctor says is what a run gets:

- platform (colab / kaggle / local); device, GPU name, compute capability, memory, GPU count;
- python / torch / torchvision / CUDA / cuDNN versions; whether the GPU is in the torch build's arch list;
- the AMP dtype ``auto`` picks and why, GradScaler, channels_last; CPUs and the ``num_workers`` ``auto`` gives;
- data and runs roots: where, free space, on Google Drive or not (Drive mounted?);
- Kaggle credentials by *source* only (never a value);
- whether the ImageNet weights are cached or reachable (a 3 s probe; ``MATTINGKIT_OFFLINE`` answers at once);
- ``problems``: what would stop or cripple a run (no GPU for a GPU recipe, a GPU the build cannot run,
  too little room for the checkpoints); ``ok`` is True when there are none.

Example:
    >>> from mattingkit.doctor import doctor, format_report
    >>> rep = doctor(probe=False)
    >>> sorted(rep)[:4]
    ['amp', 'channels_last', 'checkpoints', 'config']
    >>> "torch" in format_report(rep)
    True
"""
from __future__ import annotations

import json
import os
import platform as _platform
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from . import __version__, env
from . import device as dv
from .errors import MattingKitError

PROBE_TIMEOUT = 3.0  # seconds for the ImageNet weights reachability probe


def _versions() -> dict[str, Any]:
    out: dict[str, Any] = {"mattingkit": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
                           "cuda": torch.version.cuda}
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except Exception as e:  # noqa: BLE001 - a broken torchvision is worth reporting, not raising
        out["torchvision"] = f"not importable ({type(e).__name__})"
    try:
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001
        out["cudnn"] = None
    import numpy

    out["numpy"] = numpy.__version__
    return out


def _root(path: Path) -> dict[str, Any]:
    """Where a root is, whether it exists, and the free space of the nearest existing folder."""
    info: dict[str, Any] = {"path": str(path), "exists": path.exists(), "on_drive": env.on_drive(path), "free_gb": None}
    for p in [path, *path.parents]:
        try:
            info["free_gb"] = round(shutil.disk_usage(p).free / 1e9, 1)
            break
        except OSError:
            continue
    return info


def _credentials(environ: Mapping[str, str] | None, home: str | os.PathLike | None) -> dict[str, Any]:
    from .kaggle import find_credentials

    info = find_credentials(environ, home)
    return {"found": info.found, "source": info.source, "kind": info.kind, "note": info.note or None}


def _weights(cfg: Any, environ: Mapping[str, str] | None, probe: bool, timeout: float) -> dict[str, Any]:
    """Whether the backbone's ImageNet weights are cached, reachable, or neither (no download here)."""
    from .models import common

    arch = cfg.model.backbone
    out: dict[str, Any] = {"backbone": arch, "needed": bool(cfg.model.pretrained) and cfg.model.name != "u2netp",
                           "weights_path": cfg.model.weights_path, "url": None, "cached": False, "reachable": None,
                           "detail": ""}
    if cfg.model.weights_path:
        ok = Path(cfg.model.weights_path).expanduser().is_file()
        out.update(cached=ok, detail=f"model.weights_path {'exists' if ok else 'does not exist'}")
        return out
    try:
        import torchvision

        url = torchvision.models.get_model_weights(arch).DEFAULT.url
    except Exception as e:  # noqa: BLE001
        out["detail"] = f"torchvision has no ImageNet weights for {arch!r} ({type(e).__name__})"
        return out
    out["url"] = url
    out["cached"] = common.weights_cache_file(url).is_file()
    e = os.environ if environ is None else environ
    if out["cached"]:
        out["detail"] = f"cached in {common.weights_cache_file(url).parent}"
    elif str(e.get("MATTINGKIT_OFFLINE", "")).strip() not in ("", "0", "false", "False"):
        out.update(reachable=False, detail="offline (MATTINGKIT_OFFLINE is set): the backbone would start from "
                                           "random initialisation")
    elif not probe:
        out["detail"] = "not checked"
    else:
        reason = common.probe_url(url, timeout)
        out["reachable"] = reason is None
        out["detail"] = "reachable" if reason is None else f"not reachable ({reason}): random initialisation"
    return out


def doctor(cfg: Any = None, *, environ: Mapping[str, str] | None = None, home: str | os.PathLike | None = None,
           probe: bool = True, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """Report what a run of ``cfg`` (default: :data:`~mattingkit.config.DEFAULT_CONFIG`) gets on this machine. Never raises
    for what it finds: problems are listed under ``problems``. ``probe=False`` skips the network probe.

    Example:
        >>> from mattingkit.config import load_config
        >>> rep = doctor(load_config("demo", ["run.device=cpu"]), probe=False)
        >>> rep["device"]["type"], rep["amp"]["train"], rep["channels_last"], rep["ok"]
        ('cpu', 'off', False, True)
    """
    from .checkpoint import drive_space_needed
    from .config import DEFAULT_CONFIG, load_config

    if cfg is None:
        cfg = load_config(DEFAULT_CONFIG)
    problems: list[str] = []
    notes: list[str] = []
    plat = env.detect_platform(environ)
    rep: dict[str, Any] = {"ok": True, "problems": problems, "notes": notes, "platform": plat,
                           "config": {"name": cfg.run.name, "device": cfg.run.device,
                                      "require_gpu": bool(getattr(cfg.run, "require_gpu", False)),
                                      "model": f"{cfg.model.name}/{cfg.model.backbone}"},
                           "versions": _versions(), "machine": _platform.platform()}
    try:
        device = dv.resolve_device(cfg.run.device)
    except MattingKitError as e:
        problems.append(str(e))
        device = dv.HOST
    facts = dv.device_facts(device)
    rep["device"] = facts
    rep["gpu_count"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        dv.check_device(device)
    except MattingKitError as e:
        problems.append(str(e))
    try:
        dv.require_gpu(device, rep["config"]["require_gpu"] and str(cfg.run.device) != "cpu", recipe=cfg.run.name)
    except MattingKitError as e:
        problems.append(str(e))

    train_dtype = dv.resolve_amp(cfg.train.amp, device)
    infer_dtype = dv.resolve_amp(cfg.infer.amp, device)
    name = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}
    rep["amp"] = {"train": name[train_dtype], "infer": name[infer_dtype],
                  "grad_scaler": dv.needs_grad_scaler(train_dtype), "reason": dv.amp_reason(cfg.train.amp, device)}
    rep["channels_last"] = dv.resolve_channels_last(cfg.train.channels_last, device, train_dtype)
    rep["cpu_count"] = dv.cpu_count()
    try:
        rep["num_workers"] = dv.resolve_num_workers(cfg.data.num_workers)
    except MattingKitError as e:
        problems.append(str(e))
        rep["num_workers"] = None
    rep["num_workers_setting"] = cfg.data.num_workers

    data = env.data_root_for(cfg, environ)     # the resolvers every run uses
    runs = env.runs_root_for(cfg, environ=environ)
    rep["roots"] = {"data": _root(data), "runs": _root(runs),
                    "drive_mounted": env.drive_mounted() if plat == "colab" else None}
    if plat == "colab" and not rep["roots"]["drive_mounted"]:
        notes.append("Google Drive is not mounted: runs go to the VM's disk and are lost when the runtime "
                     "disconnects (mount it in the first cell: from google.colab import drive; "
                     "drive.mount('/content/drive')).")
    try:
        need = drive_space_needed(cfg)
        rep["checkpoints"] = {"checkpoint_gb": round(need["checkpoint_bytes"] / 1e9, 2),
                              "needed_gb": round(need["peak_bytes"] / 1e9, 2), "message": need["message"]}
        free = rep["roots"]["runs"]["free_gb"]
        if free is not None and free < need["peak_bytes"] / 1e9:
            problems.append(f"the runs root {runs} has {free} GB free; checkpoints need about "
                            f"{need['peak_bytes'] / 1e9:.1f} GB ({need['message']})")
    except Exception as e:  # noqa: BLE001 - an unknown model name is the config's error to report
        rep["checkpoints"] = {"error": f"{type(e).__name__}: {e}"}

    rep["kaggle_credentials"] = _credentials(environ, home)
    rep["imagenet_weights"] = _weights(cfg, environ, probe, timeout)
    w = rep["imagenet_weights"]
    if w["needed"] and not w["cached"] and w["reachable"] is False:
        notes.append(f"ImageNet weights for {w['backbone']}: {w['detail']}")
    rep["ok"] = not problems
    return rep


def _line(label: str, value: Any) -> str:
    return f"  {label:<22} {value}"


def format_report(rep: Mapping[str, Any]) -> str:
    """The doctor dict as a few readable lines (what ``mattingkit doctor`` prints without ``--json``).

    Example:
        >>> print(format_report(doctor(probe=False)).splitlines()[0])  # doctest: +ELLIPSIS
        mattingkit doctor: ...
    """
    d, v, amp, roots = rep["device"], rep["versions"], rep["amp"], rep["roots"]
    head = "ok" if rep["ok"] else f"{len(rep['problems'])} problem(s)"
    lines = [f"mattingkit doctor: {head} (platform {rep['platform']}, config {rep['config']['name']})"]
    if d.get("type") == "cuda":
        gpu = (f"{d['name']} (compute capability {d['capability']}, {d['memory_gb']} GB"
               f"{', x' + str(d['count']) if d.get('count', 1) > 1 else ''})")
        lines.append(_line("device", f"{d['device']}: {gpu}"))
        lines.append(_line("in torch's arch list", "yes" if d["arch_supported"] else
                           f"NO (built for {' '.join(d['arch_list'])})"))
    else:
        lines.append(_line("device", f"{d['device']} (no GPU visible)" if d.get("type") == "cpu" else d["device"]))
    lines.append(_line("versions", f"torch {v['torch']}, torchvision {v['torchvision']}, CUDA {v['cuda']}, "
                                   f"cuDNN {v['cudnn']}, python {v['python']}"))
    lines.append(_line("AMP (auto)", f"train {amp['train']}, inference {amp['infer']}: {amp['reason']}"))
    lines.append(_line("channels_last", "on" if rep["channels_last"] else "off"))
    lines.append(_line("CPUs / num_workers", f"{rep['cpu_count']} / {rep['num_workers']} "
                                             f"(data.num_workers={rep['num_workers_setting']})"))
    for key in ("data", "runs"):
        r = roots[key]
        where = " on Google Drive" if r["on_drive"] else ""
        lines.append(_line(f"{key} root", f"{r['path']}{where} ({r['free_gb']} GB free"
                                          f"{'' if r['exists'] else ', not created yet'})"))
    if roots.get("drive_mounted") is not None:
        lines.append(_line("Google Drive", "mounted" if roots["drive_mounted"] else "not mounted"))
    ck = rep.get("checkpoints") or {}
    if "needed_gb" in ck:
        lines.append(_line("checkpoints", f"{ck['checkpoint_gb']} GB each, {ck['needed_gb']} GB needed"))
    kc = rep["kaggle_credentials"]
    lines.append(_line("Kaggle credentials", kc["source"] if kc["found"] else f"none{' (' + kc['note'] + ')' if kc['note'] else ''}"))
    w = rep["imagenet_weights"]
    state = "cached" if w["cached"] else w["detail"] or ("reachable" if w["reachable"] else "unknown")
    lines.append(_line("ImageNet weights", f"{w['backbone']}: {state}" + ("" if w["needed"] else " (not used)")))
    for p in rep["problems"]:
        lines.append(f"PROBLEM: {p}")
    for n in rep["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def to_json(rep: Mapping[str, Any]) -> str:
    """The doctor dict as JSON (what ``mattingkit doctor --json`` prints and ``mattingkit run`` saves)."""
    return json.dumps(rep, indent=1, sort_keys=True, default=str)


__all__ = ["PROBE_TIMEOUT", "doctor", "format_report", "to_json"]
