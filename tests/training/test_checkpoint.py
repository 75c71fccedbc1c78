"""Checkpoints: atomic writes, full-state round trip, pruning, the last_checkpoint pointer."""

import keras
import numpy as np
import pytest

from rtmdet_keras.files import atomic_write
from rtmdet_keras.training.checkpoint import (
    CheckpointCallback, epoch_checkpoints, latest_checkpoint, load_training_state,
    read_checkpoint_meta, restore_training_state, run_checkpoints, save_training_state,
)
from rtmdet_keras.training.ema import ExpMomentumEMA


def _trained_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((3,))
    x = keras.layers.Dense(4, name="d")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inp, keras.layers.Dense(1, name="out")(x))
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss="mse")
    data = np.random.default_rng(seed).normal(size=(16, 3)).astype("float32")
    model.fit(data, data[:, :1], epochs=1, batch_size=8, verbose=0)
    return model


def test_interrupted_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def crash(tmp):
        open(tmp, "w").write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary left behind


def test_full_state_round_trip(tmp_path):
    model = _trained_model(0)
    ema = ExpMomentumEMA()
    ema.set_model(model)
    ema.on_train_begin()
    ema.on_train_batch_end(0)
    save_training_state(tmp_path / "s.npz", model, model.optimizer, ema, {"epoch": 3, "best": 0.5})

    other = _trained_model(1)  # different weights and optimiser state
    other_ema = ExpMomentumEMA()
    other_ema.set_model(other)
    meta = restore_training_state(load_training_state(tmp_path / "s.npz"), other, other.optimizer, other_ema)
    assert meta["epoch"] == 3 and meta["best"] == 0.5
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(model.optimizer.variables, other.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(other.optimizer.iterations) == int(model.optimizer.iterations) == 2
    assert other_ema.get_state()["updates"] == 1


def test_mismatched_model_and_corrupt_file_give_clear_errors(tmp_path):
    model = _trained_model(0)
    save_training_state(tmp_path / "s.npz", model, model.optimizer)
    inp = keras.Input((3,))
    small = keras.Model(inp, keras.layers.Dense(2)(inp))
    small.compile(optimizer="adamw", loss="mse")
    with pytest.raises(RuntimeError, match="another config"):
        restore_training_state(load_training_state(tmp_path / "s.npz"), small, small.optimizer)
    bad = tmp_path / "epoch_2.ckpt.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RuntimeError, match="epoch_2.ckpt.npz"):
        load_training_state(bad)


def test_callback_writes_pointer_and_keeps_the_newest(tmp_path):
    model = _trained_model(0)
    cb = CheckpointCallback(tmp_path, interval=1, max_keep=2, last_epoch=5, state_fn=lambda: {"best": 0.1})
    cb.set_model(model)
    for epoch in range(4):
        cb.on_epoch_end(epoch)
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [3, 4]
    assert latest_checkpoint(tmp_path).name == "epoch_4.ckpt.npz"
    assert load_training_state(latest_checkpoint(tmp_path))["meta"]["best"] == 0.1
    # Every second epoch, but always the last one.
    cb2 = CheckpointCallback(tmp_path / "b", interval=2, max_keep=0, last_epoch=5)
    cb2.set_model(model)
    for epoch in range(5):
        cb2.on_epoch_end(epoch)
    assert [e for e, _ in epoch_checkpoints(tmp_path / "b")] == [2, 4, 5]


def test_retention_deletes_only_what_the_run_wrote(tmp_path):
    model = _trained_model(0)
    for epoch in (4, 5):  # a longer earlier run in the same folder
        save_training_state(tmp_path / f"epoch_{epoch}.ckpt.npz", model, model.optimizer, meta={"run_id": "old"})
    cb = CheckpointCallback(tmp_path, max_keep=2, state_fn=lambda: {"run_id": "new"})
    cb.set_model(model)
    for epoch in range(3):
        cb.on_epoch_end(epoch)
    # Kept by number alone, "the newest 2" would have been the old run's 4 and 5, deleting each new one.
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [2, 3, 4, 5]
    assert [read_checkpoint_meta(p)["run_id"] for _, p in epoch_checkpoints(tmp_path)] == ["new", "new", "old", "old"]
    assert latest_checkpoint(tmp_path).name == "epoch_3.ckpt.npz"
    # Resumed, the run counts the checkpoints it wrote before among its own.
    own = run_checkpoints(tmp_path, "new")
    assert [p.name for p in own] == ["epoch_2.ckpt.npz", "epoch_3.ckpt.npz"]
    resumed = CheckpointCallback(tmp_path, max_keep=2, state_fn=lambda: {"run_id": "new"}, own=own)
    resumed.set_model(model)
    resumed.on_epoch_end(5)
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [3, 4, 5, 6]
    assert read_checkpoint_meta(tmp_path / "epoch_4.ckpt.npz")["run_id"] == "old"
