"""The output folder of a training run: what is in it, and where an earlier run left off.

    <output_dir>/last.keras            the model after the last finished epoch (optimizer state too)
                 best.keras            the best validation mAP so far (with a validation set)
                 history.csv           one row per epoch (rcnn_zoo.checkpoints.HistoryCSV)
                 training_curves.png   drawn from history.csv
                 config.json           the run's arguments and timings (rcnn_zoo.training.record)
                 proposals/            selective search proposals (Fast R-CNN, R-CNN), per image
                 backup/progress.json  epochs finished, while a run is unfinished (RunProgress)

A run killed at any moment leaves whole files (each is written atomically) and perhaps hidden
temporaries, which :func:`resume_point` removes before it reads where to continue.
"""

import json
import os
import shutil

import keras

from rcnn_zoo.checkpoints import remove_stale_temporaries, write_text_atomically
from rcnn_zoo.errors import UsageError

__all__ = [
    "PROGRESS_FILE",
    "PROPOSALS_FOLDER",
    "RunProgress",
    "proposal_cache_beside",
    "read_progress",
    "resume_point",
    "run_paths",
]

PROGRESS_FILE = "progress.json"
PROPOSALS_FOLDER = "proposals"
_RUN_FILES = (
    ("best", "best.keras"), ("last", "last.keras"), ("history", "history.csv"),
    ("curves", "training_curves.png"), ("config", "config.json"), ("backup", "backup"),
)


def run_paths(output_dir):
    """``{"best", "last", "history", "curves", "config", "backup"}`` → path in ``output_dir``."""
    return {name: os.path.join(output_dir, file) for name, file in _RUN_FILES}


def proposal_cache_beside(model_path):
    """The selective search cache ``rcnn-zoo train`` left next to a model (``proposals/`` in its
    output folder), or None: evaluating on the training or validation images then reads their
    proposals instead of searching again."""
    folder = os.path.join(os.path.dirname(os.path.abspath(model_path)), PROPOSALS_FOLDER)
    return folder if os.path.isdir(folder) else None


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


def resume_point(output_dir, paths, resume, clean=True):
    """Where a run in ``output_dir`` (files ``paths``, :func:`run_paths`) starts:
    ``(interrupted_at, finished_before)``: the epochs an interrupted run finished (None if it
    was not interrupted), and whether a finished run's ``last.keras`` is there. ``clean``:
    first remove what a killed writer left (False for a worker that only reads the folder).

    Raises :class:`UsageError` when a finished run is there without ``resume``, or ``resume``
    finds nothing to continue.
    """
    if clean:
        # A run killed while writing leaves hidden temporaries; the files themselves are whole.
        remove_stale_temporaries(output_dir, [os.path.basename(paths[k]) for k in ("best", "last", "history",
                                                                                    "curves", "config")])
        remove_stale_temporaries(paths["backup"], [PROGRESS_FILE])
    interrupted_at = read_progress(paths["backup"])
    if interrupted_at is not None and not os.path.isfile(paths["last"]):
        interrupted_at = None  # progress without its model (deleted by hand): start afresh
    finished_before = os.path.isfile(paths["last"]) and interrupted_at is None
    if finished_before and not resume:
        raise UsageError(
            f"{output_dir} already holds a trained model (last.keras); pass --resume to train it further "
            "or choose another --output-dir"
        )
    if resume and not finished_before and interrupted_at is None:
        raise UsageError(f"--resume: nothing to resume in {output_dir} (no last.keras, no backup/)")
    return interrupted_at, finished_before


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
