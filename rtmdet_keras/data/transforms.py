"""RTMDet's training augmentation and test transform as TensorFlow ops on one sample, for tf.data.

Geometry first, pixels once. Mosaic, random resize, random crop and horizontal flip only move and
scale images, so each of them is written as a small function on *placements*: for every source
image, the axis-aligned map from its pixels to output pixels and the rectangle of the output in
which it is visible. The steps compose exactly as mmdetection applies them (Mosaic on a 2x canvas ->
RandomResize -> RandomCrop -> RandomFlip), then :func:`render` samples every source once
(bilinear), straight into the output: no 2x canvas, no intermediate resized image. HSV jitter, the
final pad and MixUp then work on pixels.

Conventions: images are ``[H, W, 3]`` RGB (``uint8`` in and out, ``float32`` 0-255 inside);
coordinates are pixels with edges at integers (pixel ``j`` covers ``[j, j + 1)``, its centre is
``j + 0.5``), as mmdetection/OpenCV resize; boxes are ``float32 [N, 4]`` xyxy in those pixels.

A placement is ``float32 [..., 8]``: ``(ax, bx, ay, by, x_lo, y_lo, x_hi, y_hi)``. A source point
``(x, y)`` lands at ``(ax * x + bx, ay * y + by)`` (``ax < 0`` after a flip), and the source is
visible in the output rectangle ``[x_lo, x_hi) x [y_lo, y_hi)``. An output pixel shows the source
when its centre lies in that rectangle.
"""

from __future__ import annotations

import tensorflow as tf

PAD_VALUE = 114


# ----------------------------------------------------------------------------------------------
# Placements


def place(width, height, scale_x, scale_y, offset_x, offset_y):
    """Placement of a ``width x height`` image scaled by ``(scale_x, scale_y)`` with its top-left
    corner at ``(offset_x, offset_y)``; visible over its whole extent. Arguments broadcast;
    returns ``float32 [..., 8]``."""
    width, height, sx, sy, ox, oy = (tf.cast(a, tf.float32)
                                     for a in (width, height, scale_x, scale_y, offset_x, offset_y))
    zero = 0.0 * (width + height + sx + sy + ox + oy)  # broadcasts every argument to one shape
    return tf.stack([sx + zero, ox + zero, sy + zero, oy + zero, ox + zero, oy + zero,
                     ox + sx * width + zero, oy + sy * height + zero], axis=-1)


def clip_placement(p, x0, y0, x1, y1):
    """Keep only the part of the visible rectangle inside ``[x0, x1) x [y0, y1)`` (output pixels)."""
    ax, bx, ay, by, xl, yl, xh, yh = tf.unstack(p, axis=-1)
    x0, y0, x1, y1 = (tf.cast(v, tf.float32) for v in (x0, y0, x1, y1))
    xl, xh = tf.maximum(xl, x0), tf.minimum(xh, x1)
    yl, yh = tf.maximum(yl, y0), tf.minimum(yh, y1)
    return tf.stack([ax, bx, ay, by, xl, yl, tf.maximum(xh, xl), tf.maximum(yh, yl)], axis=-1)


def scale_placement(p, sx, sy):
    """The output is resized by ``(sx, sy)`` (e.g. RandomResize of the mosaic canvas)."""
    sx, sy = tf.cast(sx, tf.float32), tf.cast(sy, tf.float32)
    return p * tf.stack([sx, sx, sy, sy, sx, sy, sx, sy])


def translate_placement(p, dx, dy):
    """The output is shifted by ``(dx, dy)`` pixels (a crop at ``(x, y)`` is a shift by ``(-x, -y)``)."""
    dx, dy = tf.cast(dx, tf.float32), tf.cast(dy, tf.float32)
    zero = tf.zeros_like(dx)
    return p + tf.stack([zero, dx, zero, dy, dx, dy, dx, dy])


def hflip_placement(p, width):
    """Mirror the output horizontally within ``[0, width)``: ``x -> width - x``."""
    ax, bx, ay, by, xl, yl, xh, yh = tf.unstack(p, axis=-1)
    width = tf.cast(width, tf.float32)
    return tf.stack([-ax, width - bx, ay, by, width - xh, yl, width - xl, yh], axis=-1)


