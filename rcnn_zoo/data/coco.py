"""COCO instances-JSON reader.

COCO ``bbox`` is ``[x, y, w, h]`` in continuous pixel coordinates, so the box is simply
``(x, y, x + w, y + h)``. Category ids (sparse, e.g. 1…90) become contiguous labels
``0 … C−1`` in increasing id order; ``dataset.category_ids[label]`` gives the id back for
writing results (``rcnn_zoo.evaluation.coco_results``). ``iscrowd`` objects are kept in the
records with ``difficult=True``: training leaves them out, the COCO evaluator treats them as
crowd regions.
"""

import json
import math
import numbers
import os

import numpy as np

from rcnn_zoo.data.pipeline import (
    MALFORMED_ANNOTATION,
    MISSING_FILE,
    SIZE_MISMATCH,
    UNKNOWN_CLASS,
    UNREADABLE_IMAGE,
    DatasetError,
    DetectionDataset,
    DetectionRecord,
    ProblemLog,
    sanitize_boxes,
)
from rcnn_zoo.data.pipeline import check_images as _check_images

__all__ = ["read_coco"]


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def read_coco(annotation_file, image_dir, *, strict=False, check_images="header"):
    """Read a COCO instances JSON file into a :class:`DetectionDataset`.

    Args:
        annotation_file: path of e.g. ``instances_val2017.json``.
        image_dir: folder the images' ``file_name`` are relative to.
        strict: raise :class:`DatasetError` naming the file at the first problem instead of
            skipping it.
        check_images: ``"header"`` (open each image, read its size), ``"decode"`` (also decode
            it) or ``"none"`` (trust the JSON sizes).

    Returns:
        :class:`DetectionDataset` with ``class_names`` and ``category_ids`` in increasing
        category id order, one record per entry of ``"images"`` (``image_id`` = its ``"id"``;
        images without annotations are kept), ``areas`` from the annotations' ``"area"``.
        A JSON file that cannot be read or lacks ``images``/``annotations``/``categories``
        raises :class:`DatasetError`. Per item, and reported in one :class:`DatasetWarning`
        (and ``dataset.problems``): images missing/unreadable or with a malformed entry are
        skipped; annotations malformed, of an unknown category or image, wholly outside the
        image, zero-area or inverted are skipped; boxes partly outside are clipped.
    """
    annotation_file = os.fspath(annotation_file)
    image_dir = os.fspath(image_dir)
    try:
        with open(annotation_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{annotation_file}: cannot read COCO JSON ({error})") from error
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"{annotation_file}: not a COCO instances file (needs lists 'images', "
            "'annotations' and 'categories')"
        )

    problems = ProblemLog(f"read_coco({annotation_file!r})", strict=strict)

    categories = {}
    for i, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int):
            raise DatasetError(f"{annotation_file}: categories[{i}] has no integer 'id'")
        categories[category["id"]] = str(category.get("name", category["id"]))
    category_ids = sorted(categories)
    class_names = [categories[c] for c in category_ids]
    label_of = {c: i for i, c in enumerate(category_ids)}

    # Images: validate entries, then check the files.
    entries = []
    for i, image in enumerate(data["images"]):
        where = f"{annotation_file} images[{i}]"
        if not isinstance(image, dict) or "id" not in image or not isinstance(
            image.get("file_name"), str
        ):
            problems.report(MALFORMED_ANNOTATION, where, "needs 'id' and 'file_name'")
            continue
        json_size = (image.get("height"), image.get("width"))
        if not all(_is_number(v) and v > 0 for v in json_size):
            json_size = None
        entries.append((image["id"], os.path.join(image_dir, image["file_name"]), json_size))

    sizes = _check_images([e[1] for e in entries], check_images)
    images = {}
    for (image_id, path, json_size), size in zip(entries, sizes):
        if isinstance(size, FileNotFoundError):
            problems.report(MISSING_FILE, path, f"image id {image_id} not found")
            continue
        if isinstance(size, Exception):
            problems.report(UNREADABLE_IMAGE, path, f"{type(size).__name__}: {size}")
            continue
        if size is None:
            if json_size is None:
                problems.report(
                    MALFORMED_ANNOTATION, path, "no height/width and check_images='none'"
                )
                continue
            size = (int(json_size[0]), int(json_size[1]))
        elif json_size is not None and (int(json_size[0]), int(json_size[1])) != tuple(size):
            problems.report(
                SIZE_MISMATCH,
                path,
                f"JSON says {json_size[1]}x{json_size[0]}, image is {size[1]}x{size[0]} (WxH)",
            )
        images[image_id] = {"path": path, "size": size, "objects": []}

    known_images = {e[0] for e in entries}
    for i, ann in enumerate(data["annotations"]):
        where = f"{annotation_file} annotations[{i}]"
        if not isinstance(ann, dict):
            problems.report(MALFORMED_ANNOTATION, where, "not an object")
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problems.report(MALFORMED_ANNOTATION, where, f"bbox {bbox!r} is not [x, y, w, h]")
            continue
        if ann.get("image_id") not in known_images:
            problems.report(
                MALFORMED_ANNOTATION, where, f"unknown image_id {ann.get('image_id')!r}"
            )
            continue
        if ann["image_id"] not in images:  # the image itself was skipped (already reported)
            continue
        if ann.get("category_id") not in label_of:
            problems.report(UNKNOWN_CLASS, where, f"category_id {ann.get('category_id')!r}")
            continue
        area = ann.get("area")
        images[ann["image_id"]]["objects"].append(
            (
                where,
                bbox,
                label_of[ann["category_id"]],
                bool(ann.get("iscrowd", 0)),
                float(area) if _is_number(area) else np.nan,
            )
        )

    records = []
    for image_id, image in images.items():
        height, width = image["size"]
        objects = image["objects"]
        boxes = np.array([b for _, b, *_ in objects], np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        wheres = [o[0] for o in objects]  # each annotation is reported by its index
        keep = sanitize_boxes(boxes, height, width, problems, wheres)
        areas = np.array([o[4] for o in objects], np.float64)
        box_areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        areas = np.where(np.isnan(areas), box_areas, areas)
        records.append(
            DetectionRecord(
                image_path=image["path"],
                image_id=image_id,
                boxes=boxes[keep],
                labels=np.array([o[2] for o in objects], np.int32)[keep],
                difficult=np.array([o[3] for o in objects], bool)[keep],
                height=int(height),
                width=int(width),
                annotation_path=annotation_file,
                areas=areas[keep],
            )
        )

    problems.warn()
    return DetectionDataset(
        records,
        class_names,
        category_ids=category_ids,
        use_difficult=False,
        source=f"COCO {annotation_file}",
        problems=problems.items,
    )
