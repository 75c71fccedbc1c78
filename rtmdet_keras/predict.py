"""``python -m rtmdet_keras.predict``: the ``predict`` command (:mod:`rtmdet_keras.commands.predict`; the
library: :mod:`rtmdet_keras.runtime.predict`)."""

from rtmdet_keras.cli import run_standalone
from rtmdet_keras.tensorflow_startup import tensorflow_start_filtered

if __name__ == "__main__":
    with tensorflow_start_filtered():  # the command's modules import TensorFlow: no C++ start-up lines
        from rtmdet_keras.commands.predict import predict_command
    run_standalone(predict_command, "python -m rtmdet_keras.predict")
