"""``rtmdet train`` (``python -m rtmdet_keras.train``): parse the options, call
:func:`rtmdet_keras.training.run.train`, turn the errors a user can fix into one-line messages."""

from __future__ import annotations

import sys

import click

from rtmdet_keras.cli import VariadicCfgCommand, config_options, load_config_or_exit
from rtmdet_keras.data import DatasetError, ImageReadError


@click.command("train", cls=VariadicCfgCommand)
@click.argument("config_path", required=False)
@config_options()
@click.option("--work-dir", default=None, help="Where checkpoints and logs go (default work_dirs/<config name>); "
              "when it holds an earlier run, the next free <work dir>2, 3, ...")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the work dir (without --work-dir: "
              "of the config's newest run).")
@click.option("--exist-ok", is_flag=True, help="Write into the work dir even when it holds an earlier run (its files "
              "of the same name are replaced; other checkpoints are kept).")
@click.option("--seed", type=int, default=None, help="Random seed (default: the config's).")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]), default="default",
              help="tf.distribute strategy: default (all GPUs when there are several), mirrored, or multiworker (the "
              "cluster from TF_CONFIG; see the README, 'Training on several machines').")
@click.option("--mixed-precision", is_flag=True, help="Compute in float16 on GPUs (mixed_float16) or bfloat16 on "
              "CPUs that have it (mixed_bfloat16); weights, losses and the saved models stay float32.")
@click.option("--verbose", type=int, default=1, help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")
def train_command(config_path, config, cfg_options, work_dir, resume, exist_ok, seed, strategy, mixed_precision,
                  verbose):
    """Train a detector. CONFIG_PATH may also be given as --config."""
    # lazy: the library (and TensorFlow) loads once the arguments are parsed, so --help answers at once
    from rtmdet_keras.models.pretrained import CheckpointError
    from rtmdet_keras.training.callbacks import TrainingDiverged
    from rtmdet_keras.training.run import train
    from rtmdet_keras.training.workdir import WorkDirError

    cfg = load_config_or_exit(config, cfg_options, config_path)
    try:
        train(cfg, work_dir=work_dir, resume=resume, exist_ok=exist_ok, seed=seed, strategy=strategy,
              verbose=verbose, mixed_precision=mixed_precision)
    except (DatasetError, ImageReadError, TrainingDiverged, CheckpointError, WorkDirError) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted: resume with the same command and --resume", err=True)
        sys.exit(130)
