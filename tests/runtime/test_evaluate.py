"""Evaluation of every model form: hand-built perfect predictions score 1.0 through the whole path
(letterbox, decode, NMS, mapping back), Keras / SavedModel / .tflite / .ckpt.npz of the same weights
agree, mismatched configs and arguments give messages, not tracebacks."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rtmdet_keras.config import load_config
from rtmdet_keras.commands.common import command_config_and_model
from rtmdet_keras.commands.evaluate import evaluate_command
from rtmdet_keras.postprocess import make_runner_predictor
from rtmdet_keras.runtime.evaluate import default_plots_dir, evaluate
from rtmdet_keras.runtime.loading import ModelLoadError, load_network, model_kind
from rtmdet_keras.runtime.runners import load_model_runner


class OracleRunner:
    """Returns, for each image of the data set in order, network outputs that decode exactly to its
    ground-truth boxes: each box (mapped into the letterbox) goes to the nearest free P3 prior with
    distances ``(px - x1, py - y1, x2 - px, y2 - py) / 8`` and logit +10 for its class, -10 elsewhere."""

    def __init__(self, dataset, cfg):
        self.records = list(dataset.records)
        self.cfg = cfg
        self.i = 0

    def __call__(self, images):
        h, w = self.cfg.imgsz
        c = self.cfg.num_classes
        out = {}
        for lv, s in (("p3", 8), ("p4", 16), ("p5", 32)):
            out[f"cls_{lv}"] = np.full((len(images), h // s, w // s, c), -10.0, np.float32)
            out[f"reg_{lv}"] = np.full((len(images), h // s, w // s, 4), 0.1, np.float32)
        for b in range(len(images)):
            r = self.records[self.i]
            self.i += 1
            scale = min(h / r.height, w / r.width)
            used = set()
            for box, label in zip(r.boxes, r.labels):
                x1, y1, x2, y2 = box * scale
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                cells = sorted(((cy / 8 - i) ** 2 + (cx / 8 - j) ** 2, i, j)
                               for i in range(h // 8) for j in range(w // 8) if (i, j) not in used)
                _, i, j = cells[0]
                used.add((i, j))
                px, py = j * 8.0, i * 8.0
                out["reg_p3"][b, i, j] = [(px - x1) / 8, (py - y1) / 8, (x2 - px) / 8, (y2 - py) / 8]
                out["cls_p3"][b, i, j, int(label)] = 10.0
        return out


def test_perfect_predictions_score_one_through_the_whole_path(demo_dataset):
    from rtmdet_keras.data import load_split
    from rtmdet_keras.evaluation import evaluate_detections

    cfg = load_config("nano", [f"data_root={demo_dataset}", "num_classes=2", "imgsz=192"])
    val = load_split(cfg, "val")
    assert sum(len(r.boxes) for r in val.records) > 0
    detections = make_runner_predictor(OracleRunner(val, cfg), cfg, batch_size=3)(val)
    for r in val.records:  # boxes came back in original-image pixels
        np.testing.assert_allclose(np.sort(detections.boxes[r.image_id], 0), np.sort(r.boxes, 0), atol=1e-2)
    result = evaluate_detections(val, detections)
    assert result.metrics["bbox_mAP"] == pytest.approx(1.0)


def test_model_kind(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    assert model_kind(tmp_path / "sm") == "saved_model"
    assert model_kind(tmp_path / "a.tflite") == "tflite"
    assert model_kind(tmp_path / "best_coco_bbox_mAP.keras") == "keras"
    assert model_kind(tmp_path / "epoch_3.ckpt.npz") == "checkpoint"
    with pytest.raises(ModelLoadError, match="unknown model type"):
        model_kind(tmp_path / "model.onnx")
    with pytest.raises(ModelLoadError, match="not a SavedModel"):
        model_kind(tmp_path)


def test_command_arguments(tmp_path):
    import click

    model = tmp_path / "nano_int8.tflite"
    model.write_bytes(b"x")
    cfg, path = command_config_and_model(["nano", str(model)], None, ["num_classes=3"])
    assert path == model and cfg.num_classes == 3 and cfg.name == "nano"
    cfg, _ = command_config_and_model([], "tiny", [], tflite=str(model), extra_overrides=["imgsz=[96,128]"])
    assert cfg.name == "tiny" and cfg.imgsz == [96, 128]
    with pytest.raises(click.UsageError, match="give a config"):
        command_config_and_model([str(model)], None, [])
    load_config("nano", ["num_classes=3", "class_names=[a, b, c]"]).save(tmp_path / "config.yaml")
    cfg, _ = command_config_and_model([str(model)], None, [])  # the training run's config.yaml
    assert cfg.num_classes == 3 and cfg.class_names == ["a", "b", "c"]
    with pytest.raises(click.ClickException, match="no such file"):
        command_config_and_model(["nano", str(tmp_path / "missing.keras")], None, [])
    with pytest.raises(click.UsageError, match="two configs"):
        command_config_and_model(["nano", str(model)], "tiny", [])


@pytest.fixture(scope="module")
def nano_forms(tmp_path_factory, demo_dataset):
    """The real nano network at 64 px (random weights, BN statistics randomised) as .keras, SavedModel,
    float32 and int8 .tflite."""
    models = pytest.importorskip("rtmdet_keras.models")
    from rtmdet_keras.export.convert import export_tflite

    import keras

    out = tmp_path_factory.mktemp("nano_forms")
    cfg = load_config("nano", [f"data_root={demo_dataset}", "num_classes=2", "imgsz=64"])
    # Seeded: an untrained network's scores are near ties, and which tests ran before must not decide
    # whether TFLite's rounding reorders them.
    keras.utils.set_random_seed(0)
    network = models.build_model(cfg)
    rng = np.random.default_rng(0)
    for layer in network.layers:
        if layer.__class__.__name__.endswith("BatchNormalization"):  # FusedBatchNormalization too
            n = layer.gamma.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
    network.save(out / "best_coco_bbox_mAP.keras")
    cfg.export.calib_images = 8  # training images of the demo set, letterboxed
    paths = export_tflite(network, cfg, out, formats=("float32", "int8"), saved_model=True, check=False,
                          print_fn=lambda *a: None)
    return cfg, network, out, paths


@pytest.mark.slow
def test_every_form_of_the_same_weights_scores_alike(nano_forms):
    cfg, network, out, paths = nano_forms
    quiet = lambda *a: None  # noqa: E731
    keras_res = evaluate(cfg, out / "best_coco_bbox_mAP.keras", batch_size=4, print_fn=quiet)
    f32 = evaluate(cfg, paths["float32"], batch_size=4, threads=2, print_fn=quiet)
    sm = evaluate(cfg, paths["saved_model"], batch_size=4, print_fn=quiet)
    int8 = evaluate(cfg, paths["int8"], batch_size=4, threads=2, print_fn=quiet)
    for key in ("bbox_mAP", "bbox_mAP_50", "bbox_AR_100"):
        assert f32.metrics[key] == pytest.approx(keras_res.metrics[key], abs=1e-4), key
        assert sm.metrics[key] == pytest.approx(keras_res.metrics[key], abs=1e-4), key
        assert int8.metrics[key] == pytest.approx(keras_res.metrics[key], abs=0.02), key
    assert [r["dets"] for r in f32.per_class] == [r["dets"] for r in keras_res.per_class]


@pytest.mark.slow
def test_training_checkpoint_loads_its_ema_weights(nano_forms, tmp_path):
    import keras

    from rtmdet_keras.training.checkpoint import save_training_state
    from rtmdet_keras.training.detector import RTMDetDetector

    cfg, network, _, _ = nano_forms
    detector = RTMDetDetector(network, cfg)
    floats = [v for v in detector.weights if v.dtype == "float32"]
    ema_weights = [np.asarray(v) * 0.5 for v in floats]

    class FakeEMA:
        def get_state(self):
            return {"updates": 7, "weights": ema_weights}

    save_training_state(tmp_path / "epoch_3.ckpt.npz", detector, keras.optimizers.AdamW(), FakeEMA(), {"epoch": 3})
    loaded = load_network(cfg, tmp_path / "epoch_3.ckpt.npz")
    got = {v.path: np.asarray(v) for v in loaded.weights}
    for v, w in zip(floats, ema_weights):
        np.testing.assert_array_equal(got[v.path], w)
    with pytest.raises(ModelLoadError, match="does not match the config .*num_classes 3"):
        load_network(load_config("nano", ["num_classes=3", "imgsz=64"]), tmp_path / "epoch_3.ckpt.npz")


@pytest.mark.slow
def test_keras_checkpoint_with_another_config_is_refused(nano_forms):
    cfg, _, out, _ = nano_forms
    keras_path = out / "best_coco_bbox_mAP.keras"
    with pytest.raises(ModelLoadError, match="predicts 2 classes .* num_classes 3"):
        load_network(load_config("nano", ["num_classes=3", "imgsz=64"]), keras_path)
    with pytest.raises(ModelLoadError, match=r"64x64 .* imgsz \[96, 96\]"):
        load_network(load_config("nano", ["num_classes=2", "imgsz=96"]), keras_path)
    with pytest.raises(ModelLoadError, match="does not match the config .*preset nano_relu"):
        load_network(load_config("nano_relu", ["num_classes=2", "imgsz=64"]), keras_path)
    with pytest.raises(ModelLoadError, match="neck_in_channels"):  # a config that builds nothing
        load_network(load_config("nano", ["num_classes=2", "imgsz=64", "model.widen_factor=0.5"]), keras_path)
    (out / "broken.keras").write_bytes(keras_path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="broken.keras: cannot load"):
        load_network(cfg, out / "broken.keras")


@pytest.mark.slow
def test_evaluate_command(nano_forms, demo_dataset):
    cfg, _, out, paths = nano_forms
    args = ["nano", str(paths["int8"]), "--cfg-options", f"data_root={demo_dataset}", "num_classes=2", "imgsz=64",
            "--batch", "4", "--threads", "2"]
    r = CliRunner().invoke(evaluate_command, args)
    assert r.exit_code == 0, r.output
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in r.output and "AP50:95" in r.output
    bad = ["nano", str(paths["int8"]), "--cfg-options", f"data_root={demo_dataset}", "num_classes=2", "imgsz=96"]
    r = CliRunner().invoke(evaluate_command, bad)
    assert r.exit_code != 0 and "imgsz='(64,64)'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(evaluate_command, ["nano", str(paths["int8"]), "--cfg-options", "data_root=/no/such/data",
                                              "num_classes=2", "imgsz=64"])
    assert r.exit_code != 0 and "/no/such/data" in r.output and "Traceback" not in r.output, r.output


def test_default_plots_dir(tmp_path):
    assert default_plots_dir(tmp_path / "nano_int8.tflite") == tmp_path.resolve() / "nano_int8_eval"
    assert default_plots_dir(tmp_path / "epoch_3.ckpt.npz") == tmp_path.resolve() / "epoch_3_eval"
    assert default_plots_dir(tmp_path / "m.keras", json_out=tmp_path / "out" / "m.json") == (tmp_path / "out").resolve()


@pytest.mark.slow
def test_evaluate_writes_plots_and_precision_recall_at_the_threshold(nano_forms, demo_dataset, tmp_path):
    """The command on the int8 .tflite and the function on the .keras: PNGs of the promised size, and
    confusion-matrix counts that are stock pycocotools' matches at IoU 0.5 on the same detections."""
    from PIL import Image

    from rtmdet_keras.data import load_split
    from rtmdet_keras.evaluation_plots import PR_FIGSIZE, confusion_matrix_figsize, figure_pixels
    from tests.test_operating_point import cocoeval_counts

    cfg, _, out, paths = nano_forms
    sizes = {"pr_curve": figure_pixels(PR_FIGSIZE), "confusion_matrix": figure_pixels(confusion_matrix_figsize(2))}
    report_path = tmp_path / "int8" / "eval.json"
    args = ["nano", str(paths["int8"]), "--cfg-options", f"data_root={demo_dataset}", "num_classes=2", "imgsz=64",
            "--batch", "4", "--threads", "2", "--json", str(report_path)]
    r = CliRunner().invoke(evaluate_command, args)
    assert r.exit_code == 0, r.output
    point = json.loads(report_path.read_text())["operating_point"]
    thr = point["score_thr"]
    assert point["chosen_by"].startswith("F1-optimal") and f"At score >= {thr:.4g}" in r.output
    for name, size in sizes.items():
        path = report_path.parent / f"{name}.png"  # beside the JSON
        assert json.loads(report_path.read_text())["plots"][name] == str(path.resolve())
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == size

    val = load_split(cfg, "val")
    detections = make_runner_predictor(load_model_runner(cfg, paths["int8"], threads=2), cfg, batch_size=4)(val)
    counts = cocoeval_counts(val, detections, thr)
    m = np.array(point["confusion_matrix"]["counts"])
    assert m.shape == (3, 3) and point["confusion_matrix"]["labels"] == ["circle", "square", "background"]
    assert [int(m[k, k]) for k in range(2)] == [tp for tp, _, _ in counts] == [c["tp"] for c in point["per_class"]]
    assert [int(m[k].sum()) for k in range(2)] == [n for _, n, _ in counts] == [c["dets"] for c in point["per_class"]]
    assert [int(m[:, k].sum()) for k in range(2)] == [g for _, _, g in counts]
    assert m[:, :2].sum() == sum(len(rec.boxes) for rec in val.records) > 0
    assert point["all"]["tp"] == sum(tp for tp, _, _ in counts) and m[2, 2] == 0
    assert point["all"]["tp"] > 0  # the seeded random network hits a few boxes: counts worth comparing
    for c, (tp, n, g) in zip(point["per_class"], counts):
        assert c["precision"] == pytest.approx(tp / n if n else 0.0)
        assert c["recall"] == pytest.approx(tp / g if g else 0.0)

    # The Keras path, threshold given: at 0 every detection counts, so the rows hold COCO's per-class
    # detection counts and the columns its ground-truth counts.
    res = evaluate(cfg, out / "best_coco_bbox_mAP.keras", batch_size=4, print_fn=lambda *a: None, score_thr=0.0,
                   plots_dir=tmp_path / "keras")
    kp = res.operating_point
    assert kp.chosen_by == "given" and kp.score_thr == 0.0
    assert [int(kp.confusion[k].sum()) for k in range(2)] == [c["dets"] for c in res.per_class]
    assert [int(kp.confusion[:, k].sum()) for k in range(2)] == [c["gts"] for c in res.per_class]
    for name, size in sizes.items():
        assert res.plots[name] == tmp_path / "keras" / f"{name}.png"
        with Image.open(res.plots[name]) as im:
            assert im.size == size


def test_evaluate_command_refuses_bad_plot_options(tmp_path):
    model = tmp_path / "nano_int8.tflite"
    model.write_bytes(b"x")
    r = CliRunner().invoke(evaluate_command, ["nano", str(model), "--score-thr", "1.5"])
    assert r.exit_code != 0 and "--score-thr" in r.output and "from 0 to 1" in r.output
    r = CliRunner().invoke(evaluate_command, ["nano", str(model), "--no-plots", "--plots-dir", str(tmp_path)])
    assert r.exit_code != 0 and "contradict" in r.output
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    r = CliRunner().invoke(evaluate_command, ["nano", str(model), "--plots-dir", str(blocker / "sub")])
    assert r.exit_code != 0 and "--plots-dir" in r.output and str(blocker / "sub") in r.output
    assert "Traceback" not in r.output
