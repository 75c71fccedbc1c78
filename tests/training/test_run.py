"""End-to-end training: resume after an interruption (also during a checkpoint write), NaN guard,
outputs in the work dir (results.csv, train.log), a second run beside a first, early stopping across
the stages, and the one-line refusals checked before any data is read. Slow: each run traces the
training step."""

import csv
import hashlib
import json
import shutil
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from rtmdet_keras.commands.train import train_command
from rtmdet_keras.config import load_config
from rtmdet_keras.models.pretrained import CheckpointError
from rtmdet_keras.training import checkpoint as ckpt_module
from rtmdet_keras.training.callbacks import TrainingDiverged
from rtmdet_keras.training.checkpoint import epoch_checkpoints, latest_checkpoint, read_checkpoint_meta
from rtmdet_keras.training.run import train
from rtmdet_keras.training.workdir import WorkDirError

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


def _results(work):
    with open(work / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_results_csv_has_a_row_per_epoch_and_train_log_what_was_printed(uninterrupted):
    work, summary = uninterrupted
    with open(work / "results.csv", newline="") as f:
        header = next(csv.reader(f))
    coco = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l",
            "bbox_AR_1", "bbox_AR_10", "bbox_AR_100", "bbox_AR_s", "bbox_AR_m", "bbox_AR_l"]
    assert header == ["epoch", "stage", "loss", "loss_cls", "loss_bbox", "lr", *coco, "images_per_second",
                      "epoch_seconds", "wall_seconds"]
    rows = _results(work)
    assert [(r["epoch"], r["stage"]) for r in rows] == [("1", "1"), ("2", "1"), ("3", "2")]
    for r in rows:  # val_interval=1: every epoch evaluated, every cell filled
        assert all(r[k] != "" for k in header), r
        assert float(r["loss"]) == pytest.approx(float(r["loss_cls"]) + float(r["loss_bbox"]), rel=1e-4)
    # The best epoch's row holds the mAP the best model was saved with.
    best = json.loads((work / "best_coco_bbox_mAP.keras.json").read_text())
    assert float(rows[best["epoch"] - 1]["bbox_mAP"]) == pytest.approx(best["metrics"]["bbox_mAP"], rel=1e-5)
    walls = [float(r["wall_seconds"]) for r in rows]
    assert walls == sorted(walls) and walls[-1] <= summary["seconds"] + 1
    lr = [float(r["lr"]) for r in rows]
    assert lr[0] > lr[-1] > 0  # warm-up over by the end of epoch 1, then the cosine

    log = (work / "train.log").read_text()
    assert log.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]") == 3
    assert "circle" in log and "square" in log  # the data report and the per-class table
    assert "epoch 3/3 (stage 2): loss " in log and log.rstrip().splitlines()[-1].startswith("done in")


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
    # The resumed session continues the first one's results.csv and train.log.
    assert [r["epoch"] for r in _results(tmp_path)] == ["1", "2", "3"]
    log = (tmp_path / "train.log").read_text()
    assert log.index("stopped: KeyboardInterrupt") < log.index("resumed from") < log.index("epoch 3/3 (stage 2)")


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


def _tree_digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append(("begin", self.params["epochs"]))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch", epoch))

    def on_train_end(self, logs=None):
        self.events.append(("end", None))


@pytest.fixture(scope="module")
def second_run(uninterrupted, demo_dataset, tmp_path_factory):
    """A copy of the uninterrupted run as ``nano``, then a run with work dir ``nano`` that can only stop
    early: lr 0, BatchNorm statistics and EMA frozen, so the mAP of epoch 1 is never beaten. Epoch 1 is
    stage 1, epochs 2-4 stage 2; patience 2 stops it after epoch 3. A user CSVLogger and a recorder watch."""
    root = tmp_path_factory.mktemp("runs")
    first = root / "nano"
    shutil.copytree(uninterrupted[0], first)
    before = _tree_digest(first)
    cfg = _cfg(demo_dataset, "max_epochs=4", "stage2_num_epochs=3", "patience=2", "lr=0", "model.bn_momentum=1.0",
               "ema_momentum=0", "ema_gamma=1e-9")
    recorder, lines = _Recorder(), []
    summary = train(cfg, work_dir=first, verbose=0, print_fn=lines.append,
                    callbacks=[keras.callbacks.CSVLogger(str(root / "user.csv")), recorder])
    return root, before, summary, recorder, lines


