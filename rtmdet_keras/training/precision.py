"""Mixed precision for training (``rtmdet train --mixed-precision``).

The network computes in ``float16`` on GPUs (``mixed_float16``, with Keras' loss scaling) or in
``bfloat16`` on CPUs that have bfloat16 instructions (``mixed_bfloat16``); its variables stay float32.
The assigner and the losses run in float32 (:class:`~rtmdet_keras.training.detector.RTMDetDetector`
casts the outputs), and the models the run saves (the best model) are float32 networks with the trained
weights, so evaluation and export see the same model as without mixed precision.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import keras
import tensorflow as tf

from rtmdet_keras.models import build_model


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has bfloat16 instructions (AVX512_BF16 or AMX-BF16; Linux' ``/proc/cpuinfo``)."""
    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def mixed_policy_name(gpus: Optional[int] = None, cpu_bf16: Optional[bool] = None) -> Optional[str]:
    """``mixed_float16`` with a GPU, ``mixed_bfloat16`` on a CPU with bfloat16 instructions, else None."""
    if gpus is None:
        gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus:
        return "mixed_float16"
    if cpu_has_bfloat16() if cpu_bf16 is None else cpu_bf16:
        return "mixed_bfloat16"
    return None


@contextlib.contextmanager
def dtype_policy(name: Optional[str]):
    """Keras' global dtype policy ``name`` for the block (None: leave it), restored afterwards."""
    if name is None:
        yield
        return
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def float32_twin(cfg):
    """A float32 network of ``cfg`` (what the run saves), built whatever the global policy."""
    with dtype_policy("float32"):
        return build_model(cfg)
