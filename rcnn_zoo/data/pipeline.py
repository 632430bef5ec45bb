"""Detection records, the dataset object the readers return, and the ``tf.data`` input pipeline.

Shape shorthand: ``B`` images in a batch, ``H, W`` (padded) image height and width, ``G`` ground
truth boxes per image (padded), ``n`` objects of one image.

Every box here is float32 ``xyxy`` in pixels of the image it belongs to, **continuous**
coordinates: ``x2 - x1`` is the width (``docs/conventions.md``). Readers convert from their file
format (VOC's 1-based inclusive corners, COCO's ``xywh``) when they read; labels are
``0 … C−1`` and ``-1`` marks padding.

The pipeline turns records into batches ready for ``model.fit``::

    ({"images":      float32 [B, H, W, 3] in 0..255, padded bottom/right with zeros,
      "image_sizes": int32   [B, 2] each image's own (height, width) inside the batch},
     {"boxes":  float32 [B, G, 4] xyxy pixels of the resized image, padded with zeros,
      "labels": int32   [B, G], padded with -1})

The sizes travel with the batch so that a detector resizes and pads each image as it would
alone (a portrait photo next to a landscape one is not shrunk).

With ``training=False`` the targets also carry ``"difficult"`` (bool ``[B, G]``: VOC
``difficult`` or COCO ``iscrowd``, objects an evaluator ignores), and with
``return_metadata=True`` they carry ``"image_id"`` (int32 ``[B]``: index of the record),
``"scale"`` (float32 ``[B, 2]``: ``(sy, sx)``, resized / original size), ``"original_size"``
and ``"image_size"`` (int32 ``[B, 2]``: ``(height, width)`` before resizing and after resizing,
before padding), so that predictions can be mapped back to original pixels: divide x by ``sx``,
y by ``sy``; and ``"flipped"`` (bool ``[B]``: the image was mirrored horizontally).
"""

import concurrent.futures
import dataclasses
import math
import os
import re
import warnings

import numpy as np
import tensorflow as tf

__all__ = [
    "DatasetError",
    "DatasetWarning",
    "DetectionRecord",
    "DetectionDataset",
    "make_tf_dataset",
    "resized_size",
    "DEFAULT_JITTER",
]

# Photometric jitter strengths used by ``jitter=True`` (SSD-style colour distortion, mild).
DEFAULT_JITTER = {"brightness": 32.0 / 255.0, "contrast": 0.5, "saturation": 0.5, "hue": 0.05}

# Formats that ``tf.io.decode_image`` decodes (PIL's names; MPO is a multi-picture JPEG).
_DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP"}
# First bytes of those formats: a file that starts like one but cannot be read is damaged.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")


class DatasetError(ValueError):
    """Bad data met by a reader in ``strict=True`` mode (the message names the file)."""


class DatasetWarning(UserWarning):
    """The one summary warning a reader gives when it skipped or changed something."""


# Problem kinds a reader reports; the ones in _KEPT_PROBLEMS change data but drop nothing.
MISSING_FILE = "missing file"
UNREADABLE_IMAGE = "unreadable image"
MALFORMED_ANNOTATION = "malformed annotation"
DUPLICATE_IMAGE = "duplicate image (only the first kept)"
BOX_OUTSIDE = "box wholly outside the image"
EMPTY_BOX = "zero-area or inverted box"
NON_FINITE_BOX = "box with NaN or infinite coordinates"
UNKNOWN_CLASS = "unknown class"
BOX_CLIPPED = "box partly outside the image (clipped, kept)"
SIZE_MISMATCH = "annotated size differs from the image (image size used, kept)"
_KEPT_PROBLEMS = (BOX_CLIPPED, SIZE_MISMATCH)
_IMAGE_LEVEL_PROBLEMS = (MISSING_FILE, UNREADABLE_IMAGE, MALFORMED_ANNOTATION, DUPLICATE_IMAGE, SIZE_MISMATCH)

