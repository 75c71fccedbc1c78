"""The RTMDet model family: CSPNeXt or MobileNetV4-Conv-S backbone, CSPNeXtPAFPN, RTMDetSepBNHead.

``build_model(cfg)`` builds the Keras 3 network; ``build_model(cfg, framework="tf_keras")`` (or
``build_twin``) its tf_keras twin for QAT, and ``transfer_weights(src, dst)`` copies weights between
the two by layer name. ``python -m rtmdet_keras.models --config tiny`` prints parameters and GFLOPs
per part.
"""

import sys

if sys.argv[:1] == ["-m"]:
    # `python -m rtmdet_keras.models`: runpy imports this package, and Keras with it, before __main__.py runs,
    # so TensorFlow's start-up lines are filtered here. (sys.argv[0] is "-m" only while runpy finds the module.)
    from rtmdet_keras.tensorflow_startup import import_tensorflow_quietly

    import_tensorflow_quietly()

from rtmdet_keras.models.layers import HardSigmoid, InputNormalization, NearestUpsample  # noqa: E402
from rtmdet_keras.models.rtmdet import build_model, build_twin, model_metadata, output_names  # noqa: E402
from rtmdet_keras.models.twin import tf_keras_custom_objects, transfer_weights  # noqa: E402

__all__ = [
    "build_model", "build_twin", "model_metadata", "output_names", "transfer_weights", "tf_keras_custom_objects",
    "InputNormalization", "NearestUpsample", "HardSigmoid",
]
