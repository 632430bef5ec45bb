"""What ``rcnn-zoo train`` logs and leaves on disk, on small copies of real photos.

- Logged losses are exact: each part is the epoch's mean, the parts add up to ``loss``, no
  phantom step runs at the end of an epoch, and Keras knows the number of steps (``n/N``, not
  ``n/Unknown``), also after ``--resume``.
- Divergence is an error: a non-finite loss stops training with exit code 2 and a message saying
  what to try; the last good ``last.keras`` stays; the re-run continues from it.
- Crash safety: training killed (SIGKILL) at random moments of a save-heavy run always leaves
  loadable ``last.keras``, a parseable ``history.csv`` and no half-written file under a real name;
  running the same command again finishes the run.
"""

import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from photo_copies import REPO, copy_raccoon_photos, run_cli

import rcnn_zoo
from rcnn_zoo.training import TrainingDiverged
from rcnn_zoo.data import load_dataset, steps_per_epoch, training_dataset
from rcnn_zoo.training import TrainConfig, train

# Landscape and portrait photos of different sizes (raccoon-115 is 426×640).
STEMS = ("raccoon-1", "raccoon-2", "raccoon-88", "raccoon-115", "raccoon-183")
PARTS = ("rpn_cls", "rpn_box", "cls", "box")
SMALL = ("--backbone", "tiny", "--image-min-size", "96", "--image-max-size", "128")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return copy_raccoon_photos(str(tmp_path_factory.mktemp("photos")), STEMS, long_side=128)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _assert_parts_add_up(row):
    total = sum(float(row[p]) for p in PARTS)
    assert math.isclose(total, float(row["loss"]), rel_tol=1e-5), row


# ------------------------------------------------------------------------------------ losses


