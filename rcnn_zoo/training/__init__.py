"""Training a detector: the ``rcnn-zoo train`` recipe and schedules beyond plain
``model.compile(); model.fit()``.

:class:`TrainConfig` + :func:`train` are ``rcnn-zoo train`` as a function: read the data
(:func:`rcnn_zoo.data.load_dataset`), build the detector named by ``TrainConfig.detector``
(:func:`build_detector`, through :func:`rcnn_zoo.models.registry.get_detector`), fit it on
augmented batches (:func:`rcnn_zoo.data.training_dataset`) with warm-up + cosine learning rate,
validation mAP, checkpoints, ``history.csv`` and its plot, and resume after an interruption.

The detectors differ in what they train on (:data:`DETECTOR_TRAINING`): ``faster_rcnn`` and
``rfcn`` as above; ``fast_rcnn`` the same ``fit`` on batches that carry each image's selective
search proposals (computed once, cached in ``<output_dir>/proposals/``); ``rcnn`` in the paper's
three stages (:func:`train_rcnn_stages`), ``--epochs`` being the epochs of its fine-tuning stage.

Approximate joint training (the default, Faster R-CNN section 3.2 (ii)) is just ``fit``. The
paper's original 4-step alternating training is :func:`alternating_training`.

Several devices or machines (``TrainConfig.distribute``, ``--distribute``): :mod:`distribute`
(strategy, chief, where each worker writes, how batches are split; ``docs/distributed.md``).

One concept a module, each importing only the ones listed before it:

- ``distribute``: the ``tf.distribute`` strategy, the chief, each worker's write folder, the
  split of the global batch, and the callbacks that need care across workers;
- ``budget``: ``--time-budget``'s recipe: image size and augmentation from the data, batch
  size, epochs and warm-up from measured step times, and :class:`TimeBudget`, which ends the
  run in time;
- ``detectors``: the detector a run builds from CLI-style arguments, and how each trains;
- ``schedules``: the optimizer and the warm-up + cosine learning rate;
- ``config``: :class:`TrainConfig` and the checks of its values;
- ``callbacks``: divergence stop, atomic checkpoints, the training-curve plot;
- ``run_folder``: the output folder's files, ``backup/progress.json`` and where to resume;
- ``record``: ``config.json``, the run's arguments and timings;
- ``datasets``: the training and validation sets and each detector's batches;
- ``rcnn_stages``: R-CNN's three stages;
- ``recipe``: :func:`train`;
- ``alternating``: :func:`alternating_training`.
"""

from rcnn_zoo.checkpoints import HistoryCSV, read_history
from rcnn_zoo.training.alternating import alternating_training
from rcnn_zoo.training.budget import TimeBudget, parse_duration
from rcnn_zoo.training.callbacks import (
    AtomicCheckpoint,
    FillMissing,
    StopOnDivergence,
    TrainingCurves,
    TrainingDiverged,
)
from rcnn_zoo.training.config import TrainConfig, check_config, check_detector_options
from rcnn_zoo.training.datasets import class_summary, proposal_training_dataset
from rcnn_zoo.training.distribute import DISTRIBUTE_MODES, MultiWorkerBackupAndRestore, is_chief, make_strategy
from rcnn_zoo.training.detectors import (
    CLI_ANCHOR_SIZES,
    CLI_IMAGE_SIZES,
    DETECTOR_TITLES,
    DETECTOR_TRAINING,
    build_detector,
    image_sizes,
    parse_model_args,
)
from rcnn_zoo.training.rcnn_stages import RCNN_REGIONS_PER_BATCH_IMAGE, train_rcnn_stages
from rcnn_zoo.training.recipe import train
from rcnn_zoo.training.run_folder import RunProgress, read_progress
from rcnn_zoo.training.schedules import CosineLearningRate

__all__ = [
    "CLI_ANCHOR_SIZES",
    "CLI_IMAGE_SIZES",
    "DETECTOR_TITLES",
    "DETECTOR_TRAINING",
    "DISTRIBUTE_MODES",
    "RCNN_REGIONS_PER_BATCH_IMAGE",
    "AtomicCheckpoint",
    "CosineLearningRate",
    "FillMissing",
    "HistoryCSV",
    "MultiWorkerBackupAndRestore",
    "RunProgress",
    "StopOnDivergence",
    "TrainConfig",
    "TrainingCurves",
    "TimeBudget",
    "TrainingDiverged",
    "alternating_training",
    "build_detector",
    "check_config",
    "check_detector_options",
    "class_summary",
    "image_sizes",
    "is_chief",
    "make_strategy",
    "parse_duration",
    "parse_model_args",
    "proposal_training_dataset",
    "read_history",
    "read_progress",
    "train",
    "train_rcnn_stages",
]
