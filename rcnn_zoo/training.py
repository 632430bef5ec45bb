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
    save_model_atomically,
    remove_stale_temporaries,
)
from rcnn_zoo.data import evaluation_dataset, load_dataset, make_tf_dataset, steps_per_epoch, training_dataset
from rcnn_zoo.data.loading import default_split
from rcnn_zoo.errors import UsageError, check_number
from rcnn_zoo.evaluation import (
    METRICS,
    MeanAveragePrecisionCallback,
    evaluate_detections,
    evaluation_batches,
    predict_detections,
)
from rcnn_zoo.inference import image_proposals, load_model, boxes_in_model_format
from rcnn_zoo.models.registry import detector_name, get_detector
from rcnn_zoo.utils import progress, write_json
from rcnn_zoo.visualization import plot_training_curves

__all__ = [
    "CLI_ANCHOR_SIZES",
    "CLI_IMAGE_SIZES",
    "DETECTOR_TITLES",
    "DETECTOR_TRAINING",
    "RCNN_REGIONS_PER_BATCH_IMAGE",
    "CosineLearningRate",
    "TrainConfig",
    "alternating_training",
    "check_config",
    "check_detector_options",
    "class_summary",
    "build_detector",
    "image_sizes",
    "parse_model_args",
    "proposal_training_dataset",
    "read_history",
    "train",
    "train_rcnn_stages",
]

# Backbones whose own default is "keep the input size" (tiny: made for 128-px test pictures) get
# these image sizes and anchors from the CLI instead: photos need resizing, and anchors that match
# the objects of photos resized so.
CLI_IMAGE_SIZES = {"tiny": (256, 416)}
CLI_ANCHOR_SIZES = {"tiny": (32, 64, 128, 256)}

# The name of each detector in messages, and how `rcnn-zoo train` trains it (its --help).
DETECTOR_TITLES = {"faster_rcnn": "Faster R-CNN", "rfcn": "R-FCN", "fast_rcnn": "Fast R-CNN", "rcnn": "R-CNN"}
DETECTOR_TRAINING = {
    "faster_rcnn": "RPN and RoI head in one fit (approximate joint training)",
    "rfcn": "the same fit, position-sensitive score maps, OHEM",
    "fast_rcnn": "the same fit on selective search proposals, computed once per image and cached in "
                 "<output-dir>/proposals/ (no --random-crop, --zoom-out)",
    "rcnn": "the paper's three stages: --epochs epochs of fine-tuning the CNN on warped regions "
            "(an epoch draws about as many regions as there are, in batches of 32 x --batch-size, "
            "25% foreground), then per-class SVMs (3 rounds of hard negative mining) and box "
            "regressors; last.keras is written after the last stage, an interrupted run starts "
            "again (proposals stay cached); no augmentation (--flip is ignored), no image sizes "
            "or anchors",
}
# R-CNN fine-tunes on batches of this many warped regions per --batch-size (4 → the paper's 128).
RCNN_REGIONS_PER_BATCH_IMAGE = 32


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


def _detector_class(detector):
    """The registry's class of ``detector``, or a UsageError listing the names."""
    try:
        return get_detector(detector)
    except ValueError as error:
        raise UsageError(f"--detector: {error}") from error


def build_detector(num_classes, class_names, backbone="tiny", image_min_size=None,
                   image_max_size=None, anchor_sizes=None, model_args=None, detector="faster_rcnn"):
    """The detector named ``detector`` (see :data:`rcnn_zoo.models.registry.DETECTORS`; default
    a Faster R-CNN) from CLI-style arguments.

    ``anchor_sizes`` (``faster_rcnn``, ``rfcn``): a flat list of pixel sizes: all on the one
    level of a single-level backbone, one per level of an FPN. The image sizes apply to every
    detector but ``rcnn``, which warps each region to its ``warp_size`` instead.
    ``model_args``: further keyword arguments of the detector's class.
    """
    cls = _detector_class(detector)
    detector = detector_name(cls)  # "FastRCNN" → "fast_rcnn"
    if backbone not in BACKBONES:
        raise UsageError(f"unknown backbone {backbone!r}; choose one of {', '.join(sorted(BACKBONES))}")
    kwargs = dict(model_args or {})
    if detector in ("fast_rcnn", "rcnn") and (anchor_sizes or "anchor_sizes" in kwargs):
        raise UsageError(f"--anchor-sizes: {DETECTOR_TITLES[detector]} has no anchors (its proposals "
                         "come from selective search)")
    if detector == "rcnn":
        if image_min_size is not None or image_max_size is not None:
            raise UsageError("--image-min-size/--image-max-size do not apply to R-CNN: it warps each "
                             "region to warp_size pixels (--model-arg warp_size=N)")
    else:
        image_min_size, image_max_size = image_sizes(backbone, image_min_size, image_max_size)
    # Only sizes actually chosen are passed: None must not override a backbone's default.
    if image_min_size is not None:
        kwargs.setdefault("image_min_size", image_min_size)
    if image_max_size is not None:
        kwargs.setdefault("image_max_size", image_max_size)
    if detector in ("faster_rcnn", "rfcn"):
        if not anchor_sizes and "anchor_sizes" not in kwargs:
            anchor_sizes = CLI_ANCHOR_SIZES.get(backbone)
        if anchor_sizes:
            sizes = [float(s) for s in anchor_sizes]
            fpn = backbone.endswith("_fpn")
            kwargs["anchor_sizes"] = tuple((s,) for s in sizes) if fpn else (tuple(sizes),)
    try:
        return cls(num_classes=num_classes, class_names=list(class_names), backbone=backbone, **kwargs)
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
    detector: str = "faster_rcnn"


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
        RunProgress(paths["backup"], config.epochs, initial_epoch),
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


