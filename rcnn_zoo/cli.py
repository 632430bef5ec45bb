"""``rcnn-zoo``: train, evaluate, run and export detectors from the command line.

    rcnn-zoo demo
    rcnn-zoo train --data ../shared/datasets/raccoon --format voc --split train --val-split test \\
        --backbone tiny --epochs 80 --random-crop 0.5 --zoom-out 1.5 --jitter --output-dir runs/raccoon
    rcnn-zoo evaluate --model runs/raccoon/best.keras --data ../shared/datasets/raccoon --split test
    rcnn-zoo predict --model runs/raccoon/best.keras --images photos/ --output-dir detections
    rcnn-zoo export --model runs/raccoon/best.keras --output serving/raccoon/1
    rcnn-zoo convert --from torchvision --input x.pth --output coco.weights.h5

Every subcommand is also a Python function here, so scripts reuse them (see
``examples/train_custom_voc.py``): :class:`TrainConfig` + :func:`train`, :func:`load_dataset`,
:func:`training_dataset`, :func:`evaluation_dataset`, :func:`evaluate_model`,
:func:`format_ap_table`, :func:`predict_images`, :func:`plot_training_curves`.

Shapes: B images in a batch, G ground-truth boxes per image (padded with label −1), n boxes of one
image. Boxes are float32 xyxy in pixels (``docs/conventions.md``).

Training data. Each image is resized by the model's own rule (shorter side ``image_min_size``,
longer side at most ``image_max_size``) in the input pipeline, after the augmentations, and
batches hold images of one orientation only. The model resizes a padded batch by one scale
computed from the padded size; for such batches that scale is exactly 1, so what the model trains
on is what the pipeline made. (A batch mixing a portrait and a landscape image would pad to a
square and be shrunk.) Evaluation and prediction feed one original image at a time and let the
model resize it.

Errors in what the user typed (paths, formats, options) print one line on stderr and exit with
code 2; ``--debug`` shows the traceback instead.
"""

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
import warnings

PROG = "rcnn-zoo"
FORMATS = ("voc", "coco")
METRICS = ("voc", "voc07", "coco")
EXPORT_INPUT_TYPES = ("image_tensor", "encoded_image_string_tensor", "float_image_tensor")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Backbones whose own default is "keep the input size" (tiny: made for 128-px test pictures) get
# these image sizes and anchors from the CLI instead: photos need resizing, and anchors that match
# the objects of photos resized so.
CLI_IMAGE_SIZES = {"tiny": (256, 416)}
CLI_ANCHOR_SIZES = {"tiny": (32, 64, 128, 256)}
EXIT_USAGE = 2


class CLIError(Exception):
    """A problem with what the user asked for; ``main`` prints it as one line, exit code 2."""


# ==========================================================================================
# Datasets


def _default_split(root, name):
    """``name`` if ``root`` has a split file of that name (plain folder or devkit), else None."""
    for path in (os.path.join(root, f"{name}.txt"), os.path.join(root, "ImageSets", "Main", f"{name}.txt")):
        if os.path.isfile(path):
            return name
    return None


def _relabel(dataset, class_names):
    """``dataset`` with labels renumbered to the order of ``class_names`` (by name); objects of
    other classes are dropped. Used when a COCO file is read for a model trained elsewhere."""
    import numpy as np  # noqa: PLC0415
    from rcnn_zoo.data import DetectionDataset  # noqa: PLC0415

    index = {name: i for i, name in enumerate(class_names)}
    missing = [name for name in dataset.class_names if name not in index]
    if len(missing) == len(dataset.class_names):
        raise CLIError(
            f"none of the dataset's classes {dataset.class_names[:5]} are among the model's "
            f"classes {list(class_names)[:5]}"
        )
    mapping = np.array([index.get(name, -1) for name in dataset.class_names], np.int32)
    records = []
    for record in dataset.records:
        labels = mapping[record.labels] if len(record.labels) else record.labels
        keep = labels >= 0
        records.append(
            dataclasses.replace(
                record,
                boxes=record.boxes[keep],
                labels=labels[keep],
                difficult=record.difficult[keep],
                areas=None if record.areas is None else record.areas[keep],
            )
        )
    return DetectionDataset(records, class_names, use_difficult=dataset.use_difficult,
                            source=dataset.source, problems=dataset.problems)


def load_dataset(data=None, format="voc", split=None, annotations=None, images=None, class_names=None):
    """Read a dataset for training or evaluation, turning reader errors into :class:`CLIError`.

    Args:
        data: VOC: the dataset folder (devkit ``VOC2007`` or a plain folder with ``images/``,
            ``annotations/`` and ``<split>.txt``). COCO: a folder that ``annotations`` and
            ``images`` are relative to, or the JSON file itself.
        format: ``"voc"`` or ``"coco"``.
        split: VOC split name or file; ``None`` = every XML. Ignored for COCO.
        annotations, images: COCO instances JSON and image folder (default: the JSON's folder,
            or ``data``).
        class_names: the class order to use (a trained model's); ``None``: the dataset's.

    Returns:
        :class:`rcnn_zoo.data.DetectionDataset` with at least one image.
    """
    from rcnn_zoo.data import DatasetError, read_coco, read_voc  # noqa: PLC0415

    if format not in FORMATS:
        raise CLIError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    try:
        if format == "voc":
            if data is None:
                raise CLIError("--data is required: the VOC dataset folder")
            if not os.path.isdir(data):
                raise CLIError(f"dataset folder not found: {data}")
            dataset = read_voc(data, split=split, class_names=class_names)
        else:
            annotations, images = _coco_paths(data, annotations, images)
            dataset = read_coco(annotations, images)
            if class_names is not None and list(class_names) != dataset.class_names:
                dataset = _relabel(dataset, list(class_names))
    except (FileNotFoundError, DatasetError) as error:
        raise CLIError(str(error)) from error
    except ValueError as error:  # e.g. "no images listed"
        raise CLIError(f"cannot read {format.upper()} data from {data or annotations}: {error}") from error
    if len(dataset) == 0:
        raise CLIError(f"no usable images in {dataset.source} (see the warning above)")
    return dataset


