"""SSCMA (mmyolo-layout) RTMDet checkpoints: names, one-to-one loads, errors, config aliases, outputs.

The state dicts are synthetic, described here from SSCMA's module tree (Seeed-Studio/ModelAssistant:
CSPNeXt, CSPNeXtPAFPN on BaseYOLONeck, RTMDetHead.head_module; see tests/models/sscma_reference.py), not from the
Keras layer names. The ``torch`` tests check the description against a PyTorch module with SSCMA's
attribute names and compare its outputs with the converted Keras model's.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtmdet_keras import load_config
from rtmdet_keras.models.checkpoint_layout import CheckpointError, detect_layout
from rtmdet_keras.models.named_weights_file import read_named_weights
from rtmdet_keras.models.pretrained import convert_checkpoint, load_weights
from rtmdet_keras.models.weights import named_weights
from tests.models.test_checkpoint_convert import conv_module, csp_layer, keras_key, to_keras_layout

# --------------------------------------------------------------------------------------------
# SSCMA's nets as (key, shape), in state_dict order
# --------------------------------------------------------------------------------------------

NETS = {  # config name: (deepen, widen, channel_attention, neck num_csp_blocks unscaled, share_conv)
    "rtmdet_nano_8xb32_300e_coco": (0.33, 0.25, False, 1, False),
    "rtmdet_nano_8xb32_300e_coco_relu": (0.33, 0.25, True, 3, False),
    "rtmdet_s_8xb32_300e_coco": (0.33, 0.5, False, 1, True),
}


def sscma_keys(config, num_classes=2):
    d, w, attention, neck_blocks, _ = NETS[config]
    half, full = int(64 * w // 2), int(64 * w)
    keys = [*conv_module("backbone.stem.0", 3, half, 3), *conv_module("backbone.stem.1", half, half, 3),
            *conv_module("backbone.stem.2", half, full, 3)]
    for i, (cin, cout, n) in enumerate([(64, 128, 3), (128, 256, 6), (256, 512, 6), (512, 1024, 3)], start=1):
        cin, cout, n = int(cin * w), int(cout * w), max(round(n * d), 1)
        keys += conv_module(f"backbone.stage{i}.0", cin, cout, 3)
        if i == 4:
            keys += [*conv_module("backbone.stage4.1.conv1", cout, cout // 2, 1),
                     *conv_module("backbone.stage4.1.conv2", cout // 2 * 4, cout, 1)]
        keys += csp_layer(f"backbone.stage{i}.{2 if i == 4 else 1}", cout, cout, n, attention)
    c3, c4, c5 = int(256 * w), int(512 * w), int(1024 * w)
    n = round(neck_blocks * d)
    keys += [*conv_module("neck.reduce_layers.2", c5, c4, 1),  # reduce_layers 0 and 1 are nn.Identity
             *csp_layer("neck.top_down_layers.0.0", 2 * c4, c4, n, False),
             *conv_module("neck.top_down_layers.0.1", c4, c3, 1),
             *csp_layer("neck.top_down_layers.1", 2 * c3, c3, n, False),
             *conv_module("neck.downsample_layers.0", c3, c3, 3), *conv_module("neck.downsample_layers.1", c4, c4, 3),
             *csp_layer("neck.bottom_up_layers.0", 2 * c3, c4, n, False),
             *csp_layer("neck.bottom_up_layers.1", 2 * c4, c5, n, False)]
    for i, c in enumerate((c3, c4, c5)):
        keys += conv_module(f"neck.out_layers.{i}", c, int(256 * w), 3)
    feat = int(256 * w)
    for branch in ("cls", "reg"):
        for lvl in range(3):
            for i in range(2):
                keys += conv_module(f"bbox_head.head_module.{branch}_convs.{lvl}.{i}", feat, feat, 3)
    keys += [(f"bbox_head.head_module.rtm_cls.{lvl}.{p}", s) for lvl in range(3)
             for p, s in (("weight", (num_classes, feat, 1, 1)), ("bias", (num_classes,)))]
    keys += [(f"bbox_head.head_module.rtm_reg.{lvl}.{p}", s) for lvl in range(3)
             for p, s in (("weight", (4, feat, 1, 1)), ("bias", (4,)))]
    return keys


def level0(key):
    """The level-0 key of a head tower conv (shared convs: one tensor under every level)."""
    parts = key.split(".")
    if key.startswith("bbox_head.head_module.") and parts[2].endswith("_convs") and parts[5] == "conv":
        return ".".join(parts[:3] + ["0"] + parts[4:])
    return key


def sscma_state_dict(config, num_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    share = NETS[config][4]
    sd = {}
    for key, shape in sscma_keys(config, num_classes):
        if key.endswith("num_batches_tracked"):
            sd[key] = np.array(99, np.int64)
        elif share and level0(key) != key:
            sd[key] = sd[level0(key)]
        elif key.endswith("running_var"):
            sd[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif key.endswith(("bn.weight",)):
            sd[key] = rng.uniform(0.7, 1.3, shape).astype(np.float32)
        elif key.endswith("weight") and len(shape) == 4:  # fan-in scaled, so activations keep their size
            sd[key] = (rng.normal(0, 1, shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
        else:
            sd[key] = rng.normal(0, 0.1, shape).astype(np.float32)
    return sd


def sscma_state_dict_of(network, config, num_classes=2):
    """``network``'s weights as SSCMA would save them: SSCMA's keys (from the description above) in
    PyTorch layout, e.g. to hand a Keras model with chosen weights to a command as an SSCMA checkpoint."""
    from rtmdet_keras.models.weights import named_weights

    table = named_weights(network)
    sd = {}
    for key, shape in sscma_keys(config, num_classes):
        if key.endswith("num_batches_tracked"):
            sd[key] = np.array(99, np.int64)
            continue
        value = table[keras_key(mmdet_name(key))]
        if value.ndim == 4:  # Keras [kh, kw, in, out] (depthwise [kh, kw, C, 1]) -> PyTorch [out, in, kh, kw]
            value = value.transpose(2, 3, 0, 1) if ".depthwise_conv." in key else value.transpose(3, 2, 0, 1)
        assert value.shape == tuple(shape), (key, value.shape, shape)
        sd[key] = np.ascontiguousarray(value)
    return sd


# The mmdetection name of each SSCMA tensor, written out independently of the converter's table.
def mmdet_name(key):
    for theirs, ours in (("neck.reduce_layers.2.", "neck.reduce_layers.0."),
                         ("neck.top_down_layers.0.0.", "neck.top_down_blocks.0."),
                         ("neck.top_down_layers.0.1.", "neck.reduce_layers.1."),
                         ("neck.top_down_layers.1.", "neck.top_down_blocks.1."),
                         ("neck.downsample_layers.", "neck.downsamples."),
                         ("neck.bottom_up_layers.", "neck.bottom_up_blocks."),
                         ("neck.out_layers.", "neck.out_convs."),
                         ("bbox_head.head_module.", "bbox_head.")):
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return key


def sscma_cfg(config, num_classes=2, **overrides):
    return load_config(f"configs/{config}.py", {"imgsz": [64, 64], "num_classes": num_classes, **overrides})


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def nano():
    from rtmdet_keras.models import build_model

    return build_model(sscma_cfg("rtmdet_nano_8xb32_300e_coco"))


# --------------------------------------------------------------------------------------------
# One to one
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(NETS))
def test_sscma_state_dict_loads_one_to_one(config, nano):
    from rtmdet_keras.models import build_model

    model = nano if config == "rtmdet_nano_8xb32_300e_coco" else build_model(sscma_cfg(config))
    sd = sscma_state_dict(config, seed=1)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([np.full(v.shape, np.nan, np.float32) for v in layer.weights])
    lines = []
    report = load_weights(model, {"state_dict": sd, "meta": {}}, print_fn=lines.append)
    assert report.layout == "sscma" and "SSCMA/mmyolo layout" in lines[0]
    expected = [k for k in sd if not k.endswith("num_batches_tracked")]
    assert sorted(report.used) == sorted(expected) and len(report.used) == len(set(report.used))
    assert sorted(report.ignored) == sorted(k for k in sd if k.endswith("num_batches_tracked"))
    weights = named_weights(model)
    assert all(np.isfinite(v).all() for v in weights.values()), "a Keras weight was not set"
    for key in expected:
        if level0(key) != key and NETS[config][4]:
            continue  # shared: the model holds level 0's
        np.testing.assert_array_equal(weights[keras_key(mmdet_name(key))], to_keras_layout(key, sd[key]), err_msg=key)


def test_sscma_names_that_only_differ_in_the_neck_land_where_the_arithmetic_puts_them(nano):
    sd = sscma_state_dict("rtmdet_nano_8xb32_300e_coco", seed=2)
    load_weights(nano, sd, print_fn=quiet)
    # SSCMA's 1x1 conv at the end of its first top-down layer is the 128 -> 64 reduce of T4.
    kernel = nano.get_layer("neck.reduce_layers.1.conv").get_weights()[0]
    assert kernel.shape == (1, 1, 128, 64)
    np.testing.assert_array_equal(kernel[0, 0, 5, 7], sd["neck.top_down_layers.0.1.conv.weight"][7, 5, 0, 0])
    kernel = nano.get_layer("neck.reduce_layers.0.conv").get_weights()[0]  # SSCMA reduce_layers.2: C5 256 -> 128
    np.testing.assert_array_equal(kernel[0, 0, 200, 100], sd["neck.reduce_layers.2.conv.weight"][100, 200, 0, 0])
    bias = nano.get_layer("bbox_head.rtm_reg.2").get_weights()[1]
    np.testing.assert_array_equal(bias, sd["bbox_head.head_module.rtm_reg.2.bias"])


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_what_cannot_match_names_the_tensor_and_both_shapes(nano):
    sd = sscma_state_dict("rtmdet_nano_8xb32_300e_coco", num_classes=3)
    with pytest.raises(CheckpointError) as e:
        load_weights(nano, sd, strict_classes=True, print_fn=quiet)
    msg = str(e.value)
    assert "bbox_head.head_module.rtm_cls.0.weight: [3, 64, 1, 1] in the checkpoint, [2, 64, 1, 1] in the model" in msg
    assert "bbox_head.head_module.rtm_cls.2.bias: [3] in the checkpoint, [2] in the model" in msg
    assert "num_classes=3" in msg
    # Without strict_classes (fine-tuning) the class convs keep their initialisation instead.
    report = load_weights(nano, sd, print_fn=quiet)
    assert len(report.kept_init) == 3

    # nano_relu's checkpoint (channel attention, 1 neck block) into nano: SSCMA's names in the message.
    with pytest.raises(CheckpointError) as e:
        load_weights(nano, sscma_state_dict("rtmdet_nano_8xb32_300e_coco_relu"), print_fn=quiet)
    msg = str(e.value)
    assert "backbone.stage1.1.attention.fc.weight" in msg and "neck.top_down_layers.0.0.blocks.0.conv1.conv.weight" in msg
    assert "SSCMA config" in msg

    sd = sscma_state_dict("rtmdet_nano_8xb32_300e_coco")
    del sd["neck.top_down_layers.0.1.bn.running_var"]
    with pytest.raises(CheckpointError, match=r"not in the checkpoint: neck\.top_down_layers\.0\.1\.bn\.running_var"):
        load_weights(nano, sd, print_fn=quiet)


def test_layout_detection_refuses_mixed_and_qat_state_dicts():
    sd = sscma_state_dict("rtmdet_nano_8xb32_300e_coco")
    assert detect_layout(sd) == "sscma"
    assert detect_layout({mmdet_name(k): v for k, v in sd.items()}) == "mmdetection"
    assert detect_layout({k: v for k, v in sd.items() if k.startswith("backbone.")}) == "backbone"
    with pytest.raises(CheckpointError, match="mixes"):
        detect_layout([*sd, "neck.out_convs.0.conv.weight"])
    qat = {f"_model.{k.replace('.', '_')}": v for k, v in sd.items()}
    with pytest.raises(CheckpointError, match="SSCMA QAT checkpoint"):
        detect_layout(qat)


# --------------------------------------------------------------------------------------------
# Config names, commands
# --------------------------------------------------------------------------------------------


def test_sscma_config_names_resolve_to_presets_with_a_note():
    lines = []
    cfg = load_config("configs/rtmdet_nano_8xb32_300e_coco.py", ["num_classes=2"], print_fn=lines.append)
    assert cfg.preset == "nano" and cfg.name == "nano" and lines == [
        "configs/rtmdet_nano_8xb32_300e_coco.py: SSCMA's config name; using preset nano"]
    for name, preset in (("rtmdet_nano_8xb32_300e_coco_relu.py", "nano_relu"),
                         ("configs/rtmdet/rtmdet_nano_8xb32_300e_coco_relu_q.py", "nano_relu_q"),
                         ("configs/rtmdet_mnv4_8xb32_300e_coco.py", "mnv4"), ("rtmdet_m_8xb32_300e_coco", "m"),
                         ("rtmdet_l_8xb32_300e_coco.py", "l")):
        assert load_config(name).preset == preset
    lines = []
    s = load_config("rtmdet_s_8xb32_300e_coco.py", print_fn=lines.append)
    m = s.model  # SSCMA's s inherits its l config: ReLU, no attention, round(1 * 0.33) neck blocks, RGB/255
    assert (s.preset, m.act, m.channel_attention, m.neck_csp_blocks, m.exp_on_reg) == ("s", "relu", False, 0, False)
    assert (m.channel_order, list(m.std), m.share_conv) == ("rgb", [255.0] * 3, True)
    assert "using preset s with SSCMA's settings model.act=relu model.channel_attention=false" in lines[0]
    assert load_config("rtmdet_l_8xb32_300e_coco.py").model.neck_csp_blocks == 1
    from rtmdet_keras.config import ConfigError

    with pytest.raises(ConfigError, match=r"runs no Python config.*Did you mean rtmdet_nano_8xb32_300e_coco\.py"):
        load_config("configs/rtmdet_nano_8xb32_300e_coc.py")


def test_commands_take_sscma_config_names_and_refuse_unknown_keys(tmp_path):
    from click.testing import CliRunner

    from rtmdet_keras.commands.export import export_command

    missing = tmp_path / "epoch_50.pth"
    missing.write_bytes(b"x")
    r = CliRunner().invoke(export_command, ["configs/rtmdet_nano_8xb32_300e_coco.py", str(missing),
                                            "--cfg-options", "num_classes=2", "base_lr=0.001"])
    assert r.exit_code == 1 and "unknown key 'base_lr'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(export_command, ["configs/rtmdet_nano_8xb32_300e_coco.py", str(missing),
                                            "--cfg-options", "num_clases=2"])
    assert r.exit_code == 1 and "unknown key 'num_clases'; did you mean 'num_classes'" in r.output


def test_model_kind_of_pth_and_converted_npz(tmp_path, nano):
    from rtmdet_keras.runtime.loading import load_network, model_kind

    sd = sscma_state_dict("rtmdet_nano_8xb32_300e_coco", seed=5)
    cfg = sscma_cfg("rtmdet_nano_8xb32_300e_coco")
    out = tmp_path / "sscma_nano.npz"
    lines = []
    convert_checkpoint({"state_dict": sd, "meta": {}}, out, cfg, print_fn=lines.append)
    assert "SSCMA/mmyolo layout" in lines[0]
    table, meta = read_named_weights(out)
    assert meta["source_layout"] == "sscma" and meta["num_classes"] == 2
    assert model_kind(out) == "weights" and model_kind(tmp_path / "x.pth") == "weights"
    net = load_network(cfg, out)
    np.testing.assert_array_equal(net.get_layer("neck.out_convs.1.bn").get_weights()[3],
                                  sd["neck.out_layers.1.bn.running_var"])
    from rtmdet_keras.runtime.loading import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"rtm_cls\.0/kernel: \[1, 1, 64, 2\] in the checkpoint, \[1, 1, 64, 5\]"):
        load_network(sscma_cfg("rtmdet_nano_8xb32_300e_coco", num_classes=5), out)


def test_keras_weights_written_in_sscma_layout_come_back_unchanged(tmp_path, nano):
    from tests.models.helpers import randomize_weights

    randomize_weights(nano, seed=3)
    want = named_weights(nano)
    out = tmp_path / "epoch_50.npz"
    convert_checkpoint({"state_dict": sscma_state_dict_of(nano, "rtmdet_nano_8xb32_300e_coco"), "meta": {}}, out,
                       sscma_cfg("rtmdet_nano_8xb32_300e_coco"), print_fn=quiet)
    got, _ = read_named_weights(out)
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# --------------------------------------------------------------------------------------------
# With PyTorch: an SSCMA-layout module's state dict and outputs
# --------------------------------------------------------------------------------------------


def _sscma_torch(config, num_classes, torch):
    from tests.models.sscma_reference import SSCMA_NETS, RTMDet

    d, w, attention, neck_blocks, share = SSCMA_NETS[config]
    assert SSCMA_NETS[config] == NETS[config]
    return RTMDet(d, w, attention, neck_blocks, share, num_classes).eval()


@pytest.mark.parametrize("config", list(NETS))
def test_torch_state_dict_of_the_sscma_module_is_the_description(config):
    torch = pytest.importorskip("torch")
    net = _sscma_torch(config, 2, torch)
    got = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    assert got == [(k, tuple(s)) for k, s in sscma_keys(config)]


@pytest.mark.parametrize("config", ["rtmdet_nano_8xb32_300e_coco", "rtmdet_nano_8xb32_300e_coco_relu",
                                    "rtmdet_s_8xb32_300e_coco"])
def test_torch_outputs_equal_the_sscma_module(config, tmp_path):
    torch = pytest.importorskip("torch")
    from rtmdet_keras.models import build_model

    num_classes = 3
    net = _sscma_torch(config, num_classes, torch)
    sd = sscma_state_dict(config, num_classes, seed=7)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    cfg = sscma_cfg(config, num_classes)
    pth = tmp_path / "epoch_50.pth"  # as SSCMA saves it: meta + state_dict (shared convs one tensor)
    torch.save({"meta": {"epoch": 50}, "state_dict": net.state_dict()}, pth)
    model = build_model(cfg)
    report = load_weights(model, pth, cfg=cfg, strict_classes=True, print_fn=quiet)
    assert report.layout == "sscma"

    rng = np.random.default_rng(3)
    image = rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)  # RGB 0-255, the Keras model's input
    m = cfg.model
    x = image[..., ::-1] if m.channel_order == "bgr" else image  # SSCMA's preprocessor, outside its network
    x = (x - np.array(m.mean, np.float32)) / np.array(m.std, np.float32)
    with torch.no_grad():
        cls_scores, bbox_preds = net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    out = model(image)
    for lvl, level in enumerate(("p3", "p4", "p5")):
        for name, ref in ((f"cls_{level}", cls_scores[lvl]), (f"reg_{level}", bbox_preds[lvl])):
            got = np.asarray(out[name]).reshape(1, -1, ref.shape[-1])  # SSCMA flattens each level, batch 1
            ref = ref.numpy()
            assert np.abs(ref).max() > 0.1  # not a vanishing signal
            np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, np.abs(ref).max()), rtol=1e-4, err_msg=name)


# --------------------------------------------------------------------------------------------
# The seed's three commands on a converted SSCMA-layout nano checkpoint
# --------------------------------------------------------------------------------------------


def _run(args, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_seed_commands_on_an_sscma_nano_checkpoint(demo_dataset, tmp_path):
    # SSCMA's own file layout: work_dirs/<config>/epoch_50.pth; here its converted .npz (CI has no torch).
    ckpt = tmp_path / "work_dirs" / "rtmdet_nano_8xb32_300e_coco" / "epoch_50.npz"
    ckpt.parent.mkdir(parents=True)
    sd = sscma_state_dict("rtmdet_nano_8xb32_300e_coco", num_classes=2, seed=11)
    convert_checkpoint({"state_dict": sd, "meta": {}}, ckpt, sscma_cfg("rtmdet_nano_8xb32_300e_coco"),
                       print_fn=quiet)
    config = "configs/rtmdet_nano_8xb32_300e_coco.py"  # SSCMA's name; there is no such file here
    data = ["--cfg-options", f"data_root={demo_dataset}", "num_classes=2",
            "train_ann_file=train/_annotations.coco.json", "val_ann_file=valid/_annotations.coco.json",
            "train_img_prefix=train/", "val_img_prefix=valid/"]
    out = _run(["rtmdet_keras.export", config, str(ckpt), *data, "export.calib_images=8", "--imgsz", "64", "64",
                "--format", "tflite", "--int8"], tmp_path)
    assert "SSCMA's config name; using preset nano" in out and "converted from an SSCMA/mmyolo-layout" in out
    tflite = ckpt.parent / "nano_int8.tflite"
    assert tflite.is_file()

    out = _run(["rtmdet_keras.evaluate", config, "--tflite", str(tflite), *data, "imgsz=[64,64]", "--no-plots"],
               tmp_path)
    assert "Average Precision" in out

    # The third command, qat, runs on such a checkpoint in tests/qat/test_qat.py (its one QAT run takes its
    # float model as a converted SSCMA epoch_50 under SSCMA's config name): a second QAT run here would
    # add minutes to CI.
