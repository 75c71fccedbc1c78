"""Where the time of ``export --int8`` goes: the calls of ``export_command`` one by one, wall and CPU
seconds (all threads) per stage.

``python scripts/benchmark.py export_stages CHECKPOINT [--calibrator fast|tflite] [--cfg-options ...]``
    Imports TensorFlow, loads the checkpoint (its ``config.yaml`` beside it), letterboxes the
    calibration images, writes the SavedModel (both signatures, as the command does), converts to
    int8 (float graph, calibration, quantisation timed apart), builds the op report and runs the
    self-check on 8 validation images.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--calibrator", default="fast", choices=("fast", "tflite"))
    parser.add_argument("--cfg-options", nargs="*", default=[])
    args = parser.parse_args(argv)

    marks = [("start", time.monotonic(), time.process_time())]

    def mark(name):
        marks.append((name, time.monotonic(), time.process_time()))

    import tensorflow  # noqa: F401

    mark("import tensorflow")
    from rtmdet_keras.commands.common import command_config_and_model
    from rtmdet_keras.export.calibration import calibration_images, load_split_for
    from rtmdet_keras.export.check import check_images, compare_with_keras
    from rtmdet_keras.export.convert import convert_saved_model, write_saved_model
    from rtmdet_keras.export.mcu import graph_summary, op_report
    from rtmdet_keras.runtime.loading import load_network
    from rtmdet_keras.runtime.tflite import TFLiteDetector

    cfg, path = command_config_and_model([args.checkpoint], None, args.cfg_options)
    network = load_network(cfg, path)
    mark("load network")
    calib = calibration_images(cfg, load_split_for(cfg, "train", "calibration"))
    mark(f"calibration images ({len(calib)})")
    with tempfile.TemporaryDirectory() as tmp:
        saved = write_saved_model(network, cfg, os.path.join(tmp, "sm"))
        mark("SavedModel (2 signatures)")
        if args.calibrator == "fast":
            from rtmdet_keras.export.calibration import FastCalibrator as cls
        else:
            from tensorflow.lite.python.optimize.calibrator import Calibrator as cls
        real = cls.calibrate

        def timed(self, gen):
            mark("conversion: float graph")
            out = real(self, gen)
            mark(f"conversion: calibration ({args.calibrator})")
            return out

        cls.calibrate = timed
        try:
            flat = convert_saved_model(saved, "int8", calib, "int8", args.calibrator)
        finally:
            cls.calibrate = real
        mark("conversion: quantisation")
        tfl = os.path.join(tmp, "m.tflite")
        with open(tfl, "wb") as f:
            f.write(flat)
        op_report(graph_summary(tfl))
        mark("op report")
        images = check_images(cfg, None, 8, calib)
        det = TFLiteDetector(tfl, cfg=cfg)
        compare_with_keras(network, lambda x: det(x, cfg), images, cfg)
        mark("self-check (8 images)")
    print("| stage | wall (s) | CPU (s) |\n|---|---|---|")
    for (_, t0, c0), (name, t1, c1) in zip(marks, marks[1:]):
        print(f"| {name} | {t1 - t0:.1f} | {c1 - c0:.1f} |")
    print(f"| total | {marks[-1][1] - marks[0][1]:.1f} | {marks[-1][2] - marks[0][2]:.1f} |")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0
