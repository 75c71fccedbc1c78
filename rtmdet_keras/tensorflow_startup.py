"""TensorFlow's C++ start-up lines, kept out of the commands' output.

Importing TensorFlow and finding its devices writes these straight to file descriptor 2 from C++ (absl
logging), most of them whatever ``TF_CPP_MIN_LOG_LEVEL`` says::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796230860.185402   24488 port.cc:153] oneDNN custom operations are on. You may see ...
    I0000 00:00:1796230860.185871   24488 cudart_stub.cc:31] Could not find cuda drivers on your machine, ...
    I0000 00:00:1796230860.280430   24488 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...
    To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with ...
    E0000 00:00:1796230864.726222   24488 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ...

The commands (``python -m rtmdet_keras.X``, ``rtmdet X``) call :func:`import_tensorflow_quietly` before they
run. For that import alone, fd 2 becomes a pipe into a small filter process that drops exactly these lines
and passes every other byte on to the real stderr as it arrives. A process rather than a thread: should
TensorFlow abort during the import, the filter outlives it and still forwards the last words. The cuInit
error is dropped only after "Could not find cuda drivers" (no GPU driver: the error is expected); on a
machine with a driver it is a real fault and shows. ``RTMDET_VERBOSE=1`` (or ``rtmdet --verbose``) turns
the filter off and shows TensorFlow's C++ log lines as TensorFlow prints them.

Standard library only: the filter process runs this file as a script, without the package.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys

VERBOSE_ENV = "RTMDET_VERBOSE"

# absl's prefix: severity and month-day, time, thread id, "file:line]". Before absl is initialised the time
# reads "00:00:<seconds since 1970>", hence no fixed width.
_ABSL = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ (?P<file>[\w.]+):\d+\] (?P<message>.*)$")
# (source file, start of the message) of each start-up line; line numbers change between TensorFlow versions.
_STARTUP_MESSAGES = (
    ("port.cc", "oneDNN custom operations are on."),
    ("cudart_stub.cc", "Could not find cuda drivers on your machine"),
    ("cpu_feature_guard.cc", "This TensorFlow binary is optimized to use available CPU instructions"),
)
_NO_DRIVER = ("cudart_stub.cc", "Could not find cuda drivers on your machine")
_CUINIT = ("cuda_platform.cc", "failed call to cuInit")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_CPU_GUARD_CONTINUATION = re.compile(
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$")

# Set when this module, not the user, chose TF_CPP_MIN_LOG_LEVEL, so that verbose mode may take it back.
_log_level_set_here = False


def verbose_requested() -> bool:
    """Whether ``RTMDET_VERBOSE`` asks to see TensorFlow's start-up lines (``1``, ``true``, ``yes``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def hide_tensorflow_info_logs() -> None:
    """Set ``TF_CPP_MIN_LOG_LEVEL=2`` (errors only) unless the user has set it or asked for verbose output.

    It hides TensorFlow's C++ INFO and WARNING logs for the whole run (at start-up, ``cpu_feature_guard``);
    the other start-up lines ignore it, hence the filter.
    """
    global _log_level_set_here
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ and not verbose_requested():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        _log_level_set_here = True


def show_tensorflow_logs() -> None:
    """Verbose mode for the rest of this process (and its children): no filter, TensorFlow's own log level."""
    global _log_level_set_here
    os.environ[VERBOSE_ENV] = "1"
    if _log_level_set_here:
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        _log_level_set_here = False


class StartupLineFilter:
    """Decides line by line (text without the newline) what reaches the user; remembers whether the
    machine has a CUDA driver, which decides whether a failed cuInit is news."""

    def __init__(self):
        self.no_cuda_driver = False

    def keep(self, line: str) -> bool:
        text = line.rstrip("\r")
        if text == _ABSL_PREAMBLE or _CPU_GUARD_CONTINUATION.match(text):
            return False
        m = _ABSL.match(text)
        if m is None:
            return True
        source = (m.group("file"), m.group("message"))
        if source[0] == _NO_DRIVER[0] and source[1].startswith(_NO_DRIVER[1]):
            self.no_cuda_driver = True
        if source[0] == _CUINIT[0] and source[1].startswith(_CUINIT[1]):
            return not self.no_cuda_driver
        return not any(source[0] == f and source[1].startswith(start) for f, start in _STARTUP_MESSAGES)


def filter_startup_lines(text: str) -> str:
    """``text`` without TensorFlow's start-up lines (one :class:`StartupLineFilter` over all of it)."""
    keep = StartupLineFilter().keep
    return "".join(line for line in text.splitlines(keepends=True) if keep(line.rstrip("\n")))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def forward_filtered(in_fd: int, out_fd: int) -> None:
    """Copy ``in_fd`` to ``out_fd`` until end of file, a whole line at a time, minus the start-up lines.

    Bytes pass unchanged (decoded only to be matched); an unfinished last line is written at end of file.
    """
    keep = StartupLineFilter().keep
    pending = b""
    while True:
        chunk = os.read(in_fd, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        out = b"".join(line + b"\n" for line in lines if keep(line.decode("utf-8", "replace")))
        if out:
            _write_all(out_fd, out)
    if pending and keep(pending.decode("utf-8", "replace")):
        _write_all(out_fd, pending)


@contextlib.contextmanager
def startup_lines_filtered():
    """Within the block, everything written to fd 2 (by C++ or Python) goes through :func:`forward_filtered`
    in a child process to the real stderr. Without a usable child (no interpreter, no pipes) the block runs
    unfiltered rather than not at all."""
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        real_stderr = os.dup(2)
    except OSError:
        yield
        return
    try:
        read_end, write_end = os.pipe()
        try:
            # -I -S: the filter needs neither the user's environment nor site-packages, and starts faster.
            child = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)], stdin=read_end,
                                     stdout=real_stderr, stderr=real_stderr)
        finally:
            os.close(read_end)
    except OSError:
        os.close(write_end)
        os.close(real_stderr)
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes this process's write end: the filter sees end of file and exits
        os.close(real_stderr)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass  # something still holds the pipe open; the filter keeps forwarding it until it closes


@contextlib.contextmanager
def tensorflow_start_filtered(verbose=None):
    """Filter the start-up lines out of a block that may import TensorFlow (a command's module, say). If the
    block imported it, TensorFlow's devices are found before the filter ends: that calls cuInit, whose failure
    is the last start-up line. Nothing is filtered once TensorFlow is imported (its start-up is over) or when
    ``verbose`` (default: :func:`verbose_requested`, ``RTMDET_VERBOSE=1``)."""
    if verbose is None:
        verbose = verbose_requested()
    if verbose or "tensorflow" in sys.modules:
        yield
        return
    with startup_lines_filtered():
        yield
        if "tensorflow" in sys.modules:
            sys.modules["tensorflow"].config.list_physical_devices()


def import_tensorflow_quietly(verbose=None):
    """Import TensorFlow and find its devices with the start-up lines filtered out; return the module."""
    with tensorflow_start_filtered(verbose):
        import tensorflow as tf  # lazy: this module is standard library only, and the import is what is filtered
    return tf


if __name__ == "__main__":
    forward_filtered(sys.stdin.fileno(), sys.stdout.fileno())
