"""Boxes with their class names (and scores) drawn on an image, one colour per class.

Used by ``rtmdet browse-dataset`` (training samples), ``rtmdet predict`` and the training's sample pictures.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct, saturated colours (RGB); class i uses PALETTE[i % len(PALETTE)].
PALETTE = [
    (255, 56, 56), (56, 56, 255), (72, 249, 10), (255, 157, 151), (255, 112, 31), (146, 204, 23),
    (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255), (52, 69, 147),
    (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200),
    (255, 55, 199), (207, 210, 49),
]


def class_colour(label: int):
    """The RGB colour boxes of class ``label`` are drawn in."""
    return PALETTE[int(label) % len(PALETTE)]


def _text_colour(rgb):
    return (0, 0, 0) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else (255, 255, 255)


def draw_detections(image, boxes, labels, class_names: Sequence[str], scores=None,
                    thickness: Optional[int] = None) -> np.ndarray:
    """Draw boxes with their class names (and scores) on a copy of ``image``.

    Args:
        image: ``uint8 [H, W, 3]`` RGB.
        boxes: ``[N, 4]`` xyxy pixels of ``image``.
        labels: ``[N]`` class indices; negative entries (padding) are skipped.
        class_names: names by class index (an index past the end is drawn as its number).
        scores: optional ``[N]`` confidences, written after the name with two decimals.
        thickness: line width in pixels (default: about 1/250 of the shorter side, at least 1).
    Returns:
        ``uint8 [H, W, 3]``, a new array; ``image`` is left unchanged.
    """
    canvas = Image.fromarray(np.ascontiguousarray(np.asarray(image, np.uint8)))
    draw = ImageDraw.Draw(canvas)
    h, w = canvas.height, canvas.width
    thickness = thickness or max(1, round(min(h, w) / 250))
    font = ImageFont.load_default()
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        if label < 0:
            continue
        colour = class_colour(label)
        x1, y1, x2, y2 = (float(v) for v in box)
        # PIL's rectangle includes its right/bottom edge pixel: a box ending at x2 ends on pixel x2 - 1.
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=thickness)
        name = class_names[label] if 0 <= label < len(class_names) else str(int(label))
        text = f"{name} {float(scores[i]):.2f}" if scores is not None else str(name)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        tx = min(max(0.0, x1), max(0.0, w - tw - 2))
        ty = y1 - th - 3 if y1 - th - 3 >= 0 else min(y1 + thickness, max(0.0, h - th - 3))
        draw.rectangle([tx, ty, tx + tw + 2, ty + th + 2], fill=colour)
        draw.text((tx + 1 - left, ty + 1 - top), text, fill=_text_colour(colour), font=font)
    return np.asarray(canvas)
