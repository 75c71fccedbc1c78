"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """Root of a small copy of the demo data set (24 train / 8 valid images, Roboflow COCO layout:
    ``train/_annotations.coco.json``, ``valid/_annotations.coco.json``, classes circle and square).
    Generated once per test session; treat it as read-only."""
    from rtmdet_keras.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0, num_train=24, num_valid=8)


@pytest.fixture
def demo_config(demo_dataset):
    """``load_config("nano")`` pointed at :func:`demo_dataset` (2 classes); a fresh copy per test."""
    from rtmdet_keras.config import load_config

    return load_config("nano", [f"data_root={demo_dataset}", "num_classes=2"])