def test_second_run_in_a_used_work_dir_gets_the_next_folder_and_keeps_the_first(second_run):
    root, before, summary, _, lines = second_run
    assert summary["work_dir"] == str(root / "nano2")
    assert any("holds an earlier run" in line and "nano2" in line for line in lines)
    assert _tree_digest(root / "nano") == before  # not one byte of the first run changed
    assert [e for e, _ in epoch_checkpoints(root / "nano2")] == [1, 2, 3]
    first_ids = {read_checkpoint_meta(p)["run_id"] for _, p in epoch_checkpoints(root / "nano")}
    second_ids = {read_checkpoint_meta(p)["run_id"] for _, p in epoch_checkpoints(root / "nano2")}
    assert len(first_ids) == len(second_ids) == 1 and first_ids != second_ids


def test_patience_stops_in_stage_two_and_user_callbacks_see_one_training(second_run):
    root, _, summary, recorder, lines = second_run
    assert summary["epochs"] == 3 and summary["stopped_early"] and summary["best_epoch"] == 1
    assert any(line.startswith("stage 2") for line in lines)
    assert any("early stop after epoch 3" in line for line in lines)
    assert [(r["epoch"], r["stage"]) for r in _results(root / "nano2")] == [("1", "1"), ("2", "2"), ("3", "2")]
    # One on_train_begin (told the run's 4 epochs), epochs numbered on across the stage switch, one on_train_end.
    assert recorder.events == [("begin", 4), ("epoch", 0), ("epoch", 1), ("epoch", 2), ("end", None)]
    with open(root / "user.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]


# The refusals below use a data root that does not exist: the checkpoint problem must be found first.

def test_resume_with_another_network_is_refused_naming_the_fields(uninterrupted):
    work, _ = uninterrupted
    cfg = _cfg(work / "no_data_here", "num_classes=3", "model.widen_factor=0.5")
    with pytest.raises(WorkDirError) as e:
        train(cfg, work_dir=work, resume=True, verbose=0, print_fn=lambda *a: None)
    msg = str(e.value)
    assert "epoch_3.ckpt.npz" in msg and "num_classes=2" in msg and "num_classes=3" in msg
    assert "model.widen_factor=0.25" in msg and "model.widen_factor=0.5" in msg and "\n" not in msg


def test_unreadable_checkpoint_is_one_line_from_the_command(tmp_path):
    (tmp_path / "epoch_1.ckpt.npz").write_bytes(b"PK\x03\x04 cut short")
    r = CliRunner().invoke(train_command, ["--config", "nano", "--work-dir", str(tmp_path), "--resume",
                                           "--cfg-options", f"data_root={tmp_path / 'no_data_here'}"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith("Error: --resume: ") and "epoch_1.ckpt.npz" in line and "not a readable" in line


def test_bad_load_from_is_one_line_before_the_data(tmp_path, monkeypatch):
    missing = _cfg(tmp_path / "no_data_here", f"load_from={tmp_path / 'missing.pth'}")
    with pytest.raises(CheckpointError, match=r"^load_from: .*missing\.pth: no such file$"):
        train(missing, work_dir=tmp_path / "a", verbose=0, print_fn=lambda *a: None)
    pth = tmp_path / "rtmdet_tiny.pth"
    pth.write_bytes(b"not read: torch is missing")
    monkeypatch.setitem(sys.modules, "torch", None)  # as where torch is not installed
    no_torch = _cfg(tmp_path / "no_data_here", f"backbone_weights={pth}")
    with pytest.raises(CheckpointError) as e:
        train(no_torch, work_dir=tmp_path / "b", verbose=0, print_fn=lambda *a: None)
    assert str(e.value).startswith("backbone_weights: ") and "rtmdet_tiny.pth" in str(e.value)
    assert "needs PyTorch" in str(e.value) and "convert-checkpoint" in str(e.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything was written


def test_a_training_checkpoint_as_load_from_points_to_resume(uninterrupted, tmp_path):
    work, _ = uninterrupted
    cfg = _cfg(tmp_path / "no_data_here", f"load_from={work / 'epoch_3.ckpt.npz'}")
    with pytest.raises(CheckpointError) as e:
        train(cfg, work_dir=tmp_path / "run", verbose=0, print_fn=lambda *a: None)
    assert str(e.value).startswith("load_from: ") and "epoch_3.ckpt.npz" in str(e.value) and "--resume" in str(e.value)
