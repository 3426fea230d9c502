"""mattingkit.device under simulated GPUs: the defaults each Colab / Kaggle GPU gets, and the refusals."""
from __future__ import annotations

import pytest
import torch
from gpusim import CU121_ARCHS, RECENT_ARCHS, simulate

from mattingkit import device as dv
from mattingkit.config import load_config
from mattingkit.errors import DeviceError, MattingKitError, UsageError


def _plan(gpu, monkeypatch, config="default", overrides=(), archs=None):
    simulate(monkeypatch, gpu, archs)
    return dv.plan(load_config(config, ["data.num_workers=0", *overrides]))


def test_t4_fp16_grad_scaler_channels_last(monkeypatch):
    p = _plan("T4", monkeypatch)
    assert p.device.type == "cuda"
    assert p.amp_dtype == torch.float16 and p.grad_scaler and p.channels_last
    assert "7.5 < 8.0" in p.amp_reason and "fp16" in p.amp_reason


def test_a100_bf16_no_scaler(monkeypatch):
    p = _plan("A100", monkeypatch)
    assert p.amp_dtype == torch.bfloat16 and not p.grad_scaler and p.channels_last
    assert "8.0 >= 8.0" in p.amp_reason


def test_l4_bf16_and_runs_sm86_cubins(monkeypatch):
    # sm_89 is in no stock wheel's arch list: the L4 runs the sm_86 cubins (same major, lower minor)
    p = _plan("L4", monkeypatch, archs=RECENT_ARCHS)
    assert p.amp_dtype == torch.bfloat16 and p.channels_last
    assert dv.arch_supported(torch.device("cuda"))


def test_v100_fp16_under_cu121_and_refused_under_recent_build(monkeypatch):
    p = _plan("V100", monkeypatch, archs=CU121_ARCHS)
    assert p.amp_dtype == torch.float16 and p.grad_scaler and p.channels_last
    simulate(monkeypatch, "V100", RECENT_ARCHS)
    with pytest.raises(DeviceError, match="Tesla V100"):
        dv.check_device(torch.device("cuda"))


def test_p100_absent_from_arch_list_clear_message(monkeypatch):
    with pytest.raises(DeviceError) as e:
        _plan("P100", monkeypatch, archs=RECENT_ARCHS)
    msg = str(e.value)
    assert "Tesla P100" in msg and "6.0" in msg and torch.__version__ in msg   # the GPU and the torch build
    assert "sm_75" in msg and "GPU T4 x2" in msg and "run.device=cpu" in msg  # what it has, what to do
    assert e.value.exit_code == 5
    # the same P100 under a build that has sm_60 is fine, fp16 without channels_last (no tensor cores)
    p = _plan("P100", monkeypatch, archs=CU121_ARCHS)
    assert p.amp_dtype == torch.float16 and p.grad_scaler and not p.channels_last


def test_compute_ptx_is_jit_compiled_for_newer_gpus(monkeypatch):
    simulate(monkeypatch, "H100", ["sm_80", "compute_80"])
    assert dv.arch_supported(torch.device("cuda"))
    simulate(monkeypatch, "T4", ["sm_80", "compute_80"])
    assert not dv.arch_supported(torch.device("cuda"))
    simulate(monkeypatch, "H100", ["sm_90a"])        # arch-specific cubins alone do not count
    assert not dv.arch_supported(torch.device("cuda"))
    simulate(monkeypatch, "T4", [])                  # a build that does not say
    assert dv.arch_supported(torch.device("cuda"))


def test_no_gpu_cpu_amp_off(monkeypatch):
    p = _plan(None, monkeypatch, "demo")
    assert p.device.type == "cpu" and p.amp_dtype is None and not p.grad_scaler and not p.channels_last
    assert "float32" in p.amp_reason


def test_no_gpu_refused_for_gpu_recipes(monkeypatch):
    for config in ("default", "aim500", "ecom", "dim_encoder_decoder", "dim_refinement", "dim_joint"):
        with pytest.raises(DeviceError, match="needs a GPU.*run.device=cpu"):
            _plan(None, monkeypatch, config)
    # deliberately on the CPU: allowed
    assert _plan(None, monkeypatch, "default", ["run.device=cpu"]).device.type == "cpu"
    assert _plan(None, monkeypatch, "default", ["run.require_gpu=false"]).device.type == "cpu"


