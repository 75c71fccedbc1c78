"""``rtmdet evaluate`` / ``python -m rtmdet_keras.evaluate``: COCO evaluation of any form of a trained detector.

``python -m rtmdet_keras.evaluate configs/nano.yaml work_dirs/nano/nano_int8.tflite --cfg-options imgsz='(192,192)'``

Parses the arguments, calls :func:`rtmdet_keras.runtime.evaluate.evaluate` (the library: which model
forms, which tables and pictures) and writes ``--json``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import click

from rtmdet_keras.cli import VariadicCfgCommand, config_options
from rtmdet_keras.commands.common import command_config_and_model
from rtmdet_keras.data.records import DatasetError


@click.command(cls=VariadicCfgCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, metavar="[CONFIG] MODEL")
@config_options()
@click.option("--tflite", default=None, help="A .tflite model (float32, float16 or int8).")
@click.option("--checkpoint", default=None, help="A .keras model, epoch_N.ckpt.npz, SavedModel folder, or an "
              "mmdetection/SSCMA .pth or its converted .npz.")
@click.option("--batch", "batch_size", type=int, default=16, show_default=True, help="Images per batch.")
@click.option("--threads", type=int, default=None, help="Interpreter / TensorFlow threads.")
@click.option("--json", "json_out", default=None,
              help="Also write the metrics, the per-class precision / recall / F1 at the score threshold, the "
                   "threshold and the confusion matrix to this JSON file.")
@click.option("--score-thr", type=float, default=None,
              help="Score threshold for the precision / recall table and the confusion matrix "
                   "[default: the F1-optimal one over all classes, which is printed].")
@click.option("--plots-dir", default=None,
              help="Folder for pr_curve.png and confusion_matrix.png [default: the --json file's folder, "
                   "else MODEL_NAME_eval/ beside the model].")
@click.option("--no-plots", is_flag=True, help="Write no pictures (the tables are still printed).")
def evaluate_command(args, config, cfg_options, tflite, checkpoint, batch_size, threads, json_out, score_thr,
                     plots_dir, no_plots):
    """COCO bbox metrics of a .keras, epoch_N.ckpt.npz, SavedModel or .tflite on the validation split,
    then precision, recall and F1 per class at one score threshold (IoU 0.5), pr_curve.png and
    confusion_matrix.png.

    \b
    python -m rtmdet_keras.evaluate configs/nano.yaml work_dirs/nano/nano_int8.tflite
    rtmdet evaluate --config nano --checkpoint work_dirs/nano/best_coco_bbox_mAP.keras --batch 32
    rtmdet evaluate work_dirs/nano/nano_int8.tflite --score-thr 0.4 --json eval/int8.json

    The default threshold is the one with the best F1 over all classes (summed TP, FP, FN); set
    --score-thr to the threshold the device will use to see its precision and recall.
    """
    # lazy: the library (and TensorFlow) loads once the arguments are parsed, so --help answers at once
    from rtmdet_keras.runtime.evaluate import default_plots_dir, evaluate
    from rtmdet_keras.runtime.loading import ModelLoadError

    if batch_size < 1:
        raise click.BadParameter("must be at least 1", param_hint="--batch")
    if score_thr is not None and not 0.0 <= score_thr <= 1.0:
        raise click.BadParameter(f"{score_thr} is not a score: give a value from 0 to 1", param_hint="--score-thr")
    if no_plots and plots_dir:
        raise click.UsageError("--plots-dir and --no-plots contradict each other; give one")
    if not no_plots:
        if importlib.util.find_spec("matplotlib") is None:  # say so before minutes of evaluation
            raise click.ClickException("the plots need matplotlib: pip install matplotlib, or add --no-plots")
    if threads is not None:
        if threads < 1:
            raise click.BadParameter("must be at least 1", param_hint="--threads")
        _set_tf_threads(threads)
    cfg, model_path = command_config_and_model(args, config, cfg_options, checkpoint=checkpoint, tflite=tflite)
    if not no_plots and plots_dir is None:
        plots_dir = default_plots_dir(model_path, json_out)
    # Create the output folders now: an unwritable one is one line before the evaluation, not a
    # traceback after it.
    for folder, what in ((None if no_plots else plots_dir, "--plots-dir"),
                         (Path(json_out).parent if json_out else None, "--json")):
        if folder is not None:
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise click.BadParameter(f"cannot create the folder {folder}: {e.strerror or e}", param_hint=what)
    try:
        result = evaluate(cfg, model_path, batch_size=batch_size, threads=threads, print_fn=click.echo,
                          score_thr=score_thr, plots_dir=None if no_plots else plots_dir)
    except (ModelLoadError, DatasetError) as e:
        raise click.ClickException(str(e)) from None
    if json_out:
        Path(json_out).write_text(json.dumps({
            "model": str(model_path), "metrics": result.metrics, "per_class": result.per_class,
            "operating_point": result.operating_point.to_json(),
            "plots": {k: str(v) for k, v in result.plots.items()},
        }, indent=2) + "\n")


def _set_tf_threads(threads: int) -> None:
    import tensorflow as tf  # lazy: as the library, after the arguments are parsed

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    except RuntimeError:  # TensorFlow already started; the setting only applies before that
        pass
