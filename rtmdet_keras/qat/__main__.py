"""``python -m rtmdet_keras.qat``: the ``qat`` command (:mod:`rtmdet_keras.commands.qat`)."""

from rtmdet_keras.cli import run_standalone
from rtmdet_keras.tensorflow_startup import tensorflow_start_filtered

if __name__ == "__main__":
    with tensorflow_start_filtered():  # the command's modules import TensorFlow and tfmot: no C++ start-up lines
        from rtmdet_keras.commands.qat import qat_command
    run_standalone(qat_command, "python -m rtmdet_keras.qat")