def _coco_paths(data, annotations, images):
    if annotations is None:
        if data is not None and str(data).endswith(".json"):
            annotations = data
        else:
            raise CLIError("--format coco needs --annotations instances.json (or --data file.json)")
    base = data if data is not None and os.path.isdir(data) else None
    if not os.path.isfile(annotations) and base and os.path.isfile(os.path.join(base, annotations)):
        annotations = os.path.join(base, annotations)
    if not os.path.isfile(annotations):
        raise CLIError(f"COCO annotation file not found: {annotations}")
    if images is None:
        images = base or os.path.dirname(os.path.abspath(annotations))
    elif not os.path.isdir(images) and base and os.path.isdir(os.path.join(base, images)):
        images = os.path.join(base, images)
    if not os.path.isdir(images):
        raise CLIError(f"image folder not found: {images}")
    return annotations, images


# ==========================================================================================
# Input pipelines


def _resize_rule(height, width, min_size, max_size):
    """The detector's resize rule (``models/preprocessing.resize_scale``) for one image, as
    tensors: shorter side ``min_size`` unless the longer would pass ``max_size``."""
    import tensorflow as tf  # noqa: PLC0415

    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    scale = tf.constant(1.0)
    if min_size is not None:
        scale = float(min_size) / tf.minimum(height, width)
    if max_size is not None:
        limit = float(max_size) / tf.maximum(height, width)
        scale = limit if min_size is None else tf.minimum(scale, limit)
    return scale


def _random_crop(image, boxes, labels, seed, min_scale):
    """Crop a random window of ``min_scale … 1`` of each side; keep boxes whose centre is in
    it (clipped). When no box would remain, the image is left as it is."""
    import tensorflow as tf  # noqa: PLC0415

    shape = tf.shape(image)
    size = tf.cast(shape[:2], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    fraction = tf.random.stateless_uniform([2], seeds[0], min_scale, 1.0)
    crop = tf.maximum(tf.cast(tf.round(size * fraction), tf.int32), 1)
    room = tf.cast(shape[:2] - crop, tf.float32)
    start = tf.cast(tf.floor(tf.random.stateless_uniform([2], seeds[1]) * (room + 1.0)), tf.int32)
    start = tf.minimum(start, shape[:2] - crop)
    y0, x0 = tf.cast(start[0], tf.float32), tf.cast(start[1], tf.float32)
    ch, cw = tf.cast(crop[0], tf.float32), tf.cast(crop[1], tf.float32)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    inside = (cx > x0) & (cx < x0 + cw) & (cy > y0) & (cy < y0 + ch)
    moved = boxes - tf.stack([x0, y0, x0, y0])
    moved = tf.minimum(tf.maximum(moved, 0.0), tf.stack([cw, ch, cw, ch]))

    def cropped():
        window = image[start[0] : start[0] + crop[0], start[1] : start[1] + crop[1]]
        return window, tf.boolean_mask(moved, inside), tf.boolean_mask(labels, inside)

    usable = tf.reduce_any(inside) | (tf.size(labels) == 0)
    return tf.cond(usable, cropped, lambda: (image, boxes, labels))


def _zoom_out(image, boxes, seed, max_ratio):
    """Place the image at a random spot of a canvas ``1 … max_ratio`` times larger, filled
    with the image's mean colour (SSD's "expand")."""
    import tensorflow as tf  # noqa: PLC0415

    shape = tf.shape(image)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    ratio = tf.random.stateless_uniform([], seeds[0], 1.0, max_ratio)
    canvas = tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * ratio), tf.int32)
    room = canvas - shape[:2]
    start = tf.cast(tf.floor(tf.random.stateless_uniform([2], seeds[1]) * tf.cast(room + 1, tf.float32)), tf.int32)
    start = tf.minimum(start, room)
    mean = tf.reduce_mean(image, axis=[0, 1])
    padded = tf.pad(image - mean, [[start[0], room[0] - start[0]], [start[1], room[1] - start[1]], [0, 0]])
    offset = tf.cast(tf.stack([start[1], start[0], start[1], start[0]]), tf.float32)
    return padded + mean, boxes + offset


def training_dataset(
    dataset,
    batch_size=4,
    min_size=None,
    max_size=None,
    flip=0.5,
    jitter=False,
    crop=0.0,
    crop_min_scale=0.5,
    zoom_out=1.0,
    zoom_out_prob=0.5,
    seed=None,
):
    """Shuffled, augmented training batches for ``model.fit``.

    Per image: decode (cached in memory after the first epoch), horizontal flip with
    probability ``flip``, photometric ``jitter`` (``rcnn_zoo.data.DEFAULT_JITTER``), with
    probability ``zoom_out_prob`` a zoom-out onto a canvas up to ``zoom_out`` times larger
    (1 = off), with probability ``crop`` a random crop of ``crop_min_scale … 1`` of each side,
    then resize by the detector's rule (``min_size``, ``max_size``). Images of one orientation
    are batched together (see the module docstring).

    Returns:
        ``tf.data.Dataset`` of ``(images float32 [B,H,W,3] 0..255, {"boxes" [B,G,4] xyxy pixels,
        "labels" [B,G] −1 padded})``.
    """
    import tensorflow as tf  # noqa: PLC0415

    longest = max((max(r.height, r.width) for r in dataset.records))
    # Decode once and keep images no larger than needed (crops of up to 1/crop_min_scale zoom).
    cap = None
    if max_size is not None or min_size is not None:
        target = max_size if max_size is not None else 2 * min_size
        cap = int(math.ceil(target / (crop_min_scale if crop > 0 else 1.0)))
        cap = cap if cap < longest else None
    base = dataset.to_tf_dataset(
        batch_size=1, training=True, max_size=cap, flip=flip, jitter=jitter or None,
        seed=seed, cache=True,
    ).unbatch()
    augment_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def augment(element, rng):
        image, targets = element
        boxes, labels = targets["boxes"], targets["labels"]
        seeds = tf.random.experimental.stateless_split(tf.stack([rng, tf.constant(7, tf.int64)]), 4)
        if zoom_out > 1.0:
            image, boxes = tf.cond(
                tf.random.stateless_uniform([], seeds[0]) < zoom_out_prob,
                lambda: _zoom_out(image, boxes, seeds[1], zoom_out),
                lambda: (image, boxes),
            )
        if crop > 0:
            image, boxes, labels = tf.cond(
                tf.random.stateless_uniform([], seeds[2]) < crop,
                lambda: _random_crop(image, boxes, labels, seeds[3], crop_min_scale),
                lambda: (image, boxes, labels),
            )
        shape = tf.shape(image)
        scale = _resize_rule(shape[0], shape[1], min_size, max_size)
        new_size = tf.maximum(tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * scale), tf.int32), 1)
        factors = tf.cast(new_size, tf.float32) / tf.cast(shape[:2], tf.float32)
        image = tf.image.resize(image, new_size, method="bilinear")
        boxes = boxes * tf.stack([factors[1], factors[0], factors[1], factors[0]])
        return image, {"boxes": boxes, "labels": labels}

    per_image = tf.data.Dataset.zip(base, augment_seeds).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    shapes = ([None, None, 3], {"boxes": [None, 4], "labels": [None]})
    padding = (0.0, {"boxes": 0.0, "labels": -1})
    batches = per_image.group_by_window(
        key_func=lambda image, targets: tf.cast(tf.shape(image)[0] > tf.shape(image)[1], tf.int64),
        reduce_func=lambda key, window: window.padded_batch(batch_size, shapes, padding),
        window_size=batch_size,
    )
    return batches.prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(dataset):
    """One original image per batch with its ground truth and metadata (what
    :func:`rcnn_zoo.evaluation.predict_detections` reads); the model resizes it."""
    return dataset.to_tf_dataset(batch_size=1, training=False, return_metadata=True, cache=True)


