"""``python -m rtmdet_keras.export``: the ``export`` command (:mod:`rtmdet_keras.commands.export`)."""

from rtmdet_keras.cli import run_standalone
from rtmdet_keras.tensorflow_startup import tensorflow_start_filtered

if __name__ == "__main__":
    with tensorflow_start_filtered():  # the command's modules import TensorFlow: no C++ start-up lines
        from rtmdet_keras.commands.export import export_command
    run_standalone(export_command, "python -m rtmdet_keras.export")
