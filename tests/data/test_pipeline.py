"""Training and evaluation pipelines, checked against the pixels of hand-made images.

The images are solid coloured rectangles on a plain grey background, one hue per rectangle and the
label is the hue's index, so every output of the augmentation shows where each box must be: the
boxes are checked against the coloured regions found in the output pixels, not against the code's
own arithmetic.
"""

import colorsys
from collections import deque

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from rtmdet_keras.config import load_config
from rtmdet_keras.data.pipeline import (
    boxes_to_original, build_eval_pipeline, build_train_pipeline, letterbox,
)
from rtmdet_keras.data.records import DetectionDataset, ImageRecord

# Six hues 60 degrees apart: HSV jitter (at most +-8 degrees) cannot turn one into another.
HUES = [0, 60, 120, 180, 240, 300]
COLOURS = [tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h / 360, 0.9, 0.9)) for h in HUES]
BACKGROUND = (70, 70, 70)


def make_dataset(tmp_path, specs, name="set"):
    """``specs``: list of ``(height, width, [(colour index, x1, y1, x2, y2), ...])`` -> PNG files + records."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    records = []
    for i, (h, w, rects) in enumerate(specs):
        a = np.empty((h, w, 3), np.uint8)
        a[:] = BACKGROUND
        for c, x1, y1, x2, y2 in rects:
            a[y1:y2, x1:x2] = COLOURS[c]
        path = folder / f"{i}.png"
        Image.fromarray(a).save(path)
        boxes = np.array([r[1:] for r in rects], np.float32).reshape(-1, 4)
        labels = np.array([r[0] for r in rects], np.int32)
        records.append(ImageRecord(image_id=100 + i, path=str(path), width=w, height=h, boxes=boxes, labels=labels))
    return DetectionDataset(records=records, class_names=[f"c{h}" for h in HUES], category_ids=list(range(6)),
                            source=str(folder))


# Rectangles touch image edges in places (their boxes are then clipped by the mosaic canvas too).
RECT_SPECS = [
    (90, 120, [(0, 10, 12, 50, 40), (1, 70, 50, 120, 88)]),
    (140, 80, [(2, 0, 20, 30, 70), (3, 40, 90, 75, 130)]),
    (100, 100, [(4, 30, 30, 70, 70)]),
    (60, 150, [(5, 100, 0, 140, 45)]),
    (90, 90, []),  # no boxes: a negative image
]


def classify(image):
    """Hue class per pixel (-1: grey background, padding or an edge blend below half saturation)."""
    rgb = image.astype(np.float32) / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    hsv = tf.image.rgb_to_hsv(rgb).numpy()
    hue = hsv[..., 0] * 360
    out = np.full(image.shape[:2], -1, np.int32)
    for k, h in enumerate(HUES):
        d = np.abs((hue - h + 180) % 360 - 180)
        out[(d < 25) & (sat > 0.45) & (mx > 0.3)] = k
    return out


def components(mask):
    """Bounding boxes ``[x1, y1, x2, y2]`` (pixel edges) of the 4-connected regions of ``mask``."""
    seen = np.zeros_like(mask, bool)
    h, w = mask.shape
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        q, ys, xs = deque([(y0, x0)]), [], []
        while q:
            y, x = q.popleft()
            ys.append(y)
            xs.append(x)
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    q.append((yy, xx))
        out.append([min(xs), min(ys), max(xs) + 1, max(ys) + 1])
    return np.array(out, np.float32).reshape(-1, 4)


def check_boxes_against_pixels(image, boxes, labels, tol=1.5):
    """Every box covers a region of its colour whose visible extent is the box (within ``tol``
    pixels), and every visible region of a rectangle colour larger than 3x3 pixels has its box."""
    cls = classify(image)
    h, w = cls.shape
    keep = labels >= 0
    boxes, labels = boxes[keep], labels[keep]
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= w) and np.all(boxes[:, 3] <= h)
    assert np.all(boxes[:, 2] - boxes[:, 0] >= 1) and np.all(boxes[:, 3] - boxes[:, 1] >= 1)
    for c in range(len(HUES)):
        regions = components(cls == c)
        mine = boxes[labels == c]
        big = regions[((regions[:, 2] - regions[:, 0]) >= 3) & ((regions[:, 3] - regions[:, 1]) >= 3)]
        for b in mine:
            # Inside the box (away from the blended edge) every pixel has the colour.
            x1, y1 = int(np.ceil(b[0] + tol)), int(np.ceil(b[1] + tol))
            x2, y2 = int(np.floor(b[2] - tol)), int(np.floor(b[3] - tol))
            if x2 > x1 and y2 > y1:
                assert np.mean(cls[y1:y2, x1:x2] == c) > 0.99, (c, b)
            # Some region of that colour has exactly the box's extent.
            err = np.abs(regions - b[None]).max(axis=1) if len(regions) else np.array([np.inf])
            assert err.min() <= tol, (c, b, regions)
        for r in big:
            err = np.abs(mine - r[None]).max(axis=1) if len(mine) else np.array([np.inf])
            assert err.min() <= tol, (f"visible rectangle of colour {c} at {r} has no box", mine)


def _cfg(**over):
    opts = [f"{k}={v}" for k, v in over.items()]
    return load_config("nano", ["imgsz=(96,96)", "batch_size=8", "augment.hsv_gains=[0,0,0]",
                                "augment.resize_ratio_range=[0.5,2.0]", "augment.stage2_ratio_range=[0.5,2.0]"] + opts)


def _samples(pipeline, batches):
    for images, targets in pipeline.dataset.take(batches):
        for img, b, lab in zip(images.numpy(), targets["boxes"].numpy(), targets["labels"].numpy()):
            yield img, b, lab


@pytest.fixture(scope="module")
def rect_set(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("rects"), RECT_SPECS)


@pytest.mark.parametrize("hsv, mosaic_prob", [(False, 1.0), (True, 1.0), (False, 0.5)])
def test_stage1_boxes_match_pixels(rect_set, hsv, mosaic_prob):
    cfg = _cfg(**{"augment.mosaic_prob": mosaic_prob}, **({"augment.hsv_gains": "[5,30,30]"} if hsv else {}))
    pipe = build_train_pipeline(rect_set, cfg, stage=1, seed=1 if hsv else 0)
    assert pipe.max_boxes == 2 * 4  # two boxes at most per image, x4 for Mosaic, no MixUp in nano
    seen_boxes = 0
    for img, b, lab in _samples(pipe, 3):
        check_boxes_against_pixels(img, b, lab)
        seen_boxes += int((lab >= 0).sum())
    assert seen_boxes > 20  # the check ran on plenty of boxes


def test_stage1_shapes_dtypes_and_padding(rect_set):
    cfg = _cfg()
    pipe = build_train_pipeline(rect_set, cfg, stage=1, seed=0)
    assert pipe.steps_per_epoch == 1  # 5 images, batch 8: at least one step
    spec = pipe.dataset.element_spec
    assert spec[0].shape.as_list() == [8, 96, 96, 3] and spec[0].dtype == tf.uint8
    assert spec[1]["boxes"].shape.as_list() == [8, 8, 4] and spec[1]["boxes"].dtype == tf.float32
    assert spec[1]["labels"].shape.as_list() == [8, 8] and spec[1]["labels"].dtype == tf.int32
    images, t = next(iter(pipe.dataset))
    labels, boxes = t["labels"].numpy(), t["boxes"].numpy()
    for lab, b in zip(labels, boxes):
        n = int((lab >= 0).sum())
        assert np.all(lab[:n] >= 0) and np.all(lab[n:] == -1)  # valid first, then padding
        assert np.all(b[n:] == 0)


def test_same_seed_same_batches_and_new_order_every_pass(tmp_path):
    # Eight images, each filled with its own colour: the colour of an output names its image.
    fills = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30],
                      [30, 200, 200], [200, 30, 200], [20, 20, 20], [240, 240, 240]], np.uint8)
    data = make_dataset(tmp_path, [(64, 64, [])] * 8)
    for r, fill in zip(data.records, fills):
        Image.fromarray(np.broadcast_to(fill, (64, 64, 3)).copy()).save(r.path)
    cfg = _cfg(batch_size=4, filter_empty_gt="false", **{"augment.stage2_ratio_range": "[1.0,1.0]"})

    def identities(pipe, batches):
        centres = np.array([img[48, 48].astype(int) for img, _, _ in _samples(pipe, batches)])
        return np.abs(centres[:, None] - fills[None].astype(int)).sum(-1).argmin(1).tolist()

    a = build_train_pipeline(data, cfg, stage=2, seed=5)
    b = build_train_pipeline(data, cfg, stage=2, seed=5)
    c = build_train_pipeline(data, cfg, stage=2, seed=6)
    xa = [x.numpy() for x, _ in a.dataset.take(2)]
    xb = [x.numpy() for x, _ in b.dataset.take(2)]
    xc = [x.numpy() for x, _ in c.dataset.take(2)]
    assert all(np.array_equal(p, q) for p, q in zip(xa, xb))
    assert not all(np.array_equal(p, q) for p, q in zip(xa, xc))
    # Iterating the dataset again starts the same stream again.
    assert np.array_equal(next(iter(a.dataset))[0].numpy(), xa[0])
    assert a.steps_per_epoch == 2
    order = identities(a, 4)  # two passes over the 8 images
    assert sorted(order[:8]) == list(range(8)) and sorted(order[8:]) == list(range(8))
    assert order[:8] != order[8:]


def test_stage2_has_no_mosaic(tmp_path):
    specs = [(80, 80, [(c, 20, 20, 60, 60)]) for c in range(4)]
    data = make_dataset(tmp_path, specs)
    pipe = build_train_pipeline(data, _cfg(), stage=2, seed=0)
    assert pipe.max_boxes == 1
    for img, b, lab in _samples(pipe, 2):
        colours = set(np.unique(classify(img))) - {-1}
        assert len(colours) <= 1  # pieces of other images never appear
        assert colours == set(lab[lab >= 0].tolist()) or (not colours and not (lab >= 0).any())
        check_boxes_against_pixels(img, b, lab)


def test_flip_mirrors_the_image_and_maps_boxes_to_width_minus_x(tmp_path):
    data = make_dataset(tmp_path, [(96, 96, [(0, 10, 20, 40, 50), (3, 60, 5, 90, 30)])])
    common = {"batch_size": 2, "augment.stage2_ratio_range": "[1.0,1.0]"}  # 96 px image: no resize, no crop
    kept = build_train_pipeline(data, _cfg(**common, **{"augment.flip_prob": 0.0}), stage=2, seed=0)
    flipped = build_train_pipeline(data, _cfg(**common, **{"augment.flip_prob": 1.0}), stage=2, seed=0)
    (x0, t0), (x1, t1) = next(iter(kept.dataset)), next(iter(flipped.dataset))
    np.testing.assert_array_equal(x0.numpy(), np.asarray(Image.open(data.records[0].path))[None].repeat(2, 0))
    np.testing.assert_array_equal(x1.numpy(), x0.numpy()[:, :, ::-1])
    # Packing orders boxes by area; match them by label.
    b0 = t0["boxes"].numpy()[0][np.argsort(t0["labels"].numpy()[0])]
    b1 = t1["boxes"].numpy()[0][np.argsort(t1["labels"].numpy()[0])]
    np.testing.assert_allclose(b0, [[10, 20, 40, 50], [60, 5, 90, 30]])
    np.testing.assert_allclose(b1, [[96 - 40, 20, 96 - 10, 50], [96 - 90, 5, 96 - 60, 30]])


def test_stage1_with_few_images_and_images_without_boxes(tmp_path):
    one = make_dataset(tmp_path, [(50, 70, [(0, 5, 5, 30, 30)])], name="one")
    pipe = build_train_pipeline(one, _cfg(batch_size=2), stage=1, seed=0)
    assert pipe.steps_per_epoch == 1 and pipe.max_boxes == 4
    for img, b, lab in _samples(pipe, 2):
        check_boxes_against_pixels(img, b, lab)
    empty = make_dataset(tmp_path, [(40, 40, []), (30, 60, [])], name="empty")
    with pytest.raises(ValueError, match="filter_empty_gt=false"):
        build_train_pipeline(empty, _cfg(batch_size=2), stage=1, seed=0)
    pipe = build_train_pipeline(empty, _cfg(batch_size=2, filter_empty_gt="false", **{"augment.mixup": "true"}),
                                stage=1, seed=0)
    assert pipe.max_boxes == 1 * 4 * 2  # at least one target slot per image, x4 Mosaic, x2 MixUp
    images, t = next(iter(pipe.dataset))
    assert images.shape == (2, 96, 96, 3) and np.all(t["labels"].numpy() == -1)


def _fill_images(data, fills):
    """Paint each image's background in its own colour (boxes keep their hue), so a sample names its image."""
    for r, fill in zip(data.records, fills):
        a = np.asarray(Image.open(r.path)).copy()
        a[(a == BACKGROUND).all(-1)] = fill
        Image.fromarray(a).save(r.path)


