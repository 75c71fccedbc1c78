"""Converted weights files: a name-keyed ``.npz`` that loads into any model whose layers carry the names.

Converted-file format (``.npz``)
    A NumPy archive keyed ``"<layer name>/<weight>"`` with float32 arrays in Keras layout, where
    ``<weight>`` is ``kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean`` or ``moving_variance``
    (``backbone.stem.0.conv/kernel``, ``bbox_head.cls_convs.2.1.bn/moving_variance``), plus
    ``"__meta__"``: UTF-8 JSON as uint8 (``format``, ``version``, ``source``, ``state_dict_key``,
    ``num_classes``, ``class_names``, ``part``, ``model`` settings, ``checkpoint_bn_eps``). Keyed by
    name rather than by position, it loads into any model whose layers carry those names: another
    class count, the backbone only, the tf_keras twin. (A Keras ``save_weights`` file keys layers by
    auto-generated class names such as ``batch_normalization_12``: it loads only into an identical
    model, so it is not used here.)
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from rtmdet_keras.files import atomic_write
from rtmdet_keras.models.checkpoint_layout import CheckpointError

FORMAT = "rtmdet_keras.named_weights"
FORMAT_VERSION = 1
META_KEY = "__meta__"


def save_named_weights(path, table: Mapping, meta: Optional[dict] = None) -> None:
    """Write a converted file (``.npz``, see the module docstring), atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise CheckpointError(f"{path}: a converted file must end in .npz (a name-keyed NumPy archive)")
    meta = {"format": FORMAT, "version": FORMAT_VERSION, **(meta or {})}
    arrays = {k: np.asarray(v) for k, v in table.items()}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def is_named_weights_file(path) -> bool:
    """Whether ``path`` is a converted weights ``.npz`` (it holds :data:`META_KEY`), not a training
    checkpoint (``epoch_N.ckpt.npz``); reads only the archive's member names."""
    try:
        with zipfile.ZipFile(path) as z:
            return f"{META_KEY}.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def read_named_weights(path) -> Tuple[Dict[str, np.ndarray], dict]:
    """Read a converted file: ``({"layer/weight": array}, meta)``."""
    try:
        with np.load(path) as data:
            if META_KEY not in data.files:
                hint = (" It looks like a training checkpoint (epoch_N.ckpt.npz): continue that run with --resume,"
                        " or fine-tune from its best_coco_bbox_mAP.keras." if "meta" in data.files else "")
                raise CheckpointError(f"{path}: not a converted rtmdet_keras weights file (no {META_KEY}).{hint}")
            meta = json.loads(bytes(data[META_KEY]).decode())
            table = {k: data[k] for k in data.files if k != META_KEY}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not a readable .npz file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a converted rtmdet_keras weights file (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer rtmdet_keras (format version {meta['version']}); "
                              "upgrade rtmdet_keras to read it")
    return table, meta
