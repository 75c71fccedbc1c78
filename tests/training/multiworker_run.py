"""One worker of a local multi-worker training run, for tests/training/test_multiworker.py (run as a script).

``python tests/training/multiworker_run.py --index I --ports P0,P1 --data ROOT --work-dir DIR --out OUT.json
[--resume] [--pause-after-epoch E --pause-marker FILE] [cfg options...]`` sets ``TF_CONFIG`` for worker
``I`` of a cluster on ``localhost:P0,P1...``, trains with ``--strategy multiworker`` and writes to
``OUT.json`` the run's summary and what the worker's stream yields first (a digest of this worker's
first batch), and to ``OUT.npz`` the final weights. ``--pause-after-epoch`` makes the worker write
``FILE`` after that epoch and sleep, so that the test can kill it mid-run.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

# The tiny network the multi-worker tests train (64 px, an eighth of nano's widths).
TINY = ["imgsz=64", "model.widen_factor=0.125", "model.neck_in_channels=[32,64,128]", "model.neck_out_channels=16",
        "model.feat_channels=16", "num_classes=2", "augment.cache_images=true"]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--ports", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause-after-epoch", type=int, default=0)
    parser.add_argument("--pause-marker", default=None)
    parser.add_argument("options", nargs="*")
    args = parser.parse_args(argv)
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in args.ports.split(",")]},
        "task": {"type": "worker", "index": args.index}})
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

    import keras
    import numpy as np

    from rtmdet_keras.config import load_config
    from rtmdet_keras.training.run import make_strategy, train

    import tensorflow as tf

    # Two workers share the test machine's cores: one thread pool each keeps them from crowding each other.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.config.disable_traceback_filtering()  # a failure in a worker shows where it happened
    strategy = make_strategy("multiworker")  # first, before TensorFlow runs anything else
    cfg = load_config("nano", [f"data_root={args.data}", *TINY, *args.options])
    final = {}

    class Finish(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == args.pause_after_epoch:
                Path(args.pause_marker).write_text(str(epoch + 1))
                time.sleep(600)  # killed here by the test

        def on_train_end(self, logs=None):
            final["weights"] = [np.asarray(v) for v in self.model.weights]
            final["iterations"] = int(np.asarray(self.model.optimizer.iterations))

    summary = train(cfg, work_dir=args.work_dir, resume=args.resume, strategy=strategy, callbacks=[Finish()],
                    verbose=0, exist_ok=True)

    # What this worker's stream yields first: its share of the first global batch.
    from rtmdet_keras.data import load_split
    from rtmdet_keras.data.pipeline import build_train_pipeline
    from rtmdet_keras.training.distribute import shard_plan

    plan = shard_plan(cfg.batch_size, len(args.ports.split(",")))
    images, targets = next(iter(build_train_pipeline(load_split(cfg, "train"), cfg, shard=(plan, args.index)).dataset))
    summary["first_batch"] = hashlib.sha1(np.asarray(images).tobytes()).hexdigest()
    summary["first_batch_boxes"] = np.asarray(targets["boxes"]).tolist()
    summary["final_iterations"] = final["iterations"]
    np.savez(Path(args.out).with_suffix(".npz"), *final["weights"])
    Path(args.out).write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
