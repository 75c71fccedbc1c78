"""Writing a checkpoint's ``{"layer/weight": array}`` table into a model, strictly one to one.

Strict one to one
    Every tensor of the checkpoint is used once and every weight of the (part of the) model is set
    once; anything left over on either side is a :class:`CheckpointError` that lists the names. The
    documented exceptions, each reported in the printed summary:

    - ``*.num_batches_tracked`` (BatchNorm's step counter; Keras has none) and the EMA ``steps``;
    - the class-prediction convs ``bbox_head.rtm_cls.{l}`` when the checkpoint has another number of
      classes: they keep their fresh initialisation (prior probability ``model.prior_prob``);
    - when loading the backbone only, every tensor outside ``backbone.*``: the classifier of an
      ImageNet CSPNeXt checkpoint (``head.fc.weight``, ``head.fc.bias``), or the neck and head of a
      detector checkpoint.

    With ``share_conv`` mmdetection's state dict repeats each head tower conv under every level
    (``bbox_head.cls_convs.{l}.{i}.conv.weight``, identical tensors); the Keras model has it once
    (``bbox_head.cls_convs.0.{i}.conv``): the copies are checked to be equal and loaded once. A model
    without shared convs (the tf_keras twin) takes each level's copy. The matching is the one
    name-keyed copier, :func:`rtmdet_keras.models.weights.match_weights`.

    Nothing is written into the model unless the whole load checks out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional

from rtmdet_keras.models.checkpoint_layout import LAYOUT_NAMES, CheckpointError, name_list, torch_name, torch_shape
from rtmdet_keras.models.weights import in_part, match_weights, weight_suffix, weighted_layers

PARTS = ("backbone",)  # what ``part=`` may restrict a load to
_CLASS_CONV = re.compile(r"^bbox_head\.rtm_cls\.(\d+)$")


@dataclass
class LoadReport:
    """What a load did. Names of checkpoint tensors are the source's own (mmdetection keys for a
    ``.pth``, ``layer/weight`` for a converted file)."""

    source: str
    part: Optional[str] = None
    layers: List[str] = field(default_factory=list)  # Keras layers written
    used: List[str] = field(default_factory=list)  # source tensors used (each exactly once)
    ignored: List[str] = field(default_factory=list)  # documented skips (see the module docstring)
    kept_init: List[str] = field(default_factory=list)  # Keras layers left as initialised (class convs)
    notes: List[str] = field(default_factory=list)  # one line each, printed
    layout: Optional[str] = None  # "mmdetection", "sscma" or "backbone" for a state dict; None for other sources

    def summary(self) -> str:
        what = "backbone weights" if self.part == "backbone" else "weights"
        counted: Dict[str, int] = {}
        for name in self.ignored:
            kind = ("num_batches_tracked" if name.endswith("num_batches_tracked")
                    else "EMA steps" if name == "steps"
                    else "class-prediction tensors" if name.startswith(("bbox_head.rtm_cls.",
                                                                          "bbox_head.head_module.rtm_cls."))
                    else f"outside {self.part}.*")
            counted[kind] = counted.get(kind, 0) + 1
        skipped = "; ignored " + ", ".join(f"{n} {k}" for k, n in counted.items()) if counted else ""
        layout = f" ({LAYOUT_NAMES[self.layout]})" if self.layout in LAYOUT_NAMES else ""
        lines = [f"{what} from {self.source}{layout}: {len(self.used)} tensors into {len(self.layers)} layers"
                 f"{skipped}"]
        return "\n".join(lines + self.notes)


def _problem_message(source, part, missing, leftover, wrong_shape, diverged, class_hint=None, layout=None) -> str:
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights of the model are not in the checkpoint: {name_list(missing)}")
    if leftover:
        problems.append(f"{len(leftover)} tensors of the checkpoint have no place in the model: {name_list(leftover)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} tensors have another shape: {name_list(wrong_shape)}")
    if class_hint:
        problems.append(class_hint)
    if diverged:
        problems.append("the model shares head convs across levels but the checkpoint's per-level copies differ: "
                        f"{name_list(diverged)}; build the model with model.share_conv=false to keep them apart")
    hint = ("\nWas the checkpoint trained with this config's architecture (preset, widen/deepen factors, "
            "neck_csp_blocks, channel_attention, share_conv)?")
    if part is None and missing and not leftover and all(not m.startswith("backbone.") for m in missing):
        hint += " It holds no neck or head weights: load it with backbone_weights= instead of load_from=."
    if layout == "sscma":
        hint += (" For an SSCMA checkpoint give the SSCMA config it was trained with (configs/rtmdet_nano_8xb32_"
                 "300e_coco.py, ..._relu.py, rtmdet_s_8xb32_300e_coco.py, ...): each selects the matching preset.")
    where = f" ({LAYOUT_NAMES[layout]})" if layout in LAYOUT_NAMES else ""
    return f"{source}{where} does not fit the model:\n- " + "\n- ".join(problems) + hint


def _weight_shape(layer, key: str) -> tuple:
    """The model's shape of the weight of ``layer`` that table ``key`` (``".../kernel"``) fills."""
    suffix = key.rpartition("/")[2]
    for v in layer.weights:
        if weight_suffix(v) == suffix:
            return tuple(int(d) for d in v.shape)
    raise KeyError(key)


