"""Running a trained detector: load it (``.keras`` file or registered weights name) and detect
objects in image files, writing annotated PNGs and ``detections.json`` (``rcnn-zoo predict``).

Each image is fed at its original size, one at a time; the model resizes it. Boxes are float32
xyxy in pixels of the original image (``docs/conventions.md``).

A file that cannot be read as an image (empty, truncated, not an image at all) does not stop the
others: it is skipped and reported, with the reason, in the result's ``failed`` list and in
``detections.json``.

Detectors whose proposals come from outside the network (Fast R-CNN, R-CNN) get selective
search proposals computed here (:func:`image_proposals`, with an on-disk cache for datasets;
:func:`proposal_settings` says with which settings), so every command takes a ``.keras`` of any
detector.
"""

import os
import warnings
import zipfile
import zlib

import numpy as np
from PIL import Image, UnidentifiedImageError

import keras

from rcnn_zoo.errors import UsageError
from rcnn_zoo.models.registry import build_pretrained
from rcnn_zoo.proposals import compute_proposals, pad_proposals
from rcnn_zoo.utils import progress, write_json
from rcnn_zoo.visualization import draw_detections, save_png
from rcnn_zoo.weights import WeightsFileError, check_weights_file

__all__ = [
    "FAST_RCNN_PROPOSALS",
    "IMAGE_EXTENSIONS",
    "Predictions",
    "UnreadableImageWarning",
    "boxes_in_model_format",
    "load_model",
    "model_from_weights_name",
    "list_images",
    "needs_proposals",
    "predict_images",
    "proposal_settings",
    "image_proposals",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# Reasons an image file is skipped (``"error"`` of its detections.json entry), one per kind.
EMPTY_FILE = "empty file, 0 bytes"
NOT_AN_IMAGE = "not an image: its contents are in no image format"
DAMAGED_IMAGE = "truncated or damaged image data"

# Selective search settings for detectors that take proposals but keep no proposal settings of
# their own (Fast R-CNN): the papers' fast mode and up to 2000 boxes (rcnn_zoo.proposals'
# defaults: boxes of at least 16 px, images shrunk to a longer side of 500 px first). Training,
# evaluation and prediction through the CLI all use these, so a model is tested on the kind of
# proposals it was trained on.
FAST_RCNN_PROPOSALS = {"mode": "fast", "max_proposals": 2000}

# First bytes of the formats of IMAGE_EXTENSIONS: a file that starts like one is a damaged image,
# not some other file with an image's name.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")


def load_model(path, compile=False):
    """A detector saved with ``model.save(path)`` (``.keras``).

    The detector classes are registered for deserialisation by importing :mod:`rcnn_zoo`.

    Raises:
        UsageError: no such file, not a ``.keras`` name, or a file Keras cannot load; an empty,
            truncated or damaged file raises the :class:`rcnn_zoo.weights.WeightsFileError`
            subclass (also an ``OSError`` and ``ValueError``) naming it.
    """
    if not os.path.isfile(path):
        raise UsageError(f"model file not found: {path}")
    if not str(path).endswith(".keras"):
        raise UsageError(f"--model expects a .keras file written by model.save() (e.g. best.keras), got {path}")
    check_weights_file(path, what="model file")
    try:
        return keras.models.load_model(path, compile=compile)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:  # damaged inside the archive
        raise WeightsFileError(
            f"cannot read model file {path}: the file is damaged ({type(error).__name__}: {error}); "
            "download or save it again", path,
        ) from error
    except Exception as error:  # a corrupt or foreign file: say which and why
        raise UsageError(f"cannot load model {path}: {type(error).__name__}: {error}") from error


def model_from_weights_name(name):
    """The detector a registered weight name describes, weights loaded
    (:func:`rcnn_zoo.models.registry.build_pretrained`)."""
    try:
        return build_pretrained(name)
    except (OSError, ValueError, RuntimeError) as error:  # unknown name, download, hash, mismatch
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"cannot load weights {name!r}: {message}") from error


# ------------------------------------------------------------------------------------------
# Proposals of the detectors that take them


def needs_proposals(model):
    """Whether ``model`` scores region proposals computed outside the network: Fast R-CNN (an
    input ``"proposals"``, ``takes_proposals``) and R-CNN (selective search settings
    ``proposal_mode``/``max_proposals`` of its own)."""
    return bool(getattr(model, "takes_proposals", False)) or getattr(model, "proposal_mode", None) is not None


