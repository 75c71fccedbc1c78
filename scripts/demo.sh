#!/usr/bin/env bash
# The main job, end to end, on the bundled demo data set: set up, generate the data, check it,
# train nano (COCO summary printed during training), export int8 TFLite, evaluate the .tflite
# and compare it with the float Keras model. Extra words are added to every --cfg-options
# (e.g. `bash scripts/demo.sh max_epochs=10` for a quick look).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$here/scripts/setup_env.sh")"
py="$venv/bin/python"
cd "$here"
data="$here/datasets/demo"
work="$here/work_dirs/nano"
[ -f "$data/train/_annotations.coco.json" ] || "$py" scripts/make_demo_dataset.py --out "$data"
opts=(data_root="$data/" num_classes=2 train_ann_file=train/_annotations.coco.json
      val_ann_file=valid/_annotations.coco.json train_img_prefix=train/ val_img_prefix=valid/
      imgsz='(192,192)' "$@")
train_opts=(max_epochs=50 "${opts[@]}")

echo "== 1/5 data check"
"$py" -m rtmdet_keras.data.check --config nano.yaml --cfg-options "${opts[@]}"
echo "== 2/5 train (checkpoints and TensorBoard logs in $work)"
"$py" -m rtmdet_keras.train --config nano.yaml --work-dir "$work" --exist-ok --cfg-options "${train_opts[@]}"
echo "== 3/5 export float32 and full-int8 TFLite"
"$py" -m rtmdet_keras.export configs/nano.yaml "$work/best_coco_bbox_mAP.keras" --float32 --int8 \
    --cfg-options "${opts[@]}"
echo "== 4/5 evaluate the int8 .tflite"
"$py" -m rtmdet_keras.evaluate configs/nano.yaml "$work/nano_int8.tflite" --cfg-options "${opts[@]}" \
    --json "$work/eval_int8.json" --plots-dir "$work/eval_int8"
echo "== 5/5 evaluate the float Keras model for comparison"
"$py" -m rtmdet_keras.evaluate configs/nano.yaml "$work/best_coco_bbox_mAP.keras" --cfg-options "${opts[@]}" \
    --json "$work/eval_float.json" --plots-dir "$work/eval_float"
"$py" - "$work" <<'PY'
import json, sys
from pathlib import Path
from rtmdet_keras.evaluation import format_comparison_table
work = Path(sys.argv[1])
rows = {name: json.loads((work / f"eval_{key}.json").read_text())["metrics"]
        for name, key in (("float Keras (EMA)", "float"), ("int8 TFLite (PTQ)", "int8"))}
print(format_comparison_table(rows))
PY
echo "Next, quantization-aware training (about as long again; float / PTQ / QAT table at the end):"
echo "  $py -m rtmdet_keras.qat configs/nano.yaml $work/best_coco_bbox_mAP.keras --cfg-options ${opts[*]} max_epochs=5"