def transform_boxes(boxes, p, min_size=1.0):
    """Map source boxes through their placements and clip them to the visible rectangles.

    Args:
        boxes: ``float32 [N, 4]`` xyxy in source pixels.
        p: placement ``[8]`` or one per box ``[N, 8]``.
        min_size: boxes narrower or shorter than this (output pixels) after clipping are invalid.
    Returns:
        ``(boxes [N, 4], valid bool [N])``.
    """
    p = tf.broadcast_to(p, tf.concat([tf.shape(boxes)[:1], [8]], 0))
    ax, bx, ay, by, xl, yl, xh, yh = tf.unstack(p, axis=-1)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    xa, xb = ax * x1 + bx, ax * x2 + bx
    ya, yb = ay * y1 + by, ay * y2 + by
    nx1 = tf.clip_by_value(tf.minimum(xa, xb), xl, xh)
    nx2 = tf.clip_by_value(tf.maximum(xa, xb), xl, xh)
    ny1 = tf.clip_by_value(tf.minimum(ya, yb), yl, yh)
    ny2 = tf.clip_by_value(tf.maximum(ya, yb), yl, yh)
    w, h = nx2 - nx1, ny2 - ny1
    valid = (w > 0) & (h > 0) & (w >= min_size) & (h >= min_size)
    return tf.stack([nx1, ny1, nx2, ny2], axis=-1), valid


def flip_boxes(boxes, width):
    """Horizontal flip of xyxy boxes in an image ``width`` pixels wide: ``(W - x2, y1, W - x1, y2)``."""
    width = tf.cast(width, boxes.dtype)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack([width - x2, y1, width - x1, y2], axis=-1)


# ----------------------------------------------------------------------------------------------
# The geometric steps of the recipe, as placements


def mosaic_placements(source_wh, fitted_wh, center, out_hw):
    """mmdetection's Mosaic on a ``2H x 2W`` canvas.

    Args:
        source_wh: ``[4, 2]`` (width, height) of the four images, in the pixels their placements use.
        fitted_wh: ``[4, 2]`` their size after the keep-ratio resize to fit ``out_hw`` (mmdetection:
            ``int(w * min(H / h, W / w))``). Order: top-left, top-right, bottom-left, bottom-right.
        center: ``(cx, cy)`` integer canvas point where the four images meet.
        out_hw: ``(H, W)``; the canvas is ``(2H, 2W)``.
    Returns:
        ``[4, 8]`` placements on the canvas, visible parts clipped to the canvas. The images touch at
        the centre and never overlap.
    """
    h, w = out_hw
    src = tf.cast(source_wh, tf.float32)
    fit = tf.cast(fitted_wh, tf.float32)
    cx, cy = tf.cast(center[0], tf.float32), tf.cast(center[1], tf.float32)
    fw, fh = fit[:, 0], fit[:, 1]
    ox = tf.stack([cx - fw[0], cx, cx - fw[2], cx])
    oy = tf.stack([cy - fh[0], cy - fh[1], cy, cy])
    p = place(src[:, 0], src[:, 1], fw / src[:, 0], fh / src[:, 1], ox, oy)
    return clip_placement(p, 0, 0, 2 * w, 2 * h)


def resize_source(p, sx, sy):
    """Placement of the same image after it was itself resized by ``(sx, sy)`` (e.g. a cached copy
    stored smaller than the pixels the boxes are given in): the output does not change."""
    sx, sy = tf.cast(sx, tf.float32), tf.cast(sy, tf.float32)
    one = tf.ones_like(sx)
    return p / tf.stack([sx, one, sy, one, one, one, one, one], axis=-1)


def random_crop_placements(p, canvas_hw, crop_hw, u):
    """mmdetection's RandomCrop (absolute size): a ``crop_hw`` window (shrunk to the canvas when the
    canvas is smaller) at an integer offset drawn from ``u = (u_x, u_y)`` in [0, 1).

    Returns ``(placements, (crop_h, crop_w))``: the visible rectangles are clipped to the crop.
    """
    ch_, cw_ = tf.cast(canvas_hw[0], tf.float32), tf.cast(canvas_hw[1], tf.float32)
    crop_h = tf.minimum(tf.cast(crop_hw[0], tf.float32), ch_)
    crop_w = tf.minimum(tf.cast(crop_hw[1], tf.float32), cw_)
    off_x = tf.floor(u[0] * (cw_ - crop_w + 1.0))
    off_y = tf.floor(u[1] * (ch_ - crop_h + 1.0))
    p = translate_placement(p, -off_x, -off_y)
    return clip_placement(p, 0, 0, crop_w, crop_h), (crop_h, crop_w)


