"""rtmdet_keras nano against Ultralytics YOLO11n, side by side on the same data, epochs, imgsz, batch and cores.

    python scripts/bench/vs_ultralytics.py --data datasets/aerial --num-classes 1 --epochs 30 --imgsz 320
    python scripts/benchmark.py vs_ultralytics --data datasets/demo --epochs 30 --imgsz 192 --opt lr=0.003

Both detectors train from scratch (YOLO11n from ``yolo11n.yaml``, nano from ``configs/nano.yaml``), are
exported to int8 TFLite and evaluated by the same COCO evaluation (``rtmdet_keras.evaluation``, the
ground truth built from the same records), so only the detectors differ. The two runs go one after the
other, never at once. One table is printed and the figures are written to ``<out>/results.json``.

Ultralytics is never a dependency of rtmdet_keras: it lives in a private virtual environment that this
script creates once (``~/.cache/rtmdet_keras/ultralytics-<version>``; CPU use only, though PyPI's torch
wheel brings its CUDA libraries along). Kept off the network with ``YOLO_OFFLINE=1`` and a font of
matplotlib's copied to ``Arial.ttf`` in ``YOLO_CONFIG_DIR``. Ultralytics uses one torch thread on a
2-core machine unless ``ultralytics.utils.torch_utils.NUM_THREADS`` is set: the driver sets it (and
``torch.set_num_threads``) to ``--threads``; TensorFlow gets the same number for its intra-op pool.

A YOLO result is cached in ``<out>/yolo/result.json`` per (data, epochs, imgsz, batch, threads), so an
ablation of rtmdet_keras settings (``--opt key=value``, ``--skip-yolo``) reuses it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ULTRALYTICS_VERSION = "8.4.190"
# LiteRT export of Ultralytics 8.4 converts with litert-torch and quantises with ai-edge-quantizer; they
# are installed up front because Ultralytics would otherwise pip-install them in the middle of a run.
ULTRALYTICS_PACKAGES = [f"ultralytics=={ULTRALYTICS_VERSION}", "litert-torch>=0.10.0", "ai-edge-litert>=2.3.0",
                        "ai-edge-quantizer>=0.10.0"]

# Start of every driver run in the private venv: its arguments (JSON in argv[1]) and torch set to
# ``threads`` threads, Ultralytics' own thread count included.
YOLO_PREAMBLE = r'''
import json, os, sys, time
T_START = time.monotonic()  # train wall counts from here, imports included, as nano's counts its process
from pathlib import Path
args = json.loads(sys.argv[1])
threads = int(args["threads"])
import torch
torch.set_num_threads(threads)
import ultralytics.utils as uu
import ultralytics.utils.torch_utils as tu
uu.NUM_THREADS = tu.NUM_THREADS = threads
from ultralytics import YOLO
'''

YOLO_DRIVER = YOLO_PREAMBLE + r'''
out = Path(args["out"])

def predict(model, images, **kw):
    rows = []
    for path in images:
        r = model.predict(path, imgsz=args["imgsz"], conf=0.001, iou=0.65, max_det=300, device="cpu",
                          verbose=False, **kw)[0]
        b = r.boxes
        rows.append({"file": path, "boxes": b.xyxy.cpu().numpy().tolist(), "scores": b.conf.cpu().numpy().tolist(),
                     "labels": b.cls.cpu().numpy().astype(int).tolist()})
    return rows

result = {}
if args.get("weights"):
    best = Path(args["weights"])
else:
    model = YOLO("yolo11n.yaml")
    model.train(data=args["data_yaml"], epochs=args["epochs"], imgsz=args["imgsz"], batch=args["batch"],
                device="cpu", workers=args["workers"], project=str(out), name="train", exist_ok=True,
                pretrained=False, amp=False, plots=False, seed=args["seed"], verbose=False)
    result["train_seconds"] = time.monotonic() - T_START
    best = out / "train" / "weights" / "best.pt"
model = YOLO(str(best))
result["float"] = predict(model, args["val_images"])
start = time.monotonic()
exported = model.export(format="litert", int8=True, data=args["data_yaml"], imgsz=args["imgsz"], batch=1)
result["export_seconds"] = time.monotonic() - start
result["int8_file"] = str(exported)
result["int8"] = predict(YOLO(str(exported), task="detect"), args["val_images"])
(out / "predictions.json").write_text(json.dumps(result))
'''


def ultralytics_python() -> Path:
    """The private venv's python, created on first use."""
    venv = Path(os.environ.get("RTMDET_ULTRALYTICS_VENV",
                               Path.home() / ".cache" / "rtmdet_keras" / f"ultralytics-{ULTRALYTICS_VERSION}"))
    py = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        print(f"setting up {venv} for the comparison (ultralytics + torch, a few minutes, ~6 GB)...", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *ULTRALYTICS_PACKAGES], check=True)
        (venv / ".complete").touch()
    return py


