"""Training data pipeline throughput: mattingkit's TrainDataset vs the decode bound vs an old-style pipeline.

Inputs are generated into a temp folder first: ``--n-fg`` foreground/alpha PNG pairs at 1024x1024
(textured colours, a soft-edged blob with thin semi-transparent strands) and ``--n-bg`` JPEG
backgrounds at 1920x1080. Three datasets then read exactly the same files per item (the
``TrainDataset.files_for`` plan: foreground + alpha, a second foreground + alpha for two-foreground
items, the background):

- ``ours``: ``mattingkit.data.datasets.TrainDataset`` with the default AugmentConfig (affine, HSV
  jitter, two foregrounds at p=0.5), the default trimap recipe, crops of 512 output at 512, in its
  training form ``compact=True`` (what ``build_datasets`` gives the Trainer). It decodes with
  ``TrainDataset.read_file`` (``mattingkit.io.read_image_uint8`` / ``read_alpha_uint8``: 8-bit as
  decoded), warps each foreground together with its alpha straight from the decoded source into the
  crop (one 4-channel warp), converts only the crop to float32, does the colour work (second
  foreground merge, HSV jitter, composite) and the trimap on the crop in float32, and sends the item
  as 8/16-bit tensors (image / fg / bg uint8 ``rint(x * 255)``, alpha uint16 ``rint(a * 65535)``,
  trimap uint8 0/128/255; 3.1 MB per item). The main process converts every batch to the float32
  batch convention with ``batch_to_float`` (as the Trainer's ``to_device`` does): that cost is
  inside ours' timed loop and inside its CPU-per-item figure.
- ``decode``: the decode bound -- a dataset that only reads those files with the same readers
  (``TrainDataset.read_file``) and returns a scalar (so it pays no transport).
- ``old_style``: the classic order of the public AlphaGAN / Deep Image Matting reimplementations,
  written below (:class:`OldStyleDataset`, clearly labelled): the images converted to float32 at
  full resolution on reading (``mattingkit.io.read_image`` / ``read_alpha``, i.e. the same decode
  plus the ``astype(float32) / 255`` those pipelines do), second foreground resized and merged,
  random affine, HSV jitter, background resize-to-cover + crop and composite, all on the full
  1024x1024 image in float32, then an iterated erode/dilate trimap on the full alpha, then the
  crop around an unknown pixel and resize. Same outputs as ours (image, alpha, trimap, fg, bg,
  unknown at 512x512), sent as those pipelines send them: 12 float32 channels (12.6 MB per item).

Each is consumed by a DataLoader with 2 workers (batch 4, the same ``worker_init_fn``); a run
skips the first two batches (worker start-up) and times the rest. Runs are interleaved (in a
rotating order) for ``--repeats`` rounds; medians are reported. Two more references return
ready-made tensors without reading or computing anything -- the DataLoader's own cost of moving
the items through shared memory to the main process, which the decode bound does not pay:
``transport`` (12 float32 channels at 512x512 per item, what old-style sends) and
``transport_compact`` (what ours sends, converted with ``batch_to_float`` in the main process as
ours is). A second phase times the CPU per item of decode / ours (including ``batch_to_float`` of
the item) / old-style in the main process (no DataLoader, interleaved, medians): a cross-check that
is much less sensitive to other programs sharing the machine than the wall-clock throughput.

The device split (``data.augment_on: device``, :mod:`mattingkit.data.device_augment`) adds:

- ``worker_side``: the same TrainDataset with ``augment_on="device"`` and the RAM cache filled before
  the workers fork (``data.cache: ram``): what the CPU must still do per sample -- the geometry
  decision (unknown-pixel search on the source alpha), cutting the uint8 source patches (area
  pre-shrink where needed), the parameter draws and the transport. The device-side ops are excluded
  (the batches are not rendered in the timed loop). Reported as ``worker side vs today: R x``
  (samples/s of worker_side / samples/s of ours, i.e. today's whole loader; goal >= 2).
- the device-side cost: ``device_augment.augment_batch`` on collated batches of the same items
  (medians over batches) on this CPU, and on a GPU when one is visible.

Run:  .venv/bin/python benchmarks/data_pipeline.py [--quick]
Writes benchmarks/results/data_pipeline.json. The last two lines of the output are
``vs decode bound: R x`` and ``vs old-style: R x`` (R = samples/s of ours / samples/s of theirs);
``worker side vs today: R x`` and ``device side: N ms per batch ...`` come just before them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mattingkit.config import AugmentConfig, DataConfig, TrimapConfig  # noqa: E402
from mattingkit.data import device_augment  # noqa: E402
from mattingkit.data.datasets import TrainDataset, batch_to_float, sample_rng, worker_init_fn  # noqa: E402
from mattingkit.io import read_alpha, read_image, write_png  # noqa: E402

FG_SIZE = 1024
BG_SIZE = (1080, 1920)  # H, W
CROP = 512


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Photo-like colours: a smooth random colour field plus mid-frequency detail and slight grain."""
    base = cv2.resize(rng.random((max(2, h // 128), max(2, w // 128), 3)).astype(np.float32), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    detail = cv2.resize(rng.random((h // 8, w // 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    grain = rng.normal(0, 0.02, (h, w, 3)).astype(np.float32)
    return np.clip(0.65 * base + 0.3 * detail + grain, 0, 1)


def _alpha(rng: np.random.Generator, n: int) -> np.ndarray:
    """A soft-edged blob with semi-transparent strands (hair-like), float32 in [0, 1]."""
    a = np.zeros((n, n), np.float32)
    c = n // 2 + rng.integers(-n // 8, n // 8, 2)
    axes = (int(n * rng.uniform(0.25, 0.38)), int(n * rng.uniform(0.25, 0.38)))
    cv2.ellipse(a, (int(c[0]), int(c[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
    a = cv2.GaussianBlur(a, (0, 0), float(rng.uniform(1.5, 4)))
    strands = np.zeros_like(a)
    for _ in range(150):
        t = rng.uniform(0, 2 * math.pi)
        r0 = min(axes) * 0.9
        x0, y0 = c[0] + r0 * math.cos(t), c[1] + r0 * math.sin(t)
        length = rng.uniform(40, 160)
        x1, y1 = x0 + length * math.cos(t + rng.normal(0, 0.3)), y0 + length * math.sin(t + rng.normal(0, 0.3))
        cv2.line(strands, (int(x0), int(y0)), (int(x1), int(y1)), float(rng.uniform(0.3, 0.9)), 1, cv2.LINE_AA)
    return np.clip(np.maximum(a, strands), 0, 1)


def make_inputs(root: Path, n_fg: int, n_bg: int, seed: int = 0) -> tuple[list[dict], list[Path]]:
    from PIL import Image  # JPEG writing (mattingkit.io writes PNG only)

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_fg):
        fg_p, a_p = root / "fg" / f"fg_{i:02d}.png", root / "alpha" / f"fg_{i:02d}.png"
        write_png(fg_p, _texture(rng, FG_SIZE, FG_SIZE))
        write_png(a_p, _alpha(rng, FG_SIZE))
        rows.append({"id": f"fg_{i:02d}", "fg": str(fg_p), "alpha": str(a_p), "image": ""})
    bgs = []
    (root / "bg").mkdir(parents=True, exist_ok=True)
    for i in range(n_bg):
        p = root / "bg" / f"bg_{i:02d}.jpg"
        Image.fromarray(np.rint(_texture(rng, *BG_SIZE) * 255).astype(np.uint8)).save(p, quality=90)
        bgs.append(p)
    return rows, bgs


# --------------------------------------------------------------------------------------------
# (i) the decode bound
# --------------------------------------------------------------------------------------------
class DecodeOnlyDataset(torch.utils.data.Dataset):
    """Reads exactly the files ``ours`` reads for each item, with the same readers; returns a scalar."""

    def __init__(self, ours: TrainDataset):
        self.ours = ours

    def __len__(self) -> int:
        return len(self.ours)

    def set_epoch(self, epoch: int) -> None:
        self.ours.set_epoch(epoch)

    def __getitem__(self, index: int) -> torch.Tensor:
        total = 0
        for reader, path in self.ours.files_for(index):
            total += self.ours.read_file(reader, path).shape[0]
        return torch.tensor(total)


# --------------------------------------------------------------------------------------------
# (ii) OLD-STYLE PIPELINE (for comparison only; not used by mattingkit)
# The usual order of the public AlphaGAN / Deep Image Matting PyTorch reimplementations: every
# augmentation on the full-resolution image, the trimap by iterated erosion/dilation of the full
# alpha, and only then the crop around an unknown pixel. Same files, same decoder (plus the
# full-resolution float conversion), same augmentation ranges, same outputs as ours; float32
# throughout (many originals use float64) and OpenCV primitives (several use slower PIL/torchvision).
# --------------------------------------------------------------------------------------------
class OldStyleDataset(torch.utils.data.Dataset):
    def __init__(self, ours: TrainDataset):
        self.ours = ours
        self.aug: AugmentConfig = ours.augment_cfg
        self.crop_sizes = list(ours.data_cfg.crop_sizes)
        self.out = int(ours.data_cfg.image_size)

    def __len__(self) -> int:
        return len(self.ours)

    def set_epoch(self, epoch: int) -> None:
        self.ours.set_epoch(epoch)

    @staticmethod
    def _read_pair(fg_path: str, alpha_path: str) -> tuple[np.ndarray, np.ndarray]:
        return read_image(fg_path), read_alpha(alpha_path)

    def __getitem__(self, index: int) -> dict:
        rng = sample_rng(self.ours.seed + 1, self.ours.epoch, index)
        files = [path for _, path in self.ours.files_for(index)]
        fg, alpha = self._read_pair(files[0], files[1])
        h, w = alpha.shape
        # second foreground: resized to the first one's size and merged at full resolution
        if len(files) == 5:
            fg2, a2 = self._read_pair(files[2], files[3])
            fg2 = cv2.resize(fg2, (w, h), interpolation=cv2.INTER_LINEAR)
            a2 = cv2.resize(a2, (w, h), interpolation=cv2.INTER_LINEAR)
            new_a = 1 - (1 - alpha) * (1 - a2)
            num = alpha[..., None] * fg + ((1 - alpha) * a2)[..., None] * fg2
            fg = np.where(new_a[..., None] > 0, num / np.maximum(new_a, 1e-8)[..., None], fg).astype(np.float32)
            alpha = new_a.astype(np.float32)
        # random affine (rotation, scale, shear, flip) of the full image
        a = self.aug
        angle = rng.uniform(-a.rotation, a.rotation)
        scale = math.exp(rng.uniform(math.log(a.scale[0]), math.log(a.scale[1])))
        shear = math.tan(math.radians(rng.uniform(-a.shear, a.shear)))
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
        m[0, 1] += shear * m[0, 0]
        fg = cv2.warpAffine(fg, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        alpha = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        if rng.random() < 0.5:
            fg, alpha = fg[:, ::-1], alpha[:, ::-1]
        # HSV jitter of the full foreground
        hsv = cv2.cvtColor(np.ascontiguousarray(fg), cv2.COLOR_RGB2HSV)
        hsv[..., 0] = np.mod(hsv[..., 0] + rng.uniform(-a.hue, a.hue), 360)
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*a.saturation), 0, 1)
        hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(*a.value), 0, 1)
        fg = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)
        # background resized to cover the foreground, random crop, full-size composite
        bg = read_image(files[-1])
        s = max(h / bg.shape[0], w / bg.shape[1])
        bh, bw = max(h, math.ceil(bg.shape[0] * s)), max(w, math.ceil(bg.shape[1] * s))
        bg = cv2.resize(bg, (bw, bh), interpolation=cv2.INTER_CUBIC)
        by, bx = rng.integers(0, bh - h + 1), rng.integers(0, bw - w + 1)
        bg = np.clip(bg[by:by + h, bx:bx + w], 0, 1)
        alpha = np.clip(np.ascontiguousarray(alpha), 0, 1)
        image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
        # trimap: iterated erosion / dilation of the full alpha
        a8 = np.rint(alpha * 255).astype(np.uint8)
        k = int(rng.integers(2, 5))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        fg_mask = cv2.erode((a8 == 255).astype(np.uint8), kernel, iterations=int(rng.integers(5, 15)))
        unknown = cv2.dilate((a8 > 0).astype(np.uint8), kernel, iterations=int(rng.integers(5, 15)))
        trimap = np.where(fg_mask > 0, 1.0, np.where(unknown > 0, 0.5, 0.0)).astype(np.float32)
        # crop around a random unknown pixel, then resize
        c = int(self.crop_sizes[rng.integers(len(self.crop_sizes))])
        ys, xs = np.where(trimap == 0.5)
        if len(ys):
            j = rng.integers(len(ys))
            y0 = int(min(max(ys[j] - c // 2, 0), max(h - c, 0)))
            x0 = int(min(max(xs[j] - c // 2, 0), max(w - c, 0)))
        else:
            y0, x0 = (h - c) // 2, (w - c) // 2

        def crop(x: np.ndarray, interp: int) -> np.ndarray:
            x = x[y0:y0 + c, x0:x0 + c]
            return x if c == self.out else cv2.resize(x, (self.out, self.out), interpolation=interp)

        out = {"image": crop(image, cv2.INTER_AREA), "alpha": crop(alpha, cv2.INTER_AREA),
               "trimap": crop(trimap, cv2.INTER_NEAREST), "fg": crop(fg, cv2.INTER_AREA),
               "bg": crop(bg, cv2.INTER_AREA)}
        item = {k: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1) if v.ndim == 3 else v[None],
                                                         dtype=np.float32)) for k, v in out.items()}
        item["unknown"] = (item["trimap"] == 0.5).float()
        item["id"] = self.ours.rows[index % len(self.ours.rows)]["id"]
        return item


# --------------------------------------------------------------------------------------------
# (reference) the transport cost: the same output tensors, no work
# --------------------------------------------------------------------------------------------
class TransportOnlyDataset(torch.utils.data.Dataset):
    """Items of the same shapes and dtypes as a pipeline's, made without reading or computing
    anything: what a DataLoader costs just to collate them into shared memory and hand them to the
    main process. ``compact=False``: 12 float32 channels at 512x512 per item (12.6 MB; what
    old-style sends); ``compact=True``: what ours sends (``TrainDataset(compact=True)``: 9 uint8 +
    1 uint16 + 1 uint8 channels, 3.1 MB), converted by ``batch_to_float`` in the main process as
    ours is."""

    SHAPES = {"image": 3, "alpha": 1, "trimap": 1, "fg": 3, "bg": 3, "unknown": 1}
    COMPACT = {"image": (3, torch.uint8), "alpha": (1, torch.uint16), "trimap": (1, torch.uint8),
               "fg": (3, torch.uint8), "bg": (3, torch.uint8)}

    def __init__(self, ours: TrainDataset, compact: bool = False):
        self.ours = ours
        self.out = int(ours.data_cfg.image_size)
        self.compact = compact

    def __len__(self) -> int:
        return len(self.ours)

    def set_epoch(self, epoch: int) -> None:
        self.ours.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        if self.compact:
            item = {k: torch.full((c, self.out, self.out), 128, dtype=d) for k, (c, d) in self.COMPACT.items()}
        else:
            item = {k: torch.full((c, self.out, self.out), 0.5) for k, c in self.SHAPES.items()}
        item["id"] = str(index)
        return item


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
def run_once(ds, epoch: int, n_batches: int, batch_size: int, workers: int, convert=None) -> float:
    """Samples/s of one DataLoader pass, after skipping one batch per worker (start-up). ``convert``
    (ours: ``batch_to_float``, as the Trainer's ``to_device`` does) runs on every timed batch."""
    ds.set_epoch(epoch)
    skip = max(1, workers)
    sampler = list(range((n_batches + skip) * batch_size))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         worker_init_fn=worker_init_fn, prefetch_factor=2 if workers else None)
    it = iter(loader)
    for _ in range(skip):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for batch in it:
        if convert is not None:
            batch = convert(batch)
        n += len(batch["id"]) if isinstance(batch, dict) else len(batch)
    dt = time.perf_counter() - t0
    del it, loader
    return n / dt


def cpu_ms_per_item(ds, epoch: int, n_items: int, convert=None) -> float:
    """CPU time (this process, ms) per item, computed in the main process: no DataLoader, and much
    less sensitive than wall time to other programs sharing the machine. ``convert`` as in
    :func:`run_once` (ours: the item's ``batch_to_float`` is counted too)."""
    ds.set_epoch(epoch)
    ds[0]
    t0 = time.process_time()
    for i in range(1, n_items + 1):
        item = ds[i]
        if convert is not None:
            convert(item)
    return 1000 * (time.process_time() - t0) / n_items


def device_ms_per_batch(ds: TrainDataset, epoch: int, n_batches: int, batch_size: int,
                        device: torch.device) -> list[float]:
    """Wall ms of ``device_augment.augment_batch`` per batch (the batch already on ``device``; CUDA
    synchronised), one value per batch after a warm-up batch."""
    ds.set_epoch(epoch)
    out = []
    for b in range(n_batches + 1):
        items = [ds.device_item(b * batch_size + i) for i in range(batch_size)]
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                 for k, v in device_augment.collate_items(items).items()}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        device_augment.augment_batch(batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if b:
            out.append(1000 * (time.perf_counter() - t0))
    return out


def device_check(args) -> dict:
    """``--device-only``: the device-side ms per batch (batch sizes ``args.batch_size`` and 16) on
    the CPU and on a GPU when one is visible, and the GPU's output against the CPU's for the same
    batches (max |difference| per key, in 1/255)."""
    with tempfile.TemporaryDirectory(prefix="mk_data_bench_") as tmp:
        rows, bgs = make_inputs(Path(tmp), min(args.n_fg, 8), min(args.n_bg, 8))
        ds = TrainDataset(rows, bgs, DataConfig(crop_sizes=[CROP], image_size=CROP, foreground="given"),
                          TrimapConfig(), AugmentConfig(), seed=0, epoch_len=100_000, compact=True,
                          augment_on="device")
        report = ds.fill_cache()
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        result: dict = {"ram_cache": report, "ms_per_batch": {}, "cuda_vs_cpu_max_diff_255": {}}
        for bs in sorted({args.batch_size, 16}):
            for dev in devices:
                n = 3 if dev.type == "cpu" else args.batches
                ms = device_ms_per_batch(ds, 3000 + bs, n, bs, dev)
                result["ms_per_batch"][f"{dev.type}_batch{bs}"] = statistics.median(ms)
                print(f"device side on {dev.type}, batch {bs}: {statistics.median(ms):.2f} ms per batch "
                      f"(median of {len(ms)}; {1000 * bs / statistics.median(ms):.0f} samples/s)", flush=True)
        if torch.cuda.is_available():
            batch = device_augment.collate_items([ds.device_item(i) for i in range(8)])
            cpu = device_augment.augment_batch(batch, "cpu")
            gpu = device_augment.augment_batch(batch, "cuda")
            for k in ("image", "alpha", "fg", "bg", "trimap"):
                d = float((gpu[k].cpu() - cpu[k]).abs().max()) * 255
                result["cuda_vs_cpu_max_diff_255"][k] = d
            tri = float((gpu["trimap"].cpu() != cpu["trimap"]).float().mean())
            result["cuda_vs_cpu_trimap_mismatch_share"] = tri
            print(f"cuda vs cpu, max |diff| x 255: {result['cuda_vs_cpu_max_diff_255']}; trimap pixels that "
                  f"differ: {tri:.2e}", flush=True)
    return result


def _rotations(names: list[str], r: int) -> list[str]:
    k = r % len(names)
    return names[k:] + names[:k]


def main(argv=None) -> dict:  # noqa: PLR0915 - a benchmark's script: measure side by side, print, write JSON
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer items and repeats (about a minute)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5; --quick 3)")
    p.add_argument("--batches", type=int, default=None, help="timed batches per run (default 16; --quick 8)")
    p.add_argument("--items", type=int, default=None, help="items per CPU-time run (default 12; --quick 6)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n-fg", type=int, default=16)
    p.add_argument("--n-bg", type=int, default=16)
    p.add_argument("--device-only", action="store_true",
                   help="only the device-side timing (CPU, and GPU when visible) and the GPU-vs-CPU check")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "data_pipeline.json"))
    args = p.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    n_batches = args.batches or (8 if args.quick else 16)
    n_items = args.items or (6 if args.quick else 12)
    if args.device_only:
        res = device_check(args)
        out = Path(args.out).with_name("data_pipeline_device.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"results -> {out}")
        return res
    worker_init_fn(0)   # the CPU-time phase runs here: the same settings as in the DataLoader workers
    load_start = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="mk_data_bench_") as tmp:
        t = time.perf_counter()
        rows, bgs = make_inputs(Path(tmp), args.n_fg, args.n_bg)
        print(f"inputs: {len(rows)} fg/alpha PNG pairs {FG_SIZE}x{FG_SIZE}, {len(bgs)} JPEG backgrounds "
              f"{BG_SIZE[1]}x{BG_SIZE[0]} ({time.perf_counter() - t:.1f} s to generate)", flush=True)
        data_cfg = DataConfig(crop_sizes=[CROP], image_size=CROP, foreground="given")
        # compact=True: the training form (what build_datasets makes), converted by batch_to_float below
        ours = TrainDataset(rows, bgs, data_cfg, TrimapConfig(), AugmentConfig(), seed=0, epoch_len=100_000,
                            compact=True)
        # the device split: workers cut uint8 patches from the RAM cache (filled here, before any fork)
        worker_side = TrainDataset(rows, bgs, data_cfg, TrimapConfig(), AugmentConfig(), seed=0, epoch_len=100_000,
                                   compact=True, augment_on="device")
        cache_report = worker_side.fill_cache()
        print(f"RAM cache: {cache_report['foregrounds']} fg+alpha ({cache_report['foreground_bytes'] / 2**20:.0f} MiB), "
              f"{cache_report['backgrounds']} backgrounds ({cache_report['background_bytes'] / 2**20:.0f} MiB), "
              f"{cache_report['seconds']:.1f} s to fill", flush=True)
        datasets = {"decode": DecodeOnlyDataset(ours), "ours": ours, "old_style": OldStyleDataset(ours),
                    "transport": TransportOnlyDataset(ours), "transport_compact": TransportOnlyDataset(ours, True),
                    "worker_side": worker_side}
        convert = {"ours": batch_to_float, "transport_compact": batch_to_float}
        names = list(datasets)
        rates: dict[str, list[float]] = {k: [] for k in names}
        cpu_names = names[:3] + ["worker_side"]
        cpu: dict[str, list[float]] = {k: [] for k in cpu_names}
        print(f"DataLoader: {args.workers} workers, batch {args.batch_size}, {n_batches} timed batches per run")
        for r in range(repeats):
            for name in _rotations(names, r):
                rate = run_once(datasets[name], r, n_batches, args.batch_size, args.workers, convert.get(name))
                rates[name].append(rate)
                print(f"  round {r + 1}/{repeats}  {name:17s} {rate:6.2f} samples/s", flush=True)
        print(f"CPU time per item in one process (no DataLoader), {n_items} items per run")
        for r in range(repeats):
            for name in _rotations(cpu_names, r):
                ms = cpu_ms_per_item(datasets[name], 1000 + r, n_items, convert.get(name))
                cpu[name].append(ms)
                print(f"  round {r + 1}/{repeats}  {name:17s} {ms:6.1f} ms", flush=True)
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        device_ms: dict[str, list[float]] = {}
        for dev in devices:
            device_ms[dev.type] = device_ms_per_batch(worker_side, 2000, n_batches, args.batch_size, dev)
            print(f"device side on {dev.type}: {statistics.median(device_ms[dev.type]):.1f} ms per batch of "
                  f"{args.batch_size} (median of {len(device_ms[dev.type])})", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    vs_decode = med["ours"] / med["decode"]
    vs_old = med["ours"] / med["old_style"]
    worker_vs_today = med["worker_side"] / med["ours"]
    device_med = {k: statistics.median(v) for k, v in device_ms.items()}
    # a worker that decoded and shipped what ours ships (but computed nothing) would spend both times per item
    decode_transport = 1.0 / (1.0 / med["decode"] + 1.0 / med["transport_compact"])
    result = {
        "benchmark": "data_pipeline",
        "setup": {"fg": f"{args.n_fg} PNG {FG_SIZE}x{FG_SIZE} + alpha PNG", "bg": f"{args.n_bg} JPEG "
                  f"{BG_SIZE[1]}x{BG_SIZE[0]}", "crop": CROP, "image_size": CROP, "batch_size": args.batch_size,
                  "workers": args.workers, "timed_batches": n_batches, "repeats": repeats,
                  "cpu_items_per_run": n_items,
                  "augment": "AugmentConfig() defaults (affine, hsv jitter, two_fg_prob=0.5)",
                  "ours": "TrainDataset(compact=True): uint8 image/fg/bg, uint16 alpha, uint8 trimap; "
                          "batch_to_float on every batch in the main process (timed)",
                  "old_style": "float32 full-resolution pipeline, 12 float32 channels per item",
                  "transport": "12 float32 channels per item, no work (what old_style sends)",
                  "transport_compact": "ours' compact item, no work, batch_to_float per batch (what ours sends)",
                  "trimap": "TrimapConfig() defaults",
                  "worker_side": "TrainDataset(augment_on='device') + fill_cache() (data.cache: ram): uint8 source "
                                 "patches + drawn parameters, device-side ops not run (excluded)",
                  "device_side": "device_augment.augment_batch per batch, batch already on the device"},
        "ram_cache": cache_report,
        "samples_per_s": rates,
        "median_samples_per_s": med,
        "cpu_ms_per_item": cpu,
        "median_cpu_ms_per_item": cpu_med,
        "decode_plus_transport_samples_per_s": decode_transport,
        "vs_decode_plus_transport": med["ours"] / decode_transport,
        "vs_decode_bound": vs_decode,
        "vs_old_style": vs_old,
        "worker_side_vs_today": worker_vs_today,
        "device_ms_per_batch": device_ms,
        "median_device_ms_per_batch": device_med,
        "cpu_vs_decode_bound": cpu_med["decode"] / cpu_med["ours"],
        "cpu_vs_old_style": cpu_med["old_style"] / cpu_med["ours"],
        "targets": {"vs_decode_bound": 0.7, "vs_old_style": 2.0, "worker_side_vs_today": 2.0},
        "machine": {"cpus": os.cpu_count(), "load_avg_1min_at_start": load_start,
                    "load_avg_1min_at_end": os.getloadavg()[0],
                    "python": platform.python_version(), "torch": torch.__version__,
                    "opencv": cv2.__version__, "numpy": np.__version__},
        "command": "benchmarks/data_pipeline.py" + (" --quick" if args.quick else ""),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print()
    for k in names:
        extra = f", {cpu_med[k]:6.1f} ms CPU per item" if k in cpu_med else ""
        print(f"{k:17s} median {med[k]:6.2f} samples/s{extra}")
    print(f"decode + ours' transport (1 / (1/decode + 1/transport_compact)): {decode_transport:.2f} samples/s; "
          f"ours reaches {med['ours'] / decode_transport:.2f} x of it")
    print(f"CPU-time ratios (one process, no DataLoader): vs decode bound {result['cpu_vs_decode_bound']:.2f} x, "
          f"vs old-style {result['cpu_vs_old_style']:.2f} x")
    print(f"results -> {out}")
    print(f"load average (1 min): {load_start:.2f} at start, {result['machine']['load_avg_1min_at_end']:.2f} at end")
    for dev, ms in device_med.items():
        print(f"device side: {ms:.1f} ms per batch of {args.batch_size} on {dev} "
              f"({1000 * args.batch_size / ms:.1f} samples/s)")
    print(f"worker side vs today: {worker_vs_today:.2f} x")
    print(f"vs decode bound: {vs_decode:.2f} x")
    print(f"vs old-style: {vs_old:.2f} x")
    return result


if __name__ == "__main__":
    main()