def test_cli_logs_epoch_means_that_add_up_and_known_step_counts(photos, tmp_path):
    out = tmp_path / "run"
    args = ("train", "--data", photos, "--split", "train", *SMALL, "--batch-size", "2",
            "--epochs", "2", "--output-dir", out, "--verbose", "1")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(out / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row in rows:
        _assert_parts_add_up(row)
    dataset = load_dataset(str(photos), "voc", "train")
    steps = steps_per_epoch(dataset, 2)
    assert steps == 3  # 4 landscape photos (2 batches) and 1 portrait one (1 batch)
    assert f"{steps}/{steps}" in result.stdout and "Unknown" not in result.stdout
    assert "ran out of data" not in result.stdout + result.stderr
    # The optimizer took exactly one step per batch (no phantom step at the end of an epoch).
    model = keras.models.load_model(out / "last.keras", compile=True)
    assert int(model.optimizer.iterations.numpy()) == 2 * steps
    # The CLI-trained file is its own preset: no other argument needed (tiny's CLI anchors
    # are not the Python default), same detections.
    again = rcnn_zoo.FasterRCNN(weights=str(out / "last.keras"))
    assert again.class_names == ["raccoon"] and again.image_min_size == 96
    image = np.asarray(__import__("PIL.Image").Image.open(os.path.join(photos, "images", "raccoon-1.jpg")))
    expected, got = model.predict(image[None], verbose=0), again.predict(image[None], verbose=0)
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-4)
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-6)

    resumed = run_cli("train", "--output-dir", out, "--resume", "--epochs", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{steps}/{steps}" in resumed.stdout and "Unknown" not in resumed.stdout
    rows = _rows(out / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    _assert_parts_add_up(rows[2])


class _RunningLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches, self.epochs = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((dict(logs), self.batches[-1]))


def test_fit_on_the_training_dataset_logs_the_mean_of_its_steps(photos):
    dataset = load_dataset(str(photos), "voc", "train")
    model = rcnn_zoo.FasterRCNN(num_classes=1, backbone="tiny", class_names=["raccoon"],
                                image_min_size=96, image_max_size=128)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    data = training_dataset(dataset, 2, 96, 128, flip=0.5, seed=3)
    assert int(data.cardinality()) == steps_per_epoch(dataset, 2) == 3
    record = _RunningLogs()
    model.fit(data, epochs=2, verbose=0, callbacks=[record])
    for epoch_logs, last_batch in record.epochs:
        # The epoch's value is the running mean after its last step: nothing counted after it.
        for key in PARTS + ("loss",):
            assert epoch_logs[key] == pytest.approx(last_batch[key], rel=1e-6), key
        assert sum(epoch_logs[p] for p in PARTS) == pytest.approx(epoch_logs["loss"], rel=1e-5)
    assert int(model.optimizer.iterations.numpy()) == 6


# ------------------------------------------------------------------------------------ divergence


class _PoisonAtEpoch(keras.callbacks.Callback):
    """Sets one weight to NaN when epoch ``epoch`` begins: the next step's loss is NaN."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            variable = self.model.rpn.head.trainable_weights[0]
            variable.assign(np.full(variable.shape, np.nan, np.float32))


def test_divergence_stops_keeps_the_last_good_model_and_the_rerun_continues(photos, tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(data=str(photos), split="train", backbone="tiny", image_min_size=96,
                         image_max_size=128, batch_size=2, epochs=3, output_dir=str(out), verbose=0)
    with pytest.raises(TrainingDiverged) as caught:
        train(config, callbacks=[_PoisonAtEpoch(1)])
    message = str(caught.value)
    assert "diverged at epoch 2, step " in message and "--lr" in message
    assert [int(r["epoch"]) for r in _rows(out / "history.csv")] == [0]
    good = keras.models.load_model(out / "last.keras")
    assert all(np.all(np.isfinite(w)) for w in good.get_weights())
    assert json.loads((out / "backup" / "progress.json").read_text()) == {"epoch": 1}

    result = train(config)  # the same command again: continues after epoch 1
    assert result["epochs_done"] == 3
    assert [int(r["epoch"]) for r in _rows(out / "history.csv")] == [0, 1, 2]
    assert not (out / "backup").exists()


def test_cli_training_from_nan_weights_is_an_error_not_a_nan_model(photos, tmp_path):
    model = rcnn_zoo.FasterRCNN(num_classes=1, backbone="tiny", class_names=["raccoon"],
                                image_min_size=96, image_max_size=128,
                                anchor_sizes=((32.0, 64.0, 128.0, 256.0),))
    model(np.zeros((1, 96, 128, 3), np.float32))
    variable = model.backbone.trainable_weights[0]
    variable.assign(np.full(variable.shape, np.nan, np.float32))
    damaged = tmp_path / "nan.weights.h5"
    model.save_weights(damaged)
    out = tmp_path / "run"
    result = run_cli("train", "--data", photos, "--split", "train", *SMALL, "--batch-size", "2",
                     "--epochs", "1", "--output-dir", out, "--verbose", "2",
                     "--model-arg", f"weights={damaged}")
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    error = [line for line in result.stderr.splitlines() if line.startswith("rcnn-zoo: error:")]
    assert len(error) == 1 and "diverged" in error[0] and "--lr" in error[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (out / "last.keras").exists()


# ------------------------------------------------------------------------------------ kill safety


def _check_outputs(out):
    """Whatever a kill left must be usable: the model loads, the history parses in order."""
    names = set(os.listdir(out)) if os.path.isdir(out) else set()
    if "last.keras" in names:
        model = keras.models.load_model(os.path.join(out, "last.keras"), compile=True)
        assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    if "history.csv" in names:
        epochs = [int(r["epoch"]) for r in _rows(os.path.join(out, "history.csv"))]
        assert epochs == list(range(len(epochs))), epochs
    progress = os.path.join(out, "backup", "progress.json")
    if os.path.isfile(progress):
        done = json.loads(open(progress, encoding="utf-8").read())["epoch"]
        if done > 0:  # epochs counted as finished are on disk
            assert "last.keras" in names and done <= len(epochs)


def test_killed_at_random_moments_the_outputs_stay_good_and_the_run_finishes(photos, tmp_path):
    out = tmp_path / "run"
    # One step per epoch on tiny pictures: most of the time goes into writing the outputs.
    args = ["train", "--data", str(photos), "--split", "train", *SMALL, "--batch-size", "8",
            "--epochs", "40", "--output-dir", str(out), "--verbose", "0", "--warmup-epochs", "0"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rng = random.Random(20261201)

    def epochs_done():
        try:
            return json.loads((out / "backup" / "progress.json").read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            return -1

    for attempt in range(3):
        process = subprocess.Popen([sys.executable, "-m", "rcnn_zoo.cli", *args], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        start = time.time()
        # The first kill comes early (the first epoch may be unfinished), the others once the
        # run is saving epochs; each at a random moment after that.
        wanted = 0 if attempt == 0 else epochs_done() + 1
        while epochs_done() < wanted and process.poll() is None and time.time() - start < 300:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        _check_outputs(str(out))
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_outputs(str(out))
    assert [int(r["epoch"]) for r in _rows(out / "history.csv")] == list(range(40))
    assert not (out / "backup").exists()
    assert not [n for n in os.listdir(out) if n.endswith(".tmp") or n.endswith(".tmp.keras")]