# Why an image file cannot be used (the start of an UnreadableImageError's message).
EMPTY_IMAGE_FILE = "empty file (0 bytes)"
NOT_AN_IMAGE = "not an image (its contents are in no image format)"
DAMAGED_IMAGE = "truncated or damaged image data"


class UnreadableImageError(OSError):
    """:func:`check_image`: the file exists but cannot be used as an image; the message says
    why in words (empty, not an image, truncated or damaged, a format TensorFlow cannot
    decode) and does not repeat the path (the reader's report names the file)."""


class ProblemLog:
    """Collects what a reader skipped or changed, then gives one summary warning.

    ``report(kind, file, detail, unit)`` raises :class:`DatasetError` naming the file when
    ``strict``; otherwise it records ``"file: detail"`` under ``kind``. ``warn()`` emits one
    :class:`DatasetWarning` with the count per kind and the first few files of each. ``unit``
    (``"image"``, ``"object"``) says what one report of the kind counts; by default images for
    the image-level kinds (the image is skipped), objects for the others.
    """

    def __init__(self, source, strict=False, max_listed=3):
        self.source = source
        self.strict = strict
        self.max_listed = max_listed
        self.items = {}
        self.units = {}

    def report(self, kind, file, detail="", unit=None):
        entry = f"{file}: {detail}" if detail else str(file)
        if self.strict:
            raise DatasetError(f"{kind}: {entry}")
        self.items.setdefault(kind, []).append(entry)
        unit = unit or ("image" if kind in _IMAGE_LEVEL_PROBLEMS else "object")
        self.units.setdefault(kind, set()).add(unit)

    def summary(self):
        """The warning's text: a head line, then one line per problem kind with its count and
        the first ``max_listed`` files."""
        lines = []
        for kind, entries in self.items.items():
            listed = "; ".join(entries[: self.max_listed])
            extra = len(entries) - self.max_listed
            more = f"; … {extra} more" if extra > 0 else ""
            units = self.units.get(kind) or {"image" if kind in _IMAGE_LEVEL_PROBLEMS else "object"}
            unit = f"{next(iter(units))}(s)" if len(units) == 1 else "item(s)"
            lines.append(f"  {kind}: {len(entries)} {unit}: {listed}{more}")
        skipped = sum(len(v) for k, v in self.items.items() if k not in _KEPT_PROBLEMS)
        head = f"{self.source}: skipped {skipped} item(s) of bad data (strict=True raises on the first instead):"
        return "\n".join([head] + lines)

    def warn(self, stacklevel=3):
        if self.items:
            warnings.warn(self.summary(), DatasetWarning, stacklevel=stacklevel)


def problem_text(error):
    """An exception of :func:`check_image` (or a reader) as the detail of a report: the message
    of an :class:`UnreadableImageError`, else ``"TypeName: message"``."""
    if isinstance(error, UnreadableImageError):
        return str(error)
    return f"{type(error).__name__}: {error}"


@dataclasses.dataclass
class DetectionRecord:
    """One image and its objects, in the image's original pixels.

    Attributes:
        image_path: path of the image file.
        image_id: the source's id: the file stem for VOC, the ``"id"`` of the image for COCO.
        boxes: float32 ``[n, 4]`` xyxy, continuous pixel coordinates of the original image.
        labels: int32 ``[n]`` in ``0 … C−1``.
        difficult: bool ``[n]``: VOC ``difficult`` / COCO ``iscrowd``. Evaluators ignore these
            objects (neither true nor false positives); training leaves them out by default.
        height, width: size of the image in pixels (of the file itself when it was checked).
        annotation_path: the file the objects came from.
        areas: float32 ``[n]`` COCO ``"area"`` of each object (segment area), or None; the COCO
            evaluator uses it for its small/medium/large ranges, box area otherwise.
    """

    image_path: str
    image_id: object
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    height: int
    width: int
    annotation_path: str = None
    areas: np.ndarray = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int32).reshape(-1)
        self.difficult = np.asarray(self.difficult, bool).reshape(-1)
        if self.areas is not None:
            self.areas = np.asarray(self.areas, np.float32).reshape(-1)
        if not len(self.boxes) == len(self.labels) == len(self.difficult):
            raise ValueError(f"{self.image_path}: boxes, labels and difficult differ in length")


