"""Detect objects in images and draw them: ``rtmdet predict MODEL IMAGES... --config nano --out DIR``.

``MODEL`` is any form :mod:`rtmdet_keras.evaluate` loads (``.keras``, ``epoch_N.ckpt.npz``, SavedModel
folder, ``.tflite``); ``IMAGES`` are files or folders. Each image goes through the evaluation
transform (letterbox), the model and :func:`~rtmdet_keras.postprocess.decode_and_nms`; detections
scoring at least ``--score-thr`` are drawn with their class names and scores
(:func:`~rtmdet_keras.data.draw.draw_detections`) and written to ``DIR/detections.json`` in
original-image pixels (xyxy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import click
import numpy as np

from rtmdet_keras.cli import VariadicCfgCommand, config_options, run_standalone


def collect_images(inputs: Sequence) -> List[Path]:
    """Files as given, folders expanded to their images (sorted, not recursive)."""
    from rtmdet_keras.data.images import IMAGE_EXTENSIONS

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
    import tensorflow as tf
    from PIL import Image

    from rtmdet_keras.data.images import ImageReadError, load_image
    from rtmdet_keras.data.pipeline import boxes_to_original, letterbox
    from rtmdet_keras.evaluate import load_model_runner
    from rtmdet_keras.postprocess import decode_and_nms

    paths = collect_images(images)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = load_model_runner(cfg, model_path, threads)
    names = list(cfg.class_names) if cfg.class_names else [f"class_{i}" for i in range(int(cfg.num_classes))]
    if draw:
        from rtmdet_keras.data.draw import draw_detections

    @tf.function(reduce_retracing=True, autograph=False)  # plain tensor code: nothing to convert
    def nms(outputs):
        return decode_and_nms(outputs, cfg)

    results, taken, skipped = [], set(), 0
    for path in paths:
        try:
            image = load_image(path)
        except ImageReadError as e:
            print_fn(f"skipped: {e}")
            skipped += 1
            continue
        boxed, scale = letterbox(image, cfg.imgsz, int(cfg.augment.pad_val))
        outputs = runner(np.asarray(boxed)[None])
        boxes, scores, labels, valid = (np.asarray(t) for t in nms({k: tf.constant(v) for k, v in outputs.items()}))
        n = int(valid[0])
        keep = scores[0, :n] >= score_thr
        h, w = image.shape[:2]
        orig = boxes_to_original(boxes[0, :n][keep], float(scale), (h, w))
        kept_scores, kept_labels = scores[0, :n][keep], labels[0, :n][keep]
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


@click.command(cls=VariadicCfgCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.argument("images", nargs=-1, required=True)
@config_options()
@click.option("--out", "out_dir", default=None, help="Output folder (default: predictions/ beside the model).")
@click.option("--score-thr", type=float, default=0.3, show_default=True, help="Draw and keep detections from here.")
@click.option("--threads", type=int, default=None, help="Interpreter threads for .tflite models.")
@click.option("--no-draw", is_flag=True, help="Only write detections.json.")
def predict_command(model, images, config, cfg_options, out_dir, score_thr, threads, no_draw):
    """Draw detections of MODEL (.keras, .ckpt.npz, SavedModel or .tflite) on IMAGES (files or folders).

    \b
    rtmdet predict work_dirs/nano/nano_int8.tflite datasets/demo/valid --out preds --score-thr 0.3
    """
    from rtmdet_keras.evaluate import ModelLoadError, command_config_and_model

    if not 0.0 <= score_thr <= 1.0:
        raise click.BadParameter("must be between 0 and 1", param_hint="--score-thr")
    cfg, model_path = command_config_and_model([model], config, cfg_options)
    try:
        predict(cfg, model_path, images, Path(out_dir) if out_dir else model_path.parent / "predictions",
                score_thr=score_thr, threads=threads, draw=not no_draw, print_fn=click.echo)
    except ModelLoadError as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    run_standalone(predict_command, "python -m rtmdet_keras.predict")
