"""End-to-end training: resume after an interruption (also during a checkpoint write), NaN guard,
outputs in the work dir. Slow: each run traces the training step."""

import json

import keras
import numpy as np
import pytest

from rtmdet_keras.config import load_config
from rtmdet_keras.train import train
from rtmdet_keras.training import checkpoint as ckpt_module
from rtmdet_keras.training.callbacks import TrainingDiverged
from rtmdet_keras.training.checkpoint import epoch_checkpoints, latest_checkpoint

pytestmark = pytest.mark.slow


def _cfg(root, *extra):
    # 24 training images, batch 8: 3 steps per epoch; epochs 1-2 stage 1, epoch 3 stage 2.
    return load_config("nano", [f"data_root={root}", "num_classes=2", "imgsz=64", "batch_size=8",
                                "max_epochs=3", "stage2_num_epochs=1", "val_interval=1", *extra])


class _StopAt(keras.callbacks.Callback):
    """Simulates a kill: raises KeyboardInterrupt at (epoch, batch), both 0-based."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def uninterrupted(demo_dataset, tmp_path_factory):
    work = tmp_path_factory.mktemp("full")
    return work, train(_cfg(demo_dataset), work_dir=work, verbose=0, print_fn=lambda *a: None)


def test_run_writes_what_a_user_expects(uninterrupted):
    work, summary = uninterrupted
    assert summary["steps"] == 9 and summary["epochs"] == 3
    assert summary["images_per_second"] == pytest.approx(9 * 8 / summary["seconds"])
    assert json.loads((work / "train_summary.json").read_text())["images_per_second"] > 0
    assert (work / "best_coco_bbox_mAP.keras").exists() and (work / "config.yaml").exists()
    assert [e for e, _ in epoch_checkpoints(work)] == [1, 2, 3]
    assert latest_checkpoint(work).name == "epoch_3.ckpt.npz"
    assert list((work / "tensorboard").rglob("events.out.tfevents*"))
    saved = load_config(work / "config.yaml")
    assert saved.class_names == ["circle", "square"] and saved.imgsz == [64, 64]
    info = json.loads((work / "best_coco_bbox_mAP.keras.json").read_text())
    assert set(info["metrics"]) >= {"bbox_mAP", "bbox_mAP_50"}
    # The best model is the plain inference network: it reloads without any custom training code.
    net = keras.saving.load_model(work / "best_coco_bbox_mAP.keras")
    out = net(np.zeros((1, 64, 64, 3), np.float32))
    assert out["cls_p3"].shape == (1, 8, 8, 2)


def test_killed_in_stage_two_resumes_in_stage_two_with_the_same_steps(uninterrupted, demo_dataset, tmp_path):
    _, full = uninterrupted
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(demo_dataset), work_dir=tmp_path, verbose=0, callbacks=[_StopAt(2, 1)], print_fn=lambda *a: None)
    assert latest_checkpoint(tmp_path).name == "epoch_2.ckpt.npz"
    lines = []
    resumed = train(_cfg(demo_dataset), work_dir=tmp_path, resume=True, verbose=0, print_fn=lines.append)
    assert any("resumed from" in line and "epoch 2, step 6" in line for line in lines)
    assert not any(line.startswith("stage 1") for line in lines)
    assert resumed["steps"] == full["steps"] == 9


def test_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(demo_dataset, tmp_path, monkeypatch):
    real_savez, calls = np.savez, []

    def dying_savez(f, **arrays):
        calls.append(1)
        if len(calls) == 2:  # the epoch-2 checkpoint: write half of it, then die
            f.write(b"PK\x03\x04partial")
            raise KeyboardInterrupt
        real_savez(f, **arrays)

    monkeypatch.setattr(ckpt_module.np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(demo_dataset), work_dir=tmp_path, verbose=0, print_fn=lambda *a: None)
    monkeypatch.setattr(ckpt_module.np, "savez", real_savez)
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [1]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no half files
    resumed = train(_cfg(demo_dataset), work_dir=tmp_path, resume=True, verbose=0, print_fn=lambda *a: None)
    assert resumed["steps"] == 9


class _PoisonWeights(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.at = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            w = self.model.network.get_layer("bbox_head.rtm_cls.0").kernel
            w.assign(np.full(w.shape, np.nan, np.float32))


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_good_checkpoint(demo_dataset, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1"):
        train(_cfg(demo_dataset), work_dir=tmp_path, verbose=0, callbacks=[_PoisonWeights(1)],
              print_fn=lambda *a: None)
    assert latest_checkpoint(tmp_path).name == "epoch_1.ckpt.npz"
