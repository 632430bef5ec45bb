"""What a dataset holds and how well a detector's anchors cover it, before any training.

:func:`analyze` counts classes, box sizes and aspect ratios (in original pixels and after the
detector's resize), image sizes and orientations, duplicate images (same bytes) and duplicate
annotations (the same box and class twice in one image), and — for a detector with an RPN — the
**anchor recall**: the fraction of ground-truth boxes that at least one anchor overlaps with IoU
≥ 0.7 (what the RPN labels positive, Faster R-CNN §3.1.2) and ≥ 0.5, overall, per class and
per COCO size bucket of the resized box (small < 32², medium < 96², large). It is the RPN's
upper bound: an object no anchor reaches at 0.7 is only learnt through the "best anchor of each
box" rule, from one low-overlap anchor.

The anchors are those the detector generates for each image's resized, padded size (its own
:class:`~rcnn_zoo.layers.AnchorGenerator`, feature-map sizes from its backbone's shape rule),
in continuous pixel coordinates, IoU as the RPN's matcher computes it; anchors that cross the
image border count, as they do in training (torchvision's rule, no ``allowed_border``).
"""

import collections
import hashlib
import math

import keras
import numpy as np
import tensorflow as tf

from rcnn_zoo.data.stages import resized_size
from rcnn_zoo.ops.boxes import pairwise_iou

__all__ = ["COCO_SIZE_BUCKETS", "FeatureGrids", "analyze", "best_anchor_iou", "format_analysis",
           "resize_rule", "resized_boxes"]

# COCO's object-size ranges (area in pixels², here of the resized box).
COCO_SIZE_BUCKETS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
RECALL_IOUS = (0.7, 0.5)
_PERCENTILES = (5, 25, 50, 75, 95)


def best_anchor_iou(boxes, anchors, chunk=64):
    """Highest IoU of each box ``[n, 4]`` xyxy with any of ``anchors [A, 4]`` → float32 ``[n]``
    (0 when there are no anchors): the RPN matcher's IoU (:func:`rcnn_zoo.ops.boxes.pairwise_iou`,
    continuous coordinates), ``chunk`` boxes at a time (hundreds of boxes per image)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    anchors = tf.constant(np.asarray(anchors, np.float32).reshape(-1, 4))
    best = np.zeros(len(boxes), np.float32)
    if anchors.shape[0] == 0:
        return best
    for start in range(0, len(boxes), chunk):
        iou = pairwise_iou(tf.constant(boxes[start:start + chunk]), anchors)
        best[start:start + chunk] = tf.reduce_max(iou, axis=1).numpy()
    return best


def resize_rule(model=None, image_min_size=None, image_max_size=None):
    """``(image_min_size, image_max_size)``: the values given, else ``model``'s, else None."""
    if image_min_size is None:
        image_min_size = getattr(model, "image_min_size", None)
    if image_max_size is None:
        image_max_size = getattr(model, "image_max_size", None)
    return image_min_size, image_max_size


def resized_boxes(record, height, width):
    """``record``'s non-difficult boxes ``[n, 4]`` in the pixels of its image resized to
    ``height × width``."""
    scale = np.array([width / record.width, height / record.height] * 2, np.float32)
    return record.boxes[~record.difficult] * scale


