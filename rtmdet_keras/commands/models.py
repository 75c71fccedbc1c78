"""``rtmdet models`` / ``python -m rtmdet_keras.models``: build a preset and print its parts, parameters and
GFLOPs (:mod:`rtmdet_keras.models.summary`)."""

from __future__ import annotations

import click

from rtmdet_keras.cli import VariadicCfgCommand, config_options, load_config_or_exit, run_standalone


@click.command("models", cls=VariadicCfgCommand)
@config_options(config_required=True)
@click.argument("positional_config", required=False, metavar="[CONFIG]")
def summary_command(config, cfg_options, positional_config):
    """Build a preset and print parameters and GFLOPs per part and the output shapes.

    Example: rtmdet models --config tiny.yaml --cfg-options num_classes=80 imgsz='(640,640)'
    """
    # lazy: the library (and TensorFlow) loads once the arguments are parsed, so --help answers at once
    from rtmdet_keras.models.rtmdet import build_model
    from rtmdet_keras.models.summary import format_summary

    cfg = load_config_or_exit(config, cfg_options, positional_config)
    try:
        model = build_model(cfg)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_summary(model, cfg))


def main():
    run_standalone(summary_command, "python -m rtmdet_keras.models")
