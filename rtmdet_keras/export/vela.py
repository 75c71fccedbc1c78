"""Compile an int8 ``.tflite`` for Arm Ethos-U NPUs with Arm's Vela and read its summary.

``nano_int8.tflite`` -> ``nano_int8_vela.tflite`` (the NPU part as one ``ethos-u`` custom op, what the
Himax WE2 / Grove Vision AI V2 and other Ethos-U boards load), ``nano_int8_vela.txt`` (Vela's report:
every op and whether it runs on the NPU or falls back to the CPU, memory, bandwidth) and
``nano_int8_vela.json`` (the figures parsed from it: NPU/CPU op counts, SRAM, flash, cycles, estimated
inference time).

Vela (``ethos-u-vela``, Apache-2.0) is an optional dependency, ``pip install 'rtmdet_keras[vela]'``; it
runs as a separate process, so it may also live in a virtual environment of its own: set ``RTMDET_VELA``
to its ``vela`` executable. Looked up in this order: ``RTMDET_VELA``, ``vela`` on ``PATH``, then
``python -m ethosu.vela`` in this interpreter.

The accelerator defaults to ``ethos-u55-64`` (the Himax WE2's); the system configuration and memory mode
are Vela's defaults (``Ethos_U55_High_End_Embedded``: 500 MHz core, ``Shared_Sram``) unless given; the
estimated time is Vela's, for that configuration.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from rtmdet_keras.files import atomic_write_text

DEFAULT_ACCELERATOR = "ethos-u55-64"  # Himax WE2 (Grove Vision AI V2)
VELA_VERSION = "5.2.0"  # the version the docs' figures come from
ENV_VAR = "RTMDET_VELA"


class VelaError(RuntimeError):
    """Vela is missing or failed; the message says what to do."""


def find_vela() -> List[str]:
    """The command that runs Vela (see the module docstring), or :class:`VelaError` saying how to get it."""
    named = os.environ.get(ENV_VAR)
    if named:
        path = shutil.which(named) or (named if os.access(named, os.X_OK) else None)
        if path is None:
            raise VelaError(f"{ENV_VAR}={named}: no such executable; point it at Vela's `vela` script "
                            f"(e.g. /path/to/venv/bin/vela) or unset it")
        return [path]
    on_path = shutil.which("vela")
    if on_path:
        return [on_path]
    if importlib.util.find_spec("ethosu") is not None and importlib.util.find_spec("ethosu.vela") is not None:
        return [sys.executable, "-m", "ethosu.vela"]
    raise VelaError(f"--vela needs Arm's Vela compiler, which is not installed: pip install 'rtmdet_keras[vela]' "
                    f"(or pip install ethos-u-vela=={VELA_VERSION}, in any environment, and set {ENV_VAR} to its "
                    f"`vela` executable)")


def parse_vela_report(text: str) -> dict:
    """The figures of Vela's printed summary: ``npu_ops``, ``cpu_ops``, ``npu_share`` (0-1),
    ``cpu_operations`` (``[(op type, tensor name)]``), ``sram_kib``, ``flash_kib`` (on- and off-chip),
    ``accelerator``, ``system_config``, ``memory_mode``, ``clock_hz``, ``macs``."""
    def number(pattern, cast=float):
        m = re.search(pattern, text, re.M)
        return cast(m.group(1)) if m else None

    cpu = number(r"^CPU operators = (\d+)", int)
    npu = number(r"^NPU operators = (\d+)", int)
    if cpu is None or npu is None:
        raise VelaError(f"Vela's output has no 'CPU operators = N' / 'NPU operators = N' lines:\n{text[-2000:]}")
    cpu_ops = re.findall(r"^\s+CPU: (\w+) = (.*?) \(outputs", text, re.M)
    clock = number(r"^Accelerator clock\s+(\d+) MHz")
    return {
        "accelerator": number(r"^Accelerator configuration\s+(\S+)", str),
        "system_config": number(r"^System configuration\s+(\S+)", str),
        "memory_mode": number(r"^Memory mode\s+(\S+)", str),
        "clock_hz": None if clock is None else clock * 1e6,
        "npu_ops": npu, "cpu_ops": cpu, "npu_share": npu / max(npu + cpu, 1),
        "cpu_operations": [[op, name.rstrip(";")] for op, name in cpu_ops],
        "sram_kib": number(r"^Total SRAM used\s+([\d.]+) KiB"),
        "flash_kib": (number(r"^Total Off-chip Flash used\s+([\d.]+) KiB") or 0.0)
        + (number(r"^Total On-chip Flash used\s+([\d.]+) KiB") or 0.0),
        "macs": number(r"^Neural network macs\s+(\d+)", int),
    }


def _csv_figures(csv_path: Path) -> dict:
    with open(csv_path, newline="") as f:
        row = next(csv.DictReader(f))
    return {"cycles": int(float(row["cycles_total"])),
            "inference_ms": float(row["inference_time"]) * 1000.0,
            "inferences_per_second": float(row["inferences_per_second"])}


def compile_vela(tflite_path, out_dir=None, accelerator: str = DEFAULT_ACCELERATOR,
                 system_config: Optional[str] = None, memory_mode: Optional[str] = None,
                 config_file: Optional[str] = None, timeout: float = 1800) -> dict:
    """Compile ``tflite_path`` (a full-integer model) with Vela into ``out_dir`` (default beside it).

    Returns the figures of :func:`parse_vela_report` plus ``cycles``, ``inference_ms`` and
    ``inferences_per_second`` (Vela's estimate), ``vela_version`` and the written ``files``
    (``tflite``: ``<stem>_vela.tflite``, ``report``: ``<stem>_vela.txt``, ``json``: ``<stem>_vela.json``).
    """
    src = Path(tflite_path)
    out_dir = Path(out_dir) if out_dir else src.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = find_vela()
    args = ["--accelerator-config", accelerator, "--show-cpu-operations"]
    for flag, value in (("--system-config", system_config), ("--memory-mode", memory_mode),
                        ("--config", config_file)):
        if value:
            args += [flag, value]
    with tempfile.TemporaryDirectory(prefix="rtmdet_vela_") as tmp:
        try:
            run = subprocess.run(cmd + [str(src.resolve()), "--output-dir", tmp] + args, capture_output=True,
                                 text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VelaError(f"Vela did not finish on {src} within {timeout:.0f} s") from None
        if run.returncode != 0:
            raise VelaError(f"Vela failed on {src} (exit {run.returncode}; command: {' '.join(cmd + args)}):\n"
                            f"{(run.stdout + run.stderr)[-3000:]}")
        produced = Path(tmp) / f"{src.stem}_vela.tflite"
        if not produced.exists():
            raise VelaError(f"Vela wrote no {produced.name} for {src}:\n{run.stdout[-2000:]}")
        figures = parse_vela_report(run.stdout)
        summaries = sorted(Path(tmp).glob(f"{src.stem}_summary_*.csv"))
        if summaries:
            figures.update(_csv_figures(summaries[0]))
        files = {"tflite": out_dir / produced.name, "report": out_dir / f"{src.stem}_vela.txt",
                 "json": out_dir / f"{src.stem}_vela.json"}
        shutil.move(str(produced), files["tflite"])
    version = subprocess.run(cmd + ["--version"], capture_output=True, text=True).stdout.strip()
    report = "\n".join(l for l in run.stdout.splitlines() if not l.startswith("Warning: No "))  # default-config notes
    files["report"].write_text(f"vela {version} {' '.join(args)} {src.name}\n{report}\n")
    result = {**figures, "vela_version": version, "source": src.name,
              "files": {k: str(v) for k, v in files.items()}}
    atomic_write_text(files["json"], json.dumps(result, indent=2) + "\n")
    result["files"] = files
    return result


def format_vela_summary(r: dict) -> str:
    """Two or three lines for the export's printout."""
    line = (f"Vela {r.get('vela_version', '')} on {r['accelerator']} ({r['system_config']}, {r['memory_mode']}): "
            f"{r['npu_ops']} of {r['npu_ops'] + r['cpu_ops']} ops on the NPU ({100 * r['npu_share']:.1f} %), "
            f"SRAM {r['sram_kib']:.1f} KiB, flash {r['flash_kib']:.1f} KiB")
    if "inference_ms" in r:
        line += f", {r['cycles']} cycles = {r['inference_ms']:.2f} ms estimated"
    lines = [line]
    if r["cpu_operations"]:
        lines.append("ops that fall back to the CPU: " + "; ".join(f"{op} ({name})" for op, name in r["cpu_operations"]))
    return "\n".join(lines)


__all__ = ["compile_vela", "find_vela", "parse_vela_report", "format_vela_summary", "VelaError",
           "DEFAULT_ACCELERATOR"]
