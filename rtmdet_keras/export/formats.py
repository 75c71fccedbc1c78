"""What an export can produce: the TFLite formats and the int8 calibrators.

No TensorFlow here: the export command's options read these before anything heavy is loaded.
"""

DEFAULT_FORMATS = ("float32", "float16", "int8")  # --all
# int16x8: 16-bit activations, 8-bit weights (TFLite's EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8),
# run by LiteRT, TFLite Micro and Ethos-U; on request only (the reference-kernel calibration is slower).
FORMATS = DEFAULT_FORMATS + ("int16x8",)
INTEGER_FORMATS = ("int8", "int16x8")  # calibrated, fully integer; --c-array writes these as C arrays
CALIBRATORS = ("fast", "tflite")  # int8 activation ranges: XNNPACK kernels, or TFLite's own calibrator
DEFAULT_CALIBRATOR = "fast"
