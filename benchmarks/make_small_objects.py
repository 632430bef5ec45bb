"""A second real-photo set, made differently from the raccoon set the recipe was tuned on: many
small objects on 640×480 scenes.

    python benchmarks/make_small_objects.py [--source ../shared/datasets/raccoon]
        [--output /tmp/rz/small_raccoons] [--train 150] [--test 50] [--seed 0]

Every scene is a real photo's background (the largest strip of a raccoon photo that holds no
raccoon box, cropped to 4:3 and resized to 640×480) with 4–12 real raccoons pasted onto it
(crops of the annotated boxes, longer side 14–44 px, flipped at random, never overlapping).
Training scenes use only the training split's photos (backgrounds and raccoons), test scenes
only the test split's, so no raccoon of the test scenes was seen in training. Written as a VOC
folder (``images/``, ``annotations/`` with 1-based inclusive corners, ``train.txt``,
``test.txt``) outside the repository.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SCENE = (640, 480)  # width, height
OBJECT_SIDES = (14, 44)  # px, the pasted raccoon's longer side
OBJECTS_PER_SCENE = (4, 12)
MIN_STRIP = 120  # px: the smallest background strip taken from a photo


def background_strip(record):
    """``(x1, y1, x2, y2)`` of the largest strip of ``record``'s photo left, right, above or below
    all of its boxes, or None when each is under :data:`MIN_STRIP` px."""
    boxes = record.boxes
    x1, y1 = boxes[:, 0].min(), boxes[:, 1].min()
    x2, y2 = boxes[:, 2].max(), boxes[:, 3].max()
    strips = [(0, 0, x1, record.height), (x2, 0, record.width, record.height),
              (0, 0, record.width, y1), (0, y2, record.width, record.height)]
    strips = [tuple(int(round(v)) for v in s) for s in strips if min(s[2] - s[0], s[3] - s[1]) >= MIN_STRIP]
    return max(strips, key=lambda s: (s[2] - s[0]) * (s[3] - s[1]), default=None)


def scene_background(photo, strip, rng, scene=SCENE):
    """A crop of ``strip`` of ``photo`` at the aspect of ``scene`` (width, height; the largest
    crop that fits, at a random place), resized to ``scene``."""
    x1, y1, x2, y2 = strip
    width, height = x2 - x1, y2 - y1
    crop_w = min(width, int(height * scene[0] / scene[1]))
    crop_h = int(crop_w * scene[1] / scene[0])
    left = x1 + int(rng.integers(0, width - crop_w + 1))
    top = y1 + int(rng.integers(0, height - crop_h + 1))
    return photo.crop((left, top, left + crop_w, top + crop_h)).resize(scene, Image.BILINEAR)


def paste_objects(scene, crops, rng, sides=OBJECT_SIDES, counts=OBJECTS_PER_SCENE, flip=True, prepare=None):
    """Paste random ``crops`` (``(class name, PIL image)``; RGBA ones through their alpha) onto
    ``scene`` (in place), longer side drawn from ``sides`` px, ``counts`` of them, none
    overlapping another (2 px apart); ``prepare(piece, rng)``: a last change of each resized
    piece. Returns their boxes ``[n, 4]`` xyxy in continuous pixels and their class names."""
    boxes, names = [], []
    for _ in range(int(rng.integers(counts[0], counts[1] + 1))):
        name, crop = crops[int(rng.integers(len(crops)))]
        side = float(rng.uniform(*sides))
        scale = side / max(crop.size)
        size = (max(4, round(crop.size[0] * scale)), max(4, round(crop.size[1] * scale)))
        piece = crop.resize(size, Image.LANCZOS)
        if flip and rng.random() < 0.5:
            piece = piece.transpose(Image.FLIP_LEFT_RIGHT)
        if prepare is not None:
            piece = prepare(piece, rng)
        for _attempt in range(30):
            x, y = int(rng.integers(0, scene.size[0] - size[0])), int(rng.integers(0, scene.size[1] - size[1]))
            box = (x, y, x + size[0], y + size[1])
            if all(box[0] > b[2] + 2 or box[2] + 2 < b[0] or box[1] > b[3] + 2 or box[3] + 2 < b[1] for b in boxes):
                scene.paste(piece, (x, y), piece if piece.mode == "RGBA" else None)
                boxes.append(box)
                names.append(name)
                break
    return np.array(boxes, np.float32).reshape(-1, 4), names


def voc_xml(stem, boxes, names, scene=SCENE):
    """The VOC annotation of scene ``stem`` (corners as 1-based inclusive pixel indices)."""
    objects = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{int(b[0]) + 1}</xmin>"
        f"<ymin>{int(b[1]) + 1}</ymin><xmax>{int(b[2])}</xmax><ymax>{int(b[3])}</ymax></bndbox></object>"
        for b, name in zip(boxes, names))
    return (f"<annotation><filename>{stem}.jpg</filename><size><width>{scene[0]}</width>"
            f"<height>{scene[1]}</height><depth>3</depth></size>{objects}</annotation>\n")


def background_strips(dataset):
    """``[(photo, strip)]``: each photo of ``dataset`` with its largest raccoon-free strip."""
    photos = [Image.open(r.image_path).convert("RGB") for r in dataset.records]
    strips = [(photo, background_strip(r)) for photo, r in zip(photos, dataset.records)]
    return [(photo, strip) for photo, strip in strips if strip is not None]


def write_scene(output, stem, scene, boxes, names, quality=92):
    """``images/STEM.jpg`` and ``annotations/STEM.xml`` of one scene in ``output``."""
    scene.save(os.path.join(output, "images", f"{stem}.jpg"), quality=quality)
    with open(os.path.join(output, "annotations", f"{stem}.xml"), "w", encoding="utf-8") as handle:
        handle.write(voc_xml(stem, boxes, names, scene.size))


def make_split(dataset, count, prefix, output, rng):
    """``count`` scenes from ``dataset``'s photos written into ``output``; returns their stems."""
    photos = [Image.open(r.image_path).convert("RGB") for r in dataset.records]
    crops = [("raccoon", photo.crop(tuple(int(v) for v in box)))
             for photo, r in zip(photos, dataset.records) for box in r.boxes]
    strips = background_strips(dataset)
    stems = []
    for index in range(count):
        photo, strip = strips[int(rng.integers(len(strips)))]
        scene = scene_background(photo, strip, rng)
        boxes, names = paste_objects(scene, crops, rng)
        stem = f"{prefix}{index:04d}"
        write_scene(output, stem, scene, boxes, names)
        stems.append(stem)
    return stems


