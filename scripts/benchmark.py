"""Benchmarks: ``python scripts/benchmark.py <part> [options]``, parts listed below.

Each part lives in ``scripts/bench/<part>.py`` and defines ``main(argv)``. Figures go into
``docs/benchmarks.md`` together with the command that produced them. Timings are never asserted in
tests; compare as ratios measured in one run, the machine is shared and noisy.
"""

import importlib.util
import sys
from pathlib import Path

PARTS = {
    "models": "parameters, GFLOPs and Keras forward latency per preset",
    "data": "images/s of the stage-1 and stage-2 training pipelines",
    "assigner": "dynamic soft label assignment + losses per batch",
    "train": "training images/s of model.fit, stage 1 and 2 (and YOLO11n's with --cases ...,yolo)",
    "evaluation": "what one COCO evaluation during training costs (predict, COCO, best-model save)",
    "export": "export time, .tflite size and interpreter latency",
    "vela": "Ethos-U figures per preset from Arm's Vela: NPU op share, SRAM, flash, estimated time",
    "files": "training pipeline images/s and CPU ms per image decoding from files (no cache), 640 px",
    "export_stages": "where the time of export --int8 goes, stage by stage",
    "ema_vs_raw": "COCO AP of the EMA and the raw weights of a run's checkpoints, epoch by epoch",
    "vs_ultralytics": "nano against YOLO11n on the same data, epochs and cores (accuracy, int8, wall time)",
}


def main(argv):
    if not argv or argv[0] not in PARTS or argv[0] in ("-h", "--help"):
        print(__doc__)
        for k, v in PARTS.items():
            print(f"  {k:14s} {v}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    path = Path(__file__).parent / "bench" / f"{argv[0]}.py"
    if not path.exists():
        print(f"benchmark part {argv[0]!r} is not written yet ({path})", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(f"bench_{argv[0]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    # This checkout's package first, whatever an editable install elsewhere points at.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main(sys.argv[1:]))
