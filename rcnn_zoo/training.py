"""Training a detector: the ``rcnn-zoo train`` recipe and schedules beyond plain
``model.compile(); model.fit()``.

:class:`TrainConfig` + :func:`train` are ``rcnn-zoo train`` as a function: read the data
(:func:`rcnn_zoo.data.load_dataset`), build a Faster R-CNN (:func:`build_detector`), fit it on
augmented batches (:func:`rcnn_zoo.data.training_dataset`) with warm-up + cosine learning rate,
validation mAP, checkpoints, ``history.csv`` and its plot, and resume after an interruption.

Approximate joint training (the default, Faster R-CNN section 3.2 (ii)) is just ``fit``. The
paper's original 4-step alternating training is :func:`alternating_training`.
"""

import csv
import dataclasses
import json
import math
import os
import sys
import time
import warnings

import keras

from rcnn_zoo.backbones import BACKBONES
from rcnn_zoo.checkpoints import (
    AtomicCheckpoint,
    HistoryCSV,
    RunProgress,
    StopOnDivergence,
    TrainingDiverged,
    read_history,
    read_progress,
)
from rcnn_zoo.data import evaluation_dataset, load_dataset, steps_per_epoch, training_dataset
from rcnn_zoo.data.loading import default_split
from rcnn_zoo.errors import UsageError, check_number
from rcnn_zoo.evaluation import METRICS, MeanAveragePrecisionCallback
from rcnn_zoo.inference import load_model
from rcnn_zoo.models import FasterRCNN
from rcnn_zoo.utils import write_json
from rcnn_zoo.visualization import plot_training_curves

__all__ = [
    "CLI_ANCHOR_SIZES",
    "CLI_IMAGE_SIZES",
    "CosineLearningRate",
    "TrainConfig",
    "alternating_training",
    "check_config",
    "class_summary",
    "build_detector",
    "image_sizes",
    "parse_model_args",
    "read_history",
    "train",
]

# Backbones whose own default is "keep the input size" (tiny: made for 128-px test pictures) get
# these image sizes and anchors from the CLI instead: photos need resizing, and anchors that match
# the objects of photos resized so.
CLI_IMAGE_SIZES = {"tiny": (256, 416)}
CLI_ANCHOR_SIZES = {"tiny": (32, 64, 128, 256)}


# ==========================================================================================
# Models


def parse_model_args(items):
    """``["key=value", …]`` → dict, values parsed as JSON when they are JSON (numbers, lists,
    null, true), else kept as strings."""
    parsed = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--model-arg expects KEY=VALUE, got {item!r}")
        try:
            parsed[key.strip()] = json.loads(value)
        except ValueError:
            parsed[key.strip()] = value
    return parsed


def image_sizes(backbone, image_min_size=None, image_max_size=None):
    """The resize rule the CLI uses: what was asked, else the backbone's default, else (for
    backbones that keep the input size, like ``tiny``) :data:`CLI_IMAGE_SIZES`."""
    if image_min_size is None and image_max_size is None and backbone in CLI_IMAGE_SIZES:
        return CLI_IMAGE_SIZES[backbone]
    return image_min_size, image_max_size


def build_detector(num_classes, class_names, backbone="tiny", image_min_size=None,
                   image_max_size=None, anchor_sizes=None, model_args=None):
    """A :class:`rcnn_zoo.FasterRCNN` from CLI-style arguments.

    ``anchor_sizes``: a flat list of pixel sizes: all on the one level of a single-level
    backbone, one per level of an FPN. ``model_args``: further ``FasterRCNN`` keyword arguments.
    """
    if backbone not in BACKBONES:
        raise UsageError(f"unknown backbone {backbone!r}; choose one of {', '.join(sorted(BACKBONES))}")
    kwargs = dict(model_args or {})
    image_min_size, image_max_size = image_sizes(backbone, image_min_size, image_max_size)
    # Only sizes actually chosen are passed: None must not override a backbone's default.
    if image_min_size is not None:
        kwargs.setdefault("image_min_size", image_min_size)
    if image_max_size is not None:
        kwargs.setdefault("image_max_size", image_max_size)
    if not anchor_sizes and "anchor_sizes" not in kwargs:
        anchor_sizes = CLI_ANCHOR_SIZES.get(backbone)
    if anchor_sizes:
        sizes = [float(s) for s in anchor_sizes]
        fpn = backbone.endswith("_fpn")
        kwargs["anchor_sizes"] = tuple((s,) for s in sizes) if fpn else (tuple(sizes),)
    try:
        return FasterRCNN(num_classes=num_classes, class_names=list(class_names), backbone=backbone, **kwargs)
    except (TypeError, ValueError, OSError) as error:  # unknown or bad --model-arg, weights that do not fit
        raise UsageError(str(error).splitlines()[0]) from error


