"""browse-dataset: augmented samples written with their boxes drawn; the drawing helper."""

import numpy as np
from click.testing import CliRunner
from PIL import Image

from rtmdet_keras.cli import main
from rtmdet_keras.commands.browse import browse_command
from rtmdet_keras.data.draw import class_colour, draw_detections


def test_draw_detections_draws_box_edges_in_class_colour_on_a_copy():
    image = np.zeros((60, 80, 3), np.uint8)
    out = draw_detections(image, [[10, 20, 40, 50], [0, 0, 0, 0]], [1, -1], ["cat", "dog"], thickness=1)
    assert out is not image and not image.any()  # the input is left alone
    colour = np.array(class_colour(1))
    # Left edge x = 10 and right edge x = 39 (the box ends at 40), between the top and bottom edges.
    assert np.all(out[30:49, 10] == colour) and np.all(out[30:49, 39] == colour)
    assert np.all(out[49, 12:39] == colour)  # bottom edge, pixel row 49
    assert not out[30:45, 12:37].any()  # inside untouched
    assert (out[:20] == colour).all(-1).sum() > 20  # the label tag sits above the box
    # Padding (label -1) draws nothing: a lone padding entry leaves the image black.
    assert not draw_detections(image, [[5, 5, 30, 30]], [-1], ["cat"]).any()


def test_draw_detections_writes_scores():
    image = np.full((40, 120, 3), 255, np.uint8)
    plain = draw_detections(image, [[10, 15, 60, 35]], [0], ["a"])
    scored = draw_detections(image, [[10, 15, 60, 35]], [0], ["a"], scores=[0.87])
    assert not np.array_equal(plain, scored)  # the wider tag "a 0.87"


def test_browse_command_writes_samples(demo_config, demo_dataset, tmp_path):
    out = tmp_path / "browse"
    common = ["--config", "nano", "--cfg-options", f"data_root={demo_dataset}", "imgsz=(96,96)", "batch_size=4"]
    r = CliRunner().invoke(browse_command, common + ["--stage", "1", "--out", str(out), "--num", "5", "--scale", "2"])
    assert r.exit_code == 0, r.output
    files = sorted(out.glob("*.jpg"))
    assert len(files) == 5 and "wrote 5 stage-1 samples" in r.output
    with Image.open(files[0]) as im:
        assert im.size == (192, 192) and im.mode == "RGB"
    # Also reachable as ``rtmdet browse-dataset`` (stage 2, PNG).
    r = CliRunner().invoke(main, ["browse-dataset"] + common + ["--stage", "2", "--out", str(out), "--num", "2",
                                                                "--format", "png"])
    assert r.exit_code == 0, r.output
    assert len(sorted(out.glob("stage2_*.png"))) == 2
