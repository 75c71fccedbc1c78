"""Ethos-U figures per preset from Arm's Vela: NPU op share, SRAM, flash and estimated inference time.

``RTMDET_VELA=/path/to/vela python scripts/benchmark.py vela [--presets nano,nano_relu,tiny,s] [--imgsz 192]
[--accelerators ethos-u55-64,ethos-u55-128] [--gather nano_relu]``

Builds each preset (random weights: op placement, memory and Vela's cycle estimate do not depend on
them), exports full-integer int8 calibrated on 8 synthetic images (the BGR reversal folded into the stem
conv, as ``rtmdet export`` does) and compiles it with Vela for each accelerator, with Vela's default
system configuration (Ethos_U55_High_End_Embedded, 500 MHz) and memory mode (Shared_Sram). ``--gather``
also exports the named BGR presets with the GATHER kept (``--keep-bgr-gather``), the graph before the fold.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv):
    ap = argparse.ArgumentParser(prog="benchmark.py vela", description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="nano,nano_relu,tiny,s")
    ap.add_argument("--imgsz", type=int, default=192)
    ap.add_argument("--accelerators", default="ethos-u55-64,ethos-u55-128")
    ap.add_argument("--gather", default="nano_relu", help="BGR presets to compile with the GATHER kept too")
    args = ap.parse_args(argv)

    from rtmdet_keras.config import load_config
    from rtmdet_keras.export.convert import export_tflite
    from rtmdet_keras.models import build_model
    from rtmdet_keras.export.vela import compile_vela, find_vela
    from tests.export.export_check import synthetic_images

    find_vela()
    accelerators = args.accelerators.split(",")
    gather = set(filter(None, args.gather.split(",")))
    images = synthetic_images(8, (args.imgsz, args.imgsz))
    head = ("| preset | graph | NPU | NPU ops | SRAM KiB | flash KiB | est. ms | inferences/s |\n"
            "|---|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_vela_") as tmp:
        for preset in args.presets.split(","):
            cfg = load_config(preset, [f"imgsz={args.imgsz}", "num_classes=80"])
            network = build_model(cfg)
            variants = [("folded" if cfg.model.channel_order == "bgr" else "as built", True)]
            if preset in gather and cfg.model.channel_order == "bgr":
                variants.append(("GATHER kept", False))
            for label, fold in variants:
                out = Path(tmp) / f"{preset}_{label.split()[0]}"
                paths = export_tflite(network, cfg, out, formats=("int8",), calib_dataset=images, check=False,
                                      saved_model=False, fold_bgr=fold, print_fn=lambda *a: None)
                for acc in accelerators:
                    r = compile_vela(paths["int8"], out / acc, accelerator=acc)
                    n = r["npu_ops"] + r["cpu_ops"]
                    row = (f"| {preset}@{args.imgsz} | {label} | {acc} | {r['npu_ops']}/{n} "
                           f"({100 * r['npu_share']:.1f} %) | {r['sram_kib']:.1f} | {r['flash_kib']:.1f} | "
                           f"{r['inference_ms']:.2f} | {r['inferences_per_second']:.1f} |")
                    rows.append(row)
                    print(row, flush=True)
    print(f"\nVela {r['vela_version']}, system config {r['system_config']}, memory mode {r['memory_mode']}, "
          f"80 classes, {args.imgsz}x{args.imgsz} input\n")
    print(head)
    print("\n".join(rows))