def proposal_settings(model):
    """Settings of :func:`rcnn_zoo.proposals.compute_proposals` for ``model``: R-CNN's own
    ``proposal_mode`` and ``max_proposals`` (what its ``predict`` runs), else
    :data:`FAST_RCNN_PROPOSALS`."""
    if getattr(model, "proposal_mode", None) is not None:
        return {"mode": model.proposal_mode, "max_proposals": model.max_proposals}
    return dict(FAST_RCNN_PROPOSALS)


def boxes_in_model_format(model, boxes, height, width):
    """xyxy boxes (proposals, ground truth) ``[N, 4]`` of a ``height × width`` image →
    ``model.bounding_box_format``."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    target = getattr(model, "bounding_box_format", "xyxy")
    if target == "xyxy" or not len(boxes):
        return boxes
    return np.asarray(keras.ops.convert_to_numpy(keras.utils.bounding_boxes.convert_format(
        boxes, source="xyxy", target=target, height=height, width=width)), np.float32)


def _cache_entries(cache_dir):
    return set(os.listdir(cache_dir)) if cache_dir and os.path.isdir(cache_dir) else set()


def image_proposals(model, images, cache_dir=None, verbose=1):
    """Selective search proposals of image files (or ``[H, W, 3]`` arrays) with ``model``'s
    settings (:func:`proposal_settings`): a list of float32 ``[N_i, 4]`` xyxy boxes in each
    image's own pixels, best ranked first.

    ``cache_dir``: the on-disk cache of :func:`rcnn_zoo.proposals.compute_proposals` (one
    ``.npz`` per image and settings): an image whose entry is there is read, not searched
    again. ``verbose``: a line saying what runs, a progress bar over the images, and how many
    were computed and how many read from the cache.

    Raises:
        UsageError: OpenCV's contrib modules (``cv2.ximgproc``) are not installed.
    """
    settings = proposal_settings(model)
    images = list(images)
    before = _cache_entries(cache_dir)
    if verbose:
        limit = settings["max_proposals"] if settings["max_proposals"] is not None else "all"
        where = f", cached in {cache_dir}" if cache_dir else ""
        print(f"Selective search proposals ({settings['mode']} mode, at most {limit} per image) of "
              f"{len(images)} image(s){where}:", flush=True)
    results = []
    try:
        for image in progress(images, len(images), verbose=verbose):
            try:
                results.extend(compute_proposals([image], cache_dir=cache_dir, **settings))
            except OSError:
                if not isinstance(image, (str, os.PathLike)):
                    raise
                # OpenCV cannot read this file (a GIF, which the data readers accept): its pixels.
                pixels = np.asarray(Image.open(image).convert("RGB"), np.uint8)
                results.extend(compute_proposals([pixels], cache_dir=cache_dir, **settings))
    except ImportError as error:  # no cv2.ximgproc: say which package provides it
        raise UsageError(f"{type(model).__name__} needs selective search proposals. {error}") from error
    if verbose:
        computed = len(_cache_entries(cache_dir) - before) if cache_dir else len(images)
        print(f"Selective search: {computed} image(s) computed, {len(images) - computed} read from the cache.",
              flush=True)
    return results


def _model_inputs(model, image):
    """What ``model.predict_on_batch`` takes for one ``[H, W, 3]`` image: the batch of one, and
    for a detector with a proposals input (Fast R-CNN) the image's selective search proposals.
    (R-CNN's ``predict`` runs selective search itself, with the same settings.)"""
    if not getattr(model, "takes_proposals", False):
        return image[None]
    height, width = image.shape[:2]
    boxes = image_proposals(model, [image], verbose=0)[0]
    return {"images": image[None],
            "proposals": pad_proposals([boxes_in_model_format(model, boxes, height, width)])}


def list_images(items):
    """Image files named in ``items`` (files, or folders scanned non-recursively), sorted per
    folder."""
    paths = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise UsageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {item}")
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise UsageError(f"image not found: {item}")
    if not paths:
        raise UsageError("no images given")
    return paths


def _to_xyxy(boxes, bounding_box_format, height, width):
    if bounding_box_format == "xyxy":
        return boxes
    return keras.ops.convert_to_numpy(keras.utils.bounding_boxes.convert_format(
        boxes, source=bounding_box_format, target="xyxy", height=height, width=width))


class UnreadableImageWarning(UserWarning):
    """:func:`predict_images` skipped image files it could not read (named in the message)."""


class Predictions(list):
    """What :func:`predict_images` returns: a list of the per-image entries of the images it
    read (as before), and in ``failed`` the ``{"image", "error"}`` of those it could not read."""

    def __init__(self, entries=(), failed=()):
        super().__init__(entries)
        self.failed = list(failed)


def _unreadable_reason(path, error):
    """The ``"error"`` of an image file that could not be decoded: one phrase per kind."""
    if isinstance(error, UnidentifiedImageError):
        try:
            with open(path, "rb") as handle:
                head = handle.read(16)
        except OSError:
            head = b""
        like_image = head.startswith(_SIGNATURES) and (not head.startswith(b"RIFF") or head[8:12] == b"WEBP")
        return DAMAGED_IMAGE if like_image else NOT_AN_IMAGE
    if isinstance(error, (OSError, SyntaxError, EOFError, ValueError, zlib.error)):
        return DAMAGED_IMAGE  # "image file is truncated", "broken data stream", "broken PNG file", ...
    return f"cannot decode it ({type(error).__name__}: {error})"


class _Unreadable(Exception):
    """An image file that could not be read; ``reason`` is its ``"error"``."""

    def __init__(self, path, reason):
        super().__init__(f"cannot read image {path}: {reason}")
        self.reason = reason


def _read_image(path):
    try:
        with open(path, "rb") as handle:
            if not handle.read(1):
                raise _Unreadable(path, EMPTY_FILE)
            handle.seek(0)
            try:
                with Image.open(handle) as opened:
                    return np.asarray(opened.convert("RGB"), np.uint8)
            except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, zlib.error, ...
                raise _Unreadable(path, _unreadable_reason(path, error)) from error
    except OSError as error:  # open() or read() of the file itself
        raise _Unreadable(path, f"cannot open the file ({error.strerror or error})") from error


def predict_images(model, image_paths, output_dir, score_threshold=0.5, verbose=1, draw=True):
    """Detect objects in image files; write ``<stem>.png`` with the boxes drawn (when
    ``draw``) and ``detections.json`` into ``output_dir``.

    A file that cannot be read as an image (empty, truncated or damaged, not an image) is
    skipped, the others are processed, and an :class:`UnreadableImageWarning` names the skipped
    ones.

    Returns:
        :class:`Predictions`: a list, per image read, of ``{"image", "output", "width",
        "height", "boxes" [[x1, y1, x2, y2] original pixels], "scores", "labels",
        "class_names"}`` with the detections scoring ≥ ``score_threshold``, best first; and in
        its ``failed`` attribute, per file not read, ``{"image", "error"}`` (the reason).

        ``detections.json`` is the same list with the ``{"image", "error"}`` entries of the
        files not read in their place (input order). Entries of images read are unchanged, so
        a reader tells the two apart by ``"error"``.
    """
    os.makedirs(output_dir, exist_ok=True)
    names = list(model.class_names) if getattr(model, "class_names", None) else None
    used, results, failed, written = set(), [], [], []
    done = 0
    try:
        for path in progress(image_paths, len(image_paths), verbose=verbose):
            done += 1
            try:
                image = _read_image(path)
            except _Unreadable as error:
                entry = {"image": os.path.abspath(path), "error": error.reason}
                failed.append(entry)
                written.append(entry)
                continue
            entry = _detect(model, image, path, output_dir, score_threshold, names, used, draw)
            results.append(entry)
            written.append(entry)
    except BaseException:
        if verbose and done > 1:  # the bar has been drawn (after the first image) and not ended
            print(flush=True)  # end its line, so that the error is printed on a line of its own
        raise
    write_json(os.path.join(output_dir, "detections.json"), written)
    if failed:
        listed = ", ".join(f"{item['image']} ({item['error']})" for item in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        warnings.warn(
            f"{len(failed)} of {len(image_paths)} image files could not be read and were skipped: "
            f"{listed}{more} (listed with their reason in detections.json and .failed)",
            UnreadableImageWarning,
            stacklevel=2,
        )
    return Predictions(results, failed)


def _detect(model, image, path, output_dir, score_threshold, names, used, draw):
    height, width = image.shape[:2]
    out = model.predict_on_batch(_model_inputs(model, image))
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
    return {
        "image": os.path.abspath(path),
        "output": os.path.abspath(png) if draw else None,
        "width": width,
        "height": height,
        "boxes": [[round(float(v), 2) for v in box] for box in boxes],
        "scores": [round(float(s), 5) for s in scores],
        "labels": [int(label) for label in labels],
        "class_names": [names[label] if names else str(label) for label in labels],
    }
