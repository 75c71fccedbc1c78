"""A training run, as ``rtmdet train`` runs it: :func:`train` (``rtmdet_keras/commands/train.py`` is its command).

The run is two ``fit`` calls: stage 1 (Mosaic pipeline) for ``max_epochs - stage2_num_epochs``
epochs, then stage 2 (no Mosaic/MixUp) with ``initial_epoch``; ``--resume`` continues from the
newest checkpoint in the right stage with weights, optimiser, EMA and schedule restored.
Everything lands in ``work_dirs/<config name>/`` (``<config name>2``, ``3``... when that holds an
earlier run): the resolved ``config.yaml``, checkpoints, the best model as
``best_coco_bbox_mAP.keras``, ``train.log`` (what the run printed), ``results.csv`` (a row per epoch)
and TensorBoard logs in ``tensorboard/``.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence

import click
import keras
import tensorflow as tf

from rtmdet_keras.data import load_split
from rtmdet_keras.data.check import format_report
from rtmdet_keras.data.pipeline import build_stage_pipelines, training_pool
from rtmdet_keras.models import build_model
from rtmdet_keras.models.pretrained import check_weights_file, load_pretrained
from rtmdet_keras.postprocess import make_dataset_predictor
from rtmdet_keras.training.callbacks import (
    CocoEarlyStopping, CocoEvalCallback, ContinuousCallbacks, LearningRateLogger, NanGuard, TensorBoardWriter,
)
from rtmdet_keras.training.checkpoint import (
    CheckpointCallback, latest_checkpoint, restore_training_state, run_checkpoints,
)
from rtmdet_keras.training.detector import RTMDetDetector, build_optimizer
from rtmdet_keras.training.distribute import (
    SyncBatchNormStatistics, broadcast_from_chief, distribute_train_dataset, remove_temporary_work_dir, shard_plan,
    stream_start, sync_from_chief, temporary_work_dir, worker_role,
)
from rtmdet_keras.training.ema import ExpMomentumEMA
from rtmdet_keras.training.precision import dtype_policy, float32_twin, mixed_policy_name
from rtmdet_keras.training.results import EpochClock, ResultsCSV
from rtmdet_keras.training.schedule import lr_key, scaled_lr, training_schedule
from rtmdet_keras.training.workdir import RunLog, WorkDirError, choose_work_dir, load_resumable_state


def default_work_dir(cfg) -> Path:
    return Path(cfg.work_dir) if cfg.work_dir else Path("work_dirs") / cfg.name


def make_strategy(name: str):
    """``default`` (all GPUs when there are several, else the one device), ``mirrored`` (all local
    devices) or ``multiworker`` (the cluster in ``TF_CONFIG``, see :mod:`rtmdet_keras.training.distribute`)."""
    if name in ("default", None):
        if len(tf.config.list_physical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise click.BadParameter(f"unknown strategy {name!r}; use default, mirrored or multiworker")


def train(cfg, work_dir=None, resume: bool = False, seed: Optional[int] = None, strategy="default",
          callbacks: Sequence = (), verbose: int = 1, print_fn=print, exist_ok: bool = False,
          mixed_precision: bool = False) -> dict:
    """Train according to ``cfg``; returns ``{"work_dir", "best_metric", "best_epoch", "metrics", "epochs",
    "stopped_early", ...}`` (``epochs``: the last epoch trained).

    ``work_dir`` (default ``cfg.work_dir``, else ``work_dirs/<config name>``): a folder that holds another
    run is not written into; the run goes to ``<work_dir>2``, ``3``... unless ``exist_ok`` (see
    :mod:`rtmdet_keras.training.workdir`). ``resume`` continues the run there (without a work dir
    given, the newest numbered run of the config). ``callbacks`` are extra Keras callbacks; they see the
    two stages as one training (one ``on_train_begin`` and ``on_train_end``, epochs numbered on).
    ``strategy``: see :func:`make_strategy`; with ``multiworker`` each worker runs this same call
    (:mod:`rtmdet_keras.training.distribute`). ``mixed_precision``: float16 compute on a GPU, bfloat16 on
    a CPU that has it (:mod:`rtmdet_keras.training.precision`); the saved models stay float32.

    Raises:
        WorkDirError, CheckpointError: the checkpoint to resume from or the weights to load cannot be
            used; raised before any data is read.
    """
    # A multi-worker strategy must exist before TensorFlow runs anything else (it sets up the collectives).
    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    role = worker_role(strategy)
    policy = None
    if mixed_precision:
        policy = mixed_policy_name()
        if policy is None:
            print_fn("--mixed-precision: no GPU and no bfloat16 instructions on this CPU; training in float32")
    if not role.is_chief:
        # Only the chief writes the run folder and reads its checkpoint: this worker gets the chief's
        # state at the start (training/distribute.py) and writes its files into a temporary folder.
        work_dir = temporary_work_dir(role)
        log = RunLog(work_dir / "train.log")
        try:
            return _run(cfg, work_dir, None, None, seed, strategy, callbacks, verbose, log.tee(print_fn), log, role,
                        policy)
        finally:
            log.close()
            remove_temporary_work_dir(work_dir)

    named = work_dir or cfg.work_dir
    work_dir, note = choose_work_dir(Path(named) if named else default_work_dir(cfg), resume=resume,
                                     exist_ok=exist_ok, newest_of_numbered=not named)
    # Everything that can refuse the run is checked now, before seconds of data loading and model building.
    ckpt = latest_checkpoint(work_dir) if resume else None
    state = load_resumable_state(ckpt, cfg) if ckpt is not None else None
    if state is None and (cfg.load_from or cfg.backbone_weights):
        # load_from wins when both are given (it covers the backbone), as in load_pretrained.
        setting = "load_from" if cfg.load_from else "backbone_weights"
        check_weights_file(getattr(cfg, setting), setting)

    work_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(work_dir / "train.log", append=resume)  # --resume continues the folder's log, checkpoint or not
    print_fn = log.tee(print_fn)
    if note:
        print_fn(note)
    if resume and ckpt is None:
        print_fn(f"--resume: no checkpoint in {work_dir}, starting a new run")
    try:
        return _run(cfg, work_dir, state, ckpt, seed, strategy, callbacks, verbose, print_fn, log, role, policy)
    except BaseException as e:  # the log ends with why the run stopped, then the error goes on as it was
        log.write(f"stopped: {type(e).__name__}: {e}")
        raise
    finally:
        log.close()


def _run(cfg, work_dir: Path, state, ckpt, seed, strategy, callbacks, verbose, print_fn, log, role,
         policy=None) -> dict:
    """The run itself, in a work dir chosen and checked by :func:`train`; ``state``: the training
    state to resume (read from ``ckpt``) or None; ``role``: this process's
    :class:`~rtmdet_keras.training.distribute.WorkerRole` (the others get the chief's state); ``policy``:
    the mixed-precision dtype policy or None."""
    with dtype_policy(policy):
        return _run_with_policy(cfg, work_dir, state, ckpt, seed, strategy, callbacks, verbose, print_fn, log, role,
                                policy)


def _run_with_policy(cfg, work_dir, state, ckpt, seed, strategy, callbacks, verbose, print_fn, log, role, policy):
    train_set, val_set = _read_data(cfg, work_dir, seed, print_fn)
    plan, steps = _shard_plan(cfg, strategy, role, train_set)
    network, detector, optimizer = _build(cfg, strategy, steps, policy, print_fn)
    ema = ExpMomentumEMA(cfg.ema_momentum, cfg.ema_gamma)
    ema.set_model(detector)
    start = _restore(cfg, state, ckpt, network, detector, optimizer, ema, strategy, role, print_fn)
    initial_epoch = start["initial_epoch"]

    stage1_epochs = max(cfg.max_epochs - cfg.stage2_num_epochs, 0)
    stage1_data, stage2_data = _stage_data(cfg, train_set, plan, steps, initial_epoch, stage1_epochs, strategy, role,
                                           print_fn)
    start_from = "loaded weights" if cfg.load_from or cfg.backbone_weights else "scratch"
    print_fn(f"lr {scaled_lr(cfg):.3g} at batch {cfg.batch_size} ({lr_key(cfg)}, from {start_from}), "
             f"{steps} steps per epoch, {cfg.max_epochs * steps} in all")
    evaluator, results, user, all_callbacks = _callbacks(
        cfg, work_dir, val_set, network, ema, start, state is not None, steps, stage1_epochs, strategy, role, policy,
        callbacks, print_fn, log)

    begin, start_step = time.time(), int(optimizer.iterations.numpy())
    stopped = _fit_stages(cfg, detector, stage1_data, stage2_data, initial_epoch, stage1_epochs, steps, all_callbacks,
                          verbose, print_fn)
    user.finish()
    return _summarize(cfg, work_dir, evaluator, results, optimizer, initial_epoch, stopped, begin, start_step,
                      print_fn)


def _read_data(cfg, work_dir, seed, print_fn):
    """The training and validation sets (the seed set first); the run's config, with their class names, saved."""
    if seed is not None:
        cfg.seed = int(seed)
    keras.utils.set_random_seed(cfg.seed)

    train_set = load_split(cfg, "train")
    val_set = load_split(cfg, "val")
    print_fn(format_report(train_set))
    print_fn(format_report(val_set))
    cfg.class_names = list(train_set.class_names)
    cfg.save(work_dir / "config.yaml")
    return train_set, val_set


def _shard_plan(cfg, strategy, role, train_set):
    """(the global batch split over workers and replicas, steps per epoch)."""
    replicas = strategy.num_replicas_in_sync
    if replicas % role.count:
        raise click.ClickException(f"{replicas} replicas cannot be split evenly over {role.count} workers: every "
                                   "worker needs the same number of devices")
    try:
        plan = shard_plan(cfg.batch_size, role.count, replicas // role.count)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    return plan, plan.steps_per_epoch(len(training_pool(train_set.records, cfg)))


def _build(cfg, strategy, steps, policy, print_fn):
    """(network, compiled detector, its optimiser), built in the strategy's scope."""
    with strategy.scope():
        network = build_model(cfg)
        detector = RTMDetDetector(network, cfg)
        optimizer = build_optimizer(cfg, training_schedule(cfg, steps), network)
        detector.compile(optimizer=optimizer)
        optimizer = detector.optimizer  # mixed_float16: wrapped for loss scaling
    if policy is not None:
        print_fn(f"mixed precision: {policy} (variables, assigner and losses in float32)")
    return network, detector, optimizer


def _restore(cfg, state, ckpt, network, detector, optimizer, ema, strategy, role, print_fn) -> dict:
    """Where the run starts: the checkpoint's state restored (or the pretrained weights loaded) on the chief,
    then shared with every worker. Returns ``{"initial_epoch", "best_metric", "best_epoch", "run_id"}``."""
    initial_epoch, best_metric, best_epoch, run_id = 0, -1.0, None, uuid.uuid4().hex
    if state is not None:
        try:
            meta = restore_training_state(state, detector, optimizer, ema, source=str(ckpt))
        except RuntimeError as e:  # a checkpoint without a stored config, of another network
            raise WorkDirError(f"--resume: {e}") from None
        initial_epoch = int(meta["epoch"])
        best_metric = float(meta.get("best_metric", -1.0))
        best_epoch = meta.get("best_epoch")
        run_id = meta.get("run_id")  # None: written before runs had ids
        print_fn(f"resumed from {ckpt}: epoch {initial_epoch}, step {int(optimizer.iterations.numpy())}")
    elif (cfg.load_from or cfg.backbone_weights) and role.is_chief:
        load_pretrained(network, cfg, print_fn=print_fn)
    if role.multi:
        # Every worker starts from the chief's weights, optimiser and EMA (restored or loaded there).
        header = sync_from_chief(strategy, role, [*detector.weights, *optimizer.variables, *ema.state_variables()],
                                 [initial_epoch, best_metric, -1 if best_epoch is None else best_epoch])
        initial_epoch, best_metric = int(header[0]), float(header[1])
        best_epoch = None if header[2] < 0 else int(header[2])
        if not role.is_chief and initial_epoch:
            print_fn(f"worker {role.index}: resumed with the chief at epoch {initial_epoch}, step "
                     f"{int(optimizer.iterations.numpy())}")
    return {"initial_epoch": initial_epoch, "best_metric": best_metric, "best_epoch": best_epoch, "run_id": run_id}


def _stage_data(cfg, train_set, plan, steps, initial_epoch, stage1_epochs, strategy, role, print_fn):
    """The two stages' training datasets (this worker's share of them in a multi-worker run)."""
    # A resumed run's streams go on where the interrupted run was (no batch seen twice or skipped).
    stage1, stage2 = build_stage_pipelines(train_set, cfg, stream_start(initial_epoch, stage1_epochs, steps),
                                           shard=(plan, role.index) if role.multi else None)
    assert stage1.steps_per_epoch == steps, (stage1.steps_per_epoch, steps)
    if stage1.empty_images_left_out:
        print_fn(f"{stage1.empty_images_left_out} of {len(train_set)} training images have no boxes and are left out "
                 "(filter_empty_gt=false keeps them as negatives)")
    stage1_data, stage2_data = stage1.dataset, stage2.dataset
    if role.multi:
        stage1_data = distribute_train_dataset(strategy, stage1_data, role)
        stage2_data = distribute_train_dataset(strategy, stage2_data, role)
        print_fn(f"worker {role.index} of {role.count}{' (chief)' if role.is_chief else ''}: "
                 f"{plan.per_worker} samples of each global batch of {plan.global_batch}, "
                 f"{plan.per_replica} per replica")
    return stage1_data, stage2_data


def _callbacks(cfg, work_dir, val_set, network, ema, start, resumed, steps, stage1_epochs, strategy, role, policy,
               callbacks, print_fn, log):
    """(evaluator, results.csv writer, the user's callbacks, every callback in the order they run)."""
    evaluator = CocoEvalCallback(
        val_set, make_dataset_predictor(network, cfg), network, interval=cfg.val_interval, dense_from=stage1_epochs,
        max_epochs=cfg.max_epochs, ema=ema, work_dir=work_dir, best_metric=start["best_metric"],
        tensorboard=TensorBoardWriter(work_dir / "tensorboard", val_set, cfg.class_names),
        print_fn=print_fn, evaluate_here=role.is_chief, save_network=float32_twin(cfg) if policy else None,
        share_fn=(lambda value: float(broadcast_from_chief(strategy, role, [value])[0])) if role.multi else None,
    )
    evaluator.best_epoch = start["best_epoch"]
    # The checkpoint keeps the run's id (the retention deletes only the run's own files, a resumed run
    # included) and its config (--resume compares the network settings with it).
    saver = CheckpointCallback(
        work_dir, interval=cfg.save_interval, max_keep=cfg.max_keep_ckpts, ema=ema, last_epoch=cfg.max_epochs,
        state_fn=lambda: {"best_metric": evaluator.best_metric, "best_epoch": evaluator.best_epoch,
                          "run_id": start["run_id"], "config": cfg.to_dict()},
        own=run_checkpoints(work_dir, start["run_id"]) if resumed else (),
    )
    clock = EpochClock()
    results = ResultsCSV(
        work_dir / "results.csv", clock, steps * cfg.batch_size, stage1_epochs, max_epochs=cfg.max_epochs,
        coco_metrics=lambda epoch: evaluator.last_result.metrics if evaluator.last_epoch == epoch else None,
        resume_after=start["initial_epoch"] if resumed else None, log_fn=log.write,
    )
    early_stop = CocoEarlyStopping(cfg.patience, best=start["best_metric"],
                                   best_epoch=start["best_epoch"] or start["initial_epoch"], print_fn=print_fn)
    user = ContinuousCallbacks(callbacks, epochs=cfg.max_epochs)
    # Order matters: the clock first (it times the steps alone), the EMA is updated before evaluation
    # reads it, evaluation writes its metrics into the logs before early stopping, TensorBoard and
    # results.csv read them, and the checkpoint stores the best metric just found.
    all_callbacks = [clock, NanGuard(), *([SyncBatchNormStatistics(strategy, role, ema)] if role.multi else []),
                     ema, evaluator, early_stop, saver,
                     keras.callbacks.TensorBoard(str(work_dir / "tensorboard"), update_freq="epoch"),
                     LearningRateLogger(), results, user]
    return evaluator, results, user, all_callbacks


def _fit_stages(cfg, detector, stage1_data, stage2_data, initial_epoch, stage1_epochs, steps, all_callbacks, verbose,
                print_fn) -> bool:
    """Stage 1, then stage 2, from ``initial_epoch``; returns whether early stopping ended the run."""
    if initial_epoch < stage1_epochs:
        print_fn(f"stage 1 (Mosaic{' + MixUp' if cfg.augment.mixup else ''}): epochs {initial_epoch + 1}-"
                 f"{stage1_epochs}, {steps} steps each")
        detector.fit(stage1_data, epochs=stage1_epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                     callbacks=all_callbacks, verbose=verbose, shuffle=False)
    # fit() clears stop_training when it starts, so what early stopping set in stage 1 is still there.
    stopped = bool(detector.stop_training) and initial_epoch < stage1_epochs
    if initial_epoch < cfg.max_epochs and not stopped:
        first = max(initial_epoch, stage1_epochs)
        print_fn(f"stage 2 (no Mosaic/MixUp): epochs {first + 1}-{cfg.max_epochs}")
        detector.fit(stage2_data, epochs=cfg.max_epochs, initial_epoch=first, steps_per_epoch=steps,
                     callbacks=all_callbacks, verbose=verbose, shuffle=False)
        stopped = bool(detector.stop_training)
    return stopped


def _summarize(cfg, work_dir, evaluator, results, optimizer, initial_epoch, stopped, start, start_step,
               print_fn) -> dict:
    """The run's summary (also written to ``train_summary.json``) and its last line."""
    elapsed = time.time() - start
    images = (int(optimizer.iterations.numpy()) - start_step) * cfg.batch_size
    last_epoch = results.last_epoch if results.last_epoch is not None else initial_epoch
    summary = {
        "work_dir": str(work_dir), "best_metric": evaluator.best_metric, "best_epoch": evaluator.best_epoch,
        "metrics": evaluator.last_result.metrics if evaluator.last_result else None,
        "epochs": last_epoch, "max_epochs": cfg.max_epochs, "stopped_early": stopped and last_epoch < cfg.max_epochs,
        "steps": int(optimizer.iterations.numpy()), "seconds": elapsed,
        # Training images per second of wall time, evaluations, checkpoints and tracing included.
        "images_per_second": images / elapsed if elapsed > 0 else 0.0,
    }
    (work_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    print_fn(f"done in {elapsed / 60:.1f} min ({summary['images_per_second']:.1f} training images/s, evaluations "
             f"included); best bbox_mAP {evaluator.best_metric:.4f} (epoch "
             f"{evaluator.best_epoch}); checkpoints, train.log and results.csv in {work_dir}")
    return summary
