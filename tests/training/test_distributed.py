"""--strategy mirrored trains on two logical CPU devices (slow: runs in a subprocess because logical
devices must be configured before TensorFlow starts)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from rtmdet_keras.config import load_config
from rtmdet_keras.training.run import train
cfg = load_config("nano", [f"data_root={sys.argv[1]}", "num_classes=2", "imgsz=64", "batch_size=8",
                           "max_epochs=2", "stage2_num_epochs=1", "val_interval=1"])
out = train(cfg, work_dir=sys.argv[2], strategy="mirrored", verbose=0, print_fn=lambda *a: None)
import tensorflow as tf
print("RESULT", json.dumps({"steps": out["steps"], "replicas": tf.distribute.MirroredStrategy().num_replicas_in_sync,
                            "map": out["best_metric"]}))
"""


def test_mirrored_strategy_on_two_logical_cpus(demo_dataset, tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(demo_dataset), str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    result = json.loads(line.split(" ", 1)[1])
    assert result["replicas"] == 2
    assert result["steps"] == 6  # 24 images / global batch 8 = 3 steps per epoch, 2 epochs
    assert result["map"] >= 0.0
    assert (tmp_path / "best_coco_bbox_mAP.keras").exists()
