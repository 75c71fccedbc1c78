"""rtmdet_keras: RTMDet object detection in Keras 3, from COCO JSON to int8 TFLite.

The public surface is small: ``load_config``, ``build_model`` and the modules named below. Heavy
imports (TensorFlow, Keras) happen only when a name that needs them is used, so ``load_config``
and the command-line help start fast.
"""

import importlib

from rtmdet_keras.tensorflow_startup import hide_tensorflow_info_logs

# Before anything imports TensorFlow: its C++ INFO and WARNING logs bury the messages that matter to a user.
# The absl start-up lines ignore this setting; the commands filter those (rtmdet_keras/tensorflow_startup.py).
hide_tensorflow_info_logs()

from rtmdet_keras.config import Config, ConfigError, load_config  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "build_model": ("rtmdet_keras.models", "build_model"),
    "train": ("rtmdet_keras.training.run", "train"),
    "export_tflite": ("rtmdet_keras.export.convert", "export_tflite"),
    "evaluate": ("rtmdet_keras.runtime.evaluate", "evaluate"),
    "RTMDetDetector": ("rtmdet_keras.training.detector", "RTMDetDetector"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'rtmdet_keras' has no attribute {name!r}")


__all__ = ["Config", "ConfigError", "load_config", "build_model", "train", "export_tflite", "evaluate",
           "RTMDetDetector", "__version__"]
