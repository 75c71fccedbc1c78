"""Detect objects in images and draw them (the library of ``rtmdet predict``).

``MODEL`` is any form :func:`~rtmdet_keras.runtime.runners.load_model_runner` loads (``.keras``,
``epoch_N.ckpt.npz``, SavedModel folder, ``.tflite``); ``IMAGES`` are files or folders. Each image goes
through the evaluation transform (letterbox), the model and
:func:`~rtmdet_keras.postprocess.decode_and_nms` (:func:`~rtmdet_keras.postprocess.runner_step`);
detections scoring at least ``score_thr`` are drawn with their class names and scores
(:func:`~rtmdet_keras.data.draw.draw_detections`) and written to ``DIR/detections.json`` in
original-image pixels (xyxy). The command: :mod:`rtmdet_keras.commands.predict`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import click
import numpy as np
from PIL import Image

from rtmdet_keras.data.draw import draw_detections
from rtmdet_keras.data.images import IMAGE_EXTENSIONS, ImageReadError, load_image
from rtmdet_keras.data.pipeline import boxes_to_original, letterbox
from rtmdet_keras.postprocess import image_detections, runner_step
from rtmdet_keras.runtime.runners import load_model_runner


def collect_images(inputs: Sequence) -> List[Path]:
    """Files as given, folders expanded to their images (sorted, not recursive)."""
    found = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
        elif p.exists():
            found.append(p)
        else:
            raise click.ClickException(f"{p}: no such file or folder")
    if not found:
        raise click.ClickException(f"no images found in {', '.join(map(str, inputs))} "
                                   f"(looked for {', '.join(IMAGE_EXTENSIONS)})")
    return found


def _output_name(path: Path, taken: set) -> str:
    name = path.stem + ".jpg"
    i = 1
    while name in taken:  # two inputs with the same stem from different folders
        name = f"{path.stem}_{i}.jpg"
        i += 1
    taken.add(name)
    return name


def predict(cfg, model_path, images: Sequence, out_dir, score_thr: float = 0.3, threads: Optional[int] = None,
            draw: bool = True, print_fn=print) -> list:
    """Run ``model_path`` on ``images`` (paths or folders); write drawn images and ``detections.json``
    to ``out_dir``. Returns the JSON's list: per image ``{"image", "output", "width", "height",
    "detections": [{"box": [x1, y1, x2, y2] original pixels, "score", "label", "class"}]}``."""
    paths = collect_images(images)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = load_model_runner(cfg, model_path, threads)
    names = list(cfg.class_names) if cfg.class_names else [f"class_{i}" for i in range(int(cfg.num_classes))]
    step = runner_step(runner, cfg)
    results, taken, skipped = [], set(), 0
    for path in paths:
        try:
            image = load_image(path)
        except ImageReadError as e:
            print_fn(f"skipped: {e}")
            skipped += 1
            continue
        boxed, scale = letterbox(image, cfg.imgsz, int(cfg.augment.pad_val))
        kept_boxes, kept_scores, kept_labels = image_detections(step(np.asarray(boxed)[None]), 0, score_thr)
        h, w = image.shape[:2]
        orig = boxes_to_original(kept_boxes, float(scale), (h, w))
        entry = {"image": str(path), "width": int(w), "height": int(h), "detections": [
            {"box": [round(float(v), 2) for v in box], "score": round(float(s), 4), "label": int(lab),
             "class": names[int(lab)] if 0 <= int(lab) < len(names) else str(int(lab))}
            for box, s, lab in zip(orig, kept_scores, kept_labels)]}
        if draw:
            out = out_dir / _output_name(path, taken)
            Image.fromarray(draw_detections(image, orig, kept_labels, names, kept_scores)).save(out, quality=92)
            entry["output"] = str(out)
        results.append(entry)
        classes = sorted({d["class"] for d in entry["detections"]})
        print_fn(f"{path}: {len(entry['detections'])} detections" + (f" ({', '.join(classes)})" if classes else ""))
    (out_dir / "detections.json").write_text(json.dumps(results, indent=2) + "\n")
    print_fn(f"{len(results)} images -> {out_dir} (detections.json"
             + (", drawn images" if draw else "") + ")" + (f"; {skipped} unreadable skipped" if skipped else ""))
    return results
