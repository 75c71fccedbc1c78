"""TensorFlow's C++ start-up lines: dropped from the commands' stderr, everything else passed on."""

import os
import subprocess
import sys
from pathlib import Path

from rtmdet_keras.tensorflow_startup import filter_startup_lines, forward_filtered, startup_lines_filtered

REPO = Path(__file__).resolve().parent.parent

# As TensorFlow 2.21 prints them on a CPU machine without a CUDA driver (the library loads twice, so some repeat).
STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796230860.185402   24488 port.cc:153] oneDNN custom operations are on. You may see slightly \
different numerical results due to floating-point round-off errors from different computation orders. To turn \
them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796230860.185871   24488 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will \
not be used.
I0000 00:00:1796230860.280430   24488 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use \
available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 AVX_VNNI FMA, in other operations, \
rebuild TensorFlow with the appropriate compiler flags.
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
E0000 00:00:1796230864.726222   24488 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed \
call to cuInit: UNKNOWN ERROR (303)
"""
CUINIT = STARTUP.splitlines(keepends=True)[-1]

# What must pass: other absl lines (also from the same source files), Python warnings and errors, plain text.
OTHER = """\
W0000 00:00:1796230861.000001   24488 port.cc:99] something else port.cc says
E0000 00:00:1796230861.000002   24488 cuda_dnn.cc:8310] Could not load library libcudnn_ops.so.9
F0000 00:00:1796230861.000003   24488 device_factory.cc:12] Check failed: device registered twice
/venv/lib/python3.11/site-packages/keras/src/export.py:12: UserWarning: something to know
Traceback (most recent call last):
ImportError: libcuda.so.1: cannot open shared object file
Error: data_root 'datasets/mask' does not exist. Set data_root=... to the data set's folder.
To enable the following instructions, read the manual.
"""


def test_start_up_lines_are_dropped_and_everything_else_kept_in_order():
    startup, other = STARTUP.splitlines(keepends=True), OTHER.splitlines(keepends=True)
    mixed = "".join(a + b for a, b in zip(other, startup)) + "".join(other[len(startup):])
    assert filter_startup_lines(STARTUP) == ""
    assert filter_startup_lines(mixed) == OTHER


def test_failed_cuinit_shows_where_a_cuda_driver_was_found():
    # Without "Could not find cuda drivers" first, the machine has a driver and cuInit failing is a real fault.
    assert filter_startup_lines(CUINIT) == CUINIT
    assert filter_startup_lines(STARTUP.replace("Could not find cuda drivers", "Found cuda drivers")).endswith(
        "Found cuda drivers on your machine, GPU will not be used.\n" + CUINIT)


def test_forwarding_keeps_bytes_and_an_unfinished_last_line():
    data = (STARTUP + "caf\xe9 \u2713\n").encode() + b"\xff\xfe not UTF-8\n" + b"Fatal Python error: Aborted"
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    os.write(src_w, data)
    os.close(src_w)
    forward_filtered(src_r, dst_w)
    os.close(src_r)
    os.close(dst_w)
    with os.fdopen(dst_r, "rb") as f:
        assert f.read() == "caf\xe9 \u2713\n".encode() + b"\xff\xfe not UTF-8\n" + b"Fatal Python error: Aborted"


def test_filter_window_on_this_process_fd2(capfd):
    startup = STARTUP.splitlines(keepends=True)
    with startup_lines_filtered():
        os.write(2, "".join(startup[:3]).encode())  # as C++ does: to the file descriptor, not sys.stderr
        os.write(2, b"real error\n")
        os.write(2, "".join(startup[3:]).encode() + b"no newline")
    os.write(2, b" after\n")
    assert capfd.readouterr().err == "real error\nno newline after\n"


def _run(args, tmp_path, **env):
    env = dict(os.environ, PYTHONPATH=str(REPO), **env)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("RTMDET_VERBOSE", None)
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def test_commands_start_quietly_and_verbose_shows_the_lines(tmp_path):
    # A command that imports TensorFlow, then fails on its data: the error must come through, the start-up not.
    options = ["--config", "nano", "--cfg-options", f"data_root={tmp_path / 'missing'}"]
    error = f"Error: data_root '{tmp_path / 'missing'}' does not exist"
    quiet = _run(["-m", "rtmdet_keras.train", *options], tmp_path)
    assert quiet.returncode == 1 and error in quiet.stderr
    assert filter_startup_lines(quiet.stderr) == quiet.stderr
    assert "absl" not in quiet.stderr and "oneDNN" not in quiet.stderr and "cuInit" not in quiet.stderr
    verbose = _run(["-m", "rtmdet_keras.cli", "--verbose", "train", *options], tmp_path)
    assert verbose.returncode == 1 and error in verbose.stderr
    assert "WARNING: All log messages before absl::InitializeLog() is called" in verbose.stderr
    assert filter_startup_lines(verbose.stderr).strip() == quiet.stderr.strip()