class DetectionDataset:
    """Records plus class names: what :func:`read_voc` and :func:`read_coco` return.

    Args:
        records: list of :class:`DetectionRecord`.
        class_names: names of classes ``0 … C−1``.
        category_ids: for COCO, the original category id of each class (to write results
            back); None otherwise.
        use_difficult: whether training batches include ``difficult``/crowd objects.
        source: a short description of where the data came from (used in messages).
        problems: what the reader skipped or changed, ``{kind: ["file: detail", …]}``.
    """

    def __init__(
        self,
        records,
        class_names,
        *,
        category_ids=None,
        use_difficult=False,
        source="custom",
        problems=None,
    ):
        self.records = list(records)
        self.class_names = list(class_names)
        self.category_ids = None if category_ids is None else list(category_ids)
        self.use_difficult = use_difficult
        self.source = source
        self.problems = dict(problems or {})

    @property
    def num_classes(self):
        return len(self.class_names)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    def __iter__(self):
        return iter(self.records)

    def __repr__(self):
        return (
            f"DetectionDataset({self.source!r}, {len(self)} images, "
            f"{sum(len(r.labels) for r in self.records)} objects, classes={self.class_names})"
        )

    def class_counts(self, include_difficult=True):
        """``{class name: number of objects}`` over all records."""
        counts = np.zeros(self.num_classes, np.int64)
        for record in self.records:
            labels = record.labels if include_difficult else record.labels[~record.difficult]
            counts += np.bincount(labels, minlength=self.num_classes)[: self.num_classes]
        return dict(zip(self.class_names, counts.tolist()))

    def ground_truths(self, with_areas=False):
        """Per image ``(boxes [n, 4], labels [n], difficult [n])`` in original pixels.

        This is the ``ground_truths`` argument of ``rcnn_zoo.evaluation.voc_ap_per_class`` and
        ``coco_evaluate``; ``with_areas`` appends the COCO ``areas`` (or None) as a 4th item.
        """
        if with_areas:
            return [(r.boxes, r.labels, r.difficult, r.areas) for r in self.records]
        return [(r.boxes, r.labels, r.difficult) for r in self.records]

    def subset(self, indices):
        """A dataset with the records at ``indices`` (same classes)."""
        return DetectionDataset(
            [self.records[i] for i in indices],
            self.class_names,
            category_ids=self.category_ids,
            use_difficult=self.use_difficult,
            source=self.source,
            problems=self.problems,
        )

    def to_tf_dataset(self, batch_size=2, training=False, **kwargs):
        """``tf.data.Dataset`` of batches; see :func:`make_tf_dataset` for the arguments."""
        kwargs.setdefault("use_difficult", self.use_difficult)
        return make_tf_dataset(self.records, batch_size=batch_size, training=training, **kwargs)


# ------------------------------------------------------------------------------------------
# Helpers shared by the readers.


