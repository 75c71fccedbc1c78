"""Parameters, GFLOPs and Keras forward latency of every preset.

``python scripts/benchmark.py models [--presets nano,tiny,...] [--num-classes 80] [--repeats 20]
[--threads 0] [--markdown]``

Per preset: trainable parameters (mmdetection's convention), GFLOPs = conv/dense multiply-accumulates
(mmdetection's published convention) at 192x192 and 640x640, and the latency of one forward pass of
a single 192x192 image through the Keras 3 model (``training=False``) inside a ``tf.function``
(traced once, two warm-up calls, then the median and minimum of ``--repeats`` calls, outputs copied to
NumPy). Weights are random: latency does not depend on them.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

PRESETS = ["nano", "nano_relu", "tiny", "s", "m", "l", "x", "mnv4"]  # nano_relu_q = nano_relu


def _latency_ms(model, size, repeats):
    import tensorflow as tf

    @tf.function(autograph=False)
    def forward(x):
        return model(x, training=False)

    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32))
    for _ in range(3):  # trace + warm-up
        tf.nest.map_structure(lambda t: t.numpy(), forward(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), forward(x))
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), min(times)


def measure(preset, num_classes, repeats, latency=True):
    """One table row: parameters, GFLOPs at 192 and 640, latency (ms) at 192."""
    import keras

    from rtmdet_keras import load_config
    from rtmdet_keras.models import build_model
    from rtmdet_keras.models.summary import count_macs, count_parameters

    row = {"preset": preset}
    cfg640 = load_config(preset, {"num_classes": num_classes, "imgsz": [640, 640]})
    with keras.StatelessScope():  # shapes only: skip the initialisers
        model = build_model(cfg640)
    row["gflops_640"] = count_macs(model)["total"] / 1e9
    row["gflops_640_mmcv"] = count_macs(model, "mmcv")["total"] / 1e9
    keras.backend.clear_session()
    gc.collect()
    model = build_model(load_config(preset, {"num_classes": num_classes, "imgsz": [192, 192]}))
    params = count_parameters(model)
    row.update(params=params["total"], backbone=params["backbone"], neck=params["neck"], head=params["head"])
    row["gflops_192"] = count_macs(model)["total"] / 1e9
    if latency:
        row["median_ms"], row["min_ms"] = _latency_ms(model, 192, repeats)
    keras.backend.clear_session()
    gc.collect()
    return row


def format_table(rows, latency=True):
    head = "| preset | parameters | backbone / neck / head | GFLOPs 192 | GFLOPs 640 | (mmcv-style 640) |"
    rule = "|---|---|---|---|---|---|"
    if latency:
        head += " forward 192, batch 1 (ms, median / min) |"
        rule += "---|"
    lines = [head, rule]
    for r in rows:
        line = (f"| {r['preset']} | {r['params']:,d} | {r['backbone']:,d} / {r['neck']:,d} / {r['head']:,d} | "
                f"{r['gflops_192']:.3f} | {r['gflops_640']:.3f} | {r['gflops_640_mmcv']:.3f} |")
        if latency:
            line += f" {r['median_ms']:.1f} / {r['min_ms']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated preset names")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0 = TF default)")
    parser.add_argument("--no-latency", action="store_true", help="parameters and GFLOPs only")
    args = parser.parse_args(argv)

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    rows = []
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        rows.append(measure(preset, args.num_classes, args.repeats, latency=not args.no_latency))
        print(f"  {preset}: done", file=sys.stderr, flush=True)
    print(f"{args.num_classes} classes; GFLOPs = conv/dense multiply-accumulates (x2 for FLOPs); "
          f"latency: Keras 3 tf.function, {args.repeats} runs after warm-up, {os.cpu_count()} CPU cores")
    print(format_table(rows, latency=not args.no_latency))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
