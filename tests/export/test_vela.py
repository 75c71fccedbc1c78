"""Vela for Ethos-U: the report parser on Vela's own wording; with Vela installed (slow, skipped without it)
``--vela`` writes a model holding the ``ethos-u`` custom op and its summary puts 100 % of nano's and
nano_relu's ops (the BGR reversal folded away) on the NPU; without Vela the error says how to get it."""

import json

import pytest

from rtmdet_keras.export.vela import VelaError, find_vela, parse_vela_report

# Vela 5.2.0's summary of a nano_relu int8 export that still had its GATHER (cut down).
REPORT = """
Network summary for nano_relu_int8
Accelerator configuration               Ethos_U55_64
System configuration             Ethos_U55_High_End_Embedded
Memory mode                               Shared_Sram
Accelerator clock                                 500 MHz

Total SRAM used                                 81.14 KiB
Total Off-chip Flash used                     2437.92 KiB

CPU operators = 1 (0.5%)
   CPU: Passthrough = rtmdet_nano_relu_1/normalize_1/GatherV2; (outputs [1, 64, 64, 3])
NPU operators = 218 (99.5%)
   NPU: Mul = rtmdet_nano_relu_1/normalize_1/mul (outputs [1, 64, 64, 3])

Neural network macs                          34328576 MACs/batch
"""


def test_report_parser():
    r = parse_vela_report(REPORT)
    assert (r["cpu_ops"], r["npu_ops"]) == (1, 218)
    assert r["npu_share"] == pytest.approx(218 / 219)
    assert r["cpu_operations"] == [["Passthrough", "rtmdet_nano_relu_1/normalize_1/GatherV2"]]
    assert (r["sram_kib"], r["flash_kib"]) == (81.14, 2437.92)
    assert (r["accelerator"], r["system_config"], r["memory_mode"]) == (
        "Ethos_U55_64", "Ethos_U55_High_End_Embedded", "Shared_Sram")
    assert r["clock_hz"] == 500e6 and r["macs"] == 34328576
    with pytest.raises(VelaError, match="CPU operators"):
        parse_vela_report("Error: something else")


def test_missing_vela_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("RTMDET_VELA", str(tmp_path / "no-vela"))
    with pytest.raises(VelaError, match="RTMDET_VELA=.*no such executable"):
        find_vela()
    monkeypatch.delenv("RTMDET_VELA")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(VelaError, match=r"pip install 'rtmdet_keras\[vela\]'"):
        find_vela()


def _vela_available():
    try:
        find_vela()
        return True
    except VelaError:
        return False


def _operator_codes(path):
    """Builtin/custom operator codes of a .tflite, read with TensorFlow's flatbuffer schema (LiteRT cannot
    load the ethos-u custom op)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    return [(c.CustomCode() or b"").decode() or c.BuiltinCode() for c in codes]


@pytest.mark.slow
@pytest.mark.skipif(not _vela_available(), reason="Vela not installed (pip install ethos-u-vela; RTMDET_VELA)")
@pytest.mark.parametrize("preset", ["nano", "nano_relu"])
def test_vela_puts_every_op_on_the_npu(tmp_path, preset):
    from rtmdet_keras.config import load_config
    from rtmdet_keras.export.convert import export_tflite
    from rtmdet_keras.models import build_model
    from tests.export.export_check import synthetic_images

    cfg = load_config(preset, ["imgsz=64", "num_classes=2", "class_names=[circle, square]"])
    images = synthetic_images(2, (64, 64))
    paths = export_tflite(build_model(cfg), cfg, tmp_path, formats=("int8",), calib_dataset=images, check=False,
                          saved_model=False, c_array=True, vela={"accelerator": "ethos-u55-64"},
                          print_fn=lambda *a: None)
    assert paths["vela"] == tmp_path / f"{preset}_int8_vela.tflite"
    assert _operator_codes(paths["vela"]) == ["ethos-u"]  # the whole graph is one NPU custom op
    assert "ethos-u" not in _operator_codes(paths["int8"])
    summary = json.loads((tmp_path / f"{preset}_int8_vela.json").read_text())
    assert summary["cpu_ops"] == 0 and summary["npu_ops"] > 50 and summary["npu_share"] == 1.0
    assert summary["accelerator"] == "Ethos_U55_64" and summary["cpu_operations"] == []
    assert summary["sram_kib"] > 0 and summary["flash_kib"] > 0 and summary["inference_ms"] > 0
    report = (tmp_path / f"{preset}_int8_vela.txt").read_text()
    assert "CPU operators = 0 (0.0%)" in report and "NPU: Conv2D" in report
    # The Vela model as a C array too.
    assert f"{preset}_int8_vela_model[]" in (tmp_path / f"{preset}_int8_vela.cc").read_text()
