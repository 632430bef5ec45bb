"""Reading a dataset by format (``rcnn-zoo``'s ``--data``/``--format``/``--split`` options), with
errors in the user's paths and options raised as :class:`rcnn_zoo.errors.UsageError`."""

import dataclasses
import os

import numpy as np

from rcnn_zoo.data.coco import read_coco
from rcnn_zoo.data.checks import DatasetError
from rcnn_zoo.data.pipeline import DetectionDataset
from rcnn_zoo.data.voc import read_voc
from rcnn_zoo.errors import UsageError

__all__ = ["FORMATS", "load_dataset", "default_split"]

FORMATS = ("voc", "coco")


def default_split(root, name):
    """``name`` if ``root`` has a split file of that name (plain folder or devkit), else None."""
    for path in (os.path.join(root, f"{name}.txt"), os.path.join(root, "ImageSets", "Main", f"{name}.txt")):
        if os.path.isfile(path):
            return name
    return None


def _relabel(dataset, class_names):
    """``dataset`` with labels renumbered to the order of ``class_names`` (by name); objects of
    other classes are dropped. Used when a COCO file is read for a model trained elsewhere."""
    index = {name: i for i, name in enumerate(class_names)}
    missing = [name for name in dataset.class_names if name not in index]
    if len(missing) == len(dataset.class_names):
        raise UsageError(
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


def load_dataset(data=None, format="voc", split=None, annotations=None, images=None, class_names=None,
                 check_images="decode"):
    """Read a dataset for training or evaluation, turning reader errors into
    :class:`~rcnn_zoo.errors.UsageError`.

    Args:
        data: VOC: the dataset folder (devkit ``VOC2007`` or a plain folder with ``images/``,
            ``annotations/`` and ``<split>.txt``). COCO: a folder that ``annotations`` and
            ``images`` are relative to, or the JSON file itself.
        format: ``"voc"`` or ``"coco"``.
        split: VOC split name or file; ``None`` = every XML. Ignored for COCO.
        annotations, images: COCO instances JSON and image folder (default: the JSON's folder,
            or ``data``).
        class_names: the class order to use (a trained model's); ``None``: the dataset's.
        check_images: ``"decode"`` (default) decodes every image once, so a truncated or
            damaged file is skipped and named in the reader's warning instead of stopping
            training or evaluation half-way; ``"header"`` only reads sizes (faster).

    Returns:
        :class:`rcnn_zoo.data.DetectionDataset` with at least one image.
    """
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    try:
        if format == "voc":
            if data is None:
                raise UsageError("--data is required: the VOC dataset folder")
            if not os.path.isdir(data):
                raise UsageError(f"dataset folder not found: {data}")
            dataset = read_voc(data, split=split, class_names=class_names, check_images=check_images)
        else:
            annotations, images = _coco_paths(data, annotations, images)
            dataset = read_coco(annotations, images, check_images=check_images)
            if class_names is not None and list(class_names) != dataset.class_names:
                dataset = _relabel(dataset, list(class_names))
    except (FileNotFoundError, DatasetError) as error:
        raise UsageError(str(error)) from error
    except ValueError as error:  # e.g. "no images listed"
        raise UsageError(f"cannot read {format.upper()} data from {data or annotations}: {error}") from error
    if len(dataset) == 0:
        raise UsageError(f"no usable images in {dataset.source} (see the warning above)")
    return dataset


def _coco_paths(data, annotations, images):
    """The COCO instances JSON and image folder to read: each as given or relative to the
    folder ``data``; by default the JSON is ``data`` (when that is a ``.json`` file) and the
    images are in the folder ``data``, else in the JSON's folder."""
    if annotations is None:
        if data is not None and str(data).endswith(".json"):
            annotations = data
        else:
            raise UsageError("--format coco needs --annotations instances.json (or --data file.json)")
    base = data if data is not None and os.path.isdir(data) else None
    if not os.path.isfile(annotations) and base and os.path.isfile(os.path.join(base, annotations)):
        annotations = os.path.join(base, annotations)
    if not os.path.isfile(annotations):
        raise UsageError(f"COCO annotation file not found: {annotations}")
    if images is None:
        images = base or os.path.dirname(os.path.abspath(annotations))
    elif not os.path.isdir(images) and base and os.path.isdir(os.path.join(base, images)):
        images = os.path.join(base, images)
    if not os.path.isdir(images):
        raise UsageError(f"image folder not found: {images}")
    return annotations, images
