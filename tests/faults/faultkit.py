"""Helpers of the fault-injection suite: small copies of real raccoon photos with their VOC
XML (or a COCO JSON made from them), ways to damage them, and the ``rcnn-zoo`` command run as a
user runs it (a child process, so that a crash fails a test instead of killing pytest).

The photos come from the shared raccoon data set and are copied at test time into a temporary
folder, downscaled so that the long side is at most ``LONG_SIDE`` pixels (boxes and ``<size>``
scaled with them); the data set itself is never changed or copied into the repository.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RACCOON = os.path.normpath(os.path.join(REPO, os.pardir, "shared", "datasets", "raccoon"))
if not os.path.isdir(RACCOON):
    RACCOON = "/work/shared/datasets/raccoon"
LONG_SIDE = 128
CLI_TIMEOUT = 240  # seconds; one epoch on a handful of 128-px photos takes a few seconds
# The model options of every training run: tiny backbone, tiny images.
MODEL_ARGS = ["--backbone", "tiny", "--image-min-size", "96", "--image-max-size", "160",
              "--batch-size", "2", "--epochs", "1", "--verbose", "2"]


# ------------------------------------------------------------------------------------------
# Photos


def _original_annotation(stem):
    root = ET.parse(os.path.join(RACCOON, "annotations", f"{stem}.xml")).getroot()
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        objects.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
    return objects


def copy_photo(stem, image_path, long_side=LONG_SIDE):
    """Write a downscaled copy of raccoon photo ``stem`` to ``image_path``; return
    ``(width, height, boxes)`` with ``boxes`` the photo's objects as VOC 1-based inclusive
    ``[xmin, ymin, xmax, ymax]`` in the copy's pixels."""
    if not os.path.isdir(RACCOON):
        pytest.fail(f"the raccoon data set is missing: {RACCOON}")
    with Image.open(os.path.join(RACCOON, "images", f"{stem}.jpg")) as photo:
        photo = photo.convert("RGB")
        width0, height0 = photo.size
        scale = long_side / max(width0, height0)
        size = (max(1, round(width0 * scale)), max(1, round(height0 * scale)))
        photo = photo.resize(size, Image.BILINEAR)
        os.makedirs(os.path.dirname(image_path), exist_ok=True)
        photo.save(image_path, quality=90)
    width, height = size
    sx, sy = width / width0, height / height0
    boxes = []
    for xmin, ymin, xmax, ymax in _original_annotation(stem):
        # VOC inclusive → continuous, scale, back to VOC inclusive (inside the copy).
        x1, y1, x2, y2 = (xmin - 1) * sx, (ymin - 1) * sy, xmax * sx, ymax * sy
        x1, y1 = max(0, int(round(x1))), max(0, int(round(y1)))
        x2, y2 = min(width, max(x1 + 2, int(round(x2)))), min(height, max(y1 + 2, int(round(y2))))
        boxes.append([x1 + 1, y1 + 1, x2, y2])
    return width, height, boxes


def voc_xml(filename, width, height, objects):
    """VOC XML text; ``objects``: ``(name, xmin, ymin, xmax, ymax)``, values written as given
    (strings allowed, to write ``nan`` or ``abc``)."""
    parts = ["<annotation>", "\t<folder>images</folder>", f"\t<filename>{filename}</filename>",
             f"\t<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, xmin, ymin, xmax, ymax, *rest in objects:
        difficult = rest[0] if rest else 0
        parts.append(
            f"\t<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


class VocCopy:
    """A plain VOC folder (``images/``, ``annotations/``, split files) of photo copies."""

    def __init__(self, root):
        self.root = str(root)
        self.images = os.path.join(self.root, "images")
        self.annotations = os.path.join(self.root, "annotations")
        os.makedirs(self.images, exist_ok=True)
        os.makedirs(self.annotations, exist_ok=True)
        self.sizes = {}  # stem -> (width, height)
        self.boxes = {}  # stem -> VOC boxes of the photo

    def image(self, stem):
        return os.path.join(self.images, f"{stem}.jpg")

    def xml(self, stem):
        return os.path.join(self.annotations, f"{stem}.xml")

    def add(self, stem, photo, objects=None, name="raccoon", filename=None):
        """Copy ``photo`` as ``stem`` with its own boxes (class ``name``) or ``objects``
        (``(name, xmin, ymin, xmax, ymax)``, or a callable of ``(width, height, boxes)``)."""
        width, height, boxes = copy_photo(photo, self.image(stem))
        self.sizes[stem] = (width, height)
        self.boxes[stem] = boxes
        if objects is None:
            objects = [(name, *b) for b in boxes]
        elif callable(objects):
            objects = objects(width, height, boxes)
        self.write_xml(stem, objects, filename=filename)
        return width, height, boxes

    def write_xml(self, stem, objects, filename=None, size=None):
        width, height = size or self.sizes[stem]
        with open(self.xml(stem), "w", encoding="utf-8") as f:
            f.write(voc_xml(filename or f"{stem}.jpg", width, height, objects))

    def split(self, name, stems):
        path = os.path.join(self.root, f"{name}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(stems) + "\n")
        return path


# ------------------------------------------------------------------------------------------
# Damage


def truncate(path, fraction=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * fraction)])


def empty(path):
    open(path, "wb").close()


def text_file(path, text="shopping list: eggs, milk\n"):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# ------------------------------------------------------------------------------------------
# COCO


def coco_from_voc(voc, stems, category="raccoon", first_id=1):
    """A COCO instances dict for ``stems`` of ``voc`` (file names relative to its images/)."""
    images, annotations = [], []
    for i, stem in enumerate(stems):
        width, height = voc.sizes[stem]
        image_id = first_id + i
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "width": width, "height": height})
        for xmin, ymin, xmax, ymax in voc.boxes[stem]:
            x, y, w, h = xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": category}]}


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)  # allow_nan: NaN/Infinity literals, as Python writes them
    return path


