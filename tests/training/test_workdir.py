"""Work dirs: a new run never writes into a folder holding another run; --resume finds the newest."""

import pytest

from rtmdet_keras.training.workdir import WorkDirError, choose_work_dir, holds_a_run, network_settings


def _used(folder, name="config.yaml"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("x")
    return folder


def test_runs_are_numbered_like_ultralytics(tmp_path):
    base = tmp_path / "work_dirs" / "nano"
    assert choose_work_dir(base) == (base, None)  # nothing there yet
    base.mkdir(parents=True)
    assert choose_work_dir(base) == (base, None)  # an empty folder holds no run
    _used(base, "epoch_3.ckpt.npz")
    chosen, note = choose_work_dir(base)
    assert chosen == tmp_path / "work_dirs" / "nano2"
    assert str(base) in note and "--exist-ok" in note and "--resume" in note
    _used(chosen, "train.log")  # a run that died before its first checkpoint holds its log and config
    _used(chosen, "config.yaml")
    (tmp_path / "work_dirs" / "nano_relu").mkdir()  # another config's folder is not one of nano's runs
    assert choose_work_dir(base)[0] == tmp_path / "work_dirs" / "nano3"
    assert choose_work_dir(base, exist_ok=True) == (base, None)


def test_resume_continues_the_newest_run_unless_a_folder_is_named(tmp_path):
    base = tmp_path / "nano"
    _used(base)
    for n in (2, 10):
        _used(tmp_path / f"nano{n}")
    (tmp_path / "nano11").mkdir()  # empty: no run to continue
    chosen, note = choose_work_dir(base, resume=True, newest_of_numbered=True)
    assert chosen == tmp_path / "nano10" and "nano10" in note
    assert choose_work_dir(base, resume=True) == (base, None)


def test_a_file_is_no_work_dir(tmp_path):
    (tmp_path / "nano").write_text("")
    with pytest.raises(WorkDirError, match="is a file"):
        choose_work_dir(tmp_path / "nano")
    assert not holds_a_run(tmp_path / "nano")


def test_network_settings_leave_out_what_only_initialises():
    keys = network_settings({"num_classes": 2, "imgsz": [192, 192], "lr": 0.01,
                             "model": {"widen_factor": 0.25, "act": "relu", "prior_prob": 0.01, "reg_prior": 2.0}})
    assert keys == {"num_classes": 2, "model.widen_factor": 0.25, "model.act": "relu"}


def test_a_run_that_stopped_before_reading_its_data_is_no_earlier_run(tmp_path):
    base = tmp_path / "nano"
    base.mkdir()
    (base / "train.log").write_text("Error: data_root 'x' does not exist\n")
    assert not holds_a_run(base)
    assert choose_work_dir(base) == (base, None)
    (base / "config.yaml").write_text("name: nano\n")
    assert holds_a_run(base)
    assert choose_work_dir(base)[0] == tmp_path / "nano2"
