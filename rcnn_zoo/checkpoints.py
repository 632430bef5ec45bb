"""What a training run leaves on disk, written so that a kill at any moment leaves the previous
good file: every file is written to a temporary name in the same folder and renamed over the old
one (``os.replace`` is atomic on POSIX and Windows), and diverged weights are never saved.

Callbacks (used by :func:`rcnn_zoo.training.train`, usable with any ``fit``):

- :class:`StopOnDivergence`: a non-finite loss or weight stops training with
  :class:`TrainingDiverged` before anything of that epoch is saved.
- :class:`AtomicCheckpoint`: ``last.keras`` every epoch, or ``best.keras`` on a better monitored
  value; model and optimizer state.
- :class:`HistoryCSV`: ``history.csv``, one row per epoch (``epoch`` then the logs' keys,
  sorted, as Keras' ``CSVLogger`` writes it), rewritten whole.
- :class:`RunProgress`: ``backup/progress.json`` (epochs finished) while a run is unfinished,
  removed when it finishes; an interrupted run continues from it.
"""

import csv
import io
import json
import math
import os
import shutil
import tempfile

import keras
import numpy as np

from rcnn_zoo.errors import UsageError

__all__ = [
    "AtomicCheckpoint",
    "HistoryCSV",
    "RunProgress",
    "StopOnDivergence",
    "TrainingDiverged",
    "read_history",
    "read_progress",
    "remove_stale_temporaries",
    "replace_directory",
    "save_model_atomically",
    "write_text_atomically",
]

PROGRESS_FILE = "progress.json"


class TrainingDiverged(UsageError):
    """Training met a non-finite loss or weight; the message says where and what to try."""


def _write_atomically(path, write, suffix=".tmp"):
    """``write(tmp)`` to a temporary file next to ``path``, flushed to disk, then renamed over
    ``path``: readers see the old file or the new one, never part of one."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=folder)
    os.close(handle)
    try:
        write(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomically(path, text):
    """Write ``text`` to ``path`` through a temporary file in the same folder + rename."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            out.write(text)

    _write_atomically(path, write)


def save_model_atomically(model, path):
    """``model.save(path)`` (a ``.keras`` file, optimizer state included) through a temporary
    ``.keras`` file in the same folder + rename: ``path`` is always the old or the new model."""
    _write_atomically(path, lambda tmp: model.save(tmp, overwrite=True), suffix=".tmp.keras")


def replace_directory(write, path):
    """Build a directory with ``write(tmp_path)`` next to ``path``, then swap it in.

    An existing ``path`` is renamed aside and deleted only once the new one is in place, so a
    kill leaves the old directory, the new one, or both (the old one as ``.<name>.old-*``),
    never a half-written ``path``.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=parent)
    try:
        result = write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.lexists(path):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
        os.rmdir(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return result


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number (a string log entry): nothing to check


class StopOnDivergence(keras.callbacks.Callback):
    """Raise :class:`TrainingDiverged` when the loss (any logged loss) of a step is not finite,
    or when an epoch ends with non-finite weights.

    Raising (rather than Keras' ``TerminateOnNaN``, which lets the epoch's end callbacks save
    the diverged model) skips every later ``on_epoch_end``, so the last good checkpoints stay.
    Put it first in the callback list. ``advice`` ends the message (what to try).
    """

    def __init__(self, advice="lower the learning rate"):
        super().__init__()
        self.advice = advice
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if not _finite(v)}
        if bad:
            names = ", ".join(f"{k}={float(v)}" for k, v in sorted(bad.items()))
            self._stop(f"at epoch {self.epoch + 1}, step {batch + 1} ({names})")

    def on_epoch_end(self, epoch, logs=None):
        for variable in self.model.weights:
            if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable.value))):
                self._stop(f"at the end of epoch {epoch + 1} (weight {variable.path} is not finite)")

    def _stop(self, where):
        self.model.stop_training = True
        raise TrainingDiverged(f"training diverged {where}; {self.advice}")


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save the model (``.keras``, with optimizer state) atomically at every epoch's end, or
    only when ``monitor`` improves (``mode`` ``"max"``/``"min"``; NaN never improves).

    ``best``: the value to beat (a resumed run's best so far), or None.
    """

    def __init__(self, path, monitor=None, mode="max", best=None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.path, self.monitor, self.mode, self.best = path, monitor, mode, best

    def _improves(self, value):
        if value is None or not _finite(value) or math.isnan(float(value)):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if not self._improves(value):
                return
            self.best = float(value)
        save_model_atomically(self.model, self.path)


def _format_value(value):
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


class HistoryCSV(keras.callbacks.Callback):
    """``history.csv`` with one row per epoch, rewritten atomically after each.

    ``rows``: the rows of epochs before this run (a resumed run's), dicts with ``epoch``.
    Columns: ``epoch``, then every logged key, sorted (Keras' ``CSVLogger`` layout).
    """

    def __init__(self, path, rows=()):
        super().__init__()
        self.path = path
        self.rows = [dict(r) for r in rows]

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch]
        self.rows.append({"epoch": epoch, **{k: v for k, v in (logs or {}).items()}})
        keys = sorted({k for r in self.rows for k in r if k != "epoch"})
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["epoch"] + keys)
        for row in self.rows:
            writer.writerow([row["epoch"]] + [_format_value(row.get(k, "")) for k in keys])
        write_text_atomically(self.path, text.getvalue())


def read_history(path):
    """Rows of a CSVLogger file as dicts of floats (``epoch`` int); missing file → []."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    parsed[key] = float("nan")
            parsed["epoch"] = int(parsed.get("epoch", len(rows)))
            rows.append(parsed)
    return rows


def remove_stale_temporaries(folder, names):
    """Delete what a killed writer of ``names`` (files in ``folder``) left behind: the hidden
    temporaries of :func:`write_text_atomically` / :func:`save_model_atomically`
    (``.<name>.*.tmp``, ``.<name>.*.tmp.keras``). Returns the names removed."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for entry in os.listdir(folder):
        ours = any(entry.startswith(f".{name}.") for name in names)
        if ours and entry.endswith((".tmp", ".tmp.keras")):
            os.remove(os.path.join(folder, entry))
            removed.append(entry)
    return removed


def read_progress(folder):
    """Epochs an unfinished run in ``folder`` (its ``backup/``) has finished, or None."""
    path = os.path.join(folder, PROGRESS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return int(json.load(handle)["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"cannot read {path} ({error}); delete it to start the run afresh") from error


class RunProgress(keras.callbacks.Callback):
    """``<folder>/progress.json`` = epochs finished (after that epoch's checkpoints); the folder
    is removed when training ends with every epoch done (``epochs``).

    It is written when training begins too (``initial_epoch`` finished), so a run killed before
    its first epoch ends — even between writing ``last.keras`` and this file — is seen as
    unfinished, not as a finished run.
    """

    def __init__(self, folder, epochs, initial_epoch=0):
        super().__init__()
        self.folder, self.epochs = folder, int(epochs)
        self.initial_epoch = int(initial_epoch)
        self.done = None

    def _write(self, epochs_done):
        os.makedirs(self.folder, exist_ok=True)
        write_text_atomically(os.path.join(self.folder, PROGRESS_FILE), json.dumps({"epoch": epochs_done}) + "\n")

    def on_train_begin(self, logs=None):
        self._write(self.initial_epoch)

    def on_epoch_end(self, epoch, logs=None):
        self._write(epoch + 1)
        self.done = epoch + 1

    def on_train_end(self, logs=None):
        if self.done is not None and self.done >= self.epochs:
            shutil.rmtree(self.folder, ignore_errors=True)
