"""Parameter and MAC counting (hand-worked on a small graph, published figures on tiny and s) and the
``rtmdet models`` / ``python -m rtmdet_keras.models`` command."""

import keras
import pytest
from click.testing import CliRunner

from rtmdet_keras import load_config
from rtmdet_keras.cli import main as cli_main
from rtmdet_keras.commands.models import summary_command
from rtmdet_keras.models.summary import count_macs, count_parameters
from tests.models.helpers import build_symbolic, free
from tests.models.test_rtmdet import rtmdet_param_count


def test_macs_of_a_small_graph_by_hand():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.ZeroPadding2D(1)(inp)
    x = keras.layers.Conv2D(4, 3, strides=2, use_bias=False, name="backbone.c")(x)  # 4*4 * 3*3*3*4 = 1728
    x = keras.layers.BatchNormalization(name="backbone.bn")(x)                          # mmcv: 2 * 64
    x = keras.layers.ReLU(name="backbone.act")(x)                                      # mmcv: 64
    shared = keras.layers.Conv2D(2, 1, use_bias=False, name="bbox_head.s")
    a = shared(x)                                                                       # 4*4 * 4*2 = 128
    p = keras.layers.MaxPooling2D(name="neck.pool")(x)                                  # mmcv: 64 (input)
    b = shared(p)                                                                       # 2*2 * 4*2 = 32
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="neck.dw")(x)              # 4*4 * 3*3*4 = 576 (+64 bias)
    model = keras.Model(inp, [a, b, d])
    assert count_macs(model) == {"backbone": 1728, "neck": 576, "head": 160, "total": 2464}
    assert count_macs(model, "mmcv")["total"] == 2464 + 128 + 64 + 64 + 64


def test_tiny_parts_and_published_gflops():
    model = build_symbolic(load_config("tiny", {"num_classes": 80, "imgsz": [640, 640]}))
    params = count_parameters(model)
    backbone, neck, head = rtmdet_param_count(0.375, 0.167, 1)
    assert (params["backbone"], params["neck"], params["head"], params["total"]) == (
        backbone, neck, head, 4_896_168)
    macs = count_macs(model)
    assert macs["total"] == macs["backbone"] + macs["neck"] + macs["head"]
    # Published 8.1 G (MACs): conv-only is 0.8 % lower, mmcv's counting gives 8.1 exactly.
    assert macs["total"] / 1e9 == pytest.approx(8.1, rel=0.01)
    assert round(count_macs(model, "mmcv")["total"] / 1e9, 1) == 8.1
    free()


def test_s_published_gflops():
    model = build_symbolic(load_config("s", {"num_classes": 80, "imgsz": [640, 640]}))
    assert round(count_macs(model)["total"] / 1e9, 1) == 14.8
    free()


def test_summary_command_and_cli_group():
    args = ["--config", "nano.yaml", "--cfg-options", "num_classes=2", "imgsz=(64,64)"]
    result = CliRunner().invoke(summary_command, args)
    assert result.exit_code == 0, result.output
    # nano with 80 classes is 2,186,820; 2 classes drop 3 levels * 78 * (64 + 1) = 15,210.
    assert "2,171,610" in result.output and "backbone" in result.output and "cls_p3" in result.output
    grouped = CliRunner().invoke(cli_main, ["models"] + args[:2] + ["--cfg-options", "model.widen_factor=0.5"])
    assert grouped.exit_code != 0 and "neck_in_channels" in grouped.output
    free()
