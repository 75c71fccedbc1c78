"""``rtmdet convert-checkpoint IN.pth OUT.npz --config tiny``: an mmdetection or SSCMA checkpoint into a
name-keyed ``.npz`` (:func:`rtmdet_keras.models.pretrained.convert_checkpoint`), once, where PyTorch is installed."""

from __future__ import annotations

import click

from rtmdet_keras.cli import VariadicCfgCommand, config_options, load_config_or_exit
from rtmdet_keras.models.pretrained import STATE_DICT_KEYS, CheckpointError, convert_checkpoint


@click.command("convert-checkpoint", cls=VariadicCfgCommand)
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@config_options()
@click.option("--state-dict", "state_dict_key", type=click.Choice(STATE_DICT_KEYS), default="state_dict",
              show_default=True,
              help="Which weights of an mmengine checkpoint: state_dict holds the EMA weights, "
                   "ema_state_dict the raw training weights.")
def convert_command(checkpoint, output, config, cfg_options, state_dict_key):
    """Convert an mmdetection RTMDet (or ImageNet CSPNeXt) CHECKPOINT (.pth) to OUTPUT (.npz).

    The architecture comes from --config (the preset the checkpoint was trained as, e.g. tiny);
    the class count from the checkpoint. Needs PyTorch (pip install 'rtmdet_keras[convert]').
    """
    cfg = load_config_or_exit(config, cfg_options)
    try:
        convert_checkpoint(checkpoint, output, cfg, state_dict_key=state_dict_key, print_fn=click.echo)
    except CheckpointError as e:
        raise click.ClickException(str(e)) from None