def keep_ratio_size(height, width, target_h, target_w, rounding="round"):
    """Size of a ``height x width`` image resized with its aspect ratio kept to fit ``target``:
    scale ``min(target_h / height, target_w / width)``. ``rounding`` "round" (mmcv's imrescale:
    ``int(x + 0.5)``) or "floor" (mmdetection's Mosaic: ``int(x)``). Returns float32 ``(h, w)``."""
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    s = tf.minimum(tf.cast(target_h, tf.float32) / height, tf.cast(target_w, tf.float32) / width)
    f = tf.floor if rounding == "floor" else (lambda v: tf.floor(v + 0.5))
    return f(height * s), f(width * s)


# ----------------------------------------------------------------------------------------------
# Pixels


def _pixel_range(lo, hi, size):
    """Pixels ``j`` whose centre ``j + 0.5`` lies in ``[lo, hi)``, clamped to ``[0, size)``."""
    start = tf.clip_by_value(tf.math.ceil(lo - 0.5), 0.0, float(size))
    stop = tf.clip_by_value(tf.math.ceil(hi - 0.5), start, float(size))
    return tf.cast(start, tf.int32), tf.cast(stop, tf.int32)


def render(sources, placements, out_hw, pad_val=PAD_VALUE):
    """Draw source images into an ``out_hw`` float32 image by their placements, bilinear.

    Args:
        sources: list of ``uint8 [h + 2, w + 2, 3]`` images carrying a one-pixel border that repeats
            their edge pixels (so samples up to half a pixel outside the image are defined; see
            :func:`add_border`). Placements are in unbordered pixels.
        placements: ``[K, 8]``, one per source. The visible rectangles must not overlap.
        out_hw: static ``(H, W)``.
    Returns:
        ``float32 [H, W, 3]``, 0-255; pixels no source covers are ``pad_val``.
    """
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    total = None
    for k, src in enumerate(sources):
        ax, bx, ay, by, xl, yl, xh, yh = tf.unstack(placements[k])
        j0, j1 = _pixel_range(xl, xh, out_w)
        i0, i1 = _pixel_range(yl, yh, out_h)
        nw, nh = j1 - j0, i1 - i0
        ax = tf.where(tf.equal(ax, 0.0), 1.0, ax)  # an empty placement; nothing is drawn from it
        ay = tf.where(tf.equal(ay, 0.0), 1.0, ay)
        # Source sample positions of the first and last output pixels, in bordered index coordinates.
        fj0, fj1 = tf.cast(j0, tf.float32), tf.cast(tf.maximum(j1 - 1, j0), tf.float32)
        fi0, fi1 = tf.cast(i0, tf.float32), tf.cast(tf.maximum(i1 - 1, i0), tf.float32)
        px0, px1 = (fj0 + 0.5 - bx) / ax + 0.5, (fj1 + 0.5 - bx) / ax + 0.5
        py0, py1 = (fi0 + 0.5 - by) / ay + 0.5, (fi1 + 0.5 - by) / ay + 0.5
        shape = tf.cast(tf.shape(src), tf.float32)
        box = tf.stack([py0 / (shape[0] - 1.0), px0 / (shape[1] - 1.0),
                        py1 / (shape[0] - 1.0), px1 / (shape[1] - 1.0)])
        crop = tf.image.crop_and_resize(src[None], box[None], [0], tf.maximum(tf.stack([nh, nw]), 1))[0]
        crop = crop[:nh, :nw] - float(pad_val)
        layer = tf.pad(crop, [[i0, out_h - i1], [j0, out_w - j1], [0, 0]])
        total = layer if total is None else total + layer
    return tf.ensure_shape(total + float(pad_val), [out_h, out_w, 3])


def add_border(image):
    """``[h, w, 3] -> [h + 2, w + 2, 3]`` repeating the edge pixels (the input :func:`render` wants)."""
    return tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")


def sample_hsv_gains(u, gains):
    """YOLOXHSVRandomAug's gains from six uniforms in [0, 1): ``uniform(-1, 1) * (h, s, v)``, each
    kept with probability 1/2, truncated to integers (OpenCV HSV units: hue 0-180, s and v 0-255)."""
    gains = tf.constant(gains, tf.float32)
    g = (2.0 * u[:3] - 1.0) * gains * tf.cast(u[3:6] < 0.5, tf.float32)
    return tf.where(g < 0, tf.math.ceil(g), tf.floor(g))


