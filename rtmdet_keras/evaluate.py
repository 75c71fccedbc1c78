"""COCO evaluation of any form of a trained detector on the validation split.

``python -m rtmdet_keras.evaluate configs/nano.yaml work_dirs/nano/nano_int8.tflite --cfg-options imgsz='(192,192)'``

The model may be a Keras ``.keras`` file (``best_coco_bbox_mAP.keras``), a training checkpoint
``epoch_N.ckpt.npz`` (its EMA weights, as training-time evaluation uses), a SavedModel folder (the
export's or Keras' ``model.export``) or any ``.tflite`` of the export (float32, float16, int8).
Every form goes through the evaluation transform (letterbox), the same
:func:`~rtmdet_keras.postprocess.decode_and_nms` (``cfg.test``: score 0.001, NMS IoU 0.65, 300 per
image) and the mapping back to original-image pixels; Keras models through the very predictor that
training uses (:func:`~rtmdet_keras.training.detector.make_dataset_predictor`). After the COCO tables
come precision, recall and F1 per class at one score threshold (:mod:`rtmdet_keras.operating_point`),
and the command draws ``pr_curve.png`` and ``confusion_matrix.png`` (:mod:`rtmdet_keras.evaluation_plots`).

Also here, because export and predict share them: reading a command's config and model arguments
(:func:`command_config_and_model`) and loading a model (:func:`load_network`, :func:`load_model_runner`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import click
import numpy as np

from rtmdet_keras.cli import VariadicCfgCommand, config_options, load_config_or_exit, run_standalone

KERAS_SUFFIXES = (".keras",)
CHECKPOINT_SUFFIX = ".ckpt.npz"


class ModelLoadError(ValueError):
    """A model file cannot be used with the config; the message names the file and the mismatch."""


# ---------------------------------------------------------------------------------------------
# Command arguments: [CONFIG] MODEL, --config, --tflite/--checkpoint, config.yaml beside the model
# ---------------------------------------------------------------------------------------------


def command_config_and_model(args, config, cfg_options, checkpoint=None, tflite=None, extra_overrides=None):
    """Resolve a command's ``[CONFIG] MODEL`` positionals and options into ``(cfg, model_path)``.

    The config is ``--config``, else the first of two positionals, else the ``config.yaml`` that
    training writes beside its checkpoints, else (for a ``.tflite``) the preset, input size, classes
    and decoding recorded in the export's JSON. ``extra_overrides`` (``key=value`` strings) apply after
    ``--cfg-options``.
    """
    args = list(args)
    named = [p for p in (checkpoint, tflite) if p]
    if len(named) > 1:
        raise click.UsageError("give one model: --checkpoint or --tflite, not both")
    if len(args) > 2 or (named and len(args) > 1):
        raise click.UsageError(f"too many arguments: {' '.join(args)} (expected [CONFIG] MODEL)")
    model = named[0] if named else (args.pop() if args else None)
    if model is None:
        raise click.UsageError("give a model: a .keras, .ckpt.npz, SavedModel folder, .tflite, or an "
                               "mmdetection/SSCMA .pth (or its converted .npz)")
    positional_config = args[0] if args else None
    if config and positional_config:
        raise click.UsageError(f"two configs given: --config {config} and {positional_config}")
    model_path = Path(model)
    if not model_path.exists():
        raise click.ClickException(f"{model_path}: no such file or folder")
    name = config or positional_config
    implied = []
    if name is None:
        beside = (model_path if model_path.is_dir() else model_path.parent) / "config.yaml"
        if not beside.exists():
            beside = model_path.parent / "config.yaml"
        if beside.exists():
            name = str(beside)
        else:
            name, implied = _config_from_export_metadata(model_path)
    cfg = load_config_or_exit(name, implied + list(cfg_options or ()) + list(extra_overrides or ()))
    if Path(name).name == "config.yaml":
        cfg.name = cfg.preset  # a training run's resolved config: name exports after the preset, not "config"
    _fill_class_names(cfg, model_path)
    return cfg, model_path


def _config_from_export_metadata(model_path: Path):
    """``(preset, overrides)`` read from the JSON an export writes beside a ``.tflite``."""
    from rtmdet_keras.tflite_runtime import read_export_metadata

    meta = read_export_metadata(model_path) if model_path.suffix == ".tflite" else None
    if not meta:
        raise click.UsageError(f"give a config (--config nano.yaml or CONFIG before the model): none was given "
                               f"and there is neither a config.yaml nor an export JSON beside {model_path}")
    d = meta["decode"]
    overrides = [f"imgsz=[{meta['imgsz'][0]},{meta['imgsz'][1]}]", f"num_classes={meta['num_classes']}",
                 f"model.strides=[{','.join(str(s) for s in d['strides'])}]",
                 f"model.exp_on_reg={str(bool(d['exp_on_reg'])).lower()}"]
    return meta.get("preset") or "nano", overrides


def _fill_class_names(cfg, model_path: Path) -> None:
    """Class names from the export JSON or the training run's ``config.yaml`` when the config has none."""
    if cfg.class_names:
        return
    candidates = []
    if model_path.suffix == ".tflite":
        from rtmdet_keras.tflite_runtime import read_export_metadata

        meta = read_export_metadata(model_path)
        if meta:
            candidates.append(meta.get("class_names"))
    beside = (model_path if model_path.is_dir() else model_path.parent) / "config.yaml"
    if beside.exists():
        import yaml

        try:
            candidates.append((yaml.safe_load(beside.read_text()) or {}).get("class_names"))
        except (OSError, yaml.YAMLError):
            pass
    for names in candidates:
        if names and len(names) == int(cfg.num_classes):
            cfg.class_names = list(names)
            return