# ==========================================================================================
# Models


def parse_model_args(items):
    """``["key=value", …]`` → dict, values parsed as JSON when they are JSON (numbers, lists,
    null, true), else kept as strings."""
    parsed = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--model-arg expects KEY=VALUE, got {item!r}")
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
    import rcnn_zoo  # noqa: PLC0415
    from rcnn_zoo.backbones import BACKBONES  # noqa: PLC0415

    if backbone not in BACKBONES:
        raise CLIError(f"unknown backbone {backbone!r}; choose one of {', '.join(sorted(BACKBONES))}")
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
        return rcnn_zoo.FasterRCNN(num_classes=num_classes, class_names=list(class_names),
                                   backbone=backbone, **kwargs)
    except (TypeError, ValueError, OSError) as error:  # unknown or bad --model-arg, weights that do not fit
        raise CLIError(str(error).splitlines()[0]) from error


def load_model(path, compile=False):
    """A detector saved with ``model.save(path)`` (``.keras``)."""
    import keras  # noqa: PLC0415
    import rcnn_zoo  # noqa: F401, PLC0415  (registers the classes for deserialisation)

    if not os.path.isfile(path):
        raise CLIError(f"model file not found: {path}")
    if not str(path).endswith(".keras"):
        raise CLIError(f"--model expects a .keras file written by model.save() (e.g. best.keras), got {path}")
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as error:  # a corrupt or foreign file: say which and why
        raise CLIError(f"cannot load model {path}: {type(error).__name__}: {error}") from error


def model_from_weights_name(name):
    """The detector a registered weight name describes, weights loaded
    (:func:`rcnn_zoo.weights.build_pretrained`)."""
    try:
        from rcnn_zoo.weights import build_pretrained  # noqa: PLC0415
    except ImportError as error:
        raise CLIError(f"named weights need rcnn_zoo.weights, which is not available ({error})") from error
    try:
        return build_pretrained(name)
    except (OSError, ValueError, RuntimeError) as error:  # unknown name, download, hash, mismatch
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CLIError(f"cannot load weights {name!r}: {message}") from error


# ==========================================================================================
# Training


@dataclasses.dataclass
class TrainConfig:
    """Everything ``rcnn-zoo train`` takes; the CLI's defaults are these."""

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
    import keras  # noqa: PLC0415

    if config.optimizer == "adam":
        if config.weight_decay:
            return keras.optimizers.AdamW(config.lr, weight_decay=config.weight_decay, global_clipnorm=10.0)
        return keras.optimizers.Adam(config.lr, global_clipnorm=10.0)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.lr, momentum=0.9, weight_decay=config.weight_decay or None,
                                    global_clipnorm=10.0)
    raise CLIError(f"--optimizer must be adam or sgd, got {config.optimizer!r}")


def _callback_classes():
    """Callbacks defined lazily so that ``rcnn-zoo --help`` does not import Keras."""
    import keras  # noqa: PLC0415

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

    return CosineLearningRate, FillMissing, TrainingCurves


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


def _keep_history_before(path, epoch):
    """Drop rows of epochs ``≥ epoch`` (written after the last backup of an interrupted run)."""
    if not os.path.isfile(path):
        return
    with open(path, newline="", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    if not lines:
        return
    kept = [lines[0]] + [line for line in lines[1:] if line and int(float(line.split(",")[0])) < epoch]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(kept) + "\n")


def _backup_epoch(backup_dir):
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return int(json.load(handle).get("epoch", 0))


def write_json(path, value):
    """Write strict JSON (NaN, e.g. AP of a class without objects, becomes null) atomically."""
    tmp = path + ".tmp"
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


