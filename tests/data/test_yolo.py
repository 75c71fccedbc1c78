"""read_yolo on tiny Ultralytics-layout data sets written in tmp: normalised cx cy w h -> xyxy pixels,
data.yaml variants (names list/dict, Roboflow's ../ paths, txt image lists), and bad labels."""

import warnings

import numpy as np
import pytest
import yaml
from PIL import Image

from rtmdet_keras.config import load_config
from rtmdet_keras.data import DatasetError, DatasetWarning, detect_format, load_split, read_yolo
from rtmdet_keras.data.records import BOX_CLIPPED, LABEL_DUPLICATE, LABEL_FILE_MISSING, LABEL_MALFORMED
from rtmdet_keras.data.yolo import label_path


def make_yolo(root, labels, split="train", size=(100, 50), names=("cat", "dog"), yaml_extra=None):
    """root/images/<split>/<name>.jpg and root/labels/<split>/<name>.txt; ``labels`` maps image name to
    label text (None: no label file). Writes root/data.yaml. ``size`` is (width, height)."""
    for name, text in labels.items():
        img = root / "images" / split / f"{name}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (90, 90, 90)).save(img)
        if text is not None:
            lab = root / "labels" / split / f"{name}.txt"
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text(text)
    spec = {"path": ".", "train": "images/train", "val": "images/val", "names": list(names)}
    spec.update(yaml_extra or {})
    (root / "data.yaml").write_text(yaml.safe_dump(spec))
    return root / "data.yaml"


def read(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = read_yolo(*args, **kwargs)
    ours = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(ours) <= 1, ours  # one summary per split at most
    return ds, (ours[0] if ours else "")


def test_normalised_boxes_become_pixel_xyxy(tmp_path):
    data_yaml = make_yolo(tmp_path, {"a": "1 0.5 0.5 0.2 0.4\n0 0.1 0.2 0.2 0.4\n", "b": ""})
    ds, msg = read(data_yaml, "train", num_classes=2)
    assert msg == "" and ds.class_names == ["cat", "dog"] and ds.category_ids == [0, 1]
    a, b = ds.records
    # image 100 x 50: cx 50, cy 25, w 20, h 20 -> [40, 15, 60, 35]; cx 10, cy 10, w 20, h 20 -> [0, 0, 20, 20]
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35], [0, 0, 20, 20]], atol=1e-4)
    np.testing.assert_array_equal(a.labels, [1, 0])
    assert (a.width, a.height, a.image_id, b.image_id) == (100, 50, 0, 1)
    assert b.boxes.shape == (0, 4)  # an empty label file is a negative, not a problem
    assert a.path == str((tmp_path / "images" / "train" / "a.jpg").resolve())


def test_names_as_mapping_and_val_split(tmp_path):
    data_yaml = make_yolo(tmp_path, {"v": "0 0.5 0.5 0.5 0.5"}, split="val", names=(),
                          yaml_extra={"names": {0: "cat", 1: "dog", 2: "bird"}, "nc": 3})
    ds, _ = read(data_yaml, "val")
    assert ds.class_names == ["cat", "dog", "bird"] and ds.split == "val"
    np.testing.assert_allclose(ds.records[0].boxes, [[25, 12.5, 75, 37.5]])


def test_roboflow_yolo_export_paths(tmp_path):
    # Roboflow: data.yaml beside train/images, with 'train: ../train/images'
    for split, folder in (("train", "train"), ("val", "valid")):
        img = tmp_path / folder / "images" / "x.jpg"
        img.parent.mkdir(parents=True)
        Image.new("RGB", (10, 10)).save(img)
        (tmp_path / folder / "labels").mkdir()
        (tmp_path / folder / "labels" / "x.txt").write_text("0 0.5 0.5 1 1\n")
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['thing']\n")
    cfg = load_config("nano", [f"data_root={tmp_path}", "num_classes=1"])
    assert detect_format(cfg) == "yolo"
    for split in ("train", "val"):
        ds = load_split(cfg, split)
        np.testing.assert_allclose(ds.records[0].boxes, [[0, 0, 10, 10]])


def test_image_list_file(tmp_path):
    make_yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1", "b": "1 0.5 0.5 0.1 0.1"})
    (tmp_path / "train.txt").write_text("./images/train/b.jpg\n")
    data_yaml = make_yolo(tmp_path, {}, yaml_extra={"train": "train.txt"})
    ds, _ = read(data_yaml)
    assert len(ds) == 1 and ds.records[0].labels.tolist() == [1]


