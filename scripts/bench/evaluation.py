"""What one evaluation during training costs: ``CocoEvalCallback.on_epoch_end`` as training/run.py builds it.

``python scripts/benchmark.py evaluation [--config nano.yaml] [--data datasets/demo] [--imgsz 192] [--rounds 10]``

The callback runs with the EMA swapped in (as in training), on the validation split, ``--rounds`` times
after one untimed call (tracing); ``no new best`` is an evaluation that does not beat the best so far,
``new best`` one that also writes ``best_coco_bbox_mAP.keras``. An untrained network (random weights)
gives the worst case of the COCO part: 300 detections an image. Only public APIs are used, so the
script times an older checkout too (``PYTHONPATH=<checkout> python scripts/bench/evaluation.py``).
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="nano.yaml")
    p.add_argument("--data", default="datasets/demo", help="data set root (Roboflow COCO layout)")
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--imgsz", type=int, default=192)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args(argv)

    import keras

    import rtmdet_keras
    from rtmdet_keras.config import load_config
    from rtmdet_keras.data import load_split
    from rtmdet_keras.models import build_model
    from rtmdet_keras.postprocess import make_dataset_predictor
    from rtmdet_keras.training.callbacks import CocoEvalCallback
    from rtmdet_keras.training.detector import RTMDetDetector
    from rtmdet_keras.training.ema import ExpMomentumEMA

    data = Path(args.data).resolve()
    cfg = load_config(args.config, [f"data_root={data}/", f"num_classes={args.num_classes}",
                                    "train_ann_file=train/_annotations.coco.json",
                                    "val_ann_file=valid/_annotations.coco.json", "train_img_prefix=train/",
                                    "val_img_prefix=valid/", f"imgsz=({args.imgsz},{args.imgsz})"])
    keras.utils.set_random_seed(0)
    val_set = load_split(cfg, "val")
    network = build_model(cfg)
    detector = RTMDetDetector(network, cfg)
    ema = ExpMomentumEMA(cfg.ema_momentum, cfg.ema_gamma)
    ema.set_model(detector)
    ema.on_train_begin()
    print(f"rtmdet_keras from {Path(rtmdet_keras.__file__).parent}; {cfg.name} at {args.imgsz} px, "
          f"{len(val_set)} validation images of {data}, {args.rounds} rounds", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        callback = CocoEvalCallback(val_set, make_dataset_predictor(network, cfg), network, interval=1, ema=ema,
                                    work_dir=tmp, print_fn=lambda *a, **k: None)
        callback.set_model(detector)
        start = time.perf_counter()
        callback.on_epoch_end(0, {})
        first = time.perf_counter() - start
        times = {"no new best": [], "new best": []}
        for i in range(args.rounds):
            for kind in times:
                callback.best_metric = 2.0 if kind == "no new best" else -1.0
                start = time.perf_counter()
                callback.on_epoch_end(i + 1, {})
                times[kind].append(time.perf_counter() - start)
    print(f"\nfirst evaluation (tracing): {first:.2f} s")
    print("| evaluation | median ms | min ms |\n|---|---|---|")
    for kind, ts in times.items():
        print(f"| {kind} | {1000 * statistics.median(ts):.0f} | {1000 * min(ts):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
