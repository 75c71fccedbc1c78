"""``rtmdet export`` / ``python -m rtmdet_keras.export``: a checkpoint to TFLite and a SavedModel.

``python -m rtmdet_keras.export configs/nano.yaml work_dirs/nano/best_coco_bbox_mAP.keras --int8``

Parses the arguments, loads the network (:func:`rtmdet_keras.runtime.loading.load_network`) and calls
:func:`rtmdet_keras.export.convert.export_tflite`; the formats, layouts and files: :mod:`rtmdet_keras.export`.
"""

from __future__ import annotations

from pathlib import Path

import click

from rtmdet_keras.cli import VariadicCfgCommand, config_options
from rtmdet_keras.commands.common import command_config_and_model
from rtmdet_keras.export.formats import CALIBRATORS, DEFAULT_CALIBRATOR, DEFAULT_FORMATS, INTEGER_FORMATS
from rtmdet_keras.export.vela import DEFAULT_ACCELERATOR
from rtmdet_keras.runtime.layout import DEFAULT_LAYOUT, OUTPUT_LAYOUTS, ExportError


@click.command(cls=VariadicCfgCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, metavar="[CONFIG] CHECKPOINT")
@config_options()
@click.option("--checkpoint", default=None, help="best_coco_bbox_mAP.keras, epoch_N.ckpt.npz (EMA weights), or an "
              "mmdetection/SSCMA .pth or its converted .npz.")
@click.option("--imgsz", nargs=2, type=int, default=None, metavar="H W", help="Input size (overrides imgsz).")
@click.option("--format", "fmt", type=click.Choice(["tflite", "saved_model"]), default="tflite", show_default=True)
@click.option("--int8", "want_int8", is_flag=True, help="Full-integer int8 .tflite.")
@click.option("--float16", "want_float16", is_flag=True, help="Float16-weight .tflite.")
@click.option("--float32", "want_float32", is_flag=True, help="Float32 .tflite.")
@click.option("--int16x8", "want_int16x8", is_flag=True,
              help="16-bit activations, 8-bit weights .tflite (int16 input/outputs; calibrated like int8).")
@click.option("--all", "want_all", is_flag=True, help="float32, float16 and int8 (the default without flags).")
@click.option("--out-dir", default=None, help="Output folder (default: the checkpoint's folder).")
@click.option("--calib-images", type=int, default=None, help="Calibration images (default export.calib_images).")
@click.option("--input-type", type=click.Choice(["int8", "uint8"]), default=None,
              help="Input type of the int8 model (default export.int8_input_type).")
@click.option("--layout", type=click.Choice(OUTPUT_LAYOUTS), default=DEFAULT_LAYOUT, show_default=True,
              help="Output layout (see the module docs); the default keeps int8 most accurate.")
@click.option("--name", default=None, help="File stem (default: the config name, e.g. nano -> nano_int8.tflite).")
@click.option("--no-check", is_flag=True, help="Skip the comparison with the Keras model.")
@click.option("--c-array", is_flag=True,
              help="Also write the integer models as <stem>.cc/.h C arrays for TFLite Micro.")
@click.option("--vela", "want_vela", is_flag=True,
              help="Compile the int8 model for an Arm Ethos-U NPU with Vela (pip install 'rtmdet_keras[vela]').")
@click.option("--accelerator-config", default=None, metavar="NPU",
              help="Vela's NPU (default ethos-u55-64, the Himax WE2's; ethos-u55-128, ethos-u65-256, ...).")
@click.option("--system-config", default=None, help="Vela's --system-config (default Vela's).")
@click.option("--memory-mode", default=None, help="Vela's --memory-mode (default Vela's).")
@click.option("--vela-config", default=None, help="Vela's --config .ini file (system configs, memory modes).")
@click.option("--calibrator", type=click.Choice(CALIBRATORS), default=DEFAULT_CALIBRATOR, show_default=True,
              help="int8 activation ranges: fast (XNNPACK kernels) or tflite (TFLite's calibrator, reference "
                   "kernels, several times slower; same ranges up to float rounding).")
@click.option("--keep-bgr-gather", is_flag=True,
              help="Keep the BGR presets' channel reversal as a GATHER op instead of folding it into the stem conv.")
def export_command(args, config, cfg_options, checkpoint, imgsz, fmt, want_int8, want_float16, want_float32,
                   want_int16x8, want_all, out_dir, calib_images, input_type, layout, name, no_check, c_array,
                   want_vela, accelerator_config, system_config, memory_mode, vela_config, keep_bgr_gather,
                   calibrator):
    """Export a checkpoint to TFLite (float32, float16, full-integer int8) and a SavedModel.

    \b
    python -m rtmdet_keras.export configs/nano.yaml work_dirs/nano/best_coco_bbox_mAP.keras --int8
    rtmdet export --config nano work_dirs/nano/epoch_300.ckpt.npz --all --imgsz 192 192
    """
    # lazy: the library (and TensorFlow) loads once the arguments are parsed, so --help answers at once
    from rtmdet_keras.export.convert import export_tflite
    from rtmdet_keras.runtime.loading import ModelLoadError, load_network

    cfg, model_path = command_config_and_model(args, config, cfg_options, checkpoint=checkpoint,
                                               extra_overrides=[f"imgsz=[{imgsz[0]},{imgsz[1]}]"] if imgsz else None)
    if model_path.suffix == ".tflite":
        raise click.ClickException(f"{model_path}: already a .tflite; export takes a .keras, .ckpt.npz, .pth or "
                                 "converted .npz checkpoint")
    if calib_images is not None:
        if calib_images < 1:
            raise click.BadParameter("must be at least 1", param_hint="--calib-images")
        cfg.export.calib_images = int(calib_images)
    formats = [f for f, on in (("float32", want_float32), ("float16", want_float16), ("int8", want_int8),
                               ("int16x8", want_int16x8)) if on]
    if want_all or not formats:
        formats = list(dict.fromkeys(list(DEFAULT_FORMATS) + formats))
    if fmt == "saved_model":
        formats = []
    vela = None
    if want_vela:
        if "int8" not in formats:
            raise click.UsageError("--vela compiles the int8 model; add --int8")
        vela = {"accelerator": accelerator_config or DEFAULT_ACCELERATOR, "system_config": system_config,
                "memory_mode": memory_mode, "config_file": vela_config}
    elif accelerator_config or system_config or memory_mode or vela_config:
        raise click.UsageError("--accelerator-config, --system-config, --memory-mode and --vela-config go with --vela")
    if c_array and not any(f in INTEGER_FORMATS for f in formats):
        raise click.UsageError(f"--c-array writes the integer models ({', '.join(INTEGER_FORMATS)}); add --int8 or --int16x8")
    try:
        network = load_network(cfg, model_path)
        export_tflite(network, cfg, Path(out_dir) if out_dir else model_path.parent, formats,
                      int8_input=input_type, layout=layout, name=name, check=not no_check,
                      fold_bgr=not keep_bgr_gather, c_array=c_array, vela=vela, calibrator=calibrator)
    except (ExportError, ModelLoadError) as e:
        raise click.ClickException(str(e)) from None
