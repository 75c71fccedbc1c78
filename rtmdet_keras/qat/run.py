"""The whole QAT run: :func:`qat` (steps and files: see :mod:`rtmdet_keras.qat`), split into the
baselines, the quantised network and its plan, the fine-tuning and the export with the comparison table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict

import keras
import tf_keras

from rtmdet_keras.data import load_split
from rtmdet_keras.data.pipeline import build_train_pipeline
from rtmdet_keras.runtime.evaluate import evaluate
from rtmdet_keras.runtime.loading import ModelLoadError, load_network
from rtmdet_keras.evaluation import evaluate_detections, format_comparison_table
from rtmdet_keras.export.calibration import calibration_images
from rtmdet_keras.export.convert import export_tflite
from rtmdet_keras.qat import fit
from rtmdet_keras.qat.network import build_qat_network, calibrate_ranges, refresh_weight_ranges
from rtmdet_keras.qat.plan import format_quantization_plan, quantization_plan
from rtmdet_keras.qat.settings import (BEST_WEIGHTS, PLAN_NAME, SUMMARY_NAME, QATError, check_recipe,
                                       default_qat_dir)
from rtmdet_keras.training.callbacks import CocoEvalCallback, LearningRateLogger, NanGuard, TensorBoardWriter
from rtmdet_keras.training.checkpoint import CheckpointCallback, epoch_checkpoints, latest_checkpoint
from rtmdet_keras.postprocess import make_dataset_predictor


def _evaluate_network(network, cfg, dataset):
    return evaluate_detections(dataset, make_dataset_predictor(network, cfg)(dataset))


def _baselines(cfg, checkpoint, float_net, train_set, val_set, work_dir, export, metrics, paths, print_fn):
    """The float model's metrics and, with ``export``, those of its post-training-quantised int8 export."""
    print_fn(f"\n== float model {checkpoint}")
    metrics["float Keras"] = evaluate(cfg, checkpoint, dataset=val_set, print_fn=print_fn).metrics
    if export:
        print_fn("\n== post-training quantisation (the baseline)")
        ptq = export_tflite(float_net, cfg, work_dir, ("int8",), calib_dataset=train_set, name=f"{cfg.name}_ptq",
                            saved_model=False, check=False, print_fn=print_fn)["int8"]
        paths["ptq_int8"] = str(ptq)
        metrics["int8 PTQ"] = evaluate(cfg, ptq, dataset=val_set, print_fn=print_fn).metrics


def _quantised_network(cfg, float_net, work_dir, print_fn):
    """The quantised network and its control; writes ``quantization_plan.txt``, stops on a problem."""
    network, control = build_qat_network(cfg, float_net)
    plan = quantization_plan(network)
    (work_dir / PLAN_NAME).write_text(format_quantization_plan(plan))
    problems = [r["layer"] for r in plan if not r["ok"]]
    print_fn(f"\nquantised network: {len(plan)} layers, plan in {work_dir / PLAN_NAME}")
    if problems:
        raise QATError(f"layers that would stay float or are quantised wrongly: {problems}; see {work_dir / PLAN_NAME}")
    return network, control


def _start_state(cfg, network, control, detector, optimizer, work_dir, resume, train_set, print_fn):
    """Resume from the newest QAT checkpoint, or calibrate the activation ranges.
    Returns ``(initial_epoch, best_metric, best_epoch)``."""
    ckpt = latest_checkpoint(work_dir) if resume else None
    if resume and ckpt is None:
        print_fn(f"--resume: no checkpoint in {work_dir}, starting from the float model")
    if ckpt is not None:
        meta = fit.restore_qat_state(ckpt, network, optimizer, detector.trainable_variables)
        print_fn(f"resumed from {ckpt}: epoch {int(meta['epoch'])}, step {int(optimizer.iterations.numpy())}")
        return int(meta["epoch"]), float(meta.get("best_metric", -1.0)), meta.get("best_epoch")
    calib = calibration_images(cfg, train_set)
    n = calibrate_ranges(network, control, calib, batch_size=cfg.batch_size)
    print_fn(f"activation ranges calibrated on {len(calib)} training images ({n} batches, BatchNorm in "
             f"inference mode)")
    return 0, -1.0, None


