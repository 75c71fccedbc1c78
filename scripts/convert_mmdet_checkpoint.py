#!/usr/bin/env python
"""Convert an mmdetection RTMDet (or ImageNet CSPNeXt) checkpoint to rtmdet_keras' name-keyed .npz.

    python scripts/convert_mmdet_checkpoint.py IN.pth OUT.npz --config tiny [--cfg-options key=value ...]
        [--state-dict state_dict|ema_state_dict]

The same command as ``rtmdet convert-checkpoint``; see ``rtmdet_keras/models/pretrained.py``. Needs
PyTorch (``pip install 'rtmdet_keras[convert]'``); the .npz it writes loads without it.
"""

from rtmdet_keras.tensorflow_startup import import_tensorflow_quietly

import_tensorflow_quietly()  # the command's modules import Keras: without TensorFlow's start-up lines

from rtmdet_keras.cli import run_standalone  # noqa: E402
from rtmdet_keras.commands.convert import convert_command  # noqa: E402

if __name__ == "__main__":
    run_standalone(convert_command, "scripts/convert_mmdet_checkpoint.py")