def split_parser(description, output):
    """The options of a scene generator: ``--source`` (the raccoon VOC folder), ``--output``
    (default ``output``), ``--train``/``--test`` scene counts, ``--seed``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--source", default=os.path.join(here, "..", "..", "shared", "datasets", "raccoon"))
    parser.add_argument("--output", default=output)
    parser.add_argument("--train", type=int, default=150)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None):
    args = split_parser(__doc__, "/tmp/rz/small_raccoons").parse_args(argv)
    write_splits(args, make_split, f"{SCENE[0]}×{SCENE[1]}")


def write_splits(args, make, shape):
    """The VOC folder ``args.output``: ``args.train`` training scenes made by ``make(dataset,
    count, prefix, output, rng)`` on the source's training photos, ``args.test`` test scenes on
    its test photos (one generator seeded ``args.seed``), and ``train.txt``/``test.txt``."""
    from rcnn_zoo.data import load_dataset  # noqa: PLC0415

    for folder in ("images", "annotations"):
        os.makedirs(os.path.join(args.output, folder), exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for split, count in (("train", args.train), ("test", args.test)):
        stems = make(load_dataset(args.source, "voc", split), count, f"{split}_", args.output, rng)
        with open(os.path.join(args.output, f"{split}.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(stems) + "\n")
        print(f"{split}: {count} scenes of {shape} → {args.output}")


if __name__ == "__main__":
    main()
