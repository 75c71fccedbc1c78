"""Nano can over-fit 8 demo images: the whole training path (pipeline, assigner, losses, optimiser,
decode + NMS, COCO evaluation) is wired so that it learns. Slow: a couple of minutes on 2 cores."""

import keras
import pytest

from rtmdet_keras.config import load_config
from rtmdet_keras.data import load_split
from rtmdet_keras.data.pipeline import build_train_pipeline
from rtmdet_keras.evaluation import evaluate_detections
from rtmdet_keras.models import build_model
from rtmdet_keras.postprocess import make_dataset_predictor
from rtmdet_keras.training.detector import RTMDetDetector, build_optimizer

pytestmark = pytest.mark.slow


def test_nano_overfits_eight_images(demo_dataset):
    cfg = load_config("nano", [f"data_root={demo_dataset}", "num_classes=2", "imgsz=128", "batch_size=8",
                               "augment.flip_prob=0.0", "augment.hsv_gains=[0,0,0]",
                               "augment.stage2_ratio_range=[1.0,1.0]"])
    keras.utils.set_random_seed(0)
    train_set = load_split(cfg, "train")
    train_set.records = train_set.records[:8]
    # Stage 2 without jitter: the network sees the eight letterboxed images as they are evaluated.
    pipeline = build_train_pipeline(train_set, cfg, stage=2, seed=0)
    network = build_model(cfg)
    detector = RTMDetDetector(network, cfg)
    detector.compile(optimizer=build_optimizer(cfg, 4e-3, network))
    detector.fit(pipeline.dataset, steps_per_epoch=50, epochs=6, verbose=0, shuffle=False)
    result = evaluate_detections(train_set, make_dataset_predictor(network, cfg)(train_set))
    assert result.metrics["bbox_mAP_50"] > 0.9, result.report()
