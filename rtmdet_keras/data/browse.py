"""``rtmdet browse-dataset``: write augmented training samples with their boxes and class names drawn.

    rtmdet browse-dataset --config nano.yaml --stage 1 --out browse/ --num 16
    python -m rtmdet_keras.data.browse --config nano.yaml --cfg-options data_root=datasets/demo

The samples come out of the very pipeline training uses (:func:`build_train_pipeline`), so what you
see is what the network sees: check that colours look natural and every box sits on its object after
Mosaic, resize, crop, flip (and MixUp when enabled).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence

import click
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rtmdet_keras.cli import VariadicCfgCommand, config_options, load_config_or_exit, run_standalone

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


def browse_dataset(cfg, out_dir, stage: int = 1, num: int = 16, seed: Optional[int] = None,
                   scale: Optional[int] = None, image_format: str = "jpg", print_fn=print) -> List[Path]:
    """Write ``num`` augmented training samples of ``stage`` with their targets drawn to ``out_dir``.

    ``scale`` enlarges the samples (nearest neighbour) before drawing, so labels stay readable on
    192-pixel inputs; by default the longer side becomes at least 512 pixels. Returns the files.
    """
    from rtmdet_keras.data import load_split
    from rtmdet_keras.data.pipeline import build_train_pipeline

    dataset = load_split(cfg, "train")
    pipe = build_train_pipeline(dataset, cfg, stage=stage, seed=seed)
    names = list(dataset.class_names)
    h, w = int(cfg.imgsz[0]), int(cfg.imgsz[1])
    scale = int(scale) if scale else max(1, math.ceil(512 / max(h, w)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    batches = math.ceil(num / pipe.batch_size)
    for images, targets in pipe.dataset.take(batches):
        for image, boxes, labels in zip(images.numpy(), targets["boxes"].numpy(), targets["labels"].numpy()):
            if len(written) >= num:
                break
            if scale > 1:
                image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
            drawn = draw_detections(image, boxes * scale, labels, names)
            path = out_dir / f"stage{stage}_{len(written):04d}.{image_format}"
            Image.fromarray(drawn).save(path, **({"quality": 95} if image_format == "jpg" else {}))
            written.append(path)
    print_fn(f"wrote {len(written)} stage-{stage} samples ({w}x{h} px, drawn at {scale}x) with their boxes "
             f"to {out_dir}")
    return written


@click.command("browse-dataset", cls=VariadicCfgCommand)
@click.argument("config_path", required=False)
@config_options()
@click.option("--stage", type=click.Choice(["1", "2"]), default="1", show_default=True,
              help="1: Mosaic (+ MixUp when enabled), resize, crop, HSV, flip; 2: the same without Mosaic/MixUp.")
@click.option("--out", "out_dir", default=None, help="Output folder (default: work_dirs/<config name>/browse).")
@click.option("--num", type=int, default=16, show_default=True, help="Number of samples to write.")
@click.option("--seed", type=int, default=None, help="Random seed (default: the config's).")
@click.option("--scale", type=int, default=None,
              help="Enlarge samples by this factor before drawing (default: to at least 512 px).")
@click.option("--format", "image_format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True)
def browse_command(config_path, config, cfg_options, stage, out_dir, num, seed, scale, image_format):
    """Write augmented training samples with their boxes and class names drawn.

    CONFIG_PATH may also be given as --config."""
    cfg = load_config_or_exit(config, cfg_options, config_path)
    from rtmdet_keras.data import DatasetError

    if num < 1:
        raise click.BadParameter("must be at least 1", param_hint="--num")
    if out_dir is None:
        out_dir = Path(cfg.work_dir) / "browse" if cfg.work_dir else Path("work_dirs") / cfg.name / "browse"
    try:
        browse_dataset(cfg, out_dir, stage=int(stage), num=num, seed=seed, scale=scale, image_format=image_format,
                       print_fn=click.echo)
    except (DatasetError, OSError) as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    run_standalone(browse_command, "python -m rtmdet_keras.data.browse")
