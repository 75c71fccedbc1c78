"""QAT: range calibration, observer and BatchNorm freezing, every layer quantised, one short QAT run whose
full-int8 export tracks the fake-quant model.

Everything that imports tensorflow_model_optimization runs in one subprocess (``_worker``): importing
tfmot sets ``TF_USE_LEGACY_KERAS=1``, which would make ``tf.keras`` tf_keras for the rest of this pytest
process. The worker writes its measurements to a JSON file; the tests check them against numbers
worked out here (NumPy) or against the .tflite read by hand.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# The worker (runs in a subprocess)
# ---------------------------------------------------------------------------------------------


def _cfg_options(data_root, *extra):
    # 24 training images, batch 8: 3 steps; observers frozen from step 1, BatchNorm from step 2.
    return [f"data_root={data_root}", "num_classes=2", "imgsz=64", "batch_size=8", "export.calib_images=16",
            "qat.epochs=1", *extra]


def _cfg(data_root, *extra):
    from rtmdet_keras import load_config

    return load_config("nano", _cfg_options(data_root, *extra))


def _checks_without_training(net, control, images):
    """Calibration, observe/frozen modes and BatchNorm freezing on a QAT network."""
    import tensorflow as tf

    from rtmdet_keras.qat import configs as qc
    from rtmdet_keras.qat.network import calibrate_ranges, refresh_weight_ranges

    norm = net.get_layer("quant_normalize")
    rng = lambda: [float(norm._output_quantizer_vars[k].numpy()) for k in ("min_var", "max_var")]  # noqa: E731
    out = {}
    calibrate_ranges(net, control, images, batch_size=len(images) // 2)
    out["calibrated"] = rng()
    out["after_calibration"] = control.state()
    x = tf.constant(images[:4], tf.float32)
    net(x, training=True)  # observe: one moving-average step
    out["after_observe"] = rng()
    control.observer_mode.assign(qc.FROZEN)
    net(tf.constant(images[4:8], tf.float32), training=True)
    out["after_frozen"] = rng()

    bn = net.get_layer("quant_backbone.stem.1.bn").layer
    refresh_weight_ranges(net)
    mean0 = bn.moving_mean.numpy().copy()
    control.bn_frozen.assign(True)
    train_out = net(x, training=True)
    infer_out = net(x, training=False)
    out["bn_frozen_mean_change"] = float(np.abs(bn.moving_mean.numpy() - mean0).max())
    out["bn_frozen_train_vs_infer"] = max(float(np.abs(np.asarray(train_out[k]) - np.asarray(infer_out[k])).max())
                                          for k in train_out)
    control.bn_frozen.assign(False)
    net(x, training=True)
    out["bn_live_mean_change"] = float(np.abs(bn.moving_mean.numpy() - mean0).max())
    return out


def _worker(data_root, work_dir, out_json):
    import time

    start = time.time()
    sys.path.insert(0, str(REPO))
    import keras

    from rtmdet_keras.data import load_split
    from rtmdet_keras.export.calibration import dataset_images
    from rtmdet_keras.models import build_model
    from tests.export.export_check import compare_keras_tflite
    from tests.models.helpers import randomize_weights, small_cfg

    work_dir = Path(work_dir)
    cfg = _cfg(data_root)
    keras.utils.set_random_seed(0)
    float_net = build_model(cfg)
    randomize_weights(float_net, seed=0)  # O(1) activations: ranges and biases that mean something
    images = dataset_images(load_split(cfg, "train"), cfg, 16, shuffle=False)
    # The float model arrives as SSCMA leaves it: its weights saved in SSCMA's (mmyolo) layout as
    # work_dirs/<SSCMA config>/epoch_50, converted to .npz (CI has no torch) and given under SSCMA's config
    # name; so this run is also the seed's QAT command on an SSCMA checkpoint (test_qat_on_an_sscma_checkpoint).
    from rtmdet_keras import load_config
    from rtmdet_keras.models.pretrained import convert_checkpoint
    from tests.models.test_sscma_checkpoint import sscma_state_dict_of

    lines = []
    sscma = "rtmdet_nano_8xb32_300e_coco"
    qat_cfg = load_config(f"configs/{sscma}.py", _cfg_options(data_root), print_fn=lines.append)
    float_path = work_dir / "work_dirs" / sscma / "epoch_50.npz"
    float_path.parent.mkdir(parents=True)
    convert_checkpoint({"state_dict": sscma_state_dict_of(float_net, sscma), "meta": {}}, float_path, qat_cfg,
                       print_fn=lines.append)
    del float_net

    from rtmdet_keras.qat.fit import QATDetector, build_qat_optimizer, restore_qat_state
    from rtmdet_keras.qat.network import build_qat_network, load_qat_network, refresh_weight_ranges
    from rtmdet_keras.qat.plan import quantization_plan
    from rtmdet_keras.qat.run import qat

    result = {}
    # With the baselines, as the command runs by default: the float model and its PTQ export run after tfmot is
    # imported (the imports above), which switches tf.keras to tf_keras for the rest of the process.
    summary = qat(qat_cfg, float_path, work_dir=work_dir / "qat", verbose=0, print_fn=lines.append)
    result["log"] = [str(line) for line in lines]
    result["summary"] = {k: v for k, v in summary.items() if k != "table"}

    # save_weights + rebuild: the QAT model comes back from best_qat.weights.h5 alone.
    net, control = load_qat_network(cfg, work_dir / "qat" / "best_qat.weights.h5")
    refresh_weight_ranges(net)
    plan = quantization_plan(net)
    result["plan_problems"] = [r for r in plan if not r["ok"]]
    result["plan_outputs"] = sorted({r["output"].split(":")[0] for r in plan})
    result["depthwise"] = [r["weights"] for r in plan if r["type"] == "DepthwiseConv2D"]
    val = load_split(cfg, "val")
    check = dataset_images(val, cfg, 8, shuffle=False)
    cmp = compare_keras_tflite(net, summary["paths"]["qat_int8"], check)
    result["steps"] = {k: v["steps"] for k, v in cmp["outputs"].items()}
    import tensorflow as tf

    keras_out = {k: np.asarray(v) for k, v in net(tf.constant(check, tf.float32), training=False).items()}
    from tests.export.export_check import run_tflite_by_hand

    tfl, quant, _ = run_tflite_by_hand(summary["paths"]["qat_int8"], check)
    result["mean_steps"] = {k: float(np.mean(np.abs(keras_out[k] - tfl[k])) / quant[k][0]) for k in tfl}

    # Resume: the epoch checkpoint (written after the same epoch as the best weights) restores the same
    # weights, quantiser ranges and BatchNorm statistics, and the optimiser step.
    before = [w.numpy().copy() for w in net.weights]
    for w in net.weights:
        w.assign(np.zeros(w.shape, w.dtype.as_numpy_dtype))
    detector = QATDetector(net, cfg)
    optimizer = build_qat_optimizer(cfg, detector, 3)
    meta = restore_qat_state(work_dir / "qat" / "epoch_1.ckpt.npz", net, optimizer, detector.trainable_variables)
    refresh_weight_ranges(net)
    result["resume"] = {"epoch": meta["epoch"], "iterations": int(optimizer.iterations.numpy()),
                        "weights_equal": all(np.array_equal(a, b.numpy()) for a, b in zip(before, net.weights))}
    result.update(_checks_without_training(net, control, images))

    # Another preset: SiLU, channel attention (HardSigmoid, Multiply), shared head convs un-shared.
    tiny_net, _ = build_qat_network(small_cfg("tiny"), build_model(small_cfg("tiny")))
    tiny_plan = quantization_plan(tiny_net)
    result["tiny_problems"] = [r for r in tiny_plan if not r["ok"]]
    result["tiny_types"] = sorted({r["type"] for r in tiny_plan})
    result["seconds"] = time.time() - start
    Path(out_json).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qat_run(demo_dataset, tmp_path_factory):
    work = tmp_path_factory.mktemp("qat")
    out = work / "result.json"
    code = f"import tests.qat.test_qat as t; t._worker({str(demo_dataset)!r}, {str(work)!r}, {str(out)!r})"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"QAT worker failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    result = json.loads(out.read_text())
    result["stdout"] = proc.stdout
    return work, result


@pytest.mark.slow
def test_qat_on_an_sscma_checkpoint(qat_run):
    """The seed's QAT step on SSCMA's output: its config name and its (converted) epoch_50 checkpoint."""
    work, r = qat_run
    log = "\n".join(r["log"])
    assert "SSCMA's config name; using preset nano" in log
    assert "SSCMA/mmyolo layout" in log  # the conversion
    assert "converted from an SSCMA/mmyolo-layout checkpoint" in r["stdout"]  # qat's load of the .npz
    assert (work / "qat" / "best_qat.weights.h5").is_file()
    assert r["summary"]["steps"] == 3
    # The default baselines: the float model and its post-training-quantised export, scored like the QAT model.
    metrics = r["summary"]["metrics"]
    assert list(metrics) == ["float Keras", "int8 PTQ", "QAT fake-quant Keras", "int8 QAT"]
    assert all(0.0 <= m["bbox_mAP"] <= 1.0 for m in metrics.values())
    ptq = Path(r["summary"]["paths"]["ptq_int8"])
    assert ptq.is_file() and json.loads(ptq.with_suffix(".json").read_text())["problems"] == []


@pytest.mark.slow
def test_calibration_sets_the_mean_of_batch_ranges(qat_run, demo_dataset):
    from rtmdet_keras.export.calibration import dataset_images
    from rtmdet_keras.data import load_split

    _, r = qat_run
    cfg = _cfg(demo_dataset)
    images = dataset_images(load_split(cfg, "train"), cfg, 16, shuffle=False).astype(np.float64)
    # InputNormalization of nano is x / 255; its output range per batch of 8, averaged over the 2 batches,
    # with 0 always inside the range (tfmot keeps min <= 0 <= max).
    halves = images[:8] / 255.0, images[8:] / 255.0
    want_min = np.mean([min(h.min(), 0.0) for h in halves])
    want_max = np.mean([max(h.max(), 0.0) for h in halves])
    np.testing.assert_allclose(r["calibrated"], [want_min, want_max], rtol=1e-5, atol=1e-7)
    assert r["after_calibration"] == {"observer_mode": 0, "bn_frozen": False}


@pytest.mark.slow
def test_observers_move_by_the_moving_average_then_freeze(qat_run, demo_dataset):
    from rtmdet_keras.export.calibration import dataset_images
    from rtmdet_keras.data import load_split

    _, r = qat_run
    cfg = _cfg(demo_dataset)
    batch = dataset_images(load_split(cfg, "train"), cfg, 16, shuffle=False)[:4].astype(np.float64) / 255.0
    lo, hi = r["calibrated"]
    # tfmot's moving average: range <- 0.999 * range + 0.001 * batch range.
    want = [0.999 * lo + 0.001 * min(batch.min(), 0.0), 0.999 * hi + 0.001 * max(batch.max(), 0.0)]
    np.testing.assert_allclose(r["after_observe"], want, rtol=1e-5, atol=1e-7)
    assert r["after_frozen"] == r["after_observe"]


@pytest.mark.slow
def test_frozen_batchnorm_runs_in_inference_mode(qat_run):
    _, r = qat_run
    assert r["bn_frozen_mean_change"] == 0.0
    assert r["bn_frozen_train_vs_infer"] == 0.0
    assert r["bn_live_mean_change"] > 1e-4  # momentum 0.9: training mode moves the statistics


@pytest.mark.slow
def test_every_layer_is_quantised(qat_run):
    _, r = qat_run
    assert r["plan_problems"] == [] and r["tiny_problems"] == []
    # Depthwise kernels get one range per channel (tfmot's default would give one for all).
    assert r["depthwise"] and all("per channel" in w for w in r["depthwise"])
    # tiny brings SiLU and channel attention; all of them are covered.
    assert {"Activation", "HardSigmoid", "Multiply", "GlobalAveragePooling2D", "NearestUpsample",
            "InputNormalization", "DepthwiseConv2D", "BatchNormalization"} <= set(r["tiny_types"])


@pytest.mark.slow
def test_qat_run_writes_resumable_state_and_freezes_on_schedule(qat_run):
    work, r = qat_run
    qat_dir = work / "qat"
    for name in ("config.yaml", "quantization_plan.txt", "epoch_1.ckpt.npz", "last_checkpoint", "best_qat.weights.h5",
                 "nano_qat_int8.tflite", "nano_qat_int8.json", "nano_qat_int8_ops.txt", "qat_summary.json"):
        assert (qat_dir / name).exists(), name
    assert list((qat_dir / "tensorboard").rglob("events.out.tfevents*"))
    log = "\n".join(r["log"])
    assert "activation ranges (observers) frozen from step 1" in log
    assert "BatchNorm statistics frozen from step 2" in log
    assert r["summary"]["steps"] == 3 and r["summary"]["best_epoch"] == 1
    assert set(r["summary"]["metrics"]) == {"float Keras", "int8 PTQ", "QAT fake-quant Keras", "int8 QAT"}
    assert r["resume"] == {"epoch": 1, "iterations": 3, "weights_equal": True}


@pytest.mark.slow
def test_exported_model_is_all_int8_and_tracks_the_fake_quant_model(qat_run):
    from rtmdet_keras.export.mcu import int8_graph_problems

    work, r = qat_run
    path = work / "qat" / "nano_qat_int8.tflite"
    assert int8_graph_problems(path, "int8") == []
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["input"]["quantization"] == {"scale": 1.0, "zero_point": -128}  # the fixed 0..255 input range
    assert meta["problems"] == []
    # Same graph, same ranges: the int8 outputs are the fake-quant ones up to a few rounding steps.
    assert max(r["steps"].values()) <= 6.0, r["steps"]
    assert max(r["mean_steps"].values()) <= 1.5, r["mean_steps"]


def test_importing_qat_does_not_import_tfmot():
    code = ("import sys, rtmdet_keras.qat, rtmdet_keras.cli; "
            "assert 'tensorflow_model_optimization' not in sys.modules; "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_max_epochs_on_the_command_line_means_qat_epochs():
    from rtmdet_keras import load_config
    from rtmdet_keras.qat.settings import qat_epochs_from_options

    opts = ["max_epochs=7"]
    cfg = load_config("nano", opts)
    qat_epochs_from_options(cfg, opts)
    assert cfg.qat.epochs == 7
    opts = ["epochs=6"]  # the alias SSCMA's tutorial uses
    cfg = load_config("nano", opts)
    qat_epochs_from_options(cfg, opts)
    assert cfg.qat.epochs == 6
    cfg = load_config("nano")  # the preset's max_epochs (300) is the training run's, not QAT's
    qat_epochs_from_options(cfg, [])
    assert cfg.qat.epochs == 5
    opts = ["max_epochs=7", "qat.epochs=2"]  # explicit qat.epochs wins
    cfg = load_config("nano", opts)
    qat_epochs_from_options(cfg, opts)
    assert cfg.qat.epochs == 2
