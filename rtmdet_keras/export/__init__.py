"""Export a trained network straight from Keras to TFLite (float32, float16, full-integer int8) and a SavedModel.

``python -m rtmdet_keras.export configs/nano.yaml work_dirs/nano/best_coco_bbox_mAP.keras --int8``

No ONNX hop: the functional network is traced as two concrete functions (any batch for the
SavedModel's ``serving_default``; a static ``[1, H, W, 3]`` float32 input for TFLite), written as
one SavedModel and converted with ``tf.lite.TFLiteConverter.from_saved_model``
(``from_concrete_functions`` would leave the variables unfrozen). Int8 is full-integer: int8 weights
and activations, ``TFLITE_BUILTINS_INT8`` only (no float fallback), int8 (or uint8) input, int8
outputs, calibrated on ``cfg.export.calib_images`` training images passed through the *evaluation*
transform (keep-ratio letterbox, pad 114 bottom/right). ``int16x8`` (``--int16x8``, on request) is
calibrated the same way with 16-bit activations (int16 input and outputs, symmetric) and 8-bit weights.
``--c-array`` also writes each integer model as ``<stem>.cc``/``.h`` (:mod:`rtmdet_keras.export.c_array`). The
BGR presets' channel reversal is folded into the stem convolution (:mod:`rtmdet_keras.models.channel_fold`),
so no GATHER reaches the graph. The activation ranges are recorded with
XNNPACK kernels (:mod:`rtmdet_keras.export.calibration`, several times faster than TFLite's calibrator with
its reference kernels; ``--calibrator tflite`` uses that one).

Input contract (every format)
    ``images [1, H, W, 3]``: the raw letterboxed RGB image, 0-255 (H, W = ``cfg.imgsz``). Channel
    reordering and ``(x - mean) / std`` happen inside the model. Int8 models take ``q = pixel - 128``
    (scale 1, zero point -128; the calibration pins the input range to exactly 0-255), uint8 models the
    pixel itself (scale 1, zero point 0), so the quantisation of the input is lossless.

Output layout (``layout="logits"``, the default; chosen by measurement, see docs/benchmarks.md)
    Per level ``pX`` (stride ``s = 2**X``; grid ``h = ceil(H/s)``, ``w = ceil(W/s)``):

    * ``cls_pX [1, h, w, C]``: class logits; ``score = sigmoid(logit)``;
    * ``reg_pX [1, h, w, 4]``: ``(left, top, right, bottom)`` distances in units of the stride
      (``exp(reg)`` first when ``exp_on_reg``).

    Decoding: the prior of cell ``(i, j)`` (row, column) is the point ``(px, py) = (j * s, i * s)``
    pixels; ``d = reg * s``; box ``= (px - d_l, py - d_t, px + d_r, py + d_b)`` xyxy pixels of the
    letterboxed input; then class-aware NMS (``cfg.test``) and division by the letterbox scale to get
    original-image pixels. These are the Keras network's own outputs, so
    :func:`rtmdet_keras.postprocess.decode_and_nms` decodes the TFLite model unchanged.

    Why this layout: an int8 tensor has 256 steps over its calibrated range. Per-level distances in
    stride units span a few units (a fraction of a pixel per step at P3), while one tensor of decoded
    pixel boxes spans the whole image (2.5 px per step at 640 px, for small and large boxes alike). An
    in-graph sigmoid (``layout="scores"``) cannot add precision: LOGISTIC reads the same int8 logits
    and then rounds the score to 1/256, which also zeroes every score below 1/512 (the evaluation keeps
    scores down to 0.001). ``scripts/benchmark.py export --layouts`` measures all three; the figures
    are in docs/benchmarks.md.

    ``layout="scores"``: ``scores_pX = sigmoid(logits)`` in [0, 1] and ``reg_pX`` as above.
    ``layout="decoded"``: ``scores [1, P, C]`` (sigmoid) and ``boxes [1, P, 4]`` xyxy pixels, priors in
    :func:`rtmdet_keras.boxes.make_priors` order. Both exist to be measured against the default.

Beside each ``<name>_<format>.tflite`` the export writes ``<name>_<format>.json`` (class names, input
contract and quantisation, output layout with quantisation and the decode recipe, strides,
``exp_on_reg``, the op report and the self-check) and ``<name>_<format>_ops.txt`` (the op table).
After converting it runs each model on a few validation images and prints how far its scores, boxes
and NMS'd detections are from the Keras network's.

The modules: :mod:`~rtmdet_keras.export.convert` (:func:`~rtmdet_keras.export.convert.export_tflite`,
the SavedModel and the conversion), :mod:`~rtmdet_keras.export.calibration` (calibration images and the
fast calibrator), :mod:`~rtmdet_keras.export.metadata` (the JSON), :mod:`~rtmdet_keras.export.check`
(the self-check), :mod:`~rtmdet_keras.export.mcu`, :mod:`~rtmdet_keras.export.c_array` and
:mod:`~rtmdet_keras.export.vela` (the MCU report); the output layouts both the exporter and the runtime
read: :mod:`rtmdet_keras.runtime.layout`. The command: :mod:`rtmdet_keras.commands.export`.
"""
