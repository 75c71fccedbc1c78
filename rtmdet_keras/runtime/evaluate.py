"""COCO evaluation of any form of a trained detector on the validation split (the library of ``rtmdet evaluate``).

The model may be a Keras ``.keras`` file (``best_coco_bbox_mAP.keras``), a training checkpoint
``epoch_N.ckpt.npz`` (its EMA weights, as training-time evaluation uses), a SavedModel folder (the
export's or Keras' ``model.export``) or any ``.tflite`` of the export (float32, float16, int8).
Every form goes through the evaluation transform (letterbox), the same
:func:`~rtmdet_keras.postprocess.decode_and_nms` (``cfg.test``: score 0.001, NMS IoU 0.65, 300 per
image) and the mapping back to original-image pixels; Keras models through the very predictor that
training uses (:func:`~rtmdet_keras.postprocess.make_dataset_predictor`). After the COCO tables
come precision, recall and F1 per class at one score threshold (:mod:`rtmdet_keras.operating_point`),
and :func:`evaluate` draws ``pr_curve.png`` and ``confusion_matrix.png`` (:mod:`rtmdet_keras.evaluation_plots`).
The command: :mod:`rtmdet_keras.commands.evaluate`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from rtmdet_keras.data import load_split
from rtmdet_keras.evaluation import evaluate_detections
from rtmdet_keras.evaluation_plots import write_evaluation_plots
from rtmdet_keras.operating_point import operating_point
from rtmdet_keras.postprocess import make_dataset_predictor, make_runner_predictor
from rtmdet_keras.runtime.loading import CHECKPOINT_SUFFIX, KERAS_SUFFIXES, ModelLoadError
from rtmdet_keras.runtime.runners import load_model_runner


def evaluate(cfg, model_path, batch_size: int = 16, threads: Optional[int] = None, dataset=None,
             print_fn=print, score_thr: Optional[float] = None, plots_dir=None):
    """COCO bbox evaluation of ``model_path`` (``.keras``, ``.ckpt.npz``, SavedModel or ``.tflite``) on
    ``dataset`` (default: the config's validation split). Prints pycocotools' 12-line summary, the
    per-class AP table and a per-class table of TP / FP / FN, precision, recall and F1 at
    ``score_thr`` (default: the F1-optimal threshold over all classes; see
    :mod:`rtmdet_keras.operating_point`). With ``plots_dir``, writes ``pr_curve.png`` and
    ``confusion_matrix.png`` there. Returns the :class:`~rtmdet_keras.evaluation.CocoResult`, its
    ``operating_point`` and ``plots`` (name -> path) filled in."""
    if dataset is None:
        dataset = load_split(cfg, "val")
    if len(dataset.class_names) != int(cfg.num_classes):
        raise ModelLoadError(f"{dataset.source}: the validation data has {len(dataset.class_names)} classes, the "
                             f"config num_classes {cfg.num_classes}")
    runner = load_model_runner(cfg, model_path, threads)
    if runner.kind == "keras":
        predict = make_dataset_predictor(runner.network, cfg, batch_size)
    else:
        predict = make_runner_predictor(runner, cfg, batch_size)
    start = time.perf_counter()
    detections = predict(dataset)
    seconds = time.perf_counter() - start
    result = evaluate_detections(dataset, detections)
    print_fn(f"{model_path} ({runner.kind}) on {len(dataset)} images of {dataset.source} at "
             f"{cfg.imgsz[0]}x{cfg.imgsz[1]}: {seconds:.1f} s ({seconds / max(len(dataset), 1) * 1000:.1f} ms/image)")
    print_fn(result.report().rstrip())
    result.operating_point = operating_point(dataset, detections, score_thr)
    print_fn(result.operating_point.table().rstrip())
    if plots_dir is not None:
        ap50 = {r["class"]: r["ap50"] for r in result.per_class}
        result.plots = write_evaluation_plots(result.operating_point, plots_dir, ap50)
        print_fn("wrote " + ", ".join(str(p) for p in result.plots.values()))
    return result


def default_plots_dir(model_path, json_out=None) -> Path:
    """Where the command writes its plots when no ``--plots-dir`` is given: beside ``--json`` when
    there is one, else ``<model name>_eval/`` beside the model, so evaluating the float and the int8
    model of one work dir keeps both sets of pictures."""
    if json_out:
        return Path(json_out).resolve().parent
    model_path = Path(model_path)
    stem = model_path.name
    for suffix in (CHECKPOINT_SUFFIX,) + KERAS_SUFFIXES + (".tflite",):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    return model_path.resolve().parent / f"{stem}_eval"
