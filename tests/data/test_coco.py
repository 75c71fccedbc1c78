"""read_coco on tiny hand-written COCO files: Roboflow's unused category 0, and every kind of bad
input either a clear error (file, id, field, what to do) or a skip counted in ONE warning per split."""

import json
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from rtmdet_keras.config import load_config
from rtmdet_keras.data import DatasetError, DatasetWarning, load_split, read_coco
from rtmdet_keras.data.records import (
    BOX_CLIPPED, BOX_EMPTY, BOX_MISSING, BOX_NAN, BOX_OUTSIDE, MISSING_IMAGE, SIZE_MISMATCH, UNREADABLE_IMAGE,
)

ROBOFLOW_CATEGORIES = [
    {"id": 0, "name": "pets", "supercategory": "none"},
    {"id": 1, "name": "cat", "supercategory": "pets"},
    {"id": 2, "name": "dog", "supercategory": "pets"},
]


def make_image(path, size=(40, 30), mode="RGB"):
    """A tiny image file; size is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)


def ann(id_, image_id, category_id, bbox, **extra):
    return {"id": id_, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0, **extra}


def write_split(folder, images, annotations, categories=ROBOFLOW_CATEGORIES, make_files=True):
    """Roboflow layout: folder/_annotations.coco.json with the images beside it. ``images`` are
    ``(id, file_name, width, height)``."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for image_id, name, w, h in images:
        entries.append({"id": image_id, "file_name": name, "width": w, "height": h})
        if make_files:
            make_image(folder / name, (w, h))
    path = folder / "_annotations.coco.json"
    path.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": categories}))
    return path


def read_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        return read_coco(*args, **kwargs)


