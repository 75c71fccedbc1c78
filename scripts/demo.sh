#!/usr/bin/env bash
# The main job, end to end, on the bundled demo data set: set up, generate the data, train nano,
# print COCO metrics, export int8 TFLite and evaluate it. Extra words are passed to training as
# --cfg-options (e.g. `bash scripts/demo.sh max_epochs=10`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$here/scripts/setup_env.sh")"
py="$venv/bin/python"
cd "$here"
data="$here/datasets/demo"
[ -f "$data/train/_annotations.coco.json" ] || "$py" scripts/make_demo_dataset.py --out "$data"
opts=(data_root="$data/" num_classes=2 train_ann_file=train/_annotations.coco.json
      val_ann_file=valid/_annotations.coco.json train_img_prefix=train/ val_img_prefix=valid/
      imgsz='(192,192)')
"$py" -m rtmdet_keras.data.check --config nano.yaml --cfg-options "${opts[@]}"
"$py" -m rtmdet_keras.models --config nano.yaml --cfg-options "${opts[@]}"