def _identities(pipe, batches, fills, at=(2, 2)):
    y, x = at
    out = []
    for img, _, _ in _samples(pipe, batches):
        out.append(int(np.abs(img[y, x].astype(int)[None] - np.asarray(fills, int)).sum(-1).argmin()))
    return out


FILLS = [(250, 250, 250), (10, 10, 10), (128, 128, 128), (200, 140, 90), (90, 140, 200)]


def test_images_without_boxes_left_out_by_default_and_kept_on_request(tmp_path):
    # Images 0-2 have a box in their lower right corner; images 3 and 4 have none.
    specs = [(64, 64, [(c, 40, 40, 60, 60)]) for c in range(3)] + [(64, 64, [])] * 2
    data = make_dataset(tmp_path, specs)
    _fill_images(data, FILLS)
    common = {"batch_size": 2, "imgsz": "(64,64)", "augment.stage2_ratio_range": "[1.0,1.0]",
              "augment.flip_prob": 0.0}
    default = build_train_pipeline(data, _cfg(**common), stage=2, seed=0)
    assert default.num_images == 3 and default.empty_images_left_out == 2
    assert default.steps_per_epoch == 2  # ceil(3 / 2): the partial last batch counts
    seen = _identities(default, 6, FILLS)
    assert sorted(set(seen)) == [0, 1, 2]
    for img, b, lab in _samples(default, 3):
        assert (lab >= 0).sum() == 1
        check_boxes_against_pixels(img, b, lab)
    kept = build_train_pipeline(data, _cfg(filter_empty_gt="false", **common), stage=2, seed=0)
    assert kept.num_images == 5 and kept.empty_images_left_out == 0 and kept.steps_per_epoch == 3
    seen = _identities(kept, 5, FILLS)
    assert sorted(set(seen)) == [0, 1, 2, 3, 4]
    # Mosaic partners come from the kept images only: no quarter of a sample shows an empty image's fill.
    mosaic = build_train_pipeline(data, _cfg(**common, **{"augment.resize_ratio_range": "[1.0,1.0]"}), stage=1,
                                  seed=0)
    for img, _, _ in _samples(mosaic, 4):
        d = np.abs(img.reshape(-1, 1, 3).astype(int) - np.asarray(FILLS, int)[None]).sum(-1)
        assert not np.any(d[:, 3] == 0) and not np.any(d[:, 4] == 0)


