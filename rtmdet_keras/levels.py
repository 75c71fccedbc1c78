"""Feature-level names: the output of stride ``2**k`` is level ``pk`` (``cls_p3``, ``reg_p3``, ...).

Kept apart from :mod:`rtmdet_keras.boxes` because it needs no TensorFlow: the TFLite runtime reads
output names with it.
"""

from __future__ import annotations

import math
from typing import List, Sequence


def level_name(stride: int) -> str:
    """``8 -> "p3"``: the pyramid level of a stride."""
    level = int(round(math.log2(stride)))
    if 2 ** level != stride:
        raise ValueError(f"model.strides must be powers of two, got {stride}")
    return f"p{level}"


def level_names(strides: Sequence[int]) -> List[str]:
    """Level names for strides: ``[8, 16, 32] -> ["p3", "p4", "p5"]``."""
    try:
        return [level_name(int(s)) for s in strides]
    except ValueError:
        raise ValueError(f"strides must be powers of two, got {list(strides)}") from None
