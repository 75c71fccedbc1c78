"""The work dir of a training run: which folder a run writes to, whether a checkpoint may be resumed
with this config, and ``train.log``.

A new run never writes into a folder that holds another run: with ``work_dirs/nano`` taken it goes
to ``work_dirs/nano2``, then ``nano3`` (Ultralytics' numbering), unless

- ``--resume``: continue the run in the folder (without ``--work-dir``: the newest numbered run of the
  config that has a checkpoint), or
- ``--exist-ok``: write into the folder anyway. Files of the same name (``epoch_N.ckpt.npz``, the best
  model, ``config.yaml``, ``train.log``, ``results.csv``) are replaced; the checkpoint retention still
  deletes only files this run wrote (:class:`~rtmdet_keras.training.checkpoint.CheckpointCallback`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Tuple

import yaml

from rtmdet_keras.training.checkpoint import BEST_NAME, LAST_POINTER, epoch_checkpoints, load_training_state

LOG_NAME = "train.log"
RESULTS_NAME = "results.csv"
# What a run leaves in its folder; any of them means the folder holds a run. train.log alone does not:
# a run that stopped before its data was read (a wrong data_root) leaves only that, and the next try
# should write there, not into <work dir>2.
RUN_FILES = ("config.yaml", LAST_POINTER, BEST_NAME, RESULTS_NAME, "train_summary.json")

# Settings whose values a checkpoint's weights belong to. Other shapes would not load; another
# activation, normalisation or stride would load and silently train a different network. The prior
# settings only initialise biases, which a resumed run overwrites, so they may differ.
_NETWORK_SECTIONS = ("model",)
_INIT_ONLY = ("model.prior_prob", "model.reg_prior")


class WorkDirError(ValueError):
    """The work dir or the checkpoint to resume from cannot be used; the message says which file and what to do."""


def holds_a_run(path) -> bool:
    path = Path(path)
    if not path.is_dir():
        return False
    return any((path / name).exists() for name in RUN_FILES) or bool(epoch_checkpoints(path))


def numbered_runs(base) -> List[Path]:
    """The folders of ``base``'s runs that exist: ``base``, then ``base2``, ``base3``... in that order."""
    base = Path(base)
    found = [(1, base)] if base.is_dir() else []
    if base.parent.is_dir():
        numbered = re.compile(re.escape(base.name) + r"(\d+)")
        for p in base.parent.iterdir():
            m = numbered.fullmatch(p.name)
            if m and int(m.group(1)) >= 2 and p.is_dir():
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def choose_work_dir(base, resume: bool = False, exist_ok: bool = False,
                    newest_of_numbered: bool = False) -> Tuple[Path, Optional[str]]:
    """``(folder, note)``: where a run with work dir ``base`` writes, and a line saying why it is not
    ``base`` (None when it is).

    ``newest_of_numbered``: with ``resume``, continue the newest run of ``base``, ``base2``... (for a
    work dir the user did not name: the run just interrupted is the newest); otherwise ``base`` itself.
    """
    base = Path(base)
    if base.exists() and not base.is_dir():
        raise WorkDirError(f"work dir {base} is a file, not a folder; give another --work-dir")
    if resume:
        if newest_of_numbered:
            runs = [p for p in numbered_runs(base) if holds_a_run(p)]
            if runs and runs[-1] != base:
                return runs[-1], f"--resume: continuing the newest run, {runs[-1]} (--work-dir {base} picks that one)"
        return base, None
    if exist_ok or not holds_a_run(base):
        return base, None
    n = 2
    while holds_a_run(base.with_name(f"{base.name}{n}")):
        n += 1
    chosen = base.with_name(f"{base.name}{n}")
    return chosen, (f"{base} holds an earlier run, kept as it is; this run writes to {chosen} "
                    f"(--resume continues that run, --exist-ok writes into {base} anyway)")


def network_settings(config: dict) -> dict:
    """``{dotted key: value}`` of the settings a checkpoint's weights belong to (see ``_NETWORK_SECTIONS``)."""
    out = {"num_classes": config.get("num_classes")}
    for section in _NETWORK_SECTIONS:
        for key, value in (config.get(section) or {}).items():
            if f"{section}.{key}" not in _INIT_ONLY:
                out[f"{section}.{key}"] = value
    return out


def _stored_config(ckpt: Path, meta: dict) -> Tuple[Optional[dict], str]:
    """The config the checkpoint was written with, and where it was read: the checkpoint's own copy,
    else the run's ``config.yaml`` (checkpoints written before the copy was kept)."""
    if isinstance(meta.get("config"), dict):
        return meta["config"], str(ckpt)
    saved = ckpt.parent / "config.yaml"
    try:
        data = yaml.safe_load(saved.read_text())
    except (OSError, yaml.YAMLError):
        return None, ""
    return (data, str(saved)) if isinstance(data, dict) else (None, "")


def load_resumable_state(ckpt, cfg) -> dict:
    """Read the training state in ``ckpt`` (see :func:`~rtmdet_keras.training.checkpoint.load_training_state`)
    and check it was written by a run of the same network as ``cfg``.

    Raises:
        WorkDirError: the file cannot be read, or its run had other network settings (named).
    """
    ckpt = Path(ckpt)
    try:
        state = load_training_state(ckpt)
    except RuntimeError as e:
        raise WorkDirError(f"--resume: {e}") from None
    stored, source = _stored_config(ckpt, state["meta"])
    if stored is not None:
        theirs, ours = network_settings(stored), network_settings(cfg.to_dict())
        differ = [k for k in ours if k in theirs and theirs[k] != ours[k]]
        if differ:
            was = ", ".join(f"{k}={theirs[k]!r}" for k in differ)
            now = ", ".join(f"{k}={ours[k]!r}" for k in differ)
            raise WorkDirError(
                f"--resume: {ckpt} belongs to a run with {was} (from {source}) but this config has {now}; "
                f"resume with that run's settings, or start a new run without --resume")
    return state


class RunLog:
    """``train.log``: every line printed through :meth:`tee`, and lines for the log only (:meth:`write`).
    Each line is flushed at once, so a killed run's log ends where the run did."""

    def __init__(self, path, append: bool = False):
        self.path = Path(path)
        self._file = open(self.path, "a" if append else "w", encoding="utf-8")

    def write(self, text) -> None:
        if self._file.closed:
            return
        self._file.write(str(text).rstrip("\n") + "\n")
        self._file.flush()

    def tee(self, print_fn):
        """A print function that writes to the log, then calls ``print_fn``."""

        def both(*args, **kwargs):
            self.write(" ".join(str(a) for a in args))
            print_fn(*args, **kwargs)

        return both

    def close(self) -> None:
        self._file.close()
