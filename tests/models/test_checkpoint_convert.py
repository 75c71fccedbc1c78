"""Loading mmdetection RTMDet / CSPNeXt checkpoints (rtmdet_keras/models/pretrained.py and its parts).

The state dicts here are synthetic, built from an independent description of mmdetection's module
tree for RTMDet-tiny (below, written from mmdetection's CSPNeXt / CSPNeXtPAFPN / RTMDetSepBNHead and
mmcv's ConvModule, not from the Keras model's layer names). Tests marked ``torch`` compare the
converted Keras layers with PyTorch's own ops on the original layouts and skip where torch is absent.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtmdet_keras import load_config
from rtmdet_keras.models.checkpoint_layout import CheckpointError
from rtmdet_keras.models.checkpoint_torch import extract_state_dict, read_torch_checkpoint
from rtmdet_keras.models.named_weights_file import read_named_weights, save_named_weights
from rtmdet_keras.models.pretrained import load_pretrained, load_weights
from rtmdet_keras.models.weights import named_weights

# --------------------------------------------------------------------------------------------
# mmdetection's RTMDet-tiny as (key, shape), from its module tree
# --------------------------------------------------------------------------------------------


def conv_module(prefix, cin, cout, k, groups=1):
    """mmcv ConvModule(conv without bias, BN 'bn', act)."""
    yield f"{prefix}.conv.weight", (cout, cin // groups, k, k)
    for p in ("weight", "bias", "running_mean", "running_var"):
        yield f"{prefix}.bn.{p}", (cout,)
    yield f"{prefix}.bn.num_batches_tracked", ()


def csp_layer(prefix, cin, cout, blocks, attention):
    """mmdet CSPLayer(use_cspnext_block=True, expand_ratio=0.5)."""
    mid = cout // 2
    yield from conv_module(f"{prefix}.main_conv", cin, mid, 1)
    yield from conv_module(f"{prefix}.short_conv", cin, mid, 1)
    yield from conv_module(f"{prefix}.final_conv", 2 * mid, cout, 1)
    for b in range(blocks):  # CSPNeXtBlock: conv1 3x3, conv2 = DepthwiseSeparableConvModule(5x5)
        yield from conv_module(f"{prefix}.blocks.{b}.conv1", mid, mid, 3)
        yield from conv_module(f"{prefix}.blocks.{b}.conv2.depthwise_conv", mid, mid, 5, groups=mid)
        yield from conv_module(f"{prefix}.blocks.{b}.conv2.pointwise_conv", mid, mid, 1)
    if attention:  # ChannelAttention: fc = Conv2d(c, c, 1, bias=True)
        yield f"{prefix}.attention.fc.weight", (2 * mid, 2 * mid, 1, 1)
        yield f"{prefix}.attention.fc.bias", (2 * mid,)


def tiny_backbone():
    # CSPNeXt P5 at widen 0.375, deepen 0.167: stem 12, 12, 24; stages 24->48->96->192->384, 1 block each.
    yield from conv_module("backbone.stem.0", 3, 12, 3)
    yield from conv_module("backbone.stem.1", 12, 12, 3)
    yield from conv_module("backbone.stem.2", 12, 24, 3)
    for i, (cin, cout) in enumerate([(24, 48), (48, 96), (96, 192), (192, 384)], start=1):
        yield from conv_module(f"backbone.stage{i}.0", cin, cout, 3)
        if i == 4:  # SPPBottleneck: conv1 to half, pools, conv2 from 4 halves
            yield from conv_module("backbone.stage4.1.conv1", 384, 192, 1)
            yield from conv_module("backbone.stage4.1.conv2", 4 * 192, 384, 1)
        yield from csp_layer(f"backbone.stage{i}.{2 if i == 4 else 1}", cout, cout, 1, attention=True)


def tiny_neck():
    yield from conv_module("neck.reduce_layers.0", 384, 192, 1)
    yield from csp_layer("neck.top_down_blocks.0", 384, 192, 1, attention=False)
    yield from conv_module("neck.reduce_layers.1", 192, 96, 1)
    yield from csp_layer("neck.top_down_blocks.1", 192, 96, 1, attention=False)
    yield from conv_module("neck.downsamples.0", 96, 96, 3)
    yield from csp_layer("neck.bottom_up_blocks.0", 192, 192, 1, attention=False)
    yield from conv_module("neck.downsamples.1", 192, 192, 3)
    yield from csp_layer("neck.bottom_up_blocks.1", 384, 384, 1, attention=False)
    for i, cin in enumerate([96, 192, 384]):
        yield from conv_module(f"neck.out_convs.{i}", cin, 96, 3)


def tiny_head(num_classes):
    # RTMDetSepBNHead: per level 2 cls + 2 reg ConvModules (convs shared, so repeated per level), 1x1 preds.
    for lvl in range(3):
        for branch in ("cls", "reg"):
            for i in range(2):
                yield from conv_module(f"bbox_head.{branch}_convs.{lvl}.{i}", 96, 96, 3)
        yield f"bbox_head.rtm_cls.{lvl}.weight", (num_classes, 96, 1, 1)
        yield f"bbox_head.rtm_cls.{lvl}.bias", (num_classes,)
        yield f"bbox_head.rtm_reg.{lvl}.weight", (4, 96, 1, 1)
        yield f"bbox_head.rtm_reg.{lvl}.bias", (4,)


def tiny_keys(num_classes=80):
    return dict([*tiny_backbone(), *tiny_neck(), *tiny_head(num_classes)])


def shared_source(key):
    """Level-0 key of a shared head conv (mmdetection stores the same tensor under every level)."""
    parts = key.split(".")
    if key.startswith("bbox_head.") and parts[1] in ("cls_convs", "reg_convs") and parts[4] == "conv":
        return ".".join(parts[:2] + ["0"] + parts[3:])
    return key


def random_state_dict(num_classes=80, seed=0):
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in tiny_keys(num_classes).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = np.array(1234, np.int64)
        elif shared_source(key) != key:
            sd[key] = sd[shared_source(key)]  # level 0 comes first in the tree
        elif key.endswith("running_var"):
            sd[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            sd[key] = rng.normal(0, 0.1, shape).astype(np.float32)
    return sd


def to_keras_layout(key, value):
    """Independent reference: the Keras array for a state-dict tensor, element by element."""
    if value.ndim == 4:
        o, i, kh, kw = value.shape
        out = np.empty((kh, kw, i, o), value.dtype)
        for a in range(o):
            for b in range(i):
                out[:, :, b, a] = value[a, b]
        if ".depthwise_conv." in key:
            out = out.reshape(kh, kw, o, 1)  # one input per group: [kh, kw, C, 1]
        return out
    return value


BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def keras_key(key):
    module, _, param = key.rpartition(".")
    if module.endswith(".bn"):
        return f"{module}/{BN_NAMES[param]}"
    return f"{module}/{'kernel' if param == 'weight' else param}"


# --------------------------------------------------------------------------------------------
# Models (built once per module: building is the slow part)
# --------------------------------------------------------------------------------------------


def tiny_cfg(num_classes=80, **overrides):
    return load_config("tiny", {"imgsz": [64, 64], "num_classes": num_classes, **overrides})


@pytest.fixture(scope="module")
def tiny80():
    from rtmdet_keras.models import build_model

    return build_model(tiny_cfg(80))


@pytest.fixture(scope="module")
def tiny2():
    from rtmdet_keras.models import build_model

    return build_model(tiny_cfg(2))


def fill(model, value):
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([np.full(w.shape, value, np.asarray(w).dtype) for w in layer.weights])


def quiet(*_):
    pass


# --------------------------------------------------------------------------------------------
# The description itself
# --------------------------------------------------------------------------------------------


def test_description_matches_mmdetection_tiny_parameter_count(tiny80):
    # Parameters as PyTorch counts them (shared convs once, BN running stats are buffers).
    params = sum(int(np.prod(s)) for k, s in tiny_keys().items()
                 if shared_source(k) == k and not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert round(params / 1e6, 1) == 4.9  # mmdetection's model zoo: 4.8 M (rounded down), 4.87 M counted
    trainable = sum(int(np.prod(w.shape)) for w in tiny80.trainable_weights)
    assert params == trainable


# --------------------------------------------------------------------------------------------
# One to one, layouts, values
# --------------------------------------------------------------------------------------------


def test_every_tensor_used_once_and_every_weight_set(tiny80):
    sd = random_state_dict()
    fill(tiny80, np.nan)
    report = load_weights(tiny80, {"meta": {}, "state_dict": sd}, print_fn=quiet)

    expected_used = {k for k in sd if not k.endswith("num_batches_tracked")}
    assert len(report.used) == len(set(report.used)) == len(expected_used)
    assert set(report.used) == expected_used
    assert set(report.ignored) == {k for k in sd if k.endswith("num_batches_tracked")}
    assert not report.kept_init
    assert any("8 per-level copies" in n for n in report.notes)  # 2 towers x 2 convs x levels 1, 2
    weights = named_weights(tiny80)
    assert all(np.isfinite(v).all() for v in weights.values()), "a Keras weight was not set"
    # Each Keras weight holds its tensor, transposed (checked element by element, not by np.transpose).
    for key, value in sd.items():
        if key.endswith("num_batches_tracked") or shared_source(key) != key:
            continue
        np.testing.assert_array_equal(weights[keras_key(key)], to_keras_layout(key, value), err_msg=key)
    # The shared convs exist once; their per-level BatchNorms are each level's own.
    assert "bbox_head.cls_convs.1.0.conv/kernel" not in weights
    assert not tiny80.get_layer("normalize").weights  # input normalisation: config constants, nothing to load
    for lvl in range(3):
        np.testing.assert_array_equal(weights[f"bbox_head.reg_convs.{lvl}.1.bn/moving_variance"],
                                      sd[f"bbox_head.reg_convs.{lvl}.1.bn.running_var"])


def test_patterned_kernels_land_transposed(tiny80):
    sd = random_state_dict()
    o, i, h, w = np.indices((12, 3, 3, 3))
    sd["backbone.stem.0.conv.weight"] = (1000 * o + 100 * i + 10 * h + w).astype(np.float32)
    c, _, h5, w5 = np.indices((24, 1, 5, 5))
    dw = "backbone.stage1.1.blocks.0.conv2.depthwise_conv.conv.weight"
    sd[dw] = (100 * c + 10 * h5 + w5).astype(np.float32)
    load_weights(tiny80, sd, print_fn=quiet)
    kernel = tiny80.get_layer("backbone.stem.0.conv").get_weights()[0]
    assert kernel.shape == (3, 3, 3, 12)
    assert kernel[2, 1, 0, 7] == 7000 + 0 + 20 + 1  # [kh=2, kw=1, in=0, out=7] <- [out=7, in=0, kh=2, kw=1]
    assert kernel[0, 2, 2, 11] == 11000 + 200 + 0 + 2
    dkernel = tiny80.get_layer("backbone.stage1.1.blocks.0.conv2.depthwise_conv.conv").get_weights()[0]
    assert dkernel.shape == (5, 5, 24, 1)
    assert dkernel[4, 3, 17, 0] == 1700 + 40 + 3


def test_class_count_mismatch_keeps_fresh_class_convs(tiny2):
    sd = random_state_dict(80)
    fill(tiny2, np.nan)
    fresh_bias = -math.log((1 - 0.01) / 0.01)
    for lvl in range(3):
        tiny2.get_layer(f"bbox_head.rtm_cls.{lvl}").set_weights(
            [np.zeros((1, 1, 96, 2), np.float32), np.full((2,), fresh_bias, np.float32)])
    lines = []
    report = load_weights(tiny2, sd, print_fn=lines.append)
    assert report.kept_init == [f"bbox_head.rtm_cls.{lvl}" for lvl in range(3)]
    class_tensors = {k for k in sd if k.startswith("bbox_head.rtm_cls.")}
    assert class_tensors <= set(report.ignored) and not class_tensors & set(report.used)
    assert set(report.used) | set(report.ignored) == set(sd)
    assert "6 class-prediction tensors" in lines[0]
    note = lines[0].splitlines()[1]  # the one line that says so
    assert "80 classes" in note and "this model 2" in note and "bbox_head.rtm_cls.0" in note
    for lvl in range(3):
        _, bias = tiny2.get_layer(f"bbox_head.rtm_cls.{lvl}").get_weights()
        np.testing.assert_allclose(bias, fresh_bias)
        np.testing.assert_array_equal(tiny2.get_layer(f"bbox_head.rtm_reg.{lvl}").get_weights()[1],
                                      sd[f"bbox_head.rtm_reg.{lvl}.bias"])
    assert all(np.isfinite(v).all() for v in named_weights(tiny2).values())


def test_missing_and_extra_tensors_are_named_and_nothing_is_loaded(tiny80):
    sd = random_state_dict()
    fill(tiny80, 7.0)
    del sd["neck.out_convs.1.bn.running_var"]
    sd["bbox_head.rtm_obj.0.weight"] = np.zeros((1, 96, 1, 1), np.float32)
    with pytest.raises(CheckpointError) as e:
        load_weights(tiny80, sd, print_fn=quiet)
    msg = str(e.value)
    assert "neck.out_convs.1.bn.running_var" in msg and "bbox_head.rtm_obj.0.weight" in msg
    assert all((v == 7.0).all() for v in named_weights(tiny80).values()), "a failed load changed the model"

    sd = random_state_dict()
    for j in range(30):
        sd[f"extra.layer{j:02d}.weight"] = np.zeros((3,), np.float32)
    with pytest.raises(CheckpointError, match=r"30 tensors .* extra\.layer19\.weight \.\.\. and 10 more"):
        load_weights(tiny80, sd, print_fn=quiet)


def test_shape_mismatch_and_diverged_shared_convs_are_errors(tiny80):
    sd = random_state_dict()
    sd["backbone.stem.0.conv.weight"] = np.zeros((16, 3, 3, 3), np.float32)  # a wider preset
    with pytest.raises(CheckpointError, match=r"backbone\.stem\.0\.conv\.weight: \[16, 3, 3, 3\] in the checkpoint, \[12, 3, 3, 3\] in the model"):
        load_weights(tiny80, sd, print_fn=quiet)

    sd = random_state_dict()
    sd["bbox_head.cls_convs.2.1.conv.weight"] = sd["bbox_head.cls_convs.2.1.conv.weight"] + 1.0
    with pytest.raises(CheckpointError, match=r"bbox_head\.cls_convs\.2\.1\.conv\.weight differs"):
        load_weights(tiny80, sd, print_fn=quiet)


def test_backbone_only_from_an_imagenet_checkpoint(tiny80):
    sd = {k: v for k, v in random_state_dict(seed=1).items() if k.startswith("backbone.")}
    sd["head.fc.weight"] = np.zeros((1000, 384), np.float32)  # mmpretrain ImageClassifier's LinearClsHead
    sd["head.fc.bias"] = np.zeros((1000,), np.float32)
    fill(tiny80, 5.0)
    lines = []
    report = load_weights(tiny80, {"state_dict": sd, "meta": {}}, part="backbone", print_fn=lines.append)
    assert {"head.fc.weight", "head.fc.bias"} <= set(report.ignored)
    assert "2 outside backbone.*" in lines[0]
    weights = named_weights(tiny80)
    for key, value in weights.items():
        if key.startswith("backbone."):
            assert not (value == 5.0).all(), key
        else:
            assert (value == 5.0).all(), f"{key} changed by a backbone-only load"
    np.testing.assert_array_equal(weights["backbone.stage4.2.attention.fc/bias"], sd["backbone.stage4.2.attention.fc.bias"])

    del sd["backbone.stage2.1.blocks.0.conv1.bn.weight"]
    with pytest.raises(CheckpointError, match=r"backbone\.stage2\.1\.blocks\.0\.conv1\.bn\.weight"):
        load_weights(tiny80, sd, part="backbone", print_fn=quiet)
    # A backbone checkpoint given as load_from says what to do instead.
    with pytest.raises(CheckpointError, match="backbone_weights="):
        load_weights(tiny80, {k: v for k, v in random_state_dict().items() if k.startswith("backbone.")}, print_fn=quiet)


def test_bare_backbone_state_dict_and_tf_keras_twin(tiny80):
    from rtmdet_keras.models import build_model

    sd = random_state_dict(seed=6)
    bare = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}  # backbone.state_dict()
    report = load_weights(tiny80, bare, part="backbone", print_fn=quiet)
    assert "stem.0.conv.weight" in report.used and "no 'backbone.' prefix" in report.notes[0]
    np.testing.assert_array_equal(tiny80.get_layer("backbone.stem.1.bn").get_weights()[3], sd["backbone.stem.1.bn.running_var"])

    # The tf_keras twin has a conv per head level: each takes its own copy of the shared tensor.
    twin = build_model(tiny_cfg(80), framework="tf_keras")
    load_weights(twin, sd, print_fn=quiet)
    for lvl in range(3):
        kernel = twin.get_layer(f"bbox_head.reg_convs.{lvl}.0.conv").get_weights()[0]
        np.testing.assert_array_equal(kernel, to_keras_layout("x", sd["bbox_head.reg_convs.0.0.conv.weight"]))
    dw = "backbone.stage2.1.blocks.0.conv2.depthwise_conv.conv"
    np.testing.assert_array_equal(twin.get_layer(dw).get_weights()[0], to_keras_layout(".depthwise_conv.", sd[dw + ".weight"]))


def test_ema_and_wrapped_state_dicts():
    raw = {"module.backbone.x.weight": np.zeros(2, np.float32), "steps": np.array(5)}
    ckpt = {"meta": {"cfg": "x"}, "state_dict": {"backbone.x.weight": np.ones(2, np.float32)}, "ema_state_dict": raw}
    sd, meta, ignored = extract_state_dict(ckpt)
    assert sd["backbone.x.weight"][0] == 1.0 and meta == {"cfg": "x"} and ignored == []
    sd, _, ignored = extract_state_dict(ckpt, "ema_state_dict")
    assert list(sd) == ["backbone.x.weight"] and sd["backbone.x.weight"][0] == 0.0 and ignored == ["steps"]
    sd, meta, _ = extract_state_dict({"module.a.weight": np.ones(1)})  # DDP-saved bare state dict
    assert list(sd) == ["a.weight"] and meta == {}
    with pytest.raises(CheckpointError, match="no state dict"):
        extract_state_dict({"optimizer": {}, "epoch": 3})
    with pytest.raises(CheckpointError, match="has no 'ema_state_dict'"):
        extract_state_dict({"state_dict": {}}, "ema_state_dict")


def test_converted_file_round_trip_and_load_pretrained(tiny80, tiny2, tmp_path):
    sd = random_state_dict(seed=3)
    load_weights(tiny80, sd, print_fn=quiet)
    path = tmp_path / "tiny_coco.npz"
    save_named_weights(path, named_weights(tiny80), {"num_classes": 80})
    table, meta = read_named_weights(path)
    assert meta["num_classes"] == 80 and "backbone.stem.0.conv/kernel" in table
    assert "bbox_head.cls_convs.0.1.bn/moving_variance" in table

    fill(tiny2, np.nan)
    lines = []
    reports = load_pretrained(tiny2, tiny_cfg(2, load_from=str(path)), print_fn=lines.append)
    assert reports[0].kept_init == ["bbox_head.rtm_cls.0", "bbox_head.rtm_cls.1", "bbox_head.rtm_cls.2"]
    got = named_weights(tiny2)
    for key, value in table.items():
        if not key.startswith("bbox_head.rtm_cls."):
            np.testing.assert_array_equal(got[key], value, err_msg=key)

    fill(tiny2, 3.0)
    load_pretrained(tiny2, tiny_cfg(2, backbone_weights=str(path)), print_fn=quiet)
    got = named_weights(tiny2)
    assert all((v == 3.0).all() for k, v in got.items() if not k.startswith("backbone."))
    np.testing.assert_array_equal(got["backbone.stage3.1.final_conv.bn/beta"], sd["backbone.stage3.1.final_conv.bn.bias"])

    keras_file = tmp_path / "run_best.keras"  # a model saved by an earlier rtmdet_keras run (2 classes)
    tiny2.save(keras_file)
    fill(tiny80, np.nan)
    report = load_weights(tiny80, keras_file, print_fn=quiet)
    assert len(report.kept_init) == 3
    np.testing.assert_array_equal(tiny80.get_layer("neck.out_convs.2.bn").get_weights()[0],
                                  tiny2.get_layer("neck.out_convs.2.bn").get_weights()[0])

    with pytest.raises(CheckpointError, match="URL"):
        load_pretrained(tiny2, tiny_cfg(2, load_from="https://example.com/x.pth"), print_fn=quiet)
    with pytest.raises(CheckpointError, match="no such file"):
        load_pretrained(tiny2, tiny_cfg(2, load_from=str(tmp_path / "missing.npz")), print_fn=quiet)


def test_bn_eps_of_the_checkpoint_config_is_reported(tiny80):
    meta = {"cfg": "model = dict(backbone=dict(norm_cfg=dict(type='BN', momentum=0.03, eps=0.001)))"}
    lines = []
    load_weights(tiny80, {"state_dict": random_state_dict(), "meta": meta}, cfg=tiny_cfg(80), print_fn=lines.append)
    assert "eps 0.001" in lines[0] and "model.bn_eps is 1e-05" in lines[0]
    lines = []
    meta = {"cfg": "norm_cfg=dict(type='SyncBN')"}  # PyTorch's default eps, as the config's
    load_weights(tiny80, {"state_dict": random_state_dict(), "meta": meta}, cfg=tiny_cfg(80), print_fn=lines.append)
    assert "eps" not in lines[0]


def test_pth_without_torch_says_how_to_install(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "x.pth"
    path.write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(CheckpointError, match=r"rtmdet_keras\[convert\]"):
        read_torch_checkpoint(path)

    from click.testing import CliRunner

    from rtmdet_keras.commands.convert import convert_command

    r = CliRunner().invoke(convert_command, [str(path), str(tmp_path / "out.npz"), "--config", "tiny"])
    assert r.exit_code == 1 and "pip install 'rtmdet_keras[convert]'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(convert_command, [str(path), str(tmp_path / "out.weights.h5"), "--config", "tiny"])
    assert r.exit_code == 1 and "must end in .npz" in r.output


# --------------------------------------------------------------------------------------------
# With PyTorch: the converted layers compute what PyTorch computes on the original layouts
# --------------------------------------------------------------------------------------------


class NotATensor:
    """Stands for the mmengine objects in a training checkpoint (message hub ...): not for weights_only."""


def _keras_block(build, input_shapes):
    """A small functional Keras 3 model from the project's own block builders."""
    import keras

    from rtmdet_keras.models.layers import keras3_context

    ctx = keras3_context("silu", 1e-5, 0.9)
    inputs = [keras.Input(shape=s) for s in input_shapes]
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], build(ctx, *inputs))