def train(config, callbacks=None):
    """Train a Faster R-CNN as :class:`TrainConfig` ``config`` says; see ``rcnn-zoo train --help``.

    Writes into ``config.output_dir``: ``last.keras`` (every epoch), ``best.keras`` (best
    ``val_mAP``, with a validation set), ``history.csv``, ``training_curves.png``,
    ``config.json`` and, while running, ``backup/`` (re-running the same command after an
    interruption continues from the last finished epoch). ``callbacks``: more Keras callbacks,
    run after the built-in ones.

    Returns:
        dict: ``model`` (the trained detector), ``output_dir``, ``history`` (rows of
        history.csv), ``epochs_done``, ``wall_seconds``, ``cpu_seconds``, ``paths``.
    """
    import keras  # noqa: PLC0415
    from rcnn_zoo.evaluation import MeanAveragePrecisionCallback  # noqa: PLC0415

    if config.epochs < 1:
        raise CLIError(f"--epochs must be ≥ 1, got {config.epochs}")
    if config.batch_size < 1:
        raise CLIError(f"--batch-size must be ≥ 1, got {config.batch_size}")
    if config.metric not in METRICS:
        raise CLIError(f"--metric must be one of {', '.join(METRICS)}, got {config.metric!r}")
    out = config.output_dir
    paths = {
        name: os.path.join(out, file)
        for name, file in (
            ("best", "best.keras"), ("last", "last.keras"), ("history", "history.csv"),
            ("curves", "training_curves.png"), ("config", "config.json"), ("backup", "backup"),
        )
    }
    interrupted_at = _backup_epoch(paths["backup"])
    finished_before = os.path.isfile(paths["last"]) and interrupted_at is None
    if finished_before and not config.resume:
        raise CLIError(
            f"{out} already holds a trained model (last.keras); pass --resume to train it further "
            "or choose another --output-dir"
        )
    if config.resume and not finished_before and interrupted_at is None:
        raise CLIError(f"--resume: nothing to resume in {out} (no last.keras, no backup/)")

    # Data. The format's class order comes from the training set.
    split = config.split
    if config.format == "voc" and split is None and config.data and os.path.isdir(config.data):
        split = _default_split(config.data, "train")
    train_set = load_dataset(config.data, config.format, split, config.annotations, config.images)
    val_set = None
    if config.val_split or config.val_annotations:
        val_set = load_dataset(config.data, config.format, config.val_split, config.val_annotations,
                               config.val_images, class_names=train_set.class_names)
    if sum(len(r.labels) for r in train_set.records) == 0:
        raise CLIError(f"the training set {train_set.source} has no objects")

    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    if finished_before:  # --resume after a finished run: model and optimizer from last.keras
        model = load_model(paths["last"], compile=True)
        if list(model.class_names or []) != train_set.class_names:
            raise CLIError(f"--resume: the model's classes {model.class_names} differ from the data's "
                           f"{train_set.class_names}")
        initial_epoch = len(read_history(paths["history"]))
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
        _keep_history_before(paths["history"], initial_epoch)
        how = "interrupted run (backup/)" if interrupted_at else "last.keras"
        print(f"Resuming from the {how} at epoch {initial_epoch + 1} of {config.epochs}.")

    min_size, max_size = model.image_min_size, model.image_max_size
    train_data = training_dataset(
        train_set, config.batch_size, min_size, max_size, flip=config.flip, jitter=config.jitter,
        crop=config.random_crop, crop_min_scale=config.crop_min_scale, zoom_out=config.zoom_out,
        seed=config.seed,
    )
    steps = math.ceil(len(train_set) / config.batch_size)
    CosineLearningRate, FillMissing, TrainingCurves = _callback_classes()
    extra_callbacks = list(callbacks or [])
    callbacks = [CosineLearningRate(config.lr, config.epochs, steps, config.warmup_epochs)]
    if val_set is not None:
        best_so_far = [r.get("val_mAP") for r in read_history(paths["history"]) if continuing]
        best_so_far = [v for v in best_so_far if v is not None and not math.isnan(v)]
        callbacks += [
            MeanAveragePrecisionCallback(evaluation_dataset(val_set), every_n_epochs=config.val_every,
                                         metric=config.metric, class_names=train_set.class_names),
            FillMissing(["val_mAP"]),
            keras.callbacks.ModelCheckpoint(paths["best"], monitor="val_mAP", mode="max",
                                            save_best_only=True,
                                            initial_value_threshold=max(best_so_far, default=None)),
        ]
    callbacks += [
        keras.callbacks.ModelCheckpoint(paths["last"]),
        keras.callbacks.CSVLogger(paths["history"], append=continuing),
        TrainingCurves(paths["history"], paths["curves"]),
        keras.callbacks.BackupAndRestore(paths["backup"]),
    ] + extra_callbacks

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
            # The batches come from a shuffled tf.data pipeline whose length Keras cannot know
            # in advance (batches are grouped by orientation): both warnings would be noise.
            warnings.filterwarnings("ignore", message=".*shuffle=True.*")
            warnings.filterwarnings("ignore", message=".*ran out of data.*")
            model.fit(train_data, epochs=config.epochs, initial_epoch=initial_epoch,
                      callbacks=callbacks, verbose=config.verbose)
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


def _command_line():
    return " ".join([PROG] + [a if a and " " not in a else json.dumps(a) for a in sys.argv[1:]])


# ==========================================================================================
# Training curves (PIL only: matplotlib is not a dependency)

_CURVE_COLOURS = {
    "loss": (0, 0, 0), "rpn_cls": (31, 119, 180), "rpn_box": (255, 127, 14), "cls": (44, 160, 44),
    "box": (214, 39, 40), "val_mAP": (148, 103, 189),
}


def _nice_ticks(low, high, count=5):
    span = high - low if high > low else 1.0
    step = 10 ** math.floor(math.log10(span / count))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + 1e-9 * span:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _panel(draw, font, box, epochs, series, y_range, title):
    """Line plot of ``series`` ({name: [values]}) over ``epochs`` in ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    left, bottom, top, right = x0 + 52, y1 - 34, y0 + 24, x1 - 12
    draw.text((x0 + 52, y0 + 4), title, fill=(0, 0, 0), font=font)
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    lo_x, hi_x = min(epochs), max(epochs)
    hi_x = hi_x if hi_x > lo_x else lo_x + 1
    lo_y, hi_y = y_range

    def to_px(ex, value):
        px = left + (ex - lo_x) / (hi_x - lo_x) * (right - left)
        py = bottom - (value - lo_y) / (hi_y - lo_y) * (bottom - top)
        return px, py

    for tick in _nice_ticks(lo_y, hi_y):
        _, py = to_px(lo_x, tick)
        draw.line([left, py, right, py], fill=(225, 225, 225))
        draw.text((x0 + 4, py - 6), f"{tick:g}", fill=(0, 0, 0), font=font)
    for tick in _nice_ticks(lo_x, hi_x):
        if float(tick).is_integer():
            px, _ = to_px(tick, lo_y)
            draw.line([px, bottom, px, bottom + 4], fill=(0, 0, 0))
            draw.text((px - 6, bottom + 6), f"{int(tick)}", fill=(0, 0, 0), font=font)
    draw.text(((left + right) // 2 - 16, bottom + 18), "epoch", fill=(0, 0, 0), font=font)
    legend_x = x0 + 52 + draw.textlength(title, font=font) + 24  # legend on the title line
    for name, values in series.items():
        colour = _CURVE_COLOURS.get(name, (127, 127, 127))
        points = [to_px(e, v) for e, v in zip(epochs, values) if v is not None and math.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points if len(points) < 40 else ():
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.line([legend_x, y0 + 11, legend_x + 16, y0 + 11], fill=colour, width=3)
        draw.text((legend_x + 20, y0 + 4), name, fill=(0, 0, 0), font=font)
        legend_x += 32 + draw.textlength(name, font=font)


def plot_training_curves(history_path, png_path, width=720):
    """Draw the losses (top) and ``val_mAP`` (bottom, when logged) per epoch from a
    CSVLogger ``history.csv`` into a PNG. Returns ``png_path``."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415

    rows = read_history(history_path)
    if not rows:
        raise ValueError(f"no epochs in {history_path}")
    epochs = [r["epoch"] + 1 for r in rows]
    losses = {k: [r.get(k) for r in rows] for k in ("loss", "rpn_cls", "rpn_box", "cls", "box") if k in rows[0]}
    maps = [r.get("val_mAP", float("nan")) for r in rows]
    has_map = any(math.isfinite(v) for v in maps)
    height = 560 if has_map else 300
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    finite = [v for values in losses.values() for v in values if v is not None and math.isfinite(v)]
    top = max(finite, default=1.0)
    _panel(draw, font, (0, 0, width, 300), epochs, losses, (0.0, top * 1.05 or 1.0), "training losses")
    if has_map:
        best = max(v for v in maps if math.isfinite(v))
        _panel(draw, font, (0, 290, width, 560), epochs, {"val_mAP": maps}, (0.0, 1.0),
               f"validation mAP (best {best:.3f})")
    image.save(png_path)
    return png_path


