"""Train an RTMDet detector: ``python -m rtmdet_keras.train --config nano.yaml --cfg-options ...``.

The run is two ``fit`` calls: stage 1 (Mosaic pipeline) for ``max_epochs - stage2_num_epochs``
epochs, then stage 2 (no Mosaic/MixUp) with ``initial_epoch``; ``--resume`` continues from the
newest checkpoint in the right stage with weights, optimiser, EMA and schedule restored.
Everything lands in ``work_dirs/<config name>/``: the resolved ``config.yaml``, checkpoints, the
best model as ``best_coco_bbox_mAP.keras`` and TensorBoard logs in ``tensorboard/``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import click

from rtmdet_keras.cli import VariadicCfgCommand, config_options, load_config_or_exit, run_standalone


def default_work_dir(cfg) -> Path:
    return Path(cfg.work_dir) if cfg.work_dir else Path("work_dirs") / cfg.name


def make_strategy(name: str):
    """``default``, ``mirrored`` (all local devices) or ``multiworker`` (cluster from ``TF_CONFIG``)."""
    import tensorflow as tf

    if name in ("default", None):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise click.BadParameter(f"unknown strategy {name!r}; use default, mirrored or multiworker")


def train(cfg, work_dir=None, resume: bool = False, seed: Optional[int] = None, strategy="default",
          callbacks: Sequence = (), verbose: int = 1, print_fn=print) -> dict:
    """Train according to ``cfg``; returns ``{"work_dir", "best_metric", "best_epoch", "metrics", "epochs"}``.

    ``callbacks`` are extra Keras callbacks added to both ``fit`` calls.
    """
    import keras

    from rtmdet_keras.data import load_split
    from rtmdet_keras.data.check import format_report
    from rtmdet_keras.data.pipeline import build_stage_pipelines
    from rtmdet_keras.models import build_model
    from rtmdet_keras.training.callbacks import (
        CocoEvalCallback, LearningRateLogger, NanGuard, TensorBoardWriter,
    )
    from rtmdet_keras.training.checkpoint import (
        CheckpointCallback, latest_checkpoint, load_training_state, restore_training_state,
    )
    from rtmdet_keras.training.detector import RTMDetDetector, build_optimizer, make_dataset_predictor
    from rtmdet_keras.training.ema import ExpMomentumEMA
    from rtmdet_keras.training.schedule import lr_key, scaled_lr, training_schedule

    work_dir = Path(work_dir) if work_dir else default_work_dir(cfg)
    work_dir.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        cfg.seed = int(seed)
    keras.utils.set_random_seed(cfg.seed)

    train_set = load_split(cfg, "train")
    val_set = load_split(cfg, "val")
    print_fn(format_report(train_set))
    print_fn(format_report(val_set))
    cfg.class_names = list(train_set.class_names)
    cfg.save(work_dir / "config.yaml")

    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise click.ClickException(f"batch_size {cfg.batch_size} is not divisible by the {replicas} replicas")
    stage1, stage2 = build_stage_pipelines(train_set, cfg)
    steps = stage1.steps_per_epoch
    if stage1.empty_images_left_out:
        print_fn(f"{stage1.empty_images_left_out} of {len(train_set)} training images have no boxes and are left out "
                 "(filter_empty_gt=false keeps them as negatives)")

    with strategy.scope():
        network = build_model(cfg)
        detector = RTMDetDetector(network, cfg)
        optimizer = build_optimizer(cfg, training_schedule(cfg, steps), network)
        detector.compile(optimizer=optimizer)

    ema = ExpMomentumEMA(cfg.ema_momentum, cfg.ema_gamma)
    ema.set_model(detector)
    initial_epoch, best_metric = 0, -1.0
    if resume:
        ckpt = latest_checkpoint(work_dir)
        if ckpt is None:
            print_fn(f"--resume: no checkpoint in {work_dir}, starting from scratch")
        else:
            meta = restore_training_state(load_training_state(ckpt), detector, optimizer, ema, source=str(ckpt))
            initial_epoch = int(meta["epoch"])
            best_metric = float(meta.get("best_metric", -1.0))
            print_fn(f"resumed from {ckpt}: epoch {initial_epoch}, step {int(optimizer.iterations.numpy())}")
    elif cfg.load_from or cfg.backbone_weights:
        from rtmdet_keras.checkpoint_convert import load_pretrained

        load_pretrained(network, cfg, print_fn=print_fn)

    start_from = "loaded weights" if cfg.load_from or cfg.backbone_weights else "scratch"
    print_fn(f"lr {scaled_lr(cfg):.3g} at batch {cfg.batch_size} ({lr_key(cfg)}, from {start_from}), "
             f"{steps} steps per epoch, {cfg.max_epochs * steps} in all")
    stage1_epochs = max(cfg.max_epochs - cfg.stage2_num_epochs, 0)
    evaluator = CocoEvalCallback(
        val_set, make_dataset_predictor(network, cfg), network, interval=cfg.val_interval, dense_from=stage1_epochs,
        max_epochs=cfg.max_epochs, ema=ema, work_dir=work_dir, best_metric=best_metric,
        tensorboard=TensorBoardWriter(work_dir / "tensorboard", val_set, cfg.class_names),
        print_fn=print_fn,
    )
    saver = CheckpointCallback(
        work_dir, interval=cfg.save_interval, max_keep=cfg.max_keep_ckpts, ema=ema, last_epoch=cfg.max_epochs,
        state_fn=lambda: {"best_metric": evaluator.best_metric, "best_epoch": evaluator.best_epoch},
    )
    # Order matters: the EMA is updated before evaluation reads it, evaluation writes its metrics into
    # the logs before TensorBoard records them, and the checkpoint stores the best metric just found.
    all_callbacks = [NanGuard(), ema, evaluator, saver,
                     keras.callbacks.TensorBoard(str(work_dir / "tensorboard"), update_freq="epoch"),
                     LearningRateLogger(), *callbacks]

    start, start_step = time.time(), int(optimizer.iterations.numpy())
    if initial_epoch < stage1_epochs:
        print_fn(f"stage 1 (Mosaic{' + MixUp' if cfg.augment.mixup else ''}): epochs {initial_epoch + 1}-"
                 f"{stage1_epochs}, {steps} steps each")
        detector.fit(stage1.dataset, epochs=stage1_epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                     callbacks=all_callbacks, verbose=verbose, shuffle=False)
    if initial_epoch < cfg.max_epochs:
        first = max(initial_epoch, stage1_epochs)
        print_fn(f"stage 2 (no Mosaic/MixUp): epochs {first + 1}-{cfg.max_epochs}")
        detector.fit(stage2.dataset, epochs=cfg.max_epochs, initial_epoch=first, steps_per_epoch=steps,
                     callbacks=all_callbacks, verbose=verbose, shuffle=False)
    elapsed = time.time() - start
    images = (int(optimizer.iterations.numpy()) - start_step) * cfg.batch_size
    summary = {
        "work_dir": str(work_dir), "best_metric": evaluator.best_metric, "best_epoch": evaluator.best_epoch,
        "metrics": evaluator.last_result.metrics if evaluator.last_result else None,
        "epochs": cfg.max_epochs, "steps": int(optimizer.iterations.numpy()), "seconds": elapsed,
        # Training images per second of wall time, evaluations, checkpoints and tracing included.
        "images_per_second": images / elapsed if elapsed > 0 else 0.0,
    }
    (work_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    print_fn(f"done in {elapsed / 60:.1f} min ({summary['images_per_second']:.1f} training images/s, evaluations "
             f"included); best bbox_mAP {evaluator.best_metric:.4f} (epoch "
             f"{evaluator.best_epoch}); checkpoints in {work_dir}")
    return summary


@click.command("train", cls=VariadicCfgCommand)
@click.argument("config_path", required=False)
@config_options()
@click.option("--work-dir", default=None, help="Where checkpoints and logs go (default work_dirs/<config name>).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the work dir.")
@click.option("--seed", type=int, default=None, help="Random seed (default: the config's).")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]), default="default",
              help="tf.distribute strategy; multiworker reads the cluster from TF_CONFIG.")
@click.option("--verbose", type=int, default=1, help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")
def train_command(config_path, config, cfg_options, work_dir, resume, seed, strategy, verbose):
    """Train a detector. CONFIG_PATH may also be given as --config."""
    cfg = load_config_or_exit(config, cfg_options, config_path)
    from rtmdet_keras.data import DatasetError, ImageReadError
    from rtmdet_keras.training.callbacks import TrainingDiverged

    try:
        train(cfg, work_dir=work_dir, resume=resume, seed=seed, strategy=strategy, verbose=verbose)
    except (DatasetError, ImageReadError, TrainingDiverged) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted: resume with the same command and --resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    run_standalone(train_command, "python -m rtmdet_keras.train")
