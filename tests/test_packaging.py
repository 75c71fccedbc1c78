"""The package as pip installs it: the presets ship inside it and load by name from any folder."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def test_presets_folder_in_the_package_is_the_top_level_one():
    # One copy of each preset: the package's folder is a link, so editing configs/ edits what ships.
    link = REPO / "rtmdet_keras" / "configs"
    assert link.is_symlink() and link.resolve() == (REPO / "configs").resolve()
    assert len(PRESETS) >= 9


def test_installed_from_sdist_loads_every_preset_by_name_from_any_folder(tmp_path):
    # Build from a copy so the build's egg-info and build/ folders stay out of the checkout. sdist -> wheel ->
    # install is the longest road a user's `pip install .` or `pip install rtmdet_keras-*.tar.gz` takes:
    # a preset lost at either step fails here.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "configs", src / "configs")
    shutil.copytree(REPO / "rtmdet_keras", src / "rtmdet_keras", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    dist, target, elsewhere = tmp_path / "dist", tmp_path / "target", tmp_path / "elsewhere"
    elsewhere.mkdir()
    build_sdist = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    build = subprocess.run([sys.executable, "-c", build_sdist, str(dist)], cwd=src, capture_output=True, text=True,
                           timeout=120)
    assert build.returncode == 0, build.stderr[-2000:]
    (sdist,) = dist.glob("*.tar.gz")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(sdist)],
        cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    assert not (target / "rtmdet_keras" / "configs").is_symlink()

    code = ("import sys, rtmdet_keras\n"
            "from rtmdet_keras import load_config\n"
            "print(rtmdet_keras.__file__)\n"
            "for name in sys.argv[1:]:\n"
            "    cfg = load_config(name)\n"
            "    print(name, cfg.preset, cfg.model.widen_factor)\n")
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code, *PRESETS], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert Path(lines[0]).is_relative_to(target), f"imported {lines[0]}, not the installed copy"
    loaded = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert sorted(loaded) == PRESETS
    assert all(preset == name for name, (preset, _) in loaded.items())
    assert loaded["nano"][1] == "0.25" and loaded["tiny"][1] == "0.375"  # nano's and tiny's widths