def hsv_jitter(image, gains):
    """Shift hue, saturation and value like YOLOX/mmdetection's YOLOXHSVRandomAug.

    OpenCV converts to HSV (hue in 2-degree units, 0-180; saturation and value 0-255), adds the
    gains (hue modulo 180, s and v clipped to 0-255) and converts back. The same arithmetic is done
    here without the uint8 rounding of the HSV planes: value first (scales the pixel), then
    saturation (moves the channels towards or away from the value; grey pixels have hue 0, red, as
    in OpenCV), then hue (``tf.image.adjust_hue``). The three are independent, so the order only
    matters for grey and black pixels, and this order reproduces OpenCV there too.

    Args:
        image: ``float32 [h, w, 3]`` RGB 0-255.
        gains: ``float32 [3]`` integer-valued (dh, ds, dv) in OpenCV units.
    """
    dh, ds, dv = gains[0], gains[1] / 255.0, gains[2]

    def value_saturation(x):
        r, g, b = tf.unstack(x, axis=-1)
        v = tf.maximum(tf.maximum(r, g), b)
        mn = tf.minimum(tf.minimum(r, g), b)
        v_new = tf.clip_by_value(v + dv, 0.0, 255.0)
        s = (v - mn) / tf.maximum(v, 1e-6)
        s_new = tf.clip_by_value(s + ds, 0.0, 1.0)
        k = s_new / tf.maximum(s, 1e-6)
        ratio = v_new / tf.maximum(v, 1e-6)
        grey = s <= 0.0
        # Grey: hue 0 (red), so red stays at v and green/blue drop to v * (1 - s).
        chans = []
        for c, grey_factor in ((r, 1.0), (g, 0.0), (b, 0.0)):
            coloured = ratio * (v - k * (v - c))
            grey_val = v_new * (grey_factor + (1.0 - grey_factor) * (1.0 - s_new))
            chans.append(tf.where(grey, grey_val, coloured))
        return tf.clip_by_value(tf.stack(chans, axis=-1), 0.0, 255.0)

    image = tf.cond(tf.logical_or(tf.not_equal(ds, 0.0), tf.not_equal(dv, 0.0)),
                    lambda: value_saturation(image), lambda: image)
    image = tf.cond(tf.not_equal(dh, 0.0),
                    lambda: tf.image.adjust_hue(image / 255.0, dh / 180.0) * 255.0, lambda: image)
    return image


def pad_to(image, crop_hw, out_hw, pad_val=PAD_VALUE):
    """Keep ``image[:crop_h, :crop_w]`` and fill the rest of ``out_hw`` with ``pad_val``
    (mmdetection's Pad to a fixed size: bottom and right)."""
    ch_, cw_ = tf.cast(crop_hw[0], tf.int32), tf.cast(crop_hw[1], tf.int32)
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    image = image[:ch_, :cw_]
    image = tf.pad(image, [[0, out_h - ch_], [0, out_w - cw_], [0, 0]], constant_values=float(pad_val))
    return tf.ensure_shape(image, [out_h, out_w, 3])


def to_uint8(image):
    """float 0-255 -> uint8, rounding half up."""
    return tf.cast(tf.clip_by_value(tf.floor(image + 0.5), 0.0, 255.0), tf.uint8)


# ----------------------------------------------------------------------------------------------
# Fixed-size targets and MixUp


def pack_boxes(boxes, labels, valid, max_boxes):
    """Gather valid boxes to the front and pad to ``max_boxes`` (label -1, box 0).

    Works on ``[..., M, 4]`` / ``[..., M]``. When more than ``max_boxes`` are valid, the smallest
    (by area) are dropped. Returns ``(boxes [..., max_boxes, 4], labels [..., max_boxes], dropped)``
    with ``dropped`` the number of valid boxes that did not fit (int32 scalar).
    """
    m = tf.shape(labels)[-1]
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    key = tf.where(valid, -area, float("inf"))
    order = tf.argsort(key, axis=-1, stable=True)
    batch_dims = len(labels.shape) - 1
    boxes = tf.gather(boxes, order, axis=-2, batch_dims=batch_dims)
    labels = tf.gather(labels, order, axis=-1, batch_dims=batch_dims)
    valid = tf.gather(valid, order, axis=-1, batch_dims=batch_dims)
    count = tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1)
    dropped = tf.reduce_sum(tf.maximum(count - max_boxes, 0))
    # Pad (when M < max_boxes) or cut (when M > max_boxes) the last axis.
    pad = tf.maximum(max_boxes - m, 0)
    rank = len(labels.shape)
    boxes = tf.pad(boxes, [[0, 0]] * (rank - 1) + [[0, pad], [0, 0]])[..., :max_boxes, :]
    labels = tf.pad(labels, [[0, 0]] * (rank - 1) + [[0, pad]])[..., :max_boxes]
    valid = tf.pad(valid, [[0, 0]] * (rank - 1) + [[0, pad]])[..., :max_boxes]
    boxes = tf.where(valid[..., None], boxes, 0.0)
    labels = tf.where(valid, labels, -1)
    out_shape = labels.shape[:-1].concatenate([max_boxes])
    return tf.ensure_shape(boxes, out_shape.concatenate([4])), tf.ensure_shape(labels, out_shape), dropped


