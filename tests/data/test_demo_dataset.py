"""The demo data set: Roboflow's COCO layout, deterministic, and made of clear, visible objects."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rtmdet_keras.data import load_image, read_coco
from rtmdet_keras.data.demo import make_demo_dataset

REPO = Path(__file__).resolve().parents[2]


def load(root, split):
    return json.loads((Path(root) / split / "_annotations.coco.json").read_text())


def test_roboflow_layout_with_unused_super_category(demo_dataset):
    for split, count in (("train", 24), ("valid", 8)):
        data = load(demo_dataset, split)
        assert data["categories"] == [
            {"id": 0, "name": "shapes", "supercategory": "none"},
            {"id": 1, "name": "circle", "supercategory": "shapes"},
            {"id": 2, "name": "square", "supercategory": "shapes"},
        ]
        assert len(data["images"]) == count
        assert {a["category_id"] for a in data["annotations"]} <= {1, 2}
        assert all((demo_dataset / split / im["file_name"]).is_file() for im in data["images"])
        ds = read_coco(demo_dataset / split / "_annotations.coco.json", demo_dataset / split, num_classes=2)
        assert ds.class_names == ["circle", "square"] and dict(ds.skipped) == {}


def test_images_objects_and_boxes(demo_dataset):
    data = load(demo_dataset, "train")
    sizes = np.array([(im["width"], im["height"]) for im in data["images"]])
    assert sizes.min() >= 192 and sizes.max() <= 320
    assert len({tuple(s) for s in sizes}) > 10  # mixed sizes and aspect ratios
    per_image = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        per_image[a["image_id"]].append(a)
    assert max(len(v) for v in per_image.values()) <= 6
    labels = [a["category_id"] for a in data["annotations"]]
    assert 0.3 < np.mean(np.array(labels) == 1) < 0.7  # both classes, roughly balanced
    for im in data["images"]:
        pixels = load_image(demo_dataset / "train" / im["file_name"])
        assert pixels.shape == (im["height"], im["width"], 3)
        boxes = [a["bbox"] for a in per_image[im["id"]]]
        for x, y, w, h in boxes:
            assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]
            assert 20 <= w <= 0.6 * min(im["width"], im["height"]) + 1
        for i, (x1, y1, w1, h1) in enumerate(boxes):  # mild occlusion at most
            for x2, y2, w2, h2 in boxes[:i]:
                iw = min(x1 + w1, x2 + w2) - max(x1, x2)
                ih = min(y1 + h1, y2 + h2) - max(y1, y2)
                assert max(iw, 0) * max(ih, 0) <= 0.15 * min(w1 * h1, w2 * h2) + 1e-6


def test_objects_stand_out_from_their_surroundings(demo_dataset):
    data = load(demo_dataset, "train")
    files = {im["id"]: im["file_name"] for im in data["images"]}
    contrast = []
    for a in data["annotations"]:
        img = load_image(demo_dataset / "train" / files[a["image_id"]]).astype(np.float64)
        x, y, w, h = (int(v) for v in a["bbox"])
        centre = img[y + h // 2 - h // 6: y + h // 2 + h // 6 + 1, x + w // 2 - w // 6: x + w // 2 + w // 6 + 1]
        sides = (img[max(y - 3, 0):y, x:x + w], img[y + h:y + h + 3, x:x + w],
                 img[y:y + h, max(x - 3, 0):x], img[y:y + h, x + w:x + w + 3])
        ring = np.concatenate([s.reshape(-1, 3) for s in sides])
        contrast.append(np.linalg.norm(centre.reshape(-1, 3).mean(0) - ring.mean(0)))
    assert np.mean(np.array(contrast) > 40) > 0.9, np.percentile(contrast, [5, 50])


def test_deterministic_and_a_smaller_set_is_a_prefix(demo_dataset, tmp_path):
    small = make_demo_dataset(tmp_path / "a", seed=0, num_train=3, num_valid=1)
    for split, n in (("train", 3), ("valid", 1)):
        data, full = load(small, split), load(demo_dataset, split)
        assert data["images"] == full["images"][:n]
        ids = {im["id"] for im in data["images"]}
        assert data["annotations"] == [a for a in full["annotations"] if a["image_id"] in ids]
        for im in data["images"]:
            name = im["file_name"]
            assert (small / split / name).read_bytes() == (demo_dataset / split / name).read_bytes()
    other = make_demo_dataset(tmp_path / "b", seed=1, num_train=3, num_valid=1)
    assert load(other, "train")["annotations"] != load(small, "train")["annotations"]


def test_script(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_dataset.py"), "--out", str(tmp_path / "d"),
                          "--train", "2", "--valid", "1", "--seed", "3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "wrote 2 train + 1 valid images" in out.stdout
    assert len(load(tmp_path / "d", "train")["images"]) == 2 and len(load(tmp_path / "d", "valid")["images"]) == 1
