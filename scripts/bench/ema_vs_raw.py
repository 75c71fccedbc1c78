"""COCO AP of the EMA weights against the raw weights, epoch by epoch, from a run's checkpoints.

``python scripts/benchmark.py ema_vs_raw WORK_DIR [--every 5]``

Reads ``WORK_DIR/config.yaml`` and each ``epoch_N.ckpt.npz`` kept there (train with
``max_keep_ckpts=1000`` to keep them all), loads the raw weights and then the EMA weights into the
network and evaluates both on the validation split with the evaluation every command uses.
"""

from __future__ import annotations

import argparse
import os
import re
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
    from rtmdet_keras.models import build_model
    from rtmdet_keras.training.checkpoint import load_training_state
    from rtmdet_keras.training.detector import RTMDetDetector, make_dataset_predictor

    work = Path(args.work_dir)
    cfg = load_config(work / "config.yaml")
    val = load_split(cfg, "val")
    network = build_model(cfg)
    detector = RTMDetDetector(network, cfg)
    predict = make_dataset_predictor(network, cfg)
    ckpts = sorted(work.glob("epoch_*.ckpt.npz"), key=lambda q: int(re.findall(r"\d+", q.name)[0]))
    last = int(re.findall(r"\d+", ckpts[-1].name)[0]) if ckpts else 0
    print("| epoch | raw AP50:95 | EMA AP50:95 | raw AP50 | EMA AP50 |\n|---|---|---|---|---|")
    for ckpt in ckpts:
        epoch = int(re.findall(r"\d+", ckpt.name)[0])
        if epoch % args.every and epoch != last:
            continue
        state = load_training_state(ckpt)
        weights = list(detector.weights)
        floats = [v for v in weights if v.dtype in ("float32", "float16", "bfloat16", "float64")]
        row = {}
        for kind in ("raw", "ema"):
            for v, w in zip(weights, state["model"]):
                v.assign(w)
            if kind == "ema":
                for v, w in zip(floats, state["ema"]):
                    v.assign(w)
            row[kind] = evaluate_detections(val, predict(val)).metrics
        print(f"| {epoch} | {row['raw']['bbox_mAP']:.3f} | {row['ema']['bbox_mAP']:.3f} | "
              f"{row['raw']['bbox_mAP_50']:.3f} | {row['ema']['bbox_mAP_50']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
