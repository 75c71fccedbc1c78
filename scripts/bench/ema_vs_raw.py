"""COCO AP of the EMA weights against the raw weights, epoch by epoch, from a run's checkpoints.

``python scripts/benchmark.py ema_vs_raw WORK_DIR [--every 5]``

Reads ``WORK_DIR/config.yaml`` and each ``epoch_N.ckpt.npz`` kept there (train with
``max_keep_ckpts=1000`` to keep them all), loads each as the commands do (``load_network``, with and
without its EMA weights) and evaluates both on the validation split.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work_dir")
    p.add_argument("--every", type=int, default=5, help="evaluate every Nth epoch (and the last)")
    args = p.parse_args(argv)

    from rtmdet_keras.config import load_config
    from rtmdet_keras.data import load_split
    from rtmdet_keras.evaluation import evaluate_detections
    from rtmdet_keras.postprocess import make_dataset_predictor
    from rtmdet_keras.runtime.loading import load_network
    from rtmdet_keras.training.checkpoint import epoch_checkpoints

    work = Path(args.work_dir)
    cfg = load_config(work / "config.yaml")
    val = load_split(cfg, "val")
    ckpts = epoch_checkpoints(work)
    last = ckpts[-1][0] if ckpts else 0
    print("| epoch | raw AP50:95 | EMA AP50:95 | raw AP50 | EMA AP50 |\n|---|---|---|---|---|")
    for epoch, ckpt in ckpts:
        if epoch % args.every and epoch != last:
            continue
        row = {}
        for kind in ("raw", "ema"):
            network = load_network(cfg, ckpt, ema=kind == "ema")
            row[kind] = evaluate_detections(val, make_dataset_predictor(network, cfg)(val)).metrics
        print(f"| {epoch} | {row['raw']['bbox_mAP']:.3f} | {row['ema']['bbox_mAP']:.3f} | "
              f"{row['raw']['bbox_mAP_50']:.3f} | {row['ema']['bbox_mAP_50']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
