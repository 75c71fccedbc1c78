"""Augmented training samples with their boxes and class names drawn (``rtmdet browse-dataset``).

    rtmdet browse-dataset --config nano.yaml --stage 1 --out browse/ --num 16
    python -m rtmdet_keras.data.browse --config nano.yaml --cfg-options data_root=datasets/demo

The samples come out of the very pipeline training uses (:func:`build_train_pipeline`), so what you
see is what the network sees: check that colours look natural and every box sits on its object after
Mosaic, resize, crop, flip (and MixUp when enabled).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

if __name__ == "__main__":
    # `python -m rtmdet_keras.data.browse`: the pipeline below imports TensorFlow; filter its start-up lines.
    from rtmdet_keras.tensorflow_startup import import_tensorflow_quietly

    import_tensorflow_quietly()

from rtmdet_keras.data.draw import draw_detections  # noqa: E402
from rtmdet_keras.data.pipeline import build_train_pipeline  # noqa: E402
from rtmdet_keras.data.split import load_split  # noqa: E402


def browse_dataset(cfg, out_dir, stage: int = 1, num: int = 16, seed: Optional[int] = None,
                   scale: Optional[int] = None, image_format: str = "jpg", print_fn=print) -> List[Path]:
    """Write ``num`` augmented training samples of ``stage`` with their targets drawn to ``out_dir``.

    ``scale`` enlarges the samples (nearest neighbour) before drawing, so labels stay readable on
    192-pixel inputs; by default the longer side becomes at least 512 pixels. Returns the files.
    """
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


if __name__ == "__main__":
    from rtmdet_keras.cli import run_standalone
    from rtmdet_keras.commands.browse import browse_command

    run_standalone(browse_command, "python -m rtmdet_keras.data.browse")
