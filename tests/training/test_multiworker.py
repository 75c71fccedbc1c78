"""--strategy multiworker: the shard arithmetic (fast), and two worker processes on localhost ports
training a tiny network (slow; tests/training/multiworker_run.py is one worker)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rtmdet_keras.data.shard import worker_takes
from rtmdet_keras.training.distribute import WorkerRole, role_from_tf_config, shard_plan, stream_start

RUNNER = Path(__file__).with_name("multiworker_run.py")
# 23 of the demo set's 24 training images have boxes: 3 global batches of 8 per epoch, 9 steps in all.
OPTIONS = ["batch_size=8", "max_epochs=3", "stage2_num_epochs=1", "val_interval=3", "workers=1"]
STEPS_PER_EPOCH, EPOCHS = 3, 3


# ----------------------------------------------------------------------------------------------
# Arithmetic


def test_shard_plan_splits_the_global_batch():
    plan = shard_plan(32, workers=4, replicas_per_worker=2)
    assert (plan.per_worker, plan.per_replica) == (8, 4)
    # The step count is that of one machine with the global batch: ceil(1000 / 32) = 32 (31.25 rounded up).
    assert plan.steps_per_epoch(1000) == 32 == shard_plan(32).steps_per_epoch(1000)
    with pytest.raises(ValueError, match="batch_size 12 .* 8 replicas"):
        shard_plan(12, workers=4, replicas_per_worker=2)


def test_each_position_of_a_global_batch_belongs_to_exactly_one_worker():
    plan = shard_plan(12, workers=3)
    for k in range(36):
        owners = [w for w in range(3) if worker_takes(k, plan, w)]
        assert owners == [(k % 12) // 4]


def test_learning_rate_scales_with_the_global_batch():
    from rtmdet_keras.config import load_config
    from rtmdet_keras.training.schedule import scaled_lr

    # 4 workers x 16 = global batch 64: twice nano's base batch of 32, so twice its lr of 0.01.
    cfg = load_config("nano", ["batch_size=64"])
    assert scaled_lr(cfg) == pytest.approx(0.02)
    assert shard_plan(cfg.batch_size, workers=4).per_worker == 16


def test_stream_start_of_a_resumed_run():
    # 10 epochs, stage 2 from epoch 8, 5 steps each: resuming after 9 epochs, stage 1's stream is not
    # used again and stage 2's skips its first epoch.
    assert stream_start(9, 8, 5) == (40, 5)
    assert stream_start(3, 8, 5) == (15, 0)


def test_role_from_tf_config():
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    assert role_from_tf_config(json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})) == \
        WorkerRole(0, 3, True)
    assert role_from_tf_config(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})) == \
        WorkerRole(2, 3, False)
    assert role_from_tf_config("") == WorkerRole(0, 1, True)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        role_from_tf_config("{not json")


def test_worker_shards_are_the_halves_of_the_one_machine_batches(demo_config):
    """Two workers' first batches are the two halves of one machine's first batch (same samples, same
    augmentation), so the cluster trains on the same stream; a resumed stream continues it."""
    from rtmdet_keras.data import load_split
    from rtmdet_keras.data.pipeline import build_train_pipeline

    cfg = demo_config
    cfg.imgsz, cfg.batch_size, cfg.augment.cache_images = [64, 64], 8, True
    train_set = load_split(cfg, "train")
    plan = shard_plan(8, workers=2)

    def batches(n, **kwargs):
        it = iter(build_train_pipeline(train_set, cfg, **kwargs).dataset)
        return [next(it) for _ in range(n)]

    whole = batches(3)
    w0, w1 = batches(3, shard=(plan, 0)), batches(3, shard=(plan, 1))
    for b in range(3):
        images = np.asarray(whole[b][0])
        assert np.array_equal(np.asarray(w0[b][0]), images[:4])
        assert np.array_equal(np.asarray(w1[b][0]), images[4:])
        assert np.array_equal(np.asarray(w1[b][1]["boxes"]), np.asarray(whole[b][1]["boxes"])[4:])
    assert not np.array_equal(np.asarray(w0[0][0]), np.asarray(w1[0][0]))
    resumed = batches(1, shard=(plan, 1), start_step=2)
    assert np.array_equal(np.asarray(resumed[0][0]), np.asarray(w1[2][0]))


# ----------------------------------------------------------------------------------------------
# Two workers


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(root, work_dir, out_dir, tag, resume=False, pause=None):
    ports = ",".join(str(p) for p in _free_ports(2))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(RUNNER.parents[2])}
    procs = []
    for i in range(2):
        cmd = [sys.executable, str(RUNNER), "--index", str(i), "--ports", ports, "--data", str(root),
               "--work-dir", str(work_dir), "--out", str(out_dir / f"{tag}{i}.json")]
        if resume:
            cmd.append("--resume")
        if pause and i == 1:
            cmd += ["--pause-after-epoch", str(pause), "--pause-marker", str(out_dir / "paused")]
        log = open(out_dir / f"{tag}{i}.log", "w")
        procs.append(subprocess.Popen(cmd + ["--", *OPTIONS], stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def _finish(procs, out_dir, tag, timeout=600):
    for i, p in enumerate(procs):
        rc = p.wait(timeout=timeout)
        assert rc == 0, (out_dir / f"{tag}{i}.log").read_text()[-4000:]
    return [json.loads((out_dir / f"{tag}{i}.json").read_text()) for i in range(2)]


def _weights(out_dir, name):
    with np.load(out_dir / f"{name}.npz") as data:
        return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def killed_and_resumed(demo_dataset, tmp_path_factory):
    """Two workers train 3 epochs; worker 1 is killed after epoch 2, the job restarted with --resume.
    (Two launches in all: each launch of two workers costs a minute of tracing on 2 cores.)"""
    from rtmdet_keras.training.checkpoint import latest_checkpoint

    out = tmp_path_factory.mktemp("multiworker")
    work_dir = out / "run"
    procs = _start(demo_dataset, work_dir, out, "first", pause=2)
    deadline = time.monotonic() + 600
    while not (out / "paused").exists() or latest_checkpoint(work_dir) is None \
            or latest_checkpoint(work_dir).name != "epoch_2.ckpt.npz":
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            (out / "first0.log").read_text()[-3000:]
        time.sleep(0.2)
    # Worker 1 dies mid-run (after epoch 2 of 3); the chief then waits on it at its next all-reduce,
    # and the whole job is restarted, as a cluster scheduler does.
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    time.sleep(1)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    killed_with = latest_checkpoint(work_dir).name
    results = _finish(_start(demo_dataset, work_dir, out, "resumed", resume=True), out, "resumed")
    return out, work_dir, killed_with, results


@pytest.mark.slow
def test_two_workers_train_one_model(killed_and_resumed):
    from rtmdet_keras.training.checkpoint import latest_checkpoint, read_checkpoint_meta

    out, work_dir, _, (chief, other) = killed_and_resumed
    # Distinct shards: the workers' first batches differ.
    assert chief["first_batch"] != other["first_batch"]
    # The chief's checkpoint holds the global step count (3 epochs x 3 global batches).
    ckpt = latest_checkpoint(work_dir)
    assert ckpt.name == f"epoch_{EPOCHS}.ckpt.npz"
    assert read_checkpoint_meta(ckpt)["iterations"] == EPOCHS * STEPS_PER_EPOCH
    assert chief["steps"] == other["steps"] == EPOCHS * STEPS_PER_EPOCH
    # Only the chief wrote the run folder; the other worker's folder was a temporary one, removed.
    assert chief["work_dir"] == str(work_dir) and other["work_dir"] != str(work_dir)
    assert not Path(other["work_dir"]).exists()
    assert "worker 1" not in (work_dir / "train.log").read_text()
    assert not [p for p in work_dir.rglob("*") if "rtmdet_worker" in p.name or ".tmp" in p.name]
    # The chief's evaluation reached the other worker: the same best metric and epoch.
    assert chief["best_metric"] >= 0 and (other["best_metric"], other["best_epoch"]) == \
        (chief["best_metric"], chief["best_epoch"])
    # The same weights on both workers (BatchNorm statistics included).
    for a, b in zip(_weights(out, "resumed0"), _weights(out, "resumed1")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_killed_worker_resumes_without_lost_or_repeated_steps(killed_and_resumed):
    out, work_dir, killed_with, (chief, other) = killed_and_resumed
    assert killed_with == "epoch_2.ckpt.npz"
    log = (work_dir / "train.log").read_text()
    assert f"epoch 2, step {2 * STEPS_PER_EPOCH}" in log  # resumed where the checkpoint was
    assert "worker 1: resumed with the chief at epoch 2" in (out / "resumed1.log").read_text()
    # The resumed run trained the last epoch's steps only: 9 in all, none twice, none missing.
    assert chief["final_iterations"] == other["final_iterations"] == EPOCHS * STEPS_PER_EPOCH
    epochs = [int(line.split(",")[0]) for line in (work_dir / "results.csv").read_text().splitlines()[1:]]
    assert epochs == [1, 2, 3]
