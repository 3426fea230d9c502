"""Shared fixtures: where the real data beside the repo lives, the embedded demo data, and CPU-only, quiet
test runs. (The tiny trainer models are in tinymodels.py.)"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ALPHAMATTING_DEV = SHARED_DATA / "alphamatting_dev"
ECOM = SHARED_DATA / "ecom_competition"

os.environ.setdefault("MATTINGKIT_HEADLESS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def alphamatting_dev() -> Path:
    if not (ALPHAMATTING_DEV / "official_metrics.csv").exists():
        pytest.skip("../shared/data/alphamatting_dev is absent")
    return ALPHAMATTING_DEV


@pytest.fixture
def ecom_example() -> Path:
    p = ECOM / "example_submission.csv"
    if not p.exists():
        pytest.skip("../shared/data/ecom_competition is absent")
    return p


@pytest.fixture(scope="session")
def demo_data_root(tmp_path_factory) -> Path:
    """A data root holding the embedded demo data (``<root>/demo``), written once per session."""
    synthetic = pytest.importorskip("mattingkit.data.synthetic")
    root = tmp_path_factory.getbasetemp() / "demo_data"
    if not (root / "demo" / "demo.json").exists():
        synthetic.make_demo_data(root / "demo", seed=0)
    return root