def test_require_gpu_per_config():
    assert load_config("demo").run.require_gpu is False
    assert load_config("demo").run.device == "auto" and load_config("demo").data.num_workers == "auto"
    for config in ("default", "aim500", "ecom", "dim_encoder_decoder", "dim_refinement", "dim_joint"):
        cfg = load_config(config)
        assert cfg.run.require_gpu is True and cfg.run.device == "auto", config
        assert cfg.data.num_workers == "auto" and cfg.train.channels_last == "auto", config
        assert cfg.train.dist_timeout_s == 1800


def test_cuda_requested_without_gpu(monkeypatch):
    simulate(monkeypatch, None)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        dv.resolve_device("cuda")
    assert dv.resolve_device("auto").type == "cpu"
    with pytest.raises(UsageError):
        dv.resolve_device("gpu")


def test_cuda_index_beyond_count(monkeypatch):
    simulate(monkeypatch, "T4", count=2)
    dv.check_device(torch.device("cuda:1"))
    with pytest.raises(DeviceError, match="only 2 GPU"):
        dv.check_device(torch.device("cuda:2"))


@pytest.mark.parametrize("cpus,expected", [(1, 0), (2, 2), (4, 4), (16, 8)])
def test_num_workers_auto(monkeypatch, cpus, expected):
    monkeypatch.setattr(dv, "cpu_count", lambda: cpus)
    assert dv.resolve_num_workers("auto") == expected
    assert dv.resolve_num_workers(3) == 3


