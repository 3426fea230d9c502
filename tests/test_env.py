from pathlib import Path

from mattingkit import env


def test_detect_platform_from_variables():
    assert env.detect_platform({"COLAB_RELEASE_TAG": "release-colab_2026"}, check_paths=False) == "colab"
    assert env.detect_platform({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, check_paths=False) == "kaggle"
    assert env.detect_platform({}, check_paths=False) == "local"


def test_roots_per_platform(tmp_path):
    assert env.data_root({}, platform="kaggle") == Path("/kaggle/working/data")
    assert env.runs_root({}, platform="kaggle") == Path("/kaggle/working/runs")
    assert env.data_root({}, platform="colab") == Path("/content/data")
    # no Drive mounted on this machine -> local Colab disk
    assert env.runs_root({}, platform="colab") == Path("/content/runs")
    local = env.runs_root({}, platform="local")
    assert local.name == "runs"
    assert env.data_root({"MATTINGKIT_DATA_ROOT": str(tmp_path)}) == tmp_path
    assert env.runs_root({"MATTINGKIT_RUNS_ROOT": str(tmp_path)}) == tmp_path


def test_headless_flag():
    assert env.is_headless({"MATTINGKIT_HEADLESS": "1"}) is True
    assert env.is_headless({"MATTINGKIT_HEADLESS": "0"}) is False
    assert env.is_headless({"PAPERMILL_EXECUTION": "1"}) is True
    assert env.is_headless({"CI": "true"}) is True


def test_detection_inside_a_child_process(tmp_path):
    """The variables are inherited by child processes such as papermill kernels."""
    import os
    import subprocess
    import sys

    code = "from mattingkit import env; print(env.detect_platform(check_paths=False))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "KAGGLE_KERNEL_RUN_TYPE": "Batch"}, check=True)
    assert out.stdout.strip() == "kaggle"


def test_summary_has_no_secrets():
    s = env.summary({"KAGGLE_KEY": "sekrit-value", "MATTINGKIT_HEADLESS": "1"})
    assert "sekrit-value" not in repr(s)