# ==========================================================================================
# Evaluation


def _progress(iterable, total, unit="image", verbose=1):
    """Yield from ``iterable`` while a Keras progress bar counts ``total`` items."""
    import keras  # noqa: PLC0415

    bar = keras.utils.Progbar(total, unit_name=unit, verbose=verbose) if verbose else None
    for index, item in enumerate(iterable):
        yield item
        if bar is not None:
            bar.update(index + 1)


def evaluate_model(model, dataset, metrics=("voc",), iou_threshold=0.5, verbose=1):
    """Predict on every image of ``dataset`` and compute the requested metrics.

    Args:
        model: a detector; its labels must follow ``dataset.class_names``.
        dataset: :class:`rcnn_zoo.data.DetectionDataset`.
        metrics: any of ``"voc"`` (all-points AP at IoU > ``iou_threshold``), ``"voc07"``
            (11-point) and ``"coco"`` (AP@[.50:.95] with COCO areas and category ids).

    Returns:
        ``{metric: {"mAP": float, "per_class_AP": [C], ...}}`` plus ``"num_images"``,
        ``"num_objects"`` (per class, non-difficult) and ``"class_names"``.
    """
    import numpy as np  # noqa: PLC0415
    from rcnn_zoo.evaluation import coco_evaluate, evaluate_detections, predict_detections  # noqa: PLC0415

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise CLIError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    batches = _progress(evaluation_dataset(dataset), len(dataset), verbose=verbose)
    detections, ground_truths, ids = predict_detections(model, batches)
    results = {}
    for metric in metrics:
        if metric == "coco":
            truths = dataset.ground_truths(with_areas=True)
            stats = coco_evaluate(
                detections, [truths[i] for i in ids], dataset.num_classes,
                image_ids=[dataset.records[i].image_id for i in ids] if dataset.category_ids else None,
                category_ids=dataset.category_ids, class_names=dataset.class_names, per_class=True,
            )
            results[metric] = {"mAP": stats["AP"], **stats}
        else:
            results[metric] = evaluate_detections(detections, ground_truths, dataset.num_classes,
                                                  metric, iou_threshold)
        results[metric]["per_class_AP"] = [float(v) for v in np.asarray(results[metric]["per_class_AP"])]
        results[metric]["mAP"] = float(results[metric]["mAP"])
    counts = dataset.class_counts(include_difficult=False)
    results.update(num_images=len(dataset), num_objects=counts, class_names=list(dataset.class_names),
                   iou_threshold=iou_threshold)
    return results


_METRIC_TITLES = {"voc": "AP@{iou} (VOC)", "voc07": "AP@{iou} (VOC07 11pt)", "coco": "AP@[.5:.95] (COCO)"}


def format_ap_table(results):
    """The per-class AP table (and mAP line) of :func:`evaluate_model` results, as text."""
    metrics = [m for m in METRICS if m in results]
    names = results["class_names"]
    titles = [_METRIC_TITLES[m].format(iou=results.get("iou_threshold", 0.5)) for m in metrics]
    name_width = max([len("class")] + [len(str(n)) for n in names] + [len("mAP")])
    widths = [max(len(t), 8) for t in titles]
    header = f"{'class':<{name_width}}  {'objects':>7}  " + "  ".join(f"{t:>{w}}" for t, w in zip(titles, widths))
    lines = [header, "-" * len(header)]

    def cell(value, w):
        return f"{'n/a':>{w}}" if value is None or not math.isfinite(value) else f"{value:>{w}.4f}"

    for c, name in enumerate(names):
        count = results["num_objects"].get(name, 0)
        values = [results[m]["per_class_AP"][c] for m in metrics]
        lines.append(f"{name:<{name_width}}  {count:>7}  " + "  ".join(cell(v, w) for v, w in zip(values, widths)))
    lines.append("-" * len(header))
    total = sum(results["num_objects"].values())
    lines.append(f"{'mAP':<{name_width}}  {total:>7}  "
                 + "  ".join(cell(results[m]["mAP"], w) for m, w in zip(metrics, widths)))
    if "coco" in results:
        coco = results["coco"]
        lines.append("COCO: " + ", ".join(f"{k}={coco[k]:.4f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")
                                          if k in coco and coco[k] is not None and math.isfinite(coco[k])))
    return "\n".join(lines)


# ==========================================================================================
# Prediction


def list_images(items):
    """Image files named in ``items`` (files, or folders scanned non-recursively), sorted per
    folder."""
    paths = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise CLIError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {item}")
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise CLIError(f"image not found: {item}")
    if not paths:
        raise CLIError("no images given")
    return paths


def _to_xyxy(boxes, bounding_box_format, height, width):
    if bounding_box_format == "xyxy":
        return boxes
    import keras  # noqa: PLC0415

    return keras.ops.convert_to_numpy(keras.utils.bounding_boxes.convert_format(
        boxes, source=bounding_box_format, target="xyxy", height=height, width=width))


