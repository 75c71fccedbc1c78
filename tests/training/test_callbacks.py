"""The run-level callbacks: Keras callbacks across two fit calls, early stopping on the COCO mAP."""

import csv

import keras
import numpy as np

from rtmdet_keras.training.callbacks import CocoEarlyStopping, ContinuousCallbacks


def _frozen_model():
    """A model whose loss is the same every epoch (learning rate 0)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    data = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    return model, data, data[:, :1]


def test_keras_early_stopping_and_csv_logger_see_one_training_across_two_fits(tmp_path):
    model, x, y = _frozen_model()
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=2)
    log = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    both = ContinuousCallbacks([stop, log], epochs=5)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[both])  # "stage 1": epochs 0-1
    assert not model.stop_training  # one epoch without improvement so far
    model.fit(x, y, initial_epoch=2, epochs=5, batch_size=8, verbose=0, callbacks=[both])
    # Two epochs without a lower loss, counted across the switch: the second fit ends after epoch 2.
    # Handed to each fit on its own, EarlyStopping would reset at its start and run to epoch 4.
    assert model.stop_training and stop.stopped_epoch == 2
    both.finish()
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows] == ["epoch", "0", "1", "2"]


def test_batch_events_are_forwarded_only_when_someone_listens():
    class PerBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    # Keras' own marker of a no-op hook: it decides whether batch events can go asynchronously.
    quiet = ContinuousCallbacks([keras.callbacks.CSVLogger("unused.csv")], epochs=1)
    assert getattr(quiet.on_train_batch_end, "_is_default", False)
    assert not getattr(ContinuousCallbacks([PerBatch()], epochs=1).on_train_batch_end, "_is_default", False)


class _Model:
    stop_training = False


def test_coco_early_stopping_counts_epochs_since_the_best_at_evaluations():
    lines = []
    cb = CocoEarlyStopping(patience=15, print_fn=lines.append)
    cb.set_model(_Model())
    maps = {10: 0.2, 20: 0.3, 30: 0.3, 40: 0.29}  # evaluated every 10 epochs; equal is not better
    for epoch in range(1, 41):
        logs = {"loss": 1.0} if epoch not in maps else {"loss": 1.0, "val_bbox_mAP": maps[epoch]}
        cb.on_epoch_end(epoch - 1, logs)
        if cb.model.stop_training:
            break
    assert (cb.stopped_epoch, cb.best, cb.best_epoch) == (40, 0.3, 20)  # 30: 10 epochs since 20, 40: 20
    assert lines == ["early stop after epoch 40: no better val_bbox_mAP than 0.3000 (epoch 20) for 20 epochs "
                     "(patience=15)"]
    resumed = CocoEarlyStopping(patience=15, best=0.3, best_epoch=20)  # a resumed run's record
    resumed.set_model(_Model())
    resumed.on_epoch_end(34, {"val_bbox_mAP": 0.25})
    assert resumed.model.stop_training and resumed.stopped_epoch == 35