def _is_class_conv_count(name: str, got: tuple, want: tuple) -> bool:
    """A class-prediction conv whose shape differs only in the class count."""
    return bool(_CLASS_CONV.match(name)) and tuple(got[:-1]) == tuple(want[:-1])


def _shape_problems(match, table, name_of, with_origin: bool):
    """``(messages, class counts)`` of the weights whose shapes differ; the class counts
    (``{class conv: (checkpoint, model)}``) of class convs among them."""
    messages, class_counts = [], {}
    for name, key in match.wrong_shape:
        layer = match.layers[name]
        want = _weight_shape(layer, key)
        if with_origin:  # a PyTorch state dict: both shapes in its layout, as its own code prints them
            dw = type(layer).__name__ == "DepthwiseConv2D"
            got, model_shape = torch_shape(table[key].shape, dw), torch_shape(want, dw)
        else:
            got, model_shape = list(table[key].shape), list(want)
        messages.append(f"{name_of(key)}: {got} in the checkpoint, {model_shape} in the model")
        if _is_class_conv_count(name, table[key].shape, want):
            class_counts[name] = (table[key].shape[-1], want[-1])
    return messages, class_counts


def _report_loaded(report: LoadReport, match, table, name_of) -> None:
    """The report's notes on kept class convs and shared head convs, then write the weights."""
    class_counts = {}
    for name, keys in match.kept.items():
        report.ignored += [name_of(k) for k in keys]
        class_counts[name] = (table[keys[0]].shape[-1], _weight_shape(match.layers[name], keys[0])[-1])
    if class_counts:
        report.kept_init = sorted(class_counts)
        ckpt_n, model_n = next(iter(class_counts.values()))
        report.notes.append(f"{', '.join(report.kept_init)}: the checkpoint predicts {ckpt_n} classes, this model "
                            f"{model_n}: these class-prediction convs keep their fresh initialisation; "
                            "everything else is loaded")
    if match.shared_checked:
        report.notes.append(f"shared head convs: {match.shared_checked} per-level copies in the checkpoint checked "
                            "equal to level 0 and loaded once")
    report.layers = match.apply()
    report.used = [name_of(k) for k in match.used]


def assign_named_weights(model, table: Mapping, *, part: Optional[str] = None, origin: Optional[Mapping] = None,
                         source: str = "checkpoint", ignored: Iterable[str] = (), layout: Optional[str] = None,
                         strict_classes: bool = False) -> LoadReport:
    """Set the weights of ``model`` (or of its layers named ``part.*``) from ``table``, one to one.

    Args:
        table: ``{"layer/weight": array}`` in Keras layout (:func:`translate_state_dict` or a converted file).
        part: ``"backbone"`` to load only ``backbone.*``; table entries outside it are ignored.
        origin: source name of each table key, for messages and the report (default: the key itself).
        ignored: source names already dropped upstream (``num_batches_tracked``), carried into the report.
        layout: the state dict's layout (:func:`detect_layout`), for naming missing tensors as it would.
        strict_classes: a class count that differs is an error too (for export and evaluation, where a
            freshly initialised class conv would make no sense), not a fine-tuning start.

    Raises:
        CheckpointError: model weights with no entry, entries with no weight, shapes that differ (other
            than the class count of ``bbox_head.rtm_cls.*``), or shared head convs whose per-level
            copies differ. The model is not changed in that case.
    """
    if part is not None and part not in PARTS:
        raise CheckpointError(f"part must be None or one of {', '.join(PARTS)}, got {part!r}")
    origin = dict(origin or {})
    name_of = lambda k: origin.get(k, k)  # noqa: E731
    report = LoadReport(source=source, part=part, ignored=list(ignored), layout=layout)
    layers = weighted_layers(model, part)
    if not layers:
        raise CheckpointError(f"the model has no layers with weights{f' named {part}.*' if part else ''}")
    match = match_weights(layers, table, keep=None if strict_classes else _is_class_conv_count)

    missing = [torch_name(k, layout) if origin else k for k in match.missing]
    wrong_shape, class_counts = _shape_problems(match, table, name_of, bool(origin))
    diverged = [f"{name_of(other)} differs from {name_of(key)}" for _, key, other, _ in match.diverged]
    class_hint = None
    if strict_classes and class_counts:
        ckpt_n, model_n = next(iter(class_counts.values()))
        class_hint = (f"the checkpoint predicts {ckpt_n} classes, the config {model_n} (num_classes): set "
                      f"--cfg-options num_classes={ckpt_n}")
    leftover = match.leftover(table)
    if part is not None:
        report.ignored += [name_of(k) for k in leftover if not in_part(k.rpartition("/")[0], part)]
        leftover = [k for k in leftover if in_part(k.rpartition("/")[0], part)]
    if missing or leftover or wrong_shape or diverged:
        raise CheckpointError(_problem_message(source, part, missing, [name_of(k) for k in leftover],
                                               wrong_shape, diverged, class_hint, layout))
    _report_loaded(report, match, table, name_of)
    return report