# ==========================================================================================
# The rcnn-zoo train recipe


@dataclasses.dataclass
class TrainConfig:
    """Everything ``rcnn-zoo train`` takes (field ``image_min_size`` is option
    ``--image-min-size``); the CLI's defaults are these."""

    data: str = None
    format: str = "voc"
    split: str = None
    val_split: str = None
    annotations: str = None
    images: str = None
    val_annotations: str = None
    val_images: str = None
    backbone: str = "tiny"
    image_min_size: int = None
    image_max_size: int = None
    anchor_sizes: list = None
    model_args: list = None
    epochs: int = 12
    batch_size: int = 4
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    flip: float = 0.5
    jitter: bool = False
    random_crop: float = 0.0
    crop_min_scale: float = 0.5
    zoom_out: float = 1.0
    val_every: int = 1
    metric: str = "voc"
    seed: int = 0
    output_dir: str = "runs/train"
    resume: bool = False
    verbose: int = 1


def _optimizer(config):
    if config.optimizer == "adam":
        if config.weight_decay:
            return keras.optimizers.AdamW(config.lr, weight_decay=config.weight_decay, global_clipnorm=10.0)
        return keras.optimizers.Adam(config.lr, global_clipnorm=10.0)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.lr, momentum=0.9, weight_decay=config.weight_decay or None,
                                    global_clipnorm=10.0)
    raise UsageError(f"--optimizer must be adam or sgd, got {config.optimizer!r}")


class CosineLearningRate(keras.callbacks.Callback):
    """Linear warm-up from 10 % over ``warmup_epochs``, then cosine decay to 1 % at
    ``epochs``, updated every batch; logs ``lr``. A function of (epoch, batch), so a
    resumed run continues on the same curve (stretched if ``epochs`` grew)."""

    def __init__(self, base_lr, epochs, steps_per_epoch, warmup_epochs=1.0):
        super().__init__()
        self.base_lr, self.epochs = float(base_lr), float(epochs)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.warmup = float(warmup_epochs)
        self.epoch = 0
        self.value = self.base_lr

    def rate(self, t):
        """The learning rate at ``t`` epochs (fractional) into training."""
        if t < self.warmup:
            return self.base_lr * (0.1 + 0.9 * t / self.warmup)
        progress = min((t - self.warmup) / max(self.epochs - self.warmup, 1e-9), 1.0)
        return self.base_lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.value = self.rate(self.epoch + min(batch / self.steps_per_epoch, 1.0))
        self.model.optimizer.learning_rate = self.value

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self.value


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


def _training_callbacks(config, paths, steps_per_epoch, val_set, class_names, initial_epoch):
    """The built-in callbacks of :func:`train`, in the order they must run: the learning rate
    first, validation mAP before the checkpoint that reads it, the backup last."""
    earlier = [r for r in read_history(paths["history"]) if r["epoch"] < initial_epoch]
    callbacks = [
        StopOnDivergence(_divergence_advice(config)),
        CosineLearningRate(config.lr, config.epochs, steps_per_epoch, config.warmup_epochs),
    ]
    if val_set is not None:
        best_so_far = [r.get("val_mAP") for r in earlier]
        best_so_far = [v for v in best_so_far if v is not None and not math.isnan(v)]
        callbacks += [
            MeanAveragePrecisionCallback(evaluation_dataset(val_set), every_n_epochs=config.val_every,
                                         metric=config.metric, class_names=class_names),
            FillMissing(["val_mAP"]),
            AtomicCheckpoint(paths["best"], monitor="val_mAP", mode="max", best=max(best_so_far, default=None)),
        ]
    # Written in this order, so that progress.json never counts an epoch whose model and
    # history row are not on disk.
    return callbacks + [
        HistoryCSV(paths["history"], earlier),
        AtomicCheckpoint(paths["last"]),
        TrainingCurves(paths["history"], paths["curves"]),
        RunProgress(paths["backup"], config.epochs),
    ]


