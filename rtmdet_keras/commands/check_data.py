"""``rtmdet check-data``: read a data set's splits and print what they hold and what was skipped.

    python -m rtmdet_keras.data.check --config nano --cfg-options data_root=datasets/demo/

Reads annotation files only: nothing on this command's import path imports TensorFlow.
"""

from __future__ import annotations

import click

from rtmdet_keras.cli import VariadicCfgCommand, config_options, load_config_or_exit
from rtmdet_keras.data.check import format_report
from rtmdet_keras.data.records import DatasetError
from rtmdet_keras.data.split import load_split


@click.command("check-data", cls=VariadicCfgCommand)
@config_options(config_required=False)
@click.option("--split", "splits", multiple=True, type=click.Choice(["train", "val"]),
              help="Split(s) to check (default: both).")
def check_data_command(config, cfg_options, splits):
    """Read the data set named by the config and print, per split, images, boxes per class, box
    sizes and what was skipped or repaired and why."""
    cfg = load_config_or_exit(config, cfg_options)
    for split in splits or ("train", "val"):
        try:
            dataset = load_split(cfg, split)
        except DatasetError as e:
            raise click.ClickException(str(e)) from None
        click.echo(format_report(dataset, imgsz=cfg.imgsz))
        click.echo("")


# Reads annotation files only: no TensorFlow import (and none of its start-up lines) for this command.
check_data_command.needs_tensorflow = False
