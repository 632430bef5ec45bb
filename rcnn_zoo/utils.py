"""Helpers shared by ``rcnn_zoo.training``, ``rcnn_zoo.evaluation.report``,
``rcnn_zoo.inference`` and the CLI: strict JSON files and progress bars."""

import json
import math
import os

import keras


def write_json(path, value):
    """Write strict JSON (NaN, e.g. AP of a class without objects, becomes null) atomically."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(_plain(value), handle, indent=1, allow_nan=False)
        handle.write("\n")
    os.replace(tmp, path)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def progress(iterable, total, unit="image", verbose=1):
    """Yield from ``iterable`` while a Keras progress bar counts ``total`` items."""
    bar = keras.utils.Progbar(total, unit_name=unit, verbose=verbose) if verbose else None
    for index, item in enumerate(iterable):
        yield item
        if bar is not None:
            bar.update(index + 1)


def flat_numbers(values):
    """The numbers of a nest of tuples/lists (anchor sizes per level) as one flat list of floats."""
    flat = []
    for v in values if isinstance(values, (list, tuple)) else [values]:
        flat += flat_numbers(v) if isinstance(v, (list, tuple)) else [float(v)]
    return flat