def _callbacks(cfg, network, control, work_dir, val_set, keep_best, observer_step, bn_step, print_fn):
    # Order: ranges and BN switched before each batch; kernel ranges refreshed before the evaluation,
    # whose metrics the best-weights keeper, the checkpoint and TensorBoard then read.
    evaluator = CocoEvalCallback(val_set, make_dataset_predictor(network, cfg), network, interval=1,
                                 max_epochs=cfg.qat.epochs,
                                 tensorboard=TensorBoardWriter(work_dir / "tensorboard", val_set, cfg.class_names),
                                 print_fn=print_fn)
    # Training's checkpoint file and pruning; every epoch file in the QAT folder counts as this run's.
    saver = CheckpointCallback(work_dir, max_keep=cfg.max_keep_ckpts, network=network,
                               own=[p for _, p in epoch_checkpoints(work_dir)],
                               state_fn=lambda: {"kind": "qat", "best_metric": keep_best.best_metric,
                                                 "best_epoch": keep_best.best_epoch})
    return [fit.FreezeObservers(control, observer_step, print_fn), fit.FreezeBatchNorm(control, bn_step, print_fn),
            fit.Keras3Callback(NanGuard()), fit.RefreshWeightRanges(network),
            fit.Keras3Callback(evaluator), keep_best, fit.Keras3Callback(saver), fit.Keras3Callback(LearningRateLogger()),
            tf_keras.callbacks.TensorBoard(str(work_dir / "tensorboard"), update_freq="epoch", write_graph=False)]


def _fine_tune(cfg, network, control, work_dir, train_set, val_set, resume, verbose, print_fn):
    """Calibrate (or resume), then ``fit`` the fake-quant detector. Returns ``(keep_best, total steps)``."""
    q = cfg.qat
    pipeline = build_train_pipeline(train_set, cfg, stage=q.stage, seed=cfg.seed)
    steps = pipeline.steps_per_epoch
    total = q.epochs * steps
    detector = fit.QATDetector(network, cfg)
    optimizer = fit.build_qat_optimizer(cfg, detector, steps)
    detector.compile(optimizer=optimizer, jit_compile=False)
    initial_epoch, best_metric, best_epoch = _start_state(cfg, network, control, detector, optimizer, work_dir,
                                                          resume, train_set, print_fn)
    observer_step = int(round(q.freeze_observer_ratio * total))
    bn_step = int(round(q.freeze_bn_ratio * total))
    keep_best = fit.KeepBestWeights(network, work_dir / BEST_WEIGHTS, best_metric, best_epoch, print_fn=print_fn)
    callbacks = _callbacks(cfg, network, control, work_dir, val_set, keep_best, observer_step, bn_step, print_fn)
    if initial_epoch < q.epochs:
        print_fn(f"\nQAT: epochs {initial_epoch + 1}-{q.epochs}, {steps} steps each (stage {q.stage} pipeline), lr "
                 f"{q.lr:g}; activation ranges frozen from step {observer_step}, BatchNorm from step {bn_step} "
                 f"of {total}")
        detector.fit(pipeline.dataset, epochs=q.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                     callbacks=callbacks, verbose=verbose)
    return keep_best, total


def _export_qat(cfg, network, work_dir, train_set, val_set, metrics, paths, print_fn) -> None:
    print_fn("\n== int8 export of the QAT model")
    qat_tflite = export_tflite(network, cfg, work_dir, ("int8",), calib_dataset=train_set,
                               name=f"{cfg.name}_qat", saved_model=False, check_dataset=val_set,
                               print_fn=print_fn)["int8"]
    paths["qat_int8"] = str(qat_tflite)
    meta = json.loads(qat_tflite.with_suffix(".json").read_text())
    if meta.get("problems"):
        print_fn(f"WARNING: the QAT int8 graph has {len(meta['problems'])} problem(s) for MCU runtimes")
    metrics["int8 QAT"] = evaluate(cfg, qat_tflite, dataset=val_set, print_fn=print_fn).metrics


