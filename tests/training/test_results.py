"""results.csv: the rows of a resumed run."""

import csv

from rtmdet_keras.training.results import EpochClock, ResultsCSV


def test_resumed_results_csv_drops_the_epochs_that_run_again(tmp_path):
    path = tmp_path / "results.csv"
    first = ResultsCSV(path, EpochClock(), images_per_epoch=24, stage1_epochs=2)
    for epoch in range(4):
        first.on_epoch_end(epoch, {"loss": 1.0, "lr": 0.01})
    with open(path, newline="") as f:
        wall_2 = float(list(csv.DictReader(f))[1]["wall_seconds"])
    # Killed after epoch 4 with the newest checkpoint at epoch 2: epochs 3 and 4 run again.
    resumed = ResultsCSV(path, EpochClock(), images_per_epoch=24, stage1_epochs=2, resume_after=2)
    resumed.on_epoch_end(2, {"loss": 0.5, "lr": 0.001, "loss_cls": 0.2, "loss_bbox": 0.3})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["stage"], r["loss"]) for r in rows] == [("1", "1", "1"), ("2", "1", "1"), ("3", "2", "0.5")]
    assert rows[2]["bbox_mAP"] == "" and rows[2]["loss_cls"] == "0.2"  # not evaluated: the COCO cells are empty
    assert float(rows[2]["wall_seconds"]) >= wall_2  # the wall time goes on from the first session's
