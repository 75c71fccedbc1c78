"""Predict: detections land in original-image pixels, are drawn and written as JSON; the command works
on a .tflite with only its export JSON beside it."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rtmdet_keras.config import load_config
from rtmdet_keras.commands.predict import predict_command
from rtmdet_keras.runtime.predict import collect_images, predict


class OneBoxRunner:
    """Always predicts one class-1 box (16, 8, 48, 40) in letterboxed 64x64 pixels, score sigmoid(3),
    plus a class-0 box scoring sigmoid(-2) = 0.12 elsewhere. P3 prior (row 2, col 4) = point (32, 16)."""

    kind = "fake"

    def __call__(self, images):
        out = {}
        for lv, s in (("p3", 8), ("p4", 16), ("p5", 32)):
            out[f"cls_{lv}"] = np.full((len(images), 64 // s, 64 // s, 2), -12.0, np.float32)
            out[f"reg_{lv}"] = np.ones((len(images), 64 // s, 64 // s, 4), np.float32)
        out["cls_p3"][:, 2, 4, 1] = 3.0
        out["reg_p3"][:, 2, 4] = [2.0, 1.0, 2.0, 3.0]  # (32-16, 16-8, 48-32, 40-16) / 8
        out["cls_p3"][:, 6, 6, 0] = -2.0
        return out


def test_boxes_come_back_in_original_pixels_and_are_drawn(tmp_path, monkeypatch):
    import rtmdet_keras.runtime.predict as ev

    monkeypatch.setattr(ev, "load_model_runner", lambda cfg, path, threads=None: OneBoxRunner())
    img = np.full((50, 100, 3), 30, np.uint8)  # h 50, w 100: letterbox scale 0.64
    Image.fromarray(img).save(tmp_path / "wide.png")
    cfg = load_config("nano", ["imgsz=64", "num_classes=2", "class_names=[cat, dog]"])
    res = predict(cfg, tmp_path / "m.tflite", [tmp_path / "wide.png"], tmp_path / "out", score_thr=0.3,
                  print_fn=lambda *a: None)
    (entry,) = res
    assert (entry["width"], entry["height"]) == (100, 50)
    (d,) = entry["detections"]  # the 0.12 box is below the threshold
    assert d["class"] == "dog" and d["label"] == 1 and d["score"] == pytest.approx(1 / (1 + np.exp(-3)), abs=1e-4)
    # (16, 8, 48, 40) / 0.64 = (25, 12.5, 75, 62.5), clipped to the 50 px height.
    assert d["box"] == pytest.approx([25.0, 12.5, 75.0, 50.0], abs=0.01)
    assert json.loads((tmp_path / "out" / "detections.json").read_text()) == res
    drawn = np.asarray(Image.open(entry["output"]))
    assert drawn.shape == (50, 100, 3) and (np.abs(drawn.astype(int) - 30).sum(-1) > 60).any()


def test_collect_images(tmp_path):
    import click

    for name in ("b.jpg", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in collect_images([tmp_path])] == ["a.png", "b.jpg"]
    with pytest.raises(click.ClickException, match="no such file"):
        collect_images([tmp_path / "nope.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(click.ClickException, match="no images found"):
        collect_images([tmp_path / "empty"])


@pytest.mark.slow
def test_command_on_a_tflite_with_its_export_json(tmp_path, demo_dataset):
    from rtmdet_keras.export.convert import export_tflite
    from tests.export.export_check import standin_network

    cfg = load_config("nano", ["imgsz=64", "num_classes=2", "class_names=[circle, square]"])
    paths = export_tflite(standin_network((64, 64)), cfg, tmp_path / "model", formats=("float32",),
                          saved_model=False, check=False, print_fn=lambda *a: None)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    valid = demo_dataset / "valid"
    r = CliRunner().invoke(predict_command, [str(paths["float32"]), str(valid), str(tmp_path / "broken.jpg"),
                                             "--out", str(tmp_path / "pred"), "--score-thr", "0.005"])
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "broken.jpg" in r.output
    res = json.loads((tmp_path / "pred" / "detections.json").read_text())
    n_images = len(collect_images([valid]))
    assert len(res) == n_images and len(list((tmp_path / "pred").glob("*.jpg"))) == n_images
    dets = [d for e in res for d in e["detections"]]
    assert dets and {d["class"] for d in dets} <= {"circle", "square"}
    for e in res:
        for d in e["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= e["width"] and 0 <= y1 <= y2 <= e["height"]
