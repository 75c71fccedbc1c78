"""``python -m rtmdet_keras.checkpoint_convert IN.pth OUT.npz --config tiny`` (``rtmdet convert-checkpoint``).

The command is :mod:`rtmdet_keras.commands.convert`; loading and converting checkpoints is
:mod:`rtmdet_keras.models.pretrained`.
"""

from rtmdet_keras.cli import run_standalone
from rtmdet_keras.commands.convert import convert_command

if __name__ == "__main__":
    run_standalone(convert_command, "python -m rtmdet_keras.checkpoint_convert")