def test_num_workers_auto_reads_affinity(monkeypatch):
    monkeypatch.setattr(dv.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert dv.resolve_num_workers("auto") == 0


@pytest.mark.parametrize("env,expected", [({}, 4), ({"LOCAL_WORLD_SIZE": "2"}, 2), ({"NPROC": "2"}, 2),
                                          ({"WORLD_SIZE": "2"}, 2), ({"LOCAL_WORLD_SIZE": "4"}, 0),
                                          ({"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}, 2)])
def test_num_workers_auto_is_per_process_of_the_local_world(monkeypatch, env, expected):
    """Kaggle 2xT4 (4 vCPUs): each of the 2 ranks gets its share of the CPUs (2 workers), not min(8, 4)
    each; the local world size comes from torchrun / accelerate launch, notebook_launcher or WORLD_SIZE."""
    monkeypatch.setattr(dv, "cpu_count", lambda: 4)
    for k in ("LOCAL_WORLD_SIZE", "NPROC", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert dv.resolve_num_workers("auto") == expected
    assert dv.resolve_num_workers(3) == 3                  # an explicit number is per process, as written
    assert dv.resolve_num_workers("auto", local_world_size=1) == 4


@pytest.mark.parametrize("bad", [-1, "many", True, 1.5])
def test_num_workers_bad(bad):
    with pytest.raises(UsageError):
        dv.resolve_num_workers(bad)


def test_explicit_bf16_below_ampere_is_said_at_start(monkeypatch):
    """train.amp=bf16 on a T4 (7.5) is honoured, with a warning saying why it is a poor choice there (the
    Trainer's first step is this plan); doctor's reason line says the same. On an A100 nothing is said."""
    import warnings

    with pytest.warns(UserWarning, match=r"amp=bf16 on compute capability 7\.5 < 8\.0: bf16 is emulated"):
        p = _plan("T4", monkeypatch, overrides=["train.amp=bf16"])
    assert p.amp_dtype == torch.bfloat16 and "emulated" in p.amp_reason and "fp16 + GradScaler" in p.amp_reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = _plan("A100", monkeypatch, overrides=["train.amp=bf16"])
    assert p.amp_reason == "bf16: set explicitly (amp=bf16)"


def test_explicit_settings_win(monkeypatch):
    p = _plan("T4", monkeypatch, overrides=["train.amp=off", "train.channels_last=false"])
    assert p.amp_dtype is None and not p.grad_scaler and not p.channels_last
    assert "explicitly" in p.amp_reason
    with pytest.warns(UserWarning, match="emulated"):
        p = _plan("T4", monkeypatch, overrides=["train.amp=bf16"])
    assert p.amp_dtype == torch.bfloat16 and not p.grad_scaler
    p = _plan(None, monkeypatch, "demo", ["train.channels_last=true"])
    assert p.channels_last
    with pytest.raises(UsageError):
        dv.resolve_channels_last("yes", torch.device("cpu"), None)
    with pytest.raises(UsageError):
        dv.resolve_amp("fp8", torch.device("cpu"))
    assert dv.resolve_amp(True, torch.device("cpu")) is None   # YAML `amp: true` = auto


def test_inference_amp_from_plan(monkeypatch):
    simulate(monkeypatch, "T4")
    p = dv.plan(load_config("default", ["data.num_workers=0"]), amp="auto")
    assert p.amp_dtype == torch.float16
    simulate(monkeypatch, None)
    p = dv.plan(load_config("default", ["data.num_workers=0"]), amp="auto", require=False)   # inference
    assert p.device.type == "cpu" and p.amp_dtype is None


def test_device_facts(monkeypatch):
    simulate(monkeypatch, "T4", count=2)
    f = dv.device_facts(torch.device("cuda"))
    assert f["name"] == "Tesla T4" and f["capability"] == "7.5" and f["memory_gb"] == 15.0
    assert f["count"] == 2 and f["arch_supported"] is True
    simulate(monkeypatch, None)
    assert dv.device_facts(torch.device("cpu")) == {"device": "cpu", "type": "cpu"}


def test_dist_timeout():
    assert dv.dist_timeout(1800).total_seconds() == 1800
    assert dv.dist_timeout(None).total_seconds() == dv.DEFAULT_DIST_TIMEOUT_S
    for bad in (0, -5, "long", True):
        with pytest.raises(UsageError):
            dv.dist_timeout(bad)


def test_exact_numerics_restores_flags():
    saved = dv._flags()
    try:
        dv._set_flags({"matmul_tf32": True, "cudnn_tf32": True, "cudnn_benchmark": True,
                       "cudnn_deterministic": False})
        with dv.exact_numerics():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert dv._flags() == {"matmul_tf32": True, "cudnn_tf32": True, "cudnn_benchmark": True,
                               "cudnn_deterministic": False}
        with pytest.raises(KeyError):           # restored on an exception too
            with dv.exact_numerics():
                raise KeyError("x")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.benchmark
        with dv.exact_numerics(enabled=False):
            assert torch.backends.cuda.matmul.allow_tf32
    finally:
        dv._set_flags(saved)


def test_cudnn_benchmark_restores_flag():
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with dv.cudnn_benchmark(True):
            assert torch.backends.cudnn.benchmark
            with dv.cudnn_benchmark(False):
                assert not torch.backends.cudnn.benchmark
            assert torch.backends.cudnn.benchmark
        assert not torch.backends.cudnn.benchmark
        with pytest.raises(RuntimeError):
            with dv.cudnn_benchmark(True):
                raise RuntimeError("boom")
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = saved


def test_is_oom():
    assert dv.is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert dv.is_oom(RuntimeError("CUDA error: out of memory"))
    assert not dv.is_oom(RuntimeError("CUDA error: no kernel image is available"))
    assert not dv.is_oom(MemoryError())   # host RAM: not a GPU setting to change


def test_training_oom_message():
    cfg = load_config("default", ["data.batch_size=16", "data.image_size=512", "train.amp=off"])
    err = dv.training_oom_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                cfg, None, device="cuda:0", channels_last=False)
    msg = str(err)
    assert isinstance(err, DeviceError) and isinstance(err, MattingKitError) and err.exit_code == 5
    for part in ("data.batch_size=16", "512x512", "train.amp=off", "alphagan/resnet50", "cuda:0",
                 "data.batch_size=8", "train.accum_steps=2", "train.amp=auto", "data.image_size=320",
                 "resnet34", "Tried to allocate 2 GiB"):
        assert part in msg, part
    msg16 = str(dv.training_oom_error(RuntimeError("out of memory"), cfg, torch.float16))
    assert "train.amp=fp16" in msg16 and "turn mixed precision on" not in msg16
    one = str(dv.training_oom_error(RuntimeError("out of memory"), load_config("default")))
    assert "halve the batch" not in one   # batch 1 already
