"""QAT's names, recipe checks and error type; no TensorFlow, no tfmot (the command line and the tests
read them without starting either)."""

from __future__ import annotations

from pathlib import Path

from rtmdet_keras.config import parse_overrides

BEST_WEIGHTS = "best_qat.weights.h5"
SUMMARY_NAME = "qat_summary.json"
PLAN_NAME = "quantization_plan.txt"


class QATError(RuntimeError):
    """QAT cannot go on; the message says what was wrong and what to do."""


def default_qat_dir(cfg) -> Path:
    """``work_dirs/<config name>/qat`` (``cfg.work_dir/qat`` when the config sets one)."""
    return (Path(cfg.work_dir) if cfg.work_dir else Path("work_dirs") / cfg.name) / "qat"


def check_recipe(q, export_weights: str) -> None:
    """Raise :class:`QATError` for a recipe ``cfg.qat`` (or ``export_weights``) QAT cannot run."""
    if export_weights not in ("best", "last"):
        raise QATError(f"export_weights must be 'best' or 'last', got {export_weights!r}")
    if q.epochs < 1:
        raise QATError(f"qat.epochs must be at least 1, got {q.epochs}")
    if not (0.0 <= q.freeze_observer_ratio <= 1.0 and 0.0 <= q.freeze_bn_ratio <= 1.0):
        raise QATError(f"qat.freeze_observer_ratio and qat.freeze_bn_ratio must lie in [0, 1], got "
                       f"{q.freeze_observer_ratio} and {q.freeze_bn_ratio}")


def qat_epochs_from_options(cfg, cfg_options) -> None:
    """``max_epochs=N`` (or its alias ``epochs=N``) on the QAT command line means the QAT epochs."""
    given = parse_overrides(list(cfg_options or ()))
    if ("max_epochs" in given or "epochs" in given) and not ("qat" in given and "epochs" in given["qat"]):
        cfg.qat.epochs = int(cfg.max_epochs)


__all__ = ["BEST_WEIGHTS", "SUMMARY_NAME", "PLAN_NAME", "QATError", "default_qat_dir", "check_recipe"]