def _divergence_advice(config):
    return (
        f"nothing of this epoch was saved. Try a lower --lr (now {config.lr:g}) and run the "
        f"command again: it continues from the last good epoch in {config.output_dir} "
        "(if one finished); if it diverges again, check the training data "
        "(boxes, classes) named in the warnings above"
    )


def class_summary(dataset, max_listed=20):
    """``Classes found in N images: a (x images, y objects), …``: the classes a training run
    takes from the data, so a misspelt name (a class of one image) is seen before training."""
    images = [0] * dataset.num_classes
    objects = [0] * dataset.num_classes
    for record in dataset.records:
        for label in set(record.labels.tolist()):
            images[label] += 1
        for label in record.labels.tolist():
            objects[label] += 1
    parts = [f"{name} ({images[i]} image{'s' * (images[i] != 1)}, {objects[i]} object{'s' * (objects[i] != 1)})"
             for i, name in enumerate(dataset.class_names[:max_listed])]
    more = dataset.num_classes - max_listed
    listed = ", ".join(parts) + (f", … {more} more" if more > 0 else "")
    return f"{dataset.num_classes} class(es) found in {len(dataset)} training images: {listed}"


def check_config(config):
    """Refuse option values that cannot train (raise :class:`UsageError` with the allowed range):
    learning rate > 0 and finite, probabilities in [0, 1], sizes > 0, counts ≥ 1."""
    check_number("epochs", config.epochs, minimum=1, integer=True)
    check_number("batch_size", config.batch_size, minimum=1, integer=True)
    check_number("val_every", config.val_every, minimum=1, integer=True)
    check_number("lr", config.lr, above=0)
    check_number("weight_decay", config.weight_decay, minimum=0)
    check_number("warmup_epochs", config.warmup_epochs, minimum=0)
    check_number("flip", config.flip, minimum=0, maximum=1)
    check_number("random_crop", config.random_crop, minimum=0, maximum=1)
    check_number("crop_min_scale", config.crop_min_scale, above=0, maximum=1)
    check_number("zoom_out", config.zoom_out, minimum=1)
    check_number("image_min_size", config.image_min_size, minimum=1, integer=True)
    check_number("image_max_size", config.image_max_size, minimum=1, integer=True)
    if config.image_min_size and config.image_max_size and config.image_max_size < config.image_min_size:
        raise UsageError(f"--image-max-size ({config.image_max_size}) must be ≥ --image-min-size "
                         f"({config.image_min_size})")
    for size in config.anchor_sizes or ():
        check_number("anchor_sizes", size, above=0)
    if config.metric not in METRICS:
        raise UsageError(f"--metric must be one of {', '.join(METRICS)}, got {config.metric!r}")
    if config.optimizer not in ("adam", "sgd"):
        raise UsageError(f"--optimizer must be adam or sgd, got {config.optimizer!r}")
    if config.verbose not in (0, 1, 2):
        raise UsageError(f"--verbose must be 0, 1 or 2, got {config.verbose!r}")


def _command_line():
    """The command as typed, for config.json (a script calling :func:`train` shows as
    ``rcnn-zoo`` with its own arguments)."""
    return " ".join(["rcnn-zoo"] + [a if a and " " not in a else json.dumps(a) for a in sys.argv[1:]])


