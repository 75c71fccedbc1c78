"""Time of the dynamic soft label assigner and the RTMDet losses, forward only, in a tf.function.

``python scripts/bench/assigner.py [--repeats 10] [--num-gt 32] [--num-classes 2]``
(also ``python scripts/benchmark.py assigner`` once the dispatcher lists it).

Cases: batch 32 at 192 px (756 priors) and batch 8 at 640 px (8400 priors), N ground-truth boxes
per image (all real, random sizes 8-96 px / 16-320 px), random logits and predicted boxes around
the priors. Prints the median and the minimum over the repeats, in milliseconds per batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from rtmdet_keras.boxes import make_priors  # noqa: E402
from rtmdet_keras.training.assigner import dynamic_soft_label_assign  # noqa: E402
from rtmdet_keras.training.losses import rtmdet_loss  # noqa: E402

CASES = [(32, 192), (8, 640)]


def _inputs(rng, batch, size, num_gt, num_classes):
    priors = make_priors(size, size, [8, 16, 32])
    pts = priors.numpy()
    ltrb = rng.uniform(0.5, 4.0, (batch, len(pts), 4)) * pts[None, :, 2:3]
    pred = np.concatenate([pts[None, :, :2] - ltrb[..., :2], pts[None, :, :2] + ltrb[..., 2:]], -1)
    logits = rng.normal(-3.0, 1.5, (batch, len(pts), num_classes))
    wh = rng.uniform(size / 24, size / 2, (batch, num_gt, 2))
    xy = rng.uniform(0, 1, (batch, num_gt, 2)) * (size - wh)
    gt = np.concatenate([xy, xy + wh], -1)
    labels = rng.integers(0, num_classes, (batch, num_gt))
    return (tf.constant(logits, tf.float32), tf.constant(pred, tf.float32), priors,
            tf.constant(gt, tf.float32), tf.constant(labels, tf.int32))


def _time(fn, args, repeats):
    fn(*args)  # trace
    fn(*args)  # warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--num-gt", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--class-cost", default="all_classes", choices=["all_classes", "gt_class"])
    args = parser.parse_args(argv)

    @tf.function(reduce_retracing=True)
    def assign_only(logits, pred, priors, gt, labels):
        return dynamic_soft_label_assign(logits, pred, priors, gt, labels, class_cost=args.class_cost)["target_scores"]

    @tf.function(reduce_retracing=True)
    def assign_and_loss(logits, pred, priors, gt, labels):
        assigned = dynamic_soft_label_assign(logits, pred, priors, gt, labels, class_cost=args.class_cost)
        return rtmdet_loss(logits, pred, assigned)

    rng = np.random.default_rng(0)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible, N={args.num_gt} GT/image, "
          f"C={args.num_classes}, class_cost={args.class_cost}, {args.repeats} repeats")
    print(f"{'batch':>5} {'size':>5} {'priors':>6} | {'assign ms (med/min)':>20} | {'assign+loss ms (med/min)':>25} "
          f"| {'positives/img':>13}")
    for batch, size in CASES:
        inputs = _inputs(rng, batch, size, args.num_gt, args.num_classes)
        a_med, a_min = _time(assign_only, inputs, args.repeats)
        l_med, l_min = _time(assign_and_loss, inputs, args.repeats)
        fg = float(tf.reduce_sum(tf.cast(assign_only(*inputs) > 0, tf.float32))) / batch
        print(f"{batch:>5} {size:>5} {inputs[2].shape[0]:>6} | {a_med:>9.1f} / {a_min:>8.1f} | "
              f"{l_med:>12.1f} / {l_min:>10.1f} | {fg:>13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