def predict_images(model, image_paths, output_dir, score_threshold=0.5, verbose=1, draw=True):
    """Detect objects in image files; write ``<stem>.png`` with the boxes drawn (when
    ``draw``) and ``detections.json`` into ``output_dir``.

    Returns:
        the list written to ``detections.json``: per image ``{"image", "output", "width",
        "height", "boxes" [[x1, y1, x2, y2] original pixels], "scores", "labels",
        "class_names"}`` with the detections scoring ≥ ``score_threshold``, best first.
    """
    import numpy as np  # noqa: PLC0415
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415
    from rcnn_zoo.visualization import draw_detections, save_png  # noqa: PLC0415

    os.makedirs(output_dir, exist_ok=True)
    names = list(model.class_names) if getattr(model, "class_names", None) else None
    used, results = set(), []
    for path in _progress(image_paths, len(image_paths), verbose=verbose):
        try:
            with Image.open(path) as opened:
                image = np.asarray(opened.convert("RGB"), np.uint8)
        except (OSError, UnidentifiedImageError) as error:
            raise CLIError(f"cannot read image {path}: {error}") from error
        height, width = image.shape[:2]
        out = model.predict_on_batch(image[None])
        count = int(np.asarray(out["num_detections"])[0])
        boxes = _to_xyxy(np.asarray(out["boxes"])[0, :count], model.bounding_box_format, height, width)
        scores = np.asarray(out["scores"])[0, :count]
        labels = np.asarray(out["labels"])[0, :count]
        keep = (scores >= score_threshold) & (labels >= 0)
        boxes, scores, labels = np.asarray(boxes)[keep], scores[keep], labels[keep]
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        png = os.path.join(output_dir, name + ".png")
        if draw:
            drawn = draw_detections(image, {"boxes": boxes, "scores": scores, "labels": labels},
                                    class_names=names, bounding_box_format="xyxy",
                                    score_threshold=score_threshold)
            save_png(drawn, png)
        results.append({
            "image": os.path.abspath(path),
            "output": os.path.abspath(png) if draw else None,
            "width": width,
            "height": height,
            "boxes": [[round(float(v), 2) for v in box] for box in boxes],
            "scores": [round(float(s), 5) for s in scores],
            "labels": [int(label) for label in labels],
            "class_names": [names[label] if names else str(label) for label in labels],
        })
    write_json(os.path.join(output_dir, "detections.json"), results)
    return results


# ==========================================================================================
# Subcommand handlers (each returns an exit code)


def _run_demo(args):
    from rcnn_zoo.demo import run_demo  # noqa: PLC0415

    kwargs = {} if args.seed is None else {"seed": args.seed}
    run_demo(args.output, **kwargs)
    return 0


def _given_options(parser, argv):
    """``dest`` of every option of ``parser`` that appears in ``argv``."""
    given = set()
    for action in parser._actions:
        for option in action.option_strings:
            if any(token == option or token.startswith(option + "=") for token in argv):
                given.add(action.dest)
    return given


def _run_train(args):
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    previous = os.path.join(args.output_dir, "config.json")
    if args.resume and os.path.isfile(previous):
        # Options not given again keep the first run's values.
        with open(previous, encoding="utf-8") as handle:
            earlier = json.load(handle).get("arguments", {})
        given = _given_options(args._train_parser, args._argv)
        values.update({k: v for k, v in earlier.items() if k in fields and k not in given
                       and k not in ("resume", "output_dir")})
    train(TrainConfig(**values))
    return 0


def _evaluation_data(args, class_names):
    split = args.split
    if args.format == "voc" and split is None and args.data and os.path.isdir(args.data):
        split = _default_split(args.data, "test")
    return load_dataset(args.data, args.format, split, args.annotations, args.images, class_names)


def _run_evaluate(args):
    if not os.path.isfile(args.model):
        raise CLIError(f"model file not found: {args.model}")
    if args.format == "voc" and args.data is None:
        raise CLIError("--data is required: the VOC dataset folder")
    if args.format == "voc" and not os.path.isdir(args.data):
        raise CLIError(f"dataset folder not found: {args.data}")
    model = load_model(args.model)
    if model.class_names is None:
        raise CLIError(f"{args.model} has no class_names; cannot match its labels to the data's classes")
    dataset = _evaluation_data(args, model.class_names)
    print(f"Evaluating {args.model} on {dataset.source}: {len(dataset)} images.")
    results = evaluate_model(model, dataset, args.metric, args.iou_threshold, verbose=args.verbose)
    print(format_ap_table(results))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_json(args.output, {"model": os.path.abspath(args.model), "data": dataset.source, **results})
        print(f"Wrote {args.output}")
    return 0


def _run_predict(args):
    if (args.model is None) == (args.weights is None):
        raise CLIError("give exactly one of --model FILE.keras and --weights NAME")
    image_paths = list_images(args.images)
    model = load_model(args.model) if args.model else model_from_weights_name(args.weights)
    results = predict_images(model, image_paths, args.output_dir, args.score_threshold, verbose=args.verbose)
    found = sum(len(r["scores"]) for r in results)
    print(f"{found} detection(s) ≥ {args.score_threshold} in {len(results)} image(s); wrote PNGs and "
          f"{os.path.join(args.output_dir, 'detections.json')}")
    return 0


def _run_export(args):
    if args.input_type not in EXPORT_INPUT_TYPES:
        raise CLIError(f"--input-type must be one of {', '.join(EXPORT_INPUT_TYPES)}")
    model = load_model(args.model)
    from rcnn_zoo.export import export_saved_model  # noqa: PLC0415

    export_saved_model(model, args.output, input_type=args.input_type)
    return 0


def _run_convert_missing(args):
    raise CLIError("checkpoint conversion is not installed in this copy of rcnn_zoo (rcnn_zoo.convert.cli)")


# ==========================================================================================
# Parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; shows defaults that say something (not None/False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        quiet = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not quiet and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _wrap(text, width=88):
    """Fill each paragraph of ``text`` (the formatter keeps descriptions as written)."""
    import textwrap  # noqa: PLC0415

    return "\n\n".join(textwrap.fill(p, width) for p in text.split("\n\n"))


def _subparser(subparsers, name, help, description, examples, parents):
    return subparsers.add_parser(
        name, help=help, description=_wrap(description), epilog="examples:\n" + examples,
        formatter_class=_Formatter, parents=parents,
    )