def mixup_batch(images, boxes, labels, u, prob):
    """mmdetection's CachedMixUp (RTMDet settings: ratio_range (1, 1), flip_ratio 0.5) over a batch.

    mmdetection mixes each result with one of its last 20 un-mixed results; here the cache is the
    batch itself (``B`` recent samples, this one included). With probability ``prob`` a partner is
    drawn, flipped horizontally with probability 1/2, and blended ``uint8(0.5 * a + 0.5 * b)``; its
    boxes are appended. A partner without boxes leaves the sample unchanged, as in mmdetection. Both
    images are already the output size, so mmdetection's resize/crop of the partner are identities.

    Args:
        images: ``uint8 [B, H, W, 3]``; boxes ``float32 [B, N, 4]``; labels ``int32 [B, N]`` (-1 pad).
        u: ``float32 [B, 3]`` uniforms in [0, 1): apply?, partner, flip?.
    Returns:
        ``(images, boxes [B, 2N, 4], labels [B, 2N])``.
    """
    batch = tf.shape(images)[0]
    width = tf.shape(images)[2]
    partner = tf.minimum(tf.cast(u[:, 1] * tf.cast(batch, tf.float32), tf.int32), batch - 1)
    flip = u[:, 2] > 0.5  # mmdetection: ``is_filp = random.uniform(0, 1) > flip_ratio``
    p_images = tf.gather(images, partner)
    p_images = tf.where(flip[:, None, None, None], tf.reverse(p_images, axis=[2]), p_images)
    p_labels = tf.gather(labels, partner)
    p_boxes = tf.gather(boxes, partner)
    p_boxes = tf.where(flip[:, None, None], flip_boxes(p_boxes, tf.cast(width, tf.float32)), p_boxes)
    apply = (u[:, 0] <= prob) & tf.reduce_any(p_labels >= 0, axis=1)
    # floor((a + b) / 2) in uint8, without widening: (a >> 1) + (b >> 1) + (a & b & 1).
    one = tf.constant(1, tf.uint8)
    mixed = (tf.bitwise.right_shift(images, one) + tf.bitwise.right_shift(p_images, one)
             + tf.bitwise.bitwise_and(tf.bitwise.bitwise_and(images, p_images), one))
    images = tf.where(apply[:, None, None, None], mixed, images)
    p_labels = tf.where(apply[:, None], p_labels, -1)
    p_boxes = tf.where((p_labels >= 0)[..., None], p_boxes, 0.0)
    return images, tf.concat([boxes, p_boxes], axis=1), tf.concat([labels, p_labels], axis=1)


# ----------------------------------------------------------------------------------------------
# Test transform


def letterbox(image, imgsz, pad_val=PAD_VALUE):
    """mmdetection's test transform: keep-ratio resize to fit ``imgsz`` then pad bottom/right.

    The image is resized by exactly ``scale = min(H / h, W / w)`` (bilinear, antialiased when
    shrinking), so a box ``b`` of the resized image is ``b / scale`` in the original, with no
    rounding of the resized size in between. Output pixels whose centre lies beyond ``w * scale`` or
    ``h * scale`` are padding.

    Args:
        image: ``uint8 [h, w, 3]`` (NumPy or tensor).
        imgsz: ``(H, W)``.
    Returns:
        ``(uint8 [H, W, 3], scale float32 scalar)``.
    """
    out_h, out_w = int(imgsz[0]), int(imgsz[1])
    image = tf.convert_to_tensor(image)
    shape = tf.cast(tf.shape(image), tf.float32)
    scale = tf.minimum(out_h / shape[0], out_w / shape[1])
    resized = tf.raw_ops.ScaleAndTranslate(
        images=tf.cast(image, tf.float32)[None], size=tf.constant([out_h, out_w], tf.int32),
        scale=tf.stack([scale, scale]), translation=tf.zeros([2]), kernel_type="triangle", antialias=True,
    )[0]
    _, rows = _pixel_range(0.0, shape[0] * scale, out_h)
    _, cols = _pixel_range(0.0, shape[1] * scale, out_w)
    out = pad_to(resized, (rows, cols), (out_h, out_w), pad_val)
    return to_uint8(out), scale
