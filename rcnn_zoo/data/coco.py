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
from collections.abc import Hashable

import numpy as np

from rcnn_zoo.data.pipeline import (
    DUPLICATE_IMAGE,
    MALFORMED_ANNOTATION,
    MISSING_FILE,
    SIZE_MISMATCH,
    UNKNOWN_CLASS,
    UNREADABLE_IMAGE,
    DatasetError,
    DetectionDataset,
    DetectionRecord,
    ProblemLog,
    problem_text,
    sanitize_boxes,
)
from rcnn_zoo.data.pipeline import check_images as _check_images

__all__ = ["read_coco"]


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_id(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _data_ids(images):
    """The hashable ``"id"`` of every entry of ``images`` (a COCO file's ``"images"`` list)."""
    return [e["id"] for e in images if isinstance(e, dict) and isinstance(e.get("id"), Hashable)]


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
        skipped; an image entry repeating an earlier entry's ``id`` or ``file_name`` is
        skipped (``"duplicate image"``); annotations malformed, of an unknown category or image,
        wholly outside the image, zero-area, inverted or with NaN/infinite coordinates are
        skipped; boxes partly outside are clipped. Categories with the same id or the same
        name raise :class:`DatasetError`.
    """
    annotation_file = os.fspath(annotation_file)
    image_dir = os.fspath(image_dir)
    try:
        with open(annotation_file, encoding="utf-8") as f:
            text = f.read()
        if not text.strip():
            raise ValueError("the file is empty" if not text else "the file holds only white space")
        data = json.loads(text)
    except UnicodeDecodeError as error:
        raise DatasetError(f"{annotation_file}: cannot read COCO JSON (not a UTF-8 text file: "
                           f"{error.reason} at byte {error.start})") from error
    except json.JSONDecodeError as error:
        # A file cut short fails at its end, or in a string that runs to the end.
        cut_short = error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string")
        cut = " (cut short?)" if cut_short else ""
        raise DatasetError(f"{annotation_file}: cannot read COCO JSON (not valid JSON{cut}: "
                           f"{error.msg}, line {error.lineno} column {error.colno})") from error
    except (OSError, ValueError) as error:
        raise DatasetError(f"{annotation_file}: cannot read COCO JSON ({error})") from error
    wanted = "an object with lists 'images', 'annotations' and 'categories'"
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a string", type(None): "null"}.get(type(data), type(data).__name__)
        raise DatasetError(f"{annotation_file}: not a COCO instances file (the top level is {kind}, "
                           f"not {wanted})")
    lacking = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if lacking:
        raise DatasetError(
            f"{annotation_file}: not a COCO instances file (needs lists 'images', "
            f"'annotations' and 'categories'; {', '.join(repr(k) for k in lacking)} "
            f"{'is' if len(lacking) == 1 else 'are'} missing or not a list)"
        )

    problems = ProblemLog(f"read_coco({annotation_file!r})", strict=strict)

    categories, position, named = {}, {}, {}
    for i, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or not _is_id(category.get("id")):
            raise DatasetError(f"{annotation_file}: categories[{i}] has no integer 'id'")
        category_id = category["id"]
        name = str(category.get("name", category_id))
        if category_id in categories:  # which name would its annotations get?
            raise DatasetError(f"{annotation_file}: categories[{i}] has the id {category_id} of "
                               f"categories[{position[category_id]}]; category ids must be unique")
        if name in named:  # two classes a model and its evaluation could not tell apart
            raise DatasetError(f"{annotation_file}: categories[{i}] (id {category_id}) and "
                               f"categories[{named[name]}] are both named {name!r}; category names "
                               "must be unique")
        categories[category_id], position[category_id], named[name] = name, i, i
    category_ids = sorted(categories)
    class_names = [categories[c] for c in category_ids]
    label_of = {c: i for i, c in enumerate(category_ids)}

    # Images: validate entries, then check the files.
    # Each image is read once: an entry repeating an earlier one's id, or its file, is skipped
    # (a repeated id would take the other's annotations; a repeated file would be trained on,
    # or evaluated, twice).
    entries = []
    first_with_id, first_with_file = {}, {}
    for i, image in enumerate(data["images"]):
        where = f"{annotation_file} images[{i}]"
        if not isinstance(image, dict) or "id" not in image or not isinstance(
            image.get("file_name"), str
        ):
            problems.report(MALFORMED_ANNOTATION, where, "needs 'id' and 'file_name'")
            continue
        if not _is_id(image["id"]) and not isinstance(image["id"], str):
            problems.report(MALFORMED_ANNOTATION, where, f"'id' {image['id']!r} is not an integer")
            continue
        if not image["file_name"].strip():
            problems.report(MALFORMED_ANNOTATION, where, "'file_name' is empty")
            continue
        path = os.path.join(image_dir, image["file_name"])
        same_file = os.path.normcase(os.path.realpath(path))
        if image["id"] in first_with_id:
            problems.report(DUPLICATE_IMAGE, where, f"id {image['id']!r} is also the id of "
                            f"images[{first_with_id[image['id']]}] (its annotations go to that one)")
            continue
        if same_file in first_with_file:
            problems.report(DUPLICATE_IMAGE, where, f"file {image['file_name']!r} is also the file of "
                            f"images[{first_with_file[same_file]}] (annotations of image id "
                            f"{image['id']!r} skipped)")
            continue
        first_with_id[image["id"]], first_with_file[same_file] = i, i
        json_size = (image.get("height"), image.get("width"))
        if not all(_is_number(v) and v > 0 for v in json_size):
            json_size = None
        entries.append((image["id"], path, json_size))

    sizes = _check_images([e[1] for e in entries], check_images)
    images = {}
    for (image_id, path, json_size), size in zip(entries, sizes):
        if isinstance(size, FileNotFoundError):
            problems.report(MISSING_FILE, path, f"image id {image_id} not found")
            continue
        if isinstance(size, Exception):
            problems.report(UNREADABLE_IMAGE, path, problem_text(size))
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
    skipped_images = set(_data_ids(data["images"])) - known_images  # reported with the image
    for i, ann in enumerate(data["annotations"]):
        where = f"{annotation_file} annotations[{i}]"
        if not isinstance(ann, dict):
            problems.report(MALFORMED_ANNOTATION, where, "not an object", unit="object")
            continue
        bbox = ann.get("bbox")
        # NaN / Infinity (which Python's json reads) are numbers: sanitize_boxes names them.
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_real(v) for v in bbox)):
            problems.report(MALFORMED_ANNOTATION, where, f"bbox {bbox!r} is not [x, y, w, h]",
                            unit="object")
            continue
        image_id = ann.get("image_id")
        if not isinstance(image_id, Hashable) or image_id not in known_images:
            if isinstance(image_id, Hashable) and image_id in skipped_images:
                continue  # its image entry was skipped (reported there)
            problems.report(MALFORMED_ANNOTATION, where, f"unknown image_id {image_id!r}", unit="object")
            continue
        if image_id not in images:  # the image itself was skipped (already reported)
            continue
        category_id = ann.get("category_id")
        if not isinstance(category_id, Hashable) or category_id not in label_of:
            problems.report(UNKNOWN_CLASS, where, f"category_id {category_id!r}")
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
        with np.errstate(over="ignore"):  # x + w beyond float64: inf, reported as such below
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