def check_detector_options(config):
    """Refuse what the chosen detector cannot train with (raise :class:`UsageError`): an unknown
    ``--detector`` (the message lists the names); for ``fast_rcnn`` and ``rcnn``, whose selective
    search proposals are computed once per original image, ``--random-crop``, ``--zoom-out`` and
    ``--anchor-sizes``; for ``rcnn``, which trains on warped regions of the original images,
    also ``--jitter`` and the image sizes."""
    name = detector_name(_detector_class(config.detector))
    title = DETECTOR_TITLES[name]
    if name not in ("fast_rcnn", "rcnn"):
        return
    why = "its selective search proposals are computed once per original image and would not follow"
    if config.random_crop:
        raise UsageError(f"--random-crop is not supported with --detector {name}: {why} the crop")
    if config.zoom_out and config.zoom_out > 1:
        raise UsageError(f"--zoom-out is not supported with --detector {name}: {why} the canvas")
    if config.anchor_sizes:
        raise UsageError(f"--anchor-sizes: {title} has no anchors (its proposals come from selective search)")
    if name == "rcnn" and config.jitter:
        raise UsageError("--jitter is not supported with --detector rcnn: it fine-tunes on warped regions "
                         "of the original images, without augmentation")
    if name == "rcnn" and (config.image_min_size is not None or config.image_max_size is not None):
        raise UsageError("--image-min-size/--image-max-size do not apply to R-CNN: it warps each region "
                         "to warp_size pixels (--model-arg warp_size=N)")


def _command_line():
    """The command as typed, for config.json (a script calling :func:`train` shows as
    ``rcnn-zoo`` with its own arguments)."""
    return " ".join(["rcnn-zoo"] + [a if a and " " not in a else json.dumps(a) for a in sys.argv[1:]])


