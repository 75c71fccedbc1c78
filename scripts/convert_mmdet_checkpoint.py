#!/usr/bin/env python
"""Convert an mmdetection RTMDet (or ImageNet CSPNeXt) checkpoint to rtmdet_keras' name-keyed .npz.

    python scripts/convert_mmdet_checkpoint.py IN.pth OUT.npz --config tiny [--cfg-options key=value ...]
        [--state-dict state_dict|ema_state_dict]

The same command as ``rtmdet convert-checkpoint``; see ``rtmdet_keras/models/pretrained.py``. Needs
PyTorch (``pip install 'rtmdet_keras[convert]'``); the .npz it writes loads without it.
"""

from rtmdet_keras.cli import run_standalone
from rtmdet_keras.commands.convert import convert_command

if __name__ == "__main__":
    run_standalone(convert_command, "scripts/convert_mmdet_checkpoint.py")
