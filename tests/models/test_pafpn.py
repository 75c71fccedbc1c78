"""CSPNeXtPAFPN: output shapes, block counts per preset, a readable channel-mismatch error."""

import keras
import pytest

from rtmdet_keras.models.layers import keras3_context
from rtmdet_keras.models.pafpn import cspnext_pafpn
from tests.models.helpers import small_cfg


def _neck(cfg, size=64):
    m = cfg.model
    inputs = [keras.Input((size // s, size // s, c)) for s, c in zip((8, 16, 32), m.neck_in_channels)]
    outs = cspnext_pafpn(keras3_context(), inputs, m)
    return outs, {layer.name for layer in keras.Model(inputs, outs).layers}


def test_outputs_and_names():
    outs, names = _neck(small_cfg("tiny"))
    assert [tuple(o.shape) for o in outs] == [(None, 8, 8, 96), (None, 4, 4, 96), (None, 2, 2, 96)]
    for name in ["neck.reduce_layers.0.conv", "neck.reduce_layers.1.bn", "neck.upsample.0",
                 "neck.top_down_blocks.0.main_conv.conv", "neck.top_down_blocks.1.blocks.0.conv1.conv",
                 "neck.downsamples.0.pad", "neck.downsamples.1.conv", "neck.bottom_up_blocks.1.final_conv.conv",
                 "neck.out_convs.2.conv"]:
        assert name in names, name
    assert not any("attention" in n or n.endswith(".add") for n in names)  # no channel attention, no identity


@pytest.mark.parametrize("preset, blocks", [("nano", 0), ("nano_relu", 1), ("m", 2)])
def test_block_count(preset, blocks):
    _, names = _neck(small_cfg(preset))
    for layer in ("top_down_blocks.0", "top_down_blocks.1", "bottom_up_blocks.0", "bottom_up_blocks.1"):
        found = {n.split(".blocks.")[1].split(".")[0] for n in names if n.startswith(f"neck.{layer}.blocks.")}
        assert found == {str(i) for i in range(blocks)}


def test_channel_mismatch_names_the_setting():
    cfg = small_cfg("nano")
    inputs = [keras.Input((8, 8, 64)), keras.Input((4, 4, 128)), keras.Input((2, 2, 200))]
    with pytest.raises(ValueError, match=r"model.neck_in_channels.*\[64,128,200\]"):
        cspnext_pafpn(keras3_context(), inputs, cfg.model)
