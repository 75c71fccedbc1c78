"""Export to TFLite: float32 matches Keras, int8 is full-integer and within a few quantisation steps,
the graph holds only MCU/NPU ops, metadata and op report are written, bad inputs give clear errors."""

import json
import os
import shutil

import numpy as np
import pytest

from rtmdet_keras.config import load_config
from rtmdet_keras.export.calibration import pin_input_range
from rtmdet_keras.export.convert import export_outputs, export_tflite
from rtmdet_keras.export.mcu import MCU_INT8_OPS, graph_summary, int8_graph_problems, op_report
from rtmdet_keras.runtime.layout import ExportError, layout_to_network_outputs
from rtmdet_keras.runtime.loading import check_network_matches_config
from rtmdet_keras.runtime.tflite import TFLiteDetector, TFLiteModelError
from tests.export.export_check import (
    ALLOWED_INT8_OPS, EDGE_OPS, compare_keras_tflite, run_tflite_by_hand, standin_network, synthetic_images,
)

SIZE = 64


@pytest.fixture(scope="module")
def cfg():
    return load_config("nano", [f"imgsz={SIZE}", "num_classes=2", "class_names=[circle, square]"])


@pytest.fixture(scope="module")
def network():
    return standin_network((SIZE, SIZE), num_classes=2)


@pytest.fixture(scope="module")
def images():
    return synthetic_images(12, (SIZE, SIZE))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, network, cfg, images):
    out = tmp_path_factory.mktemp("export")
    paths = export_tflite(network, cfg, out, formats=("float32", "int8"), calib_dataset=images[:8],
                          check_dataset=images[8:10], saved_model=True, print_fn=lambda *a: None)
    return paths


def test_files_and_names(exported):
    assert exported["float32"].name == "nano_float32.tflite"
    assert exported["int8"].name == "nano_int8.tflite"
    assert (exported["saved_model"] / "saved_model.pb").exists()
    for fmt in ("float32", "int8"):
        assert exported[fmt].with_suffix(".json").exists()
        assert (exported[fmt].parent / f"nano_{fmt}_ops.txt").exists()


def test_float32_matches_keras(exported, network, images):
    r = compare_keras_tflite(network, exported["float32"], images[10:12])
    assert max(v["max"] for v in r["outputs"].values()) < 1e-4
    assert r["box_max"] < 1e-3  # pixels


def test_int8_is_full_integer_with_only_mcu_ops(exported):
    summary = graph_summary(exported["int8"])
    ops = {op["op"] for op in summary["ops"]}
    assert ops <= ALLOWED_INT8_OPS | EDGE_OPS, ops - ALLOWED_INT8_OPS
    assert ALLOWED_INT8_OPS <= set(MCU_INT8_OPS)
    assert int8_graph_problems(summary, "int8") == []
    for op in summary["ops"]:
        assert op["outputs"] == ["int8"] * len(op["outputs"]), op
        for (dtype, const), _ in zip(op["inputs"], op["input_ids"]):
            assert dtype == "int8" or (const and dtype == "int32"), op
        if op["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            assert op["inputs"][1] == ("int8", True) and op["inputs"][2] == ("int32", True)  # weights, bias
    tensors = summary["tensors"]
    (inp,) = summary["graph_inputs"]
    assert tensors[inp]["shape"] == [1, SIZE, SIZE, 3] and tensors[inp]["dtype"] == "int8"
    assert all(tensors[o]["dtype"] == "int8" for o in summary["graph_outputs"])
    assert all(-1 not in t["shape_signature"] for t in tensors.values())


def test_int8_input_is_the_raw_pixel_minus_128_and_outputs_within_a_few_steps(exported, network, images):
    r = compare_keras_tflite(network, exported["int8"], images[10:12])
    s, z = r["input"]["quantization"]
    assert (s, z) == (1.0, -128)  # lossless: q = pixel - 128
    for name, e in r["outputs"].items():
        assert e["steps"] is not None and e["steps"] <= 3.0, (name, e)
    assert r["score_max"] < 0.01
    assert r["box_max"] < 1.0  # pixels at 64 px


def test_runner_returns_the_network_contract(exported, network, cfg, images):
    det = TFLiteDetector(exported["int8"], num_threads=2, cfg=cfg)
    out = det(images[10:12], cfg)
    by_hand, quant, _ = run_tflite_by_hand(exported["int8"], images[10:12])
    assert sorted(out) == sorted(network.output_names if hasattr(network, "output_names") else out)
    for k, v in out.items():
        assert v.shape == by_hand[k].shape and v.dtype == np.float32
        np.testing.assert_array_equal(v, by_hand[k])
    assert det.imgsz == (SIZE, SIZE) and det.num_classes == 2 and det.layout == "logits"


def test_metadata_describes_input_outputs_and_decoding(exported, cfg):
    meta = json.loads(exported["int8"].with_suffix(".json").read_text())
    assert meta["class_names"] == ["circle", "square"]
    assert meta["imgsz"] == [SIZE, SIZE]
    assert meta["input"]["dtype"] == "int8" and meta["input"]["quantization"] == {"scale": 1.0, "zero_point": -128}
    assert meta["input"]["channel_order"] == "rgb" and meta["input"]["pad_value"] == 114
    assert meta["layout"] == "logits"
    assert meta["decode"]["strides"] == [8, 16, 32] and meta["decode"]["exp_on_reg"] is False
    outs = {o["name"]: o for o in meta["outputs"]}
    assert outs["cls_p3"]["shape"] == [1, 8, 8, 2] and outs["reg_p5"]["shape"] == [1, 2, 2, 4]
    assert outs["reg_p4"]["stride"] == 16 and outs["reg_p4"]["quantization"]["scale"] > 0
    assert meta["problems"] == []
    assert sum(r["count"] for r in meta["ops"]) == len(graph_summary(exported["int8"])["ops"])
    check = meta["check"]
    assert check["images"] == 2 and check["score_max"] < 0.01
    table = (exported["int8"].parent / "nano_int8_ops.txt").read_text()
    assert "CONV_2D" in table and "int8, const int8, const int32" in table


def test_saved_model_gives_the_keras_outputs(exported, network, cfg, images):
    from rtmdet_keras.runtime.runners import SavedModelRunner

    runner = SavedModelRunner(exported["saved_model"], cfg)
    assert runner.batch is None  # dynamic batch, unlike the .tflite
    got = runner(images[:3])
    want = {k: np.asarray(v) for k, v in network(images[:3].astype(np.float32), training=False).items()}
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)


