"""int16x8 export (16-bit activations, 8-bit weights): int16 from input to outputs, int8 weights, closer to
the Keras network than int8, and run by the evaluation's TFLite runner like any other export."""

import json

import numpy as np
import pytest

from rtmdet_keras.config import load_config
from rtmdet_keras.export.mcu import bias_scale_problems, graph_summary
from tests.export.export_check import compare_keras_tflite, standin_network, synthetic_images

SIZE = 64


@pytest.mark.slow
def test_int16x8_export_is_16_bit_and_more_accurate_than_int8(tmp_path):
    from rtmdet_keras.export.convert import export_tflite
    from rtmdet_keras.runtime.runners import load_model_runner
    from rtmdet_keras.models import build_model
    from tests.models.helpers import randomize_weights

    cfg = load_config("nano", [f"imgsz={SIZE}", "num_classes=2", "class_names=[circle, square]"])
    network = build_model(cfg)
    randomize_weights(network, seed=3)
    images = synthetic_images(10, (SIZE, SIZE))
    paths = export_tflite(network, cfg, tmp_path, formats=("int8", "int16x8"), calib_dataset=images[:6],
                          check=False, saved_model=False, print_fn=lambda *a: None)
    assert paths["int16x8"].name == "nano_int16x8.tflite"

    summary = graph_summary(paths["int16x8"])
    tensors = summary["tensors"]
    assert all(tensors[i]["dtype"] == "int16" for i in summary["graph_inputs"] + summary["graph_outputs"])
    for op in summary["ops"]:
        assert op["outputs"] == ["int16"] * len(op["outputs"]), op
        if op["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            assert op["inputs"][:3] == [("int16", False), ("int8", True), ("int64", True)], op

    r16 = compare_keras_tflite(network, paths["int16x8"], images[6:])
    r8 = compare_keras_tflite(network, paths["int8"], images[6:])
    # The input is symmetric int16 over the calibrated 0-255: scale 255/32767.
    assert r16["input"]["dtype"] == np.int16
    np.testing.assert_allclose(r16["input"]["quantization"][0], 255 / 32767, rtol=1e-4)
    assert r16["input"]["quantization"][1] == 0
    # Weights are int8 in both, so weight rounding bounds both; the 16-bit activations must not lose accuracy.
    err16 = max(v["max"] for v in r16["outputs"].values())
    err8 = max(v["max"] for v in r8["outputs"].values())
    assert err16 <= err8, (err16, err8)
    assert r16["box_max"] < 0.5  # pixels
    assert bias_scale_problems(paths["int16x8"]) == []  # every conv has a bias of its own

    runner = load_model_runner(cfg, paths["int16x8"])  # what `rtmdet evaluate --tflite` uses
    out = runner(images[6:8])
    assert set(out) == {f"{k}_p{i}" for k in ("cls", "reg") for i in (3, 4, 5)}
    assert out["cls_p3"].shape == (2, SIZE // 8, SIZE // 8, 2) and out["cls_p3"].dtype == np.float32


@pytest.mark.slow
def test_a_bias_quantised_for_another_convolution_is_reported(tmp_path):
    """The stand-in network's head convs of every level start with the same bias; TFLite merges the equal
    constants and its int16x8 quantiser gives the shared tensor the first conv's scale (int8 copies it
    per conv). The check must name exactly the convs whose outputs are then wrong."""
    from rtmdet_keras.export.convert import export_tflite

    cfg = load_config("nano", [f"imgsz={SIZE}", "num_classes=2"])
    network = standin_network((SIZE, SIZE), num_classes=2)
    images = synthetic_images(8, (SIZE, SIZE))
    paths = export_tflite(network, cfg, tmp_path, formats=("int8", "int16x8"), calib_dataset=images[:6],
                          check=False, saved_model=False, print_fn=lambda *a: None)
    flagged = bias_scale_problems(paths["int16x8"])
    errors = compare_keras_tflite(network, paths["int16x8"], images[6:])["outputs"]
    wrong = {name for name, e in errors.items() if e["max"] > 0.1}
    assert wrong, errors  # the defect shows on this network
    assert {name for name in errors if any(f"-> {name}:" in p for p in flagged)} == wrong, (flagged, errors)
    assert bias_scale_problems(paths["int8"]) == []
    meta = json.loads(paths["int16x8"].with_suffix(".json").read_text())
    assert meta["problems"] == flagged