def train(config, callbacks=None):
    """Train the detector ``config.detector`` (default a Faster R-CNN) as :class:`TrainConfig`
    ``config`` says; see ``rcnn-zoo train --help``. Fast R-CNN's selective search proposals and
    R-CNN's are cached in ``<output_dir>/proposals/``; R-CNN trains in stages
    (:func:`train_rcnn_stages`) and writes ``last.keras`` once, after its last stage.

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
    check_detector_options(config)
    out = config.output_dir
    paths = {
        name: os.path.join(out, file)
        for name, file in (
            ("best", "best.keras"), ("last", "last.keras"), ("history", "history.csv"),
            ("curves", "training_curves.png"), ("config", "config.json"), ("backup", "backup"),
        )
    }
    # A run killed while writing leaves hidden temporaries; the files themselves are whole.
    remove_stale_temporaries(out, [os.path.basename(paths[k]) for k in ("best", "last", "history", "curves",
                                                                         "config")])
    remove_stale_temporaries(paths["backup"], ["progress.json"])
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
        wanted, trained = detector_name(_detector_class(config.detector)), detector_name(model)
        if trained != wanted:
            raise UsageError(f"{paths['last']} was trained with --detector {trained}, not {wanted}; leave "
                             f"--detector out (or pass --detector {trained}) to continue it")
        if list(model.class_names or []) != train_set.class_names:
            raise UsageError(f"{paths['last']}: the model's classes {model.class_names} differ from "
                             f"the data's {train_set.class_names}")
        initial_epoch = interrupted_at or len(read_history(paths["history"]))
    else:
        model = build_detector(train_set.num_classes, train_set.class_names, config.backbone,
                               config.image_min_size, config.image_max_size, config.anchor_sizes,
                               parse_model_args(config.model_args), detector=config.detector)
        if detector_name(model) != "rcnn":  # R-CNN's stages compile their own models
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

    name = detector_name(model)
    min_size, max_size = getattr(model, "image_min_size", None), getattr(model, "image_max_size", None)
    proposal_cache = os.path.join(out, "proposals")  # selective search, once per image and settings
    regions = val_batches = None
    if name == "rcnn":
        regions = _rcnn_regions(model, train_set, proposal_cache, config.verbose)
    elif name == "fast_rcnn":
        train_data = proposal_training_dataset(model, train_set, config, proposal_cache)
        steps = math.ceil(len(train_set) / config.batch_size)
    else:
        train_data = training_dataset(
            train_set, config.batch_size, min_size, max_size, flip=config.flip, jitter=config.jitter,
            crop=config.random_crop, crop_min_scale=config.crop_min_scale, zoom_out=config.zoom_out,
            seed=config.seed,
        )
        steps = steps_per_epoch(train_set, config.batch_size)
    if val_set is not None and name in ("fast_rcnn", "rcnn"):
        val_batches = evaluation_batches(model, val_set, proposal_cache, verbose=config.verbose)
    if name != "rcnn":
        callbacks = _training_callbacks(config, paths, steps, val_set, train_set.class_names, initial_epoch) + list(
            callbacks or []
        )
        for callback in callbacks:  # validation batches with their proposals
            if val_batches is not None and isinstance(callback, MeanAveragePrecisionCallback):
                callback.validation_data = val_batches

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
    if name == "rcnn":
        sizes = (f"regions warped to {model.warp_size}×{model.warp_size} px with {model.context_padding:g} px "
                 "of context")
    else:
        sizes = f"images resized to shorter side {min_size}, longer ≤ {max_size}"
    print(f"Training {model.backbone_name} {DETECTOR_TITLES[name]} on {len(train_set)} images "
          f"({', '.join(train_set.class_names[:10])}{' …' if train_set.num_classes > 10 else ''}), "
          f"validating on {len(val_set) if val_set else 0}; {sizes}. Output: {out}")

    wall, cpu = time.time(), time.process_time()
    try:
        with warnings.catch_warnings():
            # The batches come from a tf.data pipeline that shuffles itself; Keras' note that
            # fit's shuffle=True does not apply to it would be noise. (Its "ran out of data"
            # warning is not hidden: the pipeline's length is known, so it must not appear.)
            warnings.filterwarnings("ignore", message=".*shuffle=True.*")
            if name == "rcnn":
                train_rcnn_stages(model, regions, config, paths, initial_epoch, callbacks, val_batches,
                                  len(val_set) if val_set is not None else 0)
            else:
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
# Fast R-CNN's batches and R-CNN's stages


def proposal_training_dataset(model, dataset, config, cache_dir=None):
    """Fast R-CNN's training batches: :func:`rcnn_zoo.data.make_tf_dataset` (resized by the
    model's rule, ``config``'s flip and jitter, shuffled) with each image's selective search
    proposals attached by :func:`rcnn_zoo.proposals.add_proposals` (scaled and mirrored with
    the image). The proposals are computed once per image with
    :func:`rcnn_zoo.inference.image_proposals` and cached in ``cache_dir``.

    Returns:
        ``tf.data.Dataset`` of ``({"images", "image_sizes", "proposals" [B, R, 4]},
        {"boxes", "labels"})``, ``ceil(N / batch_size)`` batches an epoch.
    """
    from rcnn_zoo.proposals import add_proposals  # noqa: PLC0415 (OpenCV is optional)

    records = dataset.records
    proposals = image_proposals(model, [r.image_path for r in records], cache_dir=cache_dir,
                                verbose=config.verbose)
    batches = make_tf_dataset(
        records, batch_size=config.batch_size, training=True, min_size=model.image_min_size,
        max_size=model.image_max_size, flip=config.flip, jitter=config.jitter or None, seed=config.seed,
        use_difficult=dataset.use_difficult, cache=True, return_metadata=True,
    )
    batches = add_proposals(batches, proposals)
    return batches.map(lambda inputs, targets: (inputs, {"boxes": targets["boxes"], "labels": targets["labels"]}))


def _rcnn_regions(model, dataset, cache_dir=None, verbose=1):
    """R-CNN's candidate regions (:meth:`RCNN.prepare_regions`) of a training set: each image
    decoded as the input pipeline decodes it, its objects (difficult ones left out unless the
    dataset uses them) and its selective search proposals (cached in ``cache_dir``)."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    records = dataset.records
    proposals = image_proposals(model, [r.image_path for r in records], cache_dir=cache_dir, verbose=verbose)
    images, boxes, labels = [], [], []
    for record in records:
        data = tf.io.read_file(record.image_path)
        images.append(tf.io.decode_image(data, channels=3, expand_animations=False).numpy())
        keep = np.ones(len(record.labels), bool) if dataset.use_difficult else ~record.difficult
        boxes.append(boxes_in_model_format(model, record.boxes[keep], record.height, record.width))
        labels.append(record.labels[keep])
    return model.prepare_regions(images, boxes, labels, proposals=proposals)


