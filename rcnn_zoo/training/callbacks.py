"""The Keras callbacks of a training run that keep its outputs good through divergence and
kills (usable with any ``fit``):

- :class:`StopOnDivergence`: a non-finite loss or weight stops training with
  :class:`TrainingDiverged` before anything of that epoch is saved.
- :class:`AtomicCheckpoint`: ``last.keras`` every epoch, or ``best.keras`` on a better monitored
  value; model and optimizer state, written atomically.
- :class:`FillMissing`: NaN for keys an epoch did not log (mAP every n epochs), so the history
  keeps its columns.
- :class:`TrainingCurves`: the training-curve PNG, redrawn from ``history.csv`` every epoch.

``history.csv`` itself is written by :class:`rcnn_zoo.checkpoints.HistoryCSV`, and
``backup/progress.json`` by :class:`rcnn_zoo.training.run_folder.RunProgress`.
"""

import math

import keras
import numpy as np

from rcnn_zoo.checkpoints import save_model_atomically
from rcnn_zoo.errors import UsageError
from rcnn_zoo.visualization import plot_training_curves

__all__ = ["AtomicCheckpoint", "FillMissing", "StopOnDivergence", "TrainingCurves", "TrainingDiverged"]


class TrainingDiverged(UsageError):
    """Training met a non-finite loss or weight; the message says where and what to try."""


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


class FillMissing(keras.callbacks.Callback):
    """Log NaN for ``keys`` on epochs without them (mAP is computed every n epochs), so
    CSVLogger keeps the column and ModelCheckpoint(save_best_only) skips quietly."""

    def __init__(self, keys):
        super().__init__()
        self.keys = list(keys)

    def on_epoch_end(self, epoch, logs=None):
        for key in self.keys:
            if logs is not None and key not in logs:
                logs[key] = float("nan")


class TrainingCurves(keras.callbacks.Callback):
    """Redraw the training-curve PNG from history.csv after every epoch."""

    def __init__(self, history_path, png_path):
        super().__init__()
        self.history_path, self.png_path = history_path, png_path

    def on_epoch_end(self, epoch, logs=None):
        try:
            plot_training_curves(self.history_path, self.png_path)
        except (OSError, ValueError):
            pass  # a plot must never stop training
