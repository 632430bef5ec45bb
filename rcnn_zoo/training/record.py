"""``config.json``, the record of a training run: the command and arguments it was given, its
data and model, and one entry per run of it (``runs``: epochs from/to, wall and CPU seconds), so
that a resumed run appends to the history of the first."""

import dataclasses
import json
import os
import sys

from rcnn_zoo.training.run_folder import run_paths
from rcnn_zoo.utils import write_json

__all__ = ["command_line", "earlier_arguments", "finish_run", "start_record"]


def command_line():
    """The command as typed, for config.json (a script calling :func:`rcnn_zoo.training.train`
    shows as ``rcnn-zoo`` with its own arguments)."""
    return " ".join(["rcnn-zoo"] + [a if a and " " not in a else json.dumps(a) for a in sys.argv[1:]])


def _read_record(path):
    """The record at ``path``, or {} when there is none."""
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def earlier_arguments(output_dir):
    """The :class:`~rcnn_zoo.training.TrainConfig` fields (dict) the run in ``output_dir`` was
    started with, or {} when it has no config.json."""
    return _read_record(run_paths(output_dir)["config"]).get("arguments", {})


def start_record(path, config, model, train_set, val_set=None, continuing=False, choices=None):
    """Write ``path`` (config.json) for a run that starts now, keeping the ``runs`` (and the
    ``choices``) of an earlier record when ``continuing``; ``choices``: what was chosen for the
    data and why (e.g. fitted anchors). Returns the record for :func:`finish_run`."""
    record = {
        "command": command_line(),
        "arguments": dataclasses.asdict(config),
        "class_names": train_set.class_names,
        "num_train_images": len(train_set),
        "num_val_images": len(val_set) if val_set is not None else 0,
        "image_min_size": getattr(model, "image_min_size", None),
        "image_max_size": getattr(model, "image_max_size", None),
        "model": {k: v for k, v in model.get_config().items() if k not in ("dtype",)},
    }
    earlier = _read_record(path) if continuing else {}
    record["runs"] = earlier.get("runs", [])
    record["choices"] = list(choices or earlier.get("choices", []))
    write_json(path, record)
    return record


def finish_run(path, record, initial_epoch, epochs_done, wall_seconds, cpu_seconds):
    """Add this run (epochs ``initial_epoch`` → ``epochs_done``, its times in seconds) to
    ``record`` and write it to ``path`` again."""
    record["runs"].append({"from_epoch": initial_epoch, "to_epoch": epochs_done,
                           "wall_seconds": round(wall_seconds, 1), "cpu_seconds": round(cpu_seconds, 1)})
    record["epochs_done"] = epochs_done
    write_json(path, record)
