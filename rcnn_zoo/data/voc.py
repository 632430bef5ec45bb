"""Pascal VOC XML reader.

Two layouts are read:

- a devkit tree (``VOCdevkit/VOC2007``): ``Annotations/<stem>.xml``, ``JPEGImages/<stem>.jpg``,
  ``ImageSets/Main/<split>.txt``;
- a plain folder of images and XMLs (e.g. the raccoon set): XMLs in ``annotations/`` (or
  ``Annotations/``, or the folder itself), images in ``images/`` (or ``JPEGImages/``, or the
  folder itself), optional split files ``<split>.txt`` of stems in the folder.

Coordinates. VOC XML stores 1-based *inclusive* pixel indices: a box covering the top-left
pixel only is ``xmin=1, xmax=1``. The library's boxes are continuous 0-based (``x2 − x1`` =
width), so the reader converts ``(xmin, ymin, xmax, ymax) → (xmin − 1, ymin − 1, xmax, ymax)``
(:func:`voc_to_continuous`); :func:`continuous_to_voc` is the inverse. Under this pair of maps
the VOC evaluator's ``+1`` widths on VOC coordinates equal the plain widths on continuous ones,
so ``rcnn_zoo.evaluation.voc_ap_per_class`` gives the same numbers with ``pixel_offset=1`` on
VOC-file coordinates as with ``pixel_offset=0`` on continuous ones (see that module).
py-faster-rcnn's internal boxes are 0-based inclusive ``(xmin − 1, ymin − 1, xmax − 1,
ymax − 1)``; ours differ from them by ``+1`` on ``x2, y2`` only.
"""

import math
import os
import xml.etree.ElementTree as ET

import numpy as np

from rcnn_zoo.data.pipeline import (
    DUPLICATE_IMAGE,
    MALFORMED_ANNOTATION,
    MISSING_FILE,
    SIZE_MISMATCH,
    UNKNOWN_CLASS,
    UNREADABLE_IMAGE,
    DetectionDataset,
    DetectionRecord,
    ProblemLog,
    check_image,
    problem_text,
    sanitize_boxes,
)
from rcnn_zoo.data.pipeline import check_images as _check_images

__all__ = [
    "read_voc",
    "parse_voc_xml",
    "voc_to_continuous",
    "continuous_to_voc",
    "VOC_CLASSES",
]

# The 20 Pascal VOC classes in the usual (alphabetical) order.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


def voc_to_continuous(boxes):
    """VOC 1-based inclusive ``[..., 4]`` → continuous 0-based xyxy ``(x1 − 1, y1 − 1, x2, y2)``
    (float64)."""
    boxes = np.array(boxes, np.float64)
    boxes[..., :2] -= 1.0
    return boxes


def continuous_to_voc(boxes):
    """Continuous 0-based xyxy ``[..., 4]`` → VOC 1-based inclusive ``(x1 + 1, y1 + 1, x2, y2)``
    (float64).

    This is also what py-faster-rcnn writes into its VOC results files for the same box.
    """
    boxes = np.array(boxes, np.float64)
    boxes[..., :2] += 1.0
    return boxes


def _text(element, path):
    found = element.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise ValueError(f"missing <{path}>")
    return found.text.strip()