def test_every_image_is_in_each_epoch_with_a_partial_last_batch(tmp_path):
    data = make_dataset(tmp_path, [(64, 64, [(c, 40, 40, 60, 60)]) for c in range(5)])
    _fill_images(data, FILLS)
    cfg = _cfg(batch_size=4, imgsz="(64,64)", **{"augment.stage2_ratio_range": "[1.0,1.0]",
                                                  "augment.flip_prob": 0.0})
    pipe = build_train_pipeline(data, cfg, stage=2, seed=3)
    assert pipe.steps_per_epoch == 2  # 5 images, batch 4: ceil, as mmdetection keeps the partial batch
    images, _ = next(iter(pipe.dataset))
    assert images.shape[0] == 4  # batches stay full (static shapes); the extra samples start the next pass
    first_epoch = _identities(pipe, pipe.steps_per_epoch, FILLS)
    assert sorted(first_epoch[:5]) == [0, 1, 2, 3, 4]


def test_crops_that_lose_every_box_are_drawn_again(tmp_path):
    # One 50 px square in a 256 px image; stage 2 keeps the scale and crops 64 px: most crops miss it.
    data = make_dataset(tmp_path, [(256, 256, [(2, 150, 30, 200, 80)])])
    common = {"imgsz": "(64,64)", "augment.stage2_ratio_range": "[4.0,4.0]", "augment.flip_prob": 0.0}
    negative = build_train_pipeline(data, _cfg(**common, **{"augment.allow_negative_crop": "true"}), stage=2, seed=0)
    empty = sum(int((lab < 0).all()) for _, _, lab in _samples(negative, 4))
    assert empty >= 16  # most of the 32 samples are empty when negative crops are allowed
    redrawn = build_train_pipeline(data, _cfg(**common, **{"augment.negative_crop_retries": 60}), stage=2, seed=0)
    for img, b, lab in _samples(redrawn, 4):
        assert (lab >= 0).sum() == 1
        check_boxes_against_pixels(img, b, lab)
    # Retries are bounded: with none allowed, the first draw is kept, empty or not.
    once = build_train_pipeline(data, _cfg(**common, **{"augment.negative_crop_retries": 0}), stage=2, seed=0)
    assert sum(int((lab < 0).all()) for _, _, lab in _samples(once, 4)) == empty


