"""check-data: the report's numbers on a hand-built data set, and the command on the demo set."""

import subprocess
import sys

import numpy as np
from click.testing import CliRunner

from rtmdet_keras.commands.check_data import check_data_command
from rtmdet_keras.data.check import dataset_stats, format_report, size_histogram
from rtmdet_keras.data.records import BOX_CLIPPED, MISSING_IMAGE, DetectionDataset, ImageRecord


def box(side, x=0.0):
    return [x, 0.0, x + side, side]


def hand_made():
    records = [
        ImageRecord(1, "/a.jpg", 200, 100, np.array([box(31.9), box(32), box(96, 40)], np.float32),
                    np.array([0, 1, 1], np.int32)),
        ImageRecord(2, "/b.jpg", 400, 300, np.array([box(10)], np.float32), np.array([1], np.int32),
                    crowd_boxes=np.array([box(50)], np.float32), crowd_labels=np.array([0], np.int32)),
        ImageRecord(3, "/c.jpg", 50, 60, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32)),
    ]
    return DetectionDataset(records, ["cat", "dog"], [1, 2], "ann.json", "train",
                            skipped={MISSING_IMAGE: 2, BOX_CLIPPED: 5},
                            skipped_examples={MISSING_IMAGE: ["x.jpg (image id 9)"]})


def test_size_histogram_uses_coco_boundaries():
    # COCO: small is area < 32², medium < 96², large from 96² on.
    assert size_histogram([31.9 ** 2, 32 ** 2, 96 ** 2 - 1, 96 ** 2, 10]) == {"small": 2, "medium": 2, "large": 1}


def test_stats_of_a_hand_built_set():
    s = dataset_stats(hand_made(), imgsz=(100, 100))
    assert (s["images"], s["with_boxes"], s["without_boxes"], s["boxes"], s["crowd"]) == (3, 2, 1, 4, 1)
    assert s["boxes_per_class"] == {"cat": 1, "dog": 3}
    assert s["images_per_class"] == {"cat": 1, "dog": 2}
    assert s["sizes"] == {"small": 2, "medium": 1, "large": 1}
    # Keep-ratio resize to 100x100: image a (200x100) is halved, so 31.9 -> 16, 32 -> 16 (small) and
    # 96 -> 48 (48² >= 32²: medium); image b (400x300) is quartered, 10 -> 2.5 (small).
    assert s["sizes_at_imgsz"] == {"small": 3, "medium": 1, "large": 0}
    assert s["image_sizes"] == ([50, 60], [400, 300])


def test_report_table():
    text = format_report(hand_made())
    lines = text.splitlines()
    assert lines[0] == "train split: ann.json"
    assert "images        3   with boxes 2, without (negatives) 1" in text
    assert "(+ 1 iscrowd regions, not targets)" in text
    assert any(line.split()[:4] == ["dog", "3", "75.0%", "2"] for line in lines)
    assert any(line.split()[:4] == ["cat", "1", "25.0%", "1"] for line in lines)
    assert "skipped or repaired: 7" in text
    assert "5  box partly outside the image (clipped)" in text
    assert "2  image file missing (image skipped)  e.g. x.jpg (image id 9)" in text


def test_report_warns_about_a_class_without_training_boxes():
    ds = hand_made()
    ds.records[0].labels[:] = 1
    assert "no training box of 'cat'" in format_report(ds)


def test_command_on_the_demo_set(demo_dataset):
    r = CliRunner().invoke(check_data_command, ["--config", "nano", "--cfg-options", f"data_root={demo_dataset}",
                                                "num_classes=2"])
    assert r.exit_code == 0, r.output
    assert "train split:" in r.output and "val split:" in r.output
    assert "images       24" in r.output and "images        8" in r.output
    assert "circle" in r.output and "square" in r.output and "at imgsz 192x192" in r.output


def test_command_with_wrong_num_classes_or_root_fails_cleanly(demo_dataset, tmp_path):
    r = CliRunner().invoke(check_data_command, ["--config", "nano", "--cfg-options", f"data_root={demo_dataset}",
                                                "num_classes=3"])
    assert r.exit_code == 1 and "num_classes is 3" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(check_data_command, ["--cfg-options", f"data_root={tmp_path / 'absent'}"])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_python_m_entry_point_without_tensorflow(demo_dataset):
    code = ("import sys, runpy; sys.argv = ['check', '--config', 'nano', '--split', 'val', '--cfg-options', "
            f"'data_root={demo_dataset}']\n"
            "try:\n    runpy.run_module('rtmdet_keras.data.check', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'tensorflow' not in sys.modules, 'check-data imported tensorflow'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "val split:" in out.stdout and "train split:" not in out.stdout
