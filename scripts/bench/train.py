"""Real ``model.fit`` throughput: images/s, ms/step and CPU-seconds per image of a preset on a data set.

``python scripts/benchmark.py train [--config nano.yaml] [--data datasets/demo] [--imgsz 192] [--batch 32]
[--steps 30] [--cases const,pipeline,train,yolo] [--stages 1 2] [--opt key=value ...]``

The detector, optimiser, pipeline and callbacks are built as ``rtmdet_keras.training.run`` builds them. Cases:

- ``const``: ``fit`` on one batch of the stage's pipeline, repeated (network + assigner + losses + AdamW);
- ``pipeline``: ``fit`` on the real augmentation pipeline, no callbacks, no progress bar;
- ``train``: the real pipeline with the per-step callbacks training/run.py adds (NaN guard, EMA, TensorBoard,
  learning-rate logger) and the progress bar, as a training run has them (the per-epoch COCO evaluation
  and checkpoint are not timed here; the vs_ultralytics harness times whole runs);
- ``yolo``: Ultralytics YOLO11n from ``yolo11n.yaml`` on the same images, imgsz, batch and threads, in the
  comparison harness's private venv (``vs_ultralytics.py``), its dataloader workers as its defaults have
  them, no validation: ``--yolo-epochs`` epochs after a first one that is not timed (workers starting,
  caches filling), stage 1 with Mosaic, stage 2 without (its ``close_mosaic``). Its images/s is the
  training loop's, from the start of each timed epoch to its ``on_train_epoch_end``.

Each case runs ``--warmup`` steps (tracing, cache fill) and then ``--steps`` timed steps in one ``fit``
call; the cases take turns ``--rounds`` times and the median is printed, so a change of machine load
hits them alike: compare the cases as ratios measured in one run.

``--stock-bn`` builds a second detector whose BatchNorms are Keras' own (``keras.layers.BatchNormalization``,
unfused in training) instead of :class:`~rtmdet_keras.models.layers.FusedBatchNormalization`, and runs
every nano case on both, taking turns (rows ``<case>+stock_bn``); the first warm-up of each detector (the
training step's trace and first run) is printed as ``first call``.
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

ROOT = Path(__file__).resolve().parents[2]


class _Timer:
    """Wall and process CPU time of the steps after the first ``skip`` batches of one fit call."""

    def __init__(self, skip: int):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch + 1 == skip:
                    timer.start = (time.perf_counter(), time.process_time())

            def on_train_end(self, logs=None):
                timer.end = (time.perf_counter(), time.process_time())

        self.callback = Callback()
        self.start = self.end = None

    def result(self, steps: int, batch: int):
        wall = self.end[0] - self.start[0]
        cpu = self.end[1] - self.start[1]
        return {"images_s": steps * batch / wall, "ms_step": 1000 * wall / steps,
                "cpu_ms_image": 1000 * cpu / (steps * batch)}


def build(cfg, train_set, stock_bn: bool = False):
    import keras

    from rtmdet_keras.data.pipeline import build_stage_pipelines
    from rtmdet_keras.models import build_model
    from rtmdet_keras.models import layers
    from rtmdet_keras.training.detector import RTMDetDetector, build_optimizer
    from rtmdet_keras.training.schedule import training_schedule

    pipes = dict(enumerate(build_stage_pipelines(train_set, cfg), start=1))
    fused = layers.KERAS3_CUSTOM_LAYERS.BatchNormalization
    if stock_bn:
        layers.KERAS3_CUSTOM_LAYERS.BatchNormalization = keras.layers.BatchNormalization
    try:
        network = build_model(cfg)
    finally:
        layers.KERAS3_CUSTOM_LAYERS.BatchNormalization = fused
    detector = RTMDetDetector(network, cfg)
    detector.compile(optimizer=build_optimizer(cfg, training_schedule(cfg, pipes[1].steps_per_epoch), network))
    return detector, pipes


def train_callbacks(work_dir):
    import keras

    from rtmdet_keras.training.callbacks import LearningRateLogger, NanGuard
    from rtmdet_keras.training.ema import ExpMomentumEMA

    return [NanGuard(), ExpMomentumEMA(), keras.callbacks.TensorBoard(str(work_dir), update_freq="epoch"),
            LearningRateLogger()]


def yolo_speed_driver(harness) -> str:
    return harness.YOLO_PREAMBLE + r'''
marks = {"start": [], "end": []}
model = YOLO("yolo11n.yaml")
model.add_callback("on_train_epoch_start", lambda trainer: marks["start"].append(time.perf_counter()))
model.add_callback("on_train_epoch_end", lambda trainer: marks["end"].append(time.perf_counter()))
model.train(data=args["data_yaml"], epochs=args["epochs"], imgsz=args["imgsz"], batch=args["batch"], device="cpu",
            workers=args["workers"], project=args["out"], name="speed", exist_ok=True, pretrained=False, amp=False,
            plots=False, val=False, seed=0, verbose=False, close_mosaic=0, mosaic=args["mosaic"])
print("YOLO_EPOCH_SECONDS " + json.dumps([e - s for s, e in zip(marks["start"], marks["end"])]))
'''


def run_yolo(train_set, val_set, stage: int, args, work_dir) -> dict:
    """Ultralytics YOLO11n's training-loop images/s (see the module docstring)."""
    import json
    import subprocess

    harness = _harness()
    py = harness.ultralytics_python()
    work_dir = Path(work_dir)
    data_yaml = work_dir / "data" / "data.yaml"
    if not data_yaml.exists():
        harness.write_yolo_copy(train_set, val_set, work_dir / "data")
    driver = {"threads": args.threads, "data_yaml": str(data_yaml), "epochs": 1 + args.yolo_epochs,
              "imgsz": args.imgsz, "batch": args.batch, "workers": args.yolo_workers, "out": str(work_dir),
              "mosaic": 1.0 if stage == 1 else 0.0}
    done = subprocess.run([str(py), "-c", yolo_speed_driver(harness), json.dumps(driver)], cwd=work_dir, text=True,
                          capture_output=True, env=harness.ultralytics_env(py, work_dir / "config", args.threads))
    line = [x for x in done.stdout.splitlines() if x.startswith("YOLO_EPOCH_SECONDS ")]
    if done.returncode or not line:
        raise RuntimeError(f"YOLO11n speed run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    seconds = json.loads(line[0].split(" ", 1)[1])[1:]
    images = len(train_set) * len(seconds)
    wall = sum(seconds)
    # CPU ms/image: the driver and its dataloader workers are other processes; left out (nan).
    return {"images_s": images / wall, "ms_step": 1000 * wall / (images / args.batch), "cpu_ms_image": float("nan")}


def run_case(detector, pipe, case: str, steps: int, warmup: int, work_dir) -> dict:
    import tensorflow as tf

    dataset = pipe.dataset
    if case == "const":
        images, targets = next(iter(dataset))
        dataset = tf.data.Dataset.from_tensors((images, targets)).repeat()
    timer = _Timer(warmup)
    callbacks = [timer.callback] + (train_callbacks(work_dir) if case == "train" else [])
    begin = time.perf_counter()
    detector.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=callbacks,
                 verbose=1 if case == "train" else 0, shuffle=False)
    return {**timer.result(steps, pipe.batch_size), "warmup_s": timer.start[0] - begin}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="nano.yaml")
    p.add_argument("--data", default=None, help="data set root (Roboflow COCO layout); default: the demo set, "
                   "generated in a temporary folder")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--imgsz", type=int, default=192)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30, help="timed steps per case and round")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--cases", default="const,pipeline,train")
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2])
    p.add_argument("--opt", nargs="*", default=[], help="extra --cfg-options (key=value)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of the yolo case (TensorFlow uses the machine's)")
    p.add_argument("--yolo-epochs", type=int, default=3, help="timed epochs of the yolo case")
    p.add_argument("--yolo-workers", type=int, default=8, help="Ultralytics dataloader workers (its default)")
    p.add_argument("--stock-bn", action="store_true", help="also run every nano case with Keras' own BatchNorm")
    args = p.parse_args(argv)

    import tensorflow as tf

    from rtmdet_keras.config import load_config
    from rtmdet_keras.data import load_split

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from rtmdet_keras.data.demo import make_demo_dataset

            make_demo_dataset(tmp, seed=0)
            data = tmp
        overrides = [f"data_root={Path(data).resolve()}/", f"imgsz=({args.imgsz},{args.imgsz})",
                     f"batch_size={args.batch}"] + ([f"num_classes={args.num_classes}"] if args.num_classes else [])
        cfg = load_config(args.config, overrides + list(args.opt))
        train_set = load_split(cfg, "train")
        detectors = {"": build(cfg, train_set)}
        if args.stock_bn:
            detectors["+stock_bn"] = build(cfg, train_set, stock_bn=True)
        cases = args.cases.split(",")
        if "yolo" in cases:
            val_set = load_split(cfg, "val")
        print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, {cfg.name} at {args.imgsz} px, batch {args.batch}, "
              f"{len(train_set)} images of {data}; {args.steps} timed steps after {args.warmup}, {args.rounds} rounds; "
              f"options: {' '.join(args.opt) or 'none'}", flush=True)
        runs = [(c, "") for c in cases if c == "yolo"] + [(c, d) for c in cases if c != "yolo" for d in detectors]
        results = {(s, c + d): [] for s in args.stages for c, d in runs}
        first = {}
        for _ in range(args.rounds):
            for stage in args.stages:
                for case, variant in runs:
                    if case == "yolo":
                        r = run_yolo(train_set, val_set, stage, args, Path(tmp) / "yolo")
                    else:
                        detector, pipes = detectors[variant]
                        r = run_case(detector, pipes[stage], case, args.steps, args.warmup, Path(tmp) / "tb")
                        if variant not in first:
                            first[variant] = r["warmup_s"]
                            print(f"  first call{variant}: {r['warmup_s']:.1f} s for {args.warmup} warm-up steps "
                                  "(trace included)", flush=True)
                    results[(stage, case + variant)].append(r)
                    print(f"  stage {stage} {case + variant:15s} {r['images_s']:6.1f} images/s {r['ms_step']:7.0f} "
                          f"ms/step {r['cpu_ms_image']:6.1f} CPU ms/image", flush=True)
        print("\n| stage | case | images/s | ms/step | CPU ms/image |\n|---|---|---|---|---|")
        for (stage, case), rs in results.items():
            med = {k: statistics.median(r[k] for r in rs) for k in ("images_s", "ms_step", "cpu_ms_image")}
            print(f"| {stage} | {case} | {med['images_s']:.1f} | {med['ms_step']:.0f} | {med['cpu_ms_image']:.1f} |")
    return 0


def _harness():
    """``vs_ultralytics.py`` (its private venv and data-set copy), loaded when the yolo case runs."""
    import importlib.util

    if "bench_vs" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_vs", Path(__file__).with_name("vs_ultralytics.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_vs"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_vs"]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
