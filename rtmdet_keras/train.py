"""``python -m rtmdet_keras.train --config nano.yaml --cfg-options ...``: the ``train`` command
(:mod:`rtmdet_keras.commands.train`; the run: :func:`rtmdet_keras.training.run.train`)."""

from rtmdet_keras.cli import run_standalone
from rtmdet_keras.tensorflow_startup import tensorflow_start_filtered

if __name__ == "__main__":
    with tensorflow_start_filtered():  # no C++ start-up lines if anything imports TensorFlow here
        from rtmdet_keras.commands.train import train_command
    run_standalone(train_command, "python -m rtmdet_keras.train")
