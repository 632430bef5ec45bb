"""The parity test's input images: real raccoon photos, decoded and cropped deterministically.

NumPy + PIL only (used by the torch env that makes the references and by the CI test).
``root`` is the raccoon data set folder (``../shared/datasets/raccoon`` from the repository
root); the photos are read from ``root/images`` and never copied into the repository.
"""

import hashlib
import os

import numpy as np
from PIL import Image

# (name, file, crop box (left, top, right, bottom) or None, expected original W x H)
PARITY_IMAGES = (
    ("landscape_640x480", "raccoon-88.jpg", None, (640, 480)),
    ("portrait_426x640", "raccoon-115.jpg", None, (426, 640)),
    ("odd_301x233", "raccoon-52.jpg", (150, 232, 150 + 301, 232 + 233), (800, 533)),
    ("tiny_40x30", "raccoon-113.jpg", (440, 360, 480, 390), (640, 480)),
    ("large_2000x1333", "raccoon-183.jpg", None, (2000, 1333)),
)

DEFAULT_ROOT = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, os.pardir, "shared", "datasets", "raccoon")
)


def load_rgb(path):
    """uint8 H x W x 3 RGB array, decoded by PIL (``Image.open(path).convert("RGB")``)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def parity_images(root=DEFAULT_ROOT):
    """Ordered [(name, uint8 H x W x 3 RGB array)]; crops are plain array slices (no resampling)."""
    out = []
    for name, filename, crop, (width, height) in PARITY_IMAGES:
        array = load_rgb(os.path.join(root, "images", filename))
        if array.shape[:2] != (height, width):
            raise ValueError(f"{filename}: expected {width}x{height}, got {array.shape[1]}x{array.shape[0]}")
        if crop is not None:
            left, top, right, bottom = crop
            array = array[top:bottom, left:right]
        out.append((name, np.ascontiguousarray(array)))
    return out


def pixel_digest(array):
    """sha256 hex of the array's shape and bytes (to detect a different JPEG decoder)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    digest = hashlib.sha256()
    digest.update(("x".join(str(n) for n in array.shape) + ":uint8:").encode("ascii"))
    digest.update(array.tobytes())
    return digest.hexdigest()


if __name__ == "__main__":
    for image_name, image in parity_images():
        print(image_name, image.shape, pixel_digest(image))
