"""``rtmdet qat`` / ``python -m rtmdet_keras.qat``: quantization-aware fine-tuning, int8 export and the
float / PTQ / QAT table (the library: :mod:`rtmdet_keras.qat`)."""

from __future__ import annotations

import sys

import click

from rtmdet_keras.cli import VariadicCfgCommand, config_options
from rtmdet_keras.data import DatasetError, ImageReadError
from rtmdet_keras.commands.common import command_config_and_model
from rtmdet_keras.runtime.layout import ExportError
from rtmdet_keras.qat.settings import QATError, qat_epochs_from_options


@click.command("qat", cls=VariadicCfgCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, metavar="[CONFIG] CHECKPOINT")
@config_options()
@click.option("--checkpoint", default=None,
              help="The trained float model: best_coco_bbox_mAP.keras, epoch_N.ckpt.npz, or an "
                   "mmdetection/SSCMA .pth or its converted .npz.")
@click.option("--work-dir", default=None, help="Output folder (default work_dirs/<config name>/qat).")
@click.option("--resume", is_flag=True, help="Continue from the newest QAT checkpoint in the work dir.")
@click.option("--no-baselines", is_flag=True, help="Skip evaluating the float model and its PTQ int8 export.")
@click.option("--export-weights", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Export the epoch with the best fake-quant validation mAP, or the last epoch.")
@click.option("--verbose", type=int, default=1, help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")
def qat_command(args, config, cfg_options, checkpoint, work_dir, resume, no_baselines, export_weights, verbose):
    """Quantization-aware fine-tuning of a trained model, then full-int8 export and a float / PTQ / QAT table.

    \b
    python -m rtmdet_keras.qat configs/nano.yaml work_dirs/nano/best_coco_bbox_mAP.keras \\
        --cfg-options imgsz='(192,192)' max_epochs=5
    rtmdet qat --config nano --checkpoint work_dirs/nano/epoch_300.ckpt.npz

    The QAT recipe is the config's qat section; max_epochs=N on this command line sets the QAT epochs
    (as qat.epochs=N does).
    """
    # lazy: the library (and TensorFlow) loads once the arguments are parsed, so --help answers at once
    from rtmdet_keras.qat.run import qat
    from rtmdet_keras.training.callbacks import TrainingDiverged

    cfg, model_path = command_config_and_model(args, config, cfg_options, checkpoint=checkpoint)
    qat_epochs_from_options(cfg, cfg_options)
    if model_path.suffix == ".tflite" or model_path.is_dir():
        raise click.ClickException(f"{model_path}: QAT starts from a Keras model (.keras or "
                                   "epoch_N.ckpt.npz) or an mmdetection/SSCMA checkpoint (.pth or converted .npz)")
    try:
        qat(cfg, model_path, work_dir=work_dir, resume=resume, baselines=not no_baselines,
            export_weights=export_weights, verbose=verbose, print_fn=click.echo)
    except (QATError, DatasetError, ImageReadError, ExportError, TrainingDiverged) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted: resume with the same command and --resume", err=True)
        sys.exit(130)


__all__ = ["qat_command"]
