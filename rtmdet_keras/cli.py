"""The ``rtmdet`` command group and the options every command shares.

Each subcommand lives next to the code it drives (``rtmdet_keras/train.py`` defines ``train``, and so
on) and is imported only when it runs, so ``rtmdet --help`` starts without TensorFlow.

``--cfg-options`` takes any number of ``key=value`` words, as on the SSCMA/mmdetection command
line: ``--cfg-options num_classes=2 imgsz='(192,192)' max_epochs=50``.
"""

from __future__ import annotations

import functools
import importlib
import sys

import click

from rtmdet_keras.config import ConfigError, load_config
from rtmdet_keras.tensorflow_startup import (VERBOSE_ENV, import_tensorflow_quietly, show_tensorflow_logs,
                                             tensorflow_start_filtered)

# name -> (module, attribute, one-line help)
COMMANDS = {
    "models": ("rtmdet_keras.commands.models", "summary_command", "Build a preset and print its parts, parameters and FLOPs."),
    "check-data": ("rtmdet_keras.commands.check_data", "check_data_command", "Read a data set and print what it holds and what was skipped."),
    "browse-dataset": ("rtmdet_keras.commands.browse", "browse_command", "Write augmented training samples with their boxes drawn."),
    "train": ("rtmdet_keras.train", "train_command", "Train a detector."),
    "evaluate": ("rtmdet_keras.commands.evaluate", "evaluate_command", "COCO metrics of a Keras checkpoint, SavedModel or .tflite."),
    "export": ("rtmdet_keras.commands.export", "export_command", "Export to TFLite (float32, float16, int8) and SavedModel."),
    "predict": ("rtmdet_keras.commands.predict", "predict_command", "Draw detections on images."),
    "qat": ("rtmdet_keras.commands.qat", "qat_command", "Quantization-aware fine-tuning, then int8 export."),
    "convert-checkpoint": ("rtmdet_keras.commands.convert", "convert_command", "Convert an mmdetection .pth checkpoint."),
}


def split_cfg_options(args):
    """Gather every word after ``--cfg-options`` (up to the next ``--flag``) into repeated
    ``--cfg-options WORD`` pairs, which click understands."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a == "--cfg-options":
            i += 1
            while i < len(args) and not args[i].startswith("--"):
                out += ["--cfg-options", args[i]]
                i += 1
            continue
        out.append(a)
        i += 1
    return out


class VariadicCfgCommand(click.Command):
    def parse_args(self, ctx, args):
        return super().parse_args(ctx, split_cfg_options(args))


def config_options(config_required: bool = True):
    """Decorator adding ``--config`` and ``--cfg-options`` to a command (use with ``cls=VariadicCfgCommand``)."""

    def deco(f):
        f = click.option(
            "--cfg-options",
            "cfg_options",
            multiple=True,
            metavar="KEY=VALUE ...",
            help="Override settings, e.g. num_classes=2 imgsz='(192,192)' model.widen_factor=0.5",
        )(f)
        f = click.option(
            "--config",
            "config",
            required=False,
            default=None if config_required else "nano",
            help="Preset name (nano, tiny, ...) or path to a YAML config.",
        )(f)
        return f

    return deco


def load_config_or_exit(config, cfg_options, positional_config=None):
    """Load the config for a command; a bad key or value ends the command with a one-line message."""
    name = config or positional_config
    if name is None:
        raise click.UsageError("give a config: --config nano.yaml (or a preset name, or a path)")
    try:
        return load_config(name, list(cfg_options), print_fn=click.echo)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


def quiet_tensorflow_start(command: click.Command) -> click.Command:
    """Make ``command`` import TensorFlow, without its C++ start-up lines, once its arguments are parsed and
    just before it runs: ``--help`` and usage errors stay fast, and no TensorFlow line precedes the command's
    own output. Changes ``command`` in place (once) and returns it."""
    if (getattr(command, "_quiet_tensorflow_start", False) or command.callback is None
            or not getattr(command, "needs_tensorflow", True)):  # check-data stays TensorFlow-free (and fast)
        return command
    run = command.callback

    @functools.wraps(run)
    def callback(*args, **kwargs):
        import_tensorflow_quietly()
        return run(*args, **kwargs)

    command.callback = callback
    command._quiet_tensorflow_start = True
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            # Most command modules import TensorFlow only when they run; `models` imports Keras at once.
            with tensorflow_start_filtered():
                command = getattr(importlib.import_module(module), attr)
            return quiet_tensorflow_start(command)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise

            def unavailable():
                raise click.ClickException(f"'{name}' is not available in this version")

            return click.Command(name, help=f"(not available in this version) {COMMANDS[name][2]}",
                                 callback=unavailable)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rtmdet_keras", message="%(prog)s %(version)s")
# A group option ("rtmdet --verbose train"): train and qat already take --verbose N for Keras' progress bar. Eager,
# so that it is set before the subcommand's module is imported (which may import TensorFlow).
@click.option("--verbose", is_flag=True, is_eager=True, expose_value=False,
              callback=lambda ctx, param, value: show_tensorflow_logs() if value else None,
              help=f"Show TensorFlow's C++ start-up and log lines (hidden by default; also {VERBOSE_ENV}=1).")
def main():
    """RTMDet in Keras 3: train on COCO JSON or YOLO data, evaluate, export to int8 TFLite, QAT."""


def run_standalone(command, prog_name):
    """Entry for ``python -m rtmdet_keras.X``: run one command with its own argv (``RTMDET_VERBOSE=1`` shows
    TensorFlow's start-up lines)."""
    command = quiet_tensorflow_start(command)
    sys.exit(command.main(args=sys.argv[1:], prog_name=prog_name, standalone_mode=True))


if __name__ == "__main__":
    main()