def _torch_bn(prefix, c, torch, gen):
    return {f"{prefix}.weight": torch.rand(c, generator=gen) + 0.5, f"{prefix}.bias": torch.randn(c, generator=gen) * 0.1,
            f"{prefix}.running_mean": torch.randn(c, generator=gen) * 0.2,
            f"{prefix}.running_var": torch.rand(c, generator=gen) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(7)}


def _bn(x, sd, prefix, F):
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                        sd[f"{prefix}.bias"], training=False, eps=1e-5)


def _nhwc(t):
    return t.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("stride,size", [(1, 10), (2, 16), (2, 15)])
def test_torch_conv_bn_act(stride, size):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from rtmdet_keras.models.layers import conv_bn_act

    gen = torch.Generator().manual_seed(stride * 100 + size)
    sd = {"m.conv.weight": torch.randn(6, 4, 3, 3, generator=gen) * 0.3, **_torch_bn("m.bn", 6, torch, gen)}
    x = torch.randn(2, 4, size, size, generator=gen)
    ref = F.silu(_bn(F.conv2d(x, sd["m.conv.weight"], stride=stride, padding=1), sd, "m.bn", F))
    model = _keras_block(lambda ctx, t: conv_bn_act(ctx, t, 6, 3, stride, name="m"), [(size, size, 4)])
    load_weights(model, {k: v.numpy() for k, v in sd.items()}, print_fn=quiet)
    out = np.asarray(model(_nhwc(x)))
    assert out.shape == _nhwc(ref).shape
    np.testing.assert_allclose(out, _nhwc(ref), atol=1e-5, rtol=1e-5)


