"""The augmentation ops one by one, against hand-worked numbers and an independent HSV reference."""

import colorsys

import numpy as np
import pytest
import tensorflow as tf

from rtmdet_keras.data import transforms as T


def _p(*values):
    return tf.constant(values, tf.float32)


def test_flip_boxes_maps_x_to_width_minus_x():
    boxes = tf.constant([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 96.0, 10.0]])
    out = T.flip_boxes(boxes, 96).numpy()
    np.testing.assert_allclose(out, [[66.0, 5.0, 86.0, 25.0], [0.0, 0.0, 96.0, 10.0]])


def test_flipped_placement_moves_boxes_like_flip_boxes():
    # An image 40 px wide scaled by 2 and shifted by 5: x -> 2x + 5; then mirrored in a 100 px crop.
    p = T.place(40, 30, 2.0, 2.0, 5.0, 0.0)
    boxes = tf.constant([[10.0, 3.0, 20.0, 9.0]])
    plain, _ = T.transform_boxes(boxes, p)
    flipped, _ = T.transform_boxes(boxes, T.hflip_placement(p, 100))
    np.testing.assert_allclose(plain.numpy(), [[25.0, 6.0, 45.0, 18.0]])
    np.testing.assert_allclose(flipped.numpy(), T.flip_boxes(plain, 100).numpy())


def test_transform_boxes_clips_to_the_visible_part_and_drops_slivers():
    p = T.clip_placement(T.place(100, 100, 1.0, 1.0, 0.0, 0.0), 0, 0, 50, 40)
    boxes = tf.constant([
        [10.0, 10.0, 20.0, 20.0],  # inside
        [45.0, 30.0, 70.0, 60.0],  # cut to 45-50, 30-40
        [60.0, 10.0, 80.0, 20.0],  # outside the visible part
        [49.5, 10.0, 60.0, 20.0],  # 0.5 px left: degenerate
    ])
    out, valid = T.transform_boxes(boxes, p, min_size=1.0)
    assert valid.numpy().tolist() == [True, True, False, False]
    np.testing.assert_allclose(out.numpy()[:2], [[10, 10, 20, 20], [45, 30, 50, 40]])


def test_mosaic_placements_hand_worked():
    # Output 10x10, canvas 20x20, centre (8, 12). Fitted sizes (w, h): TL 10x6, TR 10x10, BL 4x10, BR 10x10.
    src = tf.constant([[20.0, 12.0], [10.0, 10.0], [8.0, 20.0], [5.0, 5.0]])
    fit = tf.constant([[10.0, 6.0], [10.0, 10.0], [4.0, 10.0], [10.0, 10.0]])
    p = T.mosaic_placements(src, fit, (8, 12), (10, 10)).numpy()
    np.testing.assert_allclose(p[:, 0], [0.5, 1.0, 0.5, 2.0])  # scale source -> fitted
    np.testing.assert_allclose(p[:, 1], [-2.0, 8.0, 4.0, 8.0])  # x offsets: TL sticks out on the left
    np.testing.assert_allclose(p[:, 3], [6.0, 2.0, 12.0, 12.0])
    # Visible rectangles (x_lo, y_lo, x_hi, y_hi), clipped to the 20x20 canvas; they meet at the centre.
    np.testing.assert_allclose(p[:, 4:], [[0, 6, 8, 12], [8, 2, 18, 12], [4, 12, 8, 20], [8, 12, 18, 20]])


def test_random_crop_offsets_and_small_canvas():
    p = T.place(300, 200, 1.0, 1.0, 0.0, 0.0)
    # Canvas 200 x 300, crop 96: offsets floor(u * (margin + 1)).
    q, (ch, cw) = T.random_crop_placements(p, (200, 300), (96, 96), tf.constant([0.5, 0.999]))
    assert (float(ch), float(cw)) == (96, 96)
    np.testing.assert_allclose(q.numpy()[[1, 3]], [-102.0, -104.0])
    np.testing.assert_allclose(q.numpy()[4:], [0, 0, 96, 96])
    # A canvas smaller than the crop is kept whole (mmdetection crops to min(crop, canvas)).
    small = T.place(50, 40, 1.0, 1.0, 0.0, 0.0)
    q, (ch, cw) = T.random_crop_placements(small, (40, 50), (96, 96), tf.constant([0.9, 0.9]))
    assert (float(ch), float(cw)) == (40, 50)
    np.testing.assert_allclose(q.numpy(), [1, 0, 1, 0, 0, 0, 50, 40])


