"""``rtmdet predict`` / ``python -m rtmdet_keras.predict``: detect objects in images and draw them.

``rtmdet predict MODEL IMAGES... --config nano --out DIR``; the library:
:func:`rtmdet_keras.runtime.predict.predict`.
"""

from __future__ import annotations

from pathlib import Path

import click

from rtmdet_keras.cli import VariadicCfgCommand, config_options
from rtmdet_keras.commands.common import command_config_and_model


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
    # lazy: the library (and TensorFlow) loads once the arguments are parsed, so --help answers at once
    from rtmdet_keras.runtime.loading import ModelLoadError
    from rtmdet_keras.runtime.predict import predict

    if not 0.0 <= score_thr <= 1.0:
        raise click.BadParameter("must be between 0 and 1", param_hint="--score-thr")
    cfg, model_path = command_config_and_model([model], config, cfg_options)
    try:
        predict(cfg, model_path, images, Path(out_dir) if out_dir else model_path.parent / "predictions",
                score_thr=score_thr, threads=threads, draw=not no_draw, print_fn=click.echo)
    except ModelLoadError as e:
        raise click.ClickException(str(e)) from None