def test_torch_depthwise_5x5_and_channel_attention():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from rtmdet_keras.models.layers import channel_attention, conv_bn_act

    gen = torch.Generator().manual_seed(1)
    sd = {"dw.conv.weight": torch.randn(8, 1, 5, 5, generator=gen) * 0.3, **_torch_bn("dw.bn", 8, torch, gen),
          "att.fc.weight": torch.randn(8, 8, 1, 1, generator=gen), "att.fc.bias": torch.randn(8, generator=gen)}
    x = torch.randn(2, 8, 9, 9, generator=gen)
    y = F.silu(_bn(F.conv2d(x, sd["dw.conv.weight"], padding=2, groups=8), sd, "dw.bn", F))
    ref = y * F.hardsigmoid(F.conv2d(y.mean(dim=(2, 3), keepdim=True), sd["att.fc.weight"], sd["att.fc.bias"]))

    def build(ctx, t):
        t = conv_bn_act(ctx, t, 8, 5, groups=8, name="dw")
        return channel_attention(ctx, t, name="att")

    model = _keras_block(build, [(9, 9, 8)])
    load_weights(model, {k: v.numpy() for k, v in sd.items()}, print_fn=quiet)
    np.testing.assert_allclose(np.asarray(model(_nhwc(x))), _nhwc(ref), atol=1e-5, rtol=1e-5)