def check_image(path, check="header"):
    """``(height, width)`` of an image file, or raise ``FileNotFoundError`` (no such file) or
    :class:`UnreadableImageError` (an ``OSError`` saying why the file cannot be used: empty,
    not an image, truncated or damaged, a format ``tf.io.decode_image`` cannot decode).

    ``check``: ``"header"`` opens the file and reads its size (fast; a truncated file passes),
    ``"decode"`` also decodes every pixel, with PIL and with ``tf.io.decode_image`` (what the
    input pipeline uses), ``"none"`` only checks that the file exists and returns None.
    """
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415  (only the readers need PIL)

    if check == "none":
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        return None
    if check not in ("header", "decode"):
        raise ValueError(f"check_images must be 'header', 'decode' or 'none', got {check!r}")
    if os.path.isdir(path):
        raise UnreadableImageError("a folder, not an image file")
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnreadableImageError(f"cannot open the file ({error.strerror or error})") from error
    with handle:
        head = handle.read(16)
        if not head:
            raise UnreadableImageError(EMPTY_IMAGE_FILE)
        handle.seek(0)
        try:
            with Image.open(handle) as image:
                image_format = image.format
                width, height = image.size
                if check == "decode" and image_format in _DECODABLE_FORMATS:
                    image.load()
        except UnidentifiedImageError as error:
            if head.startswith(_IMAGE_SIGNATURES):  # starts like an image: a damaged one
                raise UnreadableImageError(f"{DAMAGED_IMAGE} (its header cannot be read)") from error
            raise UnreadableImageError(NOT_AN_IMAGE) from error
        except Image.DecompressionBombError as error:
            raise UnreadableImageError(f"too large to decode safely ({error})") from error
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, EOFError, zlib.error, …
            raise UnreadableImageError(f"{DAMAGED_IMAGE} ({str(error) or type(error).__name__})") from error
    if image_format not in _DECODABLE_FORMATS:
        raise UnreadableImageError(f"a {image_format} image, which tf.io.decode_image cannot decode "
                                   "(convert it to JPEG or PNG)")
    if not width or not height:
        raise UnreadableImageError(f"{DAMAGED_IMAGE} (size {width}x{height})")
    if check == "decode":
        _check_tensorflow_decodes(path, height, width)
    return height, width


def _check_tensorflow_decodes(path, height, width):
    """Decode ``path`` as the input pipeline will (``tf.io.decode_image``): PIL accepts files
    that TensorFlow refuses (a PNG cut short before its end chunk), which would otherwise stop
    training or evaluation half-way with a TensorFlow traceback."""
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", None) or str(error)
        message = re.sub(r"\{\{[^}]*\}\}\s*", "", message)
        message = re.sub(r"\s*\[Op:\w+\].*", "", message, flags=re.S).strip().splitlines()
        reason = message[0] if message else type(error).__name__
        raise UnreadableImageError(f"{DAMAGED_IMAGE} (TensorFlow cannot decode it: {reason})") from error
    decoded = tuple(int(v) for v in image.shape[:2])
    if decoded != (height, width):
        raise UnreadableImageError(
            f"{DAMAGED_IMAGE} (TensorFlow decodes it as {decoded[1]}x{decoded[0]}, its header says "
            f"{width}x{height})"
        )


def check_images(paths, check="header", num_threads=8):
    """:func:`check_image` over many paths in threads: a list of ``(height, width)`` or the
    exception raised for that path."""

    def one(path):
        try:
            return check_image(path, check)
        except Exception as error:  # returned, so the reader can report the file
            return error

    if len(paths) < 64:
        return [one(p) for p in paths]
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        return list(pool.map(one, paths))


def sanitize_boxes(boxes, height, width, problems, file, names=None, indices=None, shown=None):
    """Clip boxes partly outside ``[0, width] × [0, height]``; find wholly-outside, zero-area,
    inverted and non-finite (NaN, inf) ones. Returns a bool ``[n]`` mask of boxes to keep (clipping in place).

    ``file`` names the source in messages: one for all boxes (messages then say "object i"),
    or a list with one entry per box. Optional, per box: ``names`` (class names), ``indices``
    (the objects' positions in the file, default ``0 … n−1``) and ``shown`` (the coordinates
    as written in the file, default ``boxes``) make the messages clearer.
    """
    keep = np.ones(len(boxes), bool)
    per_box = isinstance(file, (list, tuple))
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        where = file[i] if per_box else file
        text = "" if per_box else f"object {indices[i] if indices is not None else i} "
        if names is not None:
            text += f"{names[i]!r} "
        original = box if shown is None else shown[i]
        text += f"box {[round(float(v), 2) for v in original]}"
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            problems.report(NON_FINITE_BOX, where, text)
            keep[i] = False
        elif x2 <= x1 or y2 <= y1:
            problems.report(EMPTY_BOX, where, text)
            keep[i] = False
        elif x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            problems.report(BOX_OUTSIDE, where, f"{text} in a {width}x{height} image")
            keep[i] = False
        elif x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            problems.report(BOX_CLIPPED, where, f"{text} in a {width}x{height} image")
            boxes[i] = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    return keep