def test_uint8_input(tmp_path, network, cfg, images):
    paths = export_tflite(network, cfg, tmp_path, formats=("int8",), calib_dataset=images[:8], int8_input="uint8",
                          saved_model=False, check=False, print_fn=lambda *a: None)
    summary = graph_summary(paths["int8"])
    assert int8_graph_problems(summary, "uint8") == []
    first = summary["ops"][0]
    assert first["op"] == "QUANTIZE" and first["inputs"] == [("uint8", False)] and first["outputs"] == ["int8"]
    r = compare_keras_tflite(network, paths["int8"], images[10:12])
    assert r["input"]["quantization"] == (1.0, 0)
    assert max(e["steps"] for e in r["outputs"].values()) <= 3.0


def test_corrupt_or_foreign_files_give_clear_errors(tmp_path, exported):
    data = exported["int8"].read_bytes()
    cases = {
        "truncated.tflite": data[: len(data) // 3],
        "header_only.tflite": data[:16],
        "text.tflite": b"this is not a model\n",
        "empty.tflite": b"",
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(TFLiteModelError) as e:
            TFLiteDetector(p)
        msg = str(e.value)
        assert name in msg and ("corrupt or truncated" in msg or "not a TFLite model" in msg), msg
    with pytest.raises(TFLiteModelError, match="no such file"):
        TFLiteDetector(tmp_path / "missing.tflite")
    with pytest.raises(TFLiteModelError, match="directory"):
        TFLiteDetector(tmp_path)


def test_config_mismatch_is_named(network, cfg):
    other = load_config("nano", [f"imgsz={SIZE}", "num_classes=3"])
    with pytest.raises(ExportError, match="num_classes 3.*num_classes=2"):
        check_network_matches_config(network, other)
    bigger = load_config("nano", ["imgsz=128", "num_classes=2"])
    with pytest.raises(ExportError, match=r"built for 64x64 .* imgsz \[128, 128\]"):
        check_network_matches_config(network, bigger)


def test_tflite_config_mismatch_is_named(exported):
    with pytest.raises(TFLiteModelError, match=r"64x64 .* imgsz \[128, 128\]"):
        TFLiteDetector(exported["int8"], cfg=load_config("nano", ["imgsz=128", "num_classes=2"]))
    with pytest.raises(TFLiteModelError, match="2 classes .* num_classes 5"):
        TFLiteDetector(exported["int8"], cfg=load_config("nano", [f"imgsz={SIZE}", "num_classes=5"]))


def test_layouts_round_trip_by_hand(cfg):
    """One P4 prior at cell (row 1, col 2) = point (32, 16) with distances (0.5, 0.25, 1, 2) strides:
    box (24, 12, 48, 48) in the decoded layout; every layout maps back to the same network outputs."""
    out = {}
    for lv, s in (("p3", 8), ("p4", 16), ("p5", 32)):
        out[f"cls_{lv}"] = np.full((1, SIZE // s, SIZE // s, 2), -3.0, np.float32)
        out[f"reg_{lv}"] = np.ones((1, SIZE // s, SIZE // s, 4), np.float32)
    out["cls_p4"][0, 1, 2, 1] = 2.0
    out["reg_p4"][0, 1, 2] = [0.5, 0.25, 1.0, 2.0]
    decoded = {k: np.asarray(v) for k, v in export_outputs(out, "decoded", cfg).items()}
    p4_index = 64 + 1 * 4 + 2  # after the 8x8 P3 priors, row-major
    np.testing.assert_allclose(decoded["boxes"][0, p4_index], [24, 12, 48, 48], atol=1e-5)
    assert decoded["scores"][0, p4_index, 1] == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6)
    for layout in ("logits", "scores", "decoded"):
        raw = {k: np.asarray(v) for k, v in export_outputs(out, layout, cfg).items()}
        back = layout_to_network_outputs(raw, layout, strides=[8, 16, 32], exp_on_reg=False, imgsz=(SIZE, SIZE))
        assert sorted(back) == sorted(out)
        for k in out:
            np.testing.assert_allclose(back[k], out[k], atol=1e-4, err_msg=f"{layout} {k}")


def test_calibration_pins_the_input_range():
    imgs = np.full((2, 4, 4, 3), 100, np.uint8)
    pinned = pin_input_range(imgs)
    assert pinned.min() == 0 and pinned.max() == 255
    assert (pinned != imgs).sum() == 6  # two pixels of the first image, 3 channels each
    full = imgs.copy()
    full[1, 0, 0] = 0
    full[1, 3, 3] = 255
    np.testing.assert_array_equal(pin_input_range(full), full)


def test_op_report_counts(exported):
    rows = op_report(exported["float32"])
    assert all(set(r) == {"op", "count", "inputs", "outputs"} for r in rows)
    conv = [r for r in rows if r["op"] == "CONV_2D"]
    assert conv and conv[0]["inputs"] == "float32, const float32, const float32"


@pytest.mark.slow
def test_real_nano_int8_export_is_mcu_clean(tmp_path):
    """The real nano network at 128 px: only MCU/NPU ops, int8 throughout; Vela places every op on the
    NPU when ARM's ``vela`` compiler is installed (on PATH or named by ``RTMDET_VELA``)."""
    models = pytest.importorskip("rtmdet_keras.models")
    cfg = load_config("nano", ["imgsz=128", "num_classes=2"])
    network = models.build_model(cfg)
    imgs = synthetic_images(6, (128, 128))
    paths = export_tflite(network, cfg, tmp_path, formats=("int8",), calib_dataset=imgs[:4], check_dataset=imgs[4:],
                          saved_model=False, print_fn=lambda *a: None)
    summary = graph_summary(paths["int8"])
    assert {op["op"] for op in summary["ops"]} <= ALLOWED_INT8_OPS | EDGE_OPS
    assert int8_graph_problems(summary, "int8") == []
    r = compare_keras_tflite(network, paths["int8"], imgs[4:])
    assert max(e["steps"] for e in r["outputs"].values()) <= 3.0
    vela = os.environ.get("RTMDET_VELA") or shutil.which("vela")  # ARM's compiler, when installed
    if vela:
        import subprocess

        out = subprocess.run([vela, str(paths["int8"]), "--output-dir", str(tmp_path / "vela"),
                              "--accelerator-config", "ethos-u55-128"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "CPU operators = 0 " in out.stdout, out.stdout[-2000:]


@pytest.mark.slow
def test_export_command(tmp_path, demo_dataset):
    """``python -m rtmdet_keras.export CONFIG CHECKPOINT --int8``: files beside the checkpoint, named after
    the config; a config that does not fit the checkpoint stops with a message naming the mismatch."""
    from click.testing import CliRunner

    from rtmdet_keras.commands.export import export_command

    models = pytest.importorskip("rtmdet_keras.models")
    cfg = load_config("nano", ["imgsz=64", "num_classes=2"])
    ckpt = tmp_path / "run" / "best_coco_bbox_mAP.keras"
    ckpt.parent.mkdir()
    models.build_model(cfg).save(ckpt)
    common = ["--cfg-options", f"data_root={demo_dataset}", "num_classes=2", "imgsz=64"]
    for extra, expected in ((["num_classes=3"], "num_classes=2"), (["imgsz=96"], "--imgsz 64 64"),
                            (["model.neck_csp_blocks=1"], "does not match the config")):
        r = CliRunner().invoke(export_command, ["nano", str(ckpt), "--int8", "--calib-images", "4"] + common + extra)
        assert r.exit_code != 0 and expected in r.output and "Traceback" not in r.output, r.output
    r = CliRunner().invoke(export_command, ["nano", str(ckpt), "--int8", "--calib-images", "4", "--imgsz", "64", "64",
                                            "--no-check"] + common)
    assert r.exit_code == 0, r.output
    assert (ckpt.parent / "nano_int8.tflite").exists() and (ckpt.parent / "nano_saved_model").is_dir()
    assert "CONV_2D" in r.output and "input int8 [1, 64, 64, 3]" in r.output
    meta = json.loads((ckpt.parent / "nano_int8.json").read_text())
    assert meta["calibration_images"] == 4 and meta["class_names"] == ["circle", "square"]