def ultralytics_env(py: Path, config_dir: Path, threads: int) -> dict:
    """Environment that keeps Ultralytics off the network: offline flag and a local Arial.ttf."""
    config_dir.mkdir(parents=True, exist_ok=True)
    font = config_dir / "Arial.ttf"
    if not font.exists():
        found = subprocess.run([str(py), "-c", "import matplotlib, pathlib; print(pathlib.Path(matplotlib.__file__)"
                                ".parent / 'mpl-data/fonts/ttf/DejaVuSans.ttf')"],
                               check=True, capture_output=True, text=True).stdout.strip()
        shutil.copy(found, font)
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(config_dir), OMP_NUM_THREADS=str(threads))
    env.pop("PYTHONPATH", None)
    return env


def base_overrides(args) -> list:
    data = Path(args.data).resolve()
    return [f"data_root={data}/", f"num_classes={args.num_classes}", "train_ann_file=train/_annotations.coco.json",
            "val_ann_file=valid/_annotations.coco.json", "train_img_prefix=train/", "val_img_prefix=valid/",
            f"imgsz=({args.imgsz},{args.imgsz})", f"batch_size={args.batch}"]


def write_yolo_copy(train_set, val_set, out: Path) -> Path:
    """Ultralytics' layout of the same records: symlinked images, one label file each, data.yaml."""
    for split, ds in (("train", train_set), ("val", val_set)):
        img_dir, lab_dir = out / "images" / split, out / "labels" / split
        shutil.rmtree(img_dir, ignore_errors=True)
        shutil.rmtree(lab_dir, ignore_errors=True)
        img_dir.mkdir(parents=True)
        lab_dir.mkdir(parents=True)
        for r in ds.records:
            src = Path(r.path)
            (img_dir / src.name).symlink_to(src.resolve())
            lines = []
            for (x1, y1, x2, y2), label in zip(r.boxes, r.labels):
                cx, cy = (x1 + x2) / 2 / r.width, (y1 + y2) / 2 / r.height
                lines.append(f"{int(label)} {cx:.6f} {cy:.6f} {(x2 - x1) / r.width:.6f} {(y2 - y1) / r.height:.6f}")
            (lab_dir / (src.stem + ".txt")).write_text("\n".join(lines) + ("\n" if lines else ""))
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(train_set.class_names))
    yaml_path = out / "data.yaml"
    yaml_path.write_text(f"path: {out}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml_path


def coco_of_predictions(val_set, rows):
    from rtmdet_keras.evaluation import Detections, evaluate_detections

    ids = {str(Path(r.path).resolve()): r.image_id for r in val_set.records}
    dets = Detections()
    for row in rows:
        dets.add(ids[str(Path(row["file"]).resolve())], row["boxes"], row["scores"], row["labels"])
    return evaluate_detections(val_set, dets).metrics


def run_yolo(args, train_set, val_set, out: Path) -> dict:
    key = {"data": str(Path(args.data).resolve()), "epochs": args.epochs, "imgsz": args.imgsz,
           "batch": args.batch, "threads": args.threads, "workers": args.yolo_workers, "seed": args.seed,
           "version": ULTRALYTICS_VERSION}
    cached = out / "result.json"
    if cached.exists() and not args.rerun_yolo:
        result = json.loads(cached.read_text())
        if result.get("key") == key:
            print(f"YOLO11n: reusing {cached}")
            return result
    py = ultralytics_python()
    out.mkdir(parents=True, exist_ok=True)
    data_yaml = write_yolo_copy(train_set, val_set, out / "data")
    driver_args = {**key, "out": str(out), "data_yaml": str(data_yaml),
                   "val_images": [str(Path(r.path).resolve()) for r in val_set.records]}
    start = time.monotonic()
    subprocess.run([str(py), "-c", YOLO_DRIVER, json.dumps(driver_args)], check=True, cwd=out,
                   env=ultralytics_env(py, out / "config", args.threads))
    wall = time.monotonic() - start
    pred = json.loads((out / "predictions.json").read_text())
    result = {"key": key, "train_seconds": pred["train_seconds"], "export_seconds": pred["export_seconds"],
              "float": coco_of_predictions(val_set, pred["float"]), "int8": coco_of_predictions(val_set, pred["int8"]),
              "wall_seconds": wall, "int8_file": pred["int8_file"]}
    cached.write_text(json.dumps(result, indent=2))
    return result


def run_rtmdet(args, out: Path) -> dict:
    py = sys.executable
    opts = base_overrides(args) + [f"max_epochs={args.epochs}", f"seed={args.seed}"] + list(args.opt)
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(args.threads), TF_NUM_INTEROP_THREADS=str(args.threads))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log = (out / "log.txt").open("w")

    def call(*cmd):
        print("  $", " ".join(cmd[2:]), flush=True)
        subprocess.run([py, "-m", *cmd], check=True, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    start = time.monotonic()
    call("rtmdet_keras.train", "--config", args.config, "--work-dir", str(out), "--verbose", "2",
         "--cfg-options", *opts)
    train_seconds = time.monotonic() - start
    best = out / "best_coco_bbox_mAP.keras"
    start = time.monotonic()
    call("rtmdet_keras.export", args.config, str(best), "--int8", "--out-dir", str(out), "--cfg-options", *opts)
    export_seconds = time.monotonic() - start
    int8 = next(out.glob("*_int8.tflite"))
    metrics = {}
    for kind, model in (("float", best), ("int8", int8)):
        call("rtmdet_keras.evaluate", args.config, str(model), "--json", str(out / f"eval_{kind}.json"),
             "--cfg-options", *opts)
        metrics[kind] = json.loads((out / f"eval_{kind}.json").read_text())["metrics"]
    summary = json.loads((out / "train_summary.json").read_text())
    return {"train_seconds": train_seconds, "export_seconds": export_seconds, "float": metrics["float"],
            "int8": metrics["int8"], "summary": summary, "opts": list(args.opt)}


def table(rows: dict, epochs: int, num_train: int) -> str:
    lines = ["| run | AP50:95 | AP50 | int8 AP50:95 | int8 AP50 | train wall (s) | train images/s |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ips = epochs * num_train / r["train_seconds"]
        lines.append(f"| {name} | {r['float']['bbox_mAP']:.3f} | {r['float']['bbox_mAP_50']:.3f} | "
                     f"{r['int8']['bbox_mAP']:.3f} | {r['int8']['bbox_mAP_50']:.3f} | {r['train_seconds']:.0f} | "
                     f"{ips:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="data set root in Roboflow COCO layout (train/, valid/)")
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--config", default="nano.yaml")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--imgsz", type=int, default=192)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch / TensorFlow threads")
    p.add_argument("--yolo-workers", type=int, default=8, help="Ultralytics dataloader workers (its default 8; "
                   "it caps them at the core count)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opt", nargs="*", default=[], help="extra rtmdet_keras --cfg-options (key=value)")
    p.add_argument("--name", default=None, help="row name of the rtmdet_keras run (default: the options)")
    p.add_argument("--out", default=None, help="default work_dirs/vs_ultralytics/<data name>")
    p.add_argument("--skip-yolo", action="store_true", help="only rtmdet_keras (YOLO's cached row if any)")
    p.add_argument("--skip-rtmdet", action="store_true")
    p.add_argument("--rerun-yolo", action="store_true", help="ignore a cached YOLO result")
    args = p.parse_args(argv)

    from rtmdet_keras.config import load_config
    from rtmdet_keras.data import load_split

    cfg = load_config(args.config, base_overrides(args))
    train_set, val_set = load_split(cfg, "train"), load_split(cfg, "val")
    out = Path(args.out or ROOT / "work_dirs" / "vs_ultralytics" / Path(args.data).resolve().name).resolve()
    tag = f"e{args.epochs}_s{args.imgsz}_b{args.batch}" + (f"_seed{args.seed}" if args.seed else "")
    rows = {}
    yolo_dir = out / f"yolo11n_{tag}"
    if not args.skip_yolo:
        rows["YOLO11n"] = run_yolo(args, train_set, val_set, yolo_dir)
    elif (yolo_dir / "result.json").exists():
        rows["YOLO11n (cached)"] = json.loads((yolo_dir / "result.json").read_text())
    if not args.skip_rtmdet:
        name = args.name or ("nano " + " ".join(args.opt) if args.opt else "nano (defaults)")
        slug = "".join(c if c.isalnum() or c in "._=-" else "_" for c in name)[:80]
        run_dir = out / f"rtmdet_{tag}_{slug}"
        rows[name] = run_rtmdet(args, run_dir)
        (run_dir / "result.json").write_text(json.dumps(rows[name], indent=2))
    print(f"\n{Path(args.data).name}: {len(train_set)} train / {len(val_set)} val images, {args.epochs} epochs, "
          f"{args.imgsz} px, batch {args.batch}, {args.threads} threads")
    text = table(rows, args.epochs, len(train_set))
    print(text)
    with (out / "results.md").open("a") as f:
        f.write(f"\n{time.strftime('%Y-%m-%d %H:%M')} {tag} threads={args.threads}\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