def test_polygon_line_becomes_its_bounding_box(tmp_path):
    data_yaml = make_yolo(tmp_path, {"a": "0 0.1 0.2 0.5 0.2 0.3 0.8\n"})
    ds, _ = read(data_yaml)
    np.testing.assert_allclose(ds.records[0].boxes, [[10, 10, 50, 40]], atol=1e-4)


def test_malformed_duplicate_and_partly_outside_lines_are_counted(tmp_path):
    data_yaml = make_yolo(tmp_path, {
        "a": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n1 0.5 0.5\nx 0.1 0.1 0.1 0.1\n0.5 0.5 0.5 0.2 0.2\n"
             "1 0.95 0.5 0.2 0.2\n",
        "no_labels": None,
    })
    ds, msg = read(data_yaml)
    a, neg = ds.records
    np.testing.assert_allclose(a.boxes, [[40, 20, 60, 30], [85, 20, 100, 30]], atol=1e-4)
    assert neg.boxes.shape == (0, 4)  # kept as a negative, but counted (a wrong folder would look the same)
    assert ds.skipped == {LABEL_DUPLICATE: 1, LABEL_MALFORMED: 3, BOX_CLIPPED: 1, LABEL_FILE_MISSING: 1}
    assert "a.txt line 3" in msg and "no_labels.txt" in msg


def test_class_index_out_of_range_is_an_error(tmp_path):
    data_yaml = make_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(DatasetError, match=r"a.txt line 2: class index 2 is outside 0..1"):
        read_yolo(data_yaml)


def test_pixel_coordinates_are_an_error(tmp_path):
    data_yaml = make_yolo(tmp_path, {"a": "0 50 25 20 20\n"})
    with pytest.raises(DatasetError, match="a.txt line 1: coordinates .* not normalised"):
        read_yolo(data_yaml)


def test_no_label_file_at_all_is_an_error(tmp_path):
    data_yaml = make_yolo(tmp_path, {"a": None, "b": None})
    with pytest.raises(DatasetError, match=r"none of the 2 images .* has a label file .*labels/train/a.txt"):
        read(data_yaml)


def test_yaml_problems(tmp_path):
    data_yaml = make_yolo(tmp_path, {"a": ""}, yaml_extra={"val": None})
    with pytest.raises(DatasetError, match="no 'val' entry"):
        read_yolo(data_yaml, "val")
    data_yaml = make_yolo(tmp_path, {"a": ""}, yaml_extra={"nc": 3})
    with pytest.raises(DatasetError, match="nc is 3 but 'names' lists 2"):
        read_yolo(data_yaml)
    data_yaml = make_yolo(tmp_path, {"a": ""}, yaml_extra={"train": "images/nowhere"})
    with pytest.raises(DatasetError, match="images/nowhere, which does not exist"):
        read_yolo(data_yaml)
    (tmp_path / "data.yaml").write_text("train: [unclosed\n")
    with pytest.raises(DatasetError, match="cannot read the data set yaml"):
        read_yolo(tmp_path / "data.yaml")


def test_load_split_checks_num_classes_and_class_names(tmp_path):
    make_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    cfg = load_config("nano", [f"data_root={tmp_path}", "num_classes=3"])
    with pytest.raises(DatasetError, match=r"2 classes \('cat', 'dog'\) but num_classes is 3"):
        load_split(cfg, "train")
    cfg = load_config("nano", [f"data_root={tmp_path}", "num_classes=2", "class_names=[dog, cat]"])
    with pytest.raises(DatasetError, match="class_names in the config"):
        load_split(cfg, "train")
    cfg = load_config("nano", [f"data_root={tmp_path}", "num_classes=2", "dataset_format=yolo"])
    assert load_split(cfg, "train").class_names == ["cat", "dog"]


def test_folder_without_yaml_takes_names_from_the_config(tmp_path):
    make_yolo(tmp_path, {"a": "1 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "data.yaml").unlink()
    cfg = load_config("nano", [f"data_root={tmp_path}", "num_classes=2", "class_names=[cat, dog]"])
    assert detect_format(cfg) == "yolo"  # from the labels/ folder
    ds = load_split(cfg, "train")  # images/train found without a yaml
    assert ds.class_names == ["cat", "dog"] and ds.records[0].labels.tolist() == [1]


def test_label_path_rule():
    assert label_path("/d/images/train/x.jpg").as_posix() == "/d/labels/train/x.txt"
    assert label_path("/images/d/images/x.png").as_posix() == "/images/d/labels/x.txt"  # last 'images' only
    assert label_path("/d/pics/x.jpg").as_posix() == "/d/pics/x.txt"
