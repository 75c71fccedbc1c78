"""Writing files so that a reader never sees half of one: the one atomic write of the package.

Every file a run leaves behind (checkpoints, configs, exported models, reports) goes through
``atomic_write``: the content is written to a hidden temporary file beside the target, flushed to
disk and renamed over the target, so an interrupted run leaves either the old file or the new one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def atomic_write(path, write_fn: Callable[[Path], None], suffix: str = "") -> None:
    """Call ``write_fn(tmp_path)`` then rename ``tmp_path`` to ``path``. ``suffix`` keeps an extension
    some writers insist on (``.keras``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