def test_torch_shared_conv_head_with_per_level_bn():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from rtmdet_keras.models.head import rtmdet_sep_bn_head

    gen = torch.Generator().manual_seed(2)
    c, ncls = 8, 3
    sd = {}
    shared = {(b, i): torch.randn(c, c, 3, 3, generator=gen) * 0.2 for b in ("cls", "reg") for i in range(2)}
    for lvl in range(3):
        for b in ("cls", "reg"):
            for i in range(2):
                sd[f"bbox_head.{b}_convs.{lvl}.{i}.conv.weight"] = shared[(b, i)]
                sd.update(_torch_bn(f"bbox_head.{b}_convs.{lvl}.{i}.bn", c, torch, gen))
        sd[f"bbox_head.rtm_cls.{lvl}.weight"] = torch.randn(ncls, c, 1, 1, generator=gen)
        sd[f"bbox_head.rtm_cls.{lvl}.bias"] = torch.randn(ncls, generator=gen)
        sd[f"bbox_head.rtm_reg.{lvl}.weight"] = torch.randn(4, c, 1, 1, generator=gen)
        sd[f"bbox_head.rtm_reg.{lvl}.bias"] = torch.randn(4, generator=gen)
    feats = [torch.randn(1, c, s, s, generator=gen) for s in (8, 4, 2)]
    refs = {}
    for lvl, x in enumerate(feats):
        for b in ("cls", "reg"):
            y = x
            for i in range(2):
                p = f"bbox_head.{b}_convs.{lvl}.{i}"
                y = F.silu(_bn(F.conv2d(y, sd[f"{p}.conv.weight"], padding=1), sd, f"{p}.bn", F))
            refs[f"{b}_p{lvl + 3}"] = F.conv2d(y, sd[f"bbox_head.rtm_{b}.{lvl}.weight"], sd[f"bbox_head.rtm_{b}.{lvl}.bias"])

    model_cfg = tiny_cfg(ncls).model
    model_cfg.feat_channels = c
    model = _keras_block(lambda ctx, *xs: rtmdet_sep_bn_head(ctx, list(xs), model_cfg, ncls, share_conv=True),
                         [(s, s, c) for s in (8, 4, 2)])
    report = load_weights(model, {k: v.numpy() for k, v in sd.items()}, print_fn=quiet)
    assert any("8 per-level copies" in n for n in report.notes)
    out = model([_nhwc(f) for f in feats])
    for key, ref in refs.items():
        np.testing.assert_allclose(np.asarray(out[key]), _nhwc(ref), atol=1e-5, rtol=1e-5, err_msg=key)


