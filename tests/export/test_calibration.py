"""Fast int8 calibration: the ranges equal a hand computation with TFLite's reference kernels, the
int8 model equals the one TFLite's own calibrator gives, and the converter really uses it."""

import numpy as np
import pytest

from rtmdet_keras.config import load_config
from rtmdet_keras.export import calibration
from rtmdet_keras.export.calibration import (
    calibrated_tensors, collect_ranges, fast_calibration, pin_input_range, read_ranges, write_ranges,
)
from rtmdet_keras.export.convert import TFLITE_SIGNATURE, convert_saved_model, write_saved_model
from tests.export.export_check import standin_network, synthetic_images

SIZE = 64
FLT_MIN = float(np.finfo(np.float32).tiny)


@pytest.fixture(scope="module")
def tiny_float_model():
    """A float .tflite without weights: x -> relu(x - 100) and -(x * x) - 1 (negative everywhere)."""
    import tensorflow as tf

    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.float32, name="x")])
    def f(x):
        return {"pos": tf.nn.relu(x - 100.0) + x * 0.5, "neg": -(x * x) - 1.0}

    module.f = f
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], module)
    return conv.convert()


def _ranges_by_hand(model_content, samples):
    """Min/max of every calibrated tensor over ``samples`` with TFLite's reference kernels (no
    delegate, every tensor kept), in NumPy, starting from TFLite's FLT_MAX / FLT_MIN."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=model_content, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    idx = it.get_input_details()[0]["index"]
    values = {i: [] for i in calibrated_tensors(model_content)}
    for x in samples:
        it.set_tensor(idx, x)
        it.invoke()
        for i in values:
            values[i].append(it.get_tensor(i).copy())
    return {i: (min(float(np.min(v)), float(np.finfo(np.float32).max)), max(float(np.max(v)), FLT_MIN))
            for i, v in values.items()}


def test_ranges_equal_a_hand_computation(tiny_float_model):
    rng = np.random.default_rng(0)
    samples = [rng.uniform(0, 255, (1, 4, 4, 3)).astype(np.float32) for _ in range(5)]
    got = collect_ranges(tiny_float_model, ([x] for x in samples))
    want = _ranges_by_hand(tiny_float_model, samples)
    assert set(got) == set(want) and len(got) >= 4  # input, two outputs, intermediates
    for i in want:
        np.testing.assert_allclose(got[i], want[i], rtol=1e-6, atol=1e-30)
    # the input's range is the samples' own; the all-negative output keeps TFLite's max of FLT_MIN
    x = np.stack(samples)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tiny_float_model)
    sig = it.get_signature_runner().get_output_details()
    neg = next(d["index"] for n, d in sig.items() if n == "neg")
    assert got[it.get_input_details()[0]["index"]] == (float(x.min()), float(x.max()))
    assert got[neg][1] == FLT_MIN and got[neg][0] == pytest.approx(float(-(x * x).max() - 1), rel=1e-6)


def test_batches_give_the_ranges_of_single_images(tiny_float_model):
    rng = np.random.default_rng(1)
    samples = rng.uniform(0, 255, (6, 4, 4, 3)).astype(np.float32)
    single = collect_ranges(tiny_float_model, ([x[None]] for x in samples))
    batched = collect_ranges(tiny_float_model, [[samples[:4]], [samples[4:]]])
    assert set(single) == set(batched)
    for i in single:
        np.testing.assert_allclose(batched[i], single[i], rtol=1e-6)


def test_write_and_read_ranges_round_trip(tiny_float_model):
    tensors = calibrated_tensors(tiny_float_model)
    ranges = {i: (-1.5 - i, 2.25 + i) for i in tensors}
    assert read_ranges(tiny_float_model) == {}
    out = write_ranges(tiny_float_model, ranges)
    assert read_ranges(out) == ranges
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=out)  # still a valid model that runs
    it.allocate_tensors()
    it.invoke()


def test_context_restores_the_converter_calibrator():
    from tensorflow.lite.python import lite

    original = lite._calibrator.Calibrator
    with pytest.raises(ZeroDivisionError):
        with fast_calibration() as cls:
            assert lite._calibrator.Calibrator is cls and cls.tflite_calibrator is original
            1 / 0
    assert lite._calibrator.Calibrator is original


@pytest.fixture(scope="module")
def standin_saved_model(tmp_path_factory):
    cfg = load_config("nano", [f"imgsz={SIZE}", "num_classes=2"])
    net = standin_network((SIZE, SIZE), num_classes=2)
    return write_saved_model(net, cfg, tmp_path_factory.mktemp("sm") / "sm", dynamic=False)


def _calibrated_only(saved_model, images, fast):
    """The converter's calibrated float model (``_experimental_calibrate_only``) with either calibrator."""
    import contextlib

    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[TFLITE_SIGNATURE])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None]] for x in images)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv._experimental_calibrate_only = True
    with fast_calibration() if fast else contextlib.nullcontext():
        return conv.convert()


def test_fast_ranges_equal_tflites_calibrator(standin_saved_model):
    images = pin_input_range(synthetic_images(6, (SIZE, SIZE), seed=3)).astype(np.float32)
    ref = read_ranges(_calibrated_only(standin_saved_model, images, fast=False))
    fast = read_ranges(_calibrated_only(standin_saved_model, images, fast=True))
    assert set(fast) == set(ref) and len(ref) > 30
    # Each range including zero (what the quantiser uses) agrees to float rounding. (TFLite's logger
    # can also credit an in-place op's output to its input: the raw minimum of the hard sigmoid's
    # relu6 may differ, never the zero-including range.)
    for i in ref:
        (a, b), (c, d) = ref[i], fast[i]
        width = max(b, 0) - min(a, 0)
        assert abs(min(a, 0) - min(c, 0)) <= 1e-5 * width and abs(max(b, 0) - max(d, 0)) <= 1e-5 * width, i


def test_int8_model_equals_the_slow_paths(standin_saved_model, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    calls = []
    real = calibration.collect_ranges
    monkeypatch.setattr(calibration, "collect_ranges", lambda *a, **k: calls.append(1) or real(*a, **k))
    images = synthetic_images(8, (SIZE, SIZE), seed=4)
    slow = convert_saved_model(standin_saved_model, "int8", images, calibrator="tflite")
    assert not calls
    fast = convert_saved_model(standin_saved_model, "int8", images, calibrator="fast")
    assert calls == [1]  # the converter calibrated through FastCalibrator
    a, b = Interpreter(model_content=slow), Interpreter(model_content=fast)
    da, db = a.get_tensor_details(), b.get_tensor_details()
    assert [d["name"] for d in da] == [d["name"] for d in db]
    for ta, tb in zip(da, db):
        qa, qb = ta["quantization_parameters"], tb["quantization_parameters"]
        np.testing.assert_array_equal(qa["zero_points"], qb["zero_points"])
        np.testing.assert_allclose(qa["scales"], qb["scales"], rtol=1e-5)
    test = synthetic_images(3, (SIZE, SIZE), seed=5)
    for it in (a, b):
        it.allocate_tensors()
    for img in test:
        outs = []
        for it in (a, b):
            it.set_tensor(it.get_input_details()[0]["index"], (img[None].astype(np.int16) - 128).astype(np.int8))
            it.invoke()
            outs.append([it.get_tensor(o["index"]).astype(int) for o in it.get_output_details()])
        for x, y in zip(*outs):
            assert np.abs(x - y).max() <= 1  # rounding of a last float bit may move one step