# ------------------------------------------------------------------------------------------
# The tf.data pipeline.


def _round_half_up(value):
    return int(math.floor(value + 0.5))


def resized_size(height, width, min_size=None, max_size=None):
    """Size ``(new_height, new_width)`` keeping the aspect ratio: the shorter side becomes
    ``min_size`` unless the longer one would exceed ``max_size``, then the longer side is
    ``max_size``. Only ``max_size``: shrink images whose longer side is larger. Neither: same.
    """
    scale = 1.0
    if min_size is not None:
        scale = min_size / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, _round_half_up(height * scale)), max(1, _round_half_up(width * scale))


def _jitter_config(jitter):
    if jitter is None or jitter is False:
        return None
    if jitter is True:
        return dict(DEFAULT_JITTER)
    unknown = set(jitter) - set(DEFAULT_JITTER)
    if unknown:
        raise ValueError(f"unknown jitter keys {sorted(unknown)}; use {sorted(DEFAULT_JITTER)}")
    return {k: float(v) for k, v in jitter.items() if v}


def _photometric_jitter(image, config, seed):
    """Random brightness, contrast, saturation and hue on a float32 0..255 image."""
    image = image / 255.0
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if "brightness" in config:
        image = tf.image.stateless_random_brightness(image, config["brightness"], seeds[0])
    if "contrast" in config:
        c = config["contrast"]
        image = tf.image.stateless_random_contrast(image, 1.0 - c, 1.0 + c, seeds[1])
    if "saturation" in config or "hue" in config:
        image = tf.clip_by_value(image, 0.0, 1.0)  # HSV conversion needs 0..1
    if "saturation" in config:
        s = config["saturation"]
        image = tf.image.stateless_random_saturation(image, 1.0 - s, 1.0 + s, seeds[2])
    if "hue" in config:
        image = tf.image.stateless_random_hue(image, config["hue"], seeds[3])
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def make_tf_dataset(
    records,
    *,
    batch_size=2,
    training=False,
    min_size=None,
    max_size=None,
    flip=None,
    jitter=None,
    shuffle=None,
    seed=None,
    max_boxes=None,
    pad_to=None,
    size_divisibility=None,
    use_difficult=False,
    cache=False,
    return_metadata=False,
    drop_remainder=False,
    num_parallel_calls=tf.data.AUTOTUNE,
):
    """Input pipeline: read → decode → resize → augment → pad → batch → prefetch.

    Args:
        records: list of :class:`DetectionRecord` (e.g. ``dataset.records``).
        batch_size: images per batch ``B``.
        training: augment (see ``flip``/``jitter``), shuffle, and leave ``difficult``/crowd
            objects out unless ``use_difficult``. When False, every object is kept and the
            targets carry ``"difficult"``.
        min_size, max_size: resize keeping the aspect ratio (:func:`resized_size`); boxes are
            scaled with the exact per-axis factors ``new / old``. None: no resize.
        flip: probability of a horizontal flip (``True`` = 0.5); default 0.5 when training.
            Boxes become ``(W − x2, y1, W − x1, y2)``. Like ``jitter``, only used in training.
        jitter: photometric jitter when training: ``True`` for :data:`DEFAULT_JITTER` or a dict
            with any of ``brightness`` (max delta, 0..1 scale), ``contrast``, ``saturation``
            (factor range ``1 ± v``) and ``hue`` (max delta, 0..0.5). Default: none.
        shuffle: shuffle the records every epoch (default: ``training``).
        seed: makes shuffling, flips and jitter reproducible (per element, whatever the
            parallelism); each epoch still differs from the previous.
        max_boxes: pad boxes to this fixed ``G`` (images with more keep the first ``G``, with a
            warning); None pads to the largest count in each batch.
        pad_to: ``(H, W)`` fixed padded image size (static shapes); an image that does not fit
            after resizing raises ``ValueError`` here. None pads to the batch maximum.
        size_divisibility: also pad ``H`` and ``W`` up to a multiple of this (e.g. 32).
        use_difficult: keep ``difficult``/crowd objects in training batches.
        cache: ``True`` keeps the decoded images (uint8, original size) in memory after the
            first epoch; a string caches them in that file. Worth it for small datasets.
        return_metadata: add ``image_id``, ``scale``, ``original_size``, ``image_size`` and
            ``flipped`` to the targets (see the module docstring).
        drop_remainder: drop a last incomplete batch (static batch dimension).
        num_parallel_calls: parallelism of decoding and augmentation.

    Returns:
        ``tf.data.Dataset`` of ``({"images", "image_sizes"}, targets)``, prefetched.
    """
    records = list(records)
    if not records:
        raise ValueError("no records to build a dataset from")
    flip = (0.5 if training else 0.0) if flip is None else (0.5 if flip is True else float(flip))
    jitter = _jitter_config(jitter) if training else None
    shuffle = training if shuffle is None else shuffle
    randomized = training and (flip > 0 or jitter)

    # Everything per record is computed here once, in NumPy, and gathered by index in the map.
    paths, sizes, new_sizes, counts = [], [], [], []
    flat_boxes, flat_labels, flat_difficult = [], [], []
    too_many = []
    for record in records:
        keep = np.ones(len(record.labels), bool)
        if training and not use_difficult:
            keep = ~record.difficult
        boxes, labels, difficult = record.boxes[keep], record.labels[keep], record.difficult[keep]
        if max_boxes is not None and len(labels) > max_boxes:
            too_many.append(f"{record.image_path} ({len(labels)})")
            boxes, labels, difficult = boxes[:max_boxes], labels[:max_boxes], difficult[:max_boxes]
        paths.append(str(record.image_path))
        sizes.append((record.height, record.width))
        new_sizes.append(resized_size(record.height, record.width, min_size, max_size))
        flat_boxes.append(boxes.reshape(-1, 4))
        flat_labels.append(labels)
        flat_difficult.append(difficult)
        counts.append(len(labels))
    if too_many:
        warnings.warn(
            f"{len(too_many)} image(s) have more than max_boxes={max_boxes} boxes; only the first "
            f"{max_boxes} are used: {', '.join(too_many[:3])}{' …' if len(too_many) > 3 else ''}",
            DatasetWarning,
            stacklevel=2,
        )
    if pad_to is not None:
        pad_to = (int(pad_to[0]), int(pad_to[1]))
        for path, (h, w) in zip(paths, new_sizes):
            if h > pad_to[0] or w > pad_to[1]:
                raise ValueError(f"{path}: resized to {h}x{w} (HxW), larger than pad_to={pad_to}")

    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    paths_t = tf.constant(paths)
    sizes_t = tf.constant(np.asarray(sizes, np.int32).reshape(-1, 2))
    new_sizes_t = tf.constant(np.asarray(new_sizes, np.int32).reshape(-1, 2))
    boxes_t = tf.constant(np.concatenate(flat_boxes).astype(np.float32).reshape(-1, 4))
    labels_t = tf.constant(np.concatenate(flat_labels).astype(np.int32))
    difficult_t = tf.constant(np.concatenate(flat_difficult).astype(bool))
    splits_t = tf.constant(splits)
    resize = min_size is not None or max_size is not None

    def decode(index):
        path = paths_t[index]
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        check = tf.debugging.Assert(
            tf.reduce_all(tf.equal(tf.shape(image)[:2], sizes_t[index])),
            ["decoded image size differs from its record:", path, tf.shape(image), sizes_t[index]],
        )
        with tf.control_dependencies([check]):
            return index, tf.identity(image)

    def transform(index, image, rng):
        size = tf.cast(sizes_t[index], tf.float32)
        new_size = new_sizes_t[index]
        image = tf.cast(image, tf.float32)
        if resize:
            image = tf.image.resize(image, new_size, method="bilinear")
        new_size_f = tf.cast(new_size, tf.float32)
        scale = new_size_f / size  # (sy, sx)
        start, end = splits_t[index], splits_t[index + 1]
        boxes = boxes_t[start:end] * tf.stack([scale[1], scale[0], scale[1], scale[0]])
        labels, difficult = labels_t[start:end], difficult_t[start:end]
        flipped = tf.constant(False)
        if randomized:
            element_seed = tf.stack([rng, tf.cast(index, tf.int64)])
            seeds = tf.random.experimental.stateless_split(element_seed, 2)
            if flip > 0:
                flipped = tf.random.stateless_uniform([], seeds[0]) < flip
                width = new_size_f[1]
                image = tf.cond(flipped, lambda: tf.reverse(image, axis=[1]), lambda: image)
                mirrored = tf.stack(
                    [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1
                )
                boxes = tf.where(flipped, mirrored, boxes)
            if jitter:
                image = _photometric_jitter(image, jitter, seeds[1])
        targets = {"boxes": boxes, "labels": labels}
        if not training:
            targets["difficult"] = difficult
        if return_metadata:
            targets.update(
                image_id=tf.cast(index, tf.int32),
                scale=scale,
                original_size=sizes_t[index],
                image_size=new_size,
                flipped=flipped,  # so per-image side data (e.g. proposals) can be mirrored too
            )
        return {"images": image, "image_sizes": tf.shape(image)[:2]}, targets

    dataset = tf.data.Dataset.range(len(records))
    if cache:
        dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls)
        dataset = dataset.cache("" if cache is True else str(cache))
    if shuffle:
        dataset = dataset.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    if not cache:
        dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls)
    # One random int64 per element, re-drawn each epoch; element seeds are (rng, index).
    if randomized:
        rngs = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    else:
        rngs = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()
    dataset = tf.data.Dataset.zip(dataset, rngs).map(
        lambda pair, rng: transform(pair[0], pair[1], rng), num_parallel_calls=num_parallel_calls
    )

    g = max_boxes
    target_shapes = {"boxes": [g, 4], "labels": [g]}
    target_padding = {"boxes": 0.0, "labels": -1}
    if not training:
        target_shapes["difficult"] = [g]
        target_padding["difficult"] = False
    if return_metadata:
        target_shapes.update(image_id=[], scale=[2], original_size=[2], image_size=[2], flipped=[])
        target_padding.update(image_id=0, scale=0.0, original_size=0, image_size=0, flipped=False)
    image_shape = [None, None, 3] if pad_to is None else [pad_to[0], pad_to[1], 3]
    dataset = dataset.padded_batch(
        batch_size,
        padded_shapes=({"images": image_shape, "image_sizes": [2]}, target_shapes),
        padding_values=({"images": 0.0, "image_sizes": 0}, target_padding),
        drop_remainder=drop_remainder,
    )
    if size_divisibility:
        d = int(size_divisibility)

        def pad_to_multiple(inputs, targets):
            images = inputs["images"]
            shape = tf.shape(images)
            pad_h, pad_w = (-shape[1]) % d, (-shape[2]) % d
            images = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
            return {**inputs, "images": images}, targets

        dataset = dataset.map(pad_to_multiple, num_parallel_calls=num_parallel_calls)
    return dataset.prefetch(tf.data.AUTOTUNE)
