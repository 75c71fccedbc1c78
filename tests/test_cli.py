"""The rtmdet command group: help without TensorFlow, SSCMA-style --cfg-options."""

import subprocess
import sys

import click
from click.testing import CliRunner

from rtmdet_keras.cli import VariadicCfgCommand, config_options, load_config_or_exit, main, split_cfg_options


def test_cfg_options_take_many_words_until_the_next_flag():
    argv = ["--config", "nano.yaml", "--cfg-options", "a=1", "imgsz='(192,192)'", "--seed", "3", "pos"]
    assert split_cfg_options(argv) == [
        "--config", "nano.yaml", "--cfg-options", "a=1", "--cfg-options", "imgsz='(192,192)'", "--seed", "3", "pos"
    ]


@click.command(cls=VariadicCfgCommand)
@config_options()
def _probe(config, cfg_options):
    cfg = load_config_or_exit(config, cfg_options)
    click.echo(f"{cfg.num_classes} {cfg.imgsz} {cfg.max_epochs}")


def test_command_with_sscma_overrides_and_bad_key():
    r = CliRunner().invoke(_probe, ["--config", "nano.yaml", "--cfg-options", "num_classes=3", "imgsz='(256,256)'",
                                    "max_epochs=5"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "3 [256, 256] 5"
    r = CliRunner().invoke(_probe, ["--config", "nano", "--cfg-options", "num_clases=2"])
    assert r.exit_code != 0
    assert "num_classes" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(_probe, ["--config", "nano", "--cfg-options", "preset=tiny"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert r.output.startswith("Error: --cfg-options preset=tiny") and r.output.count("\n") == 1


def test_group_help_lists_commands_without_importing_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from rtmdet_keras.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); print(r.output); "
            "assert 'tensorflow' not in sys.modules, 'help imported tensorflow'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("train", "export", "evaluate", "check-data", "qat"):
        assert name in out.stdout


def test_public_surface_imports_lazily():
    code = ("import sys, rtmdet_keras as r; assert 'tensorflow' not in sys.modules; "
            "names = [r.build_model, r.train, r.export_tflite, r.evaluate, r.RTMDetDetector]; "
            "print(all(callable(n) for n in names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("True")