def test_degenerate_boxes_are_dropped(tmp_path):
    # 200 px image shrunk to 0.08x: the 3 px square becomes a quarter pixel, the 100 px one 8 px.
    data = make_dataset(tmp_path, [(200, 200, [(0, 20, 20, 23, 23), (1, 80, 80, 180, 180)])])
    cfg = _cfg(**{"imgsz": "(64,64)", "augment.stage2_ratio_range": "[0.25,0.25]", "augment.flip_prob": 0.0})
    pipe = build_train_pipeline(data, cfg, stage=2, seed=0)
    for img, b, lab in _samples(pipe, 1):
        assert lab.tolist() == [1, -1]
        np.testing.assert_allclose(b[0], [6.4, 6.4, 14.4, 14.4], atol=1e-4)


def test_mixup_adds_partner_boxes_and_blends(rect_set):
    cfg = _cfg(**{"augment.mixup": "true", "augment.mixup_prob": 1.0})
    pipe = build_train_pipeline(rect_set, cfg, stage=1, seed=0)
    assert pipe.max_boxes == 2 * 4 * 2
    images, t = next(iter(pipe.dataset))
    counts = (t["labels"].numpy() >= 0).sum(1)
    assert images.shape == (8, 96, 96, 3) and t["boxes"].shape == (8, 16, 4)
    assert counts.max() > 8 // 2  # some samples carry boxes of two mosaics