def train_rcnn_stages(model, regions, config, paths, initial_epoch=0, callbacks=None, val_batches=None,
                      num_val_images=0):
    """R-CNN's three training stages, with ``rcnn-zoo train``'s options mapped onto them.

    1. :meth:`RCNN.fine_tune`: epochs ``initial_epoch … config.epochs`` of ``ceil(K / n)``
       batches of ``n = 32 · config.batch_size`` warped regions (25 % foreground, drawn anew
       every epoch), ``K`` the candidate regions (ground truth + proposals): an epoch draws
       about as many regions as there are. Optimizer, ``lr``, weight decay and the warm-up +
       cosine curve as for the other detectors; ``history.csv`` gets a row per epoch (``loss``,
       ``accuracy``, ``lr``) and the plot is redrawn. ``callbacks`` run in this stage's ``fit``.
    2. :meth:`RCNN.train_svms` with the paper's settings (C = 1e-3, 3 rounds of hard negative
       mining).
    3. :meth:`RCNN.train_box_regressors` (ridge, λ = 1000).

    Then ``paths["last"]`` is written; with ``val_batches`` (:func:`rcnn_zoo.evaluation.
    evaluation_batches`) the validation mAP (``config.metric``) goes into the last row of
    ``history.csv``, and ``paths["best"]`` is written when it beats every earlier run's.
    """
    region_batch = RCNN_REGIONS_PER_BATCH_IMAGE * config.batch_size
    steps = max(1, math.ceil(len(regions) / region_batch))
    data = model.fine_tune_dataset(regions, num_batches=steps, batch_size=region_batch, seed=config.seed)
    earlier = [r for r in read_history(paths["history"]) if r["epoch"] < initial_epoch]
    advice = (f"nothing was saved (R-CNN writes last.keras after its last stage). Try a lower --lr "
              f"(now {config.lr:g}) and run the command again")
    stage_callbacks = [
        StopOnDivergence(advice),
        CosineLearningRate(config.lr, config.epochs, steps, config.warmup_epochs),
        HistoryCSV(paths["history"], earlier),
        TrainingCurves(paths["history"], paths["curves"]),
    ] + list(callbacks or [])
    say = print if config.verbose else (lambda *args, **kwargs: None)
    say(f"R-CNN stage 1 of 3: fine-tuning the CNN on {len(regions)} regions, epochs {initial_epoch + 1}–"
        f"{config.epochs}, {steps} batch(es) of {region_batch} warped regions each", flush=True)
    model.fine_tune(data, epochs=config.epochs, initial_epoch=initial_epoch, optimizer=_optimizer(config),
                    callbacks=stage_callbacks, verbose=config.verbose)
    say("R-CNN stage 2 of 3: a linear SVM per class on fc7 features, hard negative mining", flush=True)
    model.train_svms(regions, seed=config.seed)
    say("R-CNN stage 3 of 3: box regressors on pool5 features", flush=True)
    model.train_box_regressors(regions, seed=config.seed)
    save_model_atomically(model, paths["last"])
    if val_batches is None:
        return
    found, truths, _ = predict_detections(model, progress(val_batches, num_val_images, verbose=config.verbose))
    value = float(evaluate_detections(found, truths, model.num_classes, config.metric)["mAP"])
    rows = read_history(paths["history"])
    if rows:
        last = dict(rows[-1], val_mAP=value)
        HistoryCSV(paths["history"], rows[:-1]).on_epoch_end(last.pop("epoch"), last)
        plot_training_curves(paths["history"], paths["curves"])
    before = [r.get("val_mAP") for r in rows[:-1]]
    before = [v for v in before if v is not None and not math.isnan(v)]
    if not math.isnan(value) and value > max(before, default=-math.inf):
        save_model_atomically(model, paths["best"])
    say(f"val_mAP {value:.4f}")


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