# ---------------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------------


def model_kind(path) -> str:
    """``"tflite"``, ``"keras"``, ``"checkpoint"`` (``epoch_N.ckpt.npz``), ``"saved_model"`` or ``"weights"``
    (an mmdetection/SSCMA ``.pth`` or a converted ``.npz``: :mod:`rtmdet_keras.models.pretrained`)."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "saved_model"
        raise ModelLoadError(f"{path}: a folder without saved_model.pb is not a SavedModel")
    if path.suffix == ".tflite":
        return "tflite"
    if path.suffix in KERAS_SUFFIXES:
        return "keras"
    if path.name.endswith(CHECKPOINT_SUFFIX):
        return "checkpoint"
    from rtmdet_keras.models.pretrained import TORCH_SUFFIXES, is_named_weights_file

    if path.suffix == ".npz":
        return "weights" if is_named_weights_file(path) else "checkpoint"
    if path.suffix.lower() in TORCH_SUFFIXES:
        return "weights"
    raise ModelLoadError(f"{path}: unknown model type; give a .keras, .ckpt.npz, .tflite, a SavedModel folder, "
                         f"or an mmdetection/SSCMA checkpoint (.pth) or its converted .npz")


def compare_with_fresh_model(network, cfg, source) -> None:
    """Raise :class:`ModelLoadError` when ``network``'s weights (names and shapes) differ from a network
    freshly built from ``cfg``: another preset, other widths or depths, another number of classes."""
    try:
        from rtmdet_keras.models import build_model
    except ImportError:  # the model package is not there: nothing to compare with
        return
    try:
        fresh = build_model(cfg)
    except ValueError as e:
        raise ModelLoadError(f"the config cannot build a network to compare {source} with: {e}") from None
    got = {v.path: tuple(v.shape) for v in network.weights}
    want = {v.path: tuple(v.shape) for v in fresh.weights}
    if got == want:
        return
    diffs = [f"{k} is {got[k]} in the checkpoint, {want[k]} for the config"
             for k in want if k in got and got[k] != want[k]]
    diffs += [f"{k} is missing from the checkpoint" for k in want if k not in got]
    diffs += [f"{k} is in the checkpoint but not in the config's network" for k in got if k not in want]
    m = cfg.model
    raise ModelLoadError(
        f"{source} does not match the config (preset {cfg.preset}, num_classes {cfg.num_classes}, "
        f"widen_factor {m.widen_factor}, deepen_factor {m.deepen_factor}, backbone {m.backbone}): "
        f"{len(got)} weights in the checkpoint, {len(want)} in the config's network; "
        f"{len(diffs)} differ, e.g. {'; '.join(diffs[:3])}. Use the config it was trained with "
        f"(training writes it as config.yaml beside the checkpoints).")


def load_network(cfg, path, ema: bool = True):
    """A Keras functional network from ``.keras`` or ``epoch_N.ckpt.npz`` (its EMA weights when stored
    and ``ema``, else the raw ones), checked against ``cfg`` (input size, classes, weight shapes)."""
    from rtmdet_keras.export import ExportError, check_network_matches_config

    path = Path(path)
    kind = model_kind(path)
    if kind == "keras":
        import keras

        try:
            import rtmdet_keras.models  # noqa: F401  registers the custom layers for deserialisation
        except ImportError:
            pass
        try:
            network = keras.saving.load_model(str(path), compile=False)
        except Exception as e:  # zip/h5/JSON errors, unknown layers: say which file and what to do
            raise ModelLoadError(f"{path}: cannot load the Keras model ({type(e).__name__}: {str(e)[:300]}); "
                                 f"the file is corrupt, truncated or not a .keras model") from None
        try:
            check_network_matches_config(network, cfg, source=str(path))
        except ExportError as e:
            raise ModelLoadError(str(e)) from None
        compare_with_fresh_model(network, cfg, str(path))
        return network
    if kind == "checkpoint":
        return _network_from_training_state(cfg, path, ema)
    if kind == "weights":
        return _network_from_weights(cfg, path)
    raise ModelLoadError(f"{path}: a {kind} model is not a Keras network; give a .keras, .ckpt.npz, .pth or a "
                         f"converted .npz file")


def _network_from_weights(cfg, path, print_fn=click.echo):
    """The network of ``cfg`` with the weights of an mmdetection / SSCMA checkpoint (``.pth``, read with
    PyTorch) or of its converted ``.npz``, loaded one to one; a class count that differs from
    ``cfg.num_classes`` is an error here (a fresh class conv cannot be exported or evaluated)."""
    from rtmdet_keras.models.pretrained import CheckpointError, load_weights
    from rtmdet_keras.models import build_model

    try:
        network = build_model(cfg)
    except ValueError as e:
        raise ModelLoadError(f"the config cannot build a network to load {path} into: {e}") from None
    try:
        load_weights(network, path, cfg=cfg, strict_classes=True, print_fn=print_fn)
    except CheckpointError as e:
        raise ModelLoadError(str(e)) from None
    return network


def _network_from_training_state(cfg, path, ema: bool = True):
    from rtmdet_keras.models import build_model
    from rtmdet_keras.training.checkpoint import load_training_state
    from rtmdet_keras.training.detector import RTMDetDetector

    try:
        state = load_training_state(path)
    except RuntimeError as e:
        raise ModelLoadError(str(e)) from None
    try:
        network = build_model(cfg)
    except ValueError as e:
        raise ModelLoadError(f"the config cannot build a network to load {path} into: {e}") from None
    detector = RTMDetDetector(network, cfg)
    weights = list(detector.weights)
    saved_paths = state["meta"].get("model_weight_paths") or []
    shapes_differ = any(tuple(v.shape) != tuple(w.shape) for v, w in zip(weights, state["model"]))
    if len(state["model"]) != len(weights) or shapes_differ:
        diffs = [f"{v.path} is {tuple(w.shape)} in the checkpoint, {tuple(v.shape)} for the config"
                 for v, w in zip(weights, state["model"]) if tuple(v.shape) != tuple(w.shape)]
        raise ModelLoadError(
            f"{path} does not match the config (preset {cfg.preset}, num_classes {cfg.num_classes}, widen_factor "
            f"{cfg.model.widen_factor}, deepen_factor {cfg.model.deepen_factor}): it holds {len(state['model'])} "
            f"weight tensors, the config's network {len(weights)}"
            + (f"; e.g. {'; '.join(diffs[:3])}" if diffs else "")
            + ". Use the config it was trained with (config.yaml beside the checkpoints).")
    if saved_paths and len(saved_paths) == len(weights):
        renamed = [(a, v.path) for a, v in zip(saved_paths, weights) if a != v.path]
        if renamed:  # same shapes, other layer names: another network layout
            raise ModelLoadError(f"{path}: weight {renamed[0][0]} of the checkpoint is {renamed[0][1]} in the "
                                 f"config's network; use the config it was trained with")
    for v, w in zip(weights, state["model"]):
        v.assign(w)
    if ema and state["ema"]:
        # The EMA averages every float weight of the detector (BatchNorm statistics included), in order.
        floats = [v for v in weights if v.dtype in ("float32", "float16", "bfloat16", "float64")]
        if len(floats) != len(state["ema"]):
            raise ModelLoadError(f"{path}: {len(state['ema'])} EMA tensors for {len(floats)} float weights")
        for v, w in zip(floats, state["ema"]):
            v.assign(w)
    return network


class KerasRunner:
    """A Keras network as ``images uint8 [B, H, W, 3] -> outputs dict`` (float32 NumPy)."""

    kind = "keras"

    def __init__(self, network):
        import tensorflow as tf

        self.network = network
        self._call = tf.function(lambda x: network(tf.cast(x, tf.float32), training=False), reduce_retracing=True)

    def __call__(self, images):
        return {k: np.asarray(v) for k, v in self._call(np.asarray(images)).items()}


class SavedModelRunner:
    """A SavedModel's ``serving_default`` (the export's, or Keras' ``model.export``) as
    ``images -> network outputs dict``, whatever export layout it returns."""

    kind = "saved_model"

    def __init__(self, path, cfg):
        import tensorflow as tf

        from rtmdet_keras.export import check_layout_shapes, detect_layout

        self.path = Path(path)
        try:
            self.module = tf.saved_model.load(str(path))
            self.fn = self.module.signatures["serving_default"]
        except Exception as e:
            raise ModelLoadError(f"{path}: cannot load the SavedModel's serving_default signature "
                                 f"({type(e).__name__}: {str(e)[:300]})") from None
        specs = self.fn.structured_input_signature[1]
        if len(specs) != 1:
            raise ModelLoadError(f"{path}: serving_default takes {sorted(specs)}; expected one image input")
        (self.input_name, spec), = specs.items()
        self.batch = spec.shape[0]
        self.dtype = spec.dtype
        shapes = {k: tuple(v.shape) for k, v in self.fn.structured_outputs.items()}
        try:
            self.layout = detect_layout(shapes)
            check_layout_shapes(self.layout, {k: (1,) + tuple(s[1:]) for k, s in shapes.items()}, cfg)
        except ValueError as e:
            raise ModelLoadError(f"{path}: {e}") from None
        self.cfg = cfg

    def __call__(self, images):
        import tensorflow as tf

        from rtmdet_keras.export import layout_to_network_outputs

        images = np.asarray(images)
        step = self.batch or max(len(images), 1)
        chunks = [images[i:i + step] for i in range(0, len(images), step)]
        outs = [self.fn(**{self.input_name: tf.cast(c, self.dtype)}) for c in chunks]
        raw = {k: np.concatenate([np.asarray(o[k]) for o in outs], 0) for k in outs[0]}
        m = self.cfg.model
        return layout_to_network_outputs(raw, self.layout, strides=list(m.strides), exp_on_reg=m.exp_on_reg,
                                         imgsz=self.cfg.imgsz)


class TFLiteRunner:
    """A ``.tflite`` as ``images -> network outputs dict`` (one interpreter, ``threads`` threads)."""

    kind = "tflite"

    def __init__(self, path, cfg, threads=None):
        from rtmdet_keras.tflite_runtime import TFLiteDetector, TFLiteModelError

        try:
            self.detector = TFLiteDetector(path, num_threads=threads, cfg=cfg)
        except TFLiteModelError as e:
            raise ModelLoadError(str(e)) from None
        self.cfg = cfg

    def __call__(self, images):
        return self.detector(images, self.cfg)


def load_model_runner(cfg, path, threads: Optional[int] = None):
    """Any model form -> a callable ``images uint8 [B, H, W, 3] (letterboxed) -> network outputs dict``
    with a ``kind`` attribute; Keras runners also carry ``network``."""
    kind = model_kind(path)
    if kind == "tflite":
        return TFLiteRunner(path, cfg, threads)
    if kind == "saved_model":
        return SavedModelRunner(path, cfg)
    return KerasRunner(load_network(cfg, path))


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def make_runner_predictor(runner: Callable, cfg, batch_size: int = 16):
    """``predict(dataset) -> Detections`` for any runner, exactly as training's
    :func:`~rtmdet_keras.training.detector.make_dataset_predictor` does for a Keras network."""
    import tensorflow as tf

    from rtmdet_keras.postprocess import decode_and_nms, detections_for_dataset

    @tf.function(reduce_retracing=True, autograph=False)  # plain tensor code: nothing to convert
    def nms(outputs):
        return decode_and_nms(outputs, cfg)

    def step(images):
        outputs = runner(np.asarray(images))
        return nms({k: tf.constant(v) for k, v in outputs.items()})

    return lambda dataset: detections_for_dataset(step, dataset, cfg, batch_size)


def evaluate(cfg, model_path, batch_size: int = 16, threads: Optional[int] = None, dataset=None,
             print_fn=print, score_thr: Optional[float] = None, plots_dir=None):
    """COCO bbox evaluation of ``model_path`` (``.keras``, ``.ckpt.npz``, SavedModel or ``.tflite``) on
    ``dataset`` (default: the config's validation split). Prints pycocotools' 12-line summary, the
    per-class AP table and a per-class table of TP / FP / FN, precision, recall and F1 at
    ``score_thr`` (default: the F1-optimal threshold over all classes; see
    :mod:`rtmdet_keras.operating_point`). With ``plots_dir``, writes ``pr_curve.png`` and
    ``confusion_matrix.png`` there. Returns the :class:`~rtmdet_keras.evaluation.CocoResult`, its
    ``operating_point`` and ``plots`` (name -> path) filled in."""
    from rtmdet_keras.evaluation import evaluate_detections
    from rtmdet_keras.operating_point import operating_point

    if dataset is None:
        from rtmdet_keras.data import load_split

        dataset = load_split(cfg, "val")
    if len(dataset.class_names) != int(cfg.num_classes):
        raise ModelLoadError(f"{dataset.source}: the validation data has {len(dataset.class_names)} classes, the "
                             f"config num_classes {cfg.num_classes}")
    runner = load_model_runner(cfg, model_path, threads)
    if runner.kind == "keras":
        from rtmdet_keras.training.detector import make_dataset_predictor

        predict = make_dataset_predictor(runner.network, cfg, batch_size)
    else:
        predict = make_runner_predictor(runner, cfg, batch_size)
    start = time.perf_counter()
    detections = predict(dataset)
    seconds = time.perf_counter() - start
    result = evaluate_detections(dataset, detections)
    print_fn(f"{model_path} ({runner.kind}) on {len(dataset)} images of {dataset.source} at "
             f"{cfg.imgsz[0]}x{cfg.imgsz[1]}: {seconds:.1f} s ({seconds / max(len(dataset), 1) * 1000:.1f} ms/image)")
    print_fn(result.report().rstrip())
    result.operating_point = operating_point(dataset, detections, score_thr)
    print_fn(result.operating_point.table().rstrip())
    if plots_dir is not None:
        from rtmdet_keras.evaluation_plots import write_evaluation_plots

        ap50 = {r["class"]: r["ap50"] for r in result.per_class}
        result.plots = write_evaluation_plots(result.operating_point, plots_dir, ap50)
        print_fn("wrote " + ", ".join(str(p) for p in result.plots.values()))
    return result


def default_plots_dir(model_path, json_out=None) -> Path:
    """Where the command writes its plots when no ``--plots-dir`` is given: beside ``--json`` when
    there is one, else ``<model name>_eval/`` beside the model, so evaluating the float and the int8
    model of one work dir keeps both sets of pictures."""
    if json_out:
        return Path(json_out).resolve().parent
    model_path = Path(model_path)
    stem = model_path.name
    for suffix in (CHECKPOINT_SUFFIX,) + KERAS_SUFFIXES + (".tflite",):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    return model_path.resolve().parent / f"{stem}_eval"


@click.command(cls=VariadicCfgCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, metavar="[CONFIG] MODEL")
@config_options()
@click.option("--tflite", default=None, help="A .tflite model (float32, float16 or int8).")
@click.option("--checkpoint", default=None, help="A .keras model, epoch_N.ckpt.npz, SavedModel folder, or an "
              "mmdetection/SSCMA .pth or its converted .npz.")
@click.option("--batch", "batch_size", type=int, default=16, show_default=True, help="Images per batch.")
@click.option("--threads", type=int, default=None, help="Interpreter / TensorFlow threads.")
@click.option("--json", "json_out", default=None,
              help="Also write the metrics, the per-class precision / recall / F1 at the score threshold, the "
                   "threshold and the confusion matrix to this JSON file.")
@click.option("--score-thr", type=float, default=None,
              help="Score threshold for the precision / recall table and the confusion matrix "
                   "[default: the F1-optimal one over all classes, which is printed].")
@click.option("--plots-dir", default=None,
              help="Folder for pr_curve.png and confusion_matrix.png [default: the --json file's folder, "
                   "else MODEL_NAME_eval/ beside the model].")
@click.option("--no-plots", is_flag=True, help="Write no pictures (the tables are still printed).")
def evaluate_command(args, config, cfg_options, tflite, checkpoint, batch_size, threads, json_out, score_thr,
                     plots_dir, no_plots):
    """COCO bbox metrics of a .keras, epoch_N.ckpt.npz, SavedModel or .tflite on the validation split,
    then precision, recall and F1 per class at one score threshold (IoU 0.5), pr_curve.png and
    confusion_matrix.png.

    \b
    python -m rtmdet_keras.evaluate configs/nano.yaml work_dirs/nano/nano_int8.tflite
    rtmdet evaluate --config nano --checkpoint work_dirs/nano/best_coco_bbox_mAP.keras --batch 32
    rtmdet evaluate work_dirs/nano/nano_int8.tflite --score-thr 0.4 --json eval/int8.json

    The default threshold is the one with the best F1 over all classes (summed TP, FP, FN); set
    --score-thr to the threshold the device will use to see its precision and recall.
    """
    if batch_size < 1:
        raise click.BadParameter("must be at least 1", param_hint="--batch")
    if score_thr is not None and not 0.0 <= score_thr <= 1.0:
        raise click.BadParameter(f"{score_thr} is not a score: give a value from 0 to 1", param_hint="--score-thr")
    if no_plots and plots_dir:
        raise click.UsageError("--plots-dir and --no-plots contradict each other; give one")
    if not no_plots:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:  # say so before minutes of evaluation
            raise click.ClickException("the plots need matplotlib: pip install matplotlib, or add --no-plots")
    if threads is not None:
        if threads < 1:
            raise click.BadParameter("must be at least 1", param_hint="--threads")
        _set_tf_threads(threads)
    cfg, model_path = command_config_and_model(args, config, cfg_options, checkpoint=checkpoint, tflite=tflite)
    from rtmdet_keras.data.records import DatasetError

    if not no_plots and plots_dir is None:
        plots_dir = default_plots_dir(model_path, json_out)
    # Create the output folders now: an unwritable one is one line before the evaluation, not a
    # traceback after it.
    for folder, what in ((None if no_plots else plots_dir, "--plots-dir"),
                         (Path(json_out).parent if json_out else None, "--json")):
        if folder is not None:
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise click.BadParameter(f"cannot create the folder {folder}: {e.strerror or e}", param_hint=what)
    try:
        result = evaluate(cfg, model_path, batch_size=batch_size, threads=threads, print_fn=click.echo,
                          score_thr=score_thr, plots_dir=None if no_plots else plots_dir)
    except (ModelLoadError, DatasetError) as e:
        raise click.ClickException(str(e)) from None
    if json_out:
        Path(json_out).write_text(json.dumps({
            "model": str(model_path), "metrics": result.metrics, "per_class": result.per_class,
            "operating_point": result.operating_point.to_json(),
            "plots": {k: str(v) for k, v in result.plots.items()},
        }, indent=2) + "\n")


def _set_tf_threads(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    except RuntimeError:  # TensorFlow already started; the setting only applies before that
        pass


if __name__ == "__main__":
    run_standalone(evaluate_command, "python -m rtmdet_keras.evaluate")