def train(config, callbacks=None):
    """Train a Faster R-CNN as :class:`TrainConfig` ``config`` says; see ``rcnn-zoo train --help``.

    Writes into ``config.output_dir``: ``last.keras`` (every epoch), ``best.keras`` (best
    ``val_mAP``, with a validation set), ``history.csv``, ``training_curves.png``,
    ``config.json`` and, while running, ``backup/`` (re-running the same command after an
    interruption continues from the last finished epoch). ``callbacks``: more Keras callbacks,
    run after the built-in ones. Problems with the data paths or options raise
    :class:`rcnn_zoo.errors.UsageError`.

    Returns:
        dict: ``model`` (the trained detector), ``output_dir``, ``history`` (rows of
        history.csv), ``epochs_done``, ``wall_seconds``, ``cpu_seconds``, ``paths``.
    """
    check_config(config)
    out = config.output_dir
    paths = {
        name: os.path.join(out, file)
        for name, file in (
            ("best", "best.keras"), ("last", "last.keras"), ("history", "history.csv"),
            ("curves", "training_curves.png"), ("config", "config.json"), ("backup", "backup"),
        )
    }
    interrupted_at = read_progress(paths["backup"])
    if interrupted_at is not None and not os.path.isfile(paths["last"]):
        interrupted_at = None  # progress without its model (deleted by hand): start afresh
    finished_before = os.path.isfile(paths["last"]) and interrupted_at is None
    if finished_before and not config.resume:
        raise UsageError(
            f"{out} already holds a trained model (last.keras); pass --resume to train it further "
            "or choose another --output-dir"
        )
    if config.resume and not finished_before and interrupted_at is None:
        raise UsageError(f"--resume: nothing to resume in {out} (no last.keras, no backup/)")

    # Data. The format's class order comes from the training set.
    split = config.split
    if config.format == "voc" and split is None and config.data and os.path.isdir(config.data):
        split = default_split(config.data, "train")
    train_set = load_dataset(config.data, config.format, split, config.annotations, config.images)
    val_set = None
    if config.val_split or config.val_annotations:
        val_set = load_dataset(config.data, config.format, config.val_split, config.val_annotations,
                               config.val_images, class_names=train_set.class_names)
    if sum(len(r.labels) for r in train_set.records) == 0:
        raise UsageError(f"the training set {train_set.source} has no objects")
    if val_set is not None and sum(len(r.labels) for r in val_set.records) == 0:
        # mAP is undefined without objects: every epoch would log val_mAP nan, no best.keras.
        raise UsageError(f"the validation set {val_set.source} has no objects of the training "
                         f"classes ({', '.join(train_set.class_names[:5])}); val mAP needs some")
    print(class_summary(train_set))

    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    if finished_before or interrupted_at:  # model and optimizer state from last.keras
        model = load_model(paths["last"], compile=True)
        if list(model.class_names or []) != train_set.class_names:
            raise UsageError(f"{paths['last']}: the model's classes {model.class_names} differ from "
                             f"the data's {train_set.class_names}")
        initial_epoch = interrupted_at or len(read_history(paths["history"]))
    else:
        model = build_detector(train_set.num_classes, train_set.class_names, config.backbone,
                               config.image_min_size, config.image_max_size, config.anchor_sizes,
                               parse_model_args(config.model_args))
        model.compile(optimizer=_optimizer(config))
        initial_epoch = interrupted_at or 0
    if initial_epoch >= config.epochs:
        print(f"{out}: already trained {initial_epoch} epoch(s) ≥ --epochs {config.epochs}; nothing to do.")
        return {"model": model, "output_dir": out, "history": read_history(paths["history"]),
                "epochs_done": initial_epoch, "wall_seconds": 0.0, "cpu_seconds": 0.0, "paths": paths}
    continuing = initial_epoch > 0
    if continuing:
        how = "interrupted run (backup/progress.json, last.keras)" if interrupted_at else "last.keras"
        print(f"Resuming from the {how} at epoch {initial_epoch + 1} of {config.epochs}.")

    min_size, max_size = model.image_min_size, model.image_max_size
    train_data = training_dataset(
        train_set, config.batch_size, min_size, max_size, flip=config.flip, jitter=config.jitter,
        crop=config.random_crop, crop_min_scale=config.crop_min_scale, zoom_out=config.zoom_out,
        seed=config.seed,
    )
    steps = steps_per_epoch(train_set, config.batch_size)
    callbacks = _training_callbacks(config, paths, steps, val_set, train_set.class_names, initial_epoch) + list(
        callbacks or []
    )

    record = {
        "command": _command_line(),
        "arguments": dataclasses.asdict(config),
        "class_names": train_set.class_names,
        "num_train_images": len(train_set),
        "num_val_images": len(val_set) if val_set is not None else 0,
        "image_min_size": min_size,
        "image_max_size": max_size,
        "model": {k: v for k, v in model.get_config().items() if k not in ("dtype",)},
    }
    previous = {}
    if continuing and os.path.isfile(paths["config"]):
        with open(paths["config"], encoding="utf-8") as handle:
            previous = json.load(handle)
    record["runs"] = previous.get("runs", [])
    write_json(paths["config"], record)
    print(f"Training {model.backbone_name} Faster R-CNN on {len(train_set)} images "
          f"({', '.join(train_set.class_names[:10])}{' …' if train_set.num_classes > 10 else ''}), "
          f"validating on {len(val_set) if val_set else 0}; images resized to shorter side "
          f"{min_size}, longer ≤ {max_size}. Output: {out}")

    wall, cpu = time.time(), time.process_time()
    try:
        with warnings.catch_warnings():
            # The batches come from a tf.data pipeline that shuffles itself; Keras' note that
            # fit's shuffle=True does not apply to it would be noise. (Its "ran out of data"
            # warning is not hidden: the pipeline's length is known, so it must not appear.)
            warnings.filterwarnings("ignore", message=".*shuffle=True.*")
            model.fit(train_data, epochs=config.epochs, initial_epoch=initial_epoch,
                      callbacks=callbacks, verbose=config.verbose)
    except TrainingDiverged:
        if config.verbose == 1:
            print(file=sys.stderr)  # end the progress-bar line before the error message
        raise
    finally:
        wall, cpu = time.time() - wall, time.process_time() - cpu
        history = read_history(paths["history"])
        record["runs"].append({"from_epoch": initial_epoch, "to_epoch": len(history),
                               "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)})
        record["epochs_done"] = len(history)
        write_json(paths["config"], record)
        if history:
            plot_training_curves(paths["history"], paths["curves"])
    summary = f"Trained {len(history) - initial_epoch} epoch(s) in {wall / 60:.1f} min ({cpu / 60:.1f} CPU min)."
    maps = [r["val_mAP"] for r in history if not math.isnan(r.get("val_mAP", float("nan")))]
    if maps:
        summary += f" Best val_mAP {max(maps):.4f} (saved {paths['best']})."
    print(summary + f" Last model: {paths['last']}")
    return {"model": model, "output_dir": out, "history": history, "epochs_done": len(history),
            "wall_seconds": wall, "cpu_seconds": cpu, "paths": paths}


# ==========================================================================================
# Faster R-CNN's 4-step alternating training


# Which parts train and which losses count in each of the four steps.
_STEPS = (
    # (name, trainable parts, losses that count)
    ("1: RPN", ("backbone", "rpn_head"), ("rpn_cls", "rpn_box")),
    ("2: detector", ("backbone", "box_head", "box_predictor"), ("cls", "box")),
    ("3: RPN head, shared convs fixed", ("rpn_head",), ("rpn_cls", "rpn_box")),
    ("4: detector head, shared convs fixed", ("box_head", "box_predictor"), ("cls", "box")),
)
_PARTS = ("backbone", "rpn_head", "box_head", "box_predictor")


def alternating_training(model, dataset, epochs=(1, 1, 1, 1), optimizer=None, verbose=1, **fit_kwargs):
    """Faster R-CNN's 4-step alternating training (Ren et al. 2015, section 3.2).

    1. train the backbone and RPN with the RPN losses only;
    2. train the backbone and the detection head with the detection losses only, on proposals
       of the step-1 RPN;
    3. fix the shared conv layers, fine-tune the RPN head;
    4. fix the shared conv layers, fine-tune the detection head.

    The paper initialises step 2 from ImageNet in a second network; with one shared backbone
    step 2 continues from step 1 instead (as detectron-style reimplementations do). Each step
    compiles the model anew, so pass a factory for a fresh optimizer per step.

    Args:
        model: a :class:`~rcnn_zoo.FasterRCNN` (or any detector with ``backbone``,
            ``rpn_head``, ``box_head`` and ``box_predictor``).
        dataset: training data as for ``fit``.
        epochs: epochs of each of the four steps.
        optimizer: ``None`` (the detector's default) or a zero-argument callable returning a
            fresh optimizer.
        **fit_kwargs: passed to every ``fit`` call (``callbacks``, ``validation_data``, …).

    Returns:
        list of the four ``History`` objects.
    """
    if len(epochs) != 4:
        raise ValueError(f"epochs needs one entry per step (4), got {epochs}")
    trainable_before = {part: getattr(model, part).trainable for part in _PARTS}
    histories = []
    try:
        for (name, parts, losses), step_epochs in zip(_STEPS, epochs):
            for part in _PARTS:
                getattr(model, part).trainable = part in parts
            weights = {loss: (1.0 if loss in losses else 0.0) for loss in model.LOSS_NAMES}
            model.compile(optimizer=optimizer() if optimizer else None, loss_weights=weights)
            if verbose:
                print(f"Alternating training step {name}: {step_epochs} epoch(s)")
            histories.append(model.fit(dataset, epochs=step_epochs, verbose=verbose, **fit_kwargs))
    finally:
        for part, flag in trainable_before.items():
            getattr(model, part).trainable = flag
    return histories