def test_max_boxes_cap_drops_smallest_and_counts(tmp_path, capfd):
    data = make_dataset(tmp_path, [(64, 64, [(0, 2, 2, 12, 12), (1, 20, 20, 60, 60)])])
    cfg = _cfg(batch_size=2, **{"augment.stage2_ratio_range": "[1.0,1.0]"})
    pipe = build_train_pipeline(data, cfg, stage=2, seed=0, max_boxes=1)
    images, t = next(iter(pipe.dataset))
    assert t["labels"].numpy().tolist() == [[1], [1]]  # the larger box is kept
    # Two boxes dropped per batch; prefetching may have made more batches than were taken.
    assert pipe.dropped_boxes >= 2 and pipe.dropped_boxes % 2 == 0
    assert "target boxes dropped" in capfd.readouterr().err


def test_file_fallback_gives_the_same_pixels_as_the_cache(rect_set):
    cfg = _cfg()
    cached = build_train_pipeline(rect_set, cfg, stage=2, seed=0)
    files = build_train_pipeline(rect_set, cfg, stage=2, seed=0, cache_budget_bytes=0)
    assert cached.cached and not files.cached
    (x1, t1), (x2, t2) = next(iter(cached.dataset)), next(iter(files.dataset))
    # The cache stores images shrunk to what the pipeline can use; these are small, so unchanged.
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    np.testing.assert_allclose(t1["boxes"].numpy(), t2["boxes"].numpy(), atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Evaluation


def test_eval_pipeline_letterbox_meta_and_partial_batch(rect_set):
    cfg = _cfg()
    batches = list(build_eval_pipeline(rect_set, cfg, batch_size=2))
    assert [int(x.shape[0]) for x, _ in batches] == [2, 2, 1]  # the last partial batch is kept
    ids = np.concatenate([m["image_id"].numpy() for _, m in batches])
    assert ids.tolist() == [100, 101, 102, 103, 104]
    for (x, m), start in zip(batches, (0, 2, 4)):
        for j in range(int(x.shape[0])):
            rec = rect_set.records[start + j]
            scale = float(m["scale"][j])
            assert scale == pytest.approx(min(96 / rec.height, 96 / rec.width), rel=1e-6)
            assert (int(m["height"][j]), int(m["width"][j])) == (rec.height, rec.width)
            img = x[j].numpy()
            # Padding bottom/right only, grey 114.
            cw, ch = int(np.ceil(rec.width * scale - 0.5)), int(np.ceil(rec.height * scale - 0.5))
            assert np.all(img[:, cw:] == 114) and np.all(img[ch:, :] == 114)
            # Boxes scaled into the letterboxed image match the pixels; mapped back they are the originals.
            boxes = rec.boxes * scale
            check_boxes_against_pixels(img, boxes, rec.labels, tol=1.0)
            back = boxes_to_original(boxes, scale, (rec.height, rec.width))
            np.testing.assert_allclose(back, rec.boxes, atol=1e-3)


def test_letterbox_single_image_and_boxes_to_original_clips():
    image = np.zeros((100, 50, 3), np.uint8)
    image[20:60, 10:30] = COLOURS[2]
    out, scale = letterbox(image, (64, 64))
    assert out.dtype == tf.uint8 and out.shape == (64, 64, 3)
    assert float(scale) == pytest.approx(0.64)
    out = out.numpy()
    assert np.all(out[:, 32:] == 114) and not np.any(out[:, :32] == 114)
    check_boxes_against_pixels(out, np.array([[10, 20, 30, 60]], np.float32) * 0.64, np.array([2]), tol=1.0)
    back = boxes_to_original([[-5.0, 10.0, 40.0, 70.0]], 0.64, (100, 50))
    np.testing.assert_allclose(back, [[0.0, 15.625, 50.0, 100.0]], rtol=1e-6)
