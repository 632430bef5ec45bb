"""Files that must survive a kill at any moment, and the training history they hold.

Every file is written to a temporary name in the same folder and renamed over the old one
(``os.replace`` is atomic on POSIX and Windows), so readers see the previous good file or the new
one, never part of one:

- :func:`write_text_atomically`, :func:`save_model_atomically` (``.keras``, optimizer state
  included), :func:`replace_directory` (a SavedModel); :func:`remove_stale_temporaries` deletes
  what a killed writer left behind.
- ``history.csv``: :class:`HistoryCSV` writes it (one row per epoch: ``epoch`` then the logs'
  keys, sorted, as Keras' ``CSVLogger`` writes it, rewritten whole), :func:`read_history` reads it
  and :func:`logged_values` picks one column's numbers out of its rows.

The training run's own callbacks (divergence, checkpoints, progress) are in
:mod:`rcnn_zoo.training`; this module is below it because export and plotting use it too.
"""

import csv
import io
import math
import os
import shutil
import tempfile

import keras
import numpy as np

__all__ = [
    "HistoryCSV",
    "logged_values",
    "read_history",
    "remove_stale_temporaries",
    "replace_directory",
    "save_model_atomically",
    "write_text_atomically",
]


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


def logged_values(rows, key):
    """The numbers logged under ``key`` in history ``rows`` (:func:`read_history`), in epoch
    order, leaving out epochs that did not log it (missing, None or NaN)."""
    values = [row.get(key) for row in rows]
    return [v for v in values if v is not None and not math.isnan(v)]