def _integer(text, what):
    """``int(float(text))``, with ``nan``/``inf`` (OverflowError in ``int``) a ValueError."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"<{what}> is {text!r}, not a finite number")
    return int(value)


def parse_voc_xml(path):
    """Parse one VOC XML file.

    Returns ``dict(filename, width, height, objects)`` where ``width``/``height`` may be None
    (absent or 0) and ``objects`` is a list of ``dict(name, box, difficult)`` with ``box`` the
    file's 1-based inclusive ``(xmin, ymin, xmax, ymax)`` as floats. Raises ``ET.ParseError``
    or ``ValueError`` (with the reason) on malformed content.
    """
    root = ET.parse(path).getroot()
    if root.tag != "annotation":
        raise ValueError(f"root element is <{root.tag}>, not <annotation>")
    filename = root.findtext("filename")
    width = height = None
    size = root.find("size")
    if size is not None:
        try:
            width, height = _integer(_text(size, "width"), "width"), _integer(_text(size, "height"), "height")
        except ValueError:
            width = height = None
        if not width or not height or width < 0 or height < 0:
            width = height = None
    objects = []
    for i, obj in enumerate(root.findall("object")):
        try:
            name = _text(obj, "name")
            box = obj.find("bndbox")
            if box is None:
                raise ValueError("missing <bndbox>")
            coords = tuple(float(_text(box, k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            difficult = obj.findtext("difficult")
            difficult = bool(_integer(difficult, "difficult")) if difficult and difficult.strip() else False
        except ValueError as error:
            raise ValueError(f"object {i}: {error}") from None
        objects.append({"name": name, "box": coords, "difficult": difficult})
    return {
        "filename": filename.strip() if filename else None,
        "width": width,
        "height": height,
        "objects": objects,
    }


def _first_existing(*candidates):
    for candidate in candidates:
        if os.path.isdir(candidate):
            return candidate
    return None


def _find_image(image_dir, stem, filename):
    candidates = [os.path.join(image_dir, stem + ext) for ext in _IMAGE_EXTENSIONS]
    if filename:
        candidates.append(os.path.join(image_dir, os.path.basename(filename)))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    return candidates[0]


def _read_split(path):
    try:
        with open(path, encoding="utf-8") as f:
            # Main/<split>.txt has one stem per line; Main/<class>_<split>.txt has "stem  ±1".
            return [line.split()[0] for line in f if line.strip()]
    except UnicodeDecodeError as error:
        raise ValueError(f"split file {path} is not a text file of image names ({error.reason} at "
                         f"byte {error.start})") from None


def read_voc(
    root,
    split=None,
    class_names=None,
    *,
    use_difficult=False,
    strict=False,
    annotation_dir=None,
    image_dir=None,
    check_images="header",
):
    """Read a Pascal VOC style dataset into a :class:`DetectionDataset`.

    Args:
        root: a ``VOC2007``-style directory (with ``Annotations/`` and ``JPEGImages/``) or a
            plain folder of images and XMLs (see the module docstring).
        split: None (every XML), a split name (``"trainval"`` → ``ImageSets/Main/trainval.txt``
            in a devkit tree, ``<root>/trainval.txt`` in a plain folder) or a path to a file of
            stems.
        class_names: names of classes ``0 … C−1``; objects of any other class are skipped
            (reported). None: the sorted set of names found in this split — pass the training
            set's ``class_names`` when reading its test split, so labels agree.
        use_difficult: whether training uses objects marked ``<difficult>1``; they are always
            kept in the records, marked, for evaluation.
        strict: raise :class:`DatasetError` naming the file at the first problem instead of
            skipping it.
        annotation_dir, image_dir: override where XMLs and images are looked for.
        check_images: ``"header"`` (open each image, read its size), ``"decode"`` (also decode
            it, catches truncated files) or ``"none"`` (trust the XML sizes).

    Returns:
        :class:`DetectionDataset`. Boxes are continuous 0-based pixels (``xmin − 1, ymin − 1,
        xmax, ymax``); boxes partly outside the image are clipped, wholly outside, zero-area or
        inverted ones, boxes with NaN or infinite coordinates and unknown classes dropped;
        images that are missing or unreadable and XMLs that are missing or malformed drop the
        image. Each image is read once: a stem listed again in the split, or an XML whose
        ``<filename>`` leads to an image that an earlier XML already annotates, is skipped
        (``"duplicate image"``). All of it is reported in one :class:`DatasetWarning` (and in
        ``dataset.problems``). Nothing else is dropped: images without objects (or whose boxes
        were all dropped) are kept.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"VOC dataset folder not found: {root}")
    devkit = os.path.isdir(os.path.join(root, "Annotations")) and os.path.isdir(
        os.path.join(root, "JPEGImages")
    )
    if annotation_dir is None:
        annotation_dir = _first_existing(
            os.path.join(root, "Annotations"), os.path.join(root, "annotations"), root
        )
    if image_dir is None:
        image_dir = _first_existing(
            os.path.join(root, "JPEGImages"), os.path.join(root, "images"), root
        )

    if split is None:
        stems = sorted(f[:-4] for f in os.listdir(annotation_dir) if f.lower().endswith(".xml"))
        split_desc = "all"
    else:
        split_path = os.fspath(split)
        # A name ("train") is looked up in the dataset; a path (with a folder or ".txt") is
        # used as given, and reported as given when it is not there.
        is_path = os.sep in split_path or "/" in split_path or split_path.endswith(".txt")
        base = os.path.join(root, "ImageSets", "Main") if devkit else root
        if not is_path:
            split_path = os.path.join(base, f"{split}.txt")
        elif not os.path.isfile(split_path) and not os.path.isabs(split_path):
            in_dataset = os.path.join(base, split_path)  # "test.txt": the dataset's own file
            if not os.path.isfile(in_dataset):
                raise FileNotFoundError(f"split file not found: {split_path} (nor {in_dataset})")
            split_path = in_dataset
        if not os.path.isfile(split_path):
            raise FileNotFoundError(f"split file not found: {split_path}")
        stems = _read_split(split_path)
        split_desc = os.path.basename(split_path)
    if not stems:
        where = annotation_dir if split is None else split_path
        raise ValueError(f"no images listed: no .xml files / no stems in {where}")

    problems = ProblemLog(f"read_voc({root!r}, split={split_desc})", strict=strict)

    # Parse every XML first: the class list may come from the data.
    # An image is read once: a stem listed again, or a second XML whose <filename> leads to an
    # image another XML already annotates, is reported and skipped (training on it twice, or on
    # two different sets of boxes for one photo, is never what was meant; an evaluation would
    # count its objects twice).
    parsed = []
    seen_stems, seen_images = set(), {}
    where_listed = split_path if split is not None else annotation_dir
    for stem in stems:
        if stem in seen_stems:
            problems.report(DUPLICATE_IMAGE, where_listed, f"{stem!r} is listed again")
            continue
        seen_stems.add(stem)
        xml_path = os.path.join(annotation_dir, stem + ".xml")
        if not os.path.isfile(xml_path):
            problems.report(MISSING_FILE, xml_path, "annotation file not found")
            continue
        try:
            annotation = parse_voc_xml(xml_path)
        except ET.ParseError as error:
            empty = os.path.getsize(xml_path) == 0
            problems.report(MALFORMED_ANNOTATION, xml_path,
                            "empty file (0 bytes)" if empty else f"not well-formed XML ({error})")
            continue
        except (ValueError, OSError) as error:
            problems.report(MALFORMED_ANNOTATION, xml_path, str(error) or type(error).__name__)
            continue
        image_path = _find_image(image_dir, stem, annotation["filename"])
        same = os.path.normcase(os.path.realpath(image_path))
        if same in seen_images:
            problems.report(DUPLICATE_IMAGE, xml_path,
                            f"its image {image_path} is already annotated by {seen_images[same]}")
            continue
        seen_images[same] = xml_path
        parsed.append((stem, xml_path, image_path, annotation))

    if class_names is None:
        class_names = sorted({o["name"] for *_, a in parsed for o in a["objects"]})
    class_names = list(class_names)
    class_index = {name: i for i, name in enumerate(class_names)}

    sizes = _check_images([p[2] for p in parsed], check_images)
    records = []
    for (stem, xml_path, image_path, annotation), size in zip(parsed, sizes):
        if isinstance(size, FileNotFoundError):
            problems.report(MISSING_FILE, image_path, "image file not found")
            continue
        if isinstance(size, Exception):
            problems.report(UNREADABLE_IMAGE, image_path, problem_text(size))
            continue
        xml_size = (annotation["height"], annotation["width"])
        if size is None:  # check_images="none": trust the XML, or read the header if it has none
            if xml_size[0] is None:
                try:
                    size = check_image(image_path, "header")
                except FileNotFoundError:
                    problems.report(MISSING_FILE, image_path, "image file not found")
                    continue
                except Exception as error:
                    problems.report(UNREADABLE_IMAGE, image_path, problem_text(error))
                    continue
            else:
                size = xml_size
        elif xml_size[0] is not None and tuple(xml_size) != tuple(size):
            problems.report(
                SIZE_MISMATCH,
                xml_path,
                f"XML says {xml_size[1]}x{xml_size[0]}, image is {size[1]}x{size[0]} (WxH)",
            )
        height, width = size

        objects, indices = [], []
        for i, obj in enumerate(annotation["objects"]):
            if obj["name"] not in class_index:
                problems.report(UNKNOWN_CLASS, xml_path, f"object {i} class {obj['name']!r}")
                continue
            objects.append(obj)
            indices.append(i)
        file_boxes = np.array([o["box"] for o in objects], np.float64).reshape(-1, 4)
        boxes = voc_to_continuous(file_boxes)
        names = [o["name"] for o in objects]
        # Messages show the XML's own numbers; the checks use the continuous box.
        keep = sanitize_boxes(boxes, height, width, problems, xml_path, names, indices, file_boxes)
        records.append(
            DetectionRecord(
                image_path=image_path,
                image_id=stem,
                boxes=boxes[keep],
                labels=np.array([class_index[n] for n in names], np.int32)[keep],
                difficult=np.array([o["difficult"] for o in objects], bool)[keep],
                height=int(height),
                width=int(width),
                annotation_path=xml_path,
            )
        )

    problems.warn()
    return DetectionDataset(
        records,
        class_names,
        use_difficult=use_difficult,
        source=f"VOC {root} ({split_desc})",
        problems=problems.items,
    )