def read_with_one_warning(*args, **kwargs):
    """read_coco, asserting it warns exactly once (one summary per split); returns (dataset, message)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = read_coco(*args, **kwargs)
    ours = [w for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert ours[0].filename == __file__  # reported where the user called, not inside the reader
    return ds, str(ours[0].message)


def test_roboflow_layout_maps_used_categories_in_id_order(tmp_path):
    path = write_split(tmp_path / "train", [(0, "a.jpg", 40, 30), (1, "b.jpg", 40, 30), (2, "neg.jpg", 40, 30)], [
        ann(1, 0, 2, [1, 2, 10, 5]),
        ann(2, 0, 1, [0, 0, 40, 30]),
        ann(3, 1, 2, [5.5, 6.5, 2, 3]),
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file reads without any warning
        ds = read_coco(path, tmp_path / "train", num_classes=2)
    assert ds.class_names == ["cat", "dog"] and ds.category_ids == [1, 2]
    assert ds.num_classes == 2 and len(ds) == 3 and dict(ds.skipped) == {}
    a, b, neg = ds.records
    np.testing.assert_array_equal(a.boxes, [[1, 2, 11, 7], [0, 0, 40, 30]])  # xywh -> xyxy pixels
    np.testing.assert_array_equal(a.labels, [1, 0])  # category 2 ("dog") -> label 1
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int32
    np.testing.assert_allclose(b.boxes, [[5.5, 6.5, 7.5, 9.5]])
    assert (a.width, a.height) == (40, 30)
    assert neg.boxes.shape == (0, 4) and neg.labels.shape == (0,)  # kept as a negative
    assert a.path == str((tmp_path / "train" / "a.jpg").resolve())
    # img_prefix defaults to the JSON's folder
    assert read_coco(path).records[0].path == a.path


def test_category_ids_can_be_sparse_and_unordered(tmp_path):
    cats = [{"id": 7, "name": "z"}, {"id": 3, "name": "y"}, {"id": 5, "name": "unused"}]
    path = write_split(tmp_path, [(10, "a.png", 20, 20)], [ann(1, 10, 7, [0, 0, 5, 5]), ann(2, 10, 3, [1, 1, 5, 5])],
                       categories=cats)
    ds = read_coco(path)
    assert ds.category_ids == [3, 7] and ds.class_names == ["y", "z"]
    np.testing.assert_array_equal(ds.records[0].labels, [1, 0])


def test_num_classes_mismatch_says_both_numbers_and_the_names(tmp_path):
    path = write_split(tmp_path, [(0, "a.jpg", 40, 30)], [ann(1, 0, 1, [0, 0, 5, 5]), ann(2, 0, 2, [0, 0, 5, 5])])
    with pytest.raises(DatasetError) as e:
        read_coco(path, num_classes=3)
    msg = str(e.value)
    assert "2 categories" in msg and "num_classes is 3" in msg
    assert "'cat'" in msg and "'dog'" in msg and "'pets' (id 0" in msg and "num_classes=2" in msg
    assert "_annotations.coco.json" in msg


def test_missing_and_unreadable_json(tmp_path):
    with pytest.raises(DatasetError, match="nope.json: annotation file not found.*data_root"):
        read_coco(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(DatasetError, match=r"bad.json: not valid JSON \(line 1"):
        read_coco(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="bad.json: a COCO annotation file is a JSON object"):
        read_coco(bad)


@pytest.mark.parametrize("missing", ["images", "annotations", "categories"])
def test_missing_section(tmp_path, missing):
    data = {"images": [], "annotations": [], "categories": []}
    del data[missing]
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=f"x.json: not a COCO detection file: missing '{missing}'"):
        read_coco(path)


def test_section_of_wrong_type_and_entry_without_id(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"images": {}, "annotations": [], "categories": []}))
    with pytest.raises(DatasetError, match="'images' must be a list"):
        read_coco(path)
    path.write_text(json.dumps({"images": [{"file_name": "a.jpg"}], "annotations": [], "categories": []}))
    with pytest.raises(DatasetError, match=r"images\[0\] has no 'id' field"):
        read_coco(path)


def test_annotation_of_unknown_image(tmp_path):
    path = write_split(tmp_path, [(0, "a.jpg", 40, 30)], [ann(1, 0, 1, [0, 0, 5, 5]), ann(17, 99, 1, [0, 0, 5, 5])])
    with pytest.raises(DatasetError, match=r"1 annotation\(s\) refer to an image_id that is not in 'images' "
                                           r"\(annotation id 17 -> image_id 99\)"):
        read_coco(path)


def test_annotation_of_unknown_category(tmp_path):
    path = write_split(tmp_path, [(0, "a.jpg", 40, 30)], [ann(5, 0, 4, [0, 0, 5, 5])])
    with pytest.raises(DatasetError, match=r"annotation id 5 -> category_id 4.*categories are 0, 1, 2"):
        read_coco(path)


def test_duplicate_image_ids(tmp_path):
    path = write_split(tmp_path, [(3, "a.jpg", 40, 30), (3, "b.jpg", 40, 30)], [])
    with pytest.raises(DatasetError, match=r"image id\(s\) appear more than once.*id 3: a.jpg, b.jpg"):
        read_coco(path)


def test_missing_and_corrupt_images_are_skipped_and_counted(tmp_path):
    folder = tmp_path / "train"
    path = write_split(folder, [(0, "ok.jpg", 40, 30), (1, "gone.jpg", 40, 30), (2, "bad.jpg", 40, 30),
                                (3, "cut.jpg", 64, 64)],
                       [ann(1, 0, 1, [0, 0, 5, 5]), ann(2, 1, 1, [0, 0, 5, 5])])
    (folder / "gone.jpg").unlink()
    (folder / "bad.jpg").write_bytes(b"garbage" * 20)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "cut.jpg")
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    ds, msg = read_with_one_warning(path, folder, split="train")
    assert [r.image_id for r in ds.records] == [0]
    assert ds.skipped[MISSING_IMAGE] == 1 and ds.skipped[UNREADABLE_IMAGE] == 2
    assert "train split" in msg and "gone.jpg (image id 1)" in msg and "bad.jpg" in msg


def test_no_readable_image_is_an_error_pointing_at_img_prefix(tmp_path):
    path = write_split(tmp_path / "train", [(0, "a.jpg", 40, 30), (1, "b.jpg", 40, 30)], [], make_files=False)
    with pytest.raises(DatasetError, match=r"none of its 2 images could be read \(2 missing.*img_prefix"):
        read_quietly(path, tmp_path / "wrong")


def test_odd_pixel_formats_are_read(tmp_path):
    from tests.data.test_images import write_png16

    folder = tmp_path / "imgs"
    make_image(folder / "grey.png", (20, 10), "L")
    make_image(folder / "rgba.png", (20, 10), "RGBA")
    make_image(folder / "pal.png", (20, 10), "P")
    write_png16(folder / "deep.png", np.full((10, 20), 40000, np.uint16))
    names = ["grey.png", "rgba.png", "pal.png", "deep.png"]
    path = write_split(folder, [(i, n, 20, 10) for i, n in enumerate(names)],
                       [ann(i, i, 1, [2, 2, 4, 4]) for i in range(4)], make_files=False)
    ds = read_coco(path)
    assert len(ds) == 4 and dict(ds.skipped) == {}
    assert all((r.width, r.height) == (20, 10) for r in ds.records)


def test_exif_rotated_jpeg_takes_displayed_size_and_json_mismatch_is_counted(tmp_path):
    from tests.data.test_images import write_exif_rotated_jpeg

    folder = tmp_path / "t"
    folder.mkdir()
    write_exif_rotated_jpeg(folder / "phone.jpg", 6)  # stored 40x20, displayed 20x40
    # The JSON gives the stored size; the box is in the displayed frame and reaches y=35 > 20.
    path = write_split(folder, [(0, "phone.jpg", 40, 20)], [ann(1, 0, 1, [2, 30, 10, 5])], make_files=False)
    ds, msg = read_with_one_warning(path)
    r = ds.records[0]
    assert (r.width, r.height) == (20, 40)
    np.testing.assert_array_equal(r.boxes, [[2, 30, 12, 35]])  # not clipped: it lies in the displayed frame
    assert ds.skipped == {SIZE_MISMATCH: 1}
    assert "40x20 in JSON, 20x40 in file" in msg


def test_bad_boxes_are_clipped_or_dropped_and_counted_in_one_warning(tmp_path):
    nan = float("nan")
    path = write_split(tmp_path, [(0, "a.jpg", 40, 30)], [
        ann(1, 0, 1, [10, 10, 5, 5]),            # fine
        ann(2, 0, 1, [-5, 20, 10, 20]),          # partly outside: clipped to [0, 20, 5, 30]
        ann(3, 0, 2, [39.8, 0, 0.5, 10]),        # 0.3 px over the edge: clipped, not counted
        ann(4, 0, 1, [50, 5, 5, 5]),             # entirely outside
        ann(5, 0, 1, [1, 1, 0, 5]),              # zero width
        ann(6, 0, 1, [1, 1, 5, -2]),             # negative height
        ann(7, 0, 1, [nan, 1, 5, 5]),            # NaN
        ann(8, 0, 1, [1, 1, math.inf, 5]),       # infinite
        {"id": 9, "image_id": 0, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]},  # no bbox
        ann(10, 0, 1, [1, 2, 3]),                # malformed bbox
    ])
    ds, msg = read_with_one_warning(path, split="val")
    r = ds.records[0]
    np.testing.assert_allclose(r.boxes, [[10, 10, 15, 15], [0, 20, 5, 30], [39.8, 0, 40, 10]], rtol=1e-6)
    np.testing.assert_array_equal(r.labels, [0, 0, 1])
    assert ds.skipped == {BOX_CLIPPED: 1, BOX_OUTSIDE: 1, BOX_EMPTY: 2, BOX_NAN: 2, BOX_MISSING: 2}
    assert msg.startswith("val split") and "8 item(s)" in msg
    assert "annotation id 4" in msg and "annotation id 7" in msg


def test_every_box_dropped_is_an_error(tmp_path):
    path = write_split(tmp_path, [(0, "a.jpg", 40, 30)], [ann(1, 0, 1, [1, 1, 0, 0]), ann(2, 0, 2, [1, 1, -1, 3])])
    with pytest.raises(DatasetError, match="every one of the 2 annotated boxes was dropped") as e:
        read_coco(path)
    assert BOX_EMPTY in str(e.value)


def test_crowd_annotations_are_not_targets(tmp_path):
    path = write_split(tmp_path, [(0, "a.jpg", 40, 30)], [
        ann(1, 0, 1, [0, 0, 10, 10]),
        ann(2, 0, 2, [20, 5, 10, 20], iscrowd=1),
    ])
    r = read_coco(path).records[0]
    np.testing.assert_array_equal(r.boxes, [[0, 0, 10, 10]])
    np.testing.assert_array_equal(r.labels, [0])
    np.testing.assert_array_equal(r.crowd_boxes, [[20, 5, 30, 25]])
    np.testing.assert_array_equal(r.crowd_labels, [1])


def test_file_without_annotations_drops_roboflow_super_category(tmp_path):
    path = write_split(tmp_path, [(0, "a.jpg", 40, 30)], [])
    ds = read_coco(path, num_classes=2)
    assert ds.class_names == ["cat", "dog"] and ds.records[0].boxes.shape == (0, 4)


def test_val_split_uses_train_labels(tmp_path):
    write_split(tmp_path / "train", [(0, "a.jpg", 40, 30)], [ann(1, 0, 1, [0, 0, 5, 5]), ann(2, 0, 2, [0, 0, 5, 5])])
    write_split(tmp_path / "valid", [(0, "a.jpg", 40, 30)], [ann(1, 0, 2, [0, 0, 5, 5])])  # only dogs
    cfg = load_config("nano", [f"data_root={tmp_path}", "num_classes=2"])
    val = load_split(cfg, "val")
    assert val.class_names == ["cat", "dog"] and val.split == "val"
    np.testing.assert_array_equal(val.records[0].labels, [1])  # dog is still label 1


def test_val_class_the_train_split_never_shows_is_an_error(tmp_path):
    write_split(tmp_path / "train", [(0, "a.jpg", 40, 30)], [ann(1, 0, 1, [0, 0, 5, 5])])
    write_split(tmp_path / "valid", [(0, "a.jpg", 40, 30)], [ann(1, 0, 2, [0, 0, 5, 5])])
    cfg = load_config("nano", [f"data_root={tmp_path}", "num_classes=1"])
    assert load_split(cfg, "train").class_names == ["cat"]
    with pytest.raises(DatasetError, match="'dog' \\(id 2\\), which the training split has no box of"):
        load_split(cfg, "val")


def test_load_split_on_the_demo_set(demo_config):
    train, val = load_split(demo_config, "train"), load_split(demo_config, "val")
    assert (len(train), len(val)) == (24, 8)
    assert train.class_names == val.class_names == ["circle", "square"]
    assert train.category_ids == [1, 2] and train.source.endswith("train/_annotations.coco.json")
    demo_config.class_names = ["square", "circle"]
    with pytest.raises(DatasetError, match="class_names in the config"):
        load_split(demo_config, "train")
    demo_config.class_names = None
    demo_config.num_classes = 3
    with pytest.raises(DatasetError, match="2 categories.*num_classes is 3"):
        load_split(demo_config, "train")


def test_auto_format_without_any_annotation_file(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "x.json").write_text("{}")
    cfg = load_config("nano", [f"data_root={tmp_path}"])
    with pytest.raises(DatasetError, match="cannot tell the format.*stuff/x.json.*train_ann_file"):
        load_split(cfg, "train")
    cfg.data_root = str(tmp_path / "absent")
    with pytest.raises(DatasetError, match="absent' does not exist"):
        load_split(cfg, "train")
