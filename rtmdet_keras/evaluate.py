"""``python -m rtmdet_keras.evaluate``: the ``evaluate`` command (:mod:`rtmdet_keras.commands.evaluate`; the
library: :mod:`rtmdet_keras.runtime.evaluate`)."""

from rtmdet_keras.cli import run_standalone
from rtmdet_keras.tensorflow_startup import tensorflow_start_filtered

if __name__ == "__main__":
    with tensorflow_start_filtered():  # the command's modules import TensorFlow: no C++ start-up lines
        from rtmdet_keras.commands.evaluate import evaluate_command
    run_standalone(evaluate_command, "python -m rtmdet_keras.evaluate")