def _add_data_arguments(parser, split_help):
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="VOC: dataset folder (devkit VOC2007 or images/ + annotations/ "
                       "+ <split>.txt). COCO: folder the --annotations/--images paths are relative "
                       "to, or the instances JSON itself")
    group.add_argument("--format", choices=FORMATS, default="voc", help="annotation format")
    group.add_argument("--split", help=split_help)
    group.add_argument("--annotations", help="COCO: instances JSON")
    group.add_argument("--images", help="COCO: image folder (default: the JSON's folder)")
    return group


def build_parser():
    """The ``rcnn-zoo`` argument parser (subcommands demo, train, evaluate, predict, export,
    convert)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks instead of one-line errors")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_wrap("Two-stage object detectors (Faster R-CNN) for Keras 3: train on VOC or COCO "
                          "format data, evaluate mAP, draw detections, export for TF Serving."),
        epilog="examples:\n"
        "  rcnn-zoo demo\n"
        "  rcnn-zoo train --data ../shared/datasets/raccoon --val-split test --epochs 80 --output-dir runs/raccoon\n"
        "  rcnn-zoo evaluate --model runs/raccoon/best.keras --data ../shared/datasets/raccoon --split test\n"
        "  rcnn-zoo predict --model runs/raccoon/best.keras --images photos/ --output-dir detections\n"
        "  rcnn-zoo <command> --help    (every command explains its options)",
        formatter_class=_Formatter,
    )
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show full tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    subparsers.required = True

    # demo
    demo = _subparser(
        subparsers, "demo", "detect shapes in generated pictures with the bundled demo model",
        "Runs the small 'shapes' Faster R-CNN (tiny backbone, trained from scratch on generated "
        "circles, squares and triangles; trained now, about two minutes, if its weights are "
        "missing) on new pictures and draws the detections side by side into one PNG.",
        "  rcnn-zoo demo\n  rcnn-zoo demo --output shapes.png --seed 7\n", [common])
    demo.add_argument("--output", default="demo_detections.png", help="PNG to write")
    demo.add_argument("--seed", type=int, default=None, help="seed of the generated pictures (default: the demo's)")
    demo.set_defaults(func=_run_demo)

    # train
    defaults = TrainConfig()
    train_parser = _subparser(
        subparsers, "train", "train a Faster R-CNN on a VOC or COCO format dataset",
        "Train a Faster R-CNN on your data: from scratch, or fine-tuned from registered or saved "
        "weights with --model-arg weights=NAME_OR_FILE (backbone and anchors must match those "
        "weights; the class predictor is re-initialised when the class count differs).\n\n"
        "Writes into --output-dir: last.keras (after every epoch), best.keras (best validation "
        "mAP, when a validation split is given), history.csv (losses, lr, val_mAP per epoch), "
        "training_curves.png and config.json (these arguments and the class names).\n\n"
        "Interrupted? Run the same command again: it continues from the last finished epoch "
        "(backup/ in the output folder). Finished, and want more epochs? Add --resume and a "
        "larger --epochs: training continues from last.keras, its optimizer state included, "
        "with the options of the first run (config.json) except those given again, and the "
        "cosine learning-rate curve is stretched to the new length.",
        "  # a VOC-style folder (images/, annotations/, train.txt, test.txt), small CPU model\n"
        "  rcnn-zoo train --data ../shared/datasets/raccoon --format voc --split train --val-split test \\\n"
        "      --backbone tiny --epochs 80 --random-crop 0.5 --zoom-out 1.5 --jitter --val-every 5 \\\n"
        "      --output-dir runs/raccoon\n"
        "  # the same run, 40 more epochs (options not given are taken from runs/raccoon/config.json)\n"
        "  rcnn-zoo train --output-dir runs/raccoon --resume --epochs 120\n"
        "  # COCO format\n"
        "  rcnn-zoo train --format coco --annotations train.json --images train/ \\\n"
        "      --val-annotations val.json --val-images val/ --backbone resnet50_fpn --output-dir runs/coco\n",
        [common])
    group = _add_data_arguments(train_parser, "VOC training split: a name (<data>/<split>.txt or "
                                "ImageSets/Main/<split>.txt) or a file of stems (default: 'train' "
                                "if such a file exists, else every XML)")
    group.add_argument("--val-split", help="VOC validation split (enables val mAP and best.keras)")
    group.add_argument("--val-annotations", help="COCO validation JSON (enables val mAP and best.keras)")
    group.add_argument("--val-images", help="COCO validation image folder")
    group = train_parser.add_argument_group("model")
    from_backbones = "vgg16, resnet50, resnet101, resnet50_fpn, mobilenet_v3_large_fpn, tiny"
    group.add_argument("--backbone", default=defaults.backbone,
                       help=f"one of {from_backbones}; without network only 'tiny' is practical on a CPU "
                       "(the others are large to train from scratch)")
    group.add_argument("--image-min-size", type=int, default=None,
                       help="resize so the shorter side is this (default: the backbone's; tiny: "
                       f"{CLI_IMAGE_SIZES['tiny'][0]})")
    group.add_argument("--image-max-size", type=int, default=None,
                       help="... unless the longer side would exceed this (default: the backbone's; tiny: "
                       f"{CLI_IMAGE_SIZES['tiny'][1]})")
    group.add_argument("--anchor-sizes", type=float, nargs="+", default=None, metavar="PX",
                       help="anchor sizes in pixels of the resized image (single-level backbones: all "
                       "on one level; FPN: one per level). Match them to your objects (default: the "
                       f"backbone's; tiny: {' '.join(map(str, CLI_ANCHOR_SIZES['tiny']))})")
    group.add_argument("--model-arg", dest="model_args", action="append", metavar="KEY=VALUE",
                       help="any other FasterRCNN argument, value as JSON, e.g. rpn_post_nms_top_n_test=50 "
                       "or roi_head_dim=256 (repeatable)")
    group = train_parser.add_argument_group("schedule")
    group.add_argument("--epochs", type=int, default=defaults.epochs, help="total epochs")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per step")
    group.add_argument("--optimizer", choices=("adam", "sgd"), default=defaults.optimizer,
                       help="adam (AdamW when --weight-decay > 0) or sgd (momentum 0.9)")
    group.add_argument("--lr", type=float, default=defaults.lr,
                       help="peak learning rate: linear warm-up from 10%% then cosine decay to 1%%")
    group.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="decoupled weight decay")
    group.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs, help="warm-up length")
    group.add_argument("--seed", type=int, default=defaults.seed, help="random seed (weights, shuffling, augmentation)")
    group = train_parser.add_argument_group("augmentation")
    group.add_argument("--flip", type=float, default=defaults.flip, help="probability of a horizontal flip")
    group.add_argument("--jitter", action="store_true", help="random brightness, contrast, saturation and hue")
    group.add_argument("--random-crop", type=float, default=defaults.random_crop, metavar="P",
                       help="probability of cropping a random window (boxes whose centre is inside are kept)")
    group.add_argument("--crop-min-scale", type=float, default=defaults.crop_min_scale,
                       help="smallest crop side, as a fraction of the image side")
    group.add_argument("--zoom-out", type=float, default=defaults.zoom_out, metavar="RATIO",
                       help="half of the images are placed on a canvas up to RATIO times larger (1 = off)")
    group = train_parser.add_argument_group("validation and output")
    group.add_argument("--val-every", type=int, default=defaults.val_every, help="compute val mAP every N epochs")
    group.add_argument("--metric", choices=METRICS, default=defaults.metric,
                       help="validation metric: voc (all-points AP@0.5), voc07 (11-point), coco (AP@[.5:.95])")
    group.add_argument("--output-dir", default=defaults.output_dir, help="where models, history and plots go")
    group.add_argument("--resume", action="store_true", help="continue a finished run from last.keras")
    group.add_argument("--verbose", type=int, choices=(0, 1, 2), default=defaults.verbose,
                       help="Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")
    train_parser.set_defaults(func=_run_train, _train_parser=train_parser)

    # evaluate
    evaluate = _subparser(
        subparsers, "evaluate", "per-class AP and mAP of a trained model on a dataset",
        "Predict on every image of a split and print a per-class AP table with the mean. The "
        "model's class names are matched to the dataset's by name. Pixel convention: boxes are "
        "compared as continuous coordinates, which on VOC data equals the official VOC "
        "evaluator's +1 convention (see rcnn_zoo.evaluation.voc).",
        "  rcnn-zoo evaluate --model runs/raccoon/best.keras --data ../shared/datasets/raccoon --split test\n"
        "  rcnn-zoo evaluate --model best.keras --data VOCdevkit/VOC2007 --split test --metric voc07 voc\n"
        "  rcnn-zoo evaluate --model best.keras --format coco --annotations instances_val2017.json \\\n"
        "      --images val2017/ --metric coco --output results.json\n", [common])
    evaluate.add_argument("--model", required=True, help="a .keras file written by training (best.keras)")
    _add_data_arguments(evaluate, "VOC split to evaluate (default: 'test' if such a file exists, else every XML)")
    evaluate.add_argument("--metric", nargs="+", choices=METRICS, default=["voc"],
                          help="one or more of voc (all-points AP, VOC2010+), voc07 (11-point), coco")
    evaluate.add_argument("--iou-threshold", type=float, default=0.5, help="IoU for the VOC metrics")
    evaluate.add_argument("--output", help="also write the results as JSON here")
    evaluate.add_argument("--verbose", type=int, choices=(0, 1), default=1, help="progress bar")
    evaluate.set_defaults(func=_run_evaluate)

    # predict
    predict = _subparser(
        subparsers, "predict", "draw detections on images and write them as JSON",
        "Run a detector on image files or folders. Writes <image name>.png with the boxes drawn "
        "and detections.json: per image its boxes [x1, y1, x2, y2] in original pixels, scores, "
        "labels and class names, for detections scoring at least --score-threshold.",
        "  rcnn-zoo predict --model runs/raccoon/best.keras --images photos/ --output-dir detections\n"
        "  rcnn-zoo predict --model best.keras --images a.jpg b.png --output-dir out --score-threshold 0.3\n"
        "  rcnn-zoo predict --weights shapes --images shapes.png --output-dir out   # a registered weight\n",
        [common])
    source = predict.add_mutually_exclusive_group()
    source.add_argument("--model", help="a .keras file written by training")
    source.add_argument("--weights", help="a registered weight name (weights/registry.json, e.g. shapes, voc, coco)")
    predict.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    predict.add_argument("--output-dir", required=True, help="where PNGs and detections.json go")
    predict.add_argument("--score-threshold", type=float, default=0.5, help="drop detections scoring less")
    predict.add_argument("--verbose", type=int, choices=(0, 1), default=1, help="progress bar")
    predict.set_defaults(func=_run_predict)

    # export
    export = _subparser(
        subparsers, "export", "write a SavedModel for TensorFlow Serving",
        "Export a trained detector as a SavedModel with the TF Object Detection API's signature "
        "(detection_boxes normalised [ymin, xmin, ymax, xmax], detection_scores, 1-based "
        "detection_classes, num_detections) using stock TensorFlow ops only.",
        "  rcnn-zoo export --model runs/raccoon/best.keras --output serving/raccoon/1\n"
        "  rcnn-zoo export --model best.keras --output serving/raccoon/1 --input-type encoded_image_string_tensor\n",
        [common])
    export.add_argument("--model", required=True, help="a .keras file written by training")
    export.add_argument("--output", required=True, help="SavedModel directory (TF Serving wants <name>/<version>)")
    export.add_argument("--input-type", choices=EXPORT_INPUT_TYPES, default="image_tensor",
                        help="uint8 images, JPEG/PNG bytes, or float32 images")
    export.set_defaults(func=_run_export)

    # convert (its own module, when present)
    try:
        from rcnn_zoo.convert.cli import add_convert_parser  # noqa: PLC0415
    except ImportError:
        add_convert_parser = None
    if add_convert_parser is not None:
        convert = add_convert_parser(subparsers)
        if "--debug" not in convert._option_string_actions:
            convert.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="show full tracebacks instead of one-line errors")
    else:
        convert = _subparser(
            subparsers, "convert", "convert PyTorch checkpoints (not installed)",
            "Checkpoint conversion (rcnn_zoo.convert.cli) is not part of this installation.",
            "  rcnn-zoo convert --from torchvision --input x.pth --output y.weights.h5\n", [common])
        convert.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        convert.set_defaults(func=_run_convert_missing)
    return parser


def _error(message):
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv=None):
    """Entry point of the ``rcnn-zoo`` console script; returns the exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    args._argv = argv
    debug = getattr(args, "debug", False)
    try:
        code = args.func(args)
    except CLIError as error:
        if debug:
            raise
        _error(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            raise
        _error("interrupted" + ("; run the same command again to resume" if args.command == "train" else ""))
        return 130
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
