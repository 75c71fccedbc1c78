"""C arrays for TFLite Micro: the array holds exactly the .tflite's bytes, 16-byte aligned, with its length;
the comment says what the model takes and returns; a C++ compiler accepts it (when one is installed)."""

import json
import re
import shutil
import subprocess

import pytest

from rtmdet_keras.export.c_array import c_identifier, write_c_array


def parse_cc_bytes(text):
    """The bytes of ``const unsigned char NAME[] = { ... };`` in a source text, parsed here by hand."""
    (body,) = re.findall(r"const unsigned char (\w+)\[\] = \{(.*?)\};", text, re.S)
    name, values = body
    return name, bytes(int(v, 16) for v in values.replace(",", " ").split())


@pytest.fixture
def blob(tmp_path):
    """A file with a TFLite-like head and every byte value, 1000 bytes (not a multiple of a row)."""
    data = bytes([0x1c, 0, 0, 0]) + b"TFL3" + bytes(i % 256 for i in range(992))
    path = tmp_path / "demo-model_int8.tflite"
    path.write_bytes(data)
    return path, data


def test_bytes_length_and_names(blob):
    path, data = blob
    files = write_c_array(path)
    assert files["cc"].name == "demo-model_int8.cc" and files["h"].name == "demo-model_int8.h"
    cc, h = files["cc"].read_text(), files["h"].read_text()
    name, parsed = parse_cc_bytes(cc)
    assert name == "demo_model_int8_model" and parsed == data
    assert f"const unsigned int demo_model_int8_model_len = {len(data)};" in cc
    assert "alignas(16) const unsigned char demo_model_int8_model[]" in cc
    assert '#include "demo-model_int8.h"' in cc
    assert "extern const unsigned char demo_model_int8_model[];" in h
    assert "extern const unsigned int demo_model_int8_model_len;" in h
    assert "#ifndef DEMO_MODEL_INT8_H_" in h and h.rstrip().endswith("#endif  // DEMO_MODEL_INT8_H_")


def test_identifiers():
    assert c_identifier("nano_int8") == "nano_int8"
    assert c_identifier("3d.model v2") == "_3d_model_v2"


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_compiles_and_holds_the_bytes(blob, tmp_path):
    """A tiny program includes the header, links the array and checks length, head bytes and alignment."""
    path, data = blob
    files = write_c_array(path)
    main = tmp_path / "main.cc"
    main.write_text(f"""#include <cstdint>
#include <cstdio>
#include "{files['h'].name}"
int main() {{
  unsigned sum = 0;
  for (unsigned i = 0; i < demo_model_int8_model_len; ++i) sum = sum * 31u + demo_model_int8_model[i];
  std::printf("%u %c%c%c%c %u %u\\n", demo_model_int8_model_len, demo_model_int8_model[4], demo_model_int8_model[5],
              demo_model_int8_model[6], demo_model_int8_model[7],
              (unsigned)(reinterpret_cast<std::uintptr_t>(demo_model_int8_model) % 16u), sum);
  return 0;
}}
""")
    exe = tmp_path / "main"
    subprocess.run(["g++", "-std=c++11", "-Wall", "-Werror", "-o", str(exe), str(main), str(files["cc"])],
                   check=True, capture_output=True, cwd=tmp_path, timeout=120)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    checksum = 0
    for b in data:
        checksum = (checksum * 31 + b) % 2**32
    assert out == [str(len(data)), "TFL3", "0", str(checksum)]


@pytest.mark.slow
def test_exported_int8_model_as_c_array(tmp_path):
    """From a real export: the .cc holds the .tflite's bytes and the comment its input, outputs and classes."""
    from rtmdet_keras.config import load_config
    from rtmdet_keras.export.convert import export_tflite
    from tests.export.export_check import standin_network, synthetic_images

    cfg = load_config("nano", ["imgsz=64", "num_classes=2", "class_names=[circle, square]"])
    images = synthetic_images(4, (64, 64))
    paths = export_tflite(standin_network((64, 64)), cfg, tmp_path, formats=("int8",), calib_dataset=images,
                          check=False, saved_model=False, c_array=True, print_fn=lambda *a: None)
    cc = (tmp_path / "nano_int8.cc").read_text()
    h = (tmp_path / "nano_int8.h").read_text()
    assert parse_cc_bytes(cc) == ("nano_int8_model", paths["int8"].read_bytes())
    meta = json.loads(paths["int8"].with_suffix(".json").read_text())
    q = meta["input"]["quantization"]
    for text in (cc, h):
        assert "// Input  images: int8 [1, 64, 64, 3], scale 1, zero point -128." in text
        assert f"//   cls_p3: int8 [1, 8, 8, 2], stride 8, scale {meta['outputs'][0]['quantization']['scale']:.8g}" in text
        assert "// Classes (2): 0 circle, 1 square." in text
        assert q == {"scale": 1.0, "zero_point": -128} and "round(p / 1) - 128" in text
