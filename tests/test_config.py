"""Config loading, SSCMA-style overrides and validation."""

import pytest
import yaml

from rtmdet_keras.config import CONFIG_DIR, Config, ConfigError, load_config, parse_override_value, valid_keys

PRESETS = ["nano", "nano_relu", "nano_relu_q", "tiny", "s", "m", "l", "x", "mnv4"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_lists_every_key(name):
    cfg = load_config(name)
    assert cfg.name == name and cfg.preset == name
    # Configs are complete: every settable key appears in the file, so a reader sees every number.
    data = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    flat = set()
    for k, v in data.items():
        if isinstance(v, dict):
            flat.update(f"{k}.{kk}" for kk in v)
        else:
            flat.add(k)
    assert flat == set(valid_keys()) - {"name"}


def test_bare_name_with_suffix_and_path_find_the_same_file(tmp_path):
    a = load_config("tiny")
    b = load_config("tiny.yaml")
    c = load_config(str(CONFIG_DIR / "tiny.yaml"))
    assert a.to_dict() == b.to_dict() == c.to_dict()


def test_sscma_command_line_overrides():
    cfg = load_config(
        "nano.yaml",
        [
            "data_root=/data/mask/",
            "num_classes=2",
            "train_ann_file=train/_annotations.coco.json",
            "val_ann_file=valid/_annotations.coco.json",
            "train_img_prefix=train/",
            "val_img_prefix=valid/",
            "max_epochs=50",
            "imgsz='(320,256)'",
        ],
    )
    assert cfg.data_root == "/data/mask/"
    assert cfg.num_classes == 2 and cfg.max_epochs == 50
    assert cfg.imgsz == [320, 256] and cfg.input_shape == (320, 256, 3)


@pytest.mark.parametrize(
    "text,value",
    [("'(192,192)'", [192, 192]), ("(192, 192)", [192, 192]), ('"[1,2]"', [1, 2]), ("[0.5, 1.5]", [0.5, 1.5]),
     ("50", 50), ("true", True), ("null", None), ("train/", "train/")],
)
def test_override_values_are_parsed_as_data(text, value):
    assert parse_override_value(text) == value


def test_nested_keys_lists_and_int_to_float():
    cfg = load_config("nano", ["model.widen_factor=1", "augment.resize_ratio_range=[0.1,2]", "imgsz=256", "lr=1e-4"])
    assert cfg.lr == 1e-4
    assert cfg.model.widen_factor == 1.0 and isinstance(cfg.model.widen_factor, float)
    assert cfg.augment.resize_ratio_range == [0.1, 2.0]
    assert cfg.imgsz == [256, 256]


def test_overrides_never_evaluate_code():
    with pytest.raises(ConfigError):
        load_config("nano", ["data_root=!!python/object/apply:os.system ['true']"])


@pytest.mark.parametrize(
    "override,words",
    [
        ("imgsz=banana", ["imgsz", "list"]),
        ("num_clases=2", ["num_clases", "num_classes"]),
        ("widen_factor=0.5", ["widen_factor", "model.widen_factor"]),
        ("model.act=gelu", ["model.act", "relu", "silu"]),
        ("max_epochs=ten", ["max_epochs", "integer"]),
        ("imgsz=(100,100)", ["imgsz", "32"]),
        ("num_classes=0", ["num_classes"]),
        ("use_amp", ["key=value"]),
    ],
)
def test_bad_override_is_one_line_naming_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config("nano", [override])
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("num_classes: 3\nmodel:\n  widen_factr: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "model.widen_factor" in str(e.value)


def test_partial_file_takes_defaults_and_unknown_preset_suggests(tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text("num_classes: 3\n")
    cfg = load_config(p)
    assert cfg.num_classes == 3 and cfg.name == "small" and cfg.model == Config().model
    with pytest.raises(ConfigError) as e:
        load_config("nanoo")
    assert "nano" in str(e.value)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config("s", ["num_classes=3", "imgsz='(320,320)'", "class_names=[a,b,c]"])
    out = tmp_path / "run" / "config.yaml"
    cfg.save(out)
    again = load_config(out)
    a, b = cfg.to_dict(), again.to_dict()
    a.pop("name"), b.pop("name")
    assert a == b


def test_class_names_must_match_num_classes():
    with pytest.raises(ConfigError) as e:
        load_config("nano", ["num_classes=3", "class_names=[a,b]"])
    assert "class_names" in str(e.value) and "3" in str(e.value)


def test_epochs_is_another_name_for_max_epochs(tmp_path):
    # SSCMA's current tutorial overrides epochs=...; the QAT recipe's own qat.epochs is untouched.
    cfg = load_config("nano", ["epochs=7"])
    assert cfg.max_epochs == 7 and cfg.qat.epochs == 5
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 12\n")
    assert load_config(path).max_epochs == 12
    with pytest.raises(ConfigError) as e:
        load_config("nano", ["epochs=7", "max_epochs=9"])
    assert "epochs=7" in str(e.value) and "max_epochs=9" in str(e.value)
    assert load_config("nano", ["epochs=7", "max_epochs=7"]).max_epochs == 7


def test_patience_is_zero_by_default_and_never_negative():
    assert load_config("nano").patience == 0
    assert load_config("nano", ["patience=5"]).patience == 5
    with pytest.raises(ConfigError, match="patience"):
        load_config("nano", ["patience=-1"])


def test_yaml_naming_a_preset_starts_from_it_and_changes_only_its_keys(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("preset: tiny\nnum_classes: 3\nimgsz: [320, 320]\nmodel:\n  act: relu\n")
    cfg = load_config(p)
    direct = load_config("tiny", ["num_classes=3", "imgsz=[320,320]", "model.act=relu"])
    assert cfg.name == "mine" and cfg.preset == "tiny"
    a, b = cfg.to_dict(), direct.to_dict()
    a.pop("name"), b.pop("name")
    assert a == b
    # tiny's own numbers, not the built-in defaults: widen 0.375, deepen 0.167, BGR mean.
    assert (cfg.model.widen_factor, cfg.model.deepen_factor) == (0.375, 0.167)
    assert cfg.model.channel_order == "bgr" and cfg.model.act == "relu"


def test_preset_file_and_override_of_a_based_file_agree(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("preset: s\nmax_epochs: 7\n")
    cfg = load_config(p, ["max_epochs=9", "preset=s"])  # repeating the preset is allowed
    assert cfg.max_epochs == 9 and cfg.model.widen_factor == 0.5 and cfg.lr == load_config("s").lr


def test_unknown_preset_in_a_file_names_file_and_suggests(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("preset: tinny\nnum_classes: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "'tinny'" in msg and "did you mean tiny" in msg


@pytest.mark.parametrize("overrides", [["preset=tiny"], {"preset": "tiny"}])
def test_preset_cannot_be_overridden(overrides):
    # It would keep nano's network and name it rtmdet_tiny.
    with pytest.raises(ConfigError) as e:
        load_config("nano", overrides)
    msg = str(e.value)
    assert "\n" not in msg and "preset=tiny" in msg and "--config tiny" in msg and "preset: tiny" in msg


def test_non_mapping_file_is_one_line_naming_the_file(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- preset: tiny\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "mapping" in str(e.value)


def test_preset_in_a_file_builds_that_presets_network(tmp_path):
    import numpy as np

    from rtmdet_keras.models import build_model

    p = tmp_path / "mine.yaml"
    p.write_text("preset: tiny\nimgsz: [64, 64]\nmax_epochs: 5\n")
    model = build_model(load_config(p))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # mmdetection's RTMDet-tiny at 80 classes has exactly 4,896,168 parameters (tests/models/test_rtmdet.py);
    # nano's network, which a partial file used to get under tiny's name, has under half as many.
    assert model.name == "rtmdet_tiny" and trainable == 4_896_168