def _chosen_weights(cfg, network, work_dir, export_weights, keep_best, print_fn) -> str:
    """Load the best epoch's weights (``export_weights="best"`` and a best file exists) or keep the last."""
    best = work_dir / BEST_WEIGHTS
    if export_weights == "best" and best.exists():
        network.load_weights(str(best))
        print_fn(f"\nbest fake-quant weights: epoch {keep_best.best_epoch} ({best})")
        return f"best (epoch {keep_best.best_epoch})"
    print_fn(f"\nweights of the last epoch ({cfg.qat.epochs})")
    return f"last (epoch {cfg.qat.epochs})"


def qat(cfg, checkpoint, work_dir=None, resume: bool = False, baselines: bool = True, export: bool = True,
        export_weights: str = "best", verbose: int = 1, print_fn=print) -> dict:
    """Quantization-aware fine-tuning of the trained network ``checkpoint``, int8 export and the
    comparison table (see :mod:`rtmdet_keras.qat` for the steps and files).

    Args:
        cfg: the training config, ``cfg.qat`` holding the recipe (``epochs``...).
        checkpoint: the float model: ``best_coco_bbox_mAP.keras`` or ``epoch_N.ckpt.npz`` (EMA weights).
        work_dir: default ``work_dirs/<config>/qat``.
        resume: continue from the newest ``epoch_N.ckpt.npz`` in ``work_dir``.
        baselines: also evaluate the float model and a post-training-quantised int8 export of it.
        export: export and evaluate the int8 QAT model (off: fine-tune only).
        export_weights: ``"best"`` (the epoch with the best fake-quant validation mAP, as training's
            ``best_coco_bbox_mAP.keras``) or ``"last"`` (the final epoch, all freezes applied).
    Returns:
        ``{"work_dir", "checkpoint", "epochs", "steps", "best_epoch", "weights" (which were exported),
        "metrics": {row: COCO metrics}, "table", "paths": {...}, "seconds"}`` (also written to
        ``qat_summary.json``).
    """
    start = time.time()
    check_recipe(cfg.qat, export_weights)
    work_dir = Path(work_dir) if work_dir else default_qat_dir(cfg)
    work_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)

    train_set = load_split(cfg, "train")
    val_set = load_split(cfg, "val")
    cfg.class_names = list(train_set.class_names)
    cfg.save(work_dir / "config.yaml")
    checkpoint = Path(checkpoint)
    try:
        float_net = load_network(cfg, checkpoint)
    except ModelLoadError as e:
        raise QATError(str(e)) from None

    metrics: Dict[str, dict] = {}
    paths: Dict[str, str] = {}
    if baselines:
        _baselines(cfg, checkpoint, float_net, train_set, val_set, work_dir, export, metrics, paths, print_fn)
    network, control = _quantised_network(cfg, float_net, work_dir, print_fn)
    keep_best, total = _fine_tune(cfg, network, control, work_dir, train_set, val_set, resume, verbose, print_fn)
    chosen = _chosen_weights(cfg, network, work_dir, export_weights, keep_best, print_fn)
    refresh_weight_ranges(network)
    metrics["QAT fake-quant Keras"] = _evaluate_network(network, cfg, val_set).metrics
    if export:
        _export_qat(cfg, network, work_dir, train_set, val_set, metrics, paths, print_fn)

    table = format_comparison_table(metrics)
    print_fn(f"\nvalidation split {val_set.source} ({len(val_set)} images) at {cfg.imgsz[0]}x{cfg.imgsz[1]}:")
    print_fn(table.rstrip())
    summary = {"work_dir": str(work_dir), "checkpoint": str(checkpoint), "epochs": cfg.qat.epochs, "steps": total,
               "best_epoch": keep_best.best_epoch, "weights": chosen, "metrics": metrics, "table": table,
               "paths": paths, "seconds": round(time.time() - start, 1)}
    (work_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = ["qat"]