def test_keep_ratio_size_rounding():
    h, w = T.keep_ratio_size(90, 120, 96, 96, rounding="floor")
    assert (float(h), float(w)) == (72, 96)
    h, w = T.keep_ratio_size(37, 100, 96, 96, rounding="round")  # 35.52 -> 36
    assert (float(h), float(w)) == (36, 96)
    h, w = T.keep_ratio_size(37, 100, 96, 96, rounding="floor")
    assert (float(h), float(w)) == (35, 96)


def _src(a):
    return T.add_border(tf.constant(np.asarray(a, np.uint8)))


def test_render_translation_flip_and_scale_by_hand():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
    # Integer shift (3, 2): an exact copy; the rest is padding.
    p = T.place(8, 6, 1.0, 1.0, 3.0, 2.0)[None]
    out = T.render([_src(a)], p, (10, 12), pad_val=114).numpy()
    np.testing.assert_allclose(out[2:8, 3:11], a, atol=1e-3)
    assert np.all(out[:2] == 114) and np.all(out[:, :3] == 114) and np.all(out[:, 11:] == 114)
    # Mirrored within 12 px: the copy lands at x = 12 - 11 .. 12 - 3, reversed.
    out = T.render([_src(a)], T.hflip_placement(p, 12), (10, 12), pad_val=114).numpy()
    np.testing.assert_allclose(out[2:8, 1:9], a[:, ::-1], atol=1e-3)
    # Two pixels 0 and 100 enlarged 2x: centres at 0.25, 0.75, 1.25, 1.75 source px; edges repeat.
    b = np.zeros((1, 2, 3), np.uint8)
    b[0, 1] = 100
    out = T.render([_src(b)], T.place(2, 1, 2.0, 2.0, 0.0, 0.0)[None], (2, 4), pad_val=0).numpy()
    np.testing.assert_allclose(out[0, :, 0], [0, 25, 75, 100], atol=1e-3)
    np.testing.assert_allclose(out[1, :, 0], [0, 25, 75, 100], atol=1e-3)


def test_render_pixel_centre_rule_at_visible_edges():
    a = np.full((4, 4, 3), 200, np.uint8)
    # Scaled 2.5x: covers [0, 10); pixels 0..9 are content, 10.. padding (centre 9.5 < 10).
    out = T.render([_src(a)], T.place(4, 4, 2.5, 2.5, 0.0, 0.0)[None], (12, 12), pad_val=0).numpy()
    assert np.all(out[:10, :10] == pytest.approx(200, abs=1e-3)) and np.all(out[10:] == 0) and np.all(out[:, 10:] == 0)
    # Shifted by 0.6: covers [0.6, 10.6): pixel 0 (centre 0.5) is padding, pixel 10 (centre 10.5) content.
    out = T.render([_src(a)], T.place(4, 4, 2.5, 2.5, 0.6, 0.6)[None], (12, 12), pad_val=0).numpy()
    assert np.all(out[0] == 0) and np.all(out[:, 0] == 0) and np.all(out[1:11, 1:11] > 199)


def _reference_hsv(rgb, gains):
    """OpenCV's uint8 HSV arithmetic via the standard library's colorsys (hue 0-180, s and v 0-255)."""
    dh, ds, dv = gains
    out = np.empty(rgb.shape, np.float64)
    for idx in np.ndindex(rgb.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*(rgb[idx] / 255.0))
        h = ((h * 180.0 + dh) % 180.0) / 180.0
        s = min(max(s * 255.0 + ds, 0.0), 255.0) / 255.0
        v = min(max(v * 255.0 + dv, 0.0), 255.0) / 255.0
        out[idx] = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0
    return out


@pytest.mark.parametrize("gains", [(4, 0, 0), (0, 29, 0), (0, -29, 0), (0, 0, 29), (0, 0, -29), (-3, 20, -25),
                                   (4, -30, 30)])
