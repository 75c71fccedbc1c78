"""Checkpoints in ``work_dirs/<config>/``: written atomically, resumable, pruned.

- ``epoch_N.ckpt.npz``: the whole training state after epoch N (weights, EMA weights and update
  count, optimiser variables, epoch, best metric so far). The newest ``max_keep_ckpts`` the run
  wrote itself are kept; another run's files in the folder are never deleted.
- ``last_checkpoint``: one line naming the newest complete ``epoch_N.ckpt.npz``; written after it.
- ``best_coco_bbox_mAP.keras``: the inference network with EMA weights, for export and evaluation.

Every file is written to a temporary name in the same directory and renamed into place, so a run
killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Optional

import keras
import numpy as np

from rtmdet_keras.files import atomic_write

LAST_POINTER = "last_checkpoint"
BEST_NAME = "best_coco_bbox_mAP.keras"
_EPOCH_RE = re.compile(r"^epoch_(\d+)\.ckpt\.npz$")


def _cache_keras_skipsets() -> None:
    """Keras 3.15's ``saving_lib.get_attr_skipset`` stores its result under ``saving_attr_skipset_*``
    but looks it up under ``saving_attr_skiplist_*``, so every layer saved builds a throw-away
    ``Layer`` to list its attributes: about 40 % of a ``.keras`` save of nano (the best model is saved
    at each new best during training). Store the sets under the key it reads; harmless once fixed."""
    try:
        from keras.src.backend.common import global_state  # private Keras modules: inside the ImportError guard
        from keras.src.saving import saving_lib  # (another Keras layout may not have them)
    except ImportError:  # pragma: no cover - another Keras layout
        return
    for kind in ("Layer", "Functional", "Operation"):
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key, None) is None:
            global_state.set_global_attribute(key, saving_lib.get_attr_skipset(kind))


def save_inference_model(network: keras.Model, path) -> None:
    """Save the functional network as ``.keras``, atomically."""
    _cache_keras_skipsets()
    atomic_write(path, lambda tmp: network.save(tmp), suffix=".keras")


def _variables_of(optimizer):
    return list(optimizer.variables)


def _weight_path(variable) -> str:
    """A Keras 3 variable's ``path``; a tf_keras (QAT) variable's ``name``."""
    return getattr(variable, "path", None) or variable.name


def _is_built(optimizer) -> bool:
    return bool(getattr(optimizer, "built", getattr(optimizer, "_built", False)))  # Keras 3 / tf_keras


def save_training_state(path, model: keras.Model, optimizer, ema=None, meta: Optional[dict] = None) -> None:
    """Write the training state to ``path`` (``.npz``) atomically. ``model`` and ``optimizer`` may also
    be tf_keras ones (QAT's quantised network and its optimiser)."""
    arrays = {}
    for i, v in enumerate(model.weights):
        arrays[f"model/{i:05d}"] = np.asarray(v)
    for i, v in enumerate(_variables_of(optimizer)):
        arrays[f"optimizer/{i:05d}"] = np.asarray(v)
    meta = dict(meta or {})
    meta["num_model_weights"] = len(model.weights)
    meta["model_weight_paths"] = [_weight_path(v) for v in model.weights]
    meta["num_optimizer_variables"] = len(_variables_of(optimizer))
    if ema is not None:
        state = ema.get_state()
        meta["ema_updates"] = state["updates"]
        for i, w in enumerate(state["weights"]):
            arrays[f"ema/{i:05d}"] = w
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_training_state(path) -> dict:
    """Read a state written by :func:`save_training_state`: ``{"meta", "model", "optimizer", "ema"}``."""
    path = Path(path)
    try:
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            groups = {"model": [], "optimizer": [], "ema": []}
            for key in sorted(k for k in data.files if k != "meta"):
                group = key.split("/")[0]
                groups[group].append(data[key])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise RuntimeError(f"{path}: not a readable rtmdet_keras checkpoint ({e}); delete it or resume from "
                           f"another epoch_N.ckpt.npz") from None
    return {"meta": meta, **groups}


def assign_weights(variables, values, source="checkpoint") -> None:
    """Assign saved ``values`` to ``variables`` in order, after checking their number and shapes."""
    if len(values) != len(variables):
        raise RuntimeError(f"{source}: it holds {len(values)} weight tensors but this model has "
                           f"{len(variables)}: was it written for another config (preset, num_classes)?")
    for v, w in zip(variables, values):
        if tuple(v.shape) != tuple(np.shape(w)):
            raise RuntimeError(f"{source}: weight {_weight_path(v)} has shape {tuple(np.shape(w))} in the checkpoint "
                               f"but {tuple(v.shape)} in the model: was it written for another config?")
        v.assign(w)


def restore_training_state(state: dict, model: keras.Model, optimizer, ema=None, source="checkpoint",
                           trainable_variables=None) -> dict:
    """Put a loaded state back into the model, the optimiser (built here if needed, for
    ``trainable_variables``, default the model's) and the EMA."""
    assign_weights(model.weights, state["model"], source)
    if not _is_built(optimizer):
        optimizer.build(model.trainable_variables if trainable_variables is None else trainable_variables)
    variables = _variables_of(optimizer)
    if len(variables) != len(state["optimizer"]):
        raise RuntimeError(f"{source}: optimiser state has {len(state['optimizer'])} variables, expected "
                           f"{len(variables)}")
    for v, w in zip(variables, state["optimizer"]):
        v.assign(w)
    if ema is not None and state["ema"]:
        ema.set_state({"updates": state["meta"].get("ema_updates", 0), "weights": state["ema"]})
    return state["meta"]


def read_checkpoint_meta(path) -> dict:
    """The metadata of a training state without reading its tensors; ``{}`` if the file cannot be read."""
    try:
        with np.load(path) as data:
            return json.loads(bytes(data["meta"]).decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return {}


def run_checkpoints(work_dir, run_id) -> list:
    """Paths of the ``epoch_N`` checkpoints in ``work_dir`` written by the run ``run_id``, oldest first
    (``run_id`` None: those written before runs had ids)."""
    return [p for _, p in epoch_checkpoints(work_dir) if read_checkpoint_meta(p).get("run_id") == run_id]


def epoch_checkpoints(work_dir) -> list:
    """``[(epoch, path)]`` of the epoch checkpoints in ``work_dir``, oldest first."""
    found = []
    for p in Path(work_dir).glob("epoch_*.ckpt.npz"):
        m = _EPOCH_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(work_dir) -> Optional[Path]:
    """The checkpoint named by ``last_checkpoint``, else the newest ``epoch_N`` file, else None."""
    work_dir = Path(work_dir)
    pointer = work_dir / LAST_POINTER
    if pointer.exists():
        p = work_dir / pointer.read_text().strip()
        if p.exists():
            return p
    found = epoch_checkpoints(work_dir)
    return found[-1][1] if found else None


class CheckpointCallback(keras.callbacks.Callback):
    """Write ``epoch_N.ckpt.npz`` every ``interval`` epochs (and at the last), point ``last_checkpoint``
    at it, keep the newest ``max_keep`` of the files this run wrote: those written here, and ``own``
    (the checkpoints of the run it resumes). Other files in ``work_dir`` are left alone, so a run
    started in a folder that holds another one never deletes that run's checkpoints.

    ``state_fn()`` returns extra metadata to store (e.g. the best metric so far); ``ema`` is the
    :class:`~rtmdet_keras.training.ema.ExpMomentumEMA` whose averaged weights are stored beside the
    raw ones; ``network``, when given, is the model whose weights are stored instead of the fitted
    model's (QAT stores its quantised network, not the tf_keras detector around it).
    """

    def __init__(self, work_dir, interval=1, max_keep=3, ema=None, last_epoch=None, state_fn=None, own=(),
                 network=None):
        super().__init__()
        self.network = network
        self.work_dir = Path(work_dir)
        self.interval = max(int(interval), 1)
        self.max_keep = int(max_keep)
        self.ema = ema
        self.last_epoch = last_epoch
        self.state_fn = state_fn
        self.written = [Path(p) for p in own]  # this run's checkpoints, oldest first

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1  # epochs completed
        if done % self.interval and done != self.last_epoch:
            return
        meta = {"epoch": done, "iterations": int(np.asarray(self.model.optimizer.iterations))}
        if self.state_fn is not None:
            meta.update(self.state_fn())
        name = f"epoch_{done}.ckpt.npz"
        path = self.work_dir / name
        save_training_state(path, self.network if self.network is not None else self.model, self.model.optimizer,
                            self.ema, meta)
        atomic_write(self.work_dir / LAST_POINTER, lambda tmp: Path(tmp).write_text(name + "\n"))
        self.written = [p for p in self.written if p != path] + [path]
        if self.max_keep > 0:
            for old in self.written[: -self.max_keep]:
                old.unlink(missing_ok=True)
            self.written = self.written[-self.max_keep:]
