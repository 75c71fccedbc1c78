"""The RTMDet model family: CSPNeXt or MobileNetV4-Conv-S backbone, CSPNeXtPAFPN, RTMDetSepBNHead.

``build_model(cfg)`` builds the Keras 3 network; ``build_model(cfg, framework="tf_keras")`` (or
``build_twin``) its tf_keras twin for QAT, and ``transfer_weights(src, dst)`` copies weights between
the two by layer name. ``python -m rtmdet_keras.models --config tiny`` prints parameters and GFLOPs
per part.
"""

from rtmdet_keras.models.layers import HardSigmoid, InputNormalization, NearestUpsample
from rtmdet_keras.models.rtmdet import build_model, model_metadata, output_names
from rtmdet_keras.models.twin import build_twin, tf_keras_custom_objects, transfer_weights

__all__ = [
    "build_model", "build_twin", "model_metadata", "output_names", "transfer_weights", "tf_keras_custom_objects",
    "InputNormalization", "NearestUpsample", "HardSigmoid",
]
