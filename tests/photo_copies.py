"""Small copies of the real raccoon photos, made at test time, and the CLI in a fresh process.

The photos are read from ``../shared/datasets/raccoon`` (never copied into the repository) and
shrunk so their longer side is ``long_side`` pixels; each XML's ``<size>`` and boxes are scaled
by the same factors (VOC 1-based corners, rounded), so the copy is a valid VOC folder.
"""

import os
import re
import subprocess
import sys

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RACCOON = os.path.join(REPO, os.pardir, "shared", "datasets", "raccoon")


def copy_raccoon_photos(root, stems, long_side=128, split="train"):
    """Write a VOC folder ``root`` (``images/``, ``annotations/``, ``<split>.txt``) holding
    shrunk copies of the raccoon photos ``stems``; returns ``root``."""
    if not os.path.isdir(RACCOON):
        pytest.fail(f"the raccoon photos are missing: {RACCOON}")
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for stem in stems:
        with Image.open(os.path.join(RACCOON, "images", f"{stem}.jpg")) as photo:
            photo = photo.convert("RGB")
            scale = long_side / max(photo.size)
            size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
            sx, sy = size[0] / photo.width, size[1] / photo.height
            photo.resize(size, Image.BILINEAR).save(os.path.join(root, "images", f"{stem}.jpg"), quality=92)
        with open(os.path.join(RACCOON, "annotations", f"{stem}.xml"), encoding="utf-8") as handle:
            xml = handle.read()
        xml = re.sub(r"<width>\d+</width>", f"<width>{size[0]}</width>", xml)
        xml = re.sub(r"<height>\d+</height>", f"<height>{size[1]}</height>", xml)
        for tag, factor, limit in (("xmin", sx, size[0]), ("xmax", sx, size[0]),
                                   ("ymin", sy, size[1]), ("ymax", sy, size[1])):
            xml = re.sub(rf"<{tag}>(\d+)</{tag}>",
                         lambda m, f=factor, n=limit, t=tag: f"<{t}>{min(max(1, round(int(m.group(1)) * f)), n)}</{t}>",
                         xml)
        with open(os.path.join(root, "annotations", f"{stem}.xml"), "w", encoding="utf-8") as handle:
            handle.write(xml)
    with open(os.path.join(root, f"{split}.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(stems) + "\n")
    return root


def run_cli(*args, timeout=600, env=None):
    """``python -m rcnn_zoo.cli ARGS`` in a fresh process (a crash fails the test, not pytest)."""
    environment = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "rcnn_zoo.cli", *map(str, args)], cwd=REPO,
                          env=environment, capture_output=True, text=True, timeout=timeout)
