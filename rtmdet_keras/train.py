"""Train an RTMDet detector: ``python -m rtmdet_keras.train --config nano.yaml --cfg-options ...``.

The entry point of ``rtmdet train``: the command is :mod:`rtmdet_keras.commands.train`, the run
:mod:`rtmdet_keras.training.run` (``from rtmdet_keras.train import train`` still gives its ``train``).
"""

from rtmdet_keras.cli import run_standalone
from rtmdet_keras.tensorflow_startup import tensorflow_start_filtered

# The command's modules import TensorFlow: its start-up lines stay out of the output, as in `rtmdet train`.
with tensorflow_start_filtered():
    from rtmdet_keras.commands.train import train_command
    from rtmdet_keras.training.run import default_work_dir, make_strategy, train

__all__ = ["default_work_dir", "make_strategy", "train", "train_command"]

if __name__ == "__main__":
    run_standalone(train_command, "python -m rtmdet_keras.train")
