"""Running a trained detector: load it (``.keras`` file or registered weights name) and detect
objects in image files, writing annotated PNGs and ``detections.json`` (``rcnn-zoo predict``).

Each image is fed at its original size, one at a time; the model resizes it. Boxes are float32
xyxy in pixels of the original image (``docs/conventions.md``).
"""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

import keras

from rcnn_zoo.errors import UsageError
from rcnn_zoo.utils import progress, write_json
from rcnn_zoo.visualization import draw_detections, save_png
from rcnn_zoo.weights import build_pretrained

__all__ = ["IMAGE_EXTENSIONS", "load_model", "model_from_weights_name", "list_images", "predict_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def load_model(path, compile=False):
    """A detector saved with ``model.save(path)`` (``.keras``).

    The detector classes are registered for deserialisation by importing :mod:`rcnn_zoo`.
    """
    if not os.path.isfile(path):
        raise UsageError(f"model file not found: {path}")
    if not str(path).endswith(".keras"):
        raise UsageError(f"--model expects a .keras file written by model.save() (e.g. best.keras), got {path}")
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as error:  # a corrupt or foreign file: say which and why
        raise UsageError(f"cannot load model {path}: {type(error).__name__}: {error}") from error


def model_from_weights_name(name):
    """The detector a registered weight name describes, weights loaded
    (:func:`rcnn_zoo.weights.build_pretrained`)."""
    try:
        return build_pretrained(name)
    except (OSError, ValueError, RuntimeError) as error:  # unknown name, download, hash, mismatch
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"cannot load weights {name!r}: {message}") from error


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


def predict_images(model, image_paths, output_dir, score_threshold=0.5, verbose=1, draw=True):
    """Detect objects in image files; write ``<stem>.png`` with the boxes drawn (when
    ``draw``) and ``detections.json`` into ``output_dir``.

    Returns:
        the list written to ``detections.json``: per image ``{"image", "output", "width",
        "height", "boxes" [[x1, y1, x2, y2] original pixels], "scores", "labels",
        "class_names"}`` with the detections scoring ≥ ``score_threshold``, best first.
    """
    os.makedirs(output_dir, exist_ok=True)
    names = list(model.class_names) if getattr(model, "class_names", None) else None
    used, results = set(), []
    for path in progress(image_paths, len(image_paths), verbose=verbose):
        try:
            with Image.open(path) as opened:
                image = np.asarray(opened.convert("RGB"), np.uint8)
        except (OSError, UnidentifiedImageError) as error:
            raise UsageError(f"cannot read image {path}: {error}") from error
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