def test_torch_pth_file_and_convert_command(tmp_path):
    torch = pytest.importorskip("torch")
    from click.testing import CliRunner

    from rtmdet_keras.commands.convert import convert_command

    sd = random_state_dict(80, seed=4)
    state = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
    for k in state:  # mmdetection's shared convs are one tensor under three names
        state[k] = state[shared_source(k)]
    pth = tmp_path / "rtmdet_tiny.pth"
    torch.save({"meta": {"dataset_meta": {"classes": tuple(f"c{i}" for i in range(80))}, "hub": NotATensor()},
                "state_dict": state}, pth)
    lines = []
    read_torch_checkpoint(pth, print_fn=lines.append)  # weights_only refuses it: tensors-only unpickler
    assert "NotATensor" in lines[0]
    published = tmp_path / "published.pth"  # meta + state_dict, as mmdetection's publish_model leaves it
    torch.save({"meta": {"epoch": 300}, "state_dict": state}, published)
    lines = []
    ckpt = read_torch_checkpoint(published, print_fn=lines.append)
    assert not lines and ckpt["meta"] == {"epoch": 300}
    np.testing.assert_array_equal(ckpt["state_dict"]["bbox_head.rtm_reg.2.bias"], sd["bbox_head.rtm_reg.2.bias"])

    out = tmp_path / "tiny.npz"
    r = CliRunner().invoke(convert_command, [str(pth), str(out), "--config", "tiny",
                                             "--cfg-options", "imgsz=[64,64]", "num_classes=2"])
    assert r.exit_code == 0, r.output
    assert "num_classes 80 from the checkpoint" in r.output
    table, meta = read_named_weights(out)
    assert meta["num_classes"] == 80 and meta["class_names"][79] == "c79"
    for key, value in sd.items():
        if not key.endswith("num_batches_tracked") and shared_source(key) == key:
            np.testing.assert_array_equal(table[keras_key(key)], to_keras_layout(key, value), err_msg=key)
