"""A look-alike-classes set, made differently from the raccoon set the recipe was tuned on: six
classes that differ only in a small emblem, on real photo backgrounds of two shapes.

    python benchmarks/make_lookalike.py [--source ../shared/datasets/raccoon]
        [--icons /usr/share/icons/Adwaita/512x512/places] [--output /tmp/rz/lookalike]
        [--train 150] [--test 50] [--seed 0]

The objects are the Adwaita icon theme's folder icons (Debian's ``adwaita-icon-theme``, 512×512
RGBA): documents, download, music, pictures, templates and videos — the same blue folder, told
apart by the emblem on its front (documents and templates by a dashed outline alone). Every
scene is a real photo's background (the largest raccoon-free strip of a raccoon photo, as
``make_small_objects.py`` cuts it), 378×504 (portrait) or 960×540 (landscape) in turn, with 2–6
folders pasted through their alpha (longer side 40–150 px, never overlapping). So that no two
copies are pixel-identical, each pasted folder gets its own brightness (×0.7–1.2), contrast
(×0.8–1.2), a rotation of up to ±8° and, for half of them, a blur of up to 1 px; scenes are
saved as JPEG of quality 75–92. Folders are not mirrored (a mirrored emblem is another picture;
training may still flip). Training scenes use only the training split's photos as backgrounds,
test scenes only the test split's. Written as a VOC folder outside the repository.
"""

import functools
import os
import sys

from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_small_objects import (  # noqa: E402
    background_strips, paste_objects, scene_background, split_parser, write_scene, write_splits)

CLASSES = ("folder-documents", "folder-download", "folder-music", "folder-pictures", "folder-templates",
           "folder-videos")
SCENES = ((378, 504), (960, 540))  # width, height: taken in turn
OBJECT_SIDES = (40, 150)  # px, the pasted folder's longer side
OBJECTS_PER_SCENE = (2, 6)
JPEG_QUALITY = (75, 92)


def icon_crop(path):
    """The icon at ``path`` as RGBA, cropped to its opaque pixels (the box is the folder)."""
    icon = Image.open(path).convert("RGBA")
    return icon.crop(icon.getchannel("A").point(lambda a: 255 if a > 16 else 0).getbbox())


def vary(piece, rng):
    """One pasted copy's own look: brightness, contrast, sometimes a blur, and a rotation of up
    to 8° inside the piece's own box (the box stays the annotation; the folder's corners may
    be cut by a few pixels)."""
    alpha = piece.getchannel("A")
    rgb = piece.convert("RGB")
    rgb = ImageEnhance.Brightness(rgb).enhance(float(rng.uniform(0.7, 1.2)))
    rgb = ImageEnhance.Contrast(rgb).enhance(float(rng.uniform(0.8, 1.2)))
    if rng.random() < 0.5:
        rgb = rgb.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    piece = rgb.convert("RGBA")
    piece.putalpha(alpha)
    return piece.rotate(float(rng.uniform(-8, 8)), resample=Image.BICUBIC)


def make_split(icons, dataset, count, prefix, output, rng):
    """``count`` scenes of ``icons`` (``(class name, RGBA image)``) on ``dataset``'s photos
    written into ``output``; returns their stems."""
    strips = background_strips(dataset)
    stems = []
    for index in range(count):
        photo, strip = strips[int(rng.integers(len(strips)))]
        scene = scene_background(photo, strip, rng, SCENES[index % len(SCENES)])
        boxes, names = paste_objects(scene, icons, rng, OBJECT_SIDES, OBJECTS_PER_SCENE, flip=False, prepare=vary)
        stem = f"{prefix}{index:04d}"
        write_scene(output, stem, scene, boxes, names, quality=int(rng.integers(*JPEG_QUALITY)))
        stems.append(stem)
    return stems


def main(argv=None):
    parser = split_parser(__doc__, "/tmp/rz/lookalike")
    parser.add_argument("--icons", default="/usr/share/icons/Adwaita/512x512/places")
    args = parser.parse_args(argv)
    missing = [c for c in CLASSES if not os.path.exists(os.path.join(args.icons, f"{c}.png"))]
    if missing:
        raise SystemExit(f"{args.icons}: no {', '.join(missing)}.png (apt install adwaita-icon-theme)")
    icons = [(name, icon_crop(os.path.join(args.icons, f"{name}.png"))) for name in CLASSES]
    write_splits(args, functools.partial(make_split, icons), " and ".join(f"{w}×{h}" for w, h in SCENES))


if __name__ == "__main__":
    main()
