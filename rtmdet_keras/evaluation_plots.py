"""Pictures of an :class:`~rtmdet_keras.operating_point.OperatingPoint`: ``pr_curve.png`` (one
precision-recall curve per class, the chosen threshold marked on each) and ``confusion_matrix.png``
(counts, background row and column), as Ultralytics writes them after validation.

matplotlib is imported only here and only when a picture is drawn, through its Agg canvas (no
display, no pyplot state), so evaluation without plots and every other command start without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from rtmdet_keras.operating_point import pr_curves

DPI = 100
PR_FIGSIZE = (8.0, 6.0)  # inches; 800 x 600 pixels at DPI
PR_CURVE_FILE = "pr_curve.png"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"


def confusion_matrix_figsize(num_classes: int):
    """Inches: square cells of 0.45 inch around a fixed margin for labels and title, at least 6 x 5."""
    cells = 0.45 * (num_classes + 1)
    return max(6.0, cells + 2.5), max(5.0, cells + 2.0)


def figure_pixels(figsize) -> tuple:
    """``(width, height)`` in pixels of a figure of ``figsize`` inches saved at :data:`DPI`."""
    return int(round(figsize[0] * DPI)), int(round(figsize[1] * DPI))


def _figure(figsize):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only when a picture is drawn
        from matplotlib.figure import Figure  # lazy: only when a picture is drawn
    except ImportError:
        raise RuntimeError("the evaluation plots need matplotlib: pip install matplotlib "
                           "(or evaluate with --no-plots)") from None
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def plot_pr_curves(point, path, ap50: Optional[Dict[str, float]] = None) -> Path:
    """Write one precision-recall curve per class (the upper envelope, as COCO's AP integrates it)
    with a dot where the chosen score threshold puts each class; ``ap50`` (class -> COCO AP50)
    goes into the legend."""
    fig = _figure(PR_FIGSIZE)
    ax = fig.add_subplot()
    for name, (scores, precision, recall) in pr_curves(point).items():
        label = name if not ap50 or name not in ap50 else f"{name} (AP50 {ap50[name]:.3f})"
        if not len(scores):
            ax.plot([], [], label=f"{label}: no detections")
            continue
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        line, = ax.plot(np.concatenate([[0.0], recall]), np.concatenate([[envelope[0]], envelope]),
                        drawstyle="steps-pre", label=label)
        at = np.flatnonzero(scores >= point.score_thr)
        if len(at):  # the last detection the threshold keeps: the class's operating point
            ax.plot(recall[at[-1]], precision[at[-1]], "o", color=line.get_color())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall at IoU {point.iou_thr:g}; dots: score >= {point.score_thr:.3g} "
                 f"({point.chosen_by})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return Path(path)


def plot_confusion_matrix(point, path) -> Path:
    """Write the confusion matrix: counts in the cells, columns the true class, rows the predicted
    one, background last; colours are each column's share so that a small class reads as well
    as a large one."""
    names = list(point.class_names) + ["background"]
    m = np.asarray(point.confusion)
    n = len(names)
    fig = _figure(confusion_matrix_figsize(len(point.class_names)))
    ax = fig.add_subplot()
    column_sums = m.sum(axis=0, keepdims=True)
    share = np.divide(m, column_sums, out=np.zeros(m.shape), where=column_sums > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fontsize = 9 if n <= 15 else 6
    for p in range(n):
        for t in range(n):
            if m[p, t]:
                ax.text(t, p, str(int(m[p, t])), ha="center", va="center", fontsize=fontsize,
                        color="white" if share[p, t] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), names, fontsize=fontsize)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"score >= {point.score_thr:.3g}, IoU >= {point.iou_thr:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return Path(path)


def write_evaluation_plots(point, out_dir, ap50: Optional[Dict[str, float]] = None) -> Dict[str, Path]:
    """Write :data:`PR_CURVE_FILE` and :data:`CONFUSION_MATRIX_FILE` into ``out_dir`` (created);
    returns ``{"pr_curve": path, "confusion_matrix": path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {"pr_curve": plot_pr_curves(point, out_dir / PR_CURVE_FILE, ap50),
            "confusion_matrix": plot_confusion_matrix(point, out_dir / CONFUSION_MATRIX_FILE)}
