"""The evaluation pictures: written where asked, PNGs of the promised size."""

import pytest
from PIL import Image

from rtmdet_keras.evaluation_plots import (
    PR_FIGSIZE, confusion_matrix_figsize, figure_pixels, write_evaluation_plots,
)
from rtmdet_keras.operating_point import operating_point
from tests.test_operating_point import _case

pytest.importorskip("matplotlib")


def test_plots_are_pngs_of_the_expected_size(tmp_path):
    ds, det = _case()
    point = operating_point(ds, det, score_thr=0.5)
    paths = write_evaluation_plots(point, tmp_path / "new" / "folder", ap50={"cat": 0.5, "dog": 1.0})
    assert sorted(p.name for p in paths.values()) == ["confusion_matrix.png", "pr_curve.png"]
    with Image.open(paths["pr_curve"]) as im:
        assert im.format == "PNG" and im.size == figure_pixels(PR_FIGSIZE) == (800, 600)
    with Image.open(paths["confusion_matrix"]) as im:
        assert im.format == "PNG" and im.size == figure_pixels(confusion_matrix_figsize(2)) == (600, 500)


def test_confusion_matrix_grows_with_the_classes():
    assert confusion_matrix_figsize(2) == (6.0, 5.0)
    w, h = confusion_matrix_figsize(80)  # COCO: 81 rows of 0.45 inch and the labels
    assert w == pytest.approx(0.45 * 81 + 2.5) and h == pytest.approx(0.45 * 81 + 2.0)
