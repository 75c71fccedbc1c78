"""Export benchmarks: export wall time, .tflite sizes, single-image interpreter latency; and the
accuracy of the int8 output layouts.

``python scripts/benchmark.py export [--cases nano@192,nano@320,s@640] [--runs 100] [--calib 200]
[--calibrator fast|tflite] [--out-dir DIR [--time-only]]``
    Builds each preset at its size (random weights: latency and size do not depend on them), exports
    float32 and int8 (``--calib`` synthetic calibration images, default the config's 200) and times
    ``Interpreter.invoke`` on one image with 1 and 2 threads (median and minimum of ``--runs`` after 10
    warm-ups). ``--time-only`` re-times the files an earlier run kept in ``--out-dir``.

``python scripts/benchmark.py export --calibration-time [--cases nano@192,s@640] [--calibrator fast,tflite]``
    Only the int8 export, once per calibrator, in one process and window: wall and CPU time (all
    threads) of ``export_tflite`` (temporary batch-1 SavedModel, conversion with calibration, no
    self-check), its parts, and how far the two int8 models' quantisation parameters and outputs are apart.

``python scripts/benchmark.py export --layouts --checkpoint work_dirs/nano/best_coco_bbox_mAP.keras
--config nano --cfg-options data_root=datasets/demo/ ...``
    Exports the trained checkpoint to int8 in every output layout (calibrated on the training split)
    and measures, against the Keras model on the whole validation split: score and box errors,
    matched detections and COCO mAP.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DEFAULT_CASES = "nano@192,nano@320,s@640"


def _synthetic(n, size, seed=0):
    """Calibration stand-ins: shapes on textured backgrounds, letterbox band of 114."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(40, 220, (n, size, size, 3)).astype(np.uint8)
    for img in imgs:
        for _ in range(6):
            y0, x0 = rng.integers(0, size - 16, 2)
            hh, ww = rng.integers(8, size // 3, 2)
            img[y0:y0 + hh, x0:x0 + ww] = rng.integers(0, 256, 3)
        img[size - size // 6:] = 114
    return imgs


def time_invoke(path, threads, runs, seed=0):
    """Median and minimum milliseconds of ``Interpreter.invoke`` on one random image."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    rng = np.random.default_rng(seed)
    if np.dtype(d["dtype"]) == np.float32:
        x = rng.uniform(0, 255, d["shape"]).astype(np.float32)
    else:
        info = np.iinfo(d["dtype"])
        x = rng.integers(info.min, info.max + 1, d["shape"]).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    for _ in range(10):
        it.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), min(times)


def bench_calibration_time(cases, calibrators, calib, out_dir):
    """int8 export wall time per calibrator, and the difference of the resulting models."""
    import json

    from rtmdet_keras.config import load_config
    from rtmdet_keras.export.convert import export_tflite
    from rtmdet_keras.models import build_model

    print("| model @ px | calibrator | calib images | int8 export (s) | CPU (s) | SavedModel (s) | conversion (s) |\n"
          "|---|---|---|---|---|---|---|", flush=True)
    for case in cases:
        preset, size = case.split("@")
        size = int(size)
        cfg = load_config(preset, [f"imgsz={size}"])
        if calib:
            cfg.export.calib_images = calib
        network = build_model(cfg)
        imgs = _synthetic(cfg.export.calib_images, size)
        paths = {}
        for calibrator in calibrators:
            name = f"{preset}_{size}_{calibrator}"
            t0, c0 = time.monotonic(), time.process_time()
            paths[calibrator] = export_tflite(network, cfg, out_dir, formats=("int8",), calib_dataset=imgs,
                                              saved_model=False, check=False, name=name, calibrator=calibrator,
                                              print_fn=lambda *a: None)["int8"]
            wall, cpu = time.monotonic() - t0, time.process_time() - c0
            parts = json.loads(paths[calibrator].with_suffix(".json").read_text())["export_seconds"]
            print(f"| {preset} @ {size} | {calibrator} | {len(imgs)} | {wall:.1f} | {cpu:.1f} | "
                  f"{parts['saved_model']:.1f} | {parts['convert']:.1f} |", flush=True)
        if len(paths) == 2:
            print(f"  {case}: " + _model_difference(*paths.values(), imgs[:8]), flush=True)


def _model_difference(path_a, path_b, images):
    """Quantisation parameters and outputs of two int8 models of one network, compared."""
    from ai_edge_litert.interpreter import Interpreter

    a, b = Interpreter(model_path=str(path_a)), Interpreter(model_path=str(path_b))
    worst, n = 0.0, 0
    for ta, tb in zip(a.get_tensor_details(), b.get_tensor_details()):
        sa, sb = ta["quantization_parameters"]["scales"], tb["quantization_parameters"]["scales"]
        if len(sa) and len(sa) == len(sb):
            worst = max(worst, float(np.max(np.abs(sa - sb) / sa)))
            n += int(not np.array_equal(ta["quantization_parameters"]["zero_points"],
                                        tb["quantization_parameters"]["zero_points"]))
    steps = 0
    for it in (a, b):
        it.allocate_tensors()
    for img in images:
        outs = []
        for it in (a, b):
            d = it.get_input_details()[0]
            it.set_tensor(d["index"], (img[None].astype(np.int16) - 128).astype(np.int8))
            it.invoke()
            outs.append({o["name"]: it.get_tensor(o["index"]).astype(np.int32) for o in it.get_output_details()})
        steps = max(steps, max(int(np.abs(outs[0][k] - outs[1][k]).max()) for k in outs[0]))
    return (f"largest relative scale difference {worst:.2e}, {n} tensors with other zero points, "
            f"outputs at most {steps} int8 steps apart on {len(images)} images")


def bench_cases(cases, runs, calib, out_dir, time_only=False, calibrator="fast"):
    """Export (unless ``time_only``: reuse ``<preset>_<size>_<fmt>.tflite`` in ``out_dir``) and time."""
    from rtmdet_keras.config import load_config

    rows = []
    for case in cases:
        preset, size = case.split("@")
        size = int(size)
        row = {"case": f"{preset} @ {size}"}
        if not time_only:
            from rtmdet_keras.export.convert import export_tflite
            from rtmdet_keras.models import build_model

            cfg = load_config(preset, [f"imgsz={size}"])
            if calib:
                cfg.export.calib_images = calib
            network = build_model(cfg)
            imgs = _synthetic(cfg.export.calib_images, size)
            row.update(params=network.count_params(), calib=len(imgs))
        for fmt in ("float32", "int8"):
            path = Path(out_dir) / f"{preset}_{size}_{fmt}.tflite"
            if not time_only:
                t0 = time.perf_counter()
                export_tflite(network, cfg, out_dir, formats=(fmt,), calib_dataset=imgs, saved_model=False,
                              check=False, name=f"{preset}_{size}", calibrator=calibrator, print_fn=lambda *a: None)
                row[f"{fmt}_export_s"] = time.perf_counter() - t0
            row[f"{fmt}_kib"] = path.stat().st_size / 1024
            for threads in (1, 2):
                row[f"{fmt}_ms_{threads}"] = time_invoke(path, threads, runs)
        rows.append(row)
        print(_case_line(row), flush=True)
    return rows


def _case_line(r):
    def ms(key):
        med, low = r[key]
        return f"{med:.2f} ({low:.2f})"

    export = (f"{r['float32_export_s']:.1f} | {r['int8_export_s']:.1f} ({r['calib']})" if "calib" in r else "- | -")
    params = f"{r['params'] / 1e6:.2f} M" if "params" in r else "-"
    return (f"| {r['case']} | {params} | {export} | {r['float32_kib']:.0f} | {r['int8_kib']:.0f} | "
            f"{ms('float32_ms_1')} | {ms('float32_ms_2')} | {ms('int8_ms_1')} | {ms('int8_ms_2')} |")


CASE_HEADER = ("| model @ px | params | export float32 (s) | export int8 (s) (calib images) | float32 KiB | int8 KiB "
               "| float32 1 thread, ms median (min) | float32 2 threads | int8 1 thread | int8 2 threads |\n"
               "|---|---|---|---|---|---|---|---|---|---|")


def bench_layouts(cfg, checkpoint, out_dir, layouts):
    from rtmdet_keras.data import load_split
    from rtmdet_keras.export.calibration import dataset_images
    from rtmdet_keras.export.check import compare_with_keras
    from rtmdet_keras.export.convert import export_tflite
    from rtmdet_keras.export.mcu import op_report
    from rtmdet_keras.runtime.evaluate import evaluate
    from rtmdet_keras.runtime.loading import load_network
    from rtmdet_keras.runtime.tflite import TFLiteDetector

    network = load_network(cfg, checkpoint)
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    quiet = lambda *a: None  # noqa: E731
    images = dataset_images(val, cfg, len(val), shuffle=False)
    base = evaluate(cfg, checkpoint, print_fn=quiet).metrics
    print(f"Keras {checkpoint}: mAP {base['bbox_mAP']:.4f}, mAP50 {base['bbox_mAP_50']:.4f} on {len(val)} images")
    print("| layout | extra ops | |Δscore| max / mean | |Δbox| px max / mean | |Δbox| px at score ≥ 0.3 max / mean | "
          "dets Keras / int8 / matched (mean IoU) | mAP50:95 | mAP50 |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| Keras float32 | | | | | | {base['bbox_mAP']:.4f} | {base['bbox_mAP_50']:.4f} |")
    for layout in layouts:
        paths = export_tflite(network, cfg, out_dir, formats=("int8",), calib_dataset=train, layout=layout,
                              saved_model=False, check=False, name=f"layout_{layout}", print_fn=quiet)
        det = TFLiteDetector(paths["int8"], cfg=cfg)
        r = compare_with_keras(network, lambda x: det(x, cfg), images, cfg)
        m = evaluate(cfg, paths["int8"], threads=2, print_fn=quiet).metrics
        ops = sorted({row["op"] for row in op_report(paths["int8"])} - {
            "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "CONCATENATION", "MAX_POOL_2D", "PAD",
            "RESIZE_NEAREST_NEIGHBOR", "QUANTIZE", "MEAN"})
        print(f"| {layout} | {', '.join(ops) or '-'} | {r['score_max']:.4f} / {r['score_mean']:.5f} | "
              f"{r['box_max']:.2f} / {r['box_mean']:.3f} | {r['box_conf_max']:.2f} / {r['box_conf_mean']:.3f} | "
              f"{r['dets_keras']} / {r['dets_other']} / {r['matched']} ({r['match_iou']:.3f}) | "
              f"{m['bbox_mAP']:.4f} | {m['bbox_mAP_50']:.4f} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"preset@size list (default {DEFAULT_CASES})")
    parser.add_argument("--runs", type=int, default=100, help="timed invokes per measurement")
    parser.add_argument("--calib", type=int, default=None, help="calibration images (default: the config's)")
    parser.add_argument("--out-dir", default=None, help="keep the exported files here")
    parser.add_argument("--time-only", action="store_true",
                        help="only time the files a previous run left in --out-dir")
    parser.add_argument("--calibrator", default=None,
                        help="int8 calibrator: fast or tflite (with --calibration-time a list, default fast,tflite)")
    parser.add_argument("--calibration-time", action="store_true",
                        help="only time the int8 export per calibrator and compare the models")
    parser.add_argument("--layouts", action="store_true", help="measure the int8 output layouts instead")
    parser.add_argument("--layout-list", default="logits,scores,decoded")
    parser.add_argument("--checkpoint", help="trained .keras / .ckpt.npz for --layouts")
    parser.add_argument("--config", default="nano")
    parser.add_argument("--cfg-options", nargs="*", default=[])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.out_dir or tmp)
        if args.layouts:
            from rtmdet_keras.config import load_config

            if not args.checkpoint:
                parser.error("--layouts needs --checkpoint")
            cfg = load_config(args.config, args.cfg_options)
            if args.calib:
                cfg.export.calib_images = args.calib
            bench_layouts(cfg, args.checkpoint, out_dir, args.layout_list.split(","))
            return 0
        if args.calibration_time:
            bench_calibration_time(args.cases.split(","), (args.calibrator or "fast,tflite").split(","), args.calib,
                                   out_dir)
            return 0
        if args.time_only and not args.out_dir:
            parser.error("--time-only needs the --out-dir of an earlier run")
        print(CASE_HEADER, flush=True)
        bench_cases(args.cases.split(","), args.runs, args.calib, out_dir, time_only=args.time_only,
                    calibrator=args.calibrator or "fast")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
