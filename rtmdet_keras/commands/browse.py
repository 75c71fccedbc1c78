"""``rtmdet browse-dataset``: write augmented training samples with their boxes and class names drawn.

    rtmdet browse-dataset --config nano.yaml --stage 1 --out browse/ --num 16
    python -m rtmdet_keras.data.browse --config nano.yaml --cfg-options data_root=datasets/demo

See :mod:`rtmdet_keras.data.browse`.
"""

from __future__ import annotations

from pathlib import Path

import click

from rtmdet_keras.cli import VariadicCfgCommand, config_options, load_config_or_exit
from rtmdet_keras.data.records import DatasetError


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
    # lazy: the library (and TensorFlow) loads once the arguments are parsed, so --help answers at once
    from rtmdet_keras.data.browse import browse_dataset

    cfg = load_config_or_exit(config, cfg_options, config_path)
    if num < 1:
        raise click.BadParameter("must be at least 1", param_hint="--num")
    if out_dir is None:
        out_dir = Path(cfg.work_dir) / "browse" if cfg.work_dir else Path("work_dirs") / cfg.name / "browse"
    try:
        browse_dataset(cfg, out_dir, stage=int(stage), num=num, seed=seed, scale=scale, image_format=image_format,
                       print_fn=click.echo)
    except (DatasetError, OSError) as e:
        raise click.ClickException(str(e)) from None
