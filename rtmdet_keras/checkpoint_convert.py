"""``python -m rtmdet_keras.checkpoint_convert IN.pth OUT.npz --config tiny`` (``rtmdet convert-checkpoint``).

The command is :mod:`rtmdet_keras.commands.convert`; loading and converting checkpoints is
:mod:`rtmdet_keras.models.pretrained`.
"""

if __name__ == "__main__":
    from rtmdet_keras.tensorflow_startup import import_tensorflow_quietly

    import_tensorflow_quietly()  # the command's modules import Keras: without TensorFlow's start-up lines

    from rtmdet_keras.cli import run_standalone
    from rtmdet_keras.commands.convert import convert_command

    run_standalone(convert_command, "python -m rtmdet_keras.checkpoint_convert")