# ------------------------------------------------------------------------------------------
# Running the CLI


def run_cli(*args, timeout=CLI_TIMEOUT):
    """``python3 -m rcnn_zoo.cli ARGS`` as a user runs it; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "rcnn_zoo.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def show(result):
    """Both streams' tails, for assertion messages."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-2500:]}\n--- stderr\n{result.stderr[-4000:]}"


def assert_sane(result):
    """What every run must satisfy: no traceback, not killed by a signal."""
    assert result.returncode >= 0, f"killed by signal {-result.returncode}\n{show(result)}"
    assert "Traceback" not in result.stderr, show(result)
    assert "Traceback" not in result.stdout, show(result)


def assert_ok(result):
    assert_sane(result)
    assert result.returncode == 0, show(result)
    assert "rcnn-zoo: error:" not in result.stderr, show(result)


def assert_usage_error(result, *fragments):
    """Exit code 2 and exactly one ``rcnn-zoo: error:`` line, containing every fragment;
    returns that line."""
    assert_sane(result)
    assert result.returncode == 2, show(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("rcnn-zoo: error:")]
    assert len(errors) == 1, show(result)
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}\n{show(result)}"
    return errors[0]


_WARNING_HEAD = re.compile(r"^rcnn-zoo: warning: (?P<source>.*): skipped (?P<count>\d+) item\(s\)")
_KIND_LINE = re.compile(r"^  (?P<kind>[^:]+): (?P<count>\d+) (?:image|object|item)\(s\): (?P<files>.*)$")


def data_warnings(stderr):
    """The data warnings in ``stderr``: a list of ``{"source", "skipped", "kinds": {kind: (count,
    files text)}, "text"}``, one per ``rcnn-zoo: warning: …: skipped N item(s)`` block."""
    found = []
    current = None
    for line in stderr.splitlines():
        head = _WARNING_HEAD.match(line)
        if head:
            current = {"source": head["source"], "skipped": int(head["count"]), "kinds": {}, "text": line}
            found.append(current)
            continue
        kind = _KIND_LINE.match(line) if current is not None else None
        if kind:
            current["kinds"][kind["kind"]] = (int(kind["count"]), kind["files"])
            current["text"] += "\n" + line
        else:
            current = None
    return found


def warning_of(stderr, source_fragment):
    """The one data warning whose source contains ``source_fragment``."""
    matching = [w for w in data_warnings(stderr) if source_fragment in w["source"]]
    assert len(matching) == 1, f"expected one warning about {source_fragment!r}:\n{stderr[-4000:]}"
    return matching[0]


def assert_kind(warning, kind, count, *files):
    """The warning has a line for ``kind`` with ``count`` and naming every one of ``files``."""
    assert kind in warning["kinds"], f"no line for {kind!r} in:\n{warning['text']}"
    got, listed = warning["kinds"][kind]
    assert got == count, f"{kind!r}: {got} != {count}\n{warning['text']}"
    for name in files:
        assert name in listed, f"{name!r} not named on the {kind!r} line:\n{warning['text']}"


# ------------------------------------------------------------------------------------------
# Results of a training run


def read_history(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_finite_history(out_dir, epochs=1):
    rows = read_history(os.path.join(out_dir, "history.csv"))
    assert len(rows) == epochs, rows
    for row in rows:
        for key, value in row.items():
            if key in ("epoch", "val_mAP"):
                continue
            assert math.isfinite(float(value)), f"history.csv {key}={value}: {rows}"
    return rows


def assert_finite_weights(model_path):
    """Every weight of the saved model is finite (read back by Keras, in this process)."""
    import keras  # noqa: PLC0415

    import rcnn_zoo  # noqa: F401, PLC0415  (registers the detector classes)

    model = keras.models.load_model(model_path, compile=False)
    bad = [w.path for w in model.weights if not np.all(np.isfinite(keras.ops.convert_to_numpy(w)))]
    assert not bad, f"non-finite weights in {model_path}: {bad[:5]}"
    return model


def training_images(stdout):
    """N of the ``Training … on N images`` line."""
    match = re.search(r"^Training .* on (\d+) images .*validating on (\d+)", stdout, re.M)
    assert match, stdout[-2000:]
    return int(match[1]), int(match[2])