class FeatureGrids:
    """``(padded (H, W), [(H_l, W_l) per RPN level])`` of an image resized to ``(height, width)``:
    the batch padding of ``model`` (``size_divisible``) and its backbone's own shape rule
    (``compute_output_spec``, no computation), cached by padded size."""

    def __init__(self, model):
        self.backbone = model.backbone
        self.names = list(model.rpn_feature_names)
        self.divisor = int(getattr(model, "size_divisible", 1) or 1)
        self._cache = {}

    def __call__(self, height, width):
        d = self.divisor
        padded = (-(-height // d) * d, -(-width // d) * d)
        if padded not in self._cache:
            spec = self.backbone.compute_output_spec(keras.KerasTensor((1, *padded, 3)))
            self._cache[padded] = [tuple(spec[name].shape[1:3]) for name in self.names]
        return padded, self._cache[padded]


def _distribution(values):
    """Count, mean and percentiles of a 1-D array (empty: count 0 only)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return {"count": 0}
    result = {"count": int(values.size), "mean": round(float(values.mean()), 2)}
    for p, v in zip(_PERCENTILES, np.percentile(values, _PERCENTILES)):
        result[f"p{p}"] = round(float(v), 2)
    return result


def _size_bucket(areas):
    """Index into :data:`COCO_SIZE_BUCKETS` of each area (pixels²)."""
    edges = [upper for _, _, upper in COCO_SIZE_BUCKETS[:-1]]
    return np.searchsorted(edges, np.asarray(areas), side="right")


class _DetectorAnchors:
    """The anchors a detector generates for an image of a given resized size (cached by size)."""

    def __init__(self, model):
        self.generator = model.rpn.anchor_generator
        self.grids = FeatureGrids(model)
        self._cache = {}

    def __call__(self, height, width):
        padded, shapes = self.grids(height, width)
        if padded not in self._cache:
            levels = self.generator.anchors_for_shapes(shapes, image_shape=padded)
            self._cache[padded] = np.concatenate([np.asarray(level) for level in levels], axis=0)
        return self._cache[padded]


def _file_digest(path):
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _duplicates(dataset):
    """Groups of image files with identical bytes, and images annotating a box twice."""
    by_digest = collections.defaultdict(list)
    repeated_boxes = []
    for record in dataset.records:
        try:
            by_digest[_file_digest(record.image_path)].append(record.image_path)
        except OSError:
            continue  # the reader already reported unreadable files
        rows = np.concatenate([record.boxes, record.labels[:, None].astype(np.float32)], axis=1)
        repeats = len(rows) - len(np.unique(rows, axis=0)) if len(rows) else 0
        if repeats:
            repeated_boxes.append({"image": record.image_path, "repeated_annotations": int(repeats)})
    images = [paths for paths in by_digest.values() if len(paths) > 1]
    return {"identical_images": images, "repeated_annotations": repeated_boxes}


def _recall(best, selection):
    """``{"boxes": n, "recall@0.7": …, "recall@0.5": …, "median_best_iou": …}`` of a subset."""
    chosen = best[selection]
    row = {"boxes": int(chosen.size)}
    for threshold in RECALL_IOUS:
        row[f"recall@{threshold}"] = round(float(np.mean(chosen >= threshold)), 4) if chosen.size else None
    row["median_best_iou"] = round(float(np.median(chosen)), 4) if chosen.size else None
    return row


def analyze(dataset, model=None, image_min_size=None, image_max_size=None, duplicates=True):
    """Statistics of ``dataset`` (a :class:`~rcnn_zoo.data.DetectionDataset`) as a JSON-ready dict.

    Args:
        dataset: the images and boxes (original pixels); difficult objects are counted apart
            and left out of the box statistics and the anchor recall (training leaves them out).
        model: a detector; its resize rule and, when it has an RPN, its anchors are used.
        image_min_size, image_max_size: the resize rule (shorter side, longer-side cap, pixels);
            default the model's, else no resize.
        duplicates: also hash every image file to find identical images.

    Returns:
        dict with ``images`` (count, orientations, most common sizes), ``classes`` (objects and
        images per class), ``boxes`` (size √(w·h), width, height in original and resized
        pixels, aspect ratio h/w, COCO size buckets), ``duplicates``, and ``anchors``
        (configuration and recall overall / per class / per size bucket) when ``model`` has
        an RPN.
    """
    image_min_size, image_max_size = resize_rule(model, image_min_size, image_max_size)
    anchors = _DetectorAnchors(model) if model is not None and hasattr(model, "rpn") else None
    sizes, labels, original, resized, difficult_counts, best = [], [], [], [], collections.Counter(), []
    images_per_class = collections.Counter()
    for record in dataset.records:
        height, width = int(record.height), int(record.width)
        new_height, new_width = resized_size(height, width, image_min_size, image_max_size)
        sizes.append((height, width))
        keep = ~record.difficult
        difficult_counts.update(record.labels[record.difficult].tolist())
        images_per_class.update(set(record.labels[keep].tolist()))
        scaled = resized_boxes(record, new_height, new_width)
        labels.append(record.labels[keep])
        original.append(record.boxes[keep])
        resized.append(scaled)
        if anchors is not None:
            best.append(best_anchor_iou(scaled, anchors(new_height, new_width)))
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
    original = np.concatenate(original) if original else np.zeros((0, 4), np.float32)
    resized = np.concatenate(resized) if resized else np.zeros((0, 4), np.float32)
    result = {
        "source": dataset.source,
        "resize": {"image_min_size": image_min_size, "image_max_size": image_max_size},
        "images": _image_statistics(sizes, image_min_size, image_max_size),
        "classes": [
            {"class": name, "objects": int(np.sum(labels == c)), "images": int(images_per_class[c]),
             "difficult": int(difficult_counts[c])}
            for c, name in enumerate(dataset.class_names)
        ],
        "boxes": _box_statistics(original, resized),
    }
    if duplicates:
        result["duplicates"] = _duplicates(dataset)
    if anchors is not None:
        result["anchors"] = _anchor_report(anchors, np.concatenate(best) if best else np.zeros(0), labels,
                                           resized, dataset.class_names)
    return result


def _image_statistics(sizes, image_min_size, image_max_size):
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    common = collections.Counter(map(tuple, sizes.tolist())).most_common(8)
    return {
        "count": int(len(sizes)),
        "landscape": int(np.sum(sizes[:, 1] > sizes[:, 0])),
        "portrait": int(np.sum(sizes[:, 0] > sizes[:, 1])),
        "square": int(np.sum(sizes[:, 0] == sizes[:, 1])),
        "most_common_sizes": [
            {"height": h, "width": w, "images": n,
             "resized": list(resized_size(h, w, image_min_size, image_max_size))}
            for (h, w), n in common
        ],
    }


def _box_statistics(original, resized):
    def sides(boxes):
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        return w, h, np.sqrt(np.clip(w * h, 0, None))

    w0, h0, s0 = sides(original)
    w1, h1, s1 = sides(resized)
    ratio = np.divide(h0, w0, out=np.zeros_like(h0), where=w0 > 0)
    bucket = _size_bucket(w1 * h1)
    return {
        "count": int(len(original)),
        "size_original": _distribution(s0), "size_resized": _distribution(s1),
        "width_resized": _distribution(w1), "height_resized": _distribution(h1),
        "aspect_ratio": _distribution(ratio),
        "size_buckets_resized": {name: int(np.sum(bucket == i)) for i, (name, _, _) in enumerate(COCO_SIZE_BUCKETS)},
        # Raw values for the picture (not written to JSON by the CLI).
        "_sizes_resized": s1, "_aspect_ratios": ratio,
    }


def _anchor_report(anchors, best, labels, resized, class_names):
    generator = anchors.generator
    bucket = _size_bucket((resized[:, 2] - resized[:, 0]) * (resized[:, 3] - resized[:, 1]))
    return {
        "sizes": generator.sizes, "aspect_ratios": generator.aspect_ratios, "strides": generator.strides,
        "per_location": generator.num_anchors_per_location,
        "overall": _recall(best, slice(None)),
        "per_class": [{"class": name, **_recall(best, labels == c)} for c, name in enumerate(class_names)],
        "per_size": [{"size": name, **_recall(best, bucket == i)} for i, (name, _, _) in enumerate(COCO_SIZE_BUCKETS)],
        "_best_iou": best,
    }


def format_analysis(result):
    """A few plain-text tables of :func:`analyze`'s result, for the terminal."""
    lines = [f"{result['source']}: {result['images']['count']} images "
             f"({result['images']['landscape']} landscape, {result['images']['portrait']} portrait, "
             f"{result['images']['square']} square), {result['boxes']['count']} boxes"]
    rule = result["resize"]
    lines.append(f"resize: shorter side {rule['image_min_size']}, longer side at most {rule['image_max_size']}")
    lines.append("most common sizes: " + ", ".join(
        f"{s['width']}×{s['height']} ({s['images']}) → {s['resized'][1]}×{s['resized'][0]}"
        for s in result["images"]["most_common_sizes"][:4]))
    lines.append("")
    lines.append(f"{'class':20s} {'objects':>8s} {'images':>7s} {'difficult':>9s}")
    lines += [f"{c['class'][:20]:20s} {c['objects']:8d} {c['images']:7d} {c['difficult']:9d}" for c in result["classes"]]
    boxes = result["boxes"]
    lines.append("")
    lines.append(f"{'box (px)':20s} {'p5':>7s} {'p25':>7s} {'p50':>7s} {'p75':>7s} {'p95':>7s}")
    for key, title in (("size_original", "√(w·h) original"), ("size_resized", "√(w·h) resized"),
                       ("aspect_ratio", "aspect h/w")):
        d = boxes[key]
        if d["count"]:
            lines.append(f"{title:20s} " + " ".join(f"{d[f'p{p}']:7.2f}" for p in _PERCENTILES))
    lines.append("size buckets (resized): " + ", ".join(f"{k} {v}" for k, v in boxes["size_buckets_resized"].items()))
    duplicates = result.get("duplicates")
    if duplicates is not None:
        lines.append(f"identical image files: {sum(len(g) for g in duplicates['identical_images'])} in "
                     f"{len(duplicates['identical_images'])} groups; images with a repeated annotation: "
                     f"{len(duplicates['repeated_annotations'])}")
    report = result.get("anchors")
    if report is not None:
        lines.append("")
        lines.append(f"anchors: sizes {report['sizes']}, aspect ratios {report['aspect_ratios']}, "
                     f"strides {report['strides']}")
        lines.append(f"{'anchor recall':20s} {'boxes':>7s} {'IoU≥0.7':>8s} {'IoU≥0.5':>8s} {'median':>7s}")
        rows = [("all", report["overall"])] + [(r["class"], r) for r in report["per_class"]] + \
               [(r["size"], r) for r in report["per_size"]]
        for name, r in rows:
            if r["boxes"]:
                lines.append(f"{name[:20]:20s} {r['boxes']:7d} {r['recall@0.7']:8.3f} {r['recall@0.5']:8.3f} "
                             f"{r['median_best_iou']:7.3f}")
    return "\n".join(lines)


def json_ready(result):
    """``result`` without the raw arrays kept for the picture (keys starting with ``_``)."""
    if isinstance(result, dict):
        return {k: json_ready(v) for k, v in result.items() if not k.startswith("_")}
    if isinstance(result, (list, tuple)):
        return [json_ready(v) for v in result]
    return result
