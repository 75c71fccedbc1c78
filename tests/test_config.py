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