def test_hsv_jitter_matches_opencv_arithmetic(gains):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 7, 3)).astype(np.float64)
    rgb[0, 0] = [114, 114, 114]  # grey: hue 0 (red) in OpenCV
    rgb[0, 1] = [0, 0, 0]
    rgb[0, 2] = [255, 255, 255]
    rgb[0, 3] = [250, 10, 10]
    out = T.hsv_jitter(tf.constant(rgb, tf.float32), tf.constant(gains, tf.float32)).numpy()
    np.testing.assert_allclose(out, _reference_hsv(rgb, gains), atol=0.05)


def test_sample_hsv_gains_integers_in_range_and_switched():
    u = tf.constant([0.0, 0.5, 0.99, 0.1, 0.9, 0.2])  # h on, s off, v on
    g = T.sample_hsv_gains(u, [5.0, 30.0, 30.0]).numpy()
    np.testing.assert_array_equal(g, [-5.0, 0.0, 29.0])  # -5.0 exactly; 29.4 truncated towards zero
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = T.sample_hsv_gains(tf.constant(rng.random(6), tf.float32), [5.0, 30.0, 30.0]).numpy()
        assert np.all(g == np.trunc(g)) and np.all(np.abs(g) <= [5, 30, 30])


def test_pack_boxes_keeps_largest_pads_and_counts():
    boxes = tf.constant([[0, 0, 2, 2], [0, 0, 10, 10], [0, 0, 5, 5], [1, 1, 3, 3]], tf.float32)
    labels = tf.constant([0, 1, 2, 3])
    valid = tf.constant([True, True, True, False])
    b, lab, dropped = T.pack_boxes(boxes, labels, valid, 2)
    assert lab.numpy().tolist() == [1, 2] and int(dropped) == 1
    b, lab, dropped = T.pack_boxes(boxes, labels, valid, 6)
    assert lab.numpy().tolist() == [1, 2, 0, -1, -1, -1] and int(dropped) == 0
    assert np.all(b.numpy()[3:] == 0) and b.shape == (6, 4)


def test_mixup_batch_by_hand():
    a = np.full((3, 4, 6, 3), 0, np.uint8)
    a[0] = 100
    a[1, :, :3] = 200  # left half bright: shows the flip
    images = tf.constant(a)
    boxes = tf.constant([[[1, 1, 2, 2], [0, 0, 0, 0]], [[0, 0, 3, 4], [0, 0, 0, 0]], [[0, 0, 0, 0]] * 2], tf.float32)
    labels = tf.constant([[0, -1], [1, -1], [-1, -1]])
    # Sample 0 mixes with 1, flipped; sample 1 draws 2 (no boxes: unchanged); sample 2 is not drawn.
    u = tf.constant([[0.1, 0.5, 0.9], [0.1, 0.9, 0.1], [0.9, 0.0, 0.0]])
    out, b, lab = T.mixup_batch(images, boxes, labels, u, prob=0.5)
    out = out.numpy()
    np.testing.assert_array_equal(out[0, :, :3], 50)  # (100 + 0) // 2 where the flipped partner is dark
    np.testing.assert_array_equal(out[0, :, 3:], 150)  # (100 + 200) // 2
    np.testing.assert_array_equal(out[1], a[1])
    np.testing.assert_array_equal(out[2], a[2])
    assert lab.numpy().tolist() == [[0, -1, 1, -1], [1, -1, -1, -1], [-1, -1, -1, -1]]
    np.testing.assert_allclose(b.numpy()[0, 2], [3, 0, 6, 4])  # flipped in 6 px: 6 - 3, 6 - 0
    assert np.all(b.numpy()[1, 2:] == 0)


def test_letterbox_pads_bottom_right_and_scales_exactly():
    image = np.full((30, 60, 3), 10, np.uint8)
    out, scale = T.letterbox(image, (64, 96), pad_val=114)
    assert float(scale) == pytest.approx(1.6)  # min(64 / 30, 96 / 60)
    out = out.numpy()
    assert np.all(out[:48] == 10) and np.all(out[48:] == 114)  # 30 * 1.6 = 48 rows of content
